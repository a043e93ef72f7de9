//! Per-tenant storage usage and its quotas (docs/SECURITY.md, "Tenants and quotas").
//!
//! Every record has an owner: the tenant whose write stored it (`default` with auth off). A
//! tenant's usage is the keys it owns and their bytes (bucket + key + value). Engines keep it
//! exact by judging each write step under their writer lock: the step's [`Deltas`] are checked
//! against the limits before anything is written (over a limit → [`ErrorKind::Quota`],
//! nothing stored) and added once the step is applied. The local engines never store usage
//! apart from the records: they rebuild it from their records when they open, so after a
//! restart or a crash it is exactly what the surviving records add up to. The postgres
//! engine, shared by several nodes, keeps it in a table written in each step's transaction
//! and judges steps on that table's counts ([`Usage::judge`]); this tracker then holds the
//! latest counts read ([`Usage::set`]). System records (owner [`SYSTEM`]) count for nobody.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{ErrorKind, StoreError};
use crate::config::{Config, DEFAULT_TENANT};

/// The owner of records no tenant pays for (revocations).
pub const SYSTEM: &str = "";

/// Keys and bytes a tenant owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub bytes: u64,
    pub keys: u64,
}

/// The storage limits of one tenant; `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: Option<u64>,
    pub max_keys: Option<u64>,
}

/// The tenant a stored record counts for: [`SYSTEM`] for the node's own buckets (a name no
/// request can use starts with `_`), whatever the record says (revocations written before
/// records had owners say nothing, which would read as `default`), else its owner.
pub fn owner_in<'a>(bucket: &[u8], stored: &'a str) -> &'a str {
    if bucket.first() == Some(&b'_') {
        SYSTEM
    } else {
        stored
    }
}

/// The bytes a record counts for.
pub fn size_of(bucket: &str, key: &str, value_len: u64) -> u64 {
    (bucket.len() + key.len()) as u64 + value_len
}

/// What one write step changes, per owner: `(owner, bytes, keys)`, summed.
#[derive(Debug, Default)]
pub struct Deltas {
    v: Vec<(Box<str>, i64, i64)>,
}

impl Deltas {
    /// Each owner's summed change: `(owner, bytes, keys)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64, i64)> {
        self.v.iter().map(|(o, b, k)| (&**o, *b, *k))
    }

    /// `owner` gains (or, with `sign` -1, loses) one record of `bytes` bytes.
    pub fn add(&mut self, owner: &str, bytes: u64, sign: i64) {
        if owner == SYSTEM {
            return;
        }
        let b = i64::try_from(bytes).unwrap_or(i64::MAX) * sign;
        match self.v.iter_mut().find(|(o, ..)| &**o == owner) {
            Some(e) => {
                e.1 += b;
                e.2 += sign;
            }
            None => self.v.push((owner.into(), b, sign)),
        }
    }
}

/// The usage of every tenant that owns something, and the limits to hold them to.
#[derive(Debug)]
pub struct Usage {
    limits: HashMap<String, Limits>,
    fallback: Limits,
    counts: Mutex<HashMap<Box<str>, Entry>>,
}

/// One tenant's counts, and the revision they were read at when an engine that shares its
/// counts with other nodes set them ([`Usage::set`]; 0 otherwise).
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    counts: Counts,
    as_of: u64,
}

impl Usage {
    /// The usage tracker the configuration asks for: `None` when auth is off and no tenant
    /// has limits (then everything is `default`, unlimited, and engines skip the accounting).
    pub fn from_config(cfg: &Config) -> Option<Arc<Usage>> {
        let tracked = cfg.auth.mode == crate::config::AuthMode::On || !cfg.tenants.is_empty();
        tracked.then(|| {
            let limits = |t: &crate::config::TenantCfg| Limits {
                max_bytes: t.max_bytes,
                max_keys: t.max_keys,
            };
            Arc::new(Usage {
                limits: cfg
                    .tenants
                    .iter()
                    .map(|(id, t)| (id.clone(), limits(t)))
                    .collect(),
                fallback: cfg
                    .tenants
                    .get(DEFAULT_TENANT)
                    .map(limits)
                    .unwrap_or_default(),
                counts: Mutex::new(HashMap::new()),
            })
        })
    }

    /// A tracker with these limits per tenant, and `fallback` for the others.
    pub fn with_limits(fallback: Limits, tenants: &[(&str, Limits)]) -> Arc<Usage> {
        Arc::new(Usage {
            limits: tenants.iter().map(|(t, l)| ((*t).to_owned(), *l)).collect(),
            fallback,
            counts: Mutex::new(HashMap::new()),
        })
    }

    fn limits_of(&self, tenant: &str) -> Limits {
        self.limits.get(tenant).copied().unwrap_or(self.fallback)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<Box<str>, Entry>>, StoreError> {
        self.counts
            .lock()
            .map_err(|_| StoreError::internal("usage lock poisoned"))
    }

    /// Refuses a step that would take a tenant past a limit. Only growth is judged: a step
    /// that shrinks a tenant already over its limit (limits lowered) goes through.
    pub fn check(&self, deltas: &Deltas) -> Result<(), StoreError> {
        let counts = self.lock()?;
        self.judge(deltas, |owner| {
            counts.get(owner).map(|e| e.counts).unwrap_or_default()
        })
    }

    /// [`Usage::check`] against counts kept elsewhere (a database shared by several nodes):
    /// `before(owner)` is what `owner` holds before the step.
    pub fn judge(
        &self,
        deltas: &Deltas,
        before: impl Fn(&str) -> Counts,
    ) -> Result<(), StoreError> {
        for (owner, bytes, keys) in &deltas.v {
            let now = before(owner);
            let limits = self.limits_of(owner);
            let over = |used: u64, delta: i64, max: Option<u64>| {
                delta > 0 && max.is_some_and(|m| used.saturating_add(delta.unsigned_abs()) > m)
            };
            if over(now.bytes, *bytes, limits.max_bytes) || over(now.keys, *keys, limits.max_keys) {
                return Err(StoreError::new(
                    ErrorKind::Quota,
                    "the write would take its tenant past a storage quota",
                ));
            }
        }
        Ok(())
    }

    /// Adds an applied step's changes.
    pub fn commit(&self, deltas: Deltas) {
        let Ok(mut counts) = self.lock() else { return };
        for (owner, bytes, keys) in deltas.v {
            let c = &mut counts.entry(owner).or_default().counts;
            c.bytes = c.bytes.saturating_add_signed(bytes);
            c.keys = c.keys.saturating_add_signed(keys);
        }
    }

    /// Sets what `owner` holds as read at revision `as_of` from a store shared with other
    /// nodes; ignored if a newer reading was set already.
    pub fn set(&self, owner: &str, counts: Counts, as_of: u64) {
        let Ok(mut all) = self.lock() else { return };
        let e = all.entry(owner.into()).or_default();
        if as_of >= e.as_of {
            *e = Entry { counts, as_of };
        }
    }

    /// Sets every tenant's counts as read at revision `as_of` (`rows` names every owner then:
    /// an owner it leaves out held nothing), keeping readings newer than `as_of`.
    pub fn set_all(&self, rows: &[(String, Counts)], as_of: u64) {
        let Ok(mut all) = self.lock() else { return };
        all.retain(|owner, e| e.as_of > as_of || rows.iter().any(|(o, _)| **o == **owner));
        for (owner, counts) in rows {
            let e = all.entry(owner.as_str().into()).or_default();
            if as_of >= e.as_of {
                *e = Entry {
                    counts: *counts,
                    as_of,
                };
            }
        }
    }

    /// Forgets every count (before an engine rebuilds them from its records).
    pub fn clear(&self) {
        if let Ok(mut counts) = self.lock() {
            counts.clear();
        }
    }

    /// What `tenant` owns now.
    pub fn of(&self, tenant: &str) -> Counts {
        self.lock()
            .ok()
            .and_then(|c| c.get(tenant).map(|e| e.counts))
            .unwrap_or_default()
    }

    /// Every tenant's counts (for metrics).
    pub fn all(&self) -> Vec<(String, Counts)> {
        self.lock()
            .map(|c| c.iter().map(|(k, e)| (k.to_string(), e.counts)).collect())
            .unwrap_or_default()
    }

    /// The storage limits of `tenant`.
    pub fn limits(&self, tenant: &str) -> Limits {
        self.limits_of(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_a_limit_is_refused_and_shrinking_is_not() {
        let u = Usage::with_limits(
            Limits {
                max_bytes: Some(100),
                max_keys: Some(2),
            },
            &[],
        );
        let mut d = Deltas::default();
        d.add("a", 60, 1);
        u.check(&d).expect("fits");
        u.commit(d);
        let mut d = Deltas::default();
        d.add("a", 50, 1);
        assert_eq!(u.check(&d).map_err(|e| e.kind()), Err(ErrorKind::Quota));
        // Replacing the 60-byte record with a 90-byte one: -60 +90 = 90 ≤ 100.
        let mut d = Deltas::default();
        d.add("a", 60, -1);
        d.add("a", 90, 1);
        u.check(&d).expect("a replacement within the limit");
        u.commit(d);
        assert_eq!(u.of("a"), Counts { bytes: 90, keys: 1 });
        let mut d = Deltas::default();
        d.add(SYSTEM, 1 << 30, 1);
        u.check(&d).expect("system records count for nobody");
        u.commit(d);
        assert_eq!(u.all().len(), 1);
    }
}
