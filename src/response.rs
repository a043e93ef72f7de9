//! Response building blocks shared by handlers and the error mapping.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Every response body Micronode sends is a single, fully known buffer.
pub type Body = Full<Bytes>;
pub type Resp = Response<Body>;

pub const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
pub const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
pub const PROMETHEUS_TEXT: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");

/// A response with a status, a content type and a body.
pub fn with_body(status: StatusCode, content_type: HeaderValue, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, content_type);
    resp
}

/// A JSON response from already-serialized bytes.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    with_body(status, APPLICATION_JSON, body)
}

/// A response with no body at all (204, 304, 201 without content).
pub fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// Turns a GET response into its HEAD twin: same headers, the length kept, no body.
pub fn strip_body_for_head(resp: Resp) -> Resp {
    let (mut parts, body) = resp.into_parts();
    let len = http_body::Body::size_hint(&body).exact().unwrap_or(0);
    if len > 0 && !parts.headers.contains_key(CONTENT_LENGTH) {
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    Response::from_parts(parts, Full::new(Bytes::new()))
}
