//! KV: `PUT / GET / HEAD / DELETE /v1/kv/{bucket}/{*key}` and
//! `GET /v1/kv/{bucket}?prefix=&limit=&after=&values=`. The engine-neutral limits (bucket,
//! key, content type) are checked here, once, and answered 400; engines only store. Entity
//! tags, conditions and TTLs are parsed here for the transaction handler too.

use std::sync::Arc;

use http::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{Cx, Step};
use crate::error::ApiError;
use crate::guards::tenant::TenantResult;
use crate::metrics::{KvOp, Metrics};
use crate::response::{self, OCTET_STREAM, Resp};
use crate::store::{
    Cond, ErrorKind, IfMatch, ListOpts, Page, PutOutcome, Read, Record, Storage, StoreError,
};
use crate::wire::{MICRONODE_EXPIRES_AT, MICRONODE_REVISION, Query};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

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
    check_key(&key)?;
    Ok(key)
}

/// The key rules on an already decoded key (a transaction's keys come decoded, in JSON).
pub fn check_key(key: &str) -> Result<(), ApiError> {
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
    Ok(())
}

fn bucket_and_key<'a>(cx: &Cx<'a>) -> Result<(&'a str, String), ApiError> {
    let bucket = cx.param("bucket");
    if !valid_bucket(bucket) {
        return Err(ApiError::BadRequest("invalid bucket name"));
    }
    Ok((bucket, decode_key(cx.param("key"))?))
}

/// `"<R>"`: the decimal revision of the key's last write, a strong validator.
pub fn etag(revision: u64) -> HeaderValue {
    // Digits written right to left into a stack buffer: one copy into the header, no
    // intermediate String (this is on every GET).
    let mut buf = [b'"'; 22];
    let mut at = buf.len() - 1;
    let mut n = revision;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&buf[at - 1..]).expect("quoted digits are a valid header value")
}

/// The revision an entity tag names, when it is exactly one we mint (`"<R>"`, canonical
/// decimal): `"000c"`, `"+12"` or `"012"` name none.
pub fn tag_revision(inner: &str) -> Option<u64> {
    let canonical = !inner.is_empty()
        && inner.bytes().all(|b| b.is_ascii_digit())
        && (inner == "0" || !inner.starts_with('0'));
    canonical.then(|| inner.parse().ok()).flatten()
}

/// How entity tags are compared (RFC 9110, 8.8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `If-Match`: weak tags never match.
    Strong,
    /// `If-None-Match`: `W/"12"` matches `"12"`.
    Weak,
}

/// Parses an `If-Match` / `If-None-Match` header: `*` or a list of entity tags. Tags that
/// cannot match under the comparison (weak ones under strong comparison, tags we never mint)
/// are dropped, so a list of only those never matches. A value that is not a list of entity
/// tags is 400.
pub fn parse_tags(
    headers: &HeaderMap,
    name: HeaderName,
    comparison: Comparison,
) -> Result<Option<IfMatch>, ApiError> {
    let mut values = headers.get_all(&name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut versions = Vec::new();
    let mut any = false;
    for v in values {
        let s = v
            .to_str()
            .map_err(|_| ApiError::BadRequest("invalid precondition header"))?;
        for tag in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tag == "*" {
                any = true;
                continue;
            }
            let (weak, opaque) = match tag.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, tag),
            };
            let inner = opaque
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .filter(|t| !t.contains('"'))
                .ok_or(ApiError::BadRequest(
                    "invalid entity tag: expected a quoted revision or *",
                ))?;
            if weak && comparison == Comparison::Strong {
                continue;
            }
            if let Some(r) = tag_revision(inner) {
                versions.push(r);
            }
        }
    }
    // Every element was checked above, so `*, junk` is 400; `*` among valid tags means `*`.
    if any {
        Ok(Some(IfMatch::Any))
    } else {
        Ok(Some(IfMatch::Versions(versions)))
    }
}

/// The conditions of a PUT or DELETE: `If-Match` compared strongly, `If-None-Match` weakly.
pub fn write_cond(headers: &HeaderMap) -> Result<Cond, ApiError> {
    Ok(Cond {
        if_match: parse_tags(headers, IF_MATCH, Comparison::Strong)?,
        if_none_match: parse_tags(headers, IF_NONE_MATCH, Comparison::Weak)?,
    })
}

/// The one mapping from a store error to an answer. Engine failures are logged with the
/// request id and their cause.
pub fn store_error(request_id: &HeaderValue, e: StoreError) -> ApiError {
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

/// A 404 or 412 from the store names the revision the store had reached (the state it was
/// judged on is no older).
/// Counts a write refused by the tenant's storage quota.
pub fn quota_refusal(cx: &Cx<'_>, e: &StoreError) {
    if e.kind() == ErrorKind::Quota {
        cx.app
            .tenants
            .count(cx.tenant(), TenantResult::QuotaStorage);
    }
}

fn store_error_at(request_id: &HeaderValue, e: StoreError, store: &dyn Storage) -> ApiError {
    match store_error(request_id, e) {
        error @ (ApiError::NotFound | ApiError::PreconditionFailed) => ApiError::At {
            error: Box::new(error),
            revision: store.revision(),
        },
        other => other,
    }
}

/// Whether KV reads may wait for the engine (and so run as futures).
pub fn reads_wait(app: &crate::app::App) -> bool {
    app.store.reads_wait()
}

fn revision_header(resp: &mut Resp, revision: u64) {
    resp.headers_mut()
        .insert(MICRONODE_REVISION, HeaderValue::from(revision));
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
    if_match: Option<IfMatch>,
    if_none_match: Option<IfMatch>,
    head: bool,
}

impl GetShape {
    fn of(cx: &Cx<'_>) -> Result<GetShape, ApiError> {
        let headers = &cx.head.headers;
        Ok(GetShape {
            if_match: parse_tags(headers, IF_MATCH, Comparison::Strong)?,
            if_none_match: parse_tags(headers, IF_NONE_MATCH, Comparison::Weak)?,
            head: cx.head.method == http::Method::HEAD,
        })
    }

    /// RFC 9110, 13.2.2: a missing key is 404 whatever the conditions; then `If-Match`
    /// (false → 412), then `If-None-Match` (a match → 304).
    fn answer(
        &self,
        metrics: &Metrics,
        request_id: &HeaderValue,
        found: Result<Read, StoreError>,
    ) -> Result<Resp, ApiError> {
        let read = found.map_err(|e| store_error(request_id, e))?;
        let Some(record) = read.record else {
            return Err(ApiError::At {
                error: Box::new(ApiError::NotFound),
                revision: read.revision,
            });
        };
        let current = Some(record.revision);
        let if_match = Cond {
            if_match: self.if_match.clone(),
            if_none_match: None,
        };
        if !if_match.holds(current) {
            return Err(ApiError::At {
                error: Box::new(ApiError::PreconditionFailed),
                revision: read.revision,
            });
        }
        let if_none_match = Cond {
            if_match: None,
            if_none_match: self.if_none_match.clone(),
        };
        let mut resp = if if_none_match.holds(current) {
            let content_type = if record.content_type.is_empty() {
                OCTET_STREAM
            } else {
                HeaderValue::from_maybe_shared(record.content_type).unwrap_or(OCTET_STREAM)
            };
            if !self.head {
                metrics.kv_bytes_out(record.value.len());
            }
            response::with_body(StatusCode::OK, content_type, record.value)
        } else {
            response::empty(StatusCode::NOT_MODIFIED)
        };
        let headers = resp.headers_mut();
        headers.insert(ETAG, etag(record.revision));
        if let Some(at) = record.expires_at {
            headers.insert(MICRONODE_EXPIRES_AT, HeaderValue::from(at));
        }
        revision_header(&mut resp, read.revision);
        Ok(resp)
    }
}

/// Longest TTL: ten years.
pub const MAX_TTL_SECS: u64 = 315_360_000;

/// `ttl` in seconds (1 to 315,360,000) → the Unix second the key expires at: at least `ttl`
/// whole seconds from now (the current second is rounded up).
pub fn parse_ttl(raw: &str) -> Result<u64, ApiError> {
    let ttl = tag_revision(raw)
        .filter(|t| (1..=MAX_TTL_SECS).contains(t))
        .ok_or(ApiError::BadRequest("ttl must be 1 to 315360000 seconds"))?;
    Ok(expiry_after(ttl))
}

/// The Unix second `ttl` seconds from now, rounded up.
pub fn expiry_after(ttl: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() + u64::from(now.subsec_nanos() > 0) + ttl
}

/// The content type of a PUT: the request's, or `application/octet-stream`.
fn put_content_type(headers: &HeaderMap) -> Result<Vec<u8>, ApiError> {
    match headers.get(CONTENT_TYPE) {
        Some(ct) if ct.len() > MAX_CONTENT_TYPE_BYTES => Err(ApiError::BadRequest(
            "Content-Type must be at most 1024 bytes",
        )),
        Some(ct) => Ok(ct.as_bytes().to_vec()),
        None => Ok(OCTET_STREAM.as_bytes().to_vec()),
    }
}

// PUT /v1/kv/{bucket}/{*key}?ttl=
pub async fn put_kv(mut cx: Cx<'_>) -> Result<Resp, ApiError> {
    let (bucket, key) = bucket_and_key(&cx)?;
    let cond = write_cond(&cx.head.headers)?;
    let expires_at = cx.query.get("ttl").map(parse_ttl).transpose()?;
    let content_type = put_content_type(&cx.head.headers)?;
    let bytes = cx.read_body().await?;
    cx.app.metrics.kv_op(KvOp::Put);
    cx.app.metrics.kv_bytes_in(bytes.len());
    // Resolves once the write is as durable as the configured mode promises.
    let store = &*cx.app.store;
    let outcome = store
        .put(
            bucket,
            &key,
            &content_type,
            &bytes,
            expires_at,
            &cond,
            cx.tenant(),
        )
        .await
        .map_err(|e| {
            quota_refusal(&cx, &e);
            store_error_at(cx.request_id, e, store)
        })?;
    let (status, revision) = match outcome {
        PutOutcome::Created(v) => (StatusCode::CREATED, v),
        PutOutcome::Replaced(v) => (StatusCode::NO_CONTENT, v),
    };
    let mut resp = response::empty(status);
    resp.headers_mut().insert(ETAG, etag(revision));
    if let Some(at) = expires_at {
        resp.headers_mut()
            .insert(MICRONODE_EXPIRES_AT, HeaderValue::from(at));
    }
    revision_header(&mut resp, revision);
    Ok(resp)
}

// DELETE /v1/kv/{bucket}/{*key}
pub async fn delete_kv(cx: Cx<'_>) -> Result<Resp, ApiError> {
    let (bucket, key) = bucket_and_key(&cx)?;
    let cond = write_cond(&cx.head.headers)?;
    cx.app.metrics.kv_op(KvOp::Del);
    let store = &*cx.app.store;
    let revision = store
        .delete(bucket, &key, &cond)
        .await
        .map_err(|e| store_error_at(cx.request_id, e, store))?;
    let mut resp = response::empty(StatusCode::NO_CONTENT);
    revision_header(&mut resp, revision);
    Ok(resp)
}

/// A list page's values are cut once they pass this many bytes.
pub const LIST_VALUE_BYTES: usize = 4 << 20;

/// What a listing asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub prefix: String,
    pub after: Option<String>,
    pub opts: ListOpts,
}

/// `true` or `false`.
pub fn parse_bool(raw: &str, message: &'static str) -> Result<bool, ApiError> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::BadRequest(message)),
    }
}

/// `prefix`, `limit`, `after`, `values` (the route admits no other parameter).
pub fn list_query(query: &Query) -> Result<ListQuery, ApiError> {
    let prefix = query.get("prefix").unwrap_or("").to_owned();
    let after = query.get("after").map(str::to_owned);
    let limit = match query.get("limit") {
        None => DEFAULT_LIST_LIMIT,
        Some(raw) => tag_revision(raw)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or(ApiError::BadRequest("limit must be 1 to 1000"))?,
    };
    let values = match query.get("values") {
        None => false,
        Some(raw) => parse_bool(raw, "values must be true or false")?,
    };
    if prefix.len() > MAX_KEY_BYTES || after.as_ref().is_some_and(|a| a.len() > MAX_KEY_BYTES) {
        return Err(ApiError::BadRequest(
            "prefix and after must be at most 1024 bytes",
        ));
    }
    Ok(ListQuery {
        prefix,
        after,
        opts: ListOpts {
            limit,
            values: values.then_some(LIST_VALUE_BYTES),
        },
    })
}

// GET /v1/kv/{bucket}?prefix=&limit=&after=&values=
pub fn list_kv(cx: Cx<'_>) -> Step<'_> {
    let bucket = cx.param("bucket");
    if !valid_bucket(bucket) {
        return Step::Done(Err(ApiError::BadRequest("invalid bucket name")));
    }
    let q = match list_query(&cx.query) {
        Ok(q) => q,
        Err(e) => return Step::Done(Err(e)),
    };
    cx.app.metrics.kv_op(KvOp::List);
    let values = q.opts.values.is_some();
    match cx
        .app
        .store
        .list(bucket, &q.prefix, q.after.as_deref(), q.opts)
        .into_ready()
    {
        Ok(page) => Step::Done(answer_list(cx.request_id, values, page)),
        // The listing may show writes not yet durable: answer once they are.
        Err(call) => {
            let request_id = cx.request_id.clone();
            Step::Detached(Box::pin(async move {
                answer_list(&request_id, values, call.await)
            }))
        }
    }
}

/// One `items` entry of a listing with values (also a transaction's get result).
pub fn record_json(key: Option<&str>, r: &Record) -> serde_json::Value {
    let mut item = serde_json::Map::new();
    if let Some(k) = key {
        item.insert("key".into(), k.into());
    }
    item.insert("etag".into(), format!("\"{}\"", r.revision).into());
    item.insert(
        "content_type".into(),
        String::from_utf8_lossy(&r.content_type).into_owned().into(),
    );
    item.insert("value".into(), BASE64.encode(&r.value).into());
    if let Some(at) = r.expires_at {
        item.insert("expires_at".into(), at.into());
    }
    serde_json::Value::Object(item)
}

fn answer_list(
    request_id: &HeaderValue,
    values: bool,
    page: Result<Page, StoreError>,
) -> Result<Resp, ApiError> {
    let page = page.map_err(|e| store_error(request_id, e))?;
    let body = if values {
        let items: Vec<_> = page
            .keys
            .iter()
            .zip(&page.records)
            .map(|(k, r)| record_json(Some(k), r))
            .collect();
        serde_json::json!({ "items": items, "next": page.next, "revision": page.revision })
    } else {
        serde_json::json!({ "keys": page.keys, "next": page.next, "revision": page.revision })
    };
    let mut resp = response::json(StatusCode::OK, body.to_string());
    revision_header(&mut resp, page.revision);
    Ok(resp)
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
            HeaderValue::from_static("\"26\", W/\"2\", \"zz\", \"000c\", \"+12\", \"012\""),
        );
        assert_eq!(
            parse_tags(&h, IF_MATCH, Comparison::Strong),
            Ok(Some(IfMatch::Versions(vec![26])))
        );
        assert_eq!(
            parse_tags(&h, IF_MATCH, Comparison::Weak),
            Ok(Some(IfMatch::Versions(vec![26, 2])))
        );
        h.insert(IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(
            parse_tags(&h, IF_MATCH, Comparison::Strong),
            Ok(Some(IfMatch::Any))
        );
        for bad in ["unquoted", "\"a\"b\"", "W/unquoted", "*, junk", "junk, *"] {
            h.insert(IF_MATCH, HeaderValue::from_static(bad));
            assert!(
                parse_tags(&h, IF_MATCH, Comparison::Strong).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn etags_are_decimal_revisions() {
        assert_eq!(etag(1042), HeaderValue::from_static("\"1042\""));
        assert_eq!(etag(0), HeaderValue::from_static("\"0\""));
        assert_eq!(etag(u64::MAX), format!("\"{}\"", u64::MAX).as_str());
        assert_eq!(tag_revision("1042"), Some(1042));
        assert_eq!(tag_revision("0"), Some(0));
        for bad in ["", "01", "+1", "-1", "1a", " 1", "18446744073709551616"] {
            assert_eq!(tag_revision(bad), None, "{bad}");
        }
    }

    fn q(raw: &str) -> Query {
        Query::parse(raw, &["prefix", "limit", "after", "values"]).expect("valid query")
    }

    #[test]
    fn list_query_rules() {
        let lq = list_query(&Query::default()).expect("defaults");
        assert_eq!(
            (lq.prefix.as_str(), lq.opts.limit, lq.after),
            ("", 100, None)
        );
        let lq = list_query(&q("prefix=a%2F&limit=5&after=a+1&values=true")).expect("valid");
        assert_eq!(lq.prefix, "a/");
        assert_eq!(lq.after.as_deref(), Some("a 1"));
        assert_eq!(lq.opts.limit, 5);
        assert_eq!(lq.opts.values, Some(LIST_VALUE_BYTES));
        for bad in ["limit=0", "limit=1001", "limit=x", "limit=05", "values=yes"] {
            assert!(list_query(&q(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn ttl_rules() {
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("315360001").is_err());
        assert!(parse_ttl("1.5").is_err());
        let now = crate::store::now_secs();
        let at = parse_ttl("10").expect("valid ttl");
        assert!(at >= now + 10 && at <= now + 11, "{at} vs {now}");
    }
}
