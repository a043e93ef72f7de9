//! Response building blocks shared by handlers and the error mapping. A leaf: it imports
//! nothing of the crate.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use http_body_util::combinators::BoxBody;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: one buffer known up front (every answer but the long ones — the fast
/// path, which costs what a bare `Full<Bytes>` costs), or a stream of frames produced while
/// the response is being sent (change feeds, snapshots).
#[derive(Debug)]
pub enum Body {
    Full(Full<Bytes>),
    Stream(BoxBody<Bytes, BoxError>),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Body::Full(Full::new(bytes.into()))
    }

    /// A streamed body; it is sent chunked on HTTP/1.1, as DATA frames on HTTP/2.
    pub fn stream<B>(body: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        Body::Stream(BoxBody::new(http_body_util::BodyExt::map_err(
            body,
            Into::into,
        )))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Full(b) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Body::Stream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_end_stream(),
            Body::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => b.size_hint(),
            Body::Stream(b) => b.size_hint(),
        }
    }
}

pub(crate) type Resp = Response<Body>;

/// A streamed body fed through a channel by the task producing it (watch streams, snapshots):
/// each message is one data frame; an `Err` ends the body with that error (the client sees the
/// stream cut); the sender going away ends it cleanly. The channel's bound is the only buffer.
pub(crate) struct ChannelBody<E>(pub(crate) tokio::sync::mpsc::Receiver<Result<Bytes, E>>);

impl<E> http_body::Body for ChannelBody<E> {
    type Data = Bytes;
    type Error = E;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(Frame::data)))
    }
}

pub(crate) const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
pub(crate) const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
pub(crate) const PROMETHEUS_TEXT: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");

/// A response with a status, a content type and a body.
pub(crate) fn with_body(
    status: StatusCode,
    content_type: HeaderValue,
    body: impl Into<Bytes>,
) -> Resp {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, content_type);
    resp
}

/// A JSON response from already-serialized bytes.
pub(crate) fn json(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    with_body(status, APPLICATION_JSON, body)
}

/// A response with no body at all (204, 304, 201 without content).
pub(crate) fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(Body::full(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// Turns a GET response into its HEAD twin: same headers, the length kept, no body.
pub(crate) fn strip_body_for_head(resp: Resp) -> Resp {
    let (mut parts, body) = resp.into_parts();
    let len = http_body::Body::size_hint(&body).exact();
    // A GET of an empty value says `Content-Length: 0`; so does its HEAD. 204 and 304 carry
    // no length.
    let bodyless = matches!(parts.status.as_u16(), 204 | 304) || parts.status.is_informational();
    if let Some(len) = len
        && !bodyless
        && !parts.headers.contains_key(CONTENT_LENGTH)
    {
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    Response::from_parts(parts, Body::full(Bytes::new()))
}
