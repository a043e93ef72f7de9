//! Shared test helpers, each written once:
//!
//! - [`Server`]: the handle of a running server, either in this process ([`TestServer`]) or the
//!   real binary as a child process ([`ChildServer`]). The handle owns the server's temp dir
//!   (unless a test keeps the directory itself to restart on it), stops the server when dropped
//!   and then removes the dir, and offers the same client calls for both kinds: [`Server::get`],
//!   [`Server::request`], [`Server::metric`], [`Server::still_serves`].
//! - [`Conn`], [`request`], [`Response`]: a small blocking HTTP/1.1 client that speaks bytes
//!   over TCP, so tests send exactly what a client — or an attacker — would; [`status_of`] is
//!   the one status-line parser.
//! - [`Scrape`], [`metric`]: the one `/metrics` parser.
//! - [`poll`]: the one bounded wait.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micronode::app::App;
use micronode::config::Config;

/// Longest a test waits for anything before failing; bounds every poll loop.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running server of kind `K` ([`InProcess`] or [`Process`]) listening on loopback.
pub struct Server<K> {
    pub addr: SocketAddr,
    // Field order is drop order: the server stops before its directory is removed.
    kind: K,
    dir: Workdir,
}

/// A server running in this process on its own runtime thread.
pub type TestServer = Server<InProcess>;

/// The real binary, running as a child process.
pub type ChildServer = Server<Process>;

/// Where a server keeps its files.
enum Workdir {
    /// A fresh temp dir that lives and dies with the handle.
    Owned(tempfile::TempDir),
    /// A directory the test keeps, so that a later server can reopen what this one wrote.
    Kept(PathBuf),
}

impl Workdir {
    fn fresh() -> Workdir {
        Workdir::Owned(tempfile::tempdir().expect("temp dir"))
    }

    fn path(&self) -> &Path {
        match self {
            Workdir::Owned(d) => d.path(),
            Workdir::Kept(p) => p,
        }
    }
}

/// What every server handle offers, whatever runs the server.
impl<K> Server<K> {
    /// The server's working directory (its data lives below it unless the env says otherwise).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// One request on a fresh connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        request(self.addr, method, path, headers, body)
    }

    /// `GET path` on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], None)
    }

    /// One scrape of `/metrics`.
    pub fn scrape(&self) -> Scrape {
        Scrape::new(self.get("/metrics").text())
    }

    /// The value of one exact series (`name` or `name{labels}`); fails the test when the
    /// series is absent, so a renamed series cannot read as 0.
    pub fn metric(&self, series: &str) -> f64 {
        self.scrape().value(series)
    }

    /// Asserts `/healthz` answers 200 on a fresh connection (the server survived whatever the
    /// test did to it).
    pub fn still_serves(&self) {
        assert_eq!(
            self.get("/healthz").status,
            200,
            "/healthz on a fresh connection"
        );
    }
}

/// The in-process kind: the app, and how to stop its runtime thread.
pub struct InProcess {
    app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server<InProcess> {
    /// Starts with the given environment (as the binary would see it) on a sled store in a
    /// fresh temp dir owned by the handle, unless the env says otherwise.
    pub fn start(env: &[(&str, &str)]) -> TestServer {
        let dir = Workdir::fresh();
        let mut map: std::collections::HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert("MICRONODE_BIND_ADDR".into(), "127.0.0.1:0".into());
        map.entry("MICRONODE_STORAGE_PATH".into())
            .or_insert_with(|| dir.path().join("data").display().to_string());
        let cfg = Config::load(None, |k| map.get(k).cloned()).expect("test config is valid");
        let app = micronode::build_app(cfg).expect("store opens");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run_app = Arc::clone(&app);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind loopback");
                addr_tx
                    .send(listener.local_addr().expect("local addr"))
                    .expect("test thread waits for the address");
                micronode::server::run(listener, run_app, async {
                    let _ = stop_rx.await;
                })
                .await;
            });
        });
        let addr = addr_rx.recv_timeout(WAIT).expect("server bound");
        Server {
            addr,
            kind: InProcess {
                app,
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            dir,
        }
    }

    pub fn app(&self) -> &Arc<App> {
        &self.kind.app
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The child-process kind: the process and everything it wrote to stderr.
pub struct Process {
    child: std::process::Child,
    stderr: Arc<Mutex<String>>,
    /// Set once the stderr reader has seen the end of the pipe: the logs are complete.
    stderr_done: Arc<std::sync::atomic::AtomicBool>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_micronode")
}

impl Server<Process> {
    /// Starts the binary with `env` in a fresh temp dir owned by the handle (its working
    /// directory, so the default data directory lands there too).
    pub fn spawn(env: &[(&str, &str)]) -> ChildServer {
        Self::boot(env, Workdir::fresh())
    }

    /// Starts the binary with `env` in `cwd`, a directory the test keeps: a later server on the
    /// same directory reopens what this one wrote.
    pub fn start(env: &[(&str, &str)], cwd: &Path) -> ChildServer {
        Self::boot(env, Workdir::Kept(cwd.to_path_buf()))
    }

    /// Starts the binary (plus loopback port 0 and JSON logs) and waits until it logs its
    /// bound address and answers `/healthz`.
    fn boot(env: &[(&str, &str)], dir: Workdir) -> ChildServer {
        let mut cmd = Command::new(binary());
        cmd.current_dir(dir.path())
            .env_clear()
            .env("MICRONODE_BIND_ADDR", "127.0.0.1:0")
            .env("MICRONODE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn micronode");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        let stderr_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::clone(&stderr_done);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(a) = v["addr"].as_str().and_then(|a| a.parse().ok()) {
                        let _ = addr_tx.send(a);
                    }
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        // From here on the handle owns the process: a failed boot kills it on drop.
        let mut server = Server {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            kind: Process {
                child,
                stderr,
                stderr_done,
            },
            dir,
        };
        server.addr = match addr_rx.recv_timeout(WAIT) {
            Ok(a) => a,
            Err(_) => panic!(
                "server did not report its address; stderr: {}",
                server.logs()
            ),
        };
        let addr = server.addr;
        poll("/healthz", || {
            TcpStream::connect(addr)
                .ok()
                .map(|_| request(addr, "GET", "/healthz", &[], None))
                .filter(|r| r.status == 200)
        });
        server
    }

    pub fn pid(&self) -> u32 {
        self.kind.child.id()
    }

    /// Sends a real signal (`TERM`, `INT`, `KILL`, …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let child = &mut self.kind.child;
        let status = try_poll(|| child.try_wait().expect("try_wait"));
        match status {
            Some(status) => {
                // The process is gone; its last log lines may still be in the pipe.
                let done = &self.kind.stderr_done;
                try_poll(|| {
                    done.load(std::sync::atomic::Ordering::Acquire)
                        .then_some(())
                });
                status.code()
            }
            None => {
                let _ = self.kind.child.kill();
                panic!("server did not exit in time; stderr: {}", self.logs());
            }
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.kind
            .stderr
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the error envelope of docs/API.md: status, code, retryable, a message, and the
    /// request id echoed from the `x-request-id` header.
    pub fn assert_error(&self, status: u16, code: &str, retryable: bool) {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(v["retryable"], retryable, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        let rid = self.header("x-request-id").expect("x-request-id header");
        assert_eq!(v["request_id"], rid, "{v}");
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    pub reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        Conn {
            reader: BufReader::new(s),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        self.send(&build_request(method, path, headers, body));
        self.read_response(method == "HEAD").expect("response")
    }

    /// Reads one response; `head_only` for answers to HEAD.
    pub fn read_response(&mut self, head_only: bool) -> std::io::Result<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let status = status_of(&line);
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').expect("header line has a colon");
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let no_body = head_only || status == 204 || status == 304 || status < 200;
        if !no_body {
            let len: usize = resp
                .header("content-length")
                .map(|v| v.parse().expect("numeric content-length"))
                .unwrap_or(0);
            let mut body = vec![0; len];
            self.reader.read_exact(&mut body)?;
            resp.body = body;
        }
        Ok(resp)
    }

    /// True when the server closed the connection (EOF) within `WAIT`.
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0))
    }
}

pub fn build_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            req.push_str(&format!("content-length: {}\r\n", b.len()));
        }
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

/// One request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    Conn::open(addr).request(method, path, headers, body)
}

/// The status code of an HTTP/1 status line (or of a whole answer that starts with one);
/// fails the test on anything else.
pub fn status_of(answer: &str) -> u16 {
    let mut words = answer.split_whitespace();
    words
        .next()
        .filter(|v| v.starts_with("HTTP/"))
        .and(words.next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// One scrape of `/metrics`: the text, read by series.
pub struct Scrape {
    text: String,
}

impl Scrape {
    pub fn new(text: String) -> Scrape {
        Scrape { text }
    }

    /// Every sample line as (series, value); comments and blank lines skipped.
    pub fn samples(&self) -> impl Iterator<Item = (&str, f64)> {
        self.text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("sample line without a value: {l:?}"));
                let value = value
                    .parse()
                    .unwrap_or_else(|_| panic!("non-numeric sample: {l:?}"));
                (series, value)
            })
    }

    /// The value of one exact series (`name` or `name{labels}` as exposed), if present.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples().find(|(s, _)| *s == series).map(|(_, v)| v)
    }

    /// The value of one exact series; fails the test when it is absent.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no series {series} in /metrics"))
    }

    /// The sum of every series that starts with `prefix` (e.g. one method and route over
    /// every status).
    pub fn sum(&self, prefix: &str) -> f64 {
        self.samples()
            .filter(|(s, _)| s.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// How many series there are.
    pub fn series_count(&self) -> usize {
        self.samples().count()
    }
}

/// One exact series of `/metrics` at `addr`, read on a fresh connection (`None` when absent).
pub fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    Scrape::new(request(addr, "GET", "/metrics", &[], None).text()).get(series)
}

/// How many sample lines `/metrics` has (its series count), read on `c`.
pub fn series_count(c: &mut Conn) -> usize {
    Scrape::new(c.request("GET", "/metrics", &[], None).text()).series_count()
}

/// Resident memory of a process, in KiB (0 if it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `WAIT`; `None` past that.
fn try_poll<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` until it returns `Some`, for at most `WAIT`; fails the test past that.
pub fn poll<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    try_poll(f).unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// Runs the binary to completion (config checks); returns exit code, stdout, stderr.
pub fn run_binary(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> (i32, String, String) {
    let (code, stdout, stderr) = run_binary_with(args, env, cwd, None);
    (code, String::from_utf8_lossy(&stdout).into_owned(), stderr)
}

/// Runs the binary to completion with `stdin` fed to it (`None`: no stdin at all); returns
/// exit code, stdout as raw bytes (client commands print values unchanged), stderr.
pub fn run_binary_with(
    args: &[&str],
    env: &[(&str, &str)],
    cwd: &Path,
    stdin: Option<&[u8]>,
) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run micronode");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        // A writer thread, so a child that prints before reading everything cannot deadlock.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let out = child.wait_with_output().expect("wait for micronode");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One item of a server-sent event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SseItem {
    /// A `: text` line (`watching`, `keep-alive`).
    Comment(String),
    /// An event: its `id:` (when it had one), `event:` and `data:` parsed as JSON.
    Event {
        id: Option<u64>,
        event: String,
        data: serde_json::Value,
    },
}

/// An open `text/event-stream` answer over HTTP/1.1 on a raw TCP connection, read item by
/// item. The read timeout (`WAIT`) is only a safety bound: a test never waits on it for
/// readiness.
pub struct Sse {
    pub head: Response,
    conn: Conn,
    chunked: bool,
    /// Decoded body bytes not yet parsed into items.
    pending: Vec<u8>,
    ended: bool,
}

impl Sse {
    /// Sends `GET path` and reads the answer's head: `Ok` for a 200 stream, `Err` with the
    /// whole answer otherwise (410, 429, 400 …).
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Sse, Response> {
        let mut conn = Conn::open(addr);
        conn.send(&build_request("GET", path, headers, None));
        let head = conn.read_response(false).expect("watch answer head");
        if head.status != 200 {
            return Err(head);
        }
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        Ok(Sse {
            head,
            conn,
            chunked,
            pending: Vec::new(),
            ended: false,
        })
    }

    /// The connection, to leave it unread (a stalled client).
    pub fn stream(&self) -> &TcpStream {
        self.conn.reader.get_ref()
    }

    /// Reads more body bytes into `pending`; false at the end of the stream.
    fn fill(&mut self) -> bool {
        if self.ended {
            return false;
        }
        let r = &mut self.conn.reader;
        if !self.chunked {
            let mut buf = [0u8; 16 * 1024];
            match r.read(&mut buf) {
                Ok(0) | Err(_) => {
                    self.ended = true;
                    false
                }
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    true
                }
            }
        } else {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                self.ended = true;
                return false;
            }
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                self.ended = true;
                return false;
            }
            let mut chunk = vec![0u8; size + 2];
            if r.read_exact(&mut chunk).is_err() {
                self.ended = true;
                return false;
            }
            chunk.truncate(size);
            self.pending.extend_from_slice(&chunk);
            true
        }
    }

    /// The next comment or event; `None` once the stream ends (or the safety bound passes).
    pub fn next_item(&mut self) -> Option<SseItem> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("event stream is UTF-8");
                return Some(parse_sse_block(text.trim_end_matches('\n')));
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The next event, skipping comments.
    pub fn next_event(&mut self) -> Option<SseItem> {
        loop {
            match self.next_item()? {
                SseItem::Comment(_) => continue,
                e => return Some(e),
            }
        }
    }
}

/// One blank-line-terminated block of an event stream (without its final blank line).
pub fn parse_sse_block(block: &str) -> SseItem {
    if let Some(c) = block.strip_prefix(':') {
        assert!(!c.contains('\n'), "one comment per block: {block:?}");
        return SseItem::Comment(c.trim().to_owned());
    }
    let (mut id, mut event, mut data) = (None, None, None);
    for line in block.lines() {
        let (field, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("bad event line {line:?}"));
        match field {
            "id" => id = Some(value.parse().expect("numeric id")),
            "event" => event = Some(value.to_owned()),
            "data" => data = Some(serde_json::from_str(value).expect("JSON data")),
            other => panic!("unexpected field {other:?} in {block:?}"),
        }
    }
    SseItem::Event {
        id,
        event: event.unwrap_or_else(|| panic!("event without event: {block:?}")),
        data: data.unwrap_or_else(|| panic!("event without data: {block:?}")),
    }
}

/// A random transfer for the bank-invariant tests: `(from, to, amount)` with `from != to`,
/// both below `accounts`, amount 1–30; `rng` is an xorshift state (never 0).
pub fn pick_transfer(rng: &mut u64, accounts: usize) -> (usize, usize, u64) {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let n = accounts as u64;
    let from = (next() % n) as usize;
    let to = (from + 1 + (next() % (n - 1)) as usize) % accounts;
    (from, to, next() % 30 + 1)
}
