//! The postgres engine over HTTP, against a real PostgreSQL (`MICRONODE_TEST_PG_URL`, see
//! scripts/pg_cluster.sh): one node doing every KV route, then two nodes over one schema
//! (a CAS race split over both, a watcher on one seeing the other's writes in order, bank
//! transfers split over both), snapshots moving data between engines, database outages
//! under load and on an idle node, and TLS to the database (`MICRONODE_TEST_PG_CA`).
//!
//! Without `MICRONODE_TEST_PG_URL` each test prints `SKIPPED` and passes — except under
//! `CI=true`, where it fails: CI must never go green by skipping.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use support::{Conn, Response, Sse, SseItem, TestServer, request};

/// The test database's URL, or `None` (after a loud line) when there is none.
fn pg_url() -> Option<String> {
    test_env("MICRONODE_TEST_PG_URL", "scripts/pg_cluster.sh start DIR")
}

/// The CA the test cluster's certificate chains to, or `None` (after a loud line).
fn pg_ca() -> Option<String> {
    test_env(
        "MICRONODE_TEST_PG_CA",
        "DIR/ca.pem of scripts/pg_cluster.sh",
    )
}

/// `name`'s value; when unset, a failure under `CI=true` (CI must never go green by
/// skipping), else `None` after a SKIPPED line saying where it comes from.
fn test_env(name: &str, from: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{name} not set under CI=true ({from})"
            );
            eprintln!("SKIPPED: {name} not set ({from})");
            None
        }
    }
}

/// A schema no other test uses (tests share one database and run in parallel).
fn fresh_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "mn_http_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A node on the postgres engine over `schema`.
fn node(url: &str, schema: &str) -> TestServer {
    TestServer::start(&[
        ("MICRONODE_STORAGE_ENGINE", "postgres"),
        ("MICRONODE_PG_URL", url),
        ("MICRONODE_PG_SCHEMA", schema),
        ("MICRONODE_PG_POOL_SIZE", "8"),
    ])
}

fn put(addr: SocketAddr, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Response {
    request(addr, "PUT", path, headers, Some(body))
}

fn etag(r: &Response) -> String {
    r.header("etag").expect("an ETag").to_owned()
}

fn rev_of(tag: &str) -> u64 {
    tag.trim_matches('"').parse().expect("numeric ETag")
}

#[test]
fn every_kv_route_works_on_postgres() {
    let Some(url) = pg_url() else { return };
    let s = node(&url, &fresh_schema());

    let r = put(
        s.addr,
        "/v1/kv/b/k",
        b"one",
        &[("content-type", "text/plain")],
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let e1 = etag(&r);
    let r = s.get("/v1/kv/b/k");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"one"[..]));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("etag"), Some(e1.as_str()));

    // CAS: the current ETag wins once, the stale one loses.
    let r = put(s.addr, "/v1/kv/b/k", b"two", &[("if-match", &e1)]);
    assert_eq!(r.status, 204, "{}", r.text());
    let e2 = etag(&r);
    assert!(rev_of(&e2) > rev_of(&e1));
    let r = put(s.addr, "/v1/kv/b/k", b"three", &[("if-match", &e1)]);
    assert_eq!(r.status, 412, "{}", r.text());
    let r = put(s.addr, "/v1/kv/b/k", b"x", &[("if-none-match", "*")]);
    assert_eq!(r.status, 412, "create-only on an existing key");
    assert_eq!(s.get("/v1/kv/b/k").body, b"two");

    // Listing: byte order, prefix, paging.
    for k in ["a/2", "a/1", "a/10", "c", "\u{e9}"] {
        let path = format!("/v1/kv/l/{}", k.replace('\u{e9}', "%C3%A9"));
        assert_eq!(put(s.addr, &path, b"v", &[]).status, 201);
    }
    let v = s.get("/v1/kv/l").json();
    assert_eq!(v["keys"], json!(["a/1", "a/10", "a/2", "c", "\u{e9}"]));
    let v = s.get("/v1/kv/l?prefix=a/&limit=2").json();
    assert_eq!(v["keys"], json!(["a/1", "a/10"]));

    // Transaction: compares, then one branch under one revision.
    let body = json!({
        "if": [{"bucket": "b", "key": "k", "etag": e2}, {"bucket": "b", "key": "n", "exists": false}],
        "then": [
            {"op": "put", "bucket": "b", "key": "k", "value": BASE64.encode(b"t")},
            {"op": "put", "bucket": "b", "key": "n", "value": BASE64.encode(b"new")},
            {"op": "get", "bucket": "b", "key": "k"},
        ],
        "else": [{"op": "get", "bucket": "b", "key": "k"}],
    });
    let txn = |body: &Value| {
        request(
            s.addr,
            "POST",
            "/v1/txn",
            &[("content-type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    };
    let r = txn(&body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["succeeded"], true);
    let tag = format!("\"{}\"", v["revision"].as_u64().expect("revision"));
    assert_eq!(s.get("/v1/kv/b/n").header("etag"), Some(tag.as_str()));
    assert_eq!(s.get("/v1/kv/b/k").body, b"t");
    let v = txn(&body).json();
    assert_eq!(v["succeeded"], false, "the compares no longer hold");

    // DELETE: once, then 404.
    assert_eq!(
        request(s.addr, "DELETE", "/v1/kv/b/k", &[], None).status,
        204
    );
    assert_eq!(
        request(s.addr, "DELETE", "/v1/kv/b/k", &[], None).status,
        404
    );
    assert_eq!(s.get("/v1/kv/b/k").status, 404);
    // The pool is shown: after the calls above at least one connection was opened, and with
    // nothing in flight the busy ones are at most the pool's size.
    let idle = s.metric("micronode_storage_pool_connections{state=\"idle\"}");
    let busy = s.metric("micronode_storage_pool_connections{state=\"busy\"}");
    assert!(
        idle + busy >= 1.0 && idle + busy <= 16.0,
        "idle {idle}, busy {busy}"
    );
    s.still_serves();
}

#[test]
fn two_nodes_thirty_two_cas_writers_one_etag_exactly_one_wins() {
    let Some(url) = pg_url() else { return };
    let schema = fresh_schema();
    // Both nodes boot at once: the migrations queue on the advisory lock.
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(|| node(&url, &schema));
        let b = sc.spawn(|| node(&url, &schema));
        (
            a.join().expect("node a boots"),
            b.join().expect("node b boots"),
        )
    });
    let r = put(a.addr, "/v1/kv/race/k", b"start", &[]);
    assert_eq!(r.status, 201);
    let tag = etag(&r);
    assert_eq!(b.get("/v1/kv/race/k").header("etag"), Some(tag.as_str()));

    let n = 32;
    let barrier = Arc::new(Barrier::new(n));
    let addrs = [a.addr, b.addr];
    let statuses: Vec<u16> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, tag) = (Arc::clone(&barrier), tag.clone());
                let addr = addrs[i % 2];
                sc.spawn(move || {
                    let body = format!("writer {i}");
                    barrier.wait();
                    put(
                        addr,
                        "/v1/kv/race/k",
                        body.as_bytes(),
                        &[("if-match", &tag)],
                    )
                    .status
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    });
    let won = statuses.iter().filter(|s| (200..300).contains(*s)).count();
    let lost = statuses.iter().filter(|s| **s == 412).count();
    assert_eq!((won, lost), (1, n - 1), "statuses: {statuses:?}");
    let (ga, gb) = (a.get("/v1/kv/race/k"), b.get("/v1/kv/race/k"));
    assert_eq!(ga.body, gb.body, "both nodes read the winner");
    assert_eq!(ga.header("etag"), gb.header("etag"));
}

#[test]
fn a_watcher_on_one_node_sees_the_other_nodes_writes_in_order() {
    let Some(url) = pg_url() else { return };
    let schema = fresh_schema();
    let a = node(&url, &schema);
    let b = node(&url, &schema);
    let mut w = Sse::open(b.addr, "/v1/watch/w", &[])
        .unwrap_or_else(|r| panic!("watch: {} {}", r.status, r.text()));
    assert_eq!(w.next_item(), Some(SseItem::Comment("watching".into())));
    // Writes from both nodes, interleaved; the watcher on B must see all, in revision order.
    let mut want = Vec::new();
    for i in 0..12 {
        let node = if i % 3 == 0 { &b } else { &a };
        let r = put(
            node.addr,
            &format!("/v1/kv/w/k{i}"),
            format!("{i}").as_bytes(),
            &[],
        );
        assert_eq!(r.status, 201, "{}", r.text());
        want.push((format!("k{i}"), rev_of(&etag(&r))));
    }
    let r = request(a.addr, "DELETE", "/v1/kv/w/k1", &[], None);
    assert_eq!(r.status, 204);
    let mut got = Vec::new();
    while got.len() < want.len() + 1 {
        match w.next_event() {
            Some(SseItem::Event { id, event, data }) => {
                let key = data["key"].as_str().expect("key").to_owned();
                got.push((event, key, id.expect("an id")));
            }
            other => panic!("stream ended early: {other:?} after {got:?}"),
        }
    }
    for (i, (key, rev)) in want.iter().enumerate() {
        assert_eq!(
            (got[i].0.as_str(), &got[i].1, got[i].2),
            ("put", key, *rev),
            "{got:?}"
        );
    }
    let last = got.last().expect("the delete");
    assert_eq!((last.0.as_str(), last.1.as_str()), ("delete", "k1"));
    assert!(got.windows(2).all(|p| p[0].2 < p[1].2), "{got:?}");
}

#[test]
fn boot_fails_fast_naming_the_cause_when_the_database_is_unreachable() {
    // Port 1 on loopback: connection refused at once.
    let cfg = micronode::config::Config::load(None, |k| match k {
        "MICRONODE_STORAGE_ENGINE" => Some("postgres".into()),
        "MICRONODE_PG_URL" => Some("postgres://nobody@127.0.0.1:1/none".into()),
        "MICRONODE_PG_CONNECT_TIMEOUT_MS" => Some("2000".into()),
        _ => None,
    })
    .expect("config is valid");
    let started = std::time::Instant::now();
    let err = micronode::build_app(cfg).expect_err("no database");
    assert!(err.contains("postgres engine"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // The binary opens the store inside its runtime: exit 1 with one line, no panic.
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, _, err) = support::run_binary(
        &[],
        &[
            ("MICRONODE_STORAGE_ENGINE", "postgres"),
            ("MICRONODE_PG_URL", "postgres://nobody@127.0.0.1:1/none"),
            ("MICRONODE_BIND_ADDR", "127.0.0.1:0"),
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("postgres engine"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_snapshot_of_a_postgres_node_restores_into_an_empty_schema_only() {
    let Some(url) = pg_url() else { return };
    let a = node(&url, &fresh_schema());
    for i in 0..20 {
        let r = put(
            a.addr,
            &format!("/v1/kv/s/k{i:02}"),
            format!("v{i}").as_bytes(),
            &[],
        );
        assert_eq!(r.status, 201);
    }
    assert_eq!(
        request(a.addr, "DELETE", "/v1/kv/s/k03", &[], None).status,
        204
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("snap.ndjson").display().to_string();
    let base = format!("http://{}", a.addr);
    let (code, out, err) = support::run_binary(
        &["snapshot", "save", &file],
        &[("MICRONODE_URL", base.as_str())],
        dir.path(),
    );
    assert_eq!(code, 0, "snapshot save: {out} {err}");

    let target = fresh_schema();
    let env = [
        ("MICRONODE_STORAGE_ENGINE", "postgres"),
        ("MICRONODE_PG_URL", url.as_str()),
        ("MICRONODE_PG_SCHEMA", target.as_str()),
    ];
    let (code, out, err) = support::run_binary(&["snapshot", "restore", &file], &env, dir.path());
    assert_eq!(code, 0, "restore: {out} {err}");
    assert!(out.contains("\"restored\":19"), "{out}");
    let b = node(&url, &target);
    let v = b.get("/v1/kv/s?limit=100").json();
    assert_eq!(v["keys"].as_array().map(Vec::len), Some(19));
    assert_eq!(b.get("/v1/kv/s/k07").body, b"v7");
    assert_eq!(b.get("/v1/kv/s/k03").status, 404);

    // Not into a schema that holds records.
    let (code, _, err) = support::run_binary(&["snapshot", "restore", &file], &env, dir.path());
    assert_ne!(code, 0, "a second restore into the same schema is refused");
    assert!(err.contains("holds records"), "{err}");
}

/// A private cluster (scripts/pg_cluster.sh) this test may stop and start; stopped on drop.
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
}

impl Cluster {
    fn script(cmd: &str, dir: &std::path::Path) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg_cluster.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg(cmd)
            .arg(dir)
            .output()
            .expect("run scripts/pg_cluster.sh");
        assert!(
            out.status.success(),
            "pg_cluster.sh {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Cluster::script("start", dir.path());
        let url = out
            .lines()
            .find_map(|l| l.strip_prefix("MICRONODE_TEST_PG_URL="))
            .expect("the script prints the URL")
            .to_owned();
        Cluster { dir, url }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg_cluster.sh");
        let _ = std::process::Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// Asserts `r` is the outage answer: 503 `storage_unavailable`, retryable, `Retry-After: 1`.
fn assert_outage_answer(r: &Response) {
    r.assert_error(503, "storage_unavailable", true);
    assert_eq!(r.header("retry-after"), Some("1"));
}

/// `/readyz` as (status, `probes.deps_ok`).
fn readyz(addr: SocketAddr) -> (u16, Value) {
    let r = request(addr, "GET", "/readyz", &[], None);
    (r.status, r.json()["probes"]["deps_ok"].clone())
}

/// The writers' phases: what the database was doing when a write was sent.
const BEFORE: u8 = 0;
const DOWN: u8 = 1;
const BACK: u8 = 2;

/// Sets its flag when dropped: a failing assertion stops the load threads at once instead of
/// leaving them to run to their bounds.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What one writer saw: the writes acknowledged (2xx), and those answered 503.
#[derive(Default)]
struct Outcomes {
    acked: Vec<(String, String)>,
    refused: Vec<(String, String)>,
}

/// PostgreSQL is stopped under load (4 writers of fresh keys, a reader) and started again:
/// meanwhile every answer is 2xx or 503 `storage_unavailable` with `Retry-After: 1`, `/readyz`
/// is 503 with `deps_ok: false` and `micronode_storage_up` 0; afterwards the node serves again
/// by itself, and every write acknowledged before, during or after the outage holds its value.
#[test]
fn a_database_outage_is_503_with_retry_after_then_heals_without_a_restart() {
    // Runs wherever the other tests run (it needs PostgreSQL installed), on its own cluster.
    if pg_url().is_none() {
        return;
    }
    let cluster = Cluster::start();
    let s = node(&cluster.url, &fresh_schema());
    assert_eq!(put(s.addr, "/v1/kv/o/before", b"kept", &[]).status, 201);
    assert_eq!(s.metric("micronode_storage_up"), 1.0);
    assert_eq!(readyz(s.addr), (200, json!(true)));

    const WRITERS: usize = 4;
    const WRITES: usize = 20_000;
    let deadline = Instant::now() + 3 * support::WAIT;
    let phase = AtomicU8::new(BEFORE);
    let acked_in = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
    let refused = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let addr = s.addr;
    let (outcomes, reads) = std::thread::scope(|sc| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (phase, acked_in, refused, stop) = (&phase, &acked_in, &refused, &stop);
                sc.spawn(move || {
                    let mut out = Outcomes::default();
                    for i in 0..WRITES {
                        if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                            break;
                        }
                        let sent_in = phase.load(Ordering::SeqCst);
                        let (key, value) = (format!("w{w}-{i:05}"), format!("value {w} {i}"));
                        let r = put(addr, &format!("/v1/kv/o/{key}"), value.as_bytes(), &[]);
                        match r.status {
                            201 => {
                                out.acked.push((key, value));
                                acked_in[usize::from(sent_in)].fetch_add(1, Ordering::SeqCst);
                            }
                            503 => {
                                assert_outage_answer(&r);
                                out.refused.push((key, value));
                                refused.fetch_add(1, Ordering::SeqCst);
                                // A client backs off after a 503 (briefly here, to keep the
                                // load on).
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            other => panic!("PUT {key}: {other} {}", r.text()),
                        }
                    }
                    out
                })
            })
            .collect();
        let reader = {
            let stop = &stop;
            sc.spawn(move || {
                let mut statuses = BTreeMap::new();
                for _ in 0..WRITES {
                    if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                        break;
                    }
                    let r = request(addr, "GET", "/v1/kv/o/before", &[], None);
                    match r.status {
                        200 => assert_eq!(r.body, b"kept"),
                        503 => {
                            assert_outage_answer(&r);
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        other => panic!("GET before: {other} {}", r.text()),
                    }
                    *statuses.entry(r.status).or_insert(0u64) += 1;
                }
                statuses
            })
        };
        let _stop_on_panic = StopOnDrop(&stop);
        support::poll("writes acknowledged before the outage", || {
            (acked_in[usize::from(BEFORE)].load(Ordering::SeqCst) >= 20).then_some(())
        });

        Cluster::script("stop", cluster.dir.path());
        phase.store(DOWN, Ordering::SeqCst);
        let r = put(s.addr, "/v1/kv/o/during", b"x", &[]);
        assert_outage_answer(&r);
        assert_outage_answer(&s.get("/v1/kv/o/before"));
        assert_eq!(s.metric("micronode_storage_up"), 0.0);
        assert_eq!(readyz(s.addr), (503, json!(false)));
        let seen = refused.load(Ordering::SeqCst);
        support::poll("writers refused while the database is down", || {
            (refused.load(Ordering::SeqCst) >= seen + 20).then_some(())
        });

        Cluster::script("resume", cluster.dir.path());
        phase.store(BACK, Ordering::SeqCst);
        support::poll(
            "writes acknowledged again once the database is back",
            || (acked_in[usize::from(BACK)].load(Ordering::SeqCst) >= 20).then_some(()),
        );
        stop.store(true, Ordering::SeqCst);
        let outcomes: Vec<Outcomes> = writers
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect();
        (outcomes, reader.join().expect("reader"))
    });

    assert_eq!(s.metric("micronode_storage_up"), 1.0);
    assert_eq!(readyz(s.addr), (200, json!(true)));
    assert_eq!(s.get("/v1/kv/o/before").body, b"kept");
    assert_eq!(
        s.get("/v1/kv/o/during").status,
        404,
        "a write refused while the database was down left nothing"
    );
    // Every acknowledged write is there with its value. A write answered 503 may or may not
    // have happened (its commit's answer may have been lost): absent, or exactly its value.
    let mut c = Conn::open(s.addr);
    let mut want: std::collections::BTreeSet<String> = ["before".to_owned()].into_iter().collect();
    let mut refused_present = 0;
    for out in &outcomes {
        for (key, value) in &out.acked {
            let r = c.request("GET", &format!("/v1/kv/o/{key}"), &[], None);
            assert_eq!(
                (r.status, r.text()),
                (200, value.clone()),
                "acknowledged write {key}"
            );
            want.insert(key.clone());
        }
        for (key, value) in &out.refused {
            let r = c.request("GET", &format!("/v1/kv/o/{key}"), &[], None);
            match r.status {
                404 => {}
                200 => {
                    assert_eq!(r.text(), *value, "refused write {key}");
                    want.insert(key.clone());
                    refused_present += 1;
                }
                other => panic!("GET {key}: {other} {}", r.text()),
            }
        }
    }
    // And nothing else: the bucket lists exactly those keys.
    let mut listed = std::collections::BTreeSet::new();
    let mut after = String::new();
    for _ in 0..1_000 {
        let page = c
            .request("GET", &format!("/v1/kv/o?limit=1000{after}"), &[], None)
            .json();
        for k in page["keys"].as_array().expect("keys") {
            listed.insert(k.as_str().expect("a string key").to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert_eq!(listed, want, "the keys of bucket o");
    let acked: usize = outcomes.iter().map(|o| o.acked.len()).sum();
    let refused_total: usize = outcomes.iter().map(|o| o.refused.len()).sum();
    eprintln!(
        "acknowledged {acked} (before {}, during {}, after {}), refused {refused_total} \
         ({refused_present} of them committed anyway); reader statuses {reads:?}",
        acked_in[0].load(Ordering::SeqCst),
        acked_in[1].load(Ordering::SeqCst),
        acked_in[2].load(Ordering::SeqCst),
    );
}

/// A node nobody sends KV requests to finds a database outage by itself (its sweeper's calls
/// fail): `/readyz` turns 503 with `probes.deps_ok: false` and `/metrics` shows
/// `micronode_storage_up 0`; once the database is back it turns ready again by itself.
#[test]
fn a_node_reports_storage_down_in_readyz_and_metrics_during_an_outage() {
    if pg_url().is_none() {
        return;
    }
    let cluster = Cluster::start();
    let s = node(&cluster.url, &fresh_schema());
    let deps_ok_series = "micronode_ready_probe{probe=\"deps_ok\"}";
    let r = s.get("/readyz");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (&v["ready"], &v["probes"]["deps_ok"]),
        (&json!(true), &json!(true)),
        "{v}"
    );
    assert_eq!(s.metric("micronode_storage_up"), 1.0);
    assert_eq!(s.metric(deps_ok_series), 1.0);

    Cluster::script("stop", cluster.dir.path());
    let v = support::poll("/readyz to report the database down", || {
        let r = s.get("/readyz");
        (r.status == 503).then(|| r.json())
    });
    assert_eq!(v["ready"], false, "{v}");
    assert_eq!(v["probes"]["deps_ok"], false, "{v}");
    for probe in ["listeners_bound", "cfg_loaded", "metrics_bound"] {
        assert_eq!(v["probes"][probe], true, "only the storage is down: {v}");
    }
    assert_eq!(v["draining"], false, "{v}");
    let scrape = s.scrape();
    assert_eq!(scrape.value("micronode_storage_up"), 0.0);
    assert_eq!(scrape.value(deps_ok_series), 0.0);
    assert_outage_answer(&s.get("/v1/kv/i/k"));

    Cluster::script("resume", cluster.dir.path());
    let v = support::poll("/readyz to report ready again", || {
        let r = s.get("/readyz");
        (r.status == 200).then(|| r.json())
    });
    assert_eq!(
        (&v["ready"], &v["probes"]["deps_ok"]),
        (&json!(true), &json!(true)),
        "{v}"
    );
    let scrape = s.scrape();
    assert_eq!(scrape.value("micronode_storage_up"), 1.0);
    assert_eq!(scrape.value(deps_ok_series), 1.0);
    assert_eq!(put(s.addr, "/v1/kv/i/k", b"v", &[]).status, 201);
    assert_eq!(s.get("/v1/kv/i/k").body, b"v");
}

#[test]
fn two_sweepers_expire_a_record_once() {
    let Some(url) = pg_url() else { return };
    let schema = fresh_schema();
    let a = node(&url, &schema);
    let b = node(&url, &schema);
    let mut w = Sse::open(b.addr, "/v1/watch/e", &[])
        .unwrap_or_else(|r| panic!("watch: {} {}", r.status, r.text()));
    assert_eq!(w.next_item(), Some(SseItem::Comment("watching".into())));
    let r = put(a.addr, "/v1/kv/e/k?ttl=1", b"short", &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    let mut kinds = Vec::new();
    let next = |w: &mut Sse| match w.next_event() {
        Some(SseItem::Event { event, data, .. }) => {
            (event, data["key"].as_str().unwrap_or("").to_owned())
        }
        other => panic!("stream ended early: {other:?}"),
    };
    kinds.push(next(&mut w));
    // Both nodes sweep; one `expire` delete wins, the other's condition fails.
    kinds.push(next(&mut w));
    assert_eq!(a.get("/v1/kv/e/k").status, 404);
    assert_eq!(b.get("/v1/kv/e/k").status, 404);
    // A marker write: the next event must be it, not a second expire.
    assert_eq!(put(a.addr, "/v1/kv/e/marker", b"m", &[]).status, 201);
    kinds.push(next(&mut w));
    let want = [("put", "k"), ("expire", "k"), ("put", "marker")];
    let got: Vec<(&str, &str)> = kinds
        .iter()
        .map(|(e, k)| (e.as_str(), k.as_str()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn the_binary_serves_on_postgres_and_stops_cleanly_on_sigterm() {
    let Some(url) = pg_url() else { return };
    let schema = fresh_schema();
    let env = [
        ("MICRONODE_STORAGE_ENGINE", "postgres"),
        ("MICRONODE_PG_URL", url.as_str()),
        ("MICRONODE_PG_SCHEMA", schema.as_str()),
    ];
    let mut s = support::ChildServer::spawn(&env);
    assert_eq!(put(s.addr, "/v1/kv/c/k", b"v", &[]).status, 201);
    assert_eq!(s.get("/readyz").status, 200);
    s.signal("TERM");
    assert_eq!(s.wait_exit(), Some(0), "{}", s.logs());
    assert!(!s.logs().contains("panicked"), "{}", s.logs());
    // A second node process over the same schema reads what the first wrote.
    let t = support::ChildServer::spawn(&env);
    assert_eq!(t.get("/v1/kv/c/k").body, b"v");
}

/// `url` with one more query parameter.
fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

#[test]
fn a_node_talks_to_the_database_over_tls_and_verifies_it() {
    let Some(url) = pg_url() else { return };
    let Some(ca) = pg_ca() else { return };
    let schema = fresh_schema();
    // libpq's strictest mode, as users copy it from their provider's docs.
    let tls_url = with_param(&url, "sslmode=verify-full");
    let tls_node = |url: &str| {
        TestServer::start(&[
            ("MICRONODE_STORAGE_ENGINE", "postgres"),
            ("MICRONODE_PG_URL", url),
            ("MICRONODE_PG_CA_FILE", ca.as_str()),
            ("MICRONODE_PG_SCHEMA", schema.as_str()),
            ("MICRONODE_PG_POOL_SIZE", "2"),
        ])
    };
    let a = tls_node(&tls_url);
    assert_eq!(put(a.addr, "/v1/kv/t/k", b"over tls", &[]).status, 201);
    assert_eq!(a.get("/v1/kv/t/k").body, b"over tls");

    // The database's own view: the node's writer connection is encrypted.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let writer = format!("micronode writer {schema}");
    let (conns, encrypted): (i64, Option<bool>) = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let driver = tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT count(*), bool_and(s.ssl) FROM pg_stat_activity a
                 JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = left($1, 63)",
                &[&writer],
            )
            .await
            .expect("pg_stat_ssl");
        driver.abort();
        (row.get(0), row.get(1))
    });
    assert_eq!(
        (conns, encrypted),
        (1, Some(true)),
        "the writer's connection"
    );

    // A certificate that does not chain to the configured CA: boot refuses, naming the cause.
    let dir = tempfile::tempdir().expect("temp dir");
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("a CA the database does not use");
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert.pem()).expect("write");
    let require = with_param(&url, "sslmode=require");
    let boot = |url: &str, ca: &str| {
        support::run_binary(
            &[],
            &[
                ("MICRONODE_STORAGE_ENGINE", "postgres"),
                ("MICRONODE_PG_URL", url),
                ("MICRONODE_PG_CA_FILE", ca),
                ("MICRONODE_PG_SCHEMA", schema.as_str()),
                ("MICRONODE_BIND_ADDR", "127.0.0.1:0"),
            ],
            dir.path(),
        )
    };
    let (code, _, err) = boot(&require, &other_ca.to_string_lossy());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A CA without a URL that asks for TLS would silently go unused: refused too.
    let (code, _, err) = boot(&url, &ca);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("sslmode=verify-full"), "{err}");

    // The same server dialled under a name its certificate does not carry (`hostaddr` is
    // where to connect, the host what to expect): verify-full refuses, verify-ca (chain only,
    // as libpq means it) serves.
    let renamed = with_param(
        &url.replacen("@127.0.0.1:", "@db.invalid:", 1),
        "hostaddr=127.0.0.1",
    );
    assert_ne!(renamed, url, "the test URL names 127.0.0.1");
    let (code, _, err) = boot(&with_param(&renamed, "sslmode=verify-full"), &ca);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not valid for name"), "{err}");
    let verify_ca = with_param(&renamed, "sslmode=verify-ca");
    let b = tls_node(&verify_ca);
    assert_eq!(b.get("/v1/kv/t/k").body, b"over tls");
    // verify-ca still checks the chain: a foreign CA is refused whatever the name.
    let (code, _, err) = boot(
        &with_param(&url, "sslmode=verify-ca"),
        &other_ca.to_string_lossy(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn a_token_revoked_on_one_node_is_refused_by_the_other() {
    use micronode::auth::{keyring, mint, now_unix};
    let Some(url) = pg_url() else { return };
    let schema = fresh_schema();
    let dir = tempfile::tempdir().expect("temp dir");
    let keys_path = dir.path().join("keys.toml");
    let keys = keyring::init(&keys_path, now_unix()).expect("key ring");
    let keys_env = keys_path.display().to_string();
    let start = || {
        TestServer::start(&[
            ("MICRONODE_STORAGE_ENGINE", "postgres"),
            ("MICRONODE_PG_URL", url.as_str()),
            ("MICRONODE_PG_SCHEMA", schema.as_str()),
            ("MICRONODE_PG_POOL_SIZE", "8"),
            ("MICRONODE_AUTH", "on"),
            ("MICRONODE_AUTH_KEYS_FILE", keys_env.as_str()),
        ])
    };
    let (a, b) = (start(), start());
    let admin = format!("Bearer {}", mint(keys.newest(), "ops", &[]).expect("mint"));
    let user = mint(keys.newest(), "acme", &[]).expect("mint");
    let bearer = format!("Bearer {user}");
    let get = |addr| {
        request(
            addr,
            "GET",
            "/v1/kv/b/k",
            &[("authorization", &bearer)],
            None,
        )
    };
    assert_eq!(get(b.addr).status, 404, "valid on B before");
    let body = json!({ "token": user }).to_string();
    let r = request(
        a.addr,
        "POST",
        "/v1/auth/revoke",
        &[("authorization", &admin)],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(a.addr).status, 401, "refused on A at once");
    // B learns it from the shared change feed (LISTEN/NOTIFY, or the 1 s poll); the time it
    // takes is reported, not asserted.
    let since = std::time::Instant::now();
    support::poll("B to refuse the revoked token", || {
        (get(b.addr).status == 401).then_some(())
    });
    eprintln!("revocation reached the other node in {:?}", since.elapsed());
}

// ---- Snapshots between engines ----------------------------------------------------------------

/// A key's path under `/v1/kv/`: the key percent-encoded except `/` and unreserved characters.
fn kv_path(bucket: &str, key: &str) -> String {
    let mut path = format!("/v1/kv/{bucket}/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path
}

/// What a key holds as a client sees it; the revision is left out (a restore gives fresh ones).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    value: Vec<u8>,
    content_type: String,
    expires_at: Option<u64>,
}

/// Every key of a store: (bucket, key) → what it holds.
type Data = BTreeMap<(String, String), Held>;

/// Asserts the node at `addr` serves exactly `want`: every bucket of `want` lists exactly its
/// keys, and every key answers its value, content type and expiry.
fn assert_serves(addr: SocketAddr, want: &Data, who: &str) {
    let mut c = Conn::open(addr);
    let buckets: std::collections::BTreeSet<&str> = want.keys().map(|(b, _)| b.as_str()).collect();
    for bucket in buckets {
        let v = c
            .request("GET", &format!("/v1/kv/{bucket}?limit=1000"), &[], None)
            .json();
        let keys: Vec<&str> = v["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k.as_str().expect("a string key"))
            .collect();
        let expected: Vec<&str> = want
            .keys()
            .filter(|(b, _)| b == bucket)
            .map(|(_, k)| k.as_str())
            .collect();
        assert_eq!(keys, expected, "{who}: the keys of bucket {bucket}");
    }
    for ((bucket, key), held) in want {
        let r = c.request("GET", &kv_path(bucket, key), &[], None);
        assert_eq!(r.status, 200, "{who}: {bucket}/{key}: {}", r.text());
        assert!(
            r.body == held.value,
            "{who}: {bucket}/{key}: a value of {} bytes, want {} bytes",
            r.body.len(),
            held.value.len()
        );
        assert_eq!(
            r.header("content-type"),
            Some(held.content_type.as_str()),
            "{who}: {bucket}/{key}"
        );
        let expires_at = r
            .header("micronode-expires-at")
            .map(|v| v.parse::<u64>().expect("a numeric expiry"));
        assert_eq!(expires_at, held.expires_at, "{who}: {bucket}/{key}");
    }
}

/// `micronode snapshot save FILE` from the node at `addr`.
fn save_snapshot(addr: SocketAddr, file: &Path) {
    let base = format!("http://{addr}");
    let cwd = file.parent().expect("the file's directory");
    let file_arg = file.display().to_string();
    let (code, out, err) = support::run_binary(
        &["snapshot", "save", &file_arg],
        &[("MICRONODE_URL", base.as_str())],
        cwd,
    );
    assert_eq!(code, 0, "snapshot save from {addr}: {out} {err}");
}

/// `micronode snapshot restore FILE` into the engine `env` names; its output.
fn restore_snapshot(file: &Path, env: &[(&str, &str)]) -> String {
    let cwd = file.parent().expect("the file's directory");
    let file_arg = file.display().to_string();
    let (code, out, err) = support::run_binary(&["snapshot", "restore", &file_arg], env, cwd);
    assert_eq!(code, 0, "snapshot restore {env:?}: {out} {err}");
    out
}

/// A saved snapshot file: its revision, its key lines by (bucket, key) without their `etag`
/// (revisions differ between stores; everything else must not), and its system records.
fn read_snapshot(path: &Path) -> (u64, BTreeMap<(String, String), Value>, Vec<Value>) {
    let text = std::fs::read_to_string(path).expect("snapshot file");
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().expect("a header")).expect("JSON");
    let revision = header["revision"].as_u64().expect("revision");
    let (mut keys, mut system) = (BTreeMap::new(), Vec::new());
    for line in lines {
        let mut v: Value = serde_json::from_str(line).expect("a JSON line");
        if v["end"] == true {
            continue;
        }
        if v.get("system").is_some() {
            system.push(v);
            continue;
        }
        let at = (
            v["bucket"].as_str().expect("bucket").to_owned(),
            v["key"].as_str().expect("key").to_owned(),
        );
        v.as_object_mut().expect("an object").remove("etag");
        assert!(keys.insert(at, v).is_none(), "one line per key");
    }
    (revision, keys, system)
}

/// Keys written to a sled node (several buckets, text and binary values, an empty one, one past
/// 128 KiB, content types given and not, a TTL, a UTF-8 key, an overwrite, a delete) are saved,
/// restored into an empty PostgreSQL schema and served by a postgres node exactly as sled served
/// them; a snapshot of that node restored into a fresh sled directory serves them again.
#[test]
fn a_snapshot_moves_from_sled_to_postgres_and_back() {
    let Some(url) = pg_url() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let sled_a = dir.path().join("sled-a").display().to_string();
    let source = TestServer::start(&[
        ("MICRONODE_STORAGE_ENGINE", "sled"),
        ("MICRONODE_STORAGE_PATH", sled_a.as_str()),
    ]);

    let binary: Vec<u8> = (0..=255u8).collect();
    let mut rng = 0x2545_F491_4F6C_DD1D_u64;
    let big: Vec<u8> = (0..200_000)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng.to_le_bytes()[3]
        })
        .collect();
    type Item<'a> = (&'a str, &'a str, &'a [u8], Option<&'a str>, Option<u64>);
    let items: [Item<'_>; 9] = [
        ("app", "cfg/a", b"first", Some("text/plain"), None),
        (
            "app",
            "cfg/b",
            br#"{"x":1}"#,
            Some("application/json"),
            None,
        ),
        (
            "app",
            "caf\u{e9} au lait",
            b"with milk",
            Some("text/plain; charset=utf-8"),
            None,
        ),
        ("app", "empty", b"", None, None),
        ("app", "gone", b"deleted below", None, None),
        ("bin", "all-bytes", &binary, None, None),
        ("bin", "big", &big, Some("image/x-test"), None),
        ("sess", "s1", b"token", Some("text/plain"), Some(3_600)),
        ("sess", "s2", b"no ttl", None, None),
    ];
    let mut want = Data::new();
    for (bucket, key, value, content_type, ttl) in items {
        let mut path = kv_path(bucket, key);
        if let Some(t) = ttl {
            path.push_str(&format!("?ttl={t}"));
        }
        let headers: Vec<(&str, &str)> =
            content_type.iter().map(|c| ("content-type", *c)).collect();
        let r = put(source.addr, &path, value, &headers);
        assert_eq!(r.status, 201, "{bucket}/{key}: {}", r.text());
        let expires_at = r
            .header("micronode-expires-at")
            .map(|v| v.parse().expect("a numeric expiry"));
        assert_eq!(expires_at.is_some(), ttl.is_some(), "{bucket}/{key}");
        let held = Held {
            value: value.to_vec(),
            content_type: content_type
                .unwrap_or("application/octet-stream")
                .to_owned(),
            expires_at,
        };
        want.insert((bucket.to_owned(), key.to_owned()), held);
    }
    // An overwrite leaves only the last value and content type; a delete leaves nothing.
    let r = put(
        source.addr,
        "/v1/kv/app/cfg/a",
        b"second",
        &[("content-type", "text/csv")],
    );
    assert_eq!(r.status, 204, "{}", r.text());
    if let Some(h) = want.get_mut(&("app".to_owned(), "cfg/a".to_owned())) {
        h.value = b"second".to_vec();
        h.content_type = "text/csv".to_owned();
    }
    let r = request(source.addr, "DELETE", "/v1/kv/app/gone", &[], None);
    assert_eq!(r.status, 204, "{}", r.text());
    want.remove(&("app".to_owned(), "gone".to_owned()));
    assert_serves(source.addr, &want, "the sled source");

    let from_sled = dir.path().join("from-sled.ndjson");
    save_snapshot(source.addr, &from_sled);
    let (_, lines, system) = read_snapshot(&from_sled);
    assert_eq!(lines.len(), want.len(), "one line per live key: {lines:?}");

    // Into an empty PostgreSQL schema, served by a postgres node.
    let schema = fresh_schema();
    let pg_env = [
        ("MICRONODE_STORAGE_ENGINE", "postgres"),
        ("MICRONODE_PG_URL", url.as_str()),
        ("MICRONODE_PG_SCHEMA", schema.as_str()),
    ];
    let out = restore_snapshot(&from_sled, &pg_env);
    assert!(
        out.contains(&format!("\"restored\":{}", want.len())),
        "{out}"
    );
    let pg = node(&url, &schema);
    assert_serves(pg.addr, &want, "the postgres node");

    // Back out of PostgreSQL into a fresh sled directory.
    let from_pg = dir.path().join("from-pg.ndjson");
    save_snapshot(pg.addr, &from_pg);
    let (_, pg_lines, pg_system) = read_snapshot(&from_pg);
    assert!(
        pg_lines == lines,
        "the postgres node's snapshot: {pg_lines:?}"
    );
    assert_eq!(pg_system, system, "system records");
    let sled_b = dir.path().join("sled-b").display().to_string();
    let sled_env = [
        ("MICRONODE_STORAGE_ENGINE", "sled"),
        ("MICRONODE_STORAGE_PATH", sled_b.as_str()),
    ];
    let out = restore_snapshot(&from_pg, &sled_env);
    assert!(
        out.contains(&format!("\"restored\":{}", want.len())),
        "{out}"
    );
    let back = TestServer::start(&sled_env);
    assert_serves(back.addr, &want, "the sled node restored from postgres");
    let again = dir.path().join("again.ndjson");
    save_snapshot(back.addr, &again);
    let (_, back_lines, back_system) = read_snapshot(&again);
    assert!(
        back_lines == lines,
        "the round trip's snapshot: {back_lines:?}"
    );
    assert_eq!(back_system, system, "system records");
    eprintln!(
        "round trip of {} keys; system records: {system:?}",
        lines.len()
    );
}

// ---- Bank transfers over two nodes ------------------------------------------------------------

const ACCOUNTS: usize = 10;
const OPENING_BALANCE: u64 = 100;
const TOTAL: u64 = OPENING_BALANCE * ACCOUNTS as u64;

/// `POST /v1/txn`, which must answer 200 (no outage here: anything else fails the test).
fn txn_ok(addr: SocketAddr, body: &Value) -> Value {
    let r = request(
        addr,
        "POST",
        "/v1/txn",
        &[("content-type", "application/json")],
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "POST /v1/txn on {addr}: {}", r.text());
    r.json()
}

/// A balance as stored: a decimal in base64.
fn balance_of(value: &Value) -> u64 {
    let raw = BASE64
        .decode(value.as_str().expect("a base64 value"))
        .expect("valid base64");
    String::from_utf8(raw)
        .expect("UTF-8 balance")
        .parse()
        .expect("decimal balance")
}

/// All balances in one multi-get transaction (one consistent read) and the revision it read at.
fn balances(addr: SocketAddr) -> (u64, Vec<u64>) {
    let then: Vec<Value> = (0..ACCOUNTS)
        .map(|i| json!({"op": "get", "bucket": "bank", "key": format!("acct{i}")}))
        .collect();
    let v = txn_ok(addr, &json!({ "then": then }));
    let balances = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            assert_eq!(r["found"], true, "{v}");
            balance_of(&r["value"])
        })
        .collect();
    (v["revision"].as_u64().expect("revision"), balances)
}

/// A committed transfer: the revision it committed at, from, to, amount.
type Transfer = (u64, usize, usize, u64);

/// One transfer attempt between two accounts (read both, then write both if neither changed);
/// `None` when a compare failed.
fn transfer(addr: SocketAddr, rng: &mut u64) -> Option<Transfer> {
    let (from, to, amount) = support::pick_transfer(rng, ACCOUNTS);
    let keys = [format!("acct{from}"), format!("acct{to}")];
    let read = txn_ok(
        addr,
        &json!({"then": [
            {"op": "get", "bucket": "bank", "key": keys[0]},
            {"op": "get", "bucket": "bank", "key": keys[1]},
        ]}),
    );
    let res = &read["results"];
    let (a, b) = (balance_of(&res[0]["value"]), balance_of(&res[1]["value"]));
    let amount = amount.min(a);
    let v = txn_ok(
        addr,
        &json!({
            "if": [
                {"bucket": "bank", "key": keys[0], "etag": res[0]["etag"]},
                {"bucket": "bank", "key": keys[1], "etag": res[1]["etag"]},
            ],
            "then": [
                {"op": "put", "bucket": "bank", "key": keys[0], "value": BASE64.encode((a - amount).to_string())},
                {"op": "put", "bucket": "bank", "key": keys[1], "value": BASE64.encode((b + amount).to_string())},
            ],
        }),
    );
    (v["succeeded"] == true).then(|| (v["revision"].as_u64().expect("revision"), from, to, amount))
}

/// The balances once every committed transfer up to `revision` is applied (`transfers` in
/// revision order).
fn balances_at(transfers: &[Transfer], revision: u64) -> Vec<u64> {
    let mut b = vec![OPENING_BALANCE; ACCOUNTS];
    for &(_, from, to, amount) in transfers.iter().filter(|t| t.0 <= revision) {
        b[from] -= amount;
        b[to] += amount;
    }
    b
}

/// A bank snapshot file: its revision and the balances it holds.
fn bank_in_snapshot(path: &Path) -> (u64, Vec<u64>) {
    let (revision, lines, _) = read_snapshot(path);
    let b: Vec<u64> = (0..ACCOUNTS)
        .map(|i| {
            let line = lines
                .get(&("bank".to_owned(), format!("acct{i}")))
                .unwrap_or_else(|| panic!("acct{i} in the snapshot"));
            balance_of(&line["value"])
        })
        .collect();
    assert_eq!(lines.len(), ACCOUNTS, "only the accounts: {lines:?}");
    (revision, b)
}

/// Transfers between 10 accounts by 8 clients split over two nodes on one schema, for at most
/// 8 s: every consistent read on either node (one multi-get transaction) and every snapshot taken
/// from either node meanwhile is exactly the balances after the transfers committed up to its
/// revision (so the total stays 1000), and at the end both nodes hold that state for all of them.
#[test]
fn bank_transfer_invariant_over_two_postgres_nodes() {
    let Some(url) = pg_url() else { return };
    let schema = fresh_schema();
    let (a, b) = (node(&url, &schema), node(&url, &schema));
    let addrs = [a.addr, b.addr];
    let open: Vec<Value> = (0..ACCOUNTS)
        .map(|i| {
            json!({"op": "put", "bucket": "bank", "key": format!("acct{i}"),
                   "value": BASE64.encode(OPENING_BALANCE.to_string())})
        })
        .collect();
    let v = txn_ok(
        a.addr,
        &json!({"if": [{"bucket": "bank", "key": "acct0", "exists": false}], "then": open}),
    );
    assert_eq!(v["succeeded"], true, "{v}");
    let opened = v["revision"].as_u64().expect("revision");
    assert_eq!(
        balances(b.addr).1,
        vec![OPENING_BALANCE; ACCOUNTS],
        "B reads A's txn"
    );

    const WRITERS: usize = 8;
    const PER_WRITER: usize = 150;
    const ATTEMPTS: usize = 2_000;
    const READS: usize = 20_000;
    let deadline = Instant::now() + Duration::from_secs(8);
    let committed = AtomicU64::new(0);
    let writing = AtomicUsize::new(WRITERS);
    let stop = AtomicBool::new(false);
    let dir = tempfile::tempdir().expect("temp dir");
    let (transfers, reads, snapshots) = std::thread::scope(|sc| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let addr = addrs[t % 2];
                let (committed, writing) = (&committed, &writing);
                sc.spawn(move || {
                    let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1).wrapping_mul(0x2545_F491);
                    let mut mine = Vec::new();
                    for _ in 0..ATTEMPTS {
                        if mine.len() >= PER_WRITER || Instant::now() >= deadline {
                            break;
                        }
                        if let Some(t) = transfer(addr, &mut rng) {
                            mine.push(t);
                            committed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    writing.fetch_sub(1, Ordering::SeqCst);
                    mine
                })
            })
            .collect();
        let readers: Vec<_> = addrs
            .iter()
            .map(|&addr| {
                let stop = &stop;
                sc.spawn(move || {
                    let mut seen = Vec::new();
                    while seen.len() < READS
                        && !stop.load(Ordering::SeqCst)
                        && Instant::now() < deadline
                    {
                        let (revision, b) = balances(addr);
                        assert_eq!(
                            b.iter().sum::<u64>(),
                            TOTAL,
                            "a consistent read on {addr}: {b:?}"
                        );
                        seen.push((addr, revision, b));
                    }
                    seen
                })
            })
            .collect();
        // Snapshots from both nodes while the transfers run (at least one from each).
        support::poll("transfers under way", || {
            (committed.load(Ordering::SeqCst) >= 20).then_some(())
        });
        let mut snapshots = Vec::new();
        for n in 0..6 {
            if n >= 2 && writing.load(Ordering::SeqCst) == 0 {
                break;
            }
            let file = dir.path().join(format!("bank-{n}.ndjson"));
            let before = committed.load(Ordering::SeqCst);
            save_snapshot(addrs[n % 2], &file);
            let during = committed.load(Ordering::SeqCst) - before;
            let (revision, b) = bank_in_snapshot(&file);
            assert_eq!(
                b.iter().sum::<u64>(),
                TOTAL,
                "snapshot {n} at {revision}: {b:?}"
            );
            snapshots.push((addrs[n % 2], revision, b, during));
        }
        let transfers: Vec<Transfer> = writers
            .into_iter()
            .flat_map(|h| h.join().expect("transfer thread"))
            .collect();
        stop.store(true, Ordering::SeqCst);
        let reads: Vec<_> = readers
            .into_iter()
            .flat_map(|h| h.join().expect("reader thread"))
            .collect();
        (transfers, reads, snapshots)
    });

    assert!(!transfers.is_empty(), "some transfers committed");
    let mut transfers = transfers;
    transfers.sort_unstable();
    // Revisions are dense and in commit order: the transfers took exactly the ones after the
    // opening, one each, whichever node committed them.
    let revisions: Vec<u64> = transfers.iter().map(|t| t.0).collect();
    let want: Vec<u64> = (opened + 1..=opened + transfers.len() as u64).collect();
    assert!(revisions == want, "transfer revisions: {revisions:?}");
    for addr in addrs {
        let n = reads.iter().filter(|r| r.0 == addr).count();
        assert!(n > 0, "the reader on {addr} read during the transfers");
    }
    for (addr, revision, b) in &reads {
        assert_eq!(
            *b,
            balances_at(&transfers, *revision),
            "the read on {addr} at {revision}"
        );
    }
    for (addr, revision, b, _) in &snapshots {
        assert!(
            *revision > opened,
            "the snapshot from {addr} follows the opening"
        );
        assert_eq!(
            *b,
            balances_at(&transfers, *revision),
            "the snapshot from {addr} at {revision}"
        );
    }
    let last = revisions.last().copied().unwrap_or(opened);
    let end = balances_at(&transfers, last);
    assert_eq!(end.iter().sum::<u64>(), TOTAL);
    for addr in addrs {
        let (revision, b) = balances(addr);
        assert_eq!(revision, last, "nothing but the transfers wrote ({addr})");
        assert_eq!(b, end, "{addr} holds every committed transfer");
    }
    eprintln!(
        "{} transfers committed, {} consistent reads, snapshots (node, revision, transfers committed while it ran): {:?}",
        transfers.len(),
        reads.len(),
        snapshots
            .iter()
            .map(|s| (s.0, s.1, s.3))
            .collect::<Vec<_>>()
    );
}
