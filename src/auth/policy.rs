//! The decision: what a verified token allows.
//!
//! A token's caveats are folded into one [`Restriction`], the intersection of all of them:
//!
//! - **bucket** — every bucket caveat must name the request's bucket. Two different bucket
//!   caveats allow no bucket at all.
//! - **prefix** — the request's key must start with *every* prefix caveat. For `list` and
//!   `watch` the request's effective prefix (the `prefix` query parameter decoded as the store
//!   sees it, empty when absent) must start with every prefix caveat: a listing without a
//!   prefix under a prefix-restricted token is denied, never filtered. Prefixes `a/` and `a/b/`
//!   together mean `a/b/`; `a/` and `b/` together allow nothing.
//! - **ops** — the op must be in every ops caveat (the sets are ANDed). No ops caveat means
//!   every op, `admin` included.
//! - **time** — the latest `not_before` and the earliest `not_after` bound the window, both
//!   inclusive: a token is good from `not_before` through `not_after`, each widened by the
//!   verifier's leeway. The window is checked when the token is verified
//!   ([`Unverified::verify`](super::Unverified::verify) answers `Expired` outside it), not by
//!   [`Restriction::allows`]; a long-lived stream can read [`Restriction::not_after`] to end
//!   itself.
//!
//! Three checks, for three kinds of request:
//! - [`Restriction::allows`]`(op, bucket, target)` — a KV request: a key op (`get`, `put`,
//!   `delete`) on [`Target::Key`], or `list`/`watch` on [`Target::Prefix`].
//! - [`Restriction::allows_cursor`]`(bucket, after)` — a list's `after` cursor, checked on its
//!   own, in addition to the prefix: denied unless it starts with every prefix caveat. (The
//!   store only returns keys under the allowed prefix whatever the cursor, so this leaks
//!   nothing either way; refusing keeps the rule simple: every key-shaped input is inside the
//!   token's prefixes.)
//! - [`Restriction::allows_node`]`(op)` — a request about the whole node rather than one
//!   bucket (snapshot, minting and revoking tokens, protected `/metrics`: op `admin`): the op
//!   must be allowed and the token may carry no bucket or prefix caveat, since the request
//!   reaches beyond any bucket or prefix.
//!
//! A transaction needs `txn` and, for each operation inside it, that operation's own op
//! (`get`, `put`, `delete`) on its own bucket and key: check both
//! `allows(Op::Txn, bucket, Target::Key(key))` and `allows(op, bucket, Target::Key(key))` per
//! operation.

use super::token::{Caveat, Op, Ops, Verified};

/// What a request touches inside its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// One key (get, put, delete, a transaction's operation).
    Key(&'a str),
    /// Every key starting with this (list, watch); empty for the whole bucket.
    Prefix(&'a str),
}

impl<'a> Target<'a> {
    fn as_str(self) -> &'a str {
        match self {
            Target::Key(s) | Target::Prefix(s) => s,
        }
    }
}

/// The intersection of a token's caveats (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    bucket: BucketScope,
    prefixes: Vec<String>,
    ops: Ops,
    not_before: Option<u64>,
    not_after: Option<u64>,
}

/// The buckets a token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketScope {
    /// No bucket caveat.
    Any,
    /// Every bucket caveat names this bucket.
    Only(String),
    /// Two different bucket caveats: no bucket satisfies both.
    Nothing,
}

impl Restriction {
    /// Folds caveats into their intersection; order does not matter.
    pub fn from_caveats(caveats: &[Caveat]) -> Restriction {
        let mut r = Restriction {
            bucket: BucketScope::Any,
            prefixes: Vec::new(),
            ops: Ops::ALL,
            not_before: None,
            not_after: None,
        };
        for c in caveats {
            match c {
                Caveat::Bucket(b) => {
                    r.bucket = match r.bucket {
                        BucketScope::Any => BucketScope::Only(b.clone()),
                        BucketScope::Only(ref old) if old == b => continue,
                        BucketScope::Only(_) | BucketScope::Nothing => BucketScope::Nothing,
                    }
                }
                Caveat::Prefix(p) => {
                    if !r.prefixes.contains(p) {
                        r.prefixes.push(p.clone());
                    }
                }
                Caveat::Ops(ops) => r.ops = r.ops.intersect(*ops),
                Caveat::NotAfter(t) => r.not_after = Some(r.not_after.map_or(*t, |o| o.min(*t))),
                Caveat::NotBefore(t) => {
                    r.not_before = Some(r.not_before.map_or(*t, |o| o.max(*t)));
                }
            }
        }
        r
    }

    /// May `op` touch `target` in `bucket`?
    pub fn allows(&self, op: Op, bucket: &str, target: Target<'_>) -> bool {
        self.ops.contains(op) && self.bucket_ok(bucket) && self.under_prefixes(target.as_str())
    }

    /// May a listing of `bucket` resume after `after`? Denied unless `after` starts with
    /// every prefix caveat. Check it in addition to [`Restriction::allows`] on the prefix.
    pub fn allows_cursor(&self, bucket: &str, after: &str) -> bool {
        self.bucket_ok(bucket) && self.under_prefixes(after)
    }

    /// May `op` act on the whole node (snapshot, mint, revoke, protected metrics)? Needs the
    /// op and no bucket or prefix caveat.
    pub fn allows_node(&self, op: Op) -> bool {
        self.ops.contains(op) && self.bucket == BucketScope::Any && self.prefixes.is_empty()
    }

    /// Is `now` (unix seconds) inside the window, each bound widened by `leeway_secs`?
    pub fn in_window(&self, now: u64, leeway_secs: u64) -> bool {
        let started = self
            .not_before
            .is_none_or(|nb| now.saturating_add(leeway_secs) >= nb);
        let not_over = self
            .not_after
            .is_none_or(|na| now <= na.saturating_add(leeway_secs));
        started && not_over
    }

    /// The allowed ops (every op when no ops caveat).
    pub fn ops(&self) -> Ops {
        self.ops
    }

    /// The buckets allowed.
    pub fn bucket(&self) -> &BucketScope {
        &self.bucket
    }

    /// Every distinct prefix caveat; a key must start with all of them.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// The latest `not_before`, if any.
    pub fn not_before(&self) -> Option<u64> {
        self.not_before
    }

    /// The earliest `not_after`, if any.
    pub fn not_after(&self) -> Option<u64> {
        self.not_after
    }

    fn bucket_ok(&self, bucket: &str) -> bool {
        match &self.bucket {
            BucketScope::Any => true,
            BucketScope::Only(b) => b == bucket,
            BucketScope::Nothing => false,
        }
    }

    fn under_prefixes(&self, s: &str) -> bool {
        self.prefixes.iter().all(|p| s.starts_with(p.as_str()))
    }
}

impl Verified {
    /// [`Restriction::allows`] for this token.
    pub fn allows(&self, op: Op, bucket: &str, target: Target<'_>) -> bool {
        self.restriction.allows(op, bucket, target)
    }

    /// [`Restriction::allows_cursor`] for this token.
    pub fn allows_cursor(&self, bucket: &str, after: &str) -> bool {
        self.restriction.allows_cursor(bucket, after)
    }

    /// [`Restriction::allows_node`] for this token.
    pub fn allows_node(&self, op: Op) -> bool {
        self.restriction.allows_node(op)
    }
}
