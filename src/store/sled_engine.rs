//! The `sled` engine (0.34). One tree; the key is `bucket/key`; the value record is
//! `version (u64 BE) | content-type length (u16 BE) | content type | bytes`.
//!
//! Durability: sled's own `flush` ends in `sync_file_range`, which does not flush a volatile
//! disk write cache (sled issue #1452), and sled writes values over ~128 KiB to separate blob
//! files that it never fsyncs. So our flush is: `Db::flush`, then `fdatasync` of the log file,
//! then — when a large value was written since the last flush — `fsync` of every new blob file
//! and of the blob directory. Only then is a write acknowledged in sync mode.

use std::collections::HashSet;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::commit::Committer;
use super::{
    CommitWait, Cond, ListRange, Page, PutOutcome, Storage, StoreError, Value, compose, page_from,
};
use crate::config::{Durability, StorageCfg};
use crate::metrics::Metrics;

/// Values at least this long may land in a blob file (sled's threshold is segment size / 4,
/// about 128 KiB); a write this large makes the next flush fsync new blob files.
const BLOB_CANDIDATE_BYTES: usize = 64 * 1024;
/// Longest content type we store.
pub const MAX_CONTENT_TYPE: usize = 1024;

pub struct SledStore {
    db: sled::Db,
    committer: Committer,
    files: Arc<DurableFiles>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.files.dir)
            .finish()
    }
}

/// The files a flush must fsync beyond sled's own work.
struct DurableFiles {
    dir: PathBuf,
    log: File,
    /// Set by writers of large values; cleared by the flush that syncs blob files.
    blobs_dirty: AtomicBool,
    /// Blob files already fsynced, so each is synced once.
    synced_blobs: Mutex<HashSet<std::ffi::OsString>>,
}

fn engine_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl DurableFiles {
    fn sync(&self, db: &sled::Db) -> Result<(), StoreError> {
        db.flush().map_err(engine_err)?;
        self.log.sync_data().map_err(engine_err)?;
        if self.blobs_dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.sync_blobs() {
                self.blobs_dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    fn sync_blobs(&self) -> Result<(), StoreError> {
        let blob_dir = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blob_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(engine_err(e)),
        };
        let mut synced = self
            .synced_blobs
            .lock()
            .map_err(|_| engine_err("blob set poisoned"))?;
        let mut present = HashSet::new();
        for entry in entries {
            let entry = entry.map_err(engine_err)?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                File::open(entry.path())
                    .and_then(|f| f.sync_all())
                    .map_err(engine_err)?;
            }
            present.insert(name);
        }
        sync_dir(&blob_dir).map_err(engine_err)?;
        *synced = present;
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn encode(version: u64, content_type: &[u8], bytes: &[u8]) -> Vec<u8> {
    let ct_len = content_type.len().min(MAX_CONTENT_TYPE);
    let mut rec = Vec::with_capacity(10 + ct_len + bytes.len());
    rec.extend_from_slice(&version.to_be_bytes());
    rec.extend_from_slice(&(ct_len as u16).to_be_bytes());
    rec.extend_from_slice(&content_type[..ct_len]);
    rec.extend_from_slice(bytes);
    rec
}

fn version_of(rec: &[u8]) -> Result<u64, StoreError> {
    rec.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| engine_err("corrupt value record"))
}

fn decode(rec: &[u8]) -> Result<Value, StoreError> {
    let version = version_of(rec)?;
    let ct_len = rec
        .get(8..10)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| engine_err("corrupt value record"))?;
    let content_type = rec
        .get(10..10 + ct_len)
        .ok_or_else(|| engine_err("corrupt value record"))?;
    Ok(Value {
        version,
        content_type: Bytes::copy_from_slice(content_type),
        bytes: Bytes::copy_from_slice(&rec[10 + ct_len..]),
    })
}

impl SledStore {
    /// Opens (or creates) the store. Refuses a path whose parent does not exist, so a typo
    /// does not grow a new directory tree. The error is one line naming the path.
    pub fn open(cfg: &StorageCfg, metrics: Arc<Metrics>) -> Result<SledStore, String> {
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
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cfg.cache_bytes)
            // We flush (and fsync) ourselves; sled's own timer would only sync_file_range.
            .flush_every_ms(None)
            .open()
            .map_err(|e| format!("cannot open store at {shown}: {}", one_line(&e)))?;
        let log = File::open(path.join("db"))
            .map_err(|e| format!("cannot open store log at {shown}/db: {e}"))?;
        sync_dir(path)
            .and_then(|()| sync_dir(&parent))
            .map_err(|e| format!("cannot sync store directory {shown}: {e}"))?;
        let files = Arc::new(DurableFiles {
            dir: path.clone(),
            log,
            blobs_dirty: AtomicBool::new(true),
            synced_blobs: Mutex::new(HashSet::new()),
        });
        let flusher_db = db.clone();
        let flusher_files = Arc::clone(&files);
        let period = match cfg.durability {
            Durability::Sync => None,
            Durability::Periodic => Some(Duration::from_millis(cfg.flush_every_ms)),
        };
        let committer = Committer::start(
            Box::new(move || flusher_files.sync(&flusher_db)),
            period,
            metrics,
        );
        Ok(SledStore {
            db,
            committer,
            files,
        })
    }

    fn note_size(&self, len: usize) {
        if len >= BLOB_CANDIDATE_BYTES {
            self.files.blobs_dirty.store(true, Ordering::Release);
        }
    }

    fn new_version(&self) -> Result<u64, StoreError> {
        // Monotonic and unique across restarts (sled persists the high-water mark).
        self.db.generate_id().map_err(engine_err)
    }

    /// Compare-and-swap loop: re-reads and re-checks `cond` until the swap wins.
    fn cas_loop(
        &self,
        k: &[u8],
        cond: &Cond,
        mut make: impl FnMut() -> Result<Option<Vec<u8>>, StoreError>,
    ) -> Result<Option<sled::IVec>, StoreError> {
        loop {
            let current = self.db.get(k).map_err(engine_err)?;
            let version = current.as_deref().map(version_of).transpose()?;
            if !cond.holds(version) {
                return Err(StoreError::Precondition);
            }
            let new = make()?;
            match self
                .db
                .compare_and_swap(k, current.clone(), new)
                .map_err(engine_err)?
            {
                Ok(()) => return Ok(current),
                Err(_) => continue, // another writer won the race; judge again
            }
        }
    }
}

/// sled's errors may carry newlines (debug output); keep the boot message to one line.
fn one_line(e: &sled::Error) -> String {
    e.to_string().replace('\n', " ")
}

impl Storage for SledStore {
    fn get(&self, bucket: &str, key: &str) -> Result<Option<Value>, StoreError> {
        self.db
            .get(compose(bucket, key))
            .map_err(engine_err)?
            .map(|rec| decode(&rec))
            .transpose()
    }

    fn put(
        &self,
        bucket: &str,
        key: &str,
        content_type: &[u8],
        bytes: &[u8],
        cond: &Cond,
    ) -> Result<PutOutcome, StoreError> {
        let k = compose(bucket, key);
        self.note_size(bytes.len());
        if cond.is_none() {
            let version = self.new_version()?;
            let old = self
                .db
                .insert(k, encode(version, content_type, bytes))
                .map_err(engine_err)?;
            return Ok(match old {
                None => PutOutcome::Created(version),
                Some(_) => PutOutcome::Replaced(version),
            });
        }
        let mut version = 0;
        let old = self.cas_loop(&k, cond, || {
            version = self.new_version()?;
            Ok(Some(encode(version, content_type, bytes)))
        })?;
        Ok(match old {
            None => PutOutcome::Created(version),
            Some(_) => PutOutcome::Replaced(version),
        })
    }

    fn delete(&self, bucket: &str, key: &str, cond: &Cond) -> Result<bool, StoreError> {
        let k = compose(bucket, key);
        if cond.is_none() {
            return Ok(self.db.remove(k).map_err(engine_err)?.is_some());
        }
        let old = self.cas_loop(&k, cond, || Ok(None))?;
        Ok(old.is_some())
    }

    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let range = ListRange::new(bucket, prefix, after);
        let keys = self
            .db
            .range::<Vec<u8>, _>((range.lower.clone(), Bound::Unbounded))
            .keys()
            .take_while(|k| k.as_ref().map_or(true, |k| k.starts_with(&range.prefix)))
            .map(|k| range.user_key(&k.map_err(engine_err)?));
        page_from(keys, limit)
    }

    fn commit(&self) -> CommitWait {
        self.committer.commit()
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        self.files.blobs_dirty.store(true, Ordering::Release);
        let r = self.files.sync(&self.db);
        self.committer.stop();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let rec = encode(7, b"text/plain", &[0, 1, 255]);
        let v = decode(&rec).expect("decodes");
        assert_eq!(v.version, 7);
        assert_eq!(&v.content_type[..], b"text/plain");
        assert_eq!(&v.bytes[..], &[0, 1, 255]);
        assert!(decode(&rec[..9]).is_err());
    }

    #[test]
    fn missing_parent_and_locked_dir_are_refused_with_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let m = Arc::new(Metrics::new(&[]));
        let cfg = StorageCfg {
            path: dir.path().join("no/such/parent/db"),
            ..Default::default()
        };
        let err = SledStore::open(&cfg, Arc::clone(&m)).expect_err("missing parent");
        assert!(err.contains("no/such/parent"), "{err}");
        assert!(!err.contains('\n'));
        let cfg = StorageCfg {
            path: dir.path().join("db"),
            ..Default::default()
        };
        let first = SledStore::open(&cfg, Arc::clone(&m)).expect("first open");
        let err = SledStore::open(&cfg, m).expect_err("the directory is locked");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(!err.contains('\n'));
        assert!(first.get("b", "k").expect("get").is_none());
    }
}
