//! Storage: the [`Storage`] trait the KV handlers see, and its two engines — `sled` (durable,
//! default) and `mem` (tests, dev, amnesia). Conditional writes compare the stored version and
//! write in one atomic step inside the engine.

mod commit;
pub mod mem;
pub mod sled_engine;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{Config, Engine};
use crate::metrics::Metrics;

/// A stored value: its bytes, the content type it was written with, and a version that
/// changes on every write (the `ETag`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub bytes: Bytes,
    pub content_type: Bytes,
    pub version: u64,
}

/// `If-Match` as parsed from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: the key must exist.
    Any,
    /// One of these versions must be current. Unparsable tags are kept out, so a list of
    /// only foreign tags can never match.
    Versions(Vec<u64>),
}

/// The preconditions of a write, checked atomically with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cond {
    pub if_match: Option<IfMatch>,
    /// `If-None-Match`: `*` = create only; tags = the current version must be none of them.
    pub if_none_match: Option<IfMatch>,
}

impl Cond {
    pub fn is_none(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Whether the write may go ahead given the current version (`None` = absent).
    pub fn holds(&self, current: Option<u64>) -> bool {
        match (&self.if_none_match, current) {
            (Some(IfMatch::Any), Some(_)) => return false,
            (Some(IfMatch::Versions(vs)), Some(v)) if vs.contains(&v) => return false,
            _ => {}
        }
        match (&self.if_match, current) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(IfMatch::Any), Some(_)) => true,
            (Some(IfMatch::Versions(vs)), Some(v)) => vs.contains(&v),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created(u64),
    Replaced(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A precondition did not hold (412).
    Precondition,
    /// The engine failed; the text is for logs, never for a response body.
    Engine(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Precondition => f.write_str("precondition failed"),
            StoreError::Engine(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for StoreError {}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub keys: Vec<String>,
    /// The last key of this page when more follow.
    pub next: Option<String>,
}

/// Resolves once the writes made before it was asked for are as durable as the configured
/// mode promises.
pub type CommitWait = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// What the KV handlers need from an engine. Calls are short and synchronous (in-memory
/// work and page-cache writes); the only wait for the disk is [`Storage::commit`].
pub trait Storage: Send + Sync + std::fmt::Debug {
    fn get(&self, bucket: &str, key: &str) -> Result<Option<Value>, StoreError>;
    fn put(
        &self,
        bucket: &str,
        key: &str,
        content_type: &[u8],
        bytes: &[u8],
        cond: &Cond,
    ) -> Result<PutOutcome, StoreError>;
    /// `Ok(false)` when there was nothing to delete.
    fn delete(&self, bucket: &str, key: &str, cond: &Cond) -> Result<bool, StoreError>;
    /// Keys of `bucket` starting with `prefix`, strictly after `after`, in byte order.
    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError>;
    /// Waits for durability of every write completed before this call.
    fn commit(&self) -> CommitWait;
    /// Flushes everything to stable storage now (shutdown). Blocking.
    fn flush_blocking(&self) -> Result<(), StoreError>;
}

/// Opens the configured engine. The error names the path and the cause in one line.
pub fn open(cfg: &Config, metrics: Arc<Metrics>) -> Result<Arc<dyn Storage>, String> {
    match cfg.storage.effective_engine() {
        Engine::Mem => Ok(Arc::new(mem::MemStore::default())),
        Engine::Sled => {
            let s = sled_engine::SledStore::open(&cfg.storage, metrics)?;
            Ok(Arc::new(s))
        }
    }
}

/// The engine key of `bucket`/`key`. A bucket never contains `/`, so `bucket/` is a prefix
/// no other bucket shares and a key can never escape its bucket.
pub(crate) fn compose(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(b'/');
    k.extend_from_slice(key.as_bytes());
    k
}

/// The engine-key range of a listing: from `bucket/prefix` (or just after `bucket/after`),
/// while keys still start with `bucket/prefix`.
pub(crate) struct ListRange {
    pub prefix: Vec<u8>,
    pub lower: std::ops::Bound<Vec<u8>>,
    bucket_len: usize,
}

impl ListRange {
    pub fn new(bucket: &str, prefix: &str, after: Option<&str>) -> ListRange {
        let start = compose(bucket, prefix);
        let lower = match after {
            Some(a) if a.as_bytes() >= prefix.as_bytes() => {
                std::ops::Bound::Excluded(compose(bucket, a))
            }
            _ => std::ops::Bound::Included(start.clone()),
        };
        ListRange {
            prefix: start,
            lower,
            bucket_len: bucket.len(),
        }
    }

    /// The user key of an engine key in this range.
    pub fn user_key(&self, engine_key: &[u8]) -> Result<String, StoreError> {
        String::from_utf8(engine_key[self.bucket_len + 1..].to_vec())
            .map_err(|_| StoreError::Engine("non-UTF-8 key in store".to_owned()))
    }
}

/// A page from an ordered iterator over `(key without bucket prefix)`.
pub(crate) fn page_from<I>(keys: I, limit: usize) -> Result<Page, StoreError>
where
    I: Iterator<Item = Result<String, StoreError>>,
{
    let mut out = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    for k in keys {
        let k = k?;
        if out.len() == limit {
            more = true;
            break;
        }
        out.push(k);
    }
    let next = if more { out.last().cloned() } else { None };
    Ok(Page { keys: out, next })
}

#[cfg(test)]
mod suite {
    //! One trait-level suite, run against every engine.
    use super::*;
    use std::sync::Arc;

    fn all_engines() -> Vec<(Arc<dyn Storage>, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = crate::config::StorageCfg {
            path: dir.path().join("db"),
            ..Default::default()
        };
        cfg.durability = crate::config::Durability::Sync;
        let sled = sled_engine::SledStore::open(&cfg, Arc::new(Metrics::new(&[])))
            .expect("sled opens in a temp dir");
        vec![
            (Arc::new(mem::MemStore::default()) as Arc<dyn Storage>, None),
            (Arc::new(sled), Some(dir)),
        ]
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn put_get_replace_delete() {
        for (s, _dir) in all_engines() {
            let none = Cond::default();
            let v1 = match s.put("b", "k", b"text/plain", b"one", &none) {
                Ok(PutOutcome::Created(v)) => v,
                other => panic!("{s:?}: {other:?}"),
            };
            block_on(s.commit()).expect("commit");
            let got = s.get("b", "k").expect("get").expect("present");
            assert_eq!(&got.bytes[..], b"one");
            assert_eq!(&got.content_type[..], b"text/plain");
            assert_eq!(got.version, v1);
            let v2 = match s.put("b", "k", b"", b"two", &none) {
                Ok(PutOutcome::Replaced(v)) => v,
                other => panic!("{s:?}: {other:?}"),
            };
            assert_ne!(v1, v2, "version changes on every write");
            assert_eq!(
                s.get("other", "k").expect("get"),
                None,
                "buckets are separate"
            );
            assert_eq!(s.delete("b", "k", &none), Ok(true));
            assert_eq!(s.delete("b", "k", &none), Ok(false));
            assert_eq!(s.get("b", "k").expect("get"), None);
        }
    }

    #[test]
    fn conditions_are_checked_with_the_write() {
        for (s, _dir) in all_engines() {
            let create_only = Cond {
                if_none_match: Some(IfMatch::Any),
                ..Default::default()
            };
            let v = match s.put("b", "c", b"", b"x", &create_only) {
                Ok(PutOutcome::Created(v)) => v,
                other => panic!("{other:?}"),
            };
            assert_eq!(
                s.put("b", "c", b"", b"y", &create_only),
                Err(StoreError::Precondition)
            );
            let stale = Cond {
                if_match: Some(IfMatch::Versions(vec![v + 1000])),
                ..Default::default()
            };
            assert_eq!(
                s.put("b", "c", b"", b"y", &stale),
                Err(StoreError::Precondition)
            );
            assert_eq!(s.delete("b", "c", &stale), Err(StoreError::Precondition));
            let current = Cond {
                if_match: Some(IfMatch::Versions(vec![v])),
                ..Default::default()
            };
            assert!(matches!(
                s.put("b", "c", b"", b"y", &current),
                Ok(PutOutcome::Replaced(_))
            ));
            assert_eq!(
                s.put("b", "c", b"", b"z", &current),
                Err(StoreError::Precondition),
                "the old version no longer matches"
            );
            let any = Cond {
                if_match: Some(IfMatch::Any),
                ..Default::default()
            };
            assert_eq!(
                s.put("b", "missing", b"", b"z", &any),
                Err(StoreError::Precondition)
            );
            assert_eq!(s.delete("b", "c", &any), Ok(true));
        }
    }

    #[test]
    fn listing_is_ordered_prefixed_and_paged() {
        for (s, _dir) in all_engines() {
            for k in ["a/2", "a/1", "b", "a/10", "c"] {
                s.put("bk", k, b"", b"v", &Cond::default()).expect("put");
            }
            s.put("bk2", "a/0", b"", b"v", &Cond::default())
                .expect("put");
            let p = s.list("bk", "a/", None, 2).expect("list");
            assert_eq!(p.keys, ["a/1", "a/10"]);
            assert_eq!(p.next.as_deref(), Some("a/10"));
            let p = s.list("bk", "a/", p.next.as_deref(), 2).expect("list");
            assert_eq!(p.keys, ["a/2"]);
            assert_eq!(p.next, None);
            let p = s.list("bk", "", None, 100).expect("list");
            assert_eq!(p.keys, ["a/1", "a/10", "a/2", "b", "c"]);
        }
    }
}
