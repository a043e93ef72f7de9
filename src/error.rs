//! The one error type for responses, mapped to status / code / retryable / envelope here and
//! nowhere else (SPEC §2 error table).

use std::fmt::Write as _;

use http::header::{ALLOW, CONNECTION, RETRY_AFTER};
use http::{HeaderValue, StatusCode};

use crate::response::{self, Resp};

/// The machine-readable `code` of an error envelope; also the `reason` label of
/// `micronode_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    LengthRequired,
    BodyTimeout,
    PreconditionFailed,
    BodyCap,
    UnsupportedEncoding,
    StackedEncoding,
    Concurrency,
    RateLimit,
    Internal,
    Storage,
    Timeout,
    NotReady,
    UriTooLong,
    HeaderTooLarge,
}

impl Code {
    pub const ALL: [Code; 17] = [
        Code::BadRequest,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::LengthRequired,
        Code::BodyTimeout,
        Code::PreconditionFailed,
        Code::BodyCap,
        Code::UnsupportedEncoding,
        Code::StackedEncoding,
        Code::Concurrency,
        Code::RateLimit,
        Code::Internal,
        Code::Storage,
        Code::Timeout,
        Code::NotReady,
        Code::UriTooLong,
        Code::HeaderTooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::LengthRequired => "length_required",
            Code::BodyTimeout => "body_timeout",
            Code::PreconditionFailed => "precondition_failed",
            Code::BodyCap => "body_cap",
            Code::UnsupportedEncoding => "unsupported_encoding",
            Code::StackedEncoding => "stacked_encoding",
            Code::Concurrency => "concurrency",
            Code::RateLimit => "rate_limit",
            Code::Internal => "internal",
            Code::Storage => "storage",
            Code::Timeout => "timeout",
            Code::NotReady => "not_ready",
            Code::UriTooLong => "uri_too_long",
            Code::HeaderTooLarge => "header_too_large",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::LengthRequired => StatusCode::LENGTH_REQUIRED,
            Code::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Code::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Code::BodyCap => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UnsupportedEncoding | Code::StackedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::Concurrency | Code::RateLimit => StatusCode::TOO_MANY_REQUESTS,
            Code::Internal | Code::Storage => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Timeout | Code::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Code::UriTooLong => StatusCode::URI_TOO_LONG,
            Code::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    pub fn retryable(self) -> bool {
        matches!(
            self,
            Code::BodyTimeout
                | Code::Concurrency
                | Code::RateLimit
                | Code::Internal
                | Code::Storage
                | Code::Timeout
                | Code::NotReady
        )
    }

    /// Index into per-code metric arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An error answered by Micronode itself. Small and `Copy`-cheap: the hot reject paths build
/// one without allocating until the envelope is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Malformed input; the message says which part.
    BadRequest(&'static str),
    NotFound,
    /// `allow` is the exact `Allow` header of the route.
    MethodNotAllowed {
        allow: HeaderValue,
    },
    LengthRequired,
    BodyTimeout,
    PreconditionFailed,
    /// Declared or decoded length over `limit` bytes.
    BodyCap {
        limit: u64,
        decoded: bool,
    },
    UnsupportedEncoding,
    StackedEncoding,
    Concurrency,
    RateLimit {
        retry_after_secs: u64,
    },
    Internal,
    Storage,
    Timeout,
    NotReady,
    /// Path and query over `limit` bytes.
    UriTooLong {
        limit: usize,
    },
    /// Header fields over `limit` bytes in all.
    HeaderTooLarge {
        limit: usize,
    },
}

impl ApiError {
    pub fn code(&self) -> Code {
        match self {
            ApiError::BadRequest(_) => Code::BadRequest,
            ApiError::NotFound => Code::NotFound,
            ApiError::MethodNotAllowed { .. } => Code::MethodNotAllowed,
            ApiError::LengthRequired => Code::LengthRequired,
            ApiError::BodyTimeout => Code::BodyTimeout,
            ApiError::PreconditionFailed => Code::PreconditionFailed,
            ApiError::BodyCap { .. } => Code::BodyCap,
            ApiError::UnsupportedEncoding => Code::UnsupportedEncoding,
            ApiError::StackedEncoding => Code::StackedEncoding,
            ApiError::Concurrency => Code::Concurrency,
            ApiError::RateLimit { .. } => Code::RateLimit,
            ApiError::Internal => Code::Internal,
            ApiError::Storage => Code::Storage,
            ApiError::Timeout => Code::Timeout,
            ApiError::NotReady => Code::NotReady,
            ApiError::UriTooLong { .. } => Code::UriTooLong,
            ApiError::HeaderTooLarge { .. } => Code::HeaderTooLarge,
        }
    }

    /// Writes the human message: short, deterministic, never internal detail.
    fn write_message(&self, out: &mut String) {
        let msg: &str = match self {
            ApiError::BadRequest(what) => what,
            ApiError::NotFound => "not found",
            ApiError::MethodNotAllowed { .. } => "method not allowed on this route",
            ApiError::LengthRequired => "a Content-Length header is required",
            ApiError::BodyTimeout => "the request body stalled",
            ApiError::PreconditionFailed => "precondition failed",
            ApiError::BodyCap {
                limit,
                decoded: false,
            } => {
                let _ = write!(out, "request body exceeds {limit} bytes");
                return;
            }
            ApiError::BodyCap {
                limit,
                decoded: true,
            } => {
                let _ = write!(out, "decoded request body exceeds {limit} bytes");
                return;
            }
            ApiError::UnsupportedEncoding => "Content-Encoding is not accepted",
            ApiError::StackedEncoding => "stacked Content-Encoding is not accepted",
            ApiError::Concurrency => "too many requests in flight on this route",
            ApiError::RateLimit { .. } => "rate limit exceeded",
            ApiError::Internal => "internal error",
            ApiError::Storage => "storage error",
            ApiError::Timeout => "the request timed out",
            ApiError::NotReady => "not ready",
            ApiError::UriTooLong { limit } => {
                let _ = write!(out, "path and query exceed {limit} bytes");
                return;
            }
            ApiError::HeaderTooLarge { limit } => {
                let _ = write!(out, "header fields exceed {limit} bytes");
                return;
            }
        };
        out.push_str(msg);
    }

    /// The error envelope response. `request_id` is already validated to `[A-Za-z0-9._-]`, so
    /// it needs no JSON escaping; messages are our own ASCII text without quotes.
    pub fn into_response(self, request_id: &HeaderValue) -> Resp {
        let code = self.code();
        let mut body = String::with_capacity(160);
        body.push_str("{\"code\":\"");
        body.push_str(code.as_str());
        body.push_str("\",\"message\":\"");
        self.write_message(&mut body);
        body.push_str("\",\"retryable\":");
        body.push_str(if code.retryable() { "true" } else { "false" });
        body.push_str(",\"request_id\":\"");
        body.push_str(request_id.to_str().unwrap_or(""));
        body.push_str("\"}");
        let mut resp = response::json(code.status(), body);
        let headers = resp.headers_mut();
        match self {
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, allow);
            }
            ApiError::Concurrency => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RateLimit { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            // The unread body of a refused upload must not be parsed as the next request,
            // and reading it to the end would defeat the cap: close the connection.
            ApiError::LengthRequired | ApiError::BodyCap { .. } | ApiError::BodyTimeout => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_spec_status_and_retryability() {
        let table: &[(Code, u16, bool)] = &[
            (Code::BadRequest, 400, false),
            (Code::NotFound, 404, false),
            (Code::MethodNotAllowed, 405, false),
            (Code::LengthRequired, 411, false),
            (Code::BodyTimeout, 408, true),
            (Code::PreconditionFailed, 412, false),
            (Code::BodyCap, 413, false),
            (Code::UnsupportedEncoding, 415, false),
            (Code::StackedEncoding, 415, false),
            (Code::Concurrency, 429, true),
            (Code::RateLimit, 429, true),
            (Code::Internal, 500, true),
            (Code::Storage, 500, true),
            (Code::Timeout, 503, true),
            (Code::NotReady, 503, true),
            (Code::UriTooLong, 414, false),
            (Code::HeaderTooLarge, 431, false),
        ];
        assert_eq!(table.len(), Code::ALL.len());
        for (i, (code, status, retry)) in table.iter().enumerate() {
            assert_eq!(
                code.index(),
                Code::ALL.iter().position(|c| c == code).unwrap_or(99)
            );
            assert_eq!(Code::ALL[i], *code);
            assert_eq!(code.status().as_u16(), *status, "{code:?}");
            assert_eq!(code.retryable(), *retry, "{code:?}");
        }
    }

    #[test]
    fn envelope_is_valid_json_with_all_fields() {
        let rid = HeaderValue::from_static("abc-1");
        let resp = ApiError::BodyCap {
            limit: 1_048_576,
            decoded: false,
        }
        .into_response(&rid);
        assert_eq!(resp.status(), 413);
        let body = http_body_util::BodyExt::collect(resp.into_body());
        let bytes = futures_lite_block_on(body);
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("valid json");
        assert_eq!(v["code"], "body_cap");
        assert_eq!(v["message"], "request body exceeds 1048576 bytes");
        assert_eq!(v["retryable"], false);
        assert_eq!(v["request_id"], "abc-1");
    }

    fn futures_lite_block_on<F>(f: F) -> bytes::Bytes
    where
        F: std::future::Future<
                Output = Result<http_body_util::Collected<bytes::Bytes>, std::convert::Infallible>,
            >,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds");
        match rt.block_on(f) {
            Ok(c) => c.to_bytes(),
            Err(never) => match never {},
        }
    }
}
