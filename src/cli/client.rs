//! The HTTP client every client command (`kv`, `txn`, `snapshot save`) shares: the common
//! flags ([`ClientArgs`]), one HTTP/1.1 connection per command (plain TCP, or TLS with the CA
//! given by `--cacert`), the 10 s bound on connect + answer, and the one mapping from a failed
//! answer to a message and an exit code ([`Failure`]).
//!
//! A command builds a [`Client`], then runs its async body with [`Client::block_on`] on a
//! current-thread runtime: one command, one connection, no thread pool.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Bound on connecting (TCP + TLS) plus receiving the whole answer; a watch stream is bounded
/// on connecting only.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// The flags every client command takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    /// Server URL (`http://` or `https://`, optionally with a path prefix).
    #[arg(
        long,
        env = "MICRONODE_URL",
        default_value = "http://127.0.0.1:5310",
        global = true
    )]
    url: String,
    /// Bearer token sent as `Authorization: Bearer …` (never printed).
    #[arg(long, env = "MICRONODE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// PEM CA certificate(s) that signed the server's certificate (needed for https URLs).
    #[arg(long, value_name = "FILE", global = true)]
    cacert: Option<PathBuf>,
}

/// Why a command failed: the one line printed after `micronode: `, and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
}

impl Failure {
    /// Exit 1 with `message`.
    pub(crate) fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }

    /// Prints the message to stderr; the exit code.
    pub(crate) fn report(self) -> ExitCode {
        eprintln!("micronode: {}", self.message);
        ExitCode::from(self.code)
    }
}

/// Where the server is.
#[derive(Debug, Clone)]
struct Target {
    tls: bool,
    /// Host as written in the URL (`[::1]` keeps its brackets), for `Host`.
    authority: String,
    /// Host without brackets, for connecting and for the TLS server name.
    host: String,
    port: u16,
    /// Path prefix without a trailing `/` (empty for none).
    prefix: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Failure> {
        let bad = |why: &str| Failure::new(format!("invalid --url {url:?}: {why}"));
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => return Err(bad("the scheme must be http or https")),
            None => return Err(bad("missing http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info is not supported (use --token)"));
        }
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Ok(Target {
            tls,
            authority: authority.as_str().to_owned(),
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// A connected-on-demand client for one server.
#[derive(Debug)]
pub(crate) struct Client {
    target: Target,
    auth: Option<HeaderValue>,
    tls: Option<Arc<rustls::ClientConfig>>,
    rt: tokio::runtime::Runtime,
}

/// A 2xx answer whose body is still to be read.
pub(crate) struct Streaming {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Incoming,
}

/// A complete 2xx answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    /// A header as text, if present and visible ASCII.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request to send: method, path (with query) below the URL's prefix, extra headers and a
/// body.
pub(crate) struct Call {
    method: Method,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Call {
    pub(crate) fn new(method: Method, path: String) -> Call {
        Call {
            method,
            path,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header; a value that is not a valid header value is a command-line error.
    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Result<Call, Failure> {
        let v = HeaderValue::from_str(value)
            .map_err(|_| Failure::new(format!("invalid {name} value {value:?}")))?;
        self.headers.push((name, v));
        Ok(self)
    }

    pub(crate) fn body(mut self, body: impl Into<Bytes>) -> Call {
        self.body = body.into();
        self
    }

    pub(crate) fn json(self, body: impl Into<Bytes>) -> Call {
        let mut c = self.body(body);
        c.headers
            .push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
        c
    }
}

type BoxedIo = Pin<Box<dyn Io>>;
trait Io: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Io for T {}

impl Client {
    pub(crate) fn new(args: &ClientArgs) -> Result<Client, Failure> {
        let target = Target::parse(&args.url)?;
        let auth = match &args.token {
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                    .map_err(|_| Failure::new("the token has characters a header cannot carry"))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let tls = match (target.tls, &args.cacert) {
            (false, _) => None,
            (true, None) => {
                return Err(Failure::new(format!(
                    "{} is an https URL: pass --cacert FILE with the CA certificate that \
                     signed the server's certificate",
                    args.url
                )));
            }
            (true, Some(path)) => Some(tls_config(path)?),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::new(format!("cannot start the runtime: {e}")))?;
        Ok(Client {
            target,
            auth,
            tls,
            rt,
        })
    }

    /// Runs a command's async body to completion.
    pub(crate) fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        self.rt.block_on(fut)
    }

    /// Sends `call` and reads the whole answer, all within [`TIMEOUT`]. A non-2xx answer is a
    /// [`Failure`] carrying the server's message.
    pub(crate) async fn send(&self, call: Call) -> Result<Answer, Failure> {
        tokio::time::timeout(TIMEOUT, async {
            let s = self.open(call).await?;
            let body = s
                .body
                .collect()
                .await
                .map_err(|e| Failure::new(format!("reading the answer failed: {e}")))?
                .to_bytes();
            Ok(Answer {
                status: s.status,
                headers: s.headers,
                body,
            })
        })
        .await
        .unwrap_or_else(|_| Err(self.timed_out()))
    }

    /// Sends `call`; the 2xx answer with its body still to be read. Only connecting is bounded
    /// (by [`TIMEOUT`]); a caller that wants the head bounded too wraps this in a timeout.
    pub(crate) async fn open(&self, call: Call) -> Result<Streaming, Failure> {
        let io = tokio::time::timeout(TIMEOUT, self.connect())
            .await
            .unwrap_or_else(|_| Err(self.timed_out()))?;
        let (mut sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| self.unreachable(&e))?;
        // The connection task ends when the answer is read or the command exits.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(call.method)
            .uri(format!("{}{}", self.target.prefix, call.path))
            .body(Full::new(call.body))
            .map_err(|e| Failure::new(format!("cannot build the request: {e}")))?;
        let headers = req.headers_mut();
        headers.insert(
            HOST,
            HeaderValue::from_str(&self.target.authority)
                .map_err(|_| Failure::new("the URL's host is not a valid Host header"))?,
        );
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        for (k, v) in call.headers {
            headers.append(k, v);
        }
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.unreachable(&e))?;
        let (parts, body) = resp.into_parts();
        if !parts.status.is_success() {
            // The envelope is small; bound the read anyway, the server may be something else.
            let bytes = tokio::time::timeout(TIMEOUT, body.collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(api_failure(parts.status, &bytes));
        }
        Ok(Streaming {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    async fn connect(&self) -> Result<BoxedIo, Failure> {
        let t = &self.target;
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| self.unreachable(&e))?;
        let _ = tcp.set_nodelay(true);
        let Some(cfg) = &self.tls else {
            return Ok(Box::pin(tcp));
        };
        let name = ServerName::try_from(t.host.clone())
            .map_err(|_| Failure::new(format!("{:?} is not a valid TLS server name", t.host)))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| Failure::new(format!("TLS handshake with {} failed: {e}", t.authority)))?;
        Ok(Box::pin(tls))
    }

    fn unreachable(&self, e: &dyn std::fmt::Display) -> Failure {
        Failure::new(format!("cannot reach {}: {e}", self.url()))
    }

    fn timed_out(&self) -> Failure {
        Failure::new(format!(
            "no answer from {} within {} s",
            self.url(),
            TIMEOUT.as_secs()
        ))
    }

    fn url(&self) -> String {
        let scheme = if self.target.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.target.authority, self.target.prefix)
    }
}

/// A client TLS configuration trusting only the CA certificates in `path`.
fn tls_config(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, Failure> {
    let bad = |why: String| Failure::new(format!("--cacert {}: {why}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".to_owned()));
    }
    for c in certs {
        roots.add(c).map_err(|e| bad(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The failure for a non-2xx answer: the envelope's `message (code)`, or the status when the
/// body is not an envelope (a proxy in between).
fn api_failure(status: StatusCode, body: &[u8]) -> Failure {
    #[derive(serde::Deserialize)]
    struct Envelope {
        code: String,
        message: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(e) => Failure::new(format!("{} ({})", e.message, e.code)),
        Err(_) => Failure::new(format!("the server answered {status}")),
    }
}

/// Percent-encodes a key for a path: `/` stays (it separates segments), everything outside
/// the unreserved set is `%XX`.
pub(crate) fn encode_path(key: &str) -> String {
    encode(key, b"/")
}

/// Percent-encodes a query value (every byte outside the unreserved set, `+` included).
pub(crate) fn encode_query(value: &str) -> String {
    encode(value, b"")
}

fn encode(s: &str, keep: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep.contains(&b)
        {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_targets() {
        let t = Target::parse("http://127.0.0.1:5310").expect("plain");
        assert_eq!((t.tls, t.host.as_str(), t.port), (false, "127.0.0.1", 5310));
        assert_eq!(t.prefix, "");
        let t = Target::parse("https://[::1]/kv/").expect("v6 with prefix");
        assert_eq!((t.tls, t.host.as_str(), t.port), (true, "::1", 443));
        assert_eq!((t.authority.as_str(), t.prefix.as_str()), ("[::1]", "/kv"));
        for bad in [
            "127.0.0.1:5310",
            "ftp://x",
            "http://",
            "http://a/?q=1",
            "not a url",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_and_query_values_are_percent_encoded() {
        assert_eq!(encode_path("a b/c+d%é"), "a%20b/c%2Bd%25%C3%A9");
        assert_eq!(encode_query("a/b c+"), "a%2Fb%20c%2B");
    }

    #[test]
    fn envelopes_become_one_line() {
        let f = api_failure(
            StatusCode::PRECONDITION_FAILED,
            br#"{"code":"precondition_failed","message":"precondition failed","retryable":false,"request_id":"x"}"#,
        );
        assert_eq!(f.message, "precondition failed (precondition_failed)");
        let f = api_failure(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(f.message, "the server answered 502 Bad Gateway");
    }
}
