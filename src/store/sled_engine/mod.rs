//! The `sled` engine (0.34). One tree holds records, the chunks of large values and engine
//! metadata (layout in `record.rs`, and in docs/STORAGE.md with the reasons).
//!
//! Power-loss safety rests on three rules:
//! - **sled never writes a blob file.** sled writes any page above `segment_size / 4` to a
//!   separate file on its own threads and never fsyncs it; a torn blob stops recovery and
//!   drops every later write. So no tree item is ever larger than 1/32 of that threshold:
//!   large values are split into chunks, written in the same atomic batch as the record that
//!   lists them (and old chunks removed in that batch), so no orphan can exist.
//! - **One writer at a time.** A mutex serializes write steps: read the current records, check
//!   the conditions, take the next revision, apply one `sled::Batch`. Revision order is apply
//!   order, so a key's ETag never goes backwards. Reads take no lock.
//! - **Our flush is `Db::flush` + `fdatasync` of the log**, run by the group-commit thread; a
//!   write in `sync` mode resolves after the flush that covers it.
//! - **Visibility = durability** (`sync` mode): an answer never shows a write that could still
//!   be lost. A read that sees a record newer than the last flush, an absence or listing while
//!   some write is not yet flushed, and a failed condition judged on such a state, all wait
//!   for the flush that covers it. With no write pending a read costs two atomic loads more.
//!
//! `dir.rs` makes the directory always reopen (sled's `conf` and snapshot files).

mod commit;
mod dir;
mod record;

use std::fs::File;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use self::commit::Committer;
use self::record::{Body, Sizing};
use super::usage::{self, Usage};
use super::{
    ErrorKind, Expiring, Feed, ListOpts, ListRange, Locked, Page, Read, Record, Scanned, StoreCall,
    StoreError, Txn, TxnOutcome, WriteOp, Written, check_step, clock_floor, compose, events_of,
    judged, now_secs, page_from, run_txn, split,
};
use crate::config::{Durability, StorageCfg};
use crate::metrics::Metrics;

pub use self::dir::{GOOD_CONF, NEW_SEGMENT, SLED_DEFAULT_SEGMENT};
pub use self::record::Sizing as ChunkSizing;

/// Revisions reserved ahead: the counter's high-water mark is made durable once per this many
/// writes, before any revision beyond it is handed out.
const RESERVE_STEP: u64 = 1 << 20;
/// Lock-free attempts at reading a chunked value before reading it under the write lock.
const READ_ATTEMPTS: usize = 8;

pub struct SledStore {
    db: sled::Db,
    files: Arc<Files>,
    committer: Arc<Committer>,
    /// `sync` mode: answers wait for durability (docs/STORAGE.md, "Visibility = durability").
    sync: bool,
    writer: Mutex<Writer>,
    sizing: Sizing,
    segment_size: usize,
    /// Per-tenant usage, when tracked (rebuilt from the records at open).
    usage: Option<Arc<Usage>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.files.dir)
            .field("segment_size", &self.segment_size)
            .finish()
    }
}

/// What a flush needs beyond sled, shared with the commit thread.
struct Files {
    dir: PathBuf,
    log: File,
    /// Health: false after a failed flush or write until the next successful flush.
    up: AtomicBool,
    /// The newest revision a reader may see in the tree: set *before* a step is applied, so a
    /// reader that saw the step's effect (even an absence) also sees at least its revision.
    announced: AtomicU64,
    /// The newest revision whose step is fully applied: set after the step.
    applied: AtomicU64,
    /// Every revision up to this one is durable: the `applied` a successful flush started from.
    durable: AtomicU64,
    /// The change feed: events are appended as steps apply, released here once durable.
    feed: Feed,
}

impl Files {
    /// `Db::flush` (ends in `sync_file_range`, which does not flush a disk's write cache)
    /// followed by `fdatasync` of the log file. sled writes nothing else that must be durable:
    /// no blob files (see the module docs), and its `conf` is made durable at open.
    fn sync(&self, db: &sled::Db) -> Result<(), StoreError> {
        // Every step up to `upto` is in the tree before this flush starts, so the flush covers it.
        let upto = self.applied.load(Ordering::Acquire);
        let r = db
            .flush()
            .map_err(|e| from_sled("store flush failed", e))
            .and_then(|_| {
                self.log
                    .sync_data()
                    .map_err(|e| StoreError::io("fdatasync of the store log failed", e))
            });
        self.up.store(r.is_ok(), Ordering::Release);
        if r.is_ok() {
            let durable = self.durable.fetch_max(upto, Ordering::AcqRel).max(upto);
            self.feed.release(durable);
        }
        r
    }

    fn is_durable(&self, revision: u64) -> bool {
        revision <= self.durable.load(Ordering::Acquire)
    }
}

/// The revision counter, owned by the one writer.
struct Writer {
    /// Last revision applied.
    last: u64,
    /// Durable high-water mark: no revision above it has been handed out.
    reserved: u64,
}

fn from_sled(message: &'static str, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => StoreError::io(message, io),
        other => StoreError::internal(message).with_source(other),
    }
}

fn poisoned() -> StoreError {
    StoreError::internal("store writer lock poisoned")
}

/// sled's errors may carry newlines (debug output); keep the boot message to one line.
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}

enum Fetched {
    Done(Option<Record>),
    /// A chunk was missing: the record changed while we read it.
    Raced,
}

impl SledStore {
    /// Opens (or creates) the store. Refuses a path whose parent does not exist, so a typo
    /// does not grow a new directory tree. The error is one line naming the path.
    pub fn open(
        cfg: &StorageCfg,
        history: usize,
        metrics: Arc<Metrics>,
        usage: Option<Arc<Usage>>,
    ) -> Result<SledStore, String> {
        let path = &cfg.path;
        let shown = path.display();
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(format!(
                "cannot open store at {shown}: parent directory {} does not exist",
                parent.display()
            ));
        }
        let prepared = dir::prepare(path)
            .map_err(|e| format!("cannot prepare store directory {shown}: {e}"))?;
        for repair in &prepared.repairs {
            tracing::warn!(path = %shown, repair = %repair, "store directory repaired");
        }
        let segment_size = prepared.segment_size;
        let opened = std::panic::catch_unwind(|| {
            sled::Config::new()
                .path(path)
                .cache_capacity(cfg.cache_bytes)
                .segment_size(segment_size)
                // We flush (and fsync) ourselves; sled's own timer would only sync_file_range.
                .flush_every_ms(None)
                .open()
        });
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(format!("cannot open store at {shown}: {}", one_line(&e))),
            Err(_) => return Err(format!("cannot open store at {shown}: sled panicked")),
        };
        dir::after_open(path).map_err(|e| format!("cannot sync store directory {shown}: {e}"))?;
        let log = File::open(path.join("db"))
            .map_err(|e| format!("cannot open store log at {shown}/db: {e}"))?;
        let files = Arc::new(Files {
            dir: path.clone(),
            log,
            up: AtomicBool::new(true),
            announced: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            feed: Feed::new(0, history),
        });
        let sizing = Sizing::for_segment(segment_size);
        let boot = |what: &str, e: StoreError| {
            format!("cannot open store at {shown}: {what}: {}", one_line(&e))
        };
        let writer = seed_revision(&db, &files).map_err(|e| boot("revision counter", e))?;
        // Everything in the tree was recovered from the log or flushed by the seeding: durable.
        for mark in [&files.announced, &files.applied, &files.durable] {
            mark.store(writer.last, Ordering::Release);
        }
        files.feed.restart_at(writer.last);
        migrate_v1(&db, &sizing).map_err(|e| boot("record format upgrade", e))?;
        files.sync(&db).map_err(|e| boot("first flush", e))?;
        if let Some(usage) = &usage {
            count_usage(&db, usage).map_err(|e| boot("tenant usage", e))?;
        }
        let flusher_db = db.clone();
        let flusher_files = Arc::clone(&files);
        let period = match cfg.durability {
            Durability::Sync => None,
            Durability::Periodic => Some(Duration::from_millis(cfg.flush_every_ms)),
        };
        let committer = Arc::new(Committer::start(
            Box::new(move || flusher_files.sync(&flusher_db)),
            period,
            metrics,
        ));
        Ok(SledStore {
            db,
            files,
            committer,
            sync: period.is_none(),
            writer: Mutex::new(writer),
            sizing,
            segment_size,
            usage,
        })
    }

    /// The segment size sled runs with (from the directory's `conf`, or the new default).
    pub fn segment_size(&self) -> usize {
        self.segment_size
    }

    fn read(&self, k: &[u8]) -> Result<Option<Record>, StoreError> {
        for _ in 0..READ_ATTEMPTS {
            if let Fetched::Done(r) = self.read_once(k)? {
                return Ok(r);
            }
        }
        // Still racing with writers of this key: read under the lock they hold.
        let _writer = self.writer.lock().map_err(|_| poisoned())?;
        match self.read_once(k)? {
            Fetched::Done(r) => Ok(r),
            Fetched::Raced => Err(StoreError::internal("a chunk of a stored value is missing")),
        }
    }

    fn read_once(&self, k: &[u8]) -> Result<Fetched, StoreError> {
        let Some(rec) = self
            .db
            .get(k)
            .map_err(|e| from_sled("store read failed", e))?
        else {
            return Ok(Fetched::Done(None));
        };
        let head = record::decode(&rec)?;
        // The record's own bytes back both slices: no copy.
        let rec = Bytes::from_owner(rec);
        let value = match head.body {
            Body::Inline(range) => rec.slice(range),
            Body::Chunked { slot, count, len } => {
                match self.read_chunks(head.revision, slot, count, len)? {
                    Some(v) => v,
                    None => return Ok(Fetched::Raced),
                }
            }
        };
        Ok(Fetched::Done(Some(Record {
            value,
            content_type: rec.slice(head.content_type),
            revision: head.revision,
            expires_at: head.expires_at,
        })))
    }

    /// The chunks of a value, in order; `None` if some are gone (the key was overwritten or
    /// deleted meanwhile — chunks are only ever inserted once and removed).
    fn read_chunks(
        &self,
        revision: u64,
        slot: u16,
        count: u32,
        len: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        let len = usize::try_from(len).map_err(|_| StoreError::internal("value too large"))?;
        let mut buf = BytesMut::with_capacity(len.min(64 << 20));
        let mut seen = 0u32;
        for item in self.db.scan_prefix(record::chunk_prefix(revision, slot)) {
            let (_, chunk) = item.map_err(|e| from_sled("store read failed", e))?;
            buf.extend_from_slice(&chunk);
            seen += 1;
        }
        Ok((seen == count && buf.len() == len).then(|| buf.freeze()))
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        self.writer.lock().map_err(|_| poisoned())
    }

    /// The next revision; first makes a new reservation durable when the old one is used up.
    fn next_revision(&self, w: &mut Writer) -> Result<u64, StoreError> {
        let next = w.last + 1;
        if next > w.reserved {
            let reserved = next + RESERVE_STEP;
            self.db
                .insert(record::META_RESERVED, &reserved.to_be_bytes())
                .map_err(|e| from_sled("store write failed", e))?;
            self.files.sync(&self.db)?;
            w.reserved = reserved;
        }
        Ok(next)
    }

    /// Applies the items of one step atomically. One item (a small PUT or DELETE, the common
    /// case) is a plain insert or remove; several (chunks, transactions) are one `sled::Batch`.
    /// The distinction matters for speed: sled applies a batch under a global write lock that
    /// also waits for any flush in progress, so batches never overlap a group commit's flush.
    fn apply_items(&self, mut items: Vec<(Vec<u8>, Option<sled::IVec>)>) -> sled::Result<()> {
        if items.len() == 1 {
            let (k, v) = items.pop().expect("one item");
            return match v {
                Some(v) => self.db.insert(k, v).map(drop),
                None => self.db.remove(k).map(drop),
            };
        }
        let mut batch = sled::Batch::default();
        for (k, v) in items {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.db.apply_batch(batch)
    }

    /// One write step under the writer lock. `false` = nothing changed.
    fn apply(
        &self,
        w: &mut Writer,
        ops: &[WriteOp<'_>],
        now: u64,
    ) -> Result<(Written, bool), StoreError> {
        check_step(ops)?;
        let mut keys = Vec::with_capacity(ops.len());
        let mut olds = Vec::with_capacity(ops.len());
        let mut existed = Written::new(0);
        let mut deltas = usage::Deltas::default();
        for (i, op) in ops.iter().enumerate() {
            let (bucket, key) = op.bucket_key();
            let k = compose(bucket, key);
            let raw = self
                .db
                .get(&k)
                .map_err(|e| from_sled("store read failed", e))?;
            let old = raw.as_deref().map(record::decode).transpose()?;
            if judged(op, old.as_ref().map(|h| (h.revision, h.expires_at)), now)?.is_some() {
                existed.set_existed(i);
            }
            if self.usage.is_some() {
                // A put replaces whatever is stored (expired or not); a delete removes a live
                // record, or an expired one when it is the sweeper's.
                let is_put = matches!(op, WriteOp::Put { .. });
                if let (Some(h), Some(rec)) = (&old, &raw)
                    && (is_put || existed.existed(i))
                {
                    let owner = usage::owner_in(bucket.as_bytes(), h.owner(rec));
                    deltas.add(owner, usage::size_of(bucket, key, h.value_len()), -1);
                }
                if let WriteOp::Put { owner, value, .. } = *op {
                    deltas.add(owner, usage::size_of(bucket, key, value.len() as u64), 1);
                }
            }
            keys.push(k);
            olds.push(old);
        }
        if !existed.changed(ops) {
            return Ok((Written::new(w.last), false));
        }
        if let Some(usage) = &self.usage {
            usage.check(&deltas)?;
        }
        let revision = self.next_revision(w)?;
        let mut written = Written::new(revision);
        // Every tree item the step writes (`None` = remove), applied atomically below.
        let mut items: Vec<(Vec<u8>, Option<sled::IVec>)> = Vec::with_capacity(ops.len());
        for (i, (op, k)) in ops.iter().zip(keys).enumerate() {
            let slot = u16::try_from(i).expect("at most 64 ops per step");
            let is_put = matches!(op, WriteOp::Put { .. });
            if existed.existed(i) {
                written.set_existed(i);
            }
            // A delete leaves a missing or expired key alone (the sweeper removes it); a put
            // replaces whatever is there, expired or not.
            if let Some(old) = &olds[i]
                && (is_put || existed.existed(i))
            {
                if let Body::Chunked { slot, count, .. } = old.body {
                    for index in 0..count {
                        items.push((record::chunk_key(old.revision, slot, index).to_vec(), None));
                    }
                }
                if let Some(at) = old.expires_at {
                    items.push((record::ttl_key(at, &k), None));
                }
                if !is_put {
                    items.push((k, None));
                    continue;
                }
            }
            if let WriteOp::Put {
                content_type,
                value,
                expires_at,
                owner,
                ..
            } = *op
            {
                if let Some(at) = expires_at {
                    items.push((record::ttl_key(at, &k), Some(sled::IVec::default())));
                }
                let owner = record::stored_owner(owner);
                let head = record::head_len(content_type, expires_at, owner);
                let rec = if self.sizing.inline(k.len(), head, value.len()) {
                    record::encode(revision, content_type, expires_at, owner, value, None)
                } else {
                    let mut count = 0u32;
                    for piece in value.chunks(self.sizing.chunk_bytes) {
                        let chunk = record::chunk_key(revision, slot, count).to_vec();
                        items.push((chunk, Some(sled::IVec::from(piece))));
                        count += 1;
                    }
                    record::encode(
                        revision,
                        content_type,
                        expires_at,
                        owner,
                        value,
                        Some((slot, count)),
                    )
                };
                items.push((k, Some(sled::IVec::from(rec))));
            }
        }
        self.files.announced.fetch_max(revision, Ordering::AcqRel);
        if let Err(e) = self.apply_items(items) {
            // Nothing of the step was applied, but it was announced: mark it applied so readers
            // waiting for it are released by the next flush instead of waiting for a later write,
            // and never hand the revision out again (a flush may already count it as durable,
            // and watchers as delivered).
            w.last = revision;
            self.files.applied.fetch_max(revision, Ordering::AcqRel);
            let e = from_sled("store write failed", e);
            if e.kind() == ErrorKind::DiskFull {
                self.files.up.store(false, Ordering::Release);
            }
            return Err(e);
        }
        w.last = revision;
        if let Some(usage) = &self.usage {
            usage.commit(deltas);
        }
        self.files.feed.append(events_of(ops, &written));
        self.files.applied.fetch_max(revision, Ordering::AcqRel);
        if !self.sync {
            // `periodic` promises nothing beyond "applied": watchers see it now.
            self.files.feed.release(revision);
        }
        Ok((written, true))
    }
}

/// The tree under the writer lock, as a transaction sees it.
struct View<'a> {
    store: &'a SledStore,
    writer: MutexGuard<'a, Writer>,
    changed: bool,
}

impl Locked for View<'_> {
    fn read(&mut self, bucket: &str, key: &str) -> Result<Option<Record>, StoreError> {
        // No writer can race us: the lock is held.
        match self.store.read_once(&compose(bucket, key))? {
            Fetched::Done(r) => Ok(r),
            Fetched::Raced => Err(StoreError::internal("a chunk of a stored value is missing")),
        }
    }

    fn apply(&mut self, ops: &[WriteOp<'_>], now: u64) -> Result<Written, StoreError> {
        let (written, changed) = self.store.apply(&mut self.writer, ops, now)?;
        self.changed |= changed;
        Ok(written)
    }
}

impl SledStore {
    /// `result`, once every revision up to `upto` is durable: at once when it already is (or
    /// in `periodic` mode, which promises no such thing), else after the flushes that cover it.
    fn settle_with<T: Send + 'static>(
        &self,
        upto: u64,
        result: Result<T, StoreError>,
    ) -> StoreCall<T> {
        if !self.sync || self.files.is_durable(upto) {
            return StoreCall::ready(result);
        }
        let (files, committer) = (Arc::clone(&self.files), Arc::clone(&self.committer));
        StoreCall::pending(async move {
            // A flush covers what was applied when it started; a step announced but still
            // being applied then needs the next one. Each round is one group commit.
            while !files.is_durable(upto) {
                match committer.enlist()? {
                    None => break, // periodic: never reached, `sync` is checked above
                    Some(ticket) => match ticket.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(_) => {
                            return Err(StoreError::new(
                                ErrorKind::Unavailable,
                                "commit thread stopped",
                            ));
                        }
                    },
                }
            }
            result
        })
    }

    /// The newest revision a reader could have seen the effect of.
    fn announced(&self) -> u64 {
        self.files.announced.load(Ordering::Acquire)
    }

    /// The newest revision an answer may name: durable (`sync`) or applied (`periodic`).
    fn visible(&self) -> u64 {
        match self.sync {
            true => self.files.durable.load(Ordering::Acquire),
            false => self.files.applied.load(Ordering::Acquire),
        }
    }

    /// A step that changed the tree: resolves once the group commit covering it is done.
    fn committed(&self, written: Written) -> StoreCall<Written> {
        match self.committer.enlist() {
            Ok(None) => StoreCall::ready(Ok(written)),
            Ok(Some(ticket)) => StoreCall::pending(async move {
                match ticket.await {
                    Ok(Ok(())) => Ok(written),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(StoreError::new(
                        ErrorKind::Unavailable,
                        "commit thread stopped",
                    )),
                }
            }),
            Err(e) => StoreCall::ready(Err(e)),
        }
    }
}

/// Seeds the revision counter above every revision that may have been handed out: the durable
/// reservation (no revision above it was ever used), sled's id generator (which minted v1
/// versions), and the clock (docs/STORAGE.md, "Revisions"). Then makes a fresh reservation
/// durable.
fn seed_revision(db: &sled::Db, files: &Files) -> Result<Writer, StoreError> {
    let persisted = |k: &[u8]| -> Result<u64, StoreError> {
        match db.get(k).map_err(|e| from_sled("store read failed", e))? {
            Some(v) => record::u64_at(&v, 0),
            None => Ok(0),
        }
    };
    let last = persisted(record::META_RESERVED)?
        .max(
            db.generate_id()
                .map_err(|e| from_sled("sled id generator failed", e))?,
        )
        .max(clock_floor());
    let reserved = last + RESERVE_STEP;
    db.insert(record::META_RESERVED, &reserved.to_be_bytes())
        .map_err(|e| from_sled("store write failed", e))?;
    files.sync(db)?;
    Ok(Writer { last, reserved })
}

/// Rewrites every v1 record too large to stay a safe tree item into a chunked v2 record with
/// the same revision and content type (so its ETag is unchanged). Runs once per directory;
/// sled itself keeps reading the blob files such records were stored in until then.
fn migrate_v1(db: &sled::Db, sizing: &Sizing) -> Result<(), StoreError> {
    let err = |e| from_sled("store upgrade failed", e);
    if db.get(record::META_FORMAT).map_err(err)?.as_deref() == Some(&[record::FORMAT_V2]) {
        return Ok(());
    }
    let mut rewritten = 0usize;
    for item in db.range::<&[u8], _>((Bound::Included(record::RECORDS_START), Bound::Unbounded)) {
        let (k, rec) = item.map_err(err)?;
        if rec.first() != Some(&0x00) {
            continue; // already v2
        }
        let head = record::decode(&rec)?;
        let Body::Inline(body) = head.body else {
            continue;
        };
        let content_type = &rec[head.content_type.clone()];
        let head_len = record::head_len(content_type, None, None);
        if sizing.inline(k.len(), head_len, body.len()) {
            continue; // small v1 records are read as they are
        }
        let value = &rec[body];
        let mut batch = sled::Batch::default();
        let mut count = 0u32;
        for piece in value.chunks(sizing.chunk_bytes) {
            batch.insert(&record::chunk_key(head.revision, 0, count)[..], piece);
            count += 1;
        }
        let new = record::encode(
            head.revision,
            content_type,
            None,
            None,
            value,
            Some((0, count)),
        );
        batch.insert(k, new);
        db.apply_batch(batch).map_err(err)?;
        rewritten += 1;
    }
    db.insert(record::META_FORMAT, &[record::FORMAT_V2])
        .map_err(err)?;
    if rewritten > 0 {
        tracing::info!(records = rewritten, "large v1 records rewritten in chunks");
    }
    Ok(())
}

/// Rebuilds every tenant's usage from the records: one pass over them at open.
fn count_usage(db: &sled::Db, usage: &Usage) -> Result<(), StoreError> {
    let err = |e| from_sled("store read failed", e);
    usage.clear();
    let mut deltas = usage::Deltas::default();
    let mut pending = 0usize;
    for item in db.range::<&[u8], _>((Bound::Included(record::RECORDS_START), Bound::Unbounded)) {
        let (k, rec) = item.map_err(err)?;
        let head = record::decode(&rec)?;
        // bucket + key: the engine key less its `/`.
        let size = (k.len() as u64).saturating_sub(1) + head.value_len();
        deltas.add(usage::owner_in(&k, head.owner(&rec)), size, 1);
        pending += 1;
        if pending == 4096 {
            usage.commit(std::mem::take(&mut deltas));
            pending = 0;
        }
    }
    usage.commit(deltas);
    Ok(())
}

impl super::Storage for SledStore {
    fn get(&self, bucket: &str, key: &str) -> StoreCall<Read> {
        // Every write up to `visible` is applied, so the read reflects at least that revision.
        let visible = self.visible();
        // An expired record reads as absent; the clock is read only for a record with a TTL.
        let found = self
            .read(&compose(bucket, key))
            .map(|r| r.filter(Record::live_now));
        // A record shows its own write; an absence may show any step applied so far (a delete).
        let upto = match &found {
            Ok(Some(r)) => r.revision,
            Ok(None) => self.announced(),
            Err(_) => 0,
        };
        let read = found.map(|record| {
            let revision = record.as_ref().map_or(visible, |r| r.revision.max(visible));
            Read { record, revision }
        });
        self.settle_with(upto, read)
    }

    fn write(&self, ops: &[WriteOp<'_>]) -> StoreCall<Written> {
        let applied = self
            .lock_writer()
            .and_then(|mut w| self.apply(&mut w, ops, now_secs()));
        let written = match applied {
            Ok((w, true)) => w,
            // Nothing changed, or a condition failed: the answer (404, 412) shows the state the
            // step was judged on, which may hold writes not yet durable.
            Ok((w, false)) => return self.settle_with(self.announced(), Ok(w)),
            Err(e) if e.kind() == ErrorKind::Precondition => {
                return self.settle_with(self.announced(), Err(e));
            }
            Err(e) => return StoreCall::ready(Err(e)),
        };
        self.committed(written)
    }

    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        opts: ListOpts,
    ) -> StoreCall<Page> {
        let visible = self.visible();
        let range = ListRange::new(bucket, prefix, after);
        let now = now_secs();
        let items = self
            .db
            .range::<Vec<u8>, _>((range.lower.clone(), Bound::Unbounded))
            .take_while(|item| {
                item.as_ref()
                    .map_or(true, |(k, _)| k.starts_with(&range.prefix))
            })
            .map(|item| -> Result<Option<(String, Record)>, StoreError> {
                let (k, rec) = item.map_err(|e| from_sled("store read failed", e))?;
                let head = record::decode(&rec)?;
                if !super::live(head.expires_at, now) {
                    return Ok(None);
                }
                let key = range.user_key(&k)?;
                let record = if opts.values.is_some() {
                    // Reads the value (chunks too); gone meanwhile = deleted meanwhile.
                    match self.read(&k)? {
                        Some(r) => r,
                        None => return Ok(None),
                    }
                } else {
                    Record {
                        value: Bytes::new(),
                        content_type: Bytes::new(),
                        revision: head.revision,
                        expires_at: head.expires_at,
                    }
                };
                Ok(Some((key, record)))
            })
            .filter_map(Result::transpose);
        let page = page_from(items, opts, visible);
        self.settle_with(self.announced(), page)
    }

    fn txn(&self, txn: &Txn<'_>) -> StoreCall<TxnOutcome> {
        let run = self.lock_writer().and_then(|writer| {
            let mut view = View {
                store: self,
                writer,
                changed: false,
            };
            let (mut outcome, changed) = run_txn(&mut view, txn, now_secs())?;
            if !changed {
                outcome.revision = view.writer.last;
            }
            Ok((outcome, changed))
        });
        match run {
            Ok((outcome, true)) => {
                let revision = outcome.revision;
                self.committed(Written::new(revision))
                    .map(move |_| Ok(outcome))
            }
            Ok((outcome, false)) => self.settle_with(self.announced(), Ok(outcome)),
            Err(e) => StoreCall::ready(Err(e)),
        }
    }

    fn expired(&self, now: u64, limit: usize) -> Result<Vec<Expiring>, StoreError> {
        let upper = record::ttl_key(now.saturating_add(1), b"");
        let mut out = Vec::new();
        for item in self.db.range(record::ttl_key(0, b"")..upper) {
            if out.len() == limit {
                break;
            }
            let (k, _) = item.map_err(|e| from_sled("store read failed", e))?;
            let engine_key = &k[9..];
            let Some(rec) = self
                .db
                .get(engine_key)
                .map_err(|e| from_sled("store read failed", e))?
            else {
                continue;
            };
            let head = record::decode(&rec)?;
            let (bucket, key) = split(engine_key)?;
            out.push(Expiring {
                bucket,
                key,
                revision: head.revision,
            });
        }
        Ok(out)
    }

    fn scan(
        &self,
        after: Option<&[u8]>,
        limit: usize,
        now: u64,
    ) -> Result<Vec<Scanned>, StoreError> {
        let lower = match after {
            Some(a) => Bound::Excluded(a.to_vec()),
            None => Bound::Included(record::RECORDS_START.to_vec()),
        };
        let mut out = Vec::new();
        for item in self
            .db
            .range::<Vec<u8>, _>((lower, Bound::Unbounded))
            .keys()
        {
            if out.len() == limit {
                break;
            }
            let k = item.map_err(|e| from_sled("store read failed", e))?;
            let Some(record) = self.read(&k)? else {
                continue;
            };
            if !record.live(now) {
                continue;
            }
            let (bucket, key) = split(&k)?;
            // The owner, from the record's head (snapshots only: a second lookup).
            let owner = match self
                .db
                .get(&k)
                .map_err(|e| from_sled("store read failed", e))?
            {
                Some(rec) => {
                    let head = record::decode(&rec)?;
                    record::stored_owner(head.owner(&rec)).map(str::to_owned)
                }
                None => None,
            };
            out.push(Scanned {
                engine_key: k.to_vec(),
                bucket,
                key,
                record,
                owner,
            });
        }
        Ok(out)
    }

    fn revision(&self) -> u64 {
        self.visible()
    }

    fn applied_revision(&self) -> Result<u64, StoreError> {
        Ok(self.lock_writer()?.last)
    }

    fn settle(&self, revision: u64) -> StoreCall<()> {
        self.settle_with(revision, Ok(()))
    }

    fn feed(&self) -> &Feed {
        &self.files.feed
    }

    fn health(&self) -> bool {
        self.files.up.load(Ordering::Acquire)
    }

    fn probe(&self) {
        // A flush that succeeds marks the engine up again (after a full disk frees up).
        if let Err(e) = self.files.sync(&self.db) {
            tracing::debug!(cause = %e, "store still down");
        }
    }

    fn usage(&self) -> Option<&Usage> {
        self.usage.as_deref()
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        let r = self.files.sync(&self.db);
        self.committer.stop();
        r
    }
}

#[cfg(test)]
mod tests;
