//! Storage: the [`Storage`] trait the KV handlers see, and its engines — `sled` (durable,
//! default) and `mem` (tests, dev, amnesia). How the engines keep data, and what a 2xx
//! guarantees in each durability mode, is in docs/STORAGE.md.
//!
//! The contract in one paragraph: every call returns a [`StoreCall`], complete at once or later;
//! a write is a list of [`WriteOp`]s applied in one engine step under one fresh revision, with its
//! conditions checked inside that step, and its call resolves only once the write is as durable
//! as the configured mode promises; errors carry an [`ErrorKind`]; `health` is a cheap up/down.

mod call;
pub mod dump;
pub mod feed;
pub mod mem;
pub mod postgres;
pub mod sled_engine;
pub mod ttl;
pub mod usage;

use std::sync::Arc;

use bytes::Bytes;

pub use call::{ErrorKind, StoreCall, StoreError, is_disk_full};
pub use feed::{Event, EventKind, Feed};

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
    /// Unix seconds from which the record is gone: invisible at once, removed by the sweeper.
    pub expires_at: Option<u64>,
}

impl Record {
    /// Whether the record is still visible at `now` (Unix seconds).
    pub fn live(&self, now: u64) -> bool {
        live(self.expires_at, now)
    }

    /// Whether the record is visible now; reads the clock only for a record with a TTL.
    pub fn live_now(&self) -> bool {
        self.expires_at.is_none_or(|at| now_secs() < at)
    }
}

/// Whether a record expiring at `expires_at` is visible at `now`.
pub fn live(expires_at: Option<u64>, now: u64) -> bool {
    expires_at.is_none_or(|at| now < at)
}

/// The time in whole Unix seconds, as expiry is judged.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `If-Match` as parsed from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: the key must exist.
    Any,
    /// One of these revisions must be current. Tags that are not exactly one of our
    /// revisions (`"000c"`, `W/"12"`, `"x"`) are kept out, so a list of only such tags can
    /// never match.
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
        /// The tenant the record will count for ([`usage::SYSTEM`]: nobody).
        owner: &'a str,
    },
    /// Removes the key; a missing (or expired) key is left alone (see [`Written::existed`]).
    /// `expire`: the sweeper removing an expired record (the `cond` names its revision); the
    /// watch event is `expire` and the record must really have expired.
    Delete {
        bucket: &'a str,
        key: &'a str,
        cond: &'a Cond,
        expire: bool,
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
    /// With values: the record of each key, in the same order; else empty.
    pub records: Vec<Record>,
    /// The last key of this page when more follow.
    pub next: Option<String>,
    /// The store revision the page reflects: every write up to it is in the page, and the
    /// page shows no write that could still be lost.
    pub revision: u64,
}

/// What a listing asks for besides the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOpts {
    pub limit: usize,
    /// Return the records too, cutting the page once their values pass this many bytes
    /// (at least one record is always returned).
    pub values: Option<usize>,
}

/// A record read with the store revision it reflects (`Micronode-Revision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub record: Option<Record>,
    pub revision: u64,
}

/// One compare of a transaction: a condition on one key, judged like a write's.
#[derive(Debug, Clone, Copy)]
pub struct Compare<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub cond: &'a Cond,
}

/// One op of a transaction branch.
#[derive(Debug, Clone, Copy)]
pub enum TxnOp<'a> {
    Write(WriteOp<'a>),
    Get { bucket: &'a str, key: &'a str },
}

/// A transaction: if every compare holds, `then`, else `otherwise` — judged and applied at one
/// point of the revision order, all writes under one revision.
#[derive(Debug, Clone, Copy)]
pub struct Txn<'a> {
    pub compares: &'a [Compare<'a>],
    pub then: &'a [TxnOp<'a>],
    pub otherwise: &'a [TxnOp<'a>],
}

/// The result of one op of the branch taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Put { revision: u64 },
    Delete { deleted: bool },
    Get(Option<Record>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    pub succeeded: bool,
    /// The revision of the writes, or the store revision the reads reflect when nothing was
    /// written.
    pub revision: u64,
    pub results: Vec<OpResult>,
}

/// A record the sweeper should remove: it expired at or before the time asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    pub bucket: String,
    pub key: String,
    pub revision: u64,
}

/// What the KV handlers need from an engine.
///
/// Calls return a [`StoreCall`]: engines that can answer at once do so without allocating;
/// engines that wait (a group commit, a network round trip) return a pending call. A write
/// resolves only once it is as durable as the configured mode promises — there is no separate
/// commit step — and no read, listing, failed condition or watch event shows a write that is
/// not yet that durable (docs/STORAGE.md, "Visibility = durability").
///
/// Every engine shares these rules: one store-wide revision counter in commit order; an
/// expired record is invisible at once to every call (reads, lists, conditions, transactions)
/// and removed by the sweeper through [`Storage::expired`] and an `expire` delete; each applied
/// step is appended to the engine's [`Feed`] and released to watchers once durable.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The live record of `bucket`/`key`, if any, and the store revision the read reflects.
    fn get(&self, bucket: &str, key: &str) -> StoreCall<Read>;

    /// Applies `ops` (1 to [`MAX_WRITE_OPS`]) as one step: checks every condition, takes one
    /// revision, writes, and resolves once durable. A failed condition is
    /// [`ErrorKind::Precondition`] and nothing is applied.
    fn write(&self, ops: &[WriteOp<'_>]) -> StoreCall<Written>;

    /// Live keys of `bucket` starting with `prefix`, strictly after `after`, in byte order.
    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        opts: ListOpts,
    ) -> StoreCall<Page>;

    /// Judges the compares and applies the branch taken, as one step under the writer lock
    /// (see [`run_txn`]); resolves once its writes (or the state it read) are durable.
    fn txn(&self, txn: &Txn<'_>) -> StoreCall<TxnOutcome>;

    /// Up to `limit` records whose expiry is at or before `now`, oldest expiry first.
    fn expired(&self, now: u64, limit: usize) -> Result<Vec<Expiring>, StoreError>;

    /// Up to `limit` live records in engine-key order, strictly after the engine key `after`
    /// (see [`compose`]): `(engine key, bucket, key, record)`. Not a point-in-time view by
    /// itself; snapshots make it one with the feed (see `snapshot` in this module).
    fn scan(
        &self,
        after: Option<&[u8]>,
        limit: usize,
        now: u64,
    ) -> Result<Vec<Scanned>, StoreError>;

    /// The newest revision every answer may show: applied and as durable as the mode
    /// promises.
    fn revision(&self) -> u64;

    /// The revision of the last step applied, read under the writer lock so that no step is
    /// half applied at that moment (snapshots take their bounds with it).
    fn applied_revision(&self) -> Result<u64, StoreError>;

    /// Resolves once every revision up to `revision` is durable.
    fn settle(&self, revision: u64) -> StoreCall<()>;

    /// The change feed of this engine.
    fn feed(&self) -> &Feed;

    /// Whether the engine is up. An atomic load; false after a failed flush until the next
    /// successful one.
    fn health(&self) -> bool;

    /// While the engine is down, tries to bring it back (a flush): called by the sweeper's
    /// tick, since a down engine gets no writes that would flush it. Blocking, short.
    fn probe(&self) {}

    /// Whether reads ([`Storage::get`], [`Storage::list`]) may return a pending call, so the
    /// handlers must run them as futures. False for `sled` and `mem`.
    fn reads_wait(&self) -> bool {
        false
    }

    /// The per-tenant usage this engine keeps, when tracked.
    fn usage(&self) -> Option<&usage::Usage>;

    /// The engine's database connections, `(idle, busy)`, when it has a pool (postgres).
    fn pool_connections(&self) -> Option<(usize, usize)> {
        None
    }

    /// Flushes everything to stable storage now and stops background work (shutdown).
    /// Blocking.
    fn flush_blocking(&self) -> Result<(), StoreError>;

    /// One PUT: `Created`/`Replaced` with the new revision; the record counts for `owner`.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &self,
        bucket: &str,
        key: &str,
        content_type: &[u8],
        value: &Bytes,
        expires_at: Option<u64>,
        cond: &Cond,
        owner: &str,
    ) -> StoreCall<PutOutcome> {
        let op = WriteOp::Put {
            bucket,
            key,
            content_type,
            value,
            expires_at,
            cond,
            owner,
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
        let op = WriteOp::Delete {
            bucket,
            key,
            cond,
            expire: false,
        };
        self.write(&[op]).map(|w| match w.existed(0) {
            true => Ok(w.revision),
            false => Err(StoreError::not_found()),
        })
    }
}

/// One record of [`Storage::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub engine_key: Vec<u8>,
    pub bucket: String,
    pub key: String,
    pub record: Record,
    /// The tenant the record counts for; `None` = `default`.
    pub owner: Option<String>,
}

/// An engine's state under its writer lock, as a transaction sees it.
pub(crate) trait Locked {
    /// The record of a key as stored (expired or not).
    fn read(&mut self, bucket: &str, key: &str) -> Result<Option<Record>, StoreError>;
    /// Applies one write step (conditions included) under the lock already held.
    fn apply(&mut self, ops: &[WriteOp<'_>], now: u64) -> Result<Written, StoreError>;
}

/// A transaction against an engine's locked state: compares, then the branch's gets and
/// writes. A get sees the writes of earlier ops of its branch (and the revision they take);
/// writes carry no condition of their own (the compares were judged under the same lock).
pub(crate) fn run_txn(
    view: &mut impl Locked,
    txn: &Txn<'_>,
    now: u64,
) -> Result<(TxnOutcome, bool), StoreError> {
    let mut succeeded = true;
    for c in txn.compares {
        let current = view
            .read(c.bucket, c.key)?
            .filter(|r| r.live(now))
            .map(|r| r.revision);
        if !c.cond.holds(current) {
            succeeded = false;
            break;
        }
    }
    let branch = if succeeded { txn.then } else { txn.otherwise };
    let writes: Vec<WriteOp<'_>> = branch
        .iter()
        .filter_map(|op| match op {
            TxnOp::Write(w) => Some(*w),
            TxnOp::Get { .. } => None,
        })
        .collect();
    // Gets not shadowed by an earlier write of the branch read the state before the step.
    let mut results = Vec::with_capacity(branch.len());
    for (i, op) in branch.iter().enumerate() {
        results.push(match *op {
            TxnOp::Get { bucket, key } => {
                let shadowed = branch[..i].iter().any(|o| match o {
                    TxnOp::Write(w) => w.bucket_key() == (bucket, key),
                    TxnOp::Get { .. } => false,
                });
                if shadowed {
                    OpResult::Get(None) // filled in below, once the revision is known
                } else {
                    OpResult::Get(view.read(bucket, key)?.filter(|r| r.live(now)))
                }
            }
            TxnOp::Write(WriteOp::Put { .. }) => OpResult::Put { revision: 0 },
            TxnOp::Write(WriteOp::Delete { .. }) => OpResult::Delete { deleted: false },
        });
    }
    let (written, changed) = if writes.is_empty() {
        (None, false)
    } else {
        let w = view.apply(&writes, now)?;
        (Some(w), w.changed(&writes))
    };
    let mut write_index = 0;
    for (i, op) in branch.iter().enumerate() {
        match *op {
            TxnOp::Write(_) => {
                let w = written.expect("a branch with writes applied them");
                match &mut results[i] {
                    OpResult::Put { revision } => *revision = w.revision,
                    OpResult::Delete { deleted } => *deleted = w.existed(write_index),
                    OpResult::Get(_) => {}
                }
                write_index += 1;
            }
            TxnOp::Get { bucket, key } => {
                let last_write = branch[..i].iter().rev().find_map(|o| match o {
                    TxnOp::Write(w) if w.bucket_key() == (bucket, key) => Some(*w),
                    _ => None,
                });
                if let Some(w) = last_write {
                    let revision = written.map_or(0, |w| w.revision);
                    results[i] = OpResult::Get(match w {
                        WriteOp::Put {
                            content_type,
                            value,
                            expires_at,
                            ..
                        } => Some(Record {
                            value: value.clone(),
                            content_type: Bytes::copy_from_slice(content_type),
                            revision,
                            expires_at,
                        }),
                        WriteOp::Delete { .. } => None,
                    });
                }
            }
        }
    }
    let outcome = TxnOutcome {
        succeeded,
        revision: written.map_or(0, |w| w.revision),
        results,
    };
    Ok((outcome, changed))
}

/// The feed events of an applied step.
pub(crate) fn events_of(ops: &[WriteOp<'_>], written: &Written) -> Vec<Event> {
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let (bucket, key) = op.bucket_key();
        let (kind, value, content_type, expires_at, owner) = match *op {
            WriteOp::Put {
                value,
                content_type,
                expires_at,
                owner,
                ..
            } => (
                EventKind::Put,
                value.clone(),
                Bytes::copy_from_slice(content_type),
                expires_at,
                (owner != crate::config::DEFAULT_TENANT).then(|| owner.into()),
            ),
            WriteOp::Delete { expire, .. } => {
                if !written.existed(i) {
                    continue;
                }
                let kind = if expire {
                    EventKind::Expire
                } else {
                    EventKind::Delete
                };
                (kind, Bytes::new(), Bytes::new(), None, None)
            }
        };
        out.push(Event {
            revision: written.revision,
            kind,
            bucket: bucket.into(),
            key: key.into(),
            value,
            content_type,
            expires_at,
            owner,
        });
    }
    out
}

/// The revision a write condition is judged against, and whether the key counts as existing:
/// an expired record is absent, except to the sweeper's `expire` delete, which needs it to be
/// there with the revision it names and really expired.
pub(crate) fn judged(
    op: &WriteOp<'_>,
    old: Option<(u64, Option<u64>)>,
    now: u64,
) -> Result<Option<u64>, StoreError> {
    let expire = matches!(op, WriteOp::Delete { expire: true, .. });
    let current = match old {
        Some((revision, expires_at)) if expire => {
            if live(expires_at, now) {
                return Err(StoreError::precondition());
            }
            Some(revision)
        }
        Some((revision, expires_at)) if live(expires_at, now) => Some(revision),
        _ => None,
    };
    if !op.cond().holds(current) {
        return Err(StoreError::precondition());
    }
    Ok(current)
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
/// Opens the configured engine; `usage` is the per-tenant usage it keeps, when tracked.
pub fn open(
    cfg: &Config,
    metrics: Arc<Metrics>,
    usage: Option<Arc<usage::Usage>>,
) -> Result<Arc<dyn Storage>, String> {
    match cfg.storage.effective_engine() {
        Engine::Mem => Ok(Arc::new(mem::MemStore::new(cfg.watch.history, usage))),
        Engine::Sled => {
            let s = sled_engine::SledStore::open(&cfg.storage, cfg.watch.history, metrics, usage)?;
            Ok(Arc::new(s))
        }
        Engine::Postgres => {
            let s = postgres::PgStore::open(&cfg.postgres, cfg.watch.history, usage)?;
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

/// A page from an ordered iterator over live `(key without bucket prefix, record)`.
pub(crate) fn page_from<I>(items: I, opts: ListOpts, revision: u64) -> Result<Page, StoreError>
where
    I: Iterator<Item = Result<(String, Record), StoreError>>,
{
    let mut keys = Vec::with_capacity(opts.limit.min(1024));
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let mut more = false;
    for item in items {
        let (k, r) = item?;
        let cut = opts
            .values
            .is_some_and(|max| !keys.is_empty() && bytes >= max);
        if keys.len() == opts.limit || cut {
            more = true;
            break;
        }
        keys.push(k);
        if opts.values.is_some() {
            bytes += r.value.len();
            records.push(r);
        }
    }
    let next = if more { keys.last().cloned() } else { None };
    Ok(Page {
        keys,
        records,
        next,
        revision,
    })
}

/// `(bucket, key)` of an engine key.
pub(crate) fn split(engine_key: &[u8]) -> Result<(String, String), StoreError> {
    let s = std::str::from_utf8(engine_key)
        .map_err(|_| StoreError::internal("non-UTF-8 key in store"))?;
    let (bucket, key) = s
        .split_once('/')
        .ok_or_else(|| StoreError::internal("engine key without a bucket"))?;
    Ok((bucket.to_owned(), key.to_owned()))
}

#[cfg(test)]
mod suite;
