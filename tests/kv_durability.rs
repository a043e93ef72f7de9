//! Durability with real processes: restart after SIGTERM, `kill -9` mid-write, a locked data
//! directory, and amnesia mode.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use support::{ChildServer, Conn, poll, request, run_binary};

/// Write, SIGTERM, start a new process on the same directory, read everything back.
#[test]
fn data_survives_a_clean_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = ChildServer::start(&[], dir.path());
    for i in 0..50 {
        let r = request(
            s.addr,
            "PUT",
            &format!("/v1/kv/p/k{i}"),
            &[],
            Some(format!("v{i}").as_bytes()),
        );
        assert_eq!(r.status, 201);
    }
    assert!(
        dir.path().join("micronode-data").is_dir(),
        "default data dir in cwd"
    );
    s.signal("TERM");
    assert_eq!(s.wait_exit(), Some(0));
    let s = ChildServer::start(&[], dir.path());
    for i in 0..50 {
        assert_eq!(
            s_get(&s, &format!("/v1/kv/p/k{i}")),
            Some(format!("v{i}").into_bytes())
        );
    }
}

/// Acknowledged writes: key and exact value.
type Acked = Vec<(String, Vec<u8>)>;

fn s_get(s: &ChildServer, path: &str) -> Option<Vec<u8>> {
    let r = request(s.addr, "GET", path, &[], None);
    (r.status == 200).then_some(r.body)
}

/// A tiny deterministic-per-run generator (no extra crate for one random number).
fn rand_below(n: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(7);
    (t.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33)
        % n
}

/// Concurrent writers record every acknowledged write — small values, and from two writers
/// also values of 100 KiB to 2 MiB (stored in chunks) — the server is killed with SIGKILL at a
/// random moment; after a restart every acknowledged write reads back with its exact bytes.
#[test]
fn every_acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    for round in 0..3 {
        let mut s = ChildServer::start(
            &[
                ("MICRONODE_DURABILITY", "sync"),
                ("MICRONODE_MAX_BODY_BYTES", "4194304"),
            ],
            dir.path(),
        );
        let acked: Arc<Mutex<Acked>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (addr, acked, stop) = (s.addr, Arc::clone(&acked), Arc::clone(&stop));
                thread::spawn(move || {
                    let mut c = Conn::open(addr);
                    for i in 0..5_000u32 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let key = format!("r{round}-w{w}-{i}");
                        let len = match (w, i % 8) {
                            (0 | 1, 0) => 100 * 1024 + (i as usize * 7919) % (1900 * 1024),
                            _ => (i % 300) as usize + 1,
                        };
                        let value: Vec<u8> = (0..len)
                            .map(|j| (j as u8) ^ (w as u8) ^ (i as u8) ^ (j >> 12) as u8)
                            .collect();
                        c.send(&support::build_request(
                            "PUT",
                            &format!("/v1/kv/crash/{key}"),
                            &[],
                            Some(&value),
                        ));
                        match c.read_response(false) {
                            Ok(r) if r.status == 201 => {
                                acked.lock().expect("lock").push((key, value))
                            }
                            Ok(r) => panic!("unexpected status {}", r.status),
                            Err(_) => break, // the server died mid-request: not acknowledged
                        }
                    }
                })
            })
            .collect();
        let kill_after = 100 + rand_below(400) as usize;
        poll("enough acknowledged writes", || {
            (acked.lock().expect("lock").len() >= kill_after).then_some(())
        });
        s.signal("KILL");
        let _ = s.wait_exit();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().expect("writer thread");
        }
        let acked = acked.lock().expect("lock").clone();
        assert!(acked.len() >= kill_after);
        let s = ChildServer::start(&[], dir.path());
        let mut c = Conn::open(s.addr);
        for (key, value) in &acked {
            let r = c.request("GET", &format!("/v1/kv/crash/{key}"), &[], None);
            assert_eq!(r.status, 200, "round {round}: acknowledged {key} lost");
            assert_eq!(&r.body, value, "round {round}: {key} corrupted");
        }
        drop(c);
        drop(s);
        let blobs = std::fs::read_dir(dir.path().join("micronode-data/blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0, "round {round}: sled wrote blob files");
    }
}

/// A second server on a locked directory exits non-zero, naming the path, in one line.
#[test]
fn second_server_on_a_locked_directory_fails_fast() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data_s = data.display().to_string();
    let _first = ChildServer::start(&[("MICRONODE_STORAGE_PATH", &data_s)], dir.path());
    let (code, _, stderr) = run_binary(
        &[],
        &[
            ("MICRONODE_STORAGE_PATH", &data_s),
            ("MICRONODE_BIND_ADDR", "127.0.0.1:0"),
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&data_s), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let (code, _, stderr) = run_binary(
        &[],
        &[
            ("MICRONODE_STORAGE_PATH", "/nonexistent-parent/x/data"),
            ("MICRONODE_BIND_ADDR", "127.0.0.1:0"),
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("/nonexistent-parent/x/data"), "{stderr}");
}

/// Amnesia: serves KV from memory and leaves its working directory empty.
#[test]
fn amnesia_writes_nothing_to_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = ChildServer::start(&[("MICRONODE_AMNESIA", "1")], dir.path());
    assert_eq!(
        request(s.addr, "PUT", "/v1/kv/a/k", &[], Some(b"v")).status,
        201
    );
    assert_eq!(s_get(&s, "/v1/kv/a/k"), Some(b"v".to_vec()));
    s.signal("TERM");
    assert_eq!(s.wait_exit(), Some(0));
    let entries: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(entries.is_empty(), "amnesia left files: {entries:?}");
}
