//! KV v1 over TCP on a real sled store in a temp dir.

mod support;

use std::sync::{Arc, Barrier};
use std::thread;

use support::{Conn, TestServer, request, series_count};

#[test]
fn round_trip_through_every_route() {
    let s = TestServer::start(&[]);
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let r = request(
        s.addr,
        "PUT",
        "/v1/kv/b1/bin",
        &[("content-type", "application/x-raw")],
        Some(&all_bytes),
    );
    assert_eq!(r.status, 201);
    let etag1 = r.header("etag").expect("etag on PUT").to_owned();
    assert!(etag1.starts_with('"') && etag1.ends_with('"'));

    let r = s.get("/v1/kv/b1/bin");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, all_bytes);
    assert_eq!(r.header("content-type"), Some("application/x-raw"));
    assert_eq!(r.header("etag"), Some(etag1.as_str()));

    let r = request(s.addr, "HEAD", "/v1/kv/b1/bin", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("256"));
    assert_eq!(r.header("etag"), Some(etag1.as_str()));
    assert!(r.body.is_empty());

    let r = request(s.addr, "PUT", "/v1/kv/b1/bin", &[], Some(b"second"));
    assert_eq!(r.status, 204, "replace is 204");
    let etag2 = r.header("etag").expect("etag").to_owned();
    assert_ne!(etag1, etag2, "etag changes on every write");
    let r = s.get("/v1/kv/b1/bin");
    assert_eq!(
        r.header("content-type"),
        Some("application/octet-stream"),
        "default type"
    );

    let r = request(
        s.addr,
        "GET",
        "/v1/kv/b1/bin",
        &[("if-none-match", &etag2)],
        None,
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = request(
        s.addr,
        "GET",
        "/v1/kv/b1/bin",
        &[("if-none-match", &etag1)],
        None,
    );
    assert_eq!(r.status, 200);

    assert_eq!(
        request(s.addr, "DELETE", "/v1/kv/b1/bin", &[], None).status,
        204
    );
    s.get("/v1/kv/b1/bin").assert_error(404, "not_found", false);
    request(s.addr, "DELETE", "/v1/kv/b1/bin", &[], None).assert_error(404, "not_found", false);
}

#[test]
fn empty_and_1mib_values_and_odd_keys() {
    let s = TestServer::start(&[]);
    assert_eq!(
        request(s.addr, "PUT", "/v1/kv/b/empty", &[], Some(b"")).status,
        201
    );
    let r = s.get("/v1/kv/b/empty");
    assert_eq!((r.status, r.body.len()), (200, 0));

    let big: Vec<u8> = (0..1_048_576u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(
        request(s.addr, "PUT", "/v1/kv/b/big", &[], Some(&big)).status,
        201
    );
    assert_eq!(s.get("/v1/kv/b/big").body, big);

    // Slashes, spaces and percent-encoded UTF-8 in keys.
    for (path, key) in [
        ("/v1/kv/b/a/b/c", "a/b/c"),
        ("/v1/kv/b/with%20space", "with space"),
        ("/v1/kv/b/caf%C3%A9/%E2%9C%93", "café/✓"),
        ("/v1/kv/b/enc%2Fslash", "enc/slash"),
    ] {
        assert_eq!(
            request(s.addr, "PUT", path, &[], Some(key.as_bytes())).status,
            201,
            "{path}"
        );
        assert_eq!(s.get(path).body, key.as_bytes(), "{path}");
    }
    // %2F and a literal / name the same key.
    assert_eq!(s.get("/v1/kv/b/enc/slash").body, b"enc/slash");
    let listed = s.get("/v1/kv/b?prefix=caf").json();
    assert_eq!(listed["keys"], serde_json::json!(["café/✓"]));
}

#[test]
fn invalid_buckets_and_keys_are_400() {
    let s = TestServer::start(&[]);
    let long_bucket = format!("/v1/kv/{}/k", "a".repeat(64));
    let long_key = format!("/v1/kv/b/{}", "k".repeat(1025));
    for path in [
        "/v1/kv/UPPER/k",
        "/v1/kv/-dash/k",
        "/v1/kv/b%20x/k",
        long_bucket.as_str(),
        long_key.as_str(),
        "/v1/kv/b/%zz",
        "/v1/kv/b/%FF",
    ] {
        request(s.addr, "PUT", path, &[], Some(b"v")).assert_error(400, "bad_request", false);
        s.get(path).assert_error(400, "bad_request", false);
    }
    s.get("/v1/kv/UPPER")
        .assert_error(400, "bad_request", false);
    s.get("/v1/kv/b?limit=0")
        .assert_error(400, "bad_request", false);
    s.get("/v1/kv/b?limit=1001")
        .assert_error(400, "bad_request", false);
    s.get("/v1/kv/b?bogus=1")
        .assert_error(400, "bad_request", false);
}

#[test]
fn conditional_writes() {
    let s = TestServer::start(&[]);
    let r = request(
        s.addr,
        "PUT",
        "/v1/kv/b/c",
        &[("if-none-match", "*")],
        Some(b"1"),
    );
    assert_eq!(r.status, 201);
    let tag = r.header("etag").expect("etag").to_owned();
    request(
        s.addr,
        "PUT",
        "/v1/kv/b/c",
        &[("if-none-match", "*")],
        Some(b"2"),
    )
    .assert_error(412, "precondition_failed", false);
    request(
        s.addr,
        "PUT",
        "/v1/kv/b/c",
        &[("if-match", "\"ffff\"")],
        Some(b"2"),
    )
    .assert_error(412, "precondition_failed", false);
    let r = request(
        s.addr,
        "PUT",
        "/v1/kv/b/c",
        &[("if-match", &tag)],
        Some(b"2"),
    );
    assert_eq!(r.status, 204);
    let tag2 = r.header("etag").expect("etag").to_owned();
    request(s.addr, "DELETE", "/v1/kv/b/c", &[("if-match", &tag)], None).assert_error(
        412,
        "precondition_failed",
        false,
    );
    assert_eq!(
        request(s.addr, "DELETE", "/v1/kv/b/c", &[("if-match", &tag2)], None).status,
        204
    );
    request(
        s.addr,
        "PUT",
        "/v1/kv/b/c",
        &[("if-match", "*")],
        Some(b"3"),
    )
    .assert_error(412, "precondition_failed", false);
}

/// 32 concurrent If-Match PUTs with the same ETag: exactly one wins.
#[test]
fn cas_race_has_exactly_one_winner() {
    let s = TestServer::start(&[]);
    let tag = request(s.addr, "PUT", "/v1/kv/b/race", &[], Some(b"0"))
        .header("etag")
        .expect("etag")
        .to_owned();
    let statuses = race(
        32,
        move |c, i| {
            let body = format!("writer-{i}");
            c.request(
                "PUT",
                "/v1/kv/b/race",
                &[("if-match", &tag)],
                Some(body.as_bytes()),
            )
            .status
        },
        s.addr,
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 204).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 412).count(),
        31,
        "{statuses:?}"
    );

    let statuses = race(
        32,
        |c, _| {
            c.request(
                "PUT",
                "/v1/kv/b/create",
                &[("if-none-match", "*")],
                Some(b"x"),
            )
            .status
        },
        s.addr,
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 412).count(),
        31,
        "{statuses:?}"
    );
}

/// Runs `f` on `n` connections released together by a barrier; returns what each returned.
fn race<F>(n: usize, f: F, addr: std::net::SocketAddr) -> Vec<u16>
where
    F: Fn(&mut Conn, usize) -> u16 + Send + Sync + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let f = Arc::new(f);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, f) = (Arc::clone(&barrier), Arc::clone(&f));
            thread::spawn(move || {
                let mut c = Conn::open(addr);
                barrier.wait();
                f(&mut c, i)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("racer"))
        .collect()
}

/// 2,500 keys paged 100 at a time come back each exactly once, in byte order.
#[test]
fn listing_pages_every_key_once_in_order() {
    let s = TestServer::start(&[("MICRONODE_DURABILITY", "periodic")]);
    let mut c = Conn::open(s.addr);
    let mut want: Vec<String> = (0..2500).map(|i| format!("k{i}")).collect();
    for k in &want {
        let r = c.request("PUT", &format!("/v1/kv/list/{k}"), &[], Some(b"v"));
        assert_eq!(r.status, 201);
    }
    c.request("PUT", "/v1/kv/other/k1", &[], Some(b"v"));
    want.sort();
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let path = match &after {
            None => "/v1/kv/list?limit=100".to_owned(),
            Some(a) => format!("/v1/kv/list?limit=100&after={a}"),
        };
        let v = c.request("GET", &path, &[], None).json();
        let keys = v["keys"].as_array().expect("keys array");
        assert!(keys.len() <= 100);
        got.extend(
            keys.iter()
                .map(|k| k.as_str().expect("string key").to_owned()),
        );
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(got, want);
    let v = c
        .request("GET", "/v1/kv/list?prefix=k249&limit=1000", &[], None)
        .json();
    assert_eq!(
        v["keys"],
        serde_json::json!([
            "k249", "k2490", "k2491", "k2492", "k2493", "k2494", "k2495", "k2496", "k2497",
            "k2498", "k2499"
        ])
    );
    assert_eq!(v["next"], serde_json::Value::Null);
}

/// Under 64 concurrent sync writers, flushes are shared: the batch histogram shows batches > 1.
#[test]
fn group_commit_shares_flushes() {
    let s = TestServer::start(&[("MICRONODE_DURABILITY", "sync")]);
    let barrier = Arc::new(Barrier::new(64));
    let handles: Vec<_> = (0..64)
        .map(|w| {
            let (addr, barrier) = (s.addr, Arc::clone(&barrier));
            thread::spawn(move || {
                let mut c = Conn::open(addr);
                barrier.wait();
                for i in 0..20 {
                    let r = c.request(
                        "PUT",
                        &format!("/v1/kv/gc/w{w}-{i}"),
                        &[],
                        Some(&[7u8; 128]),
                    );
                    assert_eq!(r.status, 201);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer");
    }
    let writes = 64.0 * 20.0;
    let batches = s.metric("micronode_storage_commit_batch_size_count");
    let batched = s.metric("micronode_storage_commit_batch_size_sum");
    assert_eq!(batched, writes, "every write was covered by a flush");
    assert!(
        batches < writes,
        "flushes were shared: {batches} flushes for {writes} writes"
    );
    assert!(
        s.metric("micronode_storage_commit_batch_size_bucket{le=\"1\"}") < batches,
        "some flush served more than one write"
    );
    assert_eq!(s.metric("micronode_kv_ops_total{op=\"put\"}"), writes);
    assert_eq!(
        s.metric("micronode_kv_bytes_total{dir=\"in\"}"),
        writes * 128.0
    );
}

/// Writing 10,000 distinct keys leaves the number of series unchanged.
#[test]
fn series_count_does_not_grow_with_keys() {
    let s = TestServer::start(&[("MICRONODE_STORAGE_ENGINE", "mem")]);
    let mut c = Conn::open(s.addr);
    c.request("PUT", "/v1/kv/warm/k", &[], Some(b"v"));
    c.request("GET", "/v1/kv/warm/k", &[], None);
    c.request("GET", "/v1/kv/warm/missing", &[], None);
    let before = series_count(&mut c);
    for i in 0..10_000 {
        let b = i % 50;
        if i % 2 == 0 {
            c.request("PUT", &format!("/v1/kv/b{b}/key-{i}"), &[], Some(b"v"));
        } else {
            c.request("GET", &format!("/v1/kv/b{b}/key-{i}"), &[], None);
        }
    }
    assert_eq!(series_count(&mut c), before);
}

/// The content-type limit is the same for every engine: 1024 bytes are stored whole, 1025 are
/// refused with 400 and nothing is stored (no engine truncates).
#[test]
fn content_type_over_1024_bytes_is_400_on_every_engine() {
    for engine in ["sled", "mem"] {
        let s = TestServer::start(&[("MICRONODE_STORAGE_ENGINE", engine)]);
        let max = format!("application/x-{}", "a".repeat(1024 - 14));
        let over = format!("{max}a");
        let r = request(
            s.addr,
            "PUT",
            "/v1/kv/ct/k",
            &[("content-type", &over)],
            Some(b"v"),
        );
        r.assert_error(400, "bad_request", false);
        assert!(
            r.text().contains("1024"),
            "{engine}: the message states the rule"
        );
        s.get("/v1/kv/ct/k").assert_error(404, "not_found", false);
        let r = request(
            s.addr,
            "PUT",
            "/v1/kv/ct/k",
            &[("content-type", &max)],
            Some(b"v"),
        );
        assert_eq!(r.status, 201, "{engine}");
        assert_eq!(
            s.get("/v1/kv/ct/k").header("content-type"),
            Some(max.as_str()),
            "{engine}"
        );
    }
}

/// Under 16 concurrent writers of one key, the ETag a reader sees never goes backwards: the
/// revision order is the order writes are applied in.
#[test]
fn a_keys_etag_never_goes_backwards_under_racing_writers() {
    let s = TestServer::start(&[("MICRONODE_DURABILITY", "sync")]);
    let handles: Vec<_> = (0..16)
        .map(|w| {
            let addr = s.addr;
            thread::spawn(move || {
                let mut c = Conn::open(addr);
                for i in 0..30u8 {
                    let r = c.request("PUT", "/v1/kv/race/k", &[], Some(&[w, i]));
                    assert!(r.status == 201 || r.status == 204);
                }
            })
        })
        .collect();
    let mut c = Conn::open(s.addr);
    let mut last = 0u64;
    for _ in 0..200 {
        let r = c.request("GET", "/v1/kv/race/k", &[], None);
        if let Some(tag) = r.header("etag") {
            let rev = u64::from_str_radix(tag.trim_matches('"'), 16).expect("hex ETag");
            assert!(rev >= last, "ETag went backwards: {rev:x} after {last:x}");
            last = rev;
        }
    }
    for h in handles {
        h.join().expect("writer");
    }
}
