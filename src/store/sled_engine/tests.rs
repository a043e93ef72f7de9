//! sled-specific tests: what the semantic suite in `store/suite.rs` cannot see — files on
//! disk, reopening, repairs, simulated power loss.

use std::path::{Path, PathBuf};

use super::*;
use crate::store::{Cond, PutOutcome, Storage};

fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new(&[]))
}

fn cfg(path: &Path, durability: Durability) -> StorageCfg {
    StorageCfg {
        path: path.to_path_buf(),
        durability,
        ..Default::default()
    }
}

/// Opens the store at `path`. A sled handle this test just dropped may keep the directory's
/// lock for a moment while its background flusher winds down, so "could not acquire lock"
/// is polled (bounded, 5 s) rather than failed at once; every other error fails.
fn open(path: &Path) -> SledStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match SledStore::open(&cfg(path, Durability::Sync), 1000, metrics(), None) {
            Ok(s) => return s,
            Err(e)
                if e.contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("store opens: {e:?}"),
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn put(s: &SledStore, key: &str, v: &[u8]) -> u64 {
    match block_on(s.put(
        "b",
        key,
        b"application/x-test",
        &Bytes::copy_from_slice(v),
        None,
        &Cond::NONE,
        "default",
    )) {
        Ok(PutOutcome::Created(r) | PutOutcome::Replaced(r)) => r,
        Err(e) => panic!("put {key}: {e}"),
    }
}

fn get(s: &SledStore, key: &str) -> Option<Record> {
    block_on(s.get("b", key)).expect("get").record
}

fn value(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u32 ^ seed ^ (i / 4096) as u32) as u8)
        .collect()
}

/// Files sled wrote under `blobs/`.
fn blob_files(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir.join("blobs")) {
        Ok(entries) => entries.map(|e| e.expect("dir entry").path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// A data directory as sled 0.34 creates it with its defaults (512 KiB segments) — what every
/// data directory written before this engine looks like.
fn make_default_sled_dir(path: &Path) {
    let db = sled::Config::new()
        .path(path)
        .open()
        .expect("plain sled opens");
    db.flush().expect("flush");
}

/// Writes values of 100 KiB, 256 KiB, 1 MiB, 8 MiB and many medium ones (fat leaves, if they
/// were stored inline) and checks sled wrote no blob file, before and after a reopen.
fn no_blob_files_whatever_the_size(path: &Path) {
    let mut expect = Vec::new();
    let s = open(path);
    for (i, n) in [100 * 1024, 256 * 1024, 1024 * 1024, 8 * 1024 * 1024]
        .into_iter()
        .enumerate()
    {
        let v = value(i as u32, n);
        put(&s, &format!("large/{n}"), &v);
        expect.push((format!("large/{n}"), v));
    }
    for i in 0..120u32 {
        let v = value(1000 + i, 20 * 1024 + (i as usize * 347) % (40 * 1024));
        put(&s, &format!("medium/{i:03}"), &v);
        expect.push((format!("medium/{i:03}"), v));
    }
    // Overwrites and deletes move chunks around and make sled consolidate pages.
    for i in (0..120u32).step_by(3) {
        let v = value(5000 + i, 30 * 1024);
        put(&s, &format!("medium/{i:03}"), &v);
        expect[4 + i as usize].1 = v;
    }
    for i in (1..120u32).step_by(7) {
        block_on(s.delete("b", &format!("medium/{i:03}"), &Cond::NONE)).expect("delete");
        expect[4 + i as usize].1.clear();
    }
    s.flush_blocking().expect("flush");
    drop(s);
    assert_eq!(
        blob_files(path),
        Vec::<PathBuf>::new(),
        "sled wrote blob files"
    );
    let s = open(path);
    for (k, v) in &expect {
        match get(&s, k) {
            None => assert!(v.is_empty(), "{k} lost"),
            Some(r) => assert!(r.value[..] == v[..], "{k} read back differently"),
        }
    }
    drop(s);
    assert_eq!(
        blob_files(path),
        Vec::<PathBuf>::new(),
        "sled wrote blob files"
    );
}

#[test]
fn a_new_store_never_makes_sled_write_blob_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    no_blob_files_whatever_the_size(&path);
    assert_eq!(open(&path).segment_size(), NEW_SEGMENT);
}

#[test]
fn a_store_with_sleds_default_segment_never_makes_blob_files_either() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    make_default_sled_dir(&path);
    no_blob_files_whatever_the_size(&path);
    assert_eq!(
        open(&path).segment_size(),
        SLED_DEFAULT_SEGMENT,
        "the directory's own segment size"
    );
}

#[test]
fn missing_parent_and_locked_dir_are_refused_with_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = SledStore::open(
        &cfg(&dir.path().join("no/such/parent/db"), Durability::Sync),
        1000,
        metrics(),
        None,
    )
    .expect_err("missing parent");
    assert!(err.contains("no/such/parent"), "{err}");
    assert!(!err.contains('\n'));
    let path = dir.path().join("db");
    let first = open(&path);
    let err = SledStore::open(&cfg(&path, Durability::Sync), 1000, metrics(), None)
        .expect_err("the directory is locked");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(!err.contains('\n'));
    assert!(get(&first, "k").is_none());
}

/// sled's `conf` empty, torn or gone, a leftover unfinished snapshot, a torn snapshot: the
/// store reopens with every value, whatever a power loss left of those files.
#[test]
fn a_torn_conf_or_snapshot_is_repaired_on_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    let big = value(7, 700 * 1024);
    {
        let s = open(&path);
        put(&s, "small", b"v");
        put(&s, "big", &big);
        s.flush_blocking().expect("flush");
    }
    let good = std::fs::read(path.join("conf")).expect("conf");
    assert_eq!(std::fs::read(path.join(GOOD_CONF)).expect("our copy"), good);
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 5] = [
        ("empty conf", |p| {
            std::fs::write(p.join("conf"), b"").expect("write")
        }),
        ("torn conf", |p| {
            let c = std::fs::read(p.join("conf")).expect("read");
            std::fs::write(p.join("conf"), &c[..c.len() / 2]).expect("write")
        }),
        ("no conf", |p| {
            std::fs::remove_file(p.join("conf")).expect("rm")
        }),
        ("unfinished snapshot", |p| {
            std::fs::write(p.join("snap.FFFFFFFFFFFFFFFF.generating"), b"torn").expect("write")
        }),
        ("torn newest snapshot", |p| {
            std::fs::write(p.join("snap.FFFFFFFFFFFFFFFF"), vec![7u8; 40]).expect("write")
        }),
    ];
    for (what, damage) in damages {
        damage(&path);
        let s = SledStore::open(&cfg(&path, Durability::Sync), 1000, metrics(), None)
            .unwrap_or_else(|e| panic!("{what}: store did not reopen: {e}"));
        assert_eq!(&get(&s, "small").expect(what).value[..], b"v", "{what}");
        assert!(get(&s, "big").expect(what).value[..] == big[..], "{what}");
        put(&s, "after", what.as_bytes());
        drop(s);
        assert_eq!(
            std::fs::read(path.join("conf")).expect("conf"),
            good,
            "{what}: conf restored"
        );
    }
}

/// Without any snapshot sled rebuilds its state from the log: deleting snapshots (which the
/// repair does for a torn one) loses nothing.
#[test]
fn deleting_every_snapshot_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    let mut revs = Vec::new();
    {
        let s = open(&path);
        for i in 0..300u32 {
            revs.push(put(
                &s,
                &format!("k{i}"),
                &value(i, (i as usize * 97) % 9000),
            ));
        }
        s.flush_blocking().expect("flush");
    }
    for _round in 0..2 {
        for e in std::fs::read_dir(&path).expect("dir") {
            let p = e.expect("entry").path();
            if p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("snap."))
            {
                std::fs::remove_file(p).expect("rm snapshot");
            }
        }
        let s = open(&path);
        for i in 0..300u32 {
            let r = get(&s, &format!("k{i}")).expect("present");
            assert!(r.value[..] == value(i, (i as usize * 97) % 9000)[..]);
            assert_eq!(r.revision, revs[i as usize]);
        }
    }
}

/// Copies a data directory as a power loss right now would leave it, given that every write
/// was acknowledged after `fdatasync` of sled's log: the log (`db`) as it is (fsynced), and
/// every file sled writes without an fsync — blob files, unfinished snapshots — emptied, and
/// sled's `conf` emptied too (it is written without one).
fn power_loss_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("dir") {
        let e = e.expect("entry");
        let name = e.file_name().into_string().expect("utf-8 name");
        let target = to.join(&name);
        if e.path().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            for b in std::fs::read_dir(e.path()).expect("dir") {
                let b = b.expect("entry");
                // Never fsynced by sled: what a power loss leaves is at most a torn prefix.
                std::fs::write(target.join(b.file_name()), b"").expect("write");
            }
        } else if name == "conf" || name.ends_with(".generating") {
            std::fs::write(&target, b"").expect("write");
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// The bug of the power-loss test: a large value, then small acknowledged writes, then a
/// power loss. sled used to keep the large value in a blob file it never fsyncs; the torn blob
/// stopped recovery and every later acknowledged write was lost. Every acknowledged write must
/// be there after the simulated loss.
#[test]
fn acknowledged_writes_after_a_large_value_survive_a_simulated_power_loss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    let s = open(&path);
    let mut acked = Vec::new();
    for round in 0..3u32 {
        let big = value(round, 300 * 1024 + round as usize * 200 * 1024);
        acked.push((
            format!("big{round}"),
            put(&s, &format!("big{round}"), &big),
            big,
        ));
        for i in 0..40u32 {
            let v = value(round * 100 + i, 100 + i as usize * 50);
            let k = format!("small{round}-{i}");
            acked.push((k.clone(), put(&s, &k, &v), v));
        }
    }
    let crashed = dir.path().join("crashed");
    power_loss_copy(&path, &crashed);
    drop(s);
    let s = open(&crashed);
    for (k, rev, v) in &acked {
        let r = get(&s, k).unwrap_or_else(|| panic!("acknowledged {k} lost"));
        assert!(r.value[..] == v[..], "{k} corrupted");
        assert_eq!(r.revision, *rev, "{k}");
    }
    assert!(blob_files(&path).is_empty());
}

/// `periodic` mode may lose the last writes; their revisions (ETags a client may hold) are
/// never handed out again for a different value.
#[test]
fn revisions_are_never_reused_after_lost_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    let before = dir.path().join("before");
    let s =
        SledStore::open(&cfg(&path, Durability::Periodic), 1000, metrics(), None).expect("open");
    // What a power loss right after the open would leave: the open made its state durable.
    power_loss_copy(&path, &before);
    let lost: Vec<u64> = (0..500)
        .map(|i| put(&s, &format!("k{i}"), b"lost"))
        .collect();
    drop(s);
    // Everything since the copy is lost: reopen the copy and write again.
    let s = open(&before);
    let max_lost = *lost.iter().max().expect("some");
    for i in 0..10 {
        let r = put(&s, &format!("k{i}"), b"new");
        assert!(
            r > max_lost,
            "revision {r} reused after a loss (lost up to {max_lost})"
        );
    }
}

/// A v1 directory (records without the format tag, large ones in sled blob files) opens with
/// every value, content type and revision intact; large records are rewritten in chunks.
#[test]
fn v1_records_read_back_and_large_ones_are_rewritten_in_chunks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    let v1 = |version: u64, ct: &[u8], v: &[u8]| {
        let mut r = version.to_be_bytes().to_vec();
        r.extend_from_slice(&(ct.len() as u16).to_be_bytes());
        r.extend_from_slice(ct);
        r.extend_from_slice(v);
        r
    };
    let big = value(3, 400 * 1024);
    {
        let db = sled::Config::new().path(&path).open().expect("plain sled");
        db.insert("b/small", v1(0x11, b"text/plain", b"hi"))
            .expect("insert");
        db.insert("b/big", v1(0x22, b"image/png", &big))
            .expect("insert");
        db.flush().expect("flush");
    }
    assert!(
        !blob_files(&path).is_empty(),
        "v1 stored the large value in a blob file"
    );
    for _reopen in 0..2 {
        let s = open(&path);
        let small = get(&s, "small").expect("present");
        assert_eq!(
            (&small.value[..], &small.content_type[..], small.revision),
            (&b"hi"[..], &b"text/plain"[..], 0x11)
        );
        let r = get(&s, "big").expect("present");
        assert!(r.value[..] == big[..]);
        assert_eq!((&r.content_type[..], r.revision), (&b"image/png"[..], 0x22));
        let raw = s.db.get("b/big").expect("raw").expect("present");
        assert_eq!(raw[0], record::TAG_V2, "rewritten as a v2 chunked record");
        assert!(raw.len() < 100);
        let next = put(&s, "new", b"new");
        assert!(next > 0x22);
    }
}

/// The simulation above is strong enough to catch the bug: plain sled, storing a large value
/// the way v1 did (one item, so sled puts it in a blob file), loses the small writes made after
/// it, although each was followed by a flush and an `fdatasync` of the log.
#[test]
fn the_simulated_power_loss_catches_the_v1_layout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    let db = sled::Config::new().path(&path).open().expect("plain sled");
    let log = File::open(path.join("db")).expect("log");
    let durable = |db: &sled::Db| {
        db.flush().expect("flush");
        log.sync_data().expect("fdatasync");
    };
    db.insert("b/big", value(1, 300 * 1024)).expect("insert");
    durable(&db);
    for i in 0..40u32 {
        db.insert(format!("b/small{i}"), value(i, 200))
            .expect("insert");
        durable(&db);
    }
    assert!(
        !blob_files(&path).is_empty(),
        "sled put the large value in a blob file"
    );
    let crashed = dir.path().join("crashed");
    power_loss_copy(&path, &crashed);
    std::fs::copy(path.join("conf"), crashed.join("conf")).expect("keep conf");
    drop(db);
    let db = sled::Config::new().path(&crashed).open().expect("reopens");
    let present = (0..40u32)
        .filter(|i| db.get(format!("b/small{i}")).ok().flatten().is_some())
        .count();
    assert!(
        present < 40,
        "plain sled kept all {present} small writes: the simulation is too weak"
    );
}

/// The `conf` we write before sled's first open is byte for byte the one sled writes itself,
/// so sled accepts it and never rewrites it.
#[test]
fn our_conf_is_the_one_sled_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    for segment in [SLED_DEFAULT_SEGMENT, NEW_SEGMENT] {
        let path = dir.path().join(format!("plain-{segment}"));
        drop(
            sled::Config::new()
                .path(&path)
                .segment_size(segment)
                .open()
                .expect("plain sled"),
        );
        let sleds = std::fs::read(path.join("conf")).expect("conf");
        assert_eq!(dir::conf_bytes(segment), sleds);
        assert_eq!(dir::parse_conf(&sleds), Some(segment));
    }
    let path = dir.path().join("ours");
    drop(open(&path));
    assert_eq!(
        std::fs::read(path.join("conf")).expect("conf"),
        dir::conf_bytes(NEW_SEGMENT)
    );
}

#[test]
fn tenant_usage_is_rebuilt_from_the_records_when_the_store_reopens() {
    use crate::store::usage::{Counts, Limits, Usage};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    let tracked = || Some(Usage::with_limits(Limits::default(), &[]));
    let s =
        SledStore::open(&cfg(&path, Durability::Sync), 1000, metrics(), tracked()).expect("opens");
    let put_as = |s: &SledStore, owner: &str, key: &str, len: usize| {
        let v = Bytes::from(vec![7u8; len]);
        block_on(s.put("b", key, b"", &v, None, &Cond::NONE, owner)).expect("put");
    };
    put_as(&s, "acme", "one", 10);
    put_as(&s, "acme", "big", 200_000); // chunked
    put_as(&s, "default", "two", 5);
    put_as(&s, crate::store::usage::SYSTEM, "sys", 5);
    put_as(&s, "zeta", "one", 1); // takes "one" over from acme
    let want = |u: &Usage| {
        assert_eq!(
            u.of("acme"),
            Counts {
                bytes: 1 + 3 + 200_000,
                keys: 1
            }
        );
        assert_eq!(u.of("zeta"), Counts { bytes: 5, keys: 1 });
        assert_eq!(u.of("default"), Counts { bytes: 9, keys: 1 });
        assert_eq!(u.all().len(), 3, "system records count for nobody");
    };
    want(s.usage().expect("tracked"));
    drop(s);
    let s = SledStore::open(&cfg(&path, Durability::Sync), 1000, metrics(), tracked())
        .expect("reopens");
    want(s.usage().expect("tracked"));
}
