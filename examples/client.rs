//! A tour of Micronode's HTTP API from Rust, on a plain hyper 1.x client connection.
//!
//!     MICRONODE_URL=http://127.0.0.1:5310 cargo run --example client
//!
//! Server from `MICRONODE_URL` (default `http://127.0.0.1:5310`; `http://` only here — a path
//! prefix is kept); token from `MICRONODE_TOKEN`, sent as `Authorization: Bearer …` when set
//! and never printed. No arguments. Every step checks the answer against docs/API.md; any
//! unexpected answer prints what was expected and what came, and exits 1. Each run uses a
//! bucket of its own (`ex-rs-<pid>-<ms>`).
//!
//! Steps: put, get, a compare-and-set loop with two concurrent incrementers, a paged listing,
//! a watch that disconnects and resumes with `Last-Event-ID`, a transaction, a TTL.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::time::timeout;

/// Connecting plus a whole answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Without an event on a watch stream.
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole tour.
const TOTAL_BOUND: Duration = Duration::from_secs(90);

type Result<T> = std::result::Result<T, String>;

/// Where the server is, and the token.
struct Client {
    /// `host:port`, for connecting and for `Host`.
    authority: String,
    /// The URL's path, without a trailing `/` (empty for none).
    prefix: String,
    token: Option<String>,
    bucket: String,
}

/// A whole answer.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Status plus the error envelope's code and message, when there is one.
    fn describe(&self) -> String {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(env) if env.get("code").is_some() => format!(
                "{} {}: {} (request {})",
                self.status, env["code"], env["message"], env["request_id"]
            ),
            _ => self.status.to_string(),
        }
    }

    fn expect(self, statuses: &[u16], what: &str) -> Result<Answer> {
        if statuses.contains(&self.status) {
            Ok(self)
        } else {
            Err(format!(
                "{what}: expected {statuses:?}, got {}",
                self.describe()
            ))
        }
    }

    fn json(&self, what: &str) -> Result<Value> {
        serde_json::from_slice(&self.body).map_err(|e| format!("{what}: expected JSON: {e}"))
    }

    fn etag(&self, what: &str) -> Result<String> {
        match self.header("etag") {
            Some(t) if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') => Ok(t.to_owned()),
            t => Err(format!("{what}: expected a quoted ETag, got {t:?}")),
        }
    }

    fn revision(&self, what: &str) -> Result<u64> {
        self.header("micronode-revision")
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| format!("{what}: expected a Micronode-Revision header"))
    }
}

/// Percent-encodes every byte but the unreserved ones; `/` too unless `keep_slash`.
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string. Encoding `+` as `%2B` and space as `%20` is valid form encoding too.
fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v, false)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Client {
    fn from_env() -> Result<Client> {
        let url = std::env::var("MICRONODE_URL").unwrap_or_else(|_| "http://127.0.0.1:5310".into());
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("MICRONODE_URL must be an http:// URL here, got {url:?}"))?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(format!("MICRONODE_URL has no host: {url:?}"));
        }
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Ok(Client {
            authority,
            prefix: format!("/{prefix}").trim_end_matches('/').to_owned(),
            token: std::env::var("MICRONODE_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            bucket: format!("ex-rs-{}-{millis}", std::process::id()),
        })
    }

    fn key_path(&self, key: &str) -> String {
        format!("/v1/kv/{}/{}", self.bucket, encode(key, true))
    }

    /// Sends one request on a fresh connection; the answer's head and its body stream.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<hyper::Response<Incoming>> {
        let what = format!("{method} {path}");
        let stream = timeout(TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| format!("{what}: connecting to {} timed out", self.authority))?
            .map_err(|e| format!("{what}: cannot connect to {}: {e}", self.authority))?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header("host", &self.authority);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = body.unwrap_or_default();
        // Full bodies carry Content-Length (the server refuses chunked uploads with 411).
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("{what}: {e}"))?;
        timeout(TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| format!("{what}: no answer within {TIMEOUT:?}"))?
            .map_err(|e| format!("{what}: {e}"))
    }

    /// One request; the whole answer, whatever its status.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Answer> {
        let what = format!("{method} {path}");
        let resp = self.send(method, path, body, headers).await?;
        let (parts, body) = resp.into_parts();
        let body = timeout(TIMEOUT, body.collect())
            .await
            .map_err(|_| format!("{what}: body not received within {TIMEOUT:?}"))?
            .map_err(|e| format!("{what}: {e}"))?
            .to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    async fn put(&self, key: &str, value: &str, headers: &[(&str, &str)]) -> Result<Answer> {
        let path = self.key_path(key);
        self.call(Method::PUT, &path, Some(value.into()), headers)
            .await
    }

    async fn get(&self, key: &str) -> Result<Answer> {
        self.call(Method::GET, &self.key_path(key), None, &[]).await
    }
}

// --- 1. put, get ---------------------------------------------------------------------------------

async fn put_and_get(c: &Client) -> Result<()> {
    println!("== put and get");
    let a = c
        .put("hello", "world", &[("content-type", "text/plain")])
        .await?
        .expect(&[201], "PUT hello")?;
    let tag = a.etag("PUT hello")?;
    println!(
        "PUT {}/hello -> 201, ETag {tag}, revision {}",
        c.bucket,
        a.revision("PUT hello")?
    );
    let g = c.get("hello").await?.expect(&[200], "GET hello")?;
    if &g.body[..] != b"world" || g.header("content-type") != Some("text/plain") {
        return Err(format!(
            "GET hello: expected text/plain \"world\", got {:?} {:?}",
            g.header("content-type"),
            g.body
        ));
    }
    if g.etag("GET hello")? != tag {
        return Err(format!(
            "GET hello: expected ETag {tag}, got {:?}",
            g.header("etag")
        ));
    }
    println!("GET {}/hello -> 200 \"world\", ETag {tag}", c.bucket);
    Ok(())
}

// --- 2. compare-and-set --------------------------------------------------------------------------

const INCREMENTS: u32 = 10;
const MAX_TRIES: u32 = 50;

/// Reads the counter and its ETag, writes value+1 with `If-Match`; on 412 reads again and
/// retries. The first increment of each incrementer waits at `barrier` between its read and
/// its write, so both write with the same ETag and one of them must get 412.
async fn increment(
    c: &Client,
    key: &str,
    conflicts: &AtomicU32,
    mut barrier: Option<&Barrier>,
) -> Result<()> {
    for _ in 0..MAX_TRIES {
        let g = c.get(key).await?.expect(&[200], "GET counter")?;
        let tag = g.etag("GET counter")?;
        let n: u64 = std::str::from_utf8(&g.body)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("GET counter: expected a number, got {:?}", g.body))?;
        if let Some(b) = barrier.take() {
            b.wait().await;
        }
        let p = c
            .put(key, &(n + 1).to_string(), &[("if-match", &tag)])
            .await?;
        if p.status == 204 {
            return Ok(());
        }
        p.expect(&[412], &format!("PUT counter If-Match {tag}"))?;
        conflicts.fetch_add(1, Ordering::Relaxed);
    }
    Err(format!(
        "increment: still conflicting after {MAX_TRIES} tries"
    ))
}

async fn compare_and_set(c: Arc<Client>) -> Result<()> {
    println!("== compare-and-set: two concurrent incrementers");
    c.put("counter", "0", &[("if-none-match", "*")])
        .await?
        .expect(&[201], "PUT counter (create only)")?;
    let barrier = Arc::new(Barrier::new(2));
    let conflicts = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (c, barrier, conflicts) = (c.clone(), barrier.clone(), conflicts.clone());
        tasks.push(tokio::spawn(async move {
            increment(&c, "counter", &conflicts, Some(&barrier)).await?;
            for _ in 1..INCREMENTS {
                increment(&c, "counter", &conflicts, None).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("incrementer: {e}"))??;
    }
    let conflicts = conflicts.load(Ordering::Relaxed);
    let g = c.get("counter").await?.expect(&[200], "GET counter")?;
    let got = String::from_utf8_lossy(&g.body);
    println!("2 incrementers x {INCREMENTS}: counter = {got}, {conflicts} x 412 retried");
    if got != (2 * INCREMENTS).to_string() {
        return Err(format!(
            "compare-and-set: expected {}, got {got} (lost update)",
            2 * INCREMENTS
        ));
    }
    if conflicts == 0 {
        return Err("compare-and-set: expected at least one 412".into());
    }
    Ok(())
}

// --- 3. list with paging -------------------------------------------------------------------------

const LIST_KEYS: [&str; 5] = [
    "list/alpha one",
    "list/alpha+two",
    "list/beta three",
    "list/café",
    "list/delta/five",
];

async fn list_paging(c: &Client) -> Result<()> {
    println!("== list: limit=2, following next");
    for k in LIST_KEYS {
        c.put(k, k, &[])
            .await?
            .expect(&[201], &format!("PUT {k:?}"))?;
    }
    let (mut seen, mut after, mut pages) = (Vec::<String>::new(), None::<String>, 0);
    loop {
        pages += 1;
        if pages > LIST_KEYS.len() + 1 {
            return Err("list: too many pages".into());
        }
        let mut q = vec![("prefix", "list/"), ("limit", "2")];
        if let Some(a) = &after {
            q.push(("after", a));
        }
        let path = format!("/v1/kv/{}?{}", c.bucket, query(&q));
        let page = c
            .call(Method::GET, &path, None, &[])
            .await?
            .expect(&[200], "list")?;
        let v = page.json("list")?;
        let keys: Vec<String> = v["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        println!("page {pages}: {keys:?} next={}", v["next"]);
        if keys.len() > 2 || v.get("next").is_none() {
            return Err(format!(
                "list: expected at most 2 keys and a next field, got {v}"
            ));
        }
        let next = v["next"].as_str().map(str::to_owned);
        seen.extend(keys.iter().cloned());
        match next {
            None => break,
            Some(n) if keys.last() == Some(&n) => after = Some(n),
            Some(_) => {
                return Err(format!(
                    "list: expected next to be the page's last key: {v}"
                ));
            }
        }
    }
    let mut want: Vec<String> = LIST_KEYS.iter().map(|k| k.to_string()).collect();
    want.sort();
    if seen != want || pages != 3 {
        return Err(format!(
            "list: expected {want:?} in 3 pages, got {seen:?} in {pages}"
        ));
    }
    Ok(())
}

// --- 4. watch, disconnect, resume ----------------------------------------------------------------

/// One event stream, its server-sent events parsed by hand.
struct Watch {
    body: Incoming,
    buf: Vec<u8>,
}

/// One event: its `id` (if any), `event` and parsed `data`.
#[derive(Debug)]
struct Event {
    id: Option<String>,
    event: String,
    data: Value,
}

impl Watch {
    async fn open(c: &Client, path: &str, headers: &[(&str, &str)]) -> Result<Watch> {
        let resp = c.send(Method::GET, path, None, headers).await?;
        if resp.status() != 200 {
            return Err(format!("GET {path}: expected 200, got {}", resp.status()));
        }
        Ok(Watch {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }

    /// The next line, without its line ending.
    async fn line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line);
                return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
            }
            let frame = timeout(WATCH_READ_TIMEOUT, self.body.frame())
                .await
                .map_err(|_| format!("watch: no event within {WATCH_READ_TIMEOUT:?}"))?;
            match frame {
                None => return Err("watch: the server ended the stream".into()),
                Some(Err(e)) => return Err(format!("watch: {e}")),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next event; comments (`: watching`, keep-alives) skipped.
    async fn next(&mut self) -> Result<Event> {
        let (mut id, mut event, mut data) = (None, "message".to_owned(), Vec::new());
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data.join("\n"))
                    .map_err(|e| format!("watch: data is not JSON: {e}"))?;
                return Ok(Event { id, event, data });
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => id = Some(value),
                "event" => event = value,
                "data" => data.push(value),
                _ => {}
            }
        }
    }
}

async fn watch_resume(c: &Client) -> Result<()> {
    println!("== watch: start at a revision, disconnect after 2 events, resume with Last-Event-ID");
    let list = format!("/v1/kv/{}?{}", c.bucket, query(&[("prefix", "watch/")]));
    let since = c
        .call(Method::GET, &list, None, &[])
        .await?
        .expect(&[200], "list watch/")?
        .revision("list watch/")?;
    let path = format!(
        "/v1/watch/{}?{}",
        c.bucket,
        query(&[("prefix", "watch/"), ("since", &since.to_string())])
    );
    let mut w = Watch::open(c, &path, &[]).await?;
    let mut written = Vec::new();
    for k in ["watch/one", "watch/two", "watch/three"] {
        let rev = c.put(k, "v", &[]).await?.expect(&[201], k)?.revision(k)?;
        written.push((k.to_owned(), rev));
    }
    let mut got = vec![w.next().await?, w.next().await?];
    drop(w); // disconnect
    let last = got[1]
        .id
        .clone()
        .ok_or_else(|| format!("watch: expected an id on {:?}", got[1]))?;
    println!("watch since={since}: 2 events, last id {last}; reconnecting");
    let path = format!("/v1/watch/{}?{}", c.bucket, query(&[("prefix", "watch/")]));
    let mut w = Watch::open(c, &path, &[("last-event-id", &last)]).await?;
    got.push(w.next().await?);
    let seen: Vec<(String, u64)> = got
        .iter()
        .map(|e| {
            let key = e.data["key"].as_str().unwrap_or_default().to_owned();
            (key, e.data["revision"].as_u64().unwrap_or_default())
        })
        .collect();
    println!("resumed: {} {}", got[2].event, seen[2].0);
    if seen != written || got.iter().any(|e| e.event != "put") {
        return Err(format!(
            "watch: expected puts {written:?} once each, in order; got {seen:?}"
        ));
    }
    Ok(())
}

// --- 5. transaction ------------------------------------------------------------------------------

async fn transaction(c: &Client) -> Result<()> {
    println!("== transaction: move 30 from alice to bob if neither changed");
    let alice = c
        .put("bank/alice", "100", &[])
        .await?
        .expect(&[201], "PUT alice")?
        .etag("alice")?;
    let bob = c
        .put("bank/bob", "50", &[])
        .await?
        .expect(&[201], "PUT bob")?
        .etag("bob")?;
    let b = &c.bucket;
    let txn = json!({
        "if": [{"bucket": b, "key": "bank/alice", "etag": alice},
               {"bucket": b, "key": "bank/bob", "etag": bob}],
        "then": [{"op": "put", "bucket": b, "key": "bank/alice", "value": B64.encode("70")},
                 {"op": "put", "bucket": b, "key": "bank/bob", "value": B64.encode("80")}],
        "else": [{"op": "get", "bucket": b, "key": "bank/alice"},
                 {"op": "get", "bucket": b, "key": "bank/bob"}],
    });
    let body = serde_json::to_vec(&txn).map_err(|e| e.to_string())?;
    let ct = [("content-type", "application/json")];
    let a = c
        .call(Method::POST, "/v1/txn", Some(body.clone()), &ct)
        .await?;
    let res = a.expect(&[200], "POST /v1/txn")?.json("txn")?;
    println!("txn: {res}");
    if res["succeeded"] != json!(true) {
        return Err(format!("txn: expected succeeded:true, got {res}"));
    }
    for (k, v) in [("bank/alice", "70"), ("bank/bob", "80")] {
        let g = c.get(k).await?.expect(&[200], k)?;
        if &g.body[..] != v.as_bytes() {
            return Err(format!("txn: expected {k} = {v}, got {:?}", g.body));
        }
    }
    // The same transaction again: its ETags are now stale, so the else branch runs.
    let a = c.call(Method::POST, "/v1/txn", Some(body), &ct).await?;
    let res = a.expect(&[200], "POST /v1/txn (stale)")?.json("txn")?;
    println!("txn again (stale ETags): {res}");
    let values: Vec<Vec<u8>> = res["results"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| B64.decode(r["value"].as_str()?).ok())
                .collect()
        })
        .unwrap_or_default();
    if res["succeeded"] != json!(false) || values != [b"70".to_vec(), b"80".to_vec()] {
        return Err(format!(
            "txn: expected succeeded:false with 70 and 80, got {res}"
        ));
    }
    Ok(())
}

// --- 6. TTL --------------------------------------------------------------------------------------

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

async fn ttl(c: &Client) -> Result<()> {
    println!("== TTL: a key that lives 1 second");
    let before = now();
    let path = format!("{}?ttl=1", c.key_path("ttl/short"));
    let a = c
        .call(Method::PUT, &path, Some(b"soon gone".to_vec()), &[])
        .await?;
    let a = a.expect(&[201], "PUT ttl=1")?;
    let exp: u64 = a
        .header("micronode-expires-at")
        .and_then(|e| e.parse().ok())
        .filter(|&e| e as f64 >= before + 1.0 && e as f64 <= now() + 3.0)
        .ok_or_else(|| {
            let got = a.header("micronode-expires-at");
            format!("PUT ttl=1: expected Micronode-Expires-At about now + 1 s, got {got:?}")
        })?;
    println!("PUT ttl=1 -> 201, Micronode-Expires-At {exp}");
    loop {
        let g = c
            .get("ttl/short")
            .await?
            .expect(&[200, 404], "GET ttl/short")?;
        if g.status == 404 {
            println!("GET after expiry -> 404 (at {:.1}, expiry {exp})", now());
            return Ok(());
        }
        if now() > exp as f64 + 3.0 {
            return Err(format!(
                "TTL: expected 404 from {exp} on, still 200 at {:.1}",
                now()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn tour(c: Arc<Client>) -> Result<()> {
    put_and_get(&c).await?;
    compare_and_set(c.clone()).await?;
    list_paging(&c).await?;
    watch_resume(&c).await?;
    transaction(&c).await?;
    ttl(&c).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let c = match Client::from_env() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let token = if c.token.is_some() { "set" } else { "not set" };
    println!(
        "server http://{}{}, bucket {}, token {token}",
        c.authority, c.prefix, c.bucket
    );
    match timeout(TOTAL_BOUND, tour(c)).await {
        Ok(Ok(())) => {
            println!("client: OK");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("client: FAILED: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("client: FAILED: not done within {TOTAL_BOUND:?}");
            ExitCode::FAILURE
        }
    }
}
