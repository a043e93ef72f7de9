//! The `mem` engine: an ordered map behind a lock. Nothing touches the disk, which is what
//! amnesia mode needs; a 2xx means "in this process's memory". Every call completes at once.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use super::{
    ListRange, Page, Record, StoreCall, StoreError, WriteOp, Written, check_step, clock_floor,
    compose, page_from,
};

#[derive(Debug)]
pub struct MemStore {
    inner: RwLock<Inner>,
}

#[derive(Debug)]
struct Inner {
    map: BTreeMap<Vec<u8>, Record>,
    /// The last revision handed out. Seeded from the clock so that an ETag held across a
    /// restart can never match a different value.
    revision: u64,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

fn poisoned() -> StoreError {
    StoreError::internal("mem store lock poisoned")
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore {
            inner: RwLock::new(Inner {
                map: BTreeMap::new(),
                revision: clock_floor(),
            }),
        }
    }

    fn apply(&self, ops: &[WriteOp<'_>]) -> Result<Written, StoreError> {
        check_step(ops)?;
        let mut inner = self.inner.write().map_err(|_| poisoned())?;
        let mut written = Written::new(inner.revision + 1);
        for (i, op) in ops.iter().enumerate() {
            let (bucket, key) = op.bucket_key();
            let current = inner.map.get(&compose(bucket, key)).map(|r| r.revision);
            if !op.cond().holds(current) {
                return Err(StoreError::precondition());
            }
            if current.is_some() {
                written.set_existed(i);
            }
        }
        if !written.changed(ops) {
            return Ok(Written::new(inner.revision));
        }
        inner.revision = written.revision;
        for op in ops {
            match *op {
                WriteOp::Put {
                    bucket,
                    key,
                    content_type,
                    value,
                    expires_at,
                    ..
                } => {
                    let record = Record {
                        value: value.clone(),
                        content_type: bytes::Bytes::copy_from_slice(content_type),
                        revision: written.revision,
                        expires_at,
                    };
                    inner.map.insert(compose(bucket, key), record);
                }
                WriteOp::Delete { bucket, key, .. } => {
                    inner.map.remove(&compose(bucket, key));
                }
            }
        }
        Ok(written)
    }
}

impl super::Storage for MemStore {
    fn get(&self, bucket: &str, key: &str) -> StoreCall<Option<Record>> {
        StoreCall::ready(
            self.inner
                .read()
                .map_err(|_| poisoned())
                .map(|inner| inner.map.get(&compose(bucket, key)).cloned()),
        )
    }

    fn write(&self, ops: &[WriteOp<'_>]) -> StoreCall<Written> {
        StoreCall::ready(self.apply(ops))
    }

    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreCall<Page> {
        let range = ListRange::new(bucket, prefix, after);
        let Ok(inner) = self.inner.read() else {
            return StoreCall::ready(Err(poisoned()));
        };
        let keys = inner
            .map
            .range((range.lower.clone(), Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&range.prefix))
            .map(|k| range.user_key(k));
        StoreCall::ready(page_from(keys, limit))
    }

    fn health(&self) -> bool {
        true
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
