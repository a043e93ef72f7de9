//! One semantic suite, run against every engine. A new engine joins with one line in the
//! `engines` list at the bottom: a name and a function that opens a fresh, empty store.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::config::{Durability, StorageCfg};

/// A fresh store and whatever must live as long as it (a temp dir).
type Opened = (Arc<dyn Storage>, Option<tempfile::TempDir>);

fn open_mem() -> Opened {
    (Arc::new(crate::store::mem::MemStore::new()), None)
}

fn open_sled(durability: Durability) -> Opened {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = StorageCfg {
        path: dir.path().join("db"),
        durability,
        ..Default::default()
    };
    let s = crate::store::sled_engine::SledStore::open(&cfg, Arc::new(Metrics::new(&[])))
        .expect("sled opens in a temp dir");
    (Arc::new(s), Some(dir))
}

fn open_sled_sync() -> Opened {
    open_sled(Durability::Sync)
}

fn open_sled_periodic() -> Opened {
    open_sled(Durability::Periodic)
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
    block_on(s.put(b, k, ct, &Bytes::copy_from_slice(v), c))
}

fn get(s: &dyn Storage, b: &str, k: &str) -> Option<Record> {
    block_on(s.get(b, k)).expect("get")
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
        let list =
            |prefix, after, limit| block_on(s.list("bk", prefix, after, limit)).expect("list");
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
            },
            WriteOp::Put {
                bucket: "t",
                key: "exists",
                content_type: b"",
                value: &b,
                expires_at: None,
                cond: &must_be_absent,
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
            },
            WriteOp::Delete {
                bucket: "t",
                key: "exists",
                cond: &Cond::NONE,
            },
            WriteOp::Delete {
                bucket: "t",
                key: "never",
                cond: &Cond::NONE,
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
            },
            WriteOp::Delete {
                bucket: "t",
                key: "new",
                cond: &Cond::NONE,
            },
        ];
        assert_eq!(kind(block_on(s.write(&twice))), ErrorKind::Internal);
        // A step that changes nothing takes no revision.
        let noop = [WriteOp::Delete {
            bucket: "t",
            key: "never",
            cond: &Cond::NONE,
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
                    let (store, _dir) = $open();
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
    ],
    cases: [
        put_get_replace_delete,
        conditions_are_checked_with_the_write,
        listing_is_ordered_prefixed_and_paged,
        values_of_every_size_read_back_exactly,
        limits_are_refused_never_truncated,
        a_step_is_all_or_nothing_under_one_revision,
        revisions_follow_apply_order_under_races,
    ]
}
