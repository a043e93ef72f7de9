//! The one error type for responses, mapped to status / code / retryable / envelope here and
//! nowhere else. The code table is docs/API.md's "Error codes" table.

use std::fmt::Write as _;

use http::header::{ALLOW, CONNECTION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};

use crate::response::{self, Resp};
use crate::wire::{MICRONODE_OLDEST_REVISION, MICRONODE_REVISION};

/// Declares the code table: each code once, with its wire name, status, whether a client may
/// retry, and so its `micronode_rejections_total{reason}` label. [`Code`], [`Code::ALL`], the
/// status of every envelope and the metrics prewarm all derive from this one list.
macro_rules! code_table {
    ($( $(#[$doc:meta])* $variant:ident => ($name:literal, $status:ident, $retryable:literal), )*) => {
        /// The machine-readable `code` of an error envelope; also the `reason` label of
        /// `micronode_rejections_total`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// Every code, in declaration order (`code as usize` indexes this).
            pub const ALL: &'static [Code] = &[$( Code::$variant, )*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Code::$variant => $name, )*
                }
            }

            pub const fn status(self) -> StatusCode {
                match self {
                    $( Code::$variant => StatusCode::$status, )*
                }
            }

            pub const fn retryable(self) -> bool {
                match self {
                    $( Code::$variant => $retryable, )*
                }
            }
        }
    };
}

code_table! {
    /// Malformed JSON, query, bucket, key or token syntax; an unknown query parameter.
    BadRequest => ("bad_request", BAD_REQUEST, false),
    /// Token missing, malformed, bad signature, unknown key, expired, not yet valid, revoked.
    Auth => ("auth", UNAUTHORIZED, false),
    /// A valid token whose caveats do not allow this operation, bucket, key or prefix.
    Policy => ("policy", FORBIDDEN, false),
    /// No route, or no such (live) key.
    NotFound => ("not_found", NOT_FOUND, false),
    MethodNotAllowed => ("method_not_allowed", METHOD_NOT_ALLOWED, false),
    /// The request body stalled past the body read bound.
    BodyTimeout => ("body_timeout", REQUEST_TIMEOUT, true),
    /// A watch resume point older than the retained history.
    Compacted => ("compacted", GONE, false),
    /// POST/PUT/PATCH without `Content-Length` (chunked included).
    LengthRequired => ("length_required", LENGTH_REQUIRED, false),
    /// `If-Match` / `If-None-Match` not satisfied.
    PreconditionFailed => ("precondition_failed", PRECONDITION_FAILED, false),
    /// Declared or decoded body length over the cap.
    BodyCap => ("body_cap", PAYLOAD_TOO_LARGE, false),
    UriTooLong => ("uri_too_long", URI_TOO_LONG, false),
    UnsupportedEncoding => ("unsupported_encoding", UNSUPPORTED_MEDIA_TYPE, false),
    StackedEncoding => ("stacked_encoding", UNSUPPORTED_MEDIA_TYPE, false),
    /// The route's in-flight budget (or the watcher limit) is full.
    Concurrency => ("concurrency", TOO_MANY_REQUESTS, true),
    /// The global token bucket is empty.
    RateLimit => ("rate_limit", TOO_MANY_REQUESTS, true),
    /// The tenant's request rate is exceeded.
    Quota => ("quota", TOO_MANY_REQUESTS, true),
    HeaderTooLarge => ("header_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE, false),
    /// A bug (logged with the request id).
    Internal => ("internal", INTERNAL_SERVER_ERROR, true),
    /// A store error (logged with the request id).
    Storage => ("storage", INTERNAL_SERVER_ERROR, true),
    /// The route's time bound elapsed.
    Timeout => ("timeout", SERVICE_UNAVAILABLE, true),
    /// Store not open, or draining.
    NotReady => ("not_ready", SERVICE_UNAVAILABLE, true),
    /// The engine cannot be reached.
    StorageUnavailable => ("storage_unavailable", SERVICE_UNAVAILABLE, true),
    /// The write would take the tenant past its bytes or keys quota; nothing stored.
    QuotaStorage => ("quota_storage", INSUFFICIENT_STORAGE, false),
    /// The disk is full; nothing acknowledged, nothing corrupted.
    StorageFull => ("storage_full", INSUFFICIENT_STORAGE, true),
}

impl Code {
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
    /// The tenant's rate or watcher limit.
    Quota {
        retry_after_secs: u64,
    },
    Internal,
    Storage,
    Timeout,
    NotReady,
    /// The engine cannot be reached (answered with `Retry-After: 1`).
    StorageUnavailable,
    /// The disk is full.
    StorageFull,
    /// The write would take the tenant past its storage quota.
    QuotaStorage,
    /// Path and query over `limit` bytes.
    UriTooLong {
        limit: usize,
    },
    /// Header fields over `limit` bytes in all.
    HeaderTooLarge {
        limit: usize,
    },
    /// A watch resume point older than the retained history; `oldest` is the smallest
    /// resume point still served (`Micronode-Oldest-Revision`).
    Compacted {
        oldest: u64,
    },
    /// 401: the token is `missing`, `invalid`, `expired` or `revoked` (nothing more is said).
    Auth {
        reason: &'static str,
    },
    /// 403: a valid token whose caveats do not allow this.
    Policy,
    /// An error that also names the store revision it reflects (`Micronode-Revision`): a 404
    /// or 412 from the store.
    At {
        error: Box<ApiError>,
        revision: u64,
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
            ApiError::Quota { .. } => Code::Quota,
            ApiError::Internal => Code::Internal,
            ApiError::Storage => Code::Storage,
            ApiError::Timeout => Code::Timeout,
            ApiError::NotReady => Code::NotReady,
            ApiError::StorageUnavailable => Code::StorageUnavailable,
            ApiError::StorageFull => Code::StorageFull,
            ApiError::QuotaStorage => Code::QuotaStorage,
            ApiError::UriTooLong { .. } => Code::UriTooLong,
            ApiError::HeaderTooLarge { .. } => Code::HeaderTooLarge,
            ApiError::Compacted { .. } => Code::Compacted,
            ApiError::Auth { .. } => Code::Auth,
            ApiError::Policy => Code::Policy,
            ApiError::At { error, .. } => error.code(),
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
            ApiError::Quota { .. } => "tenant quota exceeded",
            ApiError::Internal => "internal error",
            ApiError::Storage => "storage error",
            ApiError::Timeout => "the request timed out",
            ApiError::NotReady => "not ready",
            ApiError::StorageUnavailable => "storage is unavailable",
            ApiError::StorageFull => "storage is full; nothing was written",
            ApiError::QuotaStorage => "storage quota exceeded; nothing was written",
            ApiError::UriTooLong { limit } => {
                let _ = write!(out, "path and query exceed {limit} bytes");
                return;
            }
            ApiError::HeaderTooLarge { limit } => {
                let _ = write!(out, "header fields exceed {limit} bytes");
                return;
            }
            ApiError::Compacted { oldest } => {
                let _ = write!(
                    out,
                    "history before revision {oldest} is no longer kept; list, then watch from the list's revision"
                );
                return;
            }
            ApiError::At { error, .. } => return error.write_message(out),
            ApiError::Auth { reason: "missing" } => "a token is required",
            ApiError::Auth { reason: "expired" } => "the token is expired or not yet valid",
            ApiError::Auth { reason: "revoked" } => "the token is revoked",
            ApiError::Auth { .. } => "the token is invalid",
            ApiError::Policy => "the token does not allow this",
        };
        out.push_str(msg);
    }

    /// The error envelope response. `request_id` is already validated to `[A-Za-z0-9._-]`, so
    /// it needs no JSON escaping; messages are our own text, escaped all the same.
    pub fn into_response(self, request_id: &HeaderValue) -> Resp {
        if let ApiError::At { error, revision } = self {
            let mut resp = error.into_response(request_id);
            resp.headers_mut()
                .insert(MICRONODE_REVISION, HeaderValue::from(revision));
            return resp;
        }
        let code = self.code();
        let mut body = String::with_capacity(160);
        body.push_str("{\"code\":\"");
        body.push_str(code.as_str());
        body.push_str("\",\"message\":\"");
        let mut message = String::with_capacity(64);
        self.write_message(&mut message);
        json_escape(&message, &mut body);
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
            ApiError::Concurrency | ApiError::StorageUnavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RateLimit { retry_after_secs } | ApiError::Quota { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            // The unread body of a refused upload must not be parsed as the next request,
            // and reading it to the end would defeat the cap: close the connection.
            ApiError::LengthRequired | ApiError::BodyCap { .. } | ApiError::BodyTimeout => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::Compacted { oldest } => {
                headers.insert(MICRONODE_OLDEST_REVISION, HeaderValue::from(oldest));
            }
            // RFC 6750: no error code when no token was sent.
            ApiError::Auth { reason: "missing" } => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"micronode\""),
                );
            }
            ApiError::Auth { .. } => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"micronode\", error=\"invalid_token\""),
                );
            }
            _ => {}
        }
        resp
    }
}

/// Appends `text` as the inside of a JSON string.
fn json_escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_with_quotes_still_make_valid_json() {
        let rid = HeaderValue::from_static("r-1");
        let resp = ApiError::BadRequest("a \"quoted\" \\ word\n").into_response(&rid);
        let body = match resp.into_body() {
            crate::response::Body::Full(b) => {
                futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(b))
                    .expect("ready")
                    .expect("infallible")
                    .to_bytes()
            }
            crate::response::Body::Stream(_) => panic!("an envelope is one buffer"),
        };
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(v["message"], "a \"quoted\" \\ word\n");
    }

    #[test]
    fn every_code_has_its_documented_status_and_retryability() {
        // Written out independently of the declaration, as docs/API.md lists them.
        let table: &[(&str, u16, bool)] = &[
            ("bad_request", 400, false),
            ("auth", 401, false),
            ("policy", 403, false),
            ("not_found", 404, false),
            ("method_not_allowed", 405, false),
            ("body_timeout", 408, true),
            ("compacted", 410, false),
            ("length_required", 411, false),
            ("precondition_failed", 412, false),
            ("body_cap", 413, false),
            ("uri_too_long", 414, false),
            ("unsupported_encoding", 415, false),
            ("stacked_encoding", 415, false),
            ("concurrency", 429, true),
            ("rate_limit", 429, true),
            ("quota", 429, true),
            ("header_too_large", 431, false),
            ("internal", 500, true),
            ("storage", 500, true),
            ("timeout", 503, true),
            ("not_ready", 503, true),
            ("storage_unavailable", 503, true),
            ("quota_storage", 507, false),
            ("storage_full", 507, true),
        ];
        assert_eq!(table.len(), Code::ALL.len());
        for (i, (name, status, retry)) in table.iter().enumerate() {
            let code = Code::ALL[i];
            assert_eq!(code.index(), i);
            assert_eq!(code.as_str(), *name);
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
        let bytes = collect_on_a_runtime(body);
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("valid json");
        assert_eq!(v["code"], "body_cap");
        assert_eq!(v["message"], "request body exceeds 1048576 bytes");
        assert_eq!(v["retryable"], false);
        assert_eq!(v["request_id"], "abc-1");
    }

    fn collect_on_a_runtime<F>(f: F) -> bytes::Bytes
    where
        F: std::future::Future<
                Output = Result<http_body_util::Collected<bytes::Bytes>, crate::response::BoxError>,
            >,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds");
        rt.block_on(f).expect("a full body cannot fail").to_bytes()
    }
}
