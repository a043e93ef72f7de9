//! The hostile-input suite over raw HTTP/1 sockets (docs/SECURITY.md has the table of every
//! input and its outcome). Each test asserts the exact answer, that nothing was stored that
//! should not be, and that `/healthz` on a fresh connection still answers afterwards.
//! HTTP/2 frame-level attacks are in `hostile_h2.rs`; slow bodies, chunked uploads and
//! oversized `Content-Length` are in `guards.rs`.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use support::{Conn, TestServer, WAIT, poll, request, series_count, status_of};

fn server() -> TestServer {
    TestServer::start(&[
        ("MICRONODE_DEV_ROUTES", "1"),
        ("MICRONODE_STORAGE_ENGINE", "mem"),
        ("MICRONODE_HEADER_READ_TIMEOUT_MS", "500"),
    ])
}

fn stored(s: &TestServer, bucket: &str) -> Vec<String> {
    let listing = s.get(&format!("/v1/kv/{bucket}")).json();
    listing["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|k| k.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Every byte the server sends until it closes the connection (bounded by `WAIT`).
fn read_to_close(conn: &mut TcpStream) -> Vec<u8> {
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("connection neither answered nor closed: {e}"),
        }
    }
}

fn raw(s: &TestServer, bytes: &[u8]) -> String {
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.write_all(bytes).expect("write");
    String::from_utf8_lossy(&read_to_close(&mut c)).into_owned()
}

/// Sum of every request series for one method and route (any status).
fn answered(s: &TestServer, method: &str, route: &str) -> f64 {
    s.scrape().sum(&format!(
        "micronode_http_requests_total{{method=\"{method}\",route=\"{route}\","
    ))
}

#[test]
fn slowloris_dribble_is_closed_at_the_header_timeout() {
    let s = server();
    let mut c = TcpStream::connect(s.addr).expect("connect");
    let mut writer = c.try_clone().expect("clone");
    // One byte every 50 ms of a head that never ends; bounded at 400 bytes (20 s).
    let dribbler = std::thread::spawn(move || {
        let head = format!("GET /healthz HTTP/1.1\r\nx-slow: {}", "a".repeat(400));
        for b in head.bytes().take(400) {
            if writer.write_all(&[b]).is_err() {
                return true; // the server hung up on us
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    let answer = read_to_close(&mut c);
    // hyper closes a timed-out head without an answer or with a bare 408; never a 200.
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "dribbled head got {text:?}"
    );
    drop(c);
    let _ = dribbler.join();
    s.still_serves();
}

#[test]
fn body_shorter_than_its_length_then_close_stores_nothing() {
    let s = server();
    let before = answered(&s, "PUT", "/v1/kv/{bucket}/{*key}");
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.write_all(b"PUT /v1/kv/short/k HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhello")
        .expect("write");
    c.shutdown(Shutdown::Both).expect("close");
    drop(c);
    // The handler saw the body end early and answered (to nobody); then nothing is stored.
    poll("the truncated PUT to be answered", || {
        (answered(&s, "PUT", "/v1/kv/{bucket}/{*key}") > before).then_some(())
    });
    assert_eq!(s.get("/v1/kv/short/k").status, 404);
    assert!(stored(&s, "short").is_empty());
    s.still_serves();
}

#[test]
fn bytes_past_the_length_are_a_separate_request_with_its_own_guards() {
    let s = server();
    let mut c = Conn::open(s.addr);
    let mut wire =
        b"PUT /v1/kv/glue/a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello".to_vec();
    // Glued on: a second PUT that its own decode guard must refuse.
    wire.extend_from_slice(
        b"PUT /v1/kv/glue/b HTTP/1.1\r\nhost: x\r\ncontent-encoding: gzip\r\ncontent-length: 2\r\n\r\nhi",
    );
    c.send(&wire);
    assert_eq!(c.read_response(false).expect("first").status, 201);
    c.read_response(false)
        .expect("second")
        .assert_error(415, "unsupported_encoding", false);
    assert_eq!(
        s.get("/v1/kv/glue/a").body,
        b"hello",
        "exactly the declared bytes"
    );
    assert_eq!(stored(&s, "glue"), vec!["a"]);

    // Glued garbage is parsed as a request too, and refused as one.
    let mut c = Conn::open(s.addr);
    c.send(b"PUT /v1/kv/glue/c HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabcXYZ NOT HTTP\r\n\r\n");
    assert_eq!(c.read_response(false).expect("first").status, 201);
    assert_eq!(c.read_response(false).expect("second").status, 400);
    assert_eq!(s.get("/v1/kv/glue/c").body, b"abc");
    s.still_serves();
}

#[test]
fn malformed_content_lengths_are_400_and_store_nothing() {
    let s = server();
    let cases: [&[&str]; 6] = [
        &["content-length: 5", "content-length: 6"],
        &["content-length: +5"],
        &["content-length: -1"],
        &["content-length: 0x10"],
        &["content-length: 5,6"],
        &["content-length: 99999999999999999999999"],
    ];
    for (i, headers) in cases.iter().enumerate() {
        let mut wire = format!("PUT /v1/kv/cl/k{i} HTTP/1.1\r\nhost: x\r\n");
        for h in *headers {
            wire.push_str(h);
            wire.push_str("\r\n");
        }
        wire.push_str("\r\nhello!");
        let answer = raw(&s, wire.as_bytes());
        assert_eq!(status_of(&answer), 400, "{headers:?}: {answer}");
    }
    assert!(stored(&s, "cl").is_empty());
    s.still_serves();
}

#[test]
fn length_with_chunked_is_refused_in_both_orders_and_closes() {
    let s = server();
    for (i, order) in [
        "content-length: 5\r\ntransfer-encoding: chunked",
        "transfer-encoding: chunked\r\ncontent-length: 5",
    ]
    .iter()
    .enumerate()
    {
        let wire = format!(
            "PUT /v1/kv/te/k{i} HTTP/1.1\r\nhost: x\r\n{order}\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
        );
        let answer = raw(&s, wire.as_bytes());
        // Any Transfer-Encoding is refused on the head, whatever else is declared.
        assert_eq!(status_of(&answer), 411, "{order}: {answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        // `raw` read to the close: exactly one answer, the glued GET was never served.
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    }
    assert!(stored(&s, "te").is_empty());
    s.still_serves();
}

#[test]
fn bad_chunk_sizes_never_reach_a_chunk_parser() {
    // A chunked upload is refused on its head (411) and the connection closed, so a huge or
    // non-hex chunk size is never parsed and nothing after it is read as a request.
    let s = server();
    for (i, size) in ["FFFFFFFFFFFFFFFFFFFFFFFF", "zz", "-1"].iter().enumerate() {
        let wire = format!(
            "PUT /v1/kv/chunk/k{i} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
        );
        let answer = raw(&s, wire.as_bytes());
        assert_eq!(status_of(&answer), 411, "{size}: {answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    }
    // On a route that takes no body, a malformed chunked body ends the connection: the glued
    // request after it is never answered.
    let answer = raw(
        &s,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\nGET /version HTTP/1.1\r\nhost: x\r\n\r\n",
    );
    assert!(!answer.contains("\"name\":\"micronode\""), "{answer}");
    assert!(answer.matches("HTTP/1.1 ").count() <= 1, "{answer}");
    assert!(stored(&s, "chunk").is_empty());
    s.still_serves();
}

#[test]
fn too_many_or_too_large_headers_are_431() {
    let s = server();
    // 101 header fields (host + 100).
    let many: Vec<(String, String)> = (0..100).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(request(s.addr, "GET", "/healthz", &refs, None).status, 431);
    // 100 fields in all is fine.
    assert_eq!(
        request(s.addr, "GET", "/healthz", &refs[..99], None).status,
        200
    );

    // One 64 KiB header: bigger than the read buffer, refused by hyper.
    let huge = "a".repeat(64 * 1024);
    let answer = raw(
        &s,
        format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {huge}\r\n\r\n").as_bytes(),
    );
    assert_eq!(
        status_of(&answer),
        431,
        "{}",
        &answer[..answer.len().min(200)]
    );

    // 61 KiB: fits the buffer, over MICRONODE_MAX_HEADER_BYTES → our envelope, counted.
    let big = "a".repeat(61 * 1024);
    let before = s.metric("micronode_rejections_total{reason=\"header_too_large\"}");
    request(s.addr, "GET", "/healthz", &[("x-big", &big)], None).assert_error(
        431,
        "header_too_large",
        false,
    );
    assert_eq!(
        s.metric("micronode_rejections_total{reason=\"header_too_large\"}"),
        before + 1.0
    );
    s.still_serves();
}

#[test]
fn path_hygiene() {
    let s = server();
    let mut c = Conn::open(s.addr);
    // Keys that would mean different things to different clients are refused.
    for path in [
        "/v1/kv/hy/..",
        "/v1/kv/hy/.",
        "/v1/kv/hy/../other/k",
        "/v1/kv/hy/a/./b",
        "/v1/kv/hy/a//b",
        "/v1/kv/hy/a/",
        "/v1/kv/hy/%2E%2E/other/k",
        "/v1/kv/hy/a%2F%2Fb",
        "/v1/kv/hy/%zz",
        "/v1/kv/hy/%4",
        "/v1/kv/hy/%FF%FE",
        "/v1/kv/hy/nul%00byte",
        "/v1/kv/hy/%0D%0Ainjected",
    ] {
        c.request("PUT", path, &[], Some(b"x"))
            .assert_error(400, "bad_request", false);
        c.request("GET", path, &[], None)
            .assert_error(400, "bad_request", false);
    }
    // Buckets cannot be dot segments or carry encoded slashes.
    for path in [
        "/v1/kv/../k",
        "/v1/kv/./k",
        "/v1/kv/a%2Fb/k",
        "/v1/kv/%2E%2E/k",
    ] {
        assert_eq!(
            c.request("PUT", path, &[], Some(b"x")).status,
            400,
            "{path}"
        );
    }
    // `%2F` is a slash: the same key as a literal one, inside its bucket.
    assert_eq!(
        c.request("PUT", "/v1/kv/hy/a%2Fb", &[], Some(b"1")).status,
        201
    );
    assert_eq!(c.request("GET", "/v1/kv/hy/a/b", &[], None).body, b"1");
    assert_eq!(stored(&s, "hy"), vec!["a/b"]);
    assert!(stored(&s, "other").is_empty());

    // Raw NUL, raw non-UTF-8 and raw control bytes in the request line never reach a handler.
    for line in [
        &b"GET /v1/kv/hy/a\x00b HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        &b"GET /v1/kv/hy/\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        &b"GET /v1/kv/hy/a\x7fb HTTP/1.1\r\nhost: x\r\n\r\n"[..],
    ] {
        assert_eq!(status_of(&raw(&s, line)), 400);
    }

    // A 10 KiB path: 414 with the envelope, before any route is matched.
    let long = format!("/v1/kv/hy/{}", "k".repeat(10 * 1024));
    let before = s.metric("micronode_rejections_total{reason=\"uri_too_long\"}");
    request(s.addr, "GET", &long, &[], None).assert_error(414, "uri_too_long", false);
    assert_eq!(
        s.metric("micronode_rejections_total{reason=\"uri_too_long\"}"),
        before + 1.0
    );
    assert_eq!(
        s.metric(
            "micronode_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"414\"}"
        ),
        1.0
    );
    s.still_serves();
}

#[test]
fn unknown_methods_are_405_with_allow() {
    let s = server();
    let mut c = Conn::open(s.addr);
    for (method, path, allow) in [
        ("BREW", "/healthz", "GET, HEAD"),
        ("PROPFIND", "/v1/kv/b/k", "GET, HEAD, PUT, DELETE"),
        ("TRACE", "/v1/kv/b", "GET, HEAD"),
        ("CONNECTX", "/metrics", "GET, HEAD"),
    ] {
        let r = c.request(method, path, &[], None);
        r.assert_error(405, "method_not_allowed", false);
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
    s.still_serves();
}

#[test]
fn handler_panic_is_500_counted_and_releases_its_permit() {
    let s = server();
    let mut c = Conn::open(s.addr);
    // More panics than the route's budget (8): a leaked permit would turn these into 429s.
    for _ in 0..20 {
        c.request("GET", "/dev/panic", &[], None)
            .assert_error(500, "internal", true);
    }
    assert_eq!(s.metric("micronode_handler_panics_total"), 20.0);
    assert_eq!(
        s.metric("micronode_rejections_total{reason=\"internal\"}"),
        20.0
    );
    // The same connection and the budget-sharing route still work.
    assert_eq!(c.request("POST", "/dev/echo", &[], Some(b"{}")).status, 200);
    s.still_serves();
}

#[test]
fn junk_never_creates_metric_series() {
    let s = server();
    let mut c = Conn::open(s.addr);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut junk = |c: &mut Conn, i: u32| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let r = seed;
        match i % 5 {
            0 => c.request("GET", &format!("/v1/kv/b{}/k{r:x}", r % 97), &[], None),
            1 => c.request("GET", &format!("/x{r:x}/{i}"), &[], None),
            2 => c.request(&format!("M{}", r % 10_000), "/v1/kv/b/k", &[], None),
            3 => c.request(
                "GET",
                &format!("/v1/kv/B{r:x}/k"),
                &[("x-request-id", "bad id!")],
                None,
            ),
            _ => c.request("DELETE", &format!("/v1/kv/b/%{r:x}zz"), &[], None),
        }
    };
    // One of each kind first: the first invented method fills the fixed `OTHER` series.
    for i in 0..5 {
        junk(&mut c, i);
    }
    let before = series_count(&mut c);
    for i in 0..10_000u32 {
        let resp = junk(&mut c, i);
        assert!(resp.status >= 400, "{}", resp.status);
    }
    assert_eq!(series_count(&mut c), before);
    s.still_serves();
}

#[test]
fn next_head_after_an_answer_is_on_the_header_clock_too() {
    let s = server();
    // An idle keep-alive connection is closed at the header timeout…
    let mut idle = Conn::open(s.addr);
    assert_eq!(idle.request("GET", "/healthz", &[], None).status, 200);
    assert!(idle.is_closed_by_server(), "idle keep-alive closed");
    // …and so is one that dribbles its second head after a first answer.
    let mut c = Conn::open(s.addr);
    assert_eq!(c.request("GET", "/healthz", &[], None).status, 200);
    let mut writer = c.reader.get_ref().try_clone().expect("clone");
    let dribbler = std::thread::spawn(move || {
        for b in b"GET /healthz HTTP/1.1\r\nx-slow: "
            .iter()
            .chain([b'a'; 300].iter())
        {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert!(c.is_closed_by_server(), "dribbled second head closed");
    let _ = dribbler.join();
    s.still_serves();
}

#[test]
fn a_slow_reader_of_a_large_value_is_not_cut_at_the_header_timeout() {
    let s = TestServer::start(&[
        ("MICRONODE_STORAGE_ENGINE", "mem"),
        ("MICRONODE_HEADER_READ_TIMEOUT_MS", "300"),
        ("MICRONODE_MAX_BODY_BYTES", "33554432"),
    ]);
    // 32 MiB: far more than loopback socket buffers hold, so hyper is still writing it while
    // the client sits on it past the header timeout.
    let value = vec![b'z'; 32 << 20];
    let mut c = Conn::open(s.addr);
    assert_eq!(
        c.request("PUT", "/v1/kv/big/v", &[], Some(&value)).status,
        201
    );
    c.send(b"GET /v1/kv/big/v HTTP/1.1\r\nhost: x\r\n\r\n");
    // The slow reader of this scenario: reads nothing for over three header timeouts.
    std::thread::sleep(Duration::from_millis(1_000));
    let resp = c.read_response(false).expect("the whole answer");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), value.len(), "the answer was not cut");
    // With the answer out and no next head, the header clock closes it as usual.
    assert!(c.is_closed_by_server(), "closed after the answer");
    s.still_serves();
}
