//! Wire-level types every layer shares: the request methods we tell apart, the request body
//! type of the pipeline, and the request id header. A leaf: it imports nothing of the crate.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Method;
use http::header::HeaderName;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

/// The request id header, echoed on every answer and carried by every log line.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request methods we label metrics with; anything else is `Other`, so an attacker cannot
/// create series by inventing methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Other,
}

impl Verb {
    pub const COUNT: usize = 8;
    pub const ALL: [Verb; Verb::COUNT] = [
        Verb::Get,
        Verb::Head,
        Verb::Post,
        Verb::Put,
        Verb::Delete,
        Verb::Patch,
        Verb::Options,
        Verb::Other,
    ];

    pub fn of(m: &Method) -> Verb {
        match *m {
            Method::GET => Verb::Get,
            Method::HEAD => Verb::Head,
            Method::POST => Verb::Post,
            Method::PUT => Verb::Put,
            Method::DELETE => Verb::Delete,
            Method::PATCH => Verb::Patch,
            Method::OPTIONS => Verb::Options,
            _ => Verb::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Head => "HEAD",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Delete => "DELETE",
            Verb::Patch => "PATCH",
            Verb::Options => "OPTIONS",
            Verb::Other => "OTHER",
        }
    }

    /// Methods whose requests carry a body and so must declare its length.
    pub fn needs_length(self) -> bool {
        matches!(self, Verb::Post | Verb::Put | Verb::Patch)
    }
}

/// The request body type of the pipeline: hyper's stream in the server, a buffer in the
/// in-process benches. An enum rather than a box, so no allocation per request.
#[derive(Debug)]
pub enum RequestBody {
    Incoming(Incoming),
    Buffered(Full<Bytes>),
}

impl From<Incoming> for RequestBody {
    fn from(b: Incoming) -> Self {
        RequestBody::Incoming(b)
    }
}

impl From<Bytes> for RequestBody {
    fn from(b: Bytes) -> Self {
        RequestBody::Buffered(Full::new(b))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Buffered(b) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming(b) => b.is_end_stream(),
            RequestBody::Buffered(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming(b) => b.size_hint(),
            RequestBody::Buffered(b) => b.size_hint(),
        }
    }
}

/// Most parameters any route template has (`/v1/kv/{bucket}/{*key}`).
const MAX_PARAMS: usize = 2;

/// The store revision an answer reflects (every KV answer, list page, transaction, watch).
pub const MICRONODE_REVISION: HeaderName = HeaderName::from_static("micronode-revision");
/// Unix seconds at which a key with a TTL expires.
pub const MICRONODE_EXPIRES_AT: HeaderName = HeaderName::from_static("micronode-expires-at");
/// On a 410 `compacted`: the smallest watch resume point still served.
pub const MICRONODE_OLDEST_REVISION: HeaderName =
    HeaderName::from_static("micronode-oldest-revision");

/// The path parameters of a matched route, kept as byte ranges of the request path: `Copy`,
/// no allocation, and — unlike the router's borrowed match — still usable by a handler that
/// runs later in a boxed future that owns the request.
#[derive(Debug, Clone, Copy)]
pub struct PathParams {
    /// The matched route's template; parameter names are read from it in order.
    template: &'static str,
    ranges: [(u32, u32); MAX_PARAMS],
    len: usize,
}

impl PathParams {
    /// No parameters (a route without any, or a request that matched none).
    pub const NONE: PathParams = PathParams {
        template: "",
        ranges: [(0, 0); MAX_PARAMS],
        len: 0,
    };

    /// Records where each matched value lies in `path`. `values` are slices of `path`, in
    /// template order, as the router returns them.
    pub fn new<'p>(
        template: &'static str,
        path: &'p str,
        values: impl Iterator<Item = &'p str>,
    ) -> PathParams {
        let mut p = PathParams {
            template,
            ..PathParams::NONE
        };
        let base = path.as_ptr() as usize;
        for v in values.take(MAX_PARAMS) {
            let start = (v.as_ptr() as usize).saturating_sub(base);
            let end = start + v.len();
            if end <= path.len() {
                p.ranges[p.len] = (start as u32, end as u32);
                p.len += 1;
            }
        }
        p
    }

    /// The value of parameter `name` (as written in the template, without `{}` or `*`) in
    /// `path`, the same path the parameters were matched on.
    pub fn get<'p>(&self, path: &'p str, name: &str) -> Option<&'p str> {
        let i = self
            .template
            .split('{')
            .skip(1)
            .filter_map(|s| s.split_once('}').map(|(n, _)| n.trim_start_matches('*')))
            .position(|n| n == name)?;
        let &(start, end) = self.ranges.get(i).filter(|_| i < self.len)?;
        path.get(start as usize..end as usize)
    }
}

/// What a connection knows about itself, handed to every request on it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: std::net::SocketAddr,
    /// What the TLS handshake agreed; `None` on a plain TCP listener.
    pub tls: Option<TlsInfo>,
}

/// The outcome of a connection's TLS handshake (docs/SECURITY.md).
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// `TLSv1_2` or `TLSv1_3`.
    pub version: &'static str,
    /// The key-exchange group, by rustls's name (`X25519MLKEM768`, `X25519`, …).
    pub group: &'static str,
    /// The client certificate, when the listener requires one (mTLS).
    pub client: Option<std::sync::Arc<ClientIdentity>>,
}

/// Who a client certificate says the peer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate's subject, as `CN=…,O=…` (RFC 4514 order: last RDN first).
    pub subject: String,
    /// SHA-256 of the certificate's DER, lower-case hex.
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_params_read_back_by_name() {
        let path = "/v1/kv/b1/a/b%20c";
        let p = PathParams::new(
            "/v1/kv/{bucket}/{*key}",
            path,
            [&path[7..9], &path[10..]].into_iter(),
        );
        assert_eq!(p.get(path, "bucket"), Some("b1"));
        assert_eq!(p.get(path, "key"), Some("a/b%20c"));
        assert_eq!(p.get(path, "nope"), None);
        assert_eq!(PathParams::NONE.get(path, "bucket"), None);
    }
}

/// A request's query string, parsed as `application/x-www-form-urlencoded` the way browsers,
/// `requests`, `httpx` and `URLSearchParams` write it: `+` is a space, `%XX` is decoded
/// strictly and must give UTF-8. Only the parameters a route declares are accepted; an
/// unknown, repeated or malformed one is an error, so a client's `?cas=0` never turns into an
/// unconditional write. Empty when the request had no query (no allocation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(Vec<(&'static str, String)>);

impl Query {
    /// Parses `raw` (without the `?`) against the route's accepted names.
    pub fn parse(raw: &str, accepted: &[&'static str]) -> Result<Query, &'static str> {
        let mut out = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = form_decode(name).ok_or("malformed query string")?;
            let Some(&known) = accepted.iter().find(|a| **a == name) else {
                return Err(if accepted.is_empty() {
                    "this route takes no query parameters"
                } else {
                    "unknown query parameter"
                });
            };
            if out.iter().any(|(n, _)| *n == known) {
                return Err("repeated query parameter");
            }
            let value = form_decode(value).ok_or("malformed query string")?;
            out.push((known, value));
        }
        Ok(Query(out))
    }

    /// The decoded value of `name`, if the request gave it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Form decoding: `+` → space, `%XX` strictly (two hex digits), UTF-8 result.
pub fn form_decode(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    if !b.iter().any(|&c| c == b'%' || c == b'+') {
        return Some(raw.to_owned());
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = (*b.get(i + 1)? as char).to_digit(16)?;
                let lo = (*b.get(i + 2)? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn plus_is_a_space_and_percent_is_strict() {
        let q = Query::parse("prefix=a+b%2Bc&limit=2", &["prefix", "limit"]);
        assert_eq!(q.as_ref().ok().and_then(|q| q.get("prefix")), Some("a b+c"));
        assert_eq!(q.as_ref().ok().and_then(|q| q.get("limit")), Some("2"));
        for bad in ["prefix=%zz", "prefix=%4", "prefix=%FF", "%zz=1"] {
            assert!(Query::parse(bad, &["prefix"]).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert_eq!(
            Query::parse("cas=0", &["ttl"]),
            Err("unknown query parameter")
        );
        assert_eq!(
            Query::parse("x", &[]),
            Err("this route takes no query parameters")
        );
        assert_eq!(
            Query::parse("ttl=1&ttl=2", &["ttl"]),
            Err("repeated query parameter")
        );
        assert_eq!(Query::parse("&&", &[]), Ok(Query::default()));
        assert_eq!(
            Query::parse("tt%6C=5", &["ttl"]).map(|q| q.get("ttl").map(str::to_owned)),
            Ok(Some("5".to_owned()))
        );
    }
}
