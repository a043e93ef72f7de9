//! One semantic suite, run against every engine. A new engine joins with one line in the
//! `engines` list at the bottom: a name and a function that opens a fresh, empty store.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::config::{Durability, StorageCfg};

/// A fresh store and whatever must live as long as it (a temp dir).
type Opened = (Arc<dyn Storage>, Option<tempfile::TempDir>);

/// Every engine under test keeps usage: tenant `small` may store 3 keys and 64 bytes, every
/// other tenant is unlimited.
fn usage() -> Option<Arc<usage::Usage>> {
    let small = usage::Limits {
        max_bytes: Some(64),
        max_keys: Some(3),
    };
    Some(usage::Usage::with_limits(
        usage::Limits::default(),
        &[("small", small)],
    ))
}

fn open_mem() -> Opened {
    (
        Arc::new(crate::store::mem::MemStore::new(1000, usage())),
        None,
    )
}

fn open_sled(durability: Durability) -> Opened {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = StorageCfg {
        path: dir.path().join("db"),
        durability,
        ..Default::default()
    };
    let s = crate::store::sled_engine::SledStore::open(
        &cfg,
        1000,
        Arc::new(Metrics::new(&[])),
        usage(),
    )
    .expect("sled opens in a temp dir");
    (Arc::new(s), Some(dir))
}

fn open_sled_sync() -> Opened {
    open_sled(Durability::Sync)
}

fn open_sled_periodic() -> Opened {
    open_sled(Durability::Periodic)
}

/// A fresh postgres store in a schema of its own (tests share one database and run in
/// parallel), or `None` — loudly — when no database is configured. Under `CI=true` a missing
/// database fails the test instead: CI must never pass by skipping.
fn open_postgres() -> Option<Opened> {
    let Ok(url) = std::env::var("MICRONODE_TEST_PG_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "MICRONODE_TEST_PG_URL not set under CI=true (scripts/pg_cluster.sh start DIR)"
        );
        eprintln!("SKIPPED: MICRONODE_TEST_PG_URL not set (scripts/pg_cluster.sh start)");
        return None;
    };
    let cfg = crate::config::PostgresCfg {
        url,
        pool_size: 4,
        schema: unique_schema(),
        ..Default::default()
    };
    let s = crate::store::postgres::PgStore::open(&cfg, 1000, usage())
        .expect("postgres engine opens on MICRONODE_TEST_PG_URL");
    Some((Arc::new(s), None))
}

/// A schema name no other test (of this or another process) uses.
pub(crate) fn unique_schema() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "mn_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What an opener returns: a store, or `None` when its engine cannot run here (skipped).
trait IntoOpened {
    fn into_opened(self) -> Option<Opened>;
}

impl IntoOpened for Opened {
    fn into_opened(self) -> Option<Opened> {
        Some(self)
    }
}

impl IntoOpened for Option<Opened> {
    fn into_opened(self) -> Option<Opened> {
        self
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn put(
    s: &dyn Storage,
    b: &str,
    k: &str,
    ct: &[u8],
    v: &[u8],
    c: &Cond,
) -> Result<PutOutcome, StoreError> {
    block_on(s.put(b, k, ct, &Bytes::copy_from_slice(v), None, c, "default"))
}

fn get(s: &dyn Storage, b: &str, k: &str) -> Option<Record> {
    block_on(s.get(b, k)).expect("get").record
}

fn del(s: &dyn Storage, b: &str, k: &str, c: &Cond) -> Result<u64, StoreError> {
    block_on(s.delete(b, k, c))
}

fn kind<T: std::fmt::Debug>(r: Result<T, StoreError>) -> ErrorKind {
    r.expect_err("an error").kind()
}

fn value(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed ^ (i / 4096) as u8)
        .collect()
}

mod cases {
    use super::*;

    pub(super) fn put_get_replace_delete(s: &dyn Storage) {
        let v1 = match put(s, "b", "k", b"text/plain", b"one", &Cond::NONE) {
            Ok(PutOutcome::Created(v)) => v,
            other => panic!("{s:?}: {other:?}"),
        };
        let got = get(s, "b", "k").expect("present");
        assert_eq!(&got.value[..], b"one");
        assert_eq!(&got.content_type[..], b"text/plain");
        assert_eq!(got.revision, v1);
        assert_eq!(got.expires_at, None);
        let v2 = match put(s, "b", "k", b"", b"two", &Cond::NONE) {
            Ok(PutOutcome::Replaced(v)) => v,
            other => panic!("{s:?}: {other:?}"),
        };
        assert!(v2 > v1, "revisions increase on every write");
        assert_eq!(get(s, "other", "k"), None, "buckets are separate");
        let d = del(s, "b", "k", &Cond::NONE).expect("delete");
        assert!(d > v2);
        assert_eq!(kind(del(s, "b", "k", &Cond::NONE)), ErrorKind::NotFound);
        assert_eq!(get(s, "b", "k"), None);
        assert!(s.health());
    }

    pub(super) fn conditions_are_checked_with_the_write(s: &dyn Storage) {
        let create_only = Cond {
            if_none_match: Some(IfMatch::Any),
            ..Default::default()
        };
        let v = match put(s, "b", "c", b"", b"x", &create_only) {
            Ok(PutOutcome::Created(v)) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind(put(s, "b", "c", b"", b"y", &create_only)),
            ErrorKind::Precondition
        );
        let stale = Cond {
            if_match: Some(IfMatch::Versions(vec![v + 1000])),
            ..Default::default()
        };
        assert_eq!(
            kind(put(s, "b", "c", b"", b"y", &stale)),
            ErrorKind::Precondition
        );
        assert_eq!(kind(del(s, "b", "c", &stale)), ErrorKind::Precondition);
        let current = Cond {
            if_match: Some(IfMatch::Versions(vec![v])),
            ..Default::default()
        };
        assert!(matches!(
            put(s, "b", "c", b"", b"y", &current),
            Ok(PutOutcome::Replaced(_))
        ));
        assert_eq!(
            kind(put(s, "b", "c", b"", b"z", &current)),
            ErrorKind::Precondition,
            "the old revision no longer matches"
        );
        let any = Cond {
            if_match: Some(IfMatch::Any),
            ..Default::default()
        };
        assert_eq!(
            kind(put(s, "b", "missing", b"", b"z", &any)),
            ErrorKind::Precondition
        );
        assert!(del(s, "b", "c", &any).is_ok());
    }

    pub(super) fn listing_is_ordered_prefixed_and_paged(s: &dyn Storage) {
        for k in ["a/2", "a/1", "b", "a/10", "c"] {
            put(s, "bk", k, b"", b"v", &Cond::NONE).expect("put");
        }
        put(s, "bk2", "a/0", b"", b"v", &Cond::NONE).expect("put");
        // A large value's pieces (if an engine splits it) never show up in a listing.
        put(s, "bk", "big", b"", &value(1, 300 * 1024), &Cond::NONE).expect("put");
        let list = |prefix, after, limit| {
            block_on(s.list(
                "bk",
                prefix,
                after,
                crate::store::ListOpts {
                    limit,
                    values: None,
                },
            ))
            .expect("list")
        };
        let p = list("a/", None, 2);
        assert_eq!(p.keys, ["a/1", "a/10"]);
        assert_eq!(p.next.as_deref(), Some("a/10"));
        let p = list("a/", p.next.as_deref(), 2);
        assert_eq!(p.keys, ["a/2"]);
        assert_eq!(p.next, None);
        let p = list("", None, 100);
        assert_eq!(p.keys, ["a/1", "a/10", "a/2", "b", "big", "c"]);
    }

    pub(super) fn values_of_every_size_read_back_exactly(s: &dyn Storage) {
        let sizes = [
            0,
            1,
            1000,
            1883,
            1884,
            4095,
            4096,
            4097,
            64 * 1024 - 1,
            64 * 1024 + 1,
            100 * 1024,
            256 * 1024,
            1024 * 1024 + 3,
            3 * 1024 * 1024,
        ];
        for (i, &n) in sizes.iter().enumerate() {
            let v = value(i as u8, n);
            let ct = format!("application/x-size-{n}");
            put(s, "sz", &format!("k{n}"), ct.as_bytes(), &v, &Cond::NONE).expect("put");
            let got = get(s, "sz", &format!("k{n}")).expect("present");
            assert_eq!(got.value.len(), n);
            assert!(got.value[..] == v[..], "{n} bytes read back differently");
            assert_eq!(got.content_type, ct.as_bytes());
        }
        // Overwrite large with small and small with large, then delete: nothing of the old value
        // shows through.
        put(s, "sz", "k3145728", b"", b"small now", &Cond::NONE).expect("put");
        assert_eq!(
            &get(s, "sz", "k3145728").expect("present").value[..],
            b"small now"
        );
        let big = value(99, 700 * 1024);
        put(s, "sz", "k0", b"", &big, &Cond::NONE).expect("put");
        assert!(get(s, "sz", "k0").expect("present").value[..] == big[..]);
        del(s, "sz", "k0", &Cond::NONE).expect("delete");
        assert_eq!(get(s, "sz", "k0"), None);
    }

    pub(super) fn limits_are_refused_never_truncated(s: &dyn Storage) {
        let long_ct = vec![b'a'; MAX_CONTENT_TYPE_BYTES + 1];
        assert_eq!(
            kind(put(s, "b", "k", &long_ct, b"v", &Cond::NONE)),
            ErrorKind::Internal
        );
        assert_eq!(get(s, "b", "k"), None, "nothing was stored");
        let max_ct = vec![b'a'; MAX_CONTENT_TYPE_BYTES];
        put(s, "b", "k", &max_ct, b"v", &Cond::NONE).expect("the limit itself is fine");
        assert_eq!(
            get(s, "b", "k").expect("present").content_type.len(),
            MAX_CONTENT_TYPE_BYTES
        );
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            kind(put(s, "b", &long_key, b"", b"v", &Cond::NONE)),
            ErrorKind::Internal
        );
        let max_key = "k".repeat(MAX_KEY_BYTES);
        let max_bucket = "b".repeat(MAX_BUCKET_BYTES);
        put(
            s,
            &max_bucket,
            &max_key,
            &max_ct,
            &value(3, 20_000),
            &Cond::NONE,
        )
        .expect("longest key");
        assert_eq!(
            get(s, &max_bucket, &max_key).expect("present").value.len(),
            20_000
        );
    }

    pub(super) fn a_step_is_all_or_nothing_under_one_revision(s: &dyn Storage) {
        put(s, "t", "exists", b"", b"old", &Cond::NONE).expect("put");
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        let must_be_absent = Cond {
            if_none_match: Some(IfMatch::Any),
            ..Default::default()
        };
        let failing = [
            WriteOp::Put {
                bucket: "t",
                key: "new",
                content_type: b"",
                value: &a,
                expires_at: None,
                cond: &Cond::NONE,
                owner: "default",
            },
            WriteOp::Put {
                bucket: "t",
                key: "exists",
                content_type: b"",
                value: &b,
                expires_at: None,
                cond: &must_be_absent,
                owner: "default",
            },
        ];
        assert_eq!(kind(block_on(s.write(&failing))), ErrorKind::Precondition);
        assert_eq!(
            get(s, "t", "new"),
            None,
            "nothing of a failed step is applied"
        );
        let ok = [
            WriteOp::Put {
                bucket: "t",
                key: "new",
                content_type: b"",
                value: &a,
                expires_at: Some(4_000_000_000),
                cond: &Cond::NONE,
                owner: "default",
            },
            WriteOp::Delete {
                bucket: "t",
                key: "exists",
                cond: &Cond::NONE,
                expire: false,
            },
            WriteOp::Delete {
                bucket: "t",
                key: "never",
                cond: &Cond::NONE,
                expire: false,
            },
        ];
        let w = block_on(s.write(&ok)).expect("step");
        assert!(!w.existed(0) && w.existed(1) && !w.existed(2));
        let new = get(s, "t", "new").expect("present");
        assert_eq!(
            new.revision, w.revision,
            "all ops of a step share its revision"
        );
        assert_eq!(new.expires_at, Some(4_000_000_000));
        assert_eq!(get(s, "t", "exists"), None);
        let twice = [
            WriteOp::Delete {
                bucket: "t",
                key: "new",
                cond: &Cond::NONE,
                expire: false,
            },
            WriteOp::Delete {
                bucket: "t",
                key: "new",
                cond: &Cond::NONE,
                expire: false,
            },
        ];
        assert_eq!(kind(block_on(s.write(&twice))), ErrorKind::Internal);
        // A step that changes nothing takes no revision.
        let noop = [WriteOp::Delete {
            bucket: "t",
            key: "never",
            cond: &Cond::NONE,
            expire: false,
        }];
        assert_eq!(
            block_on(s.write(&noop)).expect("no-op").revision,
            w.revision
        );
    }

    /// Racing writers on one key: every revision is distinct, and the key ends at the highest
    /// one acknowledged (a key's ETag never goes backwards).
    pub(super) fn revisions_follow_apply_order_under_races(s: &dyn Storage) {
        let revs = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for w in 0..8u8 {
                let revs = &revs;
                scope.spawn(move || {
                    for i in 0..50u8 {
                        let r = match put(s, "race", "k", b"", &[w, i], &Cond::NONE).expect("put") {
                            PutOutcome::Created(r) | PutOutcome::Replaced(r) => r,
                        };
                        revs.lock().expect("lock").push(r);
                    }
                });
            }
        });
        let mut revs = revs.into_inner().expect("lock");
        let n = revs.len();
        revs.sort_unstable();
        revs.dedup();
        assert_eq!(revs.len(), n, "no revision handed out twice");
        let last = get(s, "race", "k").expect("present").revision;
        assert_eq!(
            Some(&last),
            revs.last(),
            "the key holds the last applied write"
        );
    }

    fn put_ttl(s: &dyn Storage, b: &str, k: &str, v: &[u8], at: u64) -> u64 {
        let value = Bytes::copy_from_slice(v);
        match block_on(s.put(
            b,
            k,
            b"text/plain",
            &value,
            Some(at),
            &Cond::NONE,
            "default",
        ))
        .expect("put")
        {
            PutOutcome::Created(r) | PutOutcome::Replaced(r) => r,
        }
    }

    /// An expired record is invisible at once to reads, lists, conditions and transactions;
    /// a create-only PUT over it succeeds (the lease-lock pattern); the sweep removes the rest
    /// as `expire` writes with their own revision, once.
    pub(super) fn expired_records_are_invisible_then_swept(s: &dyn Storage) {
        let now = now_secs();
        put_ttl(s, "ttl", "gone", b"x", now); // expires at `now`: already invisible
        put_ttl(s, "ttl", "lease", b"old", now);
        let live = put_ttl(s, "ttl", "live", b"y", now + 3600);
        assert_eq!(get(s, "ttl", "gone"), None);
        let rec = get(s, "ttl", "live").expect("live key");
        assert_eq!((rec.revision, rec.expires_at), (live, Some(now + 3600)));
        let opts = ListOpts {
            limit: 10,
            values: None,
        };
        let page = block_on(s.list("ttl", "", None, opts)).expect("list");
        assert_eq!(page.keys, vec!["live".to_owned()]);
        let must_exist = Cond {
            if_match: Some(IfMatch::Any),
            if_none_match: None,
        };
        assert_eq!(
            kind(put(s, "ttl", "gone", b"", b"z", &must_exist)),
            ErrorKind::Precondition
        );
        assert_eq!(
            kind(del(s, "ttl", "gone", &Cond::NONE)),
            ErrorKind::NotFound
        );
        let create_only = Cond {
            if_match: None,
            if_none_match: Some(IfMatch::Any),
        };
        assert!(matches!(
            put(s, "ttl", "lease", b"", b"new", &create_only),
            Ok(PutOutcome::Created(_))
        ));
        let due = s.expired(now, 10).expect("expired");
        assert_eq!(due.len(), 1, "only `gone` is still due: {due:?}");
        assert_eq!(due[0].key, "gone");
        let before = s.revision();
        let metrics = Metrics::new(&[]);
        let removed = block_on(ttl::sweep(s, &metrics, now)).expect("sweep");
        assert_eq!(removed, 1);
        assert!(s.expired(now, 10).expect("expired").is_empty());
        assert_eq!(block_on(ttl::sweep(s, &metrics, now)).expect("sweep"), 0);
        let events = s.feed().between(before, u64::MAX).expect("history kept");
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].kind, &*events[0].key),
            (EventKind::Expire, "gone")
        );
        assert_eq!(
            get(s, "ttl", "lease").map(|r| r.value),
            Some(Bytes::from("new"))
        );
    }

    /// Compares pick the branch; gets see the state before the step unless an earlier op
    /// of the branch wrote the key; all writes share one revision; results are in op order.
    pub(super) fn usage_follows_every_write_and_quotas_store_nothing(s: &dyn Storage) {
        use crate::store::usage::Counts;
        let u = s.usage().expect("the suite's engines keep usage");
        let put_as = |owner: &str, key: &str, v: &[u8], ttl: Option<u64>| {
            let v = Bytes::copy_from_slice(v);
            block_on(s.put("u", key, b"", &v, ttl, &Cond::NONE, owner))
        };
        // bytes = bucket + key + value: "u" + "a" + 10 = 12.
        put_as("small", "a", &[1; 10], None).expect("fits");
        put_as("small", "b", &[1; 10], None).expect("fits");
        assert_eq!(u.of("small"), Counts { bytes: 24, keys: 2 });
        // Overwriting: the old size goes, the new one comes.
        put_as("small", "a", &[1; 20], None).expect("fits");
        assert_eq!(u.of("small"), Counts { bytes: 34, keys: 2 });
        // Past the bytes limit (34 - 22 + 62 = 74 > 64): refused, nothing stored.
        let before = s.revision();
        let err = put_as("small", "a", &[2; 60], None).expect_err("over bytes");
        assert_eq!(err.kind(), ErrorKind::Quota);
        assert_eq!(get(s, "u", "a").map(|r| r.value.len()), Some(20));
        assert_eq!(s.revision(), before, "a refused write takes no revision");
        // Past the keys limit with a new key.
        put_as("small", "c", b"", None).expect("third key");
        let err = put_as("small", "d", b"", None).expect_err("over keys");
        assert_eq!(err.kind(), ErrorKind::Quota);
        assert_eq!(get(s, "u", "d"), None);
        // Another tenant overwriting takes the record over.
        put_as("big", "c", &[0; 100], None).expect("unlimited");
        assert_eq!(u.of("small"), Counts { bytes: 34, keys: 2 });
        assert_eq!(
            u.of("big"),
            Counts {
                bytes: 102,
                keys: 1
            }
        );
        // A delete gives the owner its room back.
        del(s, "u", "b", &Cond::NONE).expect("delete");
        assert_eq!(u.of("small"), Counts { bytes: 22, keys: 1 });
        // A transaction is judged as one step: two puts that fit together, then two that
        // do not, which store neither.
        let (v8, v40) = (Bytes::from_static(&[0; 8]), Bytes::from_static(&[0; 40]));
        let op = |key, value| {
            TxnOp::Write(WriteOp::Put {
                bucket: "u",
                key,
                content_type: b"",
                value,
                expires_at: None,
                cond: &Cond::NONE,
                owner: "small",
            })
        };
        let fits = [op("t1", &v8), op("t2", &v8)];
        let txn = Txn {
            compares: &[],
            then: &fits,
            otherwise: &[],
        };
        block_on(s.txn(&txn)).expect("fits");
        assert_eq!(
            u.of("small"),
            Counts {
                bytes: 22 + 2 * 11,
                keys: 3
            }
        );
        let too_much = [op("t1", &v40), op("t3", &v8)];
        let txn = Txn {
            compares: &[],
            then: &too_much,
            otherwise: &[],
        };
        let err = block_on(s.txn(&txn)).expect_err("over");
        assert_eq!(err.kind(), ErrorKind::Quota);
        assert_eq!(get(s, "u", "t1").map(|r| r.value.len()), Some(8));
        assert_eq!(get(s, "u", "t3"), None);
        // Expiry: the sweeper's delete gives the room back.
        del(s, "u", "t2", &Cond::NONE).expect("delete");
        put_as("small", "e", &[0; 4], Some(1)).expect("expiring");
        let expired = s.expired(now_secs() + 10, 10).expect("expired");
        let e = expired.iter().find(|e| e.key == "e").expect("listed");
        let sweep = [WriteOp::Delete {
            bucket: "u",
            key: "e",
            cond: &Cond {
                if_match: Some(IfMatch::Versions(vec![e.revision])),
                if_none_match: None,
            },
            expire: true,
        }];
        let _ = block_on(s.write(&sweep));
        let (t1, a) = (1 + 2 + 8, 1 + 1 + 20);
        assert_eq!(
            u.of("small"),
            Counts {
                bytes: t1 + a,
                keys: 2
            }
        );
    }

    pub(super) fn transactions_are_one_step(s: &dyn Storage) {
        put(s, "tx", "a", b"", b"1", &Cond::NONE).expect("put");
        let a = get(s, "tx", "a").expect("a").revision;
        let etag_a = Cond {
            if_match: Some(IfMatch::Versions(vec![a])),
            if_none_match: None,
        };
        let absent = Cond {
            if_match: None,
            if_none_match: Some(IfMatch::Any),
        };
        let compares = [
            Compare {
                bucket: "tx",
                key: "a",
                cond: &etag_a,
            },
            Compare {
                bucket: "tx",
                key: "b",
                cond: &absent,
            },
        ];
        let two = Bytes::from_static(b"2");
        let then = [
            TxnOp::Get {
                bucket: "tx",
                key: "a",
            },
            TxnOp::Write(WriteOp::Put {
                bucket: "tx",
                key: "a",
                content_type: b"text/plain",
                value: &two,
                expires_at: None,
                cond: &Cond::NONE,
                owner: "default",
            }),
            TxnOp::Get {
                bucket: "tx",
                key: "a",
            },
            TxnOp::Write(WriteOp::Delete {
                bucket: "tx",
                key: "nothing",
                cond: &Cond::NONE,
                expire: false,
            }),
            TxnOp::Write(WriteOp::Put {
                bucket: "tx",
                key: "b",
                content_type: b"",
                value: &two,
                expires_at: None,
                cond: &Cond::NONE,
                owner: "default",
            }),
        ];
        let otherwise = [TxnOp::Get {
            bucket: "tx",
            key: "a",
        }];
        let txn = Txn {
            compares: &compares,
            then: &then,
            otherwise: &otherwise,
        };
        let out = block_on(s.txn(&txn)).expect("txn");
        assert!(out.succeeded);
        let r = out.revision;
        assert!(r > a);
        match &out.results[..] {
            [
                OpResult::Get(Some(before)),
                OpResult::Put { revision: p1 },
                OpResult::Get(Some(after)),
                OpResult::Delete { deleted: false },
                OpResult::Put { revision: p2 },
            ] => {
                assert_eq!((before.value.as_ref(), before.revision), (&b"1"[..], a));
                assert_eq!((after.value.as_ref(), after.revision), (&b"2"[..], r));
                assert_eq!((*p1, *p2), (r, r));
            }
            other => panic!("unexpected results {other:?}"),
        }
        assert_eq!(get(s, "tx", "b").map(|r| r.revision), Some(r));
        // The same compares now fail (a changed, b exists): the else branch, no write.
        let out = block_on(s.txn(&txn)).expect("txn");
        assert!(!out.succeeded);
        assert_eq!(
            out.revision, r,
            "a read-only branch names the current revision"
        );
        match &out.results[..] {
            [OpResult::Get(Some(rec))] => assert_eq!(rec.revision, r),
            other => panic!("unexpected results {other:?}"),
        }
    }

    /// The feed holds every applied step in revision order and releases it once durable;
    /// the scan sees every live record.
    pub(super) fn feed_and_scan_follow_the_writes(s: &dyn Storage) {
        let start = s.revision();
        let mut revs = Vec::new();
        for i in 0..5u8 {
            let r = match put(s, "fd", &format!("k{i}"), b"", &[i], &Cond::NONE).expect("put") {
                PutOutcome::Created(r) | PutOutcome::Replaced(r) => r,
            };
            revs.push(r);
        }
        del(s, "fd", "k0", &Cond::NONE).expect("delete");
        let feed = s.feed();
        assert!(
            feed.released() >= *revs.last().expect("revs"),
            "acknowledged = released"
        );
        let events = feed.between(start, u64::MAX).expect("history");
        assert_eq!(events.len(), 6);
        assert!(events.windows(2).all(|w| w[0].revision < w[1].revision));
        assert_eq!(events[5].kind, EventKind::Delete);
        let scanned = s.scan(None, 100, now_secs()).expect("scan");
        let keys: Vec<_> = scanned
            .iter()
            .filter(|x| x.bucket == "fd")
            .map(|x| x.key.as_str())
            .collect();
        assert_eq!(keys, ["k1", "k2", "k3", "k4"]);
        let half = s.scan(None, 2, now_secs()).expect("scan");
        let rest = s
            .scan(Some(&half[1].engine_key), 100, now_secs())
            .expect("scan");
        assert_eq!(half.len() + rest.len(), scanned.len());
        // A list with values returns the records, cut by value bytes.
        let opts = ListOpts {
            limit: 100,
            values: Some(1),
        };
        let page = block_on(s.list("fd", "", None, opts)).expect("list");
        assert_eq!((page.keys.len(), page.records.len()), (1, 1));
        assert_eq!(page.next.as_deref(), Some("k1"));
        assert_eq!(page.records[0].value.as_ref(), &[1u8][..]);
    }
}

/// Runs every case against every engine: `engines` × `cases` tests.
macro_rules! suite {
    (engines: [$($engine:ident => $open:path),* $(,)?], cases: $cases:tt) => {
        $( suite!(@engine $engine, $open, $cases); )*
    };
    (@engine $engine:ident, $open:path, [$($case:ident),* $(,)?]) => {
        mod $engine {
            $(
                #[test]
                fn $case() {
                    let Some((store, _dir)) = super::IntoOpened::into_opened($open()) else {
                        return;
                    };
                    super::cases::$case(&*store);
                }
            )*
        }
    };
}

suite! {
    engines: [
        mem => super::open_mem,
        sled_sync => super::open_sled_sync,
        sled_periodic => super::open_sled_periodic,
        postgres => super::open_postgres,
    ],
    cases: [
        put_get_replace_delete,
        conditions_are_checked_with_the_write,
        listing_is_ordered_prefixed_and_paged,
        values_of_every_size_read_back_exactly,
        limits_are_refused_never_truncated,
        a_step_is_all_or_nothing_under_one_revision,
        revisions_follow_apply_order_under_races,
        expired_records_are_invisible_then_swept,
        transactions_are_one_step,
        feed_and_scan_follow_the_writes,
        usage_follows_every_write_and_quotas_store_nothing,
    ]
}
