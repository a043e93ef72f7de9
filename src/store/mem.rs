//! The `mem` engine: an ordered map behind a lock. Nothing touches the disk, which is what
//! amnesia mode needs; a 2xx means "in this process's memory". Every call completes at once,
//! and every applied step is released to watchers at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockWriteGuard};

use super::usage::{self, Usage};
use crate::config::DEFAULT_TENANT;

use super::{
    Expiring, Feed, ListOpts, ListRange, Locked, Page, Read, Record, Scanned, StoreCall,
    StoreError, Txn, TxnOutcome, WriteOp, Written, check_step, clock_floor, compose, events_of,
    judged, now_secs, page_from, run_txn,
};

#[derive(Debug)]
pub struct MemStore {
    inner: RwLock<Inner>,
    feed: Feed,
    usage: Option<Arc<Usage>>,
}

#[derive(Debug)]
struct Inner {
    map: BTreeMap<Vec<u8>, Record>,
    /// `(expires_at, engine key)` of every record with an expiry.
    expiries: BTreeSet<(u64, Vec<u8>)>,
    /// The owner of every record not owned by `default` (only while usage is tracked).
    owners: HashMap<Vec<u8>, Box<str>>,
    /// The last revision handed out. Seeded from the clock so that an ETag held across a
    /// restart can never match a different value.
    revision: u64,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new(100_000, None)
    }
}

fn poisoned() -> StoreError {
    StoreError::internal("mem store lock poisoned")
}

impl MemStore {
    /// An empty store whose feed keeps `history` events.
    /// `usage`: the per-tenant usage to keep, if tracked.
    pub fn new(history: usize, usage: Option<Arc<Usage>>) -> MemStore {
        let revision = clock_floor();
        MemStore {
            inner: RwLock::new(Inner {
                map: BTreeMap::new(),
                expiries: BTreeSet::new(),
                owners: HashMap::new(),
                revision,
            }),
            feed: Feed::new(revision, history),
            usage,
        }
    }

    fn lock(&self) -> Result<RwLockWriteGuard<'_, Inner>, StoreError> {
        self.inner.write().map_err(|_| poisoned())
    }
}

/// The map under its write lock, with the feed to publish to.
struct View<'a> {
    inner: RwLockWriteGuard<'a, Inner>,
    feed: &'a Feed,
    usage: Option<&'a Usage>,
}

impl Locked for View<'_> {
    fn read(&mut self, bucket: &str, key: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.inner.map.get(&compose(bucket, key)).cloned())
    }

    fn apply(&mut self, ops: &[WriteOp<'_>], now: u64) -> Result<Written, StoreError> {
        check_step(ops)?;
        let inner = &mut *self.inner;
        let mut written = Written::new(inner.revision + 1);
        let mut deltas = usage::Deltas::default();
        for (i, op) in ops.iter().enumerate() {
            let (bucket, key) = op.bucket_key();
            let k = compose(bucket, key);
            let old = inner.map.get(&k);
            if judged(op, old.map(|r| (r.revision, r.expires_at)), now)?.is_some() {
                written.set_existed(i);
            }
            if self.usage.is_some() {
                let is_put = matches!(op, WriteOp::Put { .. });
                if let Some(r) = old
                    && (is_put || written.existed(i))
                {
                    let owner = inner.owners.get(&k).map_or(DEFAULT_TENANT, |o| &**o);
                    deltas.add(owner, usage::size_of(bucket, key, r.value.len() as u64), -1);
                }
                if let WriteOp::Put { owner, value, .. } = *op {
                    deltas.add(owner, usage::size_of(bucket, key, value.len() as u64), 1);
                }
            }
        }
        if !written.changed(ops) {
            return Ok(Written::new(inner.revision));
        }
        if let Some(usage) = self.usage {
            usage.check(&deltas)?;
            usage.commit(deltas);
        }
        inner.revision = written.revision;
        for (i, op) in ops.iter().enumerate() {
            let (bucket, key) = op.bucket_key();
            let k = compose(bucket, key);
            let is_put = matches!(op, WriteOp::Put { .. });
            // A delete leaves a missing or expired key alone (the sweeper removes it).
            if !is_put && !written.existed(i) {
                continue;
            }
            if let Some(old) = inner.map.remove(&k)
                && let Some(at) = old.expires_at
            {
                inner.expiries.remove(&(at, k.clone()));
            }
            inner.owners.remove(&k);
            if let WriteOp::Put {
                content_type,
                value,
                expires_at,
                owner,
                ..
            } = *op
            {
                if self.usage.is_some() && owner != DEFAULT_TENANT {
                    inner.owners.insert(k.clone(), owner.into());
                }
                if let Some(at) = expires_at {
                    inner.expiries.insert((at, k.clone()));
                }
                let record = Record {
                    value: value.clone(),
                    content_type: bytes::Bytes::copy_from_slice(content_type),
                    revision: written.revision,
                    expires_at,
                };
                inner.map.insert(k, record);
            }
        }
        self.feed.append(events_of(ops, &written));
        self.feed.release(written.revision);
        Ok(written)
    }
}

impl super::Storage for MemStore {
    fn get(&self, bucket: &str, key: &str) -> StoreCall<Read> {
        StoreCall::ready(self.inner.read().map_err(|_| poisoned()).map(|inner| {
            Read {
                record: inner
                    .map
                    .get(&compose(bucket, key))
                    .filter(|r| r.live_now())
                    .cloned(),
                revision: inner.revision,
            }
        }))
    }

    fn write(&self, ops: &[WriteOp<'_>]) -> StoreCall<Written> {
        let result = self.lock().and_then(|inner| {
            View {
                inner,
                feed: &self.feed,
                usage: self.usage.as_deref(),
            }
            .apply(ops, now_secs())
        });
        StoreCall::ready(result)
    }

    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        opts: ListOpts,
    ) -> StoreCall<Page> {
        let range = ListRange::new(bucket, prefix, after);
        let Ok(inner) = self.inner.read() else {
            return StoreCall::ready(Err(poisoned()));
        };
        let now = now_secs();
        let records = inner
            .map
            .range((range.lower.clone(), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&range.prefix))
            .filter(|(_, r)| r.live(now))
            .map(|(k, r)| Ok((range.user_key(k)?, r.clone())));
        StoreCall::ready(page_from(records, opts, inner.revision))
    }

    fn txn(&self, txn: &Txn<'_>) -> StoreCall<TxnOutcome> {
        let result = self.lock().and_then(|inner| {
            let current = inner.revision;
            let mut view = View {
                inner,
                feed: &self.feed,
                usage: self.usage.as_deref(),
            };
            let (mut outcome, changed) = run_txn(&mut view, txn, now_secs())?;
            if !changed {
                outcome.revision = current;
            }
            Ok(outcome)
        });
        StoreCall::ready(result)
    }

    fn expired(&self, now: u64, limit: usize) -> Result<Vec<Expiring>, StoreError> {
        let inner = self.inner.read().map_err(|_| poisoned())?;
        let mut out = Vec::new();
        for (_, k) in inner.expiries.range(..(now.saturating_add(1), Vec::new())) {
            if out.len() == limit {
                break;
            }
            if let Some(r) = inner.map.get(k) {
                let (bucket, key) = super::split(k)?;
                out.push(Expiring {
                    bucket,
                    key,
                    revision: r.revision,
                });
            }
        }
        Ok(out)
    }

    fn scan(
        &self,
        after: Option<&[u8]>,
        limit: usize,
        now: u64,
    ) -> Result<Vec<Scanned>, StoreError> {
        let inner = self.inner.read().map_err(|_| poisoned())?;
        let lower = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_vec()));
        let mut out = Vec::new();
        for (k, r) in inner.map.range((lower, Bound::Unbounded)) {
            if out.len() == limit {
                break;
            }
            if !r.live(now) {
                continue;
            }
            let (bucket, key) = super::split(k)?;
            out.push(Scanned {
                engine_key: k.clone(),
                bucket,
                key,
                record: r.clone(),
                owner: inner.owners.get(k).map(|o| o.to_string()),
            });
        }
        Ok(out)
    }

    fn revision(&self) -> u64 {
        self.inner.read().map_or(0, |i| i.revision)
    }

    fn applied_revision(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.revision)
    }

    fn settle(&self, _revision: u64) -> StoreCall<()> {
        StoreCall::ready(Ok(()))
    }

    fn feed(&self) -> &Feed {
        &self.feed
    }

    fn health(&self) -> bool {
        true
    }

    fn usage(&self) -> Option<&Usage> {
        self.usage.as_deref()
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
