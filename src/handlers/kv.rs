//! KV v1: `PUT / GET / HEAD / DELETE /v1/kv/{bucket}/{*key}` and
//! `GET /v1/kv/{bucket}?prefix=&limit=&after=`. The engine-neutral limits (bucket, key,
//! content type) are checked here, once, and answered 400; engines only store.

use std::fmt::Write as _;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{Cx, Step};
use crate::error::ApiError;
use crate::metrics::{KvOp, Metrics};
use crate::response::{self, OCTET_STREAM, Resp};
use crate::store::{Cond, ErrorKind, IfMatch, Page, PutOutcome, Record, StoreError};

pub const MAX_KEY_BYTES: usize = crate::store::MAX_KEY_BYTES;
pub const MAX_BUCKET_CHARS: usize = crate::store::MAX_BUCKET_BYTES;
pub const MAX_CONTENT_TYPE_BYTES: usize = crate::store::MAX_CONTENT_TYPE_BYTES;
pub const DEFAULT_LIST_LIMIT: usize = 100;
pub const MAX_LIST_LIMIT: usize = 1000;

/// `bucket`: 1–63 chars of `[a-z0-9._-]`, starting with a letter or digit.
pub fn valid_bucket(b: &str) -> bool {
    let bytes = b.as_bytes();
    (1..=MAX_BUCKET_CHARS).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
        && bytes.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// Strict percent-decoding: `%` must be followed by two hex digits; the result must be UTF-8.
pub fn percent_decode(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    if !b.contains(&b'%') {
        return Some(raw.to_owned());
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = (*b.get(i + 1)? as char).to_digit(16)?;
            let lo = (*b.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded key: 1–1024 bytes of UTF-8 with no control characters, read as `/`-separated
/// segments none of which is empty, `.` or `..` — so that a key means the same thing to every
/// client and proxy (many squash `//` and dot segments before sending) and never looks like a
/// way out of its bucket. `%2F` decodes to `/`, the same key as a literal slash.
pub fn decode_key(raw: &str) -> Result<String, ApiError> {
    let key = percent_decode(raw).ok_or(ApiError::BadRequest("invalid key encoding"))?;
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ApiError::BadRequest("key must be 1 to 1024 bytes"));
    }
    if key.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "key must not contain control characters",
        ));
    }
    if key.split('/').any(|seg| matches!(seg, "" | "." | "..")) {
        return Err(ApiError::BadRequest(
            "key segments must not be empty, . or ..",
        ));
    }
    Ok(key)
}

fn bucket_and_key<'a>(cx: &Cx<'a>) -> Result<(&'a str, String), ApiError> {
    let bucket = cx.param("bucket");
    if !valid_bucket(bucket) {
        return Err(ApiError::BadRequest("invalid bucket name"));
    }
    Ok((bucket, decode_key(cx.param("key"))?))
}

/// `"<hex version>"`, a strong validator.
fn etag(version: u64) -> HeaderValue {
    let mut s = String::with_capacity(18);
    let _ = write!(s, "\"{version:x}\"");
    HeaderValue::from_str(&s).expect("quoted hex digits are a valid header value")
}

/// Parses an `If-Match` / `If-None-Match` header: `*` or a list of entity tags. Weak tags
/// (`W/"…"`) and tags we did not mint are kept out, so they never match (strong comparison).
fn parse_tags(headers: &HeaderMap, name: HeaderName) -> Result<Option<IfMatch>, ApiError> {
    let mut values = headers.get_all(&name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut versions = Vec::new();
    for v in values {
        let s = v
            .to_str()
            .map_err(|_| ApiError::BadRequest("invalid precondition header"))?;
        for tag in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tag == "*" {
                return Ok(Some(IfMatch::Any));
            }
            if tag.starts_with("W/") {
                continue;
            }
            let inner = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .ok_or(ApiError::BadRequest("invalid entity tag"))?;
            if let Ok(v) = u64::from_str_radix(inner, 16) {
                versions.push(v);
            }
        }
    }
    Ok(Some(IfMatch::Versions(versions)))
}

fn write_cond(headers: &HeaderMap) -> Result<Cond, ApiError> {
    Ok(Cond {
        if_match: parse_tags(headers, IF_MATCH)?,
        if_none_match: parse_tags(headers, IF_NONE_MATCH)?,
    })
}

/// The one mapping from a store error to an answer. Engine failures are logged with the
/// request id and their cause.
fn store_error(request_id: &HeaderValue, e: StoreError) -> ApiError {
    match e.kind() {
        ErrorKind::Precondition => ApiError::PreconditionFailed,
        ErrorKind::NotFound => ApiError::NotFound,
        ErrorKind::Quota => ApiError::QuotaStorage,
        kind => {
            tracing::error!(request_id = ?request_id, kind = ?kind, cause = %e, "store error");
            match kind {
                ErrorKind::Unavailable => ApiError::StorageUnavailable,
                ErrorKind::DiskFull => ApiError::StorageFull,
                _ => ApiError::Storage,
            }
        }
    }
}

/// Whether KV reads may wait for the engine (and so run as futures).
pub fn reads_wait(app: &crate::app::App) -> bool {
    app.store.reads_wait()
}

// GET /v1/kv/{bucket}/{*key}  (HEAD is the same without a body)
pub fn get_kv(cx: Cx<'_>) -> Step<'_> {
    let (bucket, key) = match bucket_and_key(&cx) {
        Ok(bk) => bk,
        Err(e) => return Step::Done(Err(e)),
    };
    cx.app.metrics.kv_op(KvOp::Get);
    let shape = match GetShape::of(&cx) {
        Ok(shape) => shape,
        Err(e) => return Step::Done(Err(e)),
    };
    match cx.app.store.get(bucket, &key).into_ready() {
        Ok(found) => Step::Done(shape.answer(&cx.app.metrics, cx.request_id, found)),
        // The read shows a write not yet durable: answer once it is (docs/STORAGE.md,
        // "Visibility = durability"), with nothing borrowed from the request.
        Err(call) => {
            let metrics = Arc::clone(&cx.app.metrics);
            let request_id = cx.request_id.clone();
            Step::Detached(Box::pin(async move {
                shape.answer(&metrics, &request_id, call.await)
            }))
        }
    }
}

/// What a GET's answer depends on besides the record, taken from the request head up front.
struct GetShape {
    if_none_match: Option<IfMatch>,
    head: bool,
}

impl GetShape {
    fn of(cx: &Cx<'_>) -> Result<GetShape, ApiError> {
        Ok(GetShape {
            if_none_match: parse_tags(&cx.head.headers, IF_NONE_MATCH)?,
            head: cx.head.method == http::Method::HEAD,
        })
    }

    fn answer(
        &self,
        metrics: &Metrics,
        request_id: &HeaderValue,
        found: Result<Option<Record>, StoreError>,
    ) -> Result<Resp, ApiError> {
        let record = found
            .map_err(|e| store_error(request_id, e))?
            .ok_or(ApiError::NotFound)?;
        let tag = etag(record.revision);
        let matched = match &self.if_none_match {
            None => false,
            Some(IfMatch::Any) => true,
            Some(IfMatch::Versions(vs)) => vs.contains(&record.revision),
        };
        if matched {
            let mut resp = response::empty(StatusCode::NOT_MODIFIED);
            resp.headers_mut().insert(ETAG, tag);
            return Ok(resp);
        }
        let content_type = if record.content_type.is_empty() {
            OCTET_STREAM
        } else {
            HeaderValue::from_maybe_shared(record.content_type).unwrap_or(OCTET_STREAM)
        };
        if !self.head {
            metrics.kv_bytes_out(record.value.len());
        }
        let mut resp = response::with_body(StatusCode::OK, content_type, record.value);
        resp.headers_mut().insert(ETAG, tag);
        Ok(resp)
    }
}

// PUT /v1/kv/{bucket}/{*key}
pub async fn put_kv(mut cx: Cx<'_>) -> Result<Resp, ApiError> {
    let (bucket, key) = bucket_and_key(&cx)?;
    let cond = write_cond(&cx.head.headers)?;
    let content_type = match cx.head.headers.get(CONTENT_TYPE) {
        Some(ct) if ct.len() > MAX_CONTENT_TYPE_BYTES => {
            return Err(ApiError::BadRequest(
                "Content-Type must be at most 1024 bytes",
            ));
        }
        Some(ct) => ct.as_bytes().to_vec(),
        None => OCTET_STREAM.as_bytes().to_vec(),
    };
    let bytes = cx.read_body().await?;
    cx.app.metrics.kv_op(KvOp::Put);
    cx.app.metrics.kv_bytes_in(bytes.len());
    // Resolves once the write is as durable as the configured mode promises.
    let outcome = cx
        .app
        .store
        .put(bucket, &key, &content_type, &bytes, &cond)
        .await
        .map_err(|e| store_error(cx.request_id, e))?;
    let (status, version) = match outcome {
        PutOutcome::Created(v) => (StatusCode::CREATED, v),
        PutOutcome::Replaced(v) => (StatusCode::NO_CONTENT, v),
    };
    let mut resp = response::empty(status);
    resp.headers_mut().insert(ETAG, etag(version));
    Ok(resp)
}

// DELETE /v1/kv/{bucket}/{*key}
pub async fn delete_kv(cx: Cx<'_>) -> Result<Resp, ApiError> {
    let (bucket, key) = bucket_and_key(&cx)?;
    let cond = write_cond(&cx.head.headers)?;
    cx.app.metrics.kv_op(KvOp::Del);
    cx.app
        .store
        .delete(bucket, &key, &cond)
        .await
        .map_err(|e| store_error(cx.request_id, e))?;
    Ok(response::empty(StatusCode::NO_CONTENT))
}

/// `prefix`, `limit`, `after` from a query string; anything else is a bad query.
pub fn list_query(query: Option<&str>) -> Result<(String, usize, Option<String>), ApiError> {
    let (mut prefix, mut limit, mut after) = (String::new(), DEFAULT_LIST_LIMIT, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(raw).ok_or(ApiError::BadRequest("invalid query encoding"))?;
        match name {
            "prefix" => prefix = value,
            "after" => after = Some(value),
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                    .ok_or(ApiError::BadRequest("limit must be 1 to 1000"))?;
            }
            _ => return Err(ApiError::BadRequest("unknown query parameter")),
        }
    }
    if prefix.len() > MAX_KEY_BYTES || after.as_ref().is_some_and(|a| a.len() > MAX_KEY_BYTES) {
        return Err(ApiError::BadRequest(
            "prefix and after must be at most 1024 bytes",
        ));
    }
    Ok((prefix, limit, after))
}

// GET /v1/kv/{bucket}
pub fn list_kv(cx: Cx<'_>) -> Step<'_> {
    let bucket = cx.param("bucket");
    if !valid_bucket(bucket) {
        return Step::Done(Err(ApiError::BadRequest("invalid bucket name")));
    }
    let (prefix, limit, after) = match list_query(cx.head.uri.query()) {
        Ok(q) => q,
        Err(e) => return Step::Done(Err(e)),
    };
    cx.app.metrics.kv_op(KvOp::List);
    match cx
        .app
        .store
        .list(bucket, &prefix, after.as_deref(), limit)
        .into_ready()
    {
        Ok(page) => Step::Done(answer_list(cx.request_id, page)),
        // The listing may show writes not yet durable: answer once they are.
        Err(call) => {
            let request_id = cx.request_id.clone();
            Step::Detached(Box::pin(
                async move { answer_list(&request_id, call.await) },
            ))
        }
    }
}

fn answer_list(request_id: &HeaderValue, page: Result<Page, StoreError>) -> Result<Resp, ApiError> {
    let page = page.map_err(|e| store_error(request_id, e))?;
    let body = serde_json::json!({ "keys": page.keys, "next": page.next });
    Ok(response::json(StatusCode::OK, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_rules() {
        for ok in ["a", "0", "a.b_c-d", &"a".repeat(63)] {
            assert!(valid_bucket(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-a",
            ".a",
            "a/b",
            "a b",
            "é",
            &"a".repeat(64),
            "a%2Fb",
        ] {
            assert!(!valid_bucket(bad), "{bad}");
        }
    }

    #[test]
    fn key_decoding_is_strict() {
        assert_eq!(decode_key("a%20b/c").as_deref(), Ok("a b/c"));
        assert_eq!(decode_key("%C3%A9").as_deref(), Ok("é"));
        assert_eq!(decode_key("a%2Fb").as_deref(), Ok("a/b"));
        assert!(decode_key("%zz").is_err());
        assert!(decode_key("%4").is_err());
        assert!(decode_key("%FF").is_err(), "not UTF-8");
        assert!(decode_key("").is_err());
        assert!(decode_key(&"k".repeat(1025)).is_err());
        assert!(decode_key(&"k".repeat(1024)).is_ok());
    }

    #[test]
    fn key_hygiene() {
        for ok in ["a/b/c", "a.b", "...", "a/.b/c..", "%2E%2E%2Ea"] {
            assert!(decode_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "..", ".", "../x", "a/../b", "a/./b", "a/..", "a//b", "/a", "a/", "%2E%2E/x",
            "a%2F%2Fb", "a%2F..", "nul%00", "tab%09", "del%7F", "%C2%85",
        ] {
            assert!(decode_key(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Any input at all: no panic, and an accepted key obeys every rule and stays inside
        /// its bucket's engine prefix.
        #[test]
        fn decode_key_never_panics_and_accepts_only_clean_keys(raw in ".{0,64}|[a-z%0-9./]{0,64}") {
            if let Ok(key) = decode_key(&raw) {
                proptest::prop_assert!(!key.is_empty() && key.len() <= MAX_KEY_BYTES);
                proptest::prop_assert!(!key.chars().any(char::is_control));
                proptest::prop_assert!(key.split('/').all(|s| !matches!(s, "" | "." | "..")));
                let full = crate::store::compose("bkt", &key);
                proptest::prop_assert!(full.starts_with(b"bkt/"));
            }
        }

        #[test]
        fn bucket_check_never_panics(raw in ".{0,80}") {
            if valid_bucket(&raw) {
                proptest::prop_assert!(!raw.contains('/') && raw.len() <= MAX_BUCKET_CHARS);
            }
        }
    }

    #[test]
    fn tags_parse_strictly() {
        let mut h = HeaderMap::new();
        h.insert(
            IF_MATCH,
            HeaderValue::from_static("\"1a\", W/\"2\", \"zz\""),
        );
        assert_eq!(
            parse_tags(&h, IF_MATCH),
            Ok(Some(IfMatch::Versions(vec![0x1a])))
        );
        h.insert(IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(parse_tags(&h, IF_MATCH), Ok(Some(IfMatch::Any)));
        h.insert(IF_MATCH, HeaderValue::from_static("unquoted"));
        assert!(parse_tags(&h, IF_MATCH).is_err());
    }

    #[test]
    fn list_query_rules() {
        assert_eq!(list_query(None), Ok((String::new(), 100, None)));
        assert_eq!(
            list_query(Some("prefix=a%2F&limit=5&after=a%2F1")),
            Ok(("a/".to_owned(), 5, Some("a/1".to_owned())))
        );
        for bad in ["limit=0", "limit=1001", "limit=x", "foo=1", "prefix=%zz"] {
            assert!(list_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
