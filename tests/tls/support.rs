//! Helpers of the TLS suite: a test PKI made with rcgen, a TLS server in this process or as a
//! child process, and a rustls client with chosen key-exchange groups, versions, ALPN and
//! client certificate that speaks HTTP/1.1 or HTTP/2 through hyper.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use micronode::app::App;
use micronode::config::Config;
use micronode::tls::Tls;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::crypto::SupportedKxGroup;
use rustls::crypto::aws_lc_rs::{self as provider, kx_group};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, NamedGroup, RootCertStore, SupportedProtocolVersion};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Longest a test waits for anything; bounds every poll loop and network call.
pub const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// PKI

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM text and DER.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Pair {
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.der.clone()]
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("our key parses")
    }

    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, &self.cert_pem).expect("write cert");
        std::fs::write(&k, &self.key_pem).expect("write key");
        (c, k)
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA cert"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).expect("CA is a root");
        roots
    }

    /// A server certificate for `localhost` and 127.0.0.1, valid until `not_after_year`.
    pub fn server(&self, cn: &str, not_after_year: i32) -> Pair {
        self.leaf(
            cn,
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            not_after_year,
        )
    }

    /// A client certificate with this common name.
    pub fn client(&self, cn: &str) -> Pair {
        self.leaf(cn, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, 2040)
    }

    fn leaf(
        &self,
        cn: &str,
        sans: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
        not_after_year: i32,
    ) -> Pair {
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// Unix seconds of 1 January of `year` (what `Ca::server` sets notAfter to).
pub fn jan1(year: i32) -> i64 {
    let days = (1970..year)
        .map(|y| {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                366
            } else {
                365
            }
        })
        .sum::<i64>();
    days * 86_400
}

// ---------------------------------------------------------------------------------------------
// Servers

/// A TLS server running in this process on its own runtime thread.
pub struct TlsServer {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub tls: Arc<Tls>,
    pub ca: Ca,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsServer {
    /// Starts a mem-engine server with a fresh CA and server certificate, and `env` on top
    /// (as the binary would read it). `client_ca`: require client certificates from it.
    pub fn start(env: &[(&str, &str)], client_ca: Option<&Ca>) -> TlsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("micronode test CA");
        let (cert, key) = ca.server("server", 2040).write(dir.path());
        let mut map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert("MICRONODE_STORAGE_ENGINE".into(), "mem".into());
        map.insert("MICRONODE_TLS_CERT".into(), cert.display().to_string());
        map.insert("MICRONODE_TLS_KEY".into(), key.display().to_string());
        if let Some(client_ca) = client_ca {
            let p = dir.path().join("client-ca.pem");
            std::fs::write(&p, client_ca.pem()).expect("write client CA");
            map.insert("MICRONODE_TLS_CLIENT_CA".into(), p.display().to_string());
        }
        let cfg = Config::load(None, |k| map.get(k).cloned()).expect("test config is valid");
        let app = micronode::build_app(cfg).expect("store opens");
        let tls = Tls::load(&app.cfg.tls, Arc::clone(&app.metrics)).expect("TLS files load");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (run_app, transport) = (Arc::clone(&app), tls.transport());
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
                micronode::server::run_with(listener, run_app, transport, async {
                    let _ = stop_rx.await;
                })
                .await;
            });
        });
        let addr = addr_rx.recv_timeout(WAIT).expect("server bound");
        TlsServer {
            addr,
            app,
            tls,
            ca,
            dir,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// A client trusting this server's CA, with every group and version, offering `alpn`.
    pub fn client(&self, alpn: Alpn) -> ClientOpts {
        ClientOpts::new(self.ca.roots()).alpn(alpn)
    }

    /// Handshakes counted with this outcome (`version`, `group` as labels).
    pub fn handshakes(&self, ok: bool, version: &str, group: &str) -> u64 {
        let text = self.app.metrics.render(&self.app.gauges());
        let series = format!(
            "micronode_tls_handshakes_total{{group=\"{group}\",result=\"{}\",version=\"{version}\"}} ",
            if ok { "ok" } else { "error" }
        );
        metric_value(&text, &series).expect("series is prewarmed") as u64
    }

    /// Failed handshakes.
    pub fn failures(&self) -> u64 {
        self.handshakes(false, "none", "none")
    }

    /// Waits until failed handshakes reach `n` (a dropped handshake is counted as its task
    /// ends, just after the client sees the close).
    pub async fn await_failures(&self, n: u64) {
        poll(&format!("{n} failed handshakes"), || {
            (self.failures() >= n).then_some(())
        })
        .await;
        assert_eq!(self.failures(), n, "exactly {n} failed handshakes");
    }

    /// The server still completes a handshake and answers `/healthz`.
    pub async fn still_serves(&self) {
        let mut c = Http::open(self.addr, self.client(Alpn::H1).config())
            .await
            .expect("a fresh handshake works");
        assert_eq!(c.get("/healthz").await.0, 200);
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The value of the first line starting with `series` (name and labels, then a space).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `f` every 10 ms until it returns `Some`, for at most [`WAIT`].
pub async fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The real binary as a child process, serving TLS.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_micronode")
}

impl ChildServer {
    /// Starts the binary with `env` (plus loopback port 0, the mem engine and JSON logs) and
    /// waits until it logs its bound address.
    pub fn start(env: &[(&str, &str)]) -> ChildServer {
        let mut cmd = Command::new(binary());
        cmd.env_clear()
            .env("MICRONODE_BIND_ADDR", "127.0.0.1:0")
            .env("MICRONODE_STORAGE_ENGINE", "mem")
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
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(a) = v["fields"]["addr"]
                        .as_str()
                        .or(v["addr"].as_str())
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                {
                    let _ = addr_tx.send(a);
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let Ok(addr) = addr_rx.recv_timeout(WAIT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server did not report its address; stderr: {}",
                stderr.lock().map(|s| s.clone()).unwrap_or_default()
            );
        };
        ChildServer {
            child,
            addr,
            stderr,
        }
    }

    /// Sends a real signal with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion; returns exit code, stdout, stderr.
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run micronode");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Clients

/// Which application protocol the client offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H1,
    H2,
}

/// Key-exchange groups a test client offers, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    HybridOnly,
    X25519Only,
    Both,
}

impl Offer {
    pub const ALL: [Offer; 3] = [Offer::HybridOnly, Offer::X25519Only, Offer::Both];

    fn groups(self) -> Vec<&'static dyn SupportedKxGroup> {
        match self {
            Offer::HybridOnly => vec![kx_group::X25519MLKEM768],
            Offer::X25519Only => vec![kx_group::X25519],
            Offer::Both => vec![kx_group::X25519MLKEM768, kx_group::X25519],
        }
    }
}

/// How a test client is built.
#[derive(Clone)]
pub struct ClientOpts {
    roots: RootCertStore,
    groups: Vec<&'static dyn SupportedKxGroup>,
    versions: Vec<&'static SupportedProtocolVersion>,
    alpn: Vec<Vec<u8>>,
    cert: Option<(Vec<CertificateDer<'static>>, String)>,
}

impl ClientOpts {
    pub fn new(roots: RootCertStore) -> ClientOpts {
        ClientOpts {
            roots,
            groups: provider::default_provider().kx_groups,
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            alpn: vec![b"http/1.1".to_vec()],
            cert: None,
        }
    }

    pub fn alpn(mut self, alpn: Alpn) -> Self {
        self.alpn = vec![match alpn {
            Alpn::H1 => b"http/1.1".to_vec(),
            Alpn::H2 => b"h2".to_vec(),
        }];
        self
    }

    pub fn offer(mut self, offer: Offer) -> Self {
        self.groups = offer.groups();
        self
    }

    pub fn groups(mut self, groups: Vec<&'static dyn SupportedKxGroup>) -> Self {
        self.groups = groups;
        self
    }

    pub fn tls12_only(mut self) -> Self {
        self.versions = vec![&rustls::version::TLS12];
        self
    }

    pub fn client_cert(mut self, pair: &Pair) -> Self {
        self.cert = Some((pair.chain(), pair.key_pem.clone()));
        self
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        let mut p = provider::default_provider();
        p.kx_groups = self.groups.clone();
        let builder = ClientConfig::builder_with_provider(Arc::new(p))
            .with_protocol_versions(&self.versions)
            .expect("versions are supported")
            .with_root_certificates(self.roots.clone());
        let mut cfg = match &self.cert {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(
                    chain.clone(),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
                )
                .expect("client cert"),
        };
        cfg.alpn_protocols = self.alpn.clone();
        // Every connection a full handshake.
        cfg.resumption = rustls::client::Resumption::disabled();
        Arc::new(cfg)
    }
}

/// Connects and completes a TLS handshake with `localhost` as the server name.
pub async fn connect(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").expect("valid name");
        TlsConnector::from(cfg).connect(name, tcp).await
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("handshake timed out")))
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One HTTP connection over TLS, kept alive across requests.
pub struct Http {
    sender: Sender,
    pub group: Option<NamedGroup>,
    pub version: Option<rustls::ProtocolVersion>,
    pub alpn: Option<Vec<u8>>,
    /// The server's leaf certificate.
    pub leaf: CertificateDer<'static>,
}

impl Http {
    /// Handshakes, then speaks the protocol ALPN chose (HTTP/1.1 when none).
    pub async fn open(addr: SocketAddr, cfg: Arc<ClientConfig>) -> std::io::Result<Http> {
        let tls = connect(addr, cfg).await?;
        let session = tls.get_ref().1;
        let group = session.negotiated_key_exchange_group().map(|g| g.name());
        let version = session.protocol_version();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let leaf = session
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("server sent a certificate")
            .clone()
            .into_owned();
        let io = TokioIo::new(tls);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H2(send)
        } else {
            let (send, conn) = http1::handshake(io).await.map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H1(send)
        };
        Ok(Http {
            sender,
            group,
            version,
            alpn,
            leaf,
        })
    }

    pub async fn get(&mut self, path: &str) -> (u16, Bytes, Version) {
        self.request("GET", path, Bytes::new()).await
    }

    /// Sends one request; returns status, body and the HTTP version of the answer.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> (u16, Bytes, Version) {
        self.try_request(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Like [`Http::request`], but a failed exchange is an error, not a panic.
    pub async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<(u16, Bytes, Version), String> {
        let fut = async {
            let uri = match self.sender {
                Sender::H1(_) => path.to_owned(),
                Sender::H2(_) => format!("https://localhost{path}"),
            };
            let mut req = Request::builder().method(method).uri(uri);
            if matches!(self.sender, Sender::H1(_)) {
                req = req.header("host", "localhost");
            }
            let req = req
                .header("content-length", body.len())
                .body(Full::new(body))
                .expect("valid request");
            // Wait until the connection can take the next request (on HTTP/1 the previous
            // exchange may still be finishing), then send.
            let resp = match &mut self.sender {
                Sender::H1(s) => match s.ready().await {
                    Ok(()) => s.send_request(req).await,
                    Err(e) => Err(e),
                },
                Sender::H2(s) => match s.ready().await {
                    Ok(()) => s.send_request(req).await,
                    Err(e) => Err(e),
                },
            }
            .map_err(|e| format!("request: {e}"))?;
            let (status, version) = (resp.status().as_u16(), resp.version());
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok((status, body, version))
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .map_err(|_| "no answer in time".to_owned())?
    }
}

/// Reads until the peer closes (or errors); bounded by [`WAIT`].
pub async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("peer did not close within {WAIT:?}; read {out:?}"),
        }
    }
}
