//! Every reject path of docs/API.md (guards and error codes) over real TCP: status, code, retryable, request id,
//! `Retry-After` where due, and the matching `micronode_rejections_total` increment.

mod support;

use std::io::Write as _;

use support::{Conn, TestServer, poll, request, rss_kib};

fn rejections(s: &TestServer, reason: &str) -> f64 {
    s.metric(&format!(
        "micronode_rejections_total{{reason=\"{reason}\"}}"
    ))
}

/// Runs `f` and asserts it added exactly one rejection of `reason`.
fn counts_one(s: &TestServer, reason: &str, f: impl FnOnce()) {
    let before = rejections(s, reason);
    f();
    assert_eq!(rejections(s, reason), before + 1.0, "{reason}");
}

fn dev() -> TestServer {
    TestServer::start(&[
        ("MICRONODE_DEV_ROUTES", "1"),
        ("MICRONODE_MAX_BODY_BYTES", "64"),
    ])
}

#[test]
fn any_content_encoding_is_415() {
    let s = dev();
    for enc in ["gzip", "GZIP", "identity", "br"] {
        counts_one(&s, "unsupported_encoding", || {
            request(
                s.addr,
                "POST",
                "/dev/echo",
                &[("content-encoding", enc)],
                Some(b"{}"),
            )
            .assert_error(415, "unsupported_encoding", false);
        });
    }
    // A GET with the header is judged the same way (hot reject, no body involved).
    request(
        s.addr,
        "GET",
        "/v1/ping",
        &[("content-encoding", "gzip")],
        None,
    )
    .assert_error(415, "unsupported_encoding", false);
}

#[test]
fn stacked_encodings_are_415_always() {
    for allow in ["0", "1"] {
        let s = TestServer::start(&[
            ("MICRONODE_DEV_ROUTES", "1"),
            ("MICRONODE_ALLOW_COMPRESSED", allow),
        ]);
        counts_one(&s, "stacked_encoding", || {
            request(
                s.addr,
                "POST",
                "/dev/echo",
                &[("content-encoding", "gzip, br")],
                Some(b"{}"),
            )
            .assert_error(415, "stacked_encoding", false);
        });
        counts_one(&s, "stacked_encoding", || {
            request(
                s.addr,
                "POST",
                "/dev/echo",
                &[("content-encoding", "gzip"), ("content-encoding", "gzip")],
                Some(b"{}"),
            )
            .assert_error(415, "stacked_encoding", false);
        });
    }
}

#[test]
fn body_cap_boundaries() {
    let s = dev();
    let at_cap = format!("\"{}\"", "a".repeat(62));
    assert_eq!(at_cap.len(), 64);
    let r = request(s.addr, "POST", "/dev/echo", &[], Some(at_cap.as_bytes()));
    assert_eq!(r.status, 200, "length == cap is accepted: {}", r.text());
    let over = format!("\"{}\"", "a".repeat(63));
    counts_one(&s, "body_cap", || {
        let r = request(s.addr, "POST", "/dev/echo", &[], Some(over.as_bytes()));
        r.assert_error(413, "body_cap", false);
        assert_eq!(r.json()["message"], "request body exceeds 64 bytes");
    });
    let r = request(s.addr, "PUT", "/v1/kv/b/empty", &[], Some(b""));
    assert_eq!(r.status, 201, "0-length PUT is fine");
}

/// 413 is answered from the head alone: the client never sends the body.
#[test]
fn oversized_declared_length_is_413_before_the_body() {
    let s = dev();
    let mut c = Conn::open(s.addr);
    c.send(b"PUT /v1/kv/b/k HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n");
    let r = c.read_response(false).expect("answer without body");
    r.assert_error(413, "body_cap", false);
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn missing_length_and_chunked_are_411() {
    let s = dev();
    counts_one(&s, "length_required", || {
        let mut c = Conn::open(s.addr);
        c.send(b"POST /dev/echo HTTP/1.1\r\nhost: x\r\n\r\n");
        c.read_response(false)
            .expect("response")
            .assert_error(411, "length_required", false);
    });
    counts_one(&s, "length_required", || {
        let mut c = Conn::open(s.addr);
        c.send(b"POST /dev/echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
        c.read_response(false)
            .expect("response")
            .assert_error(411, "length_required", false);
    });
}

/// A body that stalls is 408 and its permit is given back.
#[test]
fn stalled_body_is_408_and_releases_the_permit() {
    let s = TestServer::start(&[
        ("MICRONODE_BODY_READ_TIMEOUT_MS", "200"),
        ("MICRONODE_KV_MAX_INFLIGHT", "1"),
    ]);
    counts_one(&s, "body_timeout", || {
        let mut c = Conn::open(s.addr);
        c.send(b"PUT /v1/kv/b/k HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc");
        c.read_response(false)
            .expect("response")
            .assert_error(408, "body_timeout", true);
    });
    // The single write slot is free again.
    assert_eq!(
        request(s.addr, "PUT", "/v1/kv/b/k", &[], Some(b"v")).status,
        201
    );
}

/// N+1 held requests on a budget of N: exactly one 429, and a client that disconnects
/// mid-request gives its permit back.
#[test]
fn concurrency_budget_is_exact_and_released_on_disconnect() {
    let s = TestServer::start(&[
        ("MICRONODE_READY_MAX_INFLIGHT", "3"),
        ("MICRONODE_READY_SLEEP_MS", "60000"),
        ("MICRONODE_READY_TIMEOUT_MS", "60000"),
    ]);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Conn::open(s.addr);
        c.send(&support::build_request("GET", "/readyz", &[], None));
        held.push(c);
    }
    poll("three held", || {
        (s.metric("micronode_ready_inflight_current") == 3.0).then_some(())
    });
    assert_eq!(s.metric("micronode_ready_queue_saturated"), 1.0);
    counts_one(&s, "concurrency", || {
        let r = s.get("/readyz");
        r.assert_error(429, "concurrency", true);
        assert_eq!(r.header("retry-after"), Some("1"));
    });
    // One client goes away; its permit comes back without any answer being sent.
    drop(held.pop());
    poll("permit released", || {
        (s.metric("micronode_ready_inflight_current") == 2.0).then_some(())
    });
    let mut again = Conn::open(s.addr);
    again.send(&support::build_request("GET", "/readyz", &[], None));
    poll("slot reused", || {
        (s.metric("micronode_ready_inflight_current") == 3.0).then_some(())
    });
}

/// The time bound answers 503 `timeout` and frees the budget.
#[test]
fn timeout_is_503_and_frees_the_budget() {
    let s = TestServer::start(&[
        ("MICRONODE_READY_MAX_INFLIGHT", "1"),
        ("MICRONODE_READY_SLEEP_MS", "5000"),
        ("MICRONODE_READY_TIMEOUT_MS", "100"),
    ]);
    counts_one(&s, "timeout", || {
        s.get("/readyz").assert_error(503, "timeout", true)
    });
    assert_eq!(s.metric("micronode_ready_inflight_current"), 0.0);
    s.get("/readyz").assert_error(503, "timeout", true);
}

/// Burst past the bucket → 429 with Retry-After; then success once it refills.
#[test]
fn dev_rl_bucket_refuses_past_burst_then_refills() {
    let s = TestServer::start(&[
        ("MICRONODE_DEV_ROUTES", "1"),
        ("MICRONODE_RL_RPS", "5"),
        ("MICRONODE_RL_BURST", "5"),
    ]);
    let mut c = Conn::open(s.addr);
    let statuses: Vec<u16> = (0..5)
        .map(|_| c.request("GET", "/dev/rl", &[], None).status)
        .collect();
    assert_eq!(statuses, [200; 5], "the burst passes");
    // Past the burst: a 429 comes (bounded loop; a slow machine may see a refill first).
    let r = poll("a 429 past the burst", || {
        let r = c.request("GET", "/dev/rl", &[], None);
        (r.status == 429).then_some(r)
    });
    r.assert_error(429, "rate_limit", true);
    let retry: u64 = r
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("whole seconds");
    assert!(retry >= 1);
    poll("bucket refilled", || {
        (c.request("GET", "/dev/rl", &[], None).status == 200).then_some(())
    });
}

/// The global bucket covers feature routes but never the admin plane.
#[test]
fn global_rate_limit_spares_admin_routes() {
    let s = TestServer::start(&[("MICRONODE_RL_RPS", "1"), ("MICRONODE_RL_BURST", "2")]);
    let mut c = Conn::open(s.addr);
    let statuses: Vec<u16> = (0..4)
        .map(|_| c.request("GET", "/v1/ping", &[], None).status)
        .collect();
    assert_eq!(statuses, [200, 200, 429, 429]);
    for _ in 0..10 {
        assert_eq!(c.request("GET", "/healthz", &[], None).status, 200);
    }
}

/// The tarpit delays the 429 but holds no permit: with a write budget of 1, a tarpitted
/// write leaves the budget empty.
#[test]
fn tarpit_delays_the_429_without_holding_budget() {
    let s = TestServer::start(&[
        ("MICRONODE_RL_RPS", "1"),
        ("MICRONODE_RL_BURST", "1"),
        ("MICRONODE_RL_TARPIT_MS", "60000"),
        ("MICRONODE_KV_MAX_INFLIGHT", "1"),
        ("MICRONODE_SHUTDOWN_GRACE_MS", "100"),
    ]);
    assert_eq!(
        request(s.addr, "PUT", "/v1/kv/b/k1", &[], Some(b"v")).status,
        201
    );
    let mut c = Conn::open(s.addr);
    c.send(&support::build_request(
        "PUT",
        "/v1/kv/b/k2",
        &[],
        Some(b"v"),
    ));
    poll("request in the tarpit", || {
        (s.metric("micronode_rate_limit_tarpit_current") == 1.0).then_some(())
    });
    assert_eq!(
        s.metric("micronode_ready_queue_saturated"),
        0.0,
        "no write permit is held"
    );
    assert_eq!(s.get("/healthz").status, 200);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("vec write");
    e.finish().expect("vec finish")
}

/// With compression allowed, gzip is decoded while streaming; a bomb stops at the decoded
/// cap with 413 and memory stays bounded.
#[test]
fn gzip_bodies_decode_and_a_bomb_is_413_with_bounded_memory() {
    let s = TestServer::start(&[
        ("MICRONODE_DEV_ROUTES", "1"),
        ("MICRONODE_ALLOW_COMPRESSED", "1"),
        ("MICRONODE_DECODE_ABS_CAP_BYTES", "1048576"),
    ]);
    let body = gzip(b"{\"message\":\"zipped\"}");
    let r = request(
        s.addr,
        "POST",
        "/dev/echo",
        &[("content-encoding", "gzip")],
        Some(&body),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, b"{\"message\":\"zipped\"}");

    let value = gzip(b"hello, stored decoded");
    assert_eq!(
        request(
            s.addr,
            "PUT",
            "/v1/kv/b/z",
            &[("content-encoding", "GZIP")],
            Some(&value)
        )
        .status,
        201
    );
    assert_eq!(s.get("/v1/kv/b/z").body, b"hello, stored decoded");

    let bomb = gzip(&vec![b'0'; 64 << 20]);
    assert!(
        bomb.len() < 1 << 20,
        "bomb fits under the body cap: {}",
        bomb.len()
    );
    let before = rss_kib(std::process::id());
    counts_one(&s, "body_cap", || {
        let r = request(
            s.addr,
            "PUT",
            "/v1/kv/b/bomb",
            &[("content-encoding", "gzip")],
            Some(&bomb),
        );
        r.assert_error(413, "body_cap", false);
        assert_eq!(
            r.json()["message"],
            "decoded request body exceeds 1048576 bytes"
        );
    });
    let grown = rss_kib(std::process::id()).saturating_sub(before);
    assert!(grown < 32 * 1024, "RSS grew {grown} KiB for a 64 MiB bomb");
    assert_eq!(s.get("/v1/kv/b/bomb").status, 404, "nothing stored");
}

/// The error gate turns /readyz 503 while the windowed 5xx share is at or above it, says so,
/// and recovers by itself when the window slides.
#[test]
fn error_gate_trips_and_recovers() {
    let s = TestServer::start(&[
        ("MICRONODE_READY_ERROR_GATE_PCT", "50"),
        ("MICRONODE_READY_ERROR_WINDOW_SECS", "3"),
        ("MICRONODE_REQUEST_TIMEOUT_MS", "50"),
    ]);
    // A body that never completes within the request bound → 503 timeout (a 5xx).
    let mut c = Conn::open(s.addr);
    c.send(b"PUT /v1/kv/b/k HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab");
    c.read_response(false)
        .expect("response")
        .assert_error(503, "timeout", true);
    let r = s.get("/readyz");
    assert_eq!(r.status, 503, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error_gate"]["tripped"], true);
    assert_eq!(v["ready"], false);
    assert!(s.metric("micronode_ready_error_rate_pct") >= 50.0);
    poll("gate recovers", || {
        (s.get("/readyz").status == 200).then_some(())
    });
}
