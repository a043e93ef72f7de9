//! A point-in-time dump of every live record while writes go on, in bounded memory — what
//! `GET /v1/admin/snapshot` streams (docs/STORAGE.md, "Snapshots").
//!
//! Engines offer no read view frozen in time, so the dump builds one from two things they do
//! offer: a scan that sees each key's latest record, and the change feed, which holds every
//! step after a given revision. It goes:
//! 1. `S` = the last applied revision, read under the writer lock (no step half applied);
//! 2. scan every live record into a spool file (disk, not memory);
//! 3. `E` = the last applied revision again, under the lock: every record the scan saw was
//!    written at or before `E`, and every step in `(S, E]` is in the feed;
//! 4. the keys written in `(S, E]` take their state at `E` from the feed (the last event of
//!    each); every other key did not change during the scan, so its spooled record is its
//!    state at `E`.
//!
//! The result is the store exactly as of revision `E`, once `E` is durable. If writes were so
//! fast that the feed dropped part of `(S, E]` the dump fails and can be retried.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{EventKind, Record, Storage, StoreError, now_secs};

/// Records read per scan call.
const SCAN_PAGE: usize = 512;

/// One record of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub bucket: String,
    pub key: String,
    pub record: Record,
    /// The tenant the record counts for; `None` = `default`.
    pub owner: Option<String>,
}

/// Where a dump is in its run.
pub trait Sink {
    /// Called once the dump's revision is known and durable, before any item.
    fn start(&mut self, revision: u64) -> std::io::Result<()>;
    fn item(&mut self, item: &Item) -> std::io::Result<()>;
    /// Whether the reader went away (the dump stops between scan pages).
    fn cancelled(&self) -> bool {
        false
    }
}

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("spool file: {0}")]
    Spool(std::io::Error),
    #[error("writes outran the change history during the dump; retry")]
    HistoryGone,
    #[error("output: {0}")]
    Output(std::io::Error),
}

/// A spool file, removed when dropped.
struct Spool {
    path: PathBuf,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn spool_path(dir: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        ".micronode-snapshot-{}-{n}.spool",
        std::process::id()
    ))
}

fn put_bytes(w: &mut impl Write, b: &[u8]) -> std::io::Result<()> {
    w.write_all(&(b.len() as u64).to_le_bytes())?;
    w.write_all(b)
}

fn get_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn get_bytes(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let len =
        usize::try_from(get_u64(r)?).map_err(|_| std::io::Error::other("spool entry too large"))?;
    let mut b = vec![0u8; len];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn write_entry(w: &mut impl Write, engine_key: &[u8], item: &Item) -> std::io::Result<()> {
    put_bytes(w, engine_key)?;
    put_bytes(w, item.bucket.as_bytes())?;
    put_bytes(w, item.key.as_bytes())?;
    put_bytes(w, &item.record.content_type)?;
    put_bytes(w, &item.record.value)?;
    w.write_all(&item.record.revision.to_le_bytes())?;
    w.write_all(&item.record.expires_at.unwrap_or(0).to_le_bytes())?;
    // A flag byte, then the owner: `Some("")` (system records) differs from `None`.
    w.write_all(&[u8::from(item.owner.is_some())])?;
    put_bytes(w, item.owner.as_deref().unwrap_or("").as_bytes())
}

/// The next spooled entry, `None` at the end.
fn read_entry(r: &mut impl Read) -> std::io::Result<Option<(Vec<u8>, Item)>> {
    let engine_key = match get_bytes(r) {
        Ok(k) => k,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    let text = |b: Vec<u8>| String::from_utf8(b).map_err(std::io::Error::other);
    let bucket = text(get_bytes(r)?)?;
    let key = text(get_bytes(r)?)?;
    let content_type = Bytes::from(get_bytes(r)?);
    let value = Bytes::from(get_bytes(r)?);
    let revision = get_u64(r)?;
    let expires_at = Some(get_u64(r)?).filter(|&at| at != 0);
    let mut flag = [0u8; 1];
    r.read_exact(&mut flag)?;
    let owner = text(get_bytes(r)?)?;
    let owner = (flag[0] != 0).then_some(owner);
    let record = Record {
        value,
        content_type,
        revision,
        expires_at,
    };
    Ok(Some((
        engine_key,
        Item {
            bucket,
            key,
            record,
            owner,
        },
    )))
}

/// Dumps every record live at the dump's revision into `sink`, spooling under `spool_dir`.
/// Blocking: run it on a blocking thread. `settle` waits until a revision is durable.
pub fn dump(
    store: &dyn Storage,
    spool_dir: &Path,
    settle: impl FnOnce(u64) -> Result<(), StoreError>,
    sink: &mut impl Sink,
) -> Result<u64, DumpError> {
    let now = now_secs();
    let start = store.applied_revision()?;
    let spool = Spool {
        path: spool_path(spool_dir),
    };
    // Every value of the store passes through it: readable by this user only.
    let file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&spool.path)
        .map_err(DumpError::Spool)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut after: Option<Vec<u8>> = None;
    loop {
        if sink.cancelled() {
            return Err(DumpError::Output(std::io::Error::other(
                "the reader went away",
            )));
        }
        let page = store.scan(after.as_deref(), SCAN_PAGE, now)?;
        let Some(last) = page.last() else { break };
        after = Some(last.engine_key.clone());
        for s in page {
            let item = Item {
                bucket: s.bucket,
                key: s.key,
                record: s.record,
                owner: s.owner,
            };
            write_entry(&mut out, &s.engine_key, &item).map_err(DumpError::Spool)?;
        }
    }
    out.flush().map_err(DumpError::Spool)?;
    drop(out);
    let end = store.applied_revision()?;
    let events = store
        .feed()
        .between(start, end)
        .ok_or(DumpError::HistoryGone)?;
    // The state at `end` of every key written during the scan: the last event wins.
    let mut changed: BTreeMap<Vec<u8>, Option<Item>> = BTreeMap::new();
    for e in events.into_iter().filter(|e| e.revision <= end) {
        let engine_key = super::compose(&e.bucket, &e.key);
        let state = (e.kind == EventKind::Put).then(|| Item {
            bucket: e.bucket.to_string(),
            key: e.key.to_string(),
            record: Record {
                value: e.value,
                content_type: e.content_type,
                revision: e.revision,
                expires_at: e.expires_at,
            },
            owner: e.owner.map(String::from),
        });
        changed.insert(engine_key, state);
    }
    settle(end)?;
    sink.start(end).map_err(DumpError::Output)?;
    let file = File::open(&spool.path).map_err(DumpError::Spool)?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    while let Some((engine_key, item)) = read_entry(&mut input).map_err(DumpError::Spool)? {
        if !changed.contains_key(&engine_key) {
            sink.item(&item).map_err(DumpError::Output)?;
        }
    }
    for item in changed.values().flatten() {
        if item.record.live(now) {
            sink.item(item).map_err(DumpError::Output)?;
        }
    }
    Ok(end)
}
