//! The `mem` engine: an ordered map behind a lock. Nothing touches the disk, which is what
//! amnesia mode needs; a 2xx means "in this process's memory".

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{
    CommitWait, Cond, ListRange, Page, PutOutcome, Storage, StoreError, Value, compose, page_from,
};

#[derive(Debug, Default)]
pub struct MemStore {
    map: RwLock<BTreeMap<Vec<u8>, Value>>,
    versions: AtomicU64,
}

fn poisoned() -> StoreError {
    StoreError::Engine("mem store lock poisoned".to_owned())
}

impl MemStore {
    fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl Storage for MemStore {
    fn get(&self, bucket: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let map = self.map.read().map_err(|_| poisoned())?;
        Ok(map.get(&compose(bucket, key)).cloned())
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
        let mut map = self.map.write().map_err(|_| poisoned())?;
        let current = map.get(&k).map(|v| v.version);
        if !cond.holds(current) {
            return Err(StoreError::Precondition);
        }
        let version = self.next_version();
        map.insert(
            k,
            Value {
                bytes: Bytes::copy_from_slice(bytes),
                content_type: Bytes::copy_from_slice(content_type),
                version,
            },
        );
        Ok(match current {
            None => PutOutcome::Created(version),
            Some(_) => PutOutcome::Replaced(version),
        })
    }

    fn delete(&self, bucket: &str, key: &str, cond: &Cond) -> Result<bool, StoreError> {
        let k = compose(bucket, key);
        let mut map = self.map.write().map_err(|_| poisoned())?;
        if !cond.holds(map.get(&k).map(|v| v.version)) {
            return Err(StoreError::Precondition);
        }
        Ok(map.remove(&k).is_some())
    }

    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let range = ListRange::new(bucket, prefix, after);
        let map = self.map.read().map_err(|_| poisoned())?;
        let keys = map
            .range((range.lower.clone(), Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&range.prefix))
            .map(|k| range.user_key(k));
        page_from(keys, limit)
    }

    fn commit(&self) -> CommitWait {
        Box::pin(std::future::ready(Ok(())))
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
