//! Snapshots taken while writes go on are exactly the store at the revision they claim, and
//! restore into a fresh directory. Every acknowledged write names its revision, so after the
//! writers stop the state at any revision is known exactly and can be compared line by line.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use support::{ChildServer, Conn, run_binary};

/// One acknowledged write: its revision and the value it left (`None` = deleted).
type Write = (u64, Option<String>);

fn revision_of(r: &support::Response) -> u64 {
    r.header("micronode-revision")
        .and_then(|v| v.parse().ok())
        .expect("a write names its revision")
}

/// The state every key had at `revision`, from the full history of acknowledged writes.
fn state_at(history: &BTreeMap<String, Vec<Write>>, revision: u64) -> BTreeMap<String, String> {
    history
        .iter()
        .filter_map(|(key, writes)| {
            let last = writes
                .iter()
                .filter(|(r, _)| *r <= revision)
                .max_by_key(|(r, _)| *r)?;
            last.1.clone().map(|v| (key.clone(), v))
        })
        .collect()
}

/// `(revision, key → value)` of a saved snapshot file of bucket `b`.
fn read_snapshot(path: &std::path::Path) -> (u64, BTreeMap<String, String>) {
    let text = std::fs::read_to_string(path).expect("snapshot file");
    let mut lines = text.lines();
    let header: serde_json::Value =
        serde_json::from_str(lines.next().expect("header")).expect("header JSON");
    let revision = header["revision"].as_u64().expect("revision");
    let mut keys = BTreeMap::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("line JSON");
        if v["end"] == true || v["bucket"] != "b" {
            continue;
        }
        let value = BASE64
            .decode(v["value"].as_str().expect("value"))
            .expect("base64");
        keys.insert(
            v["key"].as_str().expect("key").to_owned(),
            String::from_utf8(value).expect("utf-8 values"),
        );
    }
    (revision, keys)
}

#[test]
fn snapshots_taken_during_writes_are_the_store_at_their_revision() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data_env = data.display().to_string();
    let server = ChildServer::start(&[("MICRONODE_STORAGE_PATH", data_env.as_str())], dir.path());
    let addr = server.addr;
    let history: Arc<Mutex<BTreeMap<String, Vec<Write>>>> = Arc::default();
    // Seed: 50 keys, known before the writers start.
    let mut c = Conn::open(addr);
    for k in 0..50 {
        let (key, value) = (format!("k{k:02}"), format!("seed-{k}"));
        let r = c.request(
            "PUT",
            &format!("/v1/kv/b/{key}"),
            &[],
            Some(value.as_bytes()),
        );
        assert_eq!(r.status, 201);
        let rev = revision_of(&r);
        history
            .lock()
            .expect("lock")
            .insert(key, vec![(rev, Some(value))]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (history, stop) = (Arc::clone(&history), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                // Bounded: at most 400 writes per writer, stopped earlier by the test.
                for i in 0..400u32 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("k{:02}", (i * 7 + w * 13) % 60);
                    let path = format!("/v1/kv/b/{key}");
                    let (r, value) = if i % 5 == 4 {
                        (c.request("DELETE", &path, &[], None), None)
                    } else {
                        let value = format!("w{w}-{i}");
                        (
                            c.request("PUT", &path, &[], Some(value.as_bytes())),
                            Some(value),
                        )
                    };
                    match r.status {
                        201 | 204 => {
                            let rev = revision_of(&r);
                            history
                                .lock()
                                .expect("lock")
                                .entry(key)
                                .or_default()
                                .push((rev, value));
                        }
                        404 => {} // deleting an absent key writes nothing
                        other => panic!("unexpected {other}: {}", r.text()),
                    }
                }
            })
        })
        .collect();
    // Three snapshots once the writers are under way.
    support::poll("the writers to start", || {
        let n: usize = history.lock().expect("lock").values().map(Vec::len).sum();
        (n > 90).then_some(())
    });
    let url = format!("http://{addr}");
    let mut snapshots = Vec::new();
    for n in 0..3 {
        let file = dir.path().join(format!("snap-{n}.ndjson"));
        let file_arg = file.display().to_string();
        let (code, out, err) = run_binary(
            &["snapshot", "save", &file_arg],
            &[("MICRONODE_URL", url.as_str())],
            dir.path(),
        );
        assert_eq!(code, 0, "snapshot save: {out} {err}");
        snapshots.push(file);
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let history = history.lock().expect("lock").clone();
    let writes: usize = history.values().map(Vec::len).sum();
    assert!(writes > 50, "the writers wrote ({writes} writes)");
    let mut revisions = Vec::new();
    for file in &snapshots {
        let (revision, got) = read_snapshot(file);
        let want = state_at(&history, revision);
        assert_eq!(
            got,
            want,
            "{}: the snapshot is not the store at revision {revision}",
            file.display()
        );
        revisions.push(revision);
    }
    assert!(revisions.windows(2).all(|w| w[0] <= w[1]), "{revisions:?}");
    let after_first = history
        .values()
        .flatten()
        .filter(|(r, _)| *r > revisions[0])
        .count();
    println!("{writes} writes, {after_first} after the first snapshot's revision {revisions:?}");

    // Restore the last one into a fresh directory, serve it, and read every key back.
    let (last_rev, last) = read_snapshot(snapshots.last().expect("a snapshot"));
    let restored = dir.path().join("restored");
    let restored_env = restored.display().to_string();
    let file_arg = snapshots.last().expect("a snapshot").display().to_string();
    let (code, out, err) = run_binary(
        &["snapshot", "restore", &file_arg],
        &[("MICRONODE_STORAGE_PATH", restored_env.as_str())],
        dir.path(),
    );
    assert_eq!(code, 0, "restore: {out} {err}");
    let second = ChildServer::start(
        &[("MICRONODE_STORAGE_PATH", restored_env.as_str())],
        dir.path(),
    );
    let page = second.get("/v1/kv/b?limit=1000").json();
    let keys: Vec<&str> = page["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    assert_eq!(keys, last.keys().map(String::as_str).collect::<Vec<_>>());
    for (key, value) in &last {
        let r = second.get(&format!("/v1/kv/b/{key}"));
        assert_eq!((r.status, r.text()), (200, value.clone()), "{key}");
    }
    // Fresh revisions, above the snapshot's: no ETag from before can match a restored value.
    assert!(page["revision"].as_u64().expect("revision") > last_rev);
}
