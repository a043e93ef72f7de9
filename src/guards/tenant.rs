//! Per-tenant limits at the edge (docs/SECURITY.md, "Tenants and quotas"): a token bucket per
//! tenant with an `rps` limit (→ 429 `quota`), open watch streams per tenant (`max_watchers`
//! → 429 `quota`), and the per-tenant request counters behind
//! `micronode_tenant_requests_total`.
//!
//! Metric labels are bounded: every tenant named in the configuration has its own, and
//! `default`; every other tenant is counted under `_other`. Storage quotas are not here: an
//! engine judges them with each write (`store::usage`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::rate_limit::TokenBucket;
use crate::config::{Config, DEFAULT_TENANT, TenantCfg};

/// The label shared by tenants the configuration does not name.
pub const OTHER_LABEL: &str = "_other";

pub use crate::metrics::TenantResult;

/// The per-tenant state of one server.
#[derive(Debug)]
pub struct Tenants {
    /// Whether anything is tracked (auth on, or some tenant section): else every call is a
    /// no-op and the request path pays one branch.
    active: bool,
    limits: BTreeMap<String, TenantCfg>,
    /// Label index of each tenant with its own label; the last label is [`OTHER_LABEL`].
    index: HashMap<String, usize>,
    labels: Vec<String>,
    requests: Vec<[AtomicU64; 3]>,
    buckets: RwLock<HashMap<String, Arc<TokenBucket>>>,
    watchers: Arc<Mutex<HashMap<String, usize>>>,
}

/// An open watch stream counted against its tenant; released on drop.
#[derive(Debug)]
pub struct TenantWatcher {
    tenant: String,
    watchers: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for TenantWatcher {
    fn drop(&mut self) {
        if let Ok(mut w) = self.watchers.lock()
            && let Some(n) = w.get_mut(&self.tenant)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                w.remove(&self.tenant);
            }
        }
    }
}

impl Tenants {
    pub fn new(cfg: &Config) -> Tenants {
        let active = cfg.auth.mode == crate::config::AuthMode::On || !cfg.tenants.is_empty();
        let mut labels: Vec<String> = cfg.tenants.keys().cloned().collect();
        if !cfg.tenants.contains_key(DEFAULT_TENANT) {
            labels.push(DEFAULT_TENANT.to_owned());
        }
        labels.sort();
        let index = labels
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        labels.push(OTHER_LABEL.to_owned());
        Tenants {
            active,
            limits: cfg.tenants.clone(),
            index,
            requests: labels.iter().map(|_| Default::default()).collect(),
            labels,
            buckets: RwLock::new(HashMap::new()),
            watchers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn active(&self) -> bool {
        self.active
    }

    fn limits_of(&self, tenant: &str) -> Option<&TenantCfg> {
        self.limits
            .get(tenant)
            .or_else(|| self.limits.get(DEFAULT_TENANT))
    }

    /// The label `tenant` is counted under.
    pub fn label(&self, tenant: &str) -> &str {
        &self.labels[self.slot(tenant)]
    }

    fn slot(&self, tenant: &str) -> usize {
        self.index
            .get(tenant)
            .copied()
            .unwrap_or(self.labels.len() - 1)
    }

    pub fn count(&self, tenant: &str, result: TenantResult) {
        if self.active {
            self.requests[self.slot(tenant)][result as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes one request from the tenant's bucket, or says how long until one is available.
    /// Counts the request either way.
    pub fn admit(&self, tenant: &str, now: Instant) -> Result<(), Duration> {
        if !self.active {
            return Ok(());
        }
        let verdict = match self
            .limits_of(tenant)
            .and_then(|l| l.rps.map(|r| (r, l.burst)))
        {
            None => Ok(()),
            Some((rps, burst)) => self.bucket(tenant, rps, burst.unwrap_or(rps)).try_take(now),
        };
        let result = match verdict {
            Ok(()) => TenantResult::Admitted,
            Err(_) => TenantResult::Quota,
        };
        self.count(tenant, result);
        verdict
    }

    fn bucket(&self, tenant: &str, rps: u32, burst: u32) -> Arc<TokenBucket> {
        if let Ok(b) = self.buckets.read()
            && let Some(b) = b.get(tenant)
        {
            return Arc::clone(b);
        }
        let mut b = match self.buckets.write() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        Arc::clone(
            b.entry(tenant.to_owned())
                .or_insert_with(|| Arc::new(TokenBucket::new(rps, burst))),
        )
    }

    /// A watch slot for `tenant`, or `None` when it has `max_watchers` streams open.
    pub fn watcher(&self, tenant: &str) -> Option<TenantWatcher> {
        let max = self.limits_of(tenant).and_then(|l| l.max_watchers);
        let mut w = match self.watchers.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        if max.is_some_and(|m| w.get(tenant).copied().unwrap_or(0) >= m) {
            return None;
        }
        *w.entry(tenant.to_owned()).or_insert(0) += 1;
        Some(TenantWatcher {
            tenant: tenant.to_owned(),
            watchers: Arc::clone(&self.watchers),
        })
    }

    /// Open watch streams of `tenant`.
    pub fn watchers_of(&self, tenant: &str) -> usize {
        self.watchers
            .lock()
            .map(|w| w.get(tenant).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The limits that apply to `tenant` (for `whoami`).
    pub fn limits(&self, tenant: &str) -> TenantCfg {
        self.limits_of(tenant).cloned().unwrap_or_default()
    }

    /// Every label with its request counts, for `/metrics` (empty when inactive).
    pub fn request_series(&self) -> Vec<(&str, [u64; 3])> {
        if !self.active {
            return Vec::new();
        }
        self.labels
            .iter()
            .zip(&self.requests)
            .map(|(l, r)| {
                (
                    l.as_str(),
                    std::array::from_fn(|i| r[i].load(Ordering::Relaxed)),
                )
            })
            .collect()
    }

    /// Every label (for prewarming the usage series).
    pub fn labels(&self) -> &[String] {
        if self.active { &self.labels } else { &[] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(toml: &str) -> Tenants {
        Tenants::new(&Config::from_toml(toml).expect("valid"))
    }

    #[test]
    fn each_tenant_has_its_own_bucket_and_unnamed_tenants_share_a_label() {
        let t = tenants("[tenants.default]\nrps = 1\nburst = 2\n[tenants.acme]\nrps = 1\n");
        let now = Instant::now();
        assert!(t.admit("acme", now).is_ok());
        assert!(t.admit("acme", now).is_err(), "burst 1 (= rps)");
        assert!(t.admit("x", now).is_ok());
        assert!(t.admit("x", now).is_ok(), "default burst 2");
        assert!(t.admit("x", now).is_err());
        assert!(t.admit("y", now).is_ok(), "its own bucket, default limits");
        assert!(
            t.admit("acme", now + Duration::from_secs(2)).is_ok(),
            "refilled"
        );
        assert_eq!(t.label("x"), OTHER_LABEL);
        assert_eq!(t.label("acme"), "acme");
        let series = t.request_series();
        let of = |l: &str| series.iter().find(|(n, _)| *n == l).map(|s| s.1);
        assert_eq!(of("acme"), Some([2, 1, 0]));
        assert_eq!(of(OTHER_LABEL), Some([3, 1, 0]));
    }

    #[test]
    fn watchers_are_counted_per_tenant_and_released_on_drop() {
        let t = tenants("[tenants.acme]\nmax_watchers = 1\n");
        let first = t.watcher("acme").expect("first");
        assert!(t.watcher("acme").is_none());
        assert!(
            t.watcher("other").is_some(),
            "no default section: unlimited"
        );
        drop(first);
        assert_eq!(t.watchers_of("acme"), 0);
        assert!(t.watcher("acme").is_some());
    }
}
