//! KV v2 over TCP: decimal ETags and exact conditions, route-declared query parameters, TTLs,
//! the watch stream and transactions, each test named after the behaviour it pins.

mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use support::{
    ChildServer, Conn, Response, Sse, SseItem, TestServer, WAIT, build_request, metric, poll,
    request,
};

// ---- helpers ------------------------------------------------------------------------------

/// The revision an `ETag` names: `"<R>"`, R canonical decimal (fails the test otherwise).
fn tag_rev(tag: &str) -> u64 {
    let inner = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("etag not quoted: {tag:?}"));
    assert!(
        !inner.is_empty()
            && inner.bytes().all(|b| b.is_ascii_digit())
            && (inner == "0" || !inner.starts_with('0')),
        "etag is not a canonical decimal: {tag:?}"
    );
    inner.parse().expect("etag revision fits u64")
}

fn etag_rev(r: &Response) -> u64 {
    tag_rev(r.header("etag").expect("ETag header"))
}

/// `Micronode-Revision` of an answer (fails the test when absent).
fn rev(r: &Response) -> u64 {
    r.header("micronode-revision")
        .unwrap_or_else(|| panic!("no Micronode-Revision on {} {:?}", r.status, r.headers))
        .parse()
        .expect("numeric Micronode-Revision")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn put(addr: SocketAddr, path: &str, body: &[u8]) -> Response {
    let r = request(addr, "PUT", path, &[], Some(body));
    assert!(
        r.status == 201 || r.status == 204,
        "PUT {path}: {} {}",
        r.status,
        r.text()
    );
    r
}

/// Form-urlencodes one query value (`+` for a space).
fn form(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn txn(addr: SocketAddr, body: &Value) -> Response {
    request(
        addr,
        "POST",
        "/v1/txn",
        &[("content-type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

/// One request that reports a dead server as `None` instead of failing the test.
fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Option<Response> {
    let s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    let mut c = Conn {
        reader: std::io::BufReader::new(s),
    };
    std::io::Write::write_all(c.reader.get_mut(), &build_request(method, path, &[], body)).ok()?;
    c.read_response(false).ok()
}

fn try_txn(addr: SocketAddr, body: &Value) -> Option<Value> {
    let r = try_request(addr, "POST", "/v1/txn", Some(body.to_string().as_bytes()))?;
    (r.status == 200).then(|| r.json())
}

fn b64(s: &[u8]) -> String {
    BASE64.encode(s)
}

fn unb64(v: &Value) -> Vec<u8> {
    BASE64
        .decode(v.as_str().expect("base64 string"))
        .expect("valid base64")
}

/// An event's parts, failing the test on a comment.
fn ev(item: SseItem) -> (Option<u64>, String, Value) {
    match item {
        SseItem::Event { id, event, data } => (id, event, data),
        SseItem::Comment(c) => panic!("expected an event, got comment {c:?}"),
    }
}

fn watch(addr: SocketAddr, path: &str) -> Sse {
    let mut w = Sse::open(addr, path, &[])
        .unwrap_or_else(|r| panic!("watch {path}: {} {}", r.status, r.text()));
    assert_eq!(w.head.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        w.next_item(),
        Some(SseItem::Comment("watching".into())),
        "a stream opens with a `: watching` comment"
    );
    w
}

// ---- 1. ETags and conditions ----------------------------------------------------------------

/// `If-Match` compares exact strings: `"000c"`, `"+12"`, `"012"` and `W/"12"` never match
/// `"12"`, on PUT and DELETE alike (412, nothing changed).
#[test]
fn if_match_compares_exact_strings() {
    let s = TestServer::start(&[]);
    let r = put(s.addr, "/v1/kv/b/k", b"v1");
    let n = etag_rev(&r);
    let tag = format!("\"{n}\"");
    // The same number spelled otherwise (the `"000c"` / `"+12"` / `"012"` family of `"12"`),
    // weak, padded, or another revision.
    let hex = format!("\"{n:016x}\"");
    let bads = [
        hex,
        format!("\"+{n}\""),
        format!("\"0{n}\""),
        format!("W/{tag}"),
        format!("\"{n} \""),
        format!("\"{}\"", n - 1),
    ];
    for bad in &bads {
        let bad = bad.as_str();
        let r = request(
            s.addr,
            "PUT",
            "/v1/kv/b/k",
            &[("if-match", bad)],
            Some(b"v2"),
        );
        r.assert_error(412, "precondition_failed", false);
        let r = request(s.addr, "DELETE", "/v1/kv/b/k", &[("if-match", bad)], None);
        r.assert_error(412, "precondition_failed", false);
        let g = s.get("/v1/kv/b/k");
        assert_eq!((g.status, g.body.as_slice()), (200, &b"v1"[..]), "{bad}");
        assert_eq!(g.header("etag"), Some(tag.as_str()), "{bad}");
    }
    // The exact tag (alone or in a list) matches.
    let r = request(
        s.addr,
        "PUT",
        "/v1/kv/b/k",
        &[("if-match", &format!("\"0{n}\", {tag}"))],
        Some(b"v2"),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let tag = r.header("etag").expect("etag").to_owned();
    let r = request(s.addr, "DELETE", "/v1/kv/b/k", &[("if-match", &tag)], None);
    assert_eq!(r.status, 204);
    assert_eq!(s.get("/v1/kv/b/k").status, 404);
}

/// `If-None-Match` on GET and HEAD compares weakly: `W/"R"` matches `"R"` → 304.
#[test]
fn weak_if_none_match_gives_304() {
    let s = TestServer::start(&[]);
    let r = put(s.addr, "/v1/kv/b/k", b"hello");
    let tag = r.header("etag").expect("etag").to_owned();
    let weak = format!("W/{tag}");
    for method in ["GET", "HEAD"] {
        for inm in [tag.as_str(), weak.as_str(), "\"1\", W/\"999\", *"] {
            let r = request(
                s.addr,
                method,
                "/v1/kv/b/k",
                &[("if-none-match", inm)],
                None,
            );
            assert_eq!(r.status, 304, "{method} If-None-Match {inm}");
            assert!(r.body.is_empty());
            assert_eq!(r.header("etag"), Some(tag.as_str()));
        }
        let r = request(
            s.addr,
            method,
            "/v1/kv/b/k",
            &[("if-none-match", "W/\"999\"")],
            None,
        );
        assert_eq!(r.status, 200, "{method} with a tag that does not match");
    }
}

/// A failing `If-Match` on GET or HEAD is 412; a missing key is 404 whatever the conditions.
#[test]
fn failing_if_match_on_get_is_412() {
    let s = TestServer::start(&[]);
    let r = put(s.addr, "/v1/kv/b/k", b"hello");
    let n = etag_rev(&r);
    let other = format!("\"{}\"", n + 1);
    let weak = format!("W/\"{n}\"");
    let exact = format!("\"{n}\"");
    for method in ["GET", "HEAD"] {
        for im in [other.as_str(), weak.as_str()] {
            let r = request(s.addr, method, "/v1/kv/b/k", &[("if-match", im)], None);
            assert_eq!(r.status, 412, "{method} If-Match {im}");
        }
        let r = request(s.addr, method, "/v1/kv/b/k", &[("if-match", &exact)], None);
        assert_eq!(r.status, 200, "{method} If-Match {exact}");
        for cond in [
            ("if-match", "*"),
            ("if-match", &exact),
            ("if-none-match", "*"),
        ] {
            let r = request(s.addr, method, "/v1/kv/b/missing", &[cond], None);
            assert_eq!(r.status, 404, "{method} missing key with {cond:?}");
        }
    }
}

/// HEAD of an empty value says `Content-Length: 0` (not no length at all).
#[test]
fn head_of_an_empty_value_has_content_length_0() {
    let s = TestServer::start(&[]);
    put(s.addr, "/v1/kv/b/empty", b"");
    let r = request(s.addr, "HEAD", "/v1/kv/b/empty", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("0"));
    let r = s.get("/v1/kv/b/empty");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(r.body.is_empty());
}

/// Under 8 threads of unconditional PUTs on one key, the ETag is the write's decimal revision
/// and a GET never shows an ETag older than one already acknowledged.
#[test]
fn etag_is_the_decimal_revision_and_never_goes_backwards() {
    let s = TestServer::start(&[]);
    let addr = s.addr;
    let acked = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let acked = Arc::clone(&acked);
            thread::spawn(move || {
                let mut c = Conn::open(addr);
                for i in 0..25 {
                    let r = c.request(
                        "PUT",
                        "/v1/kv/b/hot",
                        &[],
                        Some(format!("{t}-{i}").as_bytes()),
                    );
                    assert!(r.status == 201 || r.status == 204, "{}", r.status);
                    let n = etag_rev(&r);
                    assert_eq!(rev(&r), n, "a PUT's ETag names its revision");
                    acked.fetch_max(n, Ordering::SeqCst);
                    let floor = acked.load(Ordering::SeqCst);
                    let g = c.request("GET", "/v1/kv/b/hot", &[], None);
                    assert_eq!(g.status, 200);
                    let seen = etag_rev(&g);
                    assert!(
                        seen >= floor,
                        "GET shows ETag {seen} after {floor} was acknowledged"
                    );
                    assert!(
                        rev(&g) >= seen,
                        "the answer's revision is at least the record's"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    assert_eq!(
        etag_rev(&s.get("/v1/kv/b/hot")),
        acked.load(Ordering::SeqCst)
    );
}

/// Every KV answer names the store revision it reflects in `Micronode-Revision`.
#[test]
fn every_kv_answer_names_its_revision() {
    let s = TestServer::start(&[]);
    let r = put(s.addr, "/v1/kv/b/k", b"1");
    assert_eq!(r.status, 201);
    let r1 = rev(&r);
    assert_eq!(r1, etag_rev(&r));
    put(s.addr, "/v1/kv/b/other", b"x");
    let r = put(s.addr, "/v1/kv/b/k", b"2");
    let r2 = rev(&r);
    assert!(r2 > r1);
    assert_eq!(r2, etag_rev(&r));
    for method in ["GET", "HEAD"] {
        let r = request(s.addr, method, "/v1/kv/b/k", &[], None);
        assert_eq!(r.status, 200);
        assert!(rev(&r) >= r2, "{method}");
        let r = request(
            s.addr,
            method,
            "/v1/kv/b/k",
            &[("if-none-match", "*")],
            None,
        );
        assert_eq!(r.status, 304);
        assert!(rev(&r) >= r2, "{method} 304");
    }
    let l = s.get("/v1/kv/b");
    assert_eq!(l.status, 200);
    assert_eq!(rev(&l), l.json()["revision"].as_u64().expect("revision"));
    assert!(rev(&l) >= r2);
    let r = request(
        s.addr,
        "PUT",
        "/v1/kv/b/k",
        &[("if-match", "\"1\"")],
        Some(b"3"),
    );
    assert_eq!(r.status, 412);
    assert!(rev(&r) >= r2, "412");
    let r = request(s.addr, "DELETE", "/v1/kv/b/k", &[], None);
    assert_eq!(r.status, 204);
    let r3 = rev(&r);
    assert!(r3 > r2, "a delete is a write with its own revision");
    let r = s.get("/v1/kv/b/k");
    assert_eq!(r.status, 404);
    assert!(rev(&r) >= r3, "404");
    let r = request(s.addr, "DELETE", "/v1/kv/b/k", &[], None);
    assert_eq!(r.status, 404);
    assert!(rev(&r) >= r3, "DELETE 404");
}

// ---- 2. Query strings -------------------------------------------------------------------------

/// `+` in a query is a space: five keys with spaces, listed two at a time with `prefix=a+b`
/// and `after=` taken from `next`, all come back.
#[test]
fn plus_in_a_query_is_a_space() {
    let s = TestServer::start(&[]);
    for i in 0..5 {
        put(s.addr, &format!("/v1/kv/b/a%20b/k%20{i}"), b"v");
    }
    put(s.addr, "/v1/kv/b/a+b/plus", b"v");
    put(s.addr, "/v1/kv/b/ab/no-space", b"v");
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let mut path = "/v1/kv/b?prefix=a+b%2F&limit=2".to_owned();
        if let Some(a) = &after {
            path.push_str(&format!("&after={}", form(a)));
        }
        let r = s.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let v = r.json();
        for k in v["keys"].as_array().expect("keys") {
            keys.push(k.as_str().expect("key").to_owned());
        }
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    let want: Vec<String> = (0..5).map(|i| format!("a b/k {i}")).collect();
    assert_eq!(keys, want);
    // In a path `+` is itself; in a query it is written %2B.
    let v = s.get("/v1/kv/b?prefix=a%2Bb").json();
    assert_eq!(v["keys"], json!(["a+b/plus"]));
}

/// A parameter a route does not declare is 400 and the write does not happen (`?cas=0` is not
/// a condition).
#[test]
fn unknown_query_parameter_is_400_and_writes_nothing() {
    let s = TestServer::start(&[]);
    let tag = put(s.addr, "/v1/kv/b/k", b"v1")
        .header("etag")
        .expect("etag")
        .to_owned();
    let r = request(s.addr, "PUT", "/v1/kv/b/k?cas=0", &[], Some(b"v2"));
    r.assert_error(400, "bad_request", false);
    let r = request(s.addr, "PUT", "/v1/kv/b/new?cas=0", &[], Some(b"v2"));
    r.assert_error(400, "bad_request", false);
    assert_eq!(s.get("/v1/kv/b/new").status, 404);
    let r = request(s.addr, "DELETE", "/v1/kv/b/k?ttl=1", &[], None);
    r.assert_error(400, "bad_request", false);
    for path in [
        "/v1/kv/b/k?ttl=5",
        "/v1/kv/b/k?x",
        "/v1/kv/b?cursor=1",
        "/healthz?x=1",
        "/metrics?name=x",
        "/v1/watch/b?after=1",
    ] {
        s.get(path).assert_error(400, "bad_request", false);
    }
    let r = request(s.addr, "HEAD", "/v1/kv/b/k?ttl=5", &[], None);
    assert_eq!(r.status, 400);
    let r = request(s.addr, "POST", "/v1/txn?dry=1", &[], Some(b"{}"));
    r.assert_error(400, "bad_request", false);
    let g = s.get("/v1/kv/b/k");
    assert_eq!(g.body, b"v1");
    assert_eq!(g.header("etag"), Some(tag.as_str()));
}

/// A repeated or malformed parameter is 400 on every route, with nothing written.
#[test]
fn repeated_and_malformed_query_parameters_are_400() {
    let s = TestServer::start(&[]);
    put(s.addr, "/v1/kv/b/k", b"v");
    for path in [
        "/v1/kv/b?limit=1&limit=2",
        "/v1/kv/b?prefix=a&prefix=a",
        "/v1/kv/b?prefix=%zz",
        "/v1/kv/b?prefix=%4",
        "/v1/kv/b?prefix=%FF",
        "/v1/kv/b?limit=0",
        "/v1/kv/b?limit=1001",
        "/v1/kv/b?limit=05",
        "/v1/kv/b?values=yes",
        "/v1/watch/b?since=x",
        "/v1/watch/b?since=1&since=1",
        "/v1/watch/b?values=1",
        "/v1/watch/b?prefix=%G0",
    ] {
        s.get(path).assert_error(400, "bad_request", false);
    }
    for q in [
        "ttl=1&ttl=1",
        "ttl=0",
        "ttl=315360001",
        "ttl=abc",
        "ttl=1.5",
        "ttl=01",
        "ttl=%zz",
    ] {
        let r = request(s.addr, "PUT", &format!("/v1/kv/b/new?{q}"), &[], Some(b"v"));
        r.assert_error(400, "bad_request", false);
    }
    assert_eq!(s.get("/v1/kv/b/new").status, 404, "no 400 wrote anything");
    let r = request(s.addr, "PUT", "/v1/kv/b/max?ttl=315360000", &[], Some(b"v"));
    assert_eq!(r.status, 201, "the longest TTL is accepted");
}

/// `values=true` lists items with their ETag, content type, base64 value and expiry.
#[test]
fn list_with_values_returns_base64_items() {
    let s = TestServer::start(&[]);
    let bin: Vec<u8> = (0..=255u8).collect();
    let r = request(
        s.addr,
        "PUT",
        "/v1/kv/b/p/bin",
        &[("content-type", "application/x-raw")],
        Some(&bin),
    );
    assert_eq!(r.status, 201);
    let tag_bin = r.header("etag").expect("etag").to_owned();
    let r = request(s.addr, "PUT", "/v1/kv/b/p/ttl?ttl=1000", &[], Some(b"t"));
    let tag_ttl = r.header("etag").expect("etag").to_owned();
    let at: u64 = r
        .header("micronode-expires-at")
        .expect("expiry on a TTL PUT")
        .parse()
        .expect("numeric");
    put(s.addr, "/v1/kv/b/q/out", b"x");
    let r = s.get("/v1/kv/b?prefix=p%2F&values=true");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["revision"].as_u64(), Some(rev(&r)));
    assert!(v["next"].is_null());
    assert!(v.get("keys").is_none(), "{v}");
    let items = v["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{v}");
    assert_eq!(items[0]["key"], "p/bin");
    assert_eq!(items[0]["etag"], tag_bin.as_str());
    assert_eq!(items[0]["content_type"], "application/x-raw");
    assert_eq!(unb64(&items[0]["value"]), bin);
    assert!(items[0].get("expires_at").is_none(), "{v}");
    assert_eq!(items[1]["key"], "p/ttl");
    assert_eq!(items[1]["etag"], tag_ttl.as_str());
    assert_eq!(items[1]["content_type"], "application/octet-stream");
    assert_eq!(unb64(&items[1]["value"]), b"t");
    assert_eq!(items[1]["expires_at"].as_u64(), Some(at));
    let v = s.get("/v1/kv/b?prefix=p%2F&values=false").json();
    assert_eq!(v["keys"], json!(["p/bin", "p/ttl"]));
}

// ---- 3. TTL -----------------------------------------------------------------------------------

/// A `ttl=1` key carries `Micronode-Expires-At` = ceil(now)+1, is visible until then, never
/// earlier invisible, then gone (404, unlisted) and counted by the sweeper.
#[test]
fn ttl_key_expires_at_the_boundary() {
    let s = TestServer::start(&[]);
    let before = now_secs();
    let r = request(s.addr, "PUT", "/v1/kv/b/t?ttl=1", &[], Some(b"v"));
    let after = now_secs();
    assert_eq!(r.status, 201);
    let at: u64 = r
        .header("micronode-expires-at")
        .expect("Micronode-Expires-At on PUT")
        .parse()
        .expect("numeric");
    assert!(
        (before + 1..=after + 2).contains(&at),
        "{at} not ceil(now)+1 for now in [{before}, {after}]"
    );
    let g = s.get("/v1/kv/b/t");
    let read_at = now_secs();
    if g.status == 200 {
        assert_eq!(
            g.header("micronode-expires-at"),
            Some(at.to_string().as_str())
        );
    } else {
        assert_eq!(g.status, 404);
        assert!(read_at >= at, "gone at {read_at}, before its expiry {at}");
    }
    poll("the key to expire", || {
        let sent = now_secs();
        let g = s.get("/v1/kv/b/t");
        let t = now_secs();
        if g.status == 200 {
            assert!(sent < at, "visible at {sent}, after its expiry {at}");
            return None;
        }
        assert_eq!(g.status, 404);
        // 404 is only allowed once now >= expires_at (the clock read after the answer).
        assert!(t >= at, "gone at {t}, before its expiry {at}");
        Some(())
    });
    let l = s.get("/v1/kv/b").json();
    assert_eq!(l["keys"], json!([]), "an expired key is not listed");
    poll("the sweeper to count the expiry", || {
        (metric(s.addr, "micronode_kv_expired_total") == Some(1.0)).then_some(())
    });
}

/// Transactions see expiry at once, before the sweeper: a get is found only before
/// `expires_at`, and `exists: false` holds from then on (a lease taken by transaction).
#[test]
fn ttl_expiry_is_seen_by_transactions_before_the_sweep() {
    let s = TestServer::start(&[]);
    let r = request(s.addr, "PUT", "/v1/kv/t/lease?ttl=1", &[], Some(b"one"));
    assert_eq!(r.status, 201);
    let at: u64 = r
        .header("micronode-expires-at")
        .expect("expiry")
        .parse()
        .expect("numeric");
    let body = json!({
        "if": [{"bucket": "t", "key": "lease", "exists": false}],
        "then": [
            {"op": "put", "bucket": "t", "key": "lease", "value": b64(b"two"), "ttl": 30},
            {"op": "get", "bucket": "t", "key": "lease"},
        ],
        "else": [{"op": "get", "bucket": "t", "key": "lease"}],
    });
    let v = poll("the lease to be free for a transaction", || {
        let sent = now_secs();
        let v = txn(s.addr, &body).json();
        if v["succeeded"] == true {
            return Some(v);
        }
        let got = &v["results"][0];
        assert_eq!(got["found"], true, "{v}");
        assert_eq!(got["expires_at"].as_u64(), Some(at), "{v}");
        assert!(sent < at, "found at {sent}, after its expiry {at}: {v}");
        None
    });
    let got = &v["results"][1];
    assert_eq!(unb64(&got["value"]), b"two");
    assert!(got["expires_at"].as_u64().expect("expires_at") > at);
    assert_eq!(s.get("/v1/kv/t/lease").body, b"two");
}

/// A PUT without `ttl` over a TTL key clears its expiry: the sweep that removes a key due at
/// the same time or later leaves it alone.
#[test]
fn put_without_ttl_clears_the_expiry() {
    let s = TestServer::start(&[]);
    let expiry = |r: &Response| -> u64 {
        r.header("micronode-expires-at")
            .expect("expiry")
            .parse()
            .expect("numeric")
    };
    let at_k = expiry(&request(s.addr, "PUT", "/v1/kv/b/k?ttl=1", &[], Some(b"1")));
    let r = put(s.addr, "/v1/kv/b/k", b"forever");
    assert_eq!(r.header("micronode-expires-at"), None);
    let at_probe = expiry(&request(
        s.addr,
        "PUT",
        "/v1/kv/b/probe?ttl=1",
        &[],
        Some(b"p"),
    ));
    assert!(at_k <= at_probe);
    let g = s.get("/v1/kv/b/k");
    assert_eq!(g.header("micronode-expires-at"), None);
    poll("the probe key to be swept", || {
        (metric(s.addr, "micronode_kv_expired_total") == Some(1.0)).then_some(())
    });
    assert_eq!(s.get("/v1/kv/b/probe").status, 404);
    let g = s.get("/v1/kv/b/k");
    assert_eq!((g.status, g.body.as_slice()), (200, &b"forever"[..]));
    assert_eq!(g.header("micronode-expires-at"), None);
}

/// `If-None-Match: *` with a TTL is a lease lock: held until it expires, then free for the
/// next holder without anyone deleting it.
#[test]
fn lease_lock_with_create_only_and_ttl() {
    let s = TestServer::start(&[]);
    let r = request(
        s.addr,
        "PUT",
        "/v1/kv/locks/job?ttl=1",
        &[("if-none-match", "*")],
        Some(b"holder-1"),
    );
    assert_eq!(r.status, 201);
    let at: u64 = r
        .header("micronode-expires-at")
        .expect("expiry")
        .parse()
        .expect("numeric");
    let taken = poll("the lease to be free again", || {
        let r = request(
            s.addr,
            "PUT",
            "/v1/kv/locks/job?ttl=30",
            &[("if-none-match", "*")],
            Some(b"holder-2"),
        );
        let t = now_secs();
        match r.status {
            412 => None,
            201 => Some(t),
            other => panic!("create-only PUT: {other} {}", r.text()),
        }
    });
    assert!(
        taken >= at,
        "lease taken at {taken}, before it expired at {at}"
    );
    let g = s.get("/v1/kv/locks/job");
    assert_eq!(g.body, b"holder-2");
    let r = request(
        s.addr,
        "PUT",
        "/v1/kv/locks/job?ttl=30",
        &[("if-none-match", "*")],
        Some(b"holder-3"),
    );
    r.assert_error(412, "precondition_failed", false);
    assert_eq!(s.get("/v1/kv/locks/job").body, b"holder-2");
}

/// Expiry times are stored with the records: a key whose TTL runs out while the server is
/// down (killed) is gone after the restart and removed by the first sweeps. A resume point
/// from before the restart is 410.
#[test]
fn expiry_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [("MICRONODE_STORAGE_ENGINE", "sled")];
    let mut a = ChildServer::start(&env, dir.path());
    let r = request(a.addr, "PUT", "/v1/kv/b/t?ttl=2", &[], Some(b"v"));
    assert_eq!(r.status, 201);
    let at: u64 = r
        .header("micronode-expires-at")
        .expect("expiry")
        .parse()
        .expect("numeric");
    let r = put(a.addr, "/v1/kv/b/keep", b"k");
    let last = rev(&r);
    a.signal("KILL");
    a.wait_exit();
    // Only a server that died before the expiry cannot have swept the key itself.
    let died_before_expiry = now_secs() < at;
    drop(a);
    let b = ChildServer::start(&env, dir.path());
    assert_eq!(
        b.get("/v1/kv/b/keep").body,
        b"k",
        "acknowledged writes survive"
    );
    poll("the key to be gone after the restart", || {
        let g = b.get("/v1/kv/b/t");
        let t = now_secs();
        if g.status == 200 {
            assert_eq!(
                g.header("micronode-expires-at"),
                Some(at.to_string().as_str())
            );
            return None;
        }
        assert_eq!(g.status, 404);
        assert!(t >= at, "gone at {t}, before its expiry {at}");
        Some(())
    });
    if died_before_expiry {
        poll("the sweeper after the restart", || {
            (metric(b.addr, "micronode_kv_expired_total") == Some(1.0)).then_some(())
        });
    }
    let r = Sse::open(b.addr, &format!("/v1/watch/b?since={}", last - 1), &[])
        .err()
        .expect("a since from before the restart is refused");
    r.assert_error(410, "compacted", false);
}

// ---- 4. Watch ---------------------------------------------------------------------------------

/// Four writers × 50 PUT/DELETEs: one watcher from the revision before sees every
/// acknowledged write exactly once, as the right event, in strictly increasing id order.
#[test]
fn watch_delivers_every_write_once_in_revision_order() {
    let s = TestServer::start(&[]);
    let start = rev(&put(s.addr, "/v1/kv/w/seed", b"s"));
    let mut w = watch(s.addr, &format!("/v1/watch/w?since={start}"));
    let addr = s.addr;
    let writers: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Conn::open(addr);
                let mut acked = Vec::new();
                for i in 0..25 {
                    let path = format!("/v1/kv/w/t{t}/k{i}");
                    let r = c.request("PUT", &path, &[], Some(b"v"));
                    assert_eq!(r.status, 201);
                    acked.push((rev(&r), "put", format!("t{t}/k{i}")));
                    let r = c.request("DELETE", &path, &[], None);
                    assert_eq!(r.status, 204);
                    acked.push((rev(&r), "delete", format!("t{t}/k{i}")));
                }
                acked
            })
        })
        .collect();
    let mut want: BTreeMap<u64, (&str, String)> = BTreeMap::new();
    for t in writers {
        for (r, kind, key) in t.join().expect("writer") {
            assert!(want.insert(r, (kind, key)).is_none(), "revision {r} twice");
        }
    }
    assert_eq!(want.len(), 200);
    let mut seen = Vec::new();
    while seen.len() < want.len() {
        let (id, event, data) = ev(w.next_event().expect("stream ended early"));
        let id = id.expect("a single write's event carries its id");
        assert!(
            seen.last().is_none_or(|&l| id > l),
            "id {id} after {seen:?}"
        );
        let (kind, key) = want
            .get(&id)
            .unwrap_or_else(|| panic!("event {id} for no acknowledged write"));
        assert_eq!(event, *kind, "{data}");
        assert_eq!(data["key"], key.as_str());
        assert_eq!(data["bucket"], "w");
        assert_eq!(data["revision"].as_u64(), Some(id));
        if *kind == "put" {
            assert_eq!(data["etag"], format!("\"{id}\""));
        } else {
            assert!(data.get("etag").is_none(), "{data}");
        }
        seen.push(id);
    }
    assert_eq!(seen, want.keys().copied().collect::<Vec<_>>());
}

fn read_ids(w: &mut Sse, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| {
            ev(w.next_event().expect("event"))
                .0
                .expect("single-write id")
        })
        .collect()
}

/// Resuming with `since=R` or `Last-Event-ID: R` delivers every event after R, none twice.
#[test]
fn watch_resumes_with_since_and_last_event_id_without_loss_or_duplicates() {
    let s = TestServer::start(&[]);
    let r0 = rev(&put(s.addr, "/v1/kv/w/seed", b"s"));
    let revs: Vec<u64> = (0..10)
        .map(|i| rev(&put(s.addr, &format!("/v1/kv/w/k{i}"), b"v")))
        .collect();
    let mut w = watch(s.addr, &format!("/v1/watch/w?since={r0}"));
    assert_eq!(read_ids(&mut w, 4), revs[..4]);
    drop(w);
    let mut w = watch(s.addr, &format!("/v1/watch/w?since={}", revs[3]));
    assert_eq!(read_ids(&mut w, 6), revs[4..]);
    drop(w);
    let last = revs[6].to_string();
    let mut w = Sse::open(s.addr, "/v1/watch/w", &[("last-event-id", &last)])
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    assert_eq!(w.next_item(), Some(SseItem::Comment("watching".into())));
    assert_eq!(read_ids(&mut w, 3), revs[7..]);
    // Then live: the next write, and nothing before it.
    let next = rev(&put(s.addr, "/v1/kv/w/live", b"v"));
    assert_eq!(read_ids(&mut w, 1), [next]);
    // No since: from now on.
    let mut w = watch(s.addr, "/v1/watch/w");
    let next = rev(&put(s.addr, "/v1/kv/w/live2", b"v"));
    assert_eq!(read_ids(&mut w, 1), [next]);
}

/// A resume point older than the retained history is 410 `compacted` naming the oldest
/// revision one may resume from, which then works.
#[test]
fn watch_past_history_is_410_compacted() {
    let s = TestServer::start(&[("MICRONODE_WATCH_HISTORY", "5")]);
    let r0 = rev(&put(s.addr, "/v1/kv/w/seed", b"s"));
    let revs: Vec<u64> = (0..20)
        .map(|i| rev(&put(s.addr, &format!("/v1/kv/w/k{i}"), b"v")))
        .collect();
    let r = Sse::open(s.addr, &format!("/v1/watch/w?since={r0}"), &[])
        .err()
        .expect("too old");
    r.assert_error(410, "compacted", false);
    let oldest: u64 = r
        .header("micronode-oldest-revision")
        .expect("Micronode-Oldest-Revision")
        .parse()
        .expect("numeric");
    assert!(oldest > r0 && oldest <= revs[19], "{oldest}");
    let since = r0.to_string();
    let r = Sse::open(s.addr, "/v1/watch/w", &[("last-event-id", &since)])
        .err()
        .expect("too old by Last-Event-ID");
    assert_eq!(r.status, 410);
    let mut w = watch(s.addr, &format!("/v1/watch/w?since={oldest}"));
    let want: Vec<u64> = revs.iter().copied().filter(|&r| r > oldest).collect();
    assert!(!want.is_empty() || oldest == revs[19]);
    assert_eq!(read_ids(&mut w, want.len()), want);
}

/// A watcher that stops reading falls behind; past `MICRONODE_WATCH_BUFFER` matching events
/// it gets `overflow` with where to resume, and the stream ends.
#[test]
fn stalled_watcher_gets_overflow() {
    let s = TestServer::start(&[
        ("MICRONODE_STORAGE_ENGINE", "mem"),
        ("MICRONODE_WATCH_BUFFER", "16"),
    ]);
    let start = rev(&put(s.addr, "/v1/kv/w/seed", b"s"));
    let mut w = watch(s.addr, &format!("/v1/watch/w?since={start}&values=true"));
    // Not reading `w` from here: the socket buffers fill, then the server's stream stalls.
    let value = vec![b'x'; 4096];
    let addr = s.addr;
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let value = value.clone();
            thread::spawn(move || {
                let mut c = Conn::open(addr);
                (0..1000)
                    .map(|i| {
                        let r = c.request("PUT", &format!("/v1/kv/w/t{t}/{i}"), &[], Some(&value));
                        assert_eq!(r.status, 201);
                        rev(&r)
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in writers {
        acked.extend(t.join().expect("writer"));
    }
    acked.sort_unstable();
    let mut last = start;
    let resume_from = loop {
        let (id, event, data) = ev(w.next_event().expect("overflow before the stream ends"));
        if event == "overflow" {
            assert_eq!(id, None);
            break data["resume_from"].as_u64().expect("resume_from");
        }
        assert_eq!(event, "put");
        assert_eq!(unb64(&data["value"]), value);
        let id = id.expect("id");
        assert!(id > last);
        last = id;
    };
    assert!(
        resume_from >= last,
        "resume_from {resume_from} < delivered {last}"
    );
    assert_eq!(w.next_item(), None, "the stream ends after overflow");
    assert!(last < acked[acked.len() - 1], "the watcher did fall behind");
    poll("the overflow metric", || {
        (metric(s.addr, "micronode_watch_overflows_total") == Some(1.0)).then_some(())
    });
    // Resuming from there is accepted (the history still holds it).
    let _w = watch(s.addr, &format!("/v1/watch/w?since={resume_from}"));
}

/// A resume point inside the retained history delivers every later event to a client that
/// reads as fast as it can: the backlog at connect time is not a stall.
#[test]
fn resume_with_a_backlog_larger_than_the_buffer_is_not_an_overflow() {
    let s = TestServer::start(&[
        ("MICRONODE_STORAGE_ENGINE", "mem"),
        ("MICRONODE_WATCH_BUFFER", "16"),
    ]);
    let start = rev(&put(s.addr, "/v1/kv/w/seed", b"s"));
    let mut c = Conn::open(s.addr);
    let revs: Vec<u64> = (0..300)
        .map(|i| {
            let r = c.request("PUT", &format!("/v1/kv/w/k{i}"), &[], Some(b"v"));
            assert_eq!(r.status, 201);
            rev(&r)
        })
        .collect();
    let mut w = watch(s.addr, &format!("/v1/watch/w?since={start}"));
    let mut got = Vec::new();
    while got.len() < revs.len() {
        let (id, event, data) = ev(w.next_event().expect("stream ended early"));
        assert_eq!(event, "put", "{data}");
        got.push(id.expect("id"));
    }
    assert_eq!(got, revs);
}

/// The watch stream works over HTTP/2 (prior knowledge on plain TCP) with the same frames:
/// history first, then a live write.
#[test]
fn watch_over_http2() {
    use http_body_util::BodyExt as _;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let s = TestServer::start(&[]);
    let start = rev(&put(s.addr, "/v1/kv/w/seed", b"s"));
    let revs: Vec<u64> = (0..3)
        .map(|i| rev(&put(s.addr, &format!("/v1/kv/w/k{i}"), b"v")))
        .collect();
    let addr = s.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://{addr}/v1/watch/w?since={start}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let resp = send.send_request(req).await.expect("h2 answer");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"text/event-stream"[..])
        );
        let mut body = resp.into_body();
        let mut text = String::new();
        let mut items = Vec::new();
        let mut live = None;
        while items.len() < 5 {
            let frame = tokio::time::timeout(WAIT, body.frame())
                .await
                .expect("a frame within the safety bound")
                .expect("stream open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                text.push_str(std::str::from_utf8(&data).expect("UTF-8"));
            }
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                items.push(support::parse_sse_block(block.trim_end_matches('\n')));
            }
            if items.len() == 4 && live.is_none() {
                live = Some(
                    tokio::task::spawn_blocking(move || rev(&put(addr, "/v1/kv/w/live", b"v")))
                        .await
                        .expect("live put"),
                );
            }
        }
        assert_eq!(items[0], SseItem::Comment("watching".into()));
        let ids: Vec<u64> = items[1..]
            .iter()
            .map(|i| ev(i.clone()).0.expect("id"))
            .collect();
        let mut want = revs.clone();
        want.push(live.expect("live write"));
        assert_eq!(ids, want);
    });
}

/// `prefix` selects keys (form-encoded: `+` is a space) and `values=true` carries the value and
/// content type of puts only.
#[test]
fn watch_prefix_filters_and_values_ride_on_puts() {
    let s = TestServer::start(&[]);
    let start = rev(&put(s.addr, "/v1/kv/w/seed", b"s"));
    let mut w = watch(
        s.addr,
        &format!("/v1/watch/w?prefix=a+b%2F&since={start}&values=true"),
    );
    put(s.addr, "/v1/kv/w/ab/x", b"no");
    put(s.addr, "/v1/kv/w2/a%20b/x", b"no");
    let r = request(
        s.addr,
        "PUT",
        "/v1/kv/w/a%20b/x",
        &[("content-type", "text/plain")],
        Some(b"yes"),
    );
    let r1 = rev(&r);
    let r2 = rev(&request(s.addr, "DELETE", "/v1/kv/w/a%20b/x", &[], None));
    let (id, event, data) = ev(w.next_event().expect("put"));
    assert_eq!((id, event.as_str()), (Some(r1), "put"));
    assert_eq!(data["key"], "a b/x");
    assert_eq!(unb64(&data["value"]), b"yes");
    assert_eq!(data["content_type"], "text/plain");
    let (id, event, data) = ev(w.next_event().expect("delete"));
    assert_eq!((id, event.as_str()), (Some(r2), "delete"));
    assert!(
        data.get("value").is_none() && data.get("etag").is_none(),
        "{data}"
    );
}

/// Writes that change nothing (deleting a missing key, alone or in a transaction) send no
/// event; a transaction's events are only those of what it changed.
#[test]
fn writes_that_change_nothing_send_no_event() {
    let s = TestServer::start(&[]);
    let start = rev(&put(s.addr, "/v1/kv/w/seed", b"s"));
    let mut w = watch(s.addr, &format!("/v1/watch/w?since={start}"));
    assert_eq!(
        request(s.addr, "DELETE", "/v1/kv/w/missing", &[], None).status,
        404
    );
    let v = txn(
        s.addr,
        &json!({"then": [{"op": "delete", "bucket": "w", "key": "missing"}]}),
    )
    .json();
    assert_eq!(v["results"][0]["deleted"], false);
    let v = txn(
        s.addr,
        &json!({"then": [
            {"op": "delete", "bucket": "w", "key": "missing2"},
            {"op": "put", "bucket": "w", "key": "x", "value": b64(b"x")},
            {"op": "get", "bucket": "w", "key": "seed"},
        ]}),
    )
    .json();
    let r = v["revision"].as_u64().expect("revision");
    let marker = rev(&put(s.addr, "/v1/kv/w/marker", b"m"));
    let (id, event, data) = ev(w.next_event().expect("txn put"));
    assert_eq!((id, event.as_str()), (Some(r), "put"), "{data}");
    assert_eq!(data["key"], "x");
    let (id, _, data) = ev(w.next_event().expect("marker"));
    assert_eq!(id, Some(marker), "{data}");
}

/// Watchers beyond `MICRONODE_MAX_WATCHERS` are 429 `concurrency`; a closed stream frees its
/// slot.
#[test]
fn watch_limit_is_429() {
    // Keep-alives make the server notice a closed stream on its next write.
    let s = TestServer::start(&[
        ("MICRONODE_MAX_WATCHERS", "2"),
        ("MICRONODE_WATCH_KEEPALIVE_MS", "200"),
    ]);
    let w1 = watch(s.addr, "/v1/watch/w");
    let _w2 = watch(s.addr, "/v1/watch/w2");
    assert_eq!(s.metric("micronode_watchers_current"), 2.0);
    let r = Sse::open(s.addr, "/v1/watch/w", &[])
        .err()
        .expect("third watcher");
    r.assert_error(429, "concurrency", true);
    drop(w1);
    poll("the closed stream's slot to be freed", || {
        (s.metric("micronode_watchers_current") == 1.0).then_some(())
    });
    let _w3 = watch(s.addr, "/v1/watch/w");
}

/// An idle stream gets `: keep-alive` comments every `MICRONODE_WATCH_KEEPALIVE_MS`.
#[test]
fn keepalive_comments_arrive() {
    let s = TestServer::start(&[("MICRONODE_WATCH_KEEPALIVE_MS", "100")]);
    let mut w = watch(s.addr, "/v1/watch/w");
    for _ in 0..2 {
        assert_eq!(w.next_item(), Some(SseItem::Comment("keep-alive".into())));
    }
}

/// A quiet stream gets its keep-alives even while other keys of the store change all the time
/// (the keep-alive is counted from the last bytes this stream sent, not from the last wake-up).
#[test]
fn keepalive_arrives_on_a_quiet_stream_of_a_busy_store() {
    let s = TestServer::start(&[("MICRONODE_WATCH_KEEPALIVE_MS", "300")]);
    let mut w = watch(s.addr, "/v1/watch/quiet");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (addr, stop) = (s.addr, std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut c = Conn::open(addr);
            // Bounded: at most 2,000 writes to another bucket, faster than the keep-alive.
            for i in 0..2000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let r = c.request("PUT", &format!("/v1/kv/busy/k{}", i % 10), &[], Some(b"v"));
                assert!(r.status == 201 || r.status == 204);
            }
        })
    };
    let first = w.next_item();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    assert_eq!(first, Some(SseItem::Comment("keep-alive".into())));
}

/// The events of one transaction share its revision and only the last carries `id:`; an
/// expiry is an `expire` event with a revision of its own.
#[test]
fn transaction_events_share_a_revision_and_one_id() {
    let s = TestServer::start(&[]);
    let start = rev(&put(s.addr, "/v1/kv/w/d", b"old"));
    let mut w = watch(s.addr, &format!("/v1/watch/w?since={start}&values=true"));
    let t = txn(
        s.addr,
        &json!({"then": [
            {"op": "put", "bucket": "w", "key": "a", "value": b64(b"A"), "content_type": "text/plain"},
            {"op": "put", "bucket": "w", "key": "b", "value": b64(b"B"), "ttl": 1},
            {"op": "delete", "bucket": "w", "key": "d"},
            {"op": "put", "bucket": "other", "key": "x", "value": b64(b"X")},
        ]}),
    );
    assert_eq!(t.status, 200, "{}", t.text());
    let r = t.json()["revision"].as_u64().expect("revision");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(ev(w.next_event().expect("txn event")));
    }
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        [None, None, Some(r)]
    );
    assert_eq!(
        got.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(),
        ["put", "put", "delete"]
    );
    for (_, _, data) in &got {
        assert_eq!(data["revision"].as_u64(), Some(r));
    }
    assert_eq!(got[0].2["value"], b64(b"A"));
    assert_eq!(got[0].2["content_type"], "text/plain");
    assert!(got[1].2["expires_at"].as_u64().is_some());
    assert!(got[2].2.get("value").is_none());
    let (id, event, data) = ev(w.next_event().expect("expire event"));
    assert_eq!(event, "expire");
    assert_eq!(data["key"], "b");
    assert!(data.get("etag").is_none(), "{data}");
    let id = id.expect("own id");
    assert!(id > r);
    assert_eq!(data["revision"].as_u64(), Some(id));
    let scrape = s.scrape();
    assert!(scrape.value("micronode_watch_events_total{event=\"put\"}") >= 2.0);
    assert!(scrape.value("micronode_watch_events_total{event=\"expire\"}") >= 1.0);
}

// ---- 5. Transactions --------------------------------------------------------------------------

/// Compares choose the branch; writes share one revision; a get sees an earlier put of the
/// branch; a failed compare runs `else`.
#[test]
fn txn_compare_and_branches() {
    let s = TestServer::start(&[]);
    let ea = put(s.addr, "/v1/kv/t/a", b"1")
        .header("etag")
        .expect("etag")
        .to_owned();
    let body = json!({
        "if": [{"bucket": "t", "key": "a", "etag": ea}, {"bucket": "t", "key": "b", "exists": false}],
        "then": [
            {"op": "put", "bucket": "t", "key": "a", "value": b64(b"2")},
            {"op": "put", "bucket": "t", "key": "b", "value": b64(b"x"), "content_type": "text/plain"},
            {"op": "get", "bucket": "t", "key": "a"},
            {"op": "get", "bucket": "t", "key": "missing"},
        ],
        "else": [
            {"op": "get", "bucket": "t", "key": "a"},
            {"op": "delete", "bucket": "t", "key": "b"},
        ],
    });
    let r = txn(s.addr, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let rv = v["revision"].as_u64().expect("revision");
    assert_eq!(rev(&r), rv);
    let tag = format!("\"{rv}\"");
    assert_eq!(v["succeeded"], true);
    let res = &v["results"];
    assert_eq!(res[0], json!({"op": "put", "etag": tag}));
    assert_eq!(res[1], json!({"op": "put", "etag": tag}));
    assert_eq!(res[2]["found"], true);
    assert_eq!(res[2]["etag"], tag.as_str());
    assert_eq!(unb64(&res[2]["value"]), b"2", "a get sees the branch's put");
    assert_eq!(res[3], json!({"op": "get", "found": false}));
    assert_eq!(s.get("/v1/kv/t/a").header("etag"), Some(tag.as_str()));
    let g = s.get("/v1/kv/t/b");
    assert_eq!(g.header("etag"), Some(tag.as_str()));
    assert_eq!(g.header("content-type"), Some("text/plain"));

    // Same body again: the compares now fail, so `else` runs.
    let v = txn(s.addr, &body).json();
    assert_eq!(v["succeeded"], false);
    let res = &v["results"];
    assert_eq!(res[0]["etag"], tag.as_str());
    assert_eq!(unb64(&res[0]["value"]), b"2");
    assert_eq!(res[1], json!({"op": "delete", "deleted": true}));
    assert_eq!(s.get("/v1/kv/t/b").status, 404);

    // Exact strings in compares too; `exists: true` on a missing key fails.
    for cmp in [
        json!({"bucket": "t", "key": "a", "etag": format!("\"0{rv}\"")}),
        json!({"bucket": "t", "key": "a", "etag": format!("W/\"{rv}\"")}),
        json!({"bucket": "t", "key": "b", "exists": true}),
    ] {
        let r = txn(
            s.addr,
            &json!({"if": [cmp], "then": [{"op": "delete", "bucket": "t", "key": "a"}]}),
        );
        if r.status == 200 {
            assert_eq!(r.json()["succeeded"], false, "{cmp}");
        } else {
            r.assert_error(400, "bad_request", false);
        }
    }
    assert_eq!(s.get("/v1/kv/t/a").status, 200);
    let scrape = s.scrape();
    assert_eq!(
        scrape.value("micronode_txn_total{result=\"succeeded\"}"),
        1.0
    );
    assert!(scrape.value("micronode_txn_total{result=\"failed\"}") >= 2.0);
}

/// Malformed transactions are 400 with nothing applied (not even their valid ops).
#[test]
fn txn_rejects_malformed_input_and_applies_nothing() {
    let s = TestServer::start(&[]);
    put(s.addr, "/v1/kv/t/k", b"v");
    let before = rev(&s.get("/v1/kv/t"));
    let ok = json!({"op": "put", "bucket": "t", "key": "sentinel", "value": b64(b"s")});
    let bad: Vec<(&str, String)> = vec![
        ("not JSON", "{\"then\": [".to_owned()),
        ("unknown top-level field", json!({"then": [ok], "extra": 1}).to_string()),
        (
            "unknown op field",
            json!({"then": [ok, {"op": "put", "bucket": "t", "key": "x", "value": "", "x": 1}]})
                .to_string(),
        ),
        (
            "unknown op",
            json!({"then": [ok, {"op": "frob", "bucket": "t", "key": "x"}]}).to_string(),
        ),
        (
            "bad base64",
            json!({"then": [ok, {"op": "put", "bucket": "t", "key": "x", "value": "***"}]})
                .to_string(),
        ),
        (
            "key written twice",
            json!({"then": [ok, {"op": "delete", "bucket": "t", "key": "sentinel"}]}).to_string(),
        ),
        (
            "key written twice in else",
            json!({"then": [ok], "else": [
                {"op": "delete", "bucket": "t", "key": "k"},
                {"op": "put", "bucket": "t", "key": "k", "value": ""}]})
            .to_string(),
        ),
        (
            "compare with etag and exists",
            json!({"if": [{"bucket": "t", "key": "k", "etag": "\"1\"", "exists": true}], "then": [ok]})
                .to_string(),
        ),
        (
            "compare with neither",
            json!({"if": [{"bucket": "t", "key": "k"}], "then": [ok]}).to_string(),
        ),
        (
            "bad bucket",
            json!({"then": [ok, {"op": "delete", "bucket": "UP", "key": "x"}]}).to_string(),
        ),
        (
            "bad key",
            json!({"then": [ok, {"op": "delete", "bucket": "t", "key": "a//b"}]}).to_string(),
        ),
        (
            "ttl 0",
            json!({"then": [ok, {"op": "put", "bucket": "t", "key": "x", "value": "", "ttl": 0}]})
                .to_string(),
        ),
        (
            "value not a string",
            json!({"then": [ok, {"op": "put", "bucket": "t", "key": "x", "value": 5}]}).to_string(),
        ),
    ];
    for (what, body) in &bad {
        let r = request(s.addr, "POST", "/v1/txn", &[], Some(body.as_bytes()));
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        r.assert_error(400, "bad_request", false);
    }
    assert_eq!(s.get("/v1/kv/t/sentinel").status, 404);
    assert_eq!(s.get("/v1/kv/t/k").body, b"v");
    assert_eq!(rev(&s.get("/v1/kv/t")), before, "no revision was taken");
    assert_eq!(
        s.metric("micronode_txn_total{result=\"invalid\"}"),
        bad.len() as f64
    );
}

/// A transaction body is a JSON object: serde's positional (array) form of the struct must
/// not be accepted as a transaction.
#[test]
fn txn_body_must_be_a_json_object() {
    let s = TestServer::start(&[]);
    let before = rev(&s.get("/v1/kv/t"));
    for body in [
        "[]".to_owned(),
        json!([[], [{"op": "put", "bucket": "t", "key": "k", "value": ""}]]).to_string(),
    ] {
        let r = request(s.addr, "POST", "/v1/txn", &[], Some(body.as_bytes()));
        r.assert_error(400, "bad_request", false);
    }
    assert_eq!(s.get("/v1/kv/t/k").status, 404);
    assert_eq!(rev(&s.get("/v1/kv/t")), before);
}

/// Up to `MICRONODE_TXN_MAX_OPS` (64) compares and ops in all; one more is 400 with nothing
/// applied.
#[test]
fn txn_op_limit() {
    let s = TestServer::start(&[]);
    let puts = |n: usize, prefix: &str| -> Vec<Value> {
        (0..n)
            .map(
                |i| json!({"op": "put", "bucket": "t", "key": format!("{prefix}{i}"), "value": ""}),
            )
            .collect()
    };
    let r = txn(
        s.addr,
        &json!({"if": [{"bucket": "t", "key": "c", "exists": false}], "then": puts(63, "ok")}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"].as_array().map(Vec::len), Some(63));
    let r = txn(
        s.addr,
        &json!({"if": [{"bucket": "t", "key": "c", "exists": false}], "then": puts(32, "x"), "else": puts(32, "y")}),
    );
    r.assert_error(400, "bad_request", false);
    let l = s.get("/v1/kv/t?limit=1000").json();
    assert_eq!(l["keys"].as_array().map(Vec::len), Some(63));
}

// ---- Bank transfers ---------------------------------------------------------------------------

const ACCOUNTS: usize = 10;

fn gets_all() -> Value {
    let then: Vec<Value> = (0..ACCOUNTS)
        .map(|i| json!({"op": "get", "bucket": "bank", "key": format!("acct{i}")}))
        .collect();
    json!({ "then": then })
}

/// All balances in one consistent read (`None` if the server is gone).
fn balances(addr: SocketAddr) -> Option<Vec<u64>> {
    let v = try_txn(addr, &gets_all())?;
    Some(
        v["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                assert_eq!(r["found"], true, "{v}");
                String::from_utf8(unb64(&r["value"]))
                    .expect("UTF-8 balance")
                    .parse()
                    .expect("decimal balance")
            })
            .collect(),
    )
}

/// One transfer attempt between two accounts; `None` when the server is gone, `Some(false)`
/// when a compare failed (retry).
fn transfer(addr: SocketAddr, rng: &mut u64) -> Option<bool> {
    let (from, to, amount) = support::pick_transfer(rng, ACCOUNTS);
    let keys = [format!("acct{from}"), format!("acct{to}")];
    let read = try_txn(
        addr,
        &json!({"then": [
            {"op": "get", "bucket": "bank", "key": keys[0]},
            {"op": "get", "bucket": "bank", "key": keys[1]},
        ]}),
    )?;
    let res = &read["results"];
    let bal = |i: usize| -> u64 {
        String::from_utf8(unb64(&res[i]["value"]))
            .expect("UTF-8")
            .parse()
            .expect("decimal")
    };
    let (a, b) = (bal(0), bal(1));
    let amount = amount.min(a);
    let v = try_txn(
        addr,
        &json!({
            "if": [
                {"bucket": "bank", "key": keys[0], "etag": res[0]["etag"]},
                {"bucket": "bank", "key": keys[1], "etag": res[1]["etag"]},
            ],
            "then": [
                {"op": "put", "bucket": "bank", "key": keys[0], "value": b64((a - amount).to_string().as_bytes())},
                {"op": "put", "bucket": "bank", "key": keys[1], "value": b64((b + amount).to_string().as_bytes())},
            ],
        }),
    )?;
    Some(v["succeeded"] == true)
}

/// Runs 8 transfer threads (each `per_thread` successful transfers at most, or until the
/// server is gone or `deadline`) and one reader asserting the total in every consistent read.
fn run_bank(
    addr: SocketAddr,
    per_thread: usize,
    deadline: Instant,
    done: Arc<AtomicU64>,
    done_reads: Arc<AtomicU64>,
) -> Vec<thread::JoinHandle<()>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles: Vec<_> = (0..8u64)
        .map(|t| {
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (t + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
                let mut n = 0;
                while n < per_thread && Instant::now() < deadline {
                    match transfer(addr, &mut rng) {
                        None => return,
                        Some(true) => {
                            n += 1;
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(false) => {}
                    }
                }
            })
        })
        .collect();
    let reader_stop = Arc::clone(&stop);
    let reads = Arc::clone(&done_reads);
    handles.push(thread::spawn(move || {
        while !reader_stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            match balances(addr) {
                Some(b) => {
                    assert_eq!(b.iter().sum::<u64>(), 1000, "consistent read {b:?}");
                    reads.fetch_add(1, Ordering::SeqCst);
                }
                None => return,
            }
        }
    }));
    // The reader stops once the writers are done: a watcher thread flips `stop`.
    let writer_handles: Vec<_> = handles.drain(..8).collect();
    vec![
        thread::spawn(move || {
            for h in writer_handles {
                h.join().expect("transfer thread");
            }
            stop.store(true, Ordering::SeqCst);
        }),
        handles.pop().expect("reader"),
    ]
}

/// Transfers between 10 accounts under concurrency keep the total at 1000 in every consistent
/// read, and after a kill -9 in the middle of the load, on restart.
#[test]
fn bank_transfer_invariant_under_concurrency_and_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [
        ("MICRONODE_STORAGE_ENGINE", "sled"),
        ("MICRONODE_DURABILITY", "sync"),
    ];
    let mut a = ChildServer::start(&env, dir.path());
    let init: Vec<Value> = (0..ACCOUNTS)
        .map(|i| json!({"op": "put", "bucket": "bank", "key": format!("acct{i}"), "value": b64(b"100")}))
        .collect();
    let r = txn(a.addr, &json!({ "then": init }));
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let handles = run_bank(a.addr, 40, deadline, Arc::clone(&done), Arc::clone(&reads));
    // Snapshots taken while the transfers run hold the same total: each is the store at one
    // revision.
    let url = format!("http://{}", a.addr);
    for n in 0..3 {
        let file = dir.path().join(format!("bank-{n}.ndjson"));
        let file_arg = file.display().to_string();
        let (code, out, err) = support::run_binary(
            &["snapshot", "save", &file_arg],
            &[("MICRONODE_URL", url.as_str())],
            dir.path(),
        );
        assert_eq!(code, 0, "snapshot save: {out} {err}");
        let text = std::fs::read_to_string(&file).expect("snapshot file");
        let sum: u64 = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["bucket"] == "bank")
            .map(|v| {
                let raw = unb64(&v["value"]);
                String::from_utf8(raw)
                    .expect("UTF-8")
                    .parse::<u64>()
                    .expect("decimal")
            })
            .sum();
        assert_eq!(sum, 1000, "snapshot {n} ({out})");
    }
    for h in handles {
        h.join().expect("phase 1 thread");
    }
    assert!(
        reads.load(Ordering::SeqCst) > 0,
        "the reader read during the load"
    );
    let b = balances(a.addr).expect("server up");
    assert_eq!(b.iter().sum::<u64>(), 1000, "{b:?}");
    assert!(done.load(Ordering::SeqCst) > 0);

    // Phase 2: the same load, killed -9 in the middle.
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    let handles = run_bank(a.addr, usize::MAX, deadline, Arc::clone(&done), reads);
    poll("transfers under way", || {
        (done.load(Ordering::SeqCst) >= 20).then_some(())
    });
    a.signal("KILL");
    a.wait_exit();
    for h in handles {
        h.join().expect("phase 2 thread");
    }
    drop(a);
    let c = ChildServer::start(&env, dir.path());
    let b = balances(c.addr).expect("restarted server");
    assert_eq!(b.iter().sum::<u64>(), 1000, "after kill -9: {b:?}");
    for i in 0..ACCOUNTS {
        let g = c.get(&format!("/v1/kv/bank/acct{i}"));
        assert_eq!(g.status, 200);
        g.text().parse::<u64>().expect("every account parses");
    }
}
