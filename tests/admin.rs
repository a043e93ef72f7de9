//! The admin plane, routing, request ids and metrics, over real TCP.

mod support;

use support::{Conn, TestServer, request};

/// Every admin route answers with the status, content type and body fields of docs/API.md.
#[test]
fn admin_routes_answer_as_documented() {
    let s = TestServer::start(&[]);
    let r = s.get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));

    let r = s.get("/readyz");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["ready"], true);
    assert_eq!(v["mode"], "truthful");
    assert_eq!(v["draining"], false);
    for p in ["listeners_bound", "cfg_loaded", "metrics_bound", "deps_ok"] {
        assert_eq!(v["probes"][p], true, "{p}");
    }

    let r = s.get("/version");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["name"], "micronode");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        v["built_at_unix"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000),
        "{v}"
    );

    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(r.text().contains("micronode_build_info{version=\""));

    let r = s.get("/v1/ping");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"pong": true}));
}

/// `/openapi.json` serves docs/openapi.json byte for byte (scripts/openapi_json.sh keeps that
/// file equal to docs/openapi.yaml).
#[test]
fn openapi_json_is_the_checked_in_document() {
    let s = TestServer::start(&[]);
    let r = s.get("/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let want = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
        .expect("docs/openapi.json");
    assert!(
        r.body == want,
        "/openapi.json differs from docs/openapi.json"
    );
    assert_eq!(r.json()["openapi"], "3.1.0");
}

#[test]
fn unknown_path_is_404_with_envelope() {
    let s = TestServer::start(&[]);
    s.get("/nope").assert_error(404, "not_found", false);
    s.get("/healthz/extra")
        .assert_error(404, "not_found", false);
}

#[test]
fn wrong_method_is_405_with_exact_allow() {
    let s = TestServer::start(&[]);
    let r = request(s.addr, "POST", "/healthz", &[], Some(b""));
    r.assert_error(405, "method_not_allowed", false);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = request(s.addr, "PATCH", "/v1/kv/b/k", &[], Some(b""));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, DELETE"));
    let r = request(s.addr, "BREW", "/v1/ping", &[], None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

/// HEAD carries GET's headers (length included) and no body.
#[test]
fn head_has_headers_and_no_body() {
    let s = TestServer::start(&[]);
    let mut c = Conn::open(s.addr);
    let r = c.request("HEAD", "/healthz", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("15"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.body.is_empty());
    // The connection is still in sync: the next response parses.
    let r = c.request("GET", "/healthz", &[], None);
    assert_eq!(r.body, b"{\"status\":\"ok\"}");
}

#[test]
fn dev_routes_are_404_unless_enabled() {
    let off = TestServer::start(&[]);
    request(off.addr, "POST", "/dev/echo", &[], Some(b"{}")).assert_error(404, "not_found", false);
    off.get("/dev/rl").assert_error(404, "not_found", false);
    let on = TestServer::start(&[("MICRONODE_DEV_ROUTES", "1")]);
    let r = request(
        on.addr,
        "POST",
        "/dev/echo",
        &[],
        Some(b"{\"message\":\"hi\"}"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"{\"message\":\"hi\"}");
    request(on.addr, "POST", "/dev/echo", &[], Some(b"{nope")).assert_error(
        400,
        "bad_request",
        false,
    );
    assert_eq!(on.get("/dev/rl").status, 200);
}

#[test]
fn request_id_is_echoed_when_valid_and_replaced_when_not() {
    let s = TestServer::start(&[]);
    let r = request(
        s.addr,
        "GET",
        "/healthz",
        &[("x-request-id", "abc.DEF_1-2")],
        None,
    );
    assert_eq!(r.header("x-request-id"), Some("abc.DEF_1-2"));
    let long = "a".repeat(65);
    for bad in [long.as_str(), "has space", "slash/bad", "quote\"d"] {
        let r = request(s.addr, "GET", "/healthz", &[("x-request-id", bad)], None);
        let got = r.header("x-request-id").expect("always present");
        assert_ne!(got, bad);
        assert!(!got.is_empty() && got.len() <= 64, "{got}");
    }
    let a = s.get("/nope");
    let b = s.get("/nope");
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
    assert_eq!(
        a.json()["request_id"],
        a.header("x-request-id").unwrap_or_default()
    );
}

/// HTTP/2 with prior knowledge on the same port.
#[test]
fn http2_prior_knowledge_healthz() {
    let s = TestServer::start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(s.addr)
            .await
            .expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExec, hyper_util::rt::TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://{}/healthz", s.addr))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let resp = send.send_request(req).await.expect("h2 response");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert!(resp.headers().contains_key("x-request-id"));
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"{\"status\":\"ok\"}");
    });
}

#[derive(Clone, Copy)]
struct TokioExec;

impl<F> hyper::rt::Executor<F> for TokioExec
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

/// Series exist at boot, before any request touched them.
#[test]
fn metric_families_are_present_at_boot() {
    let s = TestServer::start(&[]);
    let text = s.get("/metrics").text();
    for family in [
        "# TYPE micronode_http_requests_total counter",
        "# TYPE micronode_request_latency_seconds histogram",
        "# TYPE micronode_rejections_total counter",
        "# TYPE micronode_ready_inflight_current gauge",
        "# TYPE micronode_ready_error_rate_pct gauge",
        "# TYPE micronode_ready_queue_saturated gauge",
        "# TYPE micronode_ready_probe gauge",
        "# TYPE micronode_kv_ops_total counter",
        "# TYPE micronode_kv_bytes_total counter",
        "# TYPE micronode_build_info gauge",
        "# TYPE micronode_storage_flush_seconds histogram",
        "# TYPE micronode_storage_commit_batch_size histogram",
        "micronode_http_requests_total{method=\"PUT\",route=\"/v1/kv/{bucket}/{*key}\",status=\"201\"} 0",
        "micronode_http_requests_total{method=\"DELETE\",route=\"/v1/kv/{bucket}/{*key}\",status=\"404\"} 0",
        "micronode_ready_probe{probe=\"deps_ok\"} 1",
    ] {
        assert!(text.contains(family), "missing: {family}");
    }
    // Counting works, under the template, never the raw path.
    s.get("/v1/kv/b/some-key");
    s.get("/no/such/path");
    let text = s.get("/metrics").text();
    assert!(text.contains(
        "micronode_http_requests_total{method=\"GET\",route=\"/v1/kv/{bucket}/{*key}\",status=\"404\"} 1"
    ));
    assert!(text.contains(
        "micronode_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1"
    ));
    assert!(!text.contains("some-key") && !text.contains("/no/such/path"));
}

/// A connection that sends nothing is closed at the header timeout, and so is one that
/// dribbles an incomplete head.
#[test]
fn silent_and_slow_header_connections_are_closed() {
    let s = TestServer::start(&[("MICRONODE_HEADER_READ_TIMEOUT_MS", "300")]);
    let mut silent = Conn::open(s.addr);
    assert!(silent.is_closed_by_server(), "silent connection closed");
    let mut partial = Conn::open(s.addr);
    partial.send(b"GET /healthz HTTP/1.1\r\nhost: x\r\n");
    assert!(partial.is_closed_by_server(), "incomplete head closed");
    // (A read that times out on the test side would count as "not closed" and fail.)
    assert_eq!(s.get("/healthz").status, 200, "server still serves");
}

/// `/dev/latency` exists only with `MICRONODE_DEV_METRICS=1`, counts answers per route and
/// empties on `POST /dev/latency/reset`.
#[test]
fn dev_latency_reports_and_resets() {
    let off = TestServer::start(&[("MICRONODE_DEV_ROUTES", "1")]);
    assert_eq!(off.get("/dev/latency").status, 404);

    let s = TestServer::start(&[("MICRONODE_DEV_METRICS", "1")]);
    let mut c = Conn::open(s.addr);
    for _ in 0..25 {
        assert_eq!(c.request("GET", "/healthz", &[], None).status, 200);
    }
    let healthz_row = |c: &mut Conn| {
        let report = c.request("GET", "/dev/latency", &[], None).json();
        assert_eq!(report["unit"], "us");
        report["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .find(|r| r["route"] == "/healthz")
            .expect("a /healthz row")
            .clone()
    };
    let healthz = healthz_row(&mut c);
    assert_eq!(healthz["count"], 25);
    let p50 = healthz["p50"].as_f64().expect("p50");
    let p99 = healthz["p99"].as_f64().expect("p99");
    let max = healthz["max"].as_f64().expect("max");
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{healthz}");

    assert_eq!(
        c.request("POST", "/dev/latency/reset", &[], None).status,
        204
    );
    assert_eq!(healthz_row(&mut c)["count"], 0);
}
