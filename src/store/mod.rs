//! Storage: the [`Storage`] trait the KV handlers see, and its engines — `sled` (durable,
//! default) and `mem` (tests, dev, amnesia). How the engines keep data, and what a 2xx
//! guarantees in each durability mode, is in docs/STORAGE.md.
//!
//! The contract in one paragraph: every call returns a [`StoreCall`], complete at once or later;
//! a write is a list of [`WriteOp`]s applied in one engine step under one fresh revision, with its
//! conditions checked inside that step, and its call resolves only once the write is as durable
//! as the configured mode promises; errors carry an [`ErrorKind`]; `health` is a cheap up/down.

mod call;
pub mod mem;
pub mod sled_engine;

use std::sync::Arc;

use bytes::Bytes;

pub use call::{ErrorKind, StoreCall, StoreError, is_disk_full};

use crate::config::{Config, Engine};
use crate::metrics::Metrics;

/// Longest content type stored, in bytes. Engine-neutral: the KV handlers answer 400 above it,
/// and engines refuse (never truncate) a longer one.
pub const MAX_CONTENT_TYPE_BYTES: usize = 1024;
/// Longest key, in bytes of UTF-8 (the bucket is not counted).
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest bucket name.
pub const MAX_BUCKET_BYTES: usize = 63;
/// Most ops in one write step (the largest transaction a later engine user may ask for).
pub const MAX_WRITE_OPS: usize = 64;

/// A stored record: the value, the content type it was written with, the revision of the write
/// that stored it (the `ETag`), and an optional expiry time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub value: Bytes,
    pub content_type: Bytes,
    /// The store revision of the last write of this key; strictly increasing in apply order
    /// and never reused, across restarts (docs/STORAGE.md, "Revisions").
    pub revision: u64,
    /// Unix seconds after which the record is gone. Stored and returned; nothing sets it yet.
    pub expires_at: Option<u64>,
}

/// `If-Match` as parsed from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: the key must exist.
    Any,
    /// One of these revisions must be current. Unparsable tags are kept out, so a list of
    /// only foreign tags can never match.
    Versions(Vec<u64>),
}

/// The preconditions of a write, checked atomically with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cond {
    pub if_match: Option<IfMatch>,
    /// `If-None-Match`: `*` = create only; tags = the current revision must be none of them.
    pub if_none_match: Option<IfMatch>,
}

impl Cond {
    /// No condition at all.
    pub const NONE: Cond = Cond {
        if_match: None,
        if_none_match: None,
    };

    pub fn is_none(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Whether the write may go ahead given the current revision (`None` = absent).
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

/// One change in a write step. A step applies all its ops or none, under one revision; every
/// op's condition is checked against the state before the step. A key appears at most once
/// per step. A transaction is a step with several ops; a TTL expiry is a `Delete`.
#[derive(Debug, Clone, Copy)]
pub enum WriteOp<'a> {
    Put {
        bucket: &'a str,
        key: &'a str,
        content_type: &'a [u8],
        value: &'a Bytes,
        /// Unix seconds; `None` clears any previous expiry.
        expires_at: Option<u64>,
        cond: &'a Cond,
    },
    /// Removes the key; a missing key is left alone (see [`Written::existed`]).
    Delete {
        bucket: &'a str,
        key: &'a str,
        cond: &'a Cond,
    },
}

impl WriteOp<'_> {
    pub fn bucket_key(&self) -> (&str, &str) {
        match *self {
            WriteOp::Put { bucket, key, .. } | WriteOp::Delete { bucket, key, .. } => (bucket, key),
        }
    }

    pub fn cond(&self) -> &Cond {
        match *self {
            WriteOp::Put { cond, .. } | WriteOp::Delete { cond, .. } => cond,
        }
    }
}

/// What a write step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The revision every op of the step wrote. When the step changed nothing (only deletes of
    /// missing keys) no revision is taken and this is the current one.
    pub revision: u64,
    /// Bit `i`: the key of op `i` existed before the step.
    existed: u64,
}

impl Written {
    pub fn new(revision: u64) -> Written {
        Written {
            revision,
            existed: 0,
        }
    }

    pub fn set_existed(&mut self, op: usize) {
        self.existed |= 1 << op;
    }

    /// Whether the key of op `op` existed before the step.
    pub fn existed(&self, op: usize) -> bool {
        op < MAX_WRITE_OPS && self.existed & (1 << op) != 0
    }

    /// Whether the step changed anything (a delete of a missing key does not).
    pub fn changed(&self, ops: &[WriteOp<'_>]) -> bool {
        ops.iter()
            .enumerate()
            .any(|(i, op)| matches!(op, WriteOp::Put { .. }) || self.existed(i))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created(u64),
    Replaced(u64),
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub keys: Vec<String>,
    /// The last key of this page when more follow.
    pub next: Option<String>,
}

/// What the KV handlers need from an engine.
///
/// Calls return a [`StoreCall`]: engines that can answer at once do so without allocating;
/// engines that wait (a group commit, a network round trip) return a pending call. A write
/// resolves only once it is as durable as the configured mode promises — there is no separate
/// commit step.
///
/// Room for what comes next, without another redesign:
/// - **Revisions**: [`Written::revision`] comes from one store-wide counter, so a
///   `Micronode-Revision` header and a watch position are the same number.
/// - **TTL**: [`Record::expires_at`] is stored by every engine (the `sled` record format
///   already carries it); a sweeper deletes with [`WriteOp::Delete`] under its own revision.
/// - **Transactions**: a transaction is one [`Storage::write`] with several ops.
/// - **Watch**: an engine publishes each applied step (revision + ops) to a change feed right
///   where its write step resolves — after the commit — so events are emitted only once durable
///   and in revision order; a `watch(since)` method returning a stream joins this trait then.
/// - **Snapshots**: a `snapshot()` method returning a point-in-time iterator at a revision
///   (sled: a scan under the write lock's revision; PostgreSQL: a repeatable-read transaction)
///   joins this trait then.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The record of `bucket`/`key`, if any.
    fn get(&self, bucket: &str, key: &str) -> StoreCall<Option<Record>>;

    /// Applies `ops` (1 to [`MAX_WRITE_OPS`]) as one step: checks every condition, takes one
    /// revision, writes, and resolves once durable. A failed condition is
    /// [`ErrorKind::Precondition`] and nothing is applied.
    fn write(&self, ops: &[WriteOp<'_>]) -> StoreCall<Written>;

    /// Keys of `bucket` starting with `prefix`, strictly after `after`, in byte order.
    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreCall<Page>;

    /// Whether the engine is up. An atomic load; false after a failed flush until the next
    /// successful one.
    fn health(&self) -> bool;

    /// Whether reads ([`Storage::get`], [`Storage::list`]) may return a pending call, so the
    /// handlers must run them as futures. False for `sled` and `mem`.
    fn reads_wait(&self) -> bool {
        false
    }

    /// Flushes everything to stable storage now and stops background work (shutdown).
    /// Blocking.
    fn flush_blocking(&self) -> Result<(), StoreError>;

    /// One PUT: `Created`/`Replaced` with the new revision.
    fn put(
        &self,
        bucket: &str,
        key: &str,
        content_type: &[u8],
        value: &Bytes,
        cond: &Cond,
    ) -> StoreCall<PutOutcome> {
        let op = WriteOp::Put {
            bucket,
            key,
            content_type,
            value,
            expires_at: None,
            cond,
        };
        self.write(&[op]).map(|w| {
            Ok(if w.existed(0) {
                PutOutcome::Replaced(w.revision)
            } else {
                PutOutcome::Created(w.revision)
            })
        })
    }

    /// One DELETE: the revision of the delete, or [`ErrorKind::NotFound`].
    fn delete(&self, bucket: &str, key: &str, cond: &Cond) -> StoreCall<u64> {
        self.write(&[WriteOp::Delete { bucket, key, cond }])
            .map(|w| match w.existed(0) {
                true => Ok(w.revision),
                false => Err(StoreError::not_found()),
            })
    }
}

/// Engine-side check of the engine-neutral limits: a caller that skipped the handler checks
/// gets an error, never a truncated record.
pub(crate) fn check_op(op: &WriteOp<'_>) -> Result<(), StoreError> {
    let (bucket, key) = op.bucket_key();
    if bucket.is_empty() || bucket.len() > MAX_BUCKET_BYTES || bucket.contains('/') {
        return Err(StoreError::internal(
            "bucket name outside the engine limits",
        ));
    }
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError::internal("key length outside the engine limits"));
    }
    if let WriteOp::Put { content_type, .. } = op
        && content_type.len() > MAX_CONTENT_TYPE_BYTES
    {
        return Err(StoreError::internal(
            "content type longer than the engine limit",
        ));
    }
    Ok(())
}

/// Checks a whole step: op count, limits, and no key twice.
pub(crate) fn check_step(ops: &[WriteOp<'_>]) -> Result<(), StoreError> {
    if ops.is_empty() || ops.len() > MAX_WRITE_OPS {
        return Err(StoreError::internal("a write step takes 1 to 64 ops"));
    }
    for (i, op) in ops.iter().enumerate() {
        check_op(op)?;
        if ops[..i].iter().any(|o| o.bucket_key() == op.bucket_key()) {
            return Err(StoreError::internal(
                "a key appears twice in one write step",
            ));
        }
    }
    Ok(())
}

/// Opens the configured engine. The error names the path and the cause in one line.
pub fn open(cfg: &Config, metrics: Arc<Metrics>) -> Result<Arc<dyn Storage>, String> {
    match cfg.storage.effective_engine() {
        Engine::Mem => Ok(Arc::new(mem::MemStore::new())),
        Engine::Sled => {
            let s = sled_engine::SledStore::open(&cfg.storage, metrics)?;
            Ok(Arc::new(s))
        }
    }
}

/// A revision floor from the clock: microseconds since the Unix epoch. Engines start their
/// counter at least here, so a revision (an ETag) held by a client across a restart — even
/// one after a data loss in `periodic` mode, or a wiped directory — never names a different
/// value (docs/STORAGE.md, "Revisions").
pub(crate) fn clock_floor() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
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
    pub(crate) fn new(bucket: &str, prefix: &str, after: Option<&str>) -> ListRange {
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
    pub(crate) fn user_key(&self, engine_key: &[u8]) -> Result<String, StoreError> {
        String::from_utf8(engine_key[self.bucket_len + 1..].to_vec())
            .map_err(|_| StoreError::internal("non-UTF-8 key in store"))
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
mod suite;
