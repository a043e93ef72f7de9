//! The shared state of one server: config, route table, metrics, readiness, guards' state and
//! the store. Built once at boot; every request borrows it.

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;

use crate::config::Config;
use crate::guards::body::BodyLimits;
use crate::guards::budget::InflightBudget;
use crate::guards::rate_limit::TokenBucket;
use crate::guards::{BudgetId, HeadLimits};
use crate::latency::ServiceTimes;
use crate::metrics::{Gauges, Metrics};
use crate::ready::{PROBES, Probe, Readiness};
use crate::store::Storage;

/// In-flight budget shared by the budgeted dev routes (`/dev/echo`, `/dev/panic`): small and
/// fixed, they are dev helpers.
pub const DEV_MAX_INFLIGHT: usize = 8;
/// `/dev/rl`'s bucket when no global rate is configured.
pub const DEV_RL_RPS: u32 = 10;
pub const DEV_RL_BURST: u32 = 10;

#[derive(Debug)]
pub struct App {
    pub cfg: Config,
    pub metrics: Arc<Metrics>,
    pub ready: Readiness,
    pub store: Arc<dyn Storage>,
    /// The global bucket; used only while `MICRONODE_RL_RPS` is above 0 (see [`App::rl_global`]).
    rl_global: TokenBucket,
    /// `/dev/rl`'s own bucket, always on.
    pub rl_dev: TokenBucket,
    pub budgets: [InflightBudget; BudgetId::COUNT],
    /// Requests sleeping in the rate-limit tarpit (they hold no budget permit).
    pub tarpit: InflightBudget,
    /// What a SIGHUP reload changes without a restart.
    pub live: Live,
    pub version_body: Bytes,
    /// Service-time histograms for `/dev/latency`; `None` unless `MICRONODE_DEV_METRICS=1`.
    pub service_times: Option<ServiceTimes>,
    /// Long-lived answers (watch streams, snapshots): counted, and told when to stop.
    pub streams: Arc<Streams>,
    /// Tokens: the key ring and the revoked nonces; `None` while auth is off.
    pub auth: Option<AuthState>,
    /// Per-tenant rate and watcher limits, and the tenant request counters.
    pub tenants: crate::guards::tenant::Tenants,
    request_ids: RequestIds,
    /// The audit trail; `None` while `MICRONODE_AUDIT_PATH` is unset.
    pub audit: Option<Audit>,
}

impl App {
    /// Builds the state around an opened store. Flips `cfg_loaded`, `metrics_bound` and
    /// `deps_ok` (the store is open by the time we get here); `listeners_bound` flips in
    /// `server::run` once the listener is serving.
    pub fn new(
        cfg: Config,
        metrics: Arc<Metrics>,
        store: Arc<dyn Storage>,
        service_times: Option<ServiceTimes>,
        auth: Option<AuthState>,
    ) -> App {
        let (global, dev) = bucket_rates(&cfg);
        let rl_global = TokenBucket::new(global.0, global.1);
        let rl_dev = TokenBucket::new(dev.0, dev.1);
        let ready = Readiness::new(
            cfg.dev.ready,
            cfg.ready.error_gate_pct,
            cfg.ready.error_window_secs,
        );
        ready.set(Probe::CfgLoaded, true);
        ready.set(Probe::MetricsBound, true);
        ready.set(Probe::DepsOk, store.health());
        let version_body = Bytes::from(format!(
            "{{\"name\":\"micronode\",\"version\":\"{}\",\"built_at_unix\":{}}}",
            env!("CARGO_PKG_VERSION"),
            built_at_unix()
        ));
        App {
            service_times,
            streams: Arc::new(Streams::new(cfg.watch.max_watchers)),
            auth,
            tenants: crate::guards::tenant::Tenants::new(&cfg),
            budgets: [
                InflightBudget::new(cfg.ready.max_inflight),
                InflightBudget::new(cfg.limits.kv_max_inflight),
                InflightBudget::new(DEV_MAX_INFLIGHT),
            ],
            tarpit: InflightBudget::new(usize::MAX),
            live: Live::new(&cfg),
            rl_global,
            rl_dev,
            ready,
            metrics,
            store,
            version_body,
            request_ids: RequestIds::new(),
            audit: None,
            cfg,
        }
    }

    /// The same state with an audit trail (opened at boot by `crate::open_audit`).
    pub fn with_audit(mut self, trail: Option<crate::audit::Trail>) -> App {
        self.audit = trail.map(|trail| Audit {
            trail,
            waits: self.cfg.storage.durability == crate::config::Durability::Sync,
            metrics: Arc::clone(&self.metrics),
        });
        self
    }

    pub fn budget(&self, id: BudgetId) -> &InflightBudget {
        &self.budgets[id as usize]
    }

    /// The global token bucket, while a global rate is configured.
    pub fn rl_global(&self) -> Option<&TokenBucket> {
        self.live
            .rl_on
            .load(Ordering::Relaxed)
            .then_some(&self.rl_global)
    }

    /// The head checks' limits now.
    pub fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            max_body_bytes: self.live.max_body_bytes.load(Ordering::Relaxed),
            allow_compressed: self.live.allow_compressed.load(Ordering::Relaxed),
        }
    }

    /// The body reader's limits now.
    pub fn body_limits(&self) -> BodyLimits {
        BodyLimits {
            max_body_bytes: self.live.max_body_bytes.load(Ordering::Relaxed),
            decode_abs_cap_bytes: self.live.decode_abs_cap_bytes.load(Ordering::Relaxed),
            stall: Duration::from_millis(self.live.body_stall_ms.load(Ordering::Relaxed)),
        }
    }

    /// The newest accepted configuration (boot, or the last good reload).
    pub fn config(&self) -> Arc<Config> {
        self.live.config()
    }

    /// Applies a new, already validated configuration: every live knob takes its new value
    /// now; the keys of changed knobs that need a restart are returned (and keep their old
    /// values). The TLS files and the log filter are applied by the caller.
    pub fn reload(&self, mut new: Config) -> Vec<&'static str> {
        let old = self.config();
        let mut needs_restart = Vec::new();
        for knob in crate::config::KNOBS {
            let was = knob.value_text(&old);
            if was == knob.value_text(&new) || crate::config::LIVE_KNOBS.contains(&knob.key) {
                continue;
            }
            needs_restart.push(knob.key);
            // The running value stays, so the configuration in force tells the truth.
            if let Err(e) = (knob.set)(&mut new, &was) {
                tracing::error!(knob = knob.key, cause = %e, "cannot keep the running value");
            }
        }
        if new.tenants != old.tenants {
            needs_restart.push("tenants");
            new.tenants = old.tenants.clone();
        }
        let (global, dev) = bucket_rates(&new);
        self.rl_global.set(global.0, global.1);
        self.rl_dev.set(dev.0, dev.1);
        self.budget(BudgetId::Ready).set_max(new.ready.max_inflight);
        self.budget(BudgetId::KvWrite)
            .set_max(new.limits.kv_max_inflight);
        self.streams.set_max_watchers(new.watch.max_watchers);
        self.live.store(new);
        needs_restart
    }

    /// A fresh unique request id.
    pub fn new_request_id(&self) -> HeaderValue {
        self.request_ids.next()
    }

    /// Reads the engine's health into the `deps_ok` probe and `micronode_storage_up`; `/readyz`
    /// and `/metrics` call it, so both tell the truth at the moment they are asked.
    pub fn refresh_store_health(&self) -> bool {
        let up = self.store.health();
        self.ready.set(Probe::DepsOk, up);
        self.metrics.set_storage_up(up);
        up
    }

    /// Gauges for `/metrics`.
    pub fn gauges(&self) -> Gauges {
        self.refresh_store_health();
        let probes = self.ready.probes();
        Gauges {
            ready_inflight: self.budget(BudgetId::Ready).current(),
            ready_error_rate_pct: self.ready.error_rate_pct(std::time::Instant::now()),
            ready_queue_saturated: self.budgets.iter().any(InflightBudget::is_full),
            rate_limit_tarpit: self.tarpit.current(),
            probes: [0, 1, 2, 3].map(|i| (PROBES[i], probes[i])),
            watchers: self.streams.watchers(),
            store_revision: self.store.revision(),
            tenants: self.tenant_series(),
            pool_connections: self.store.pool_connections(),
        }
    }

    /// One series per tenant label: requests by result, and stored bytes and keys (tenants
    /// without a label of their own summed under `_other`).
    fn tenant_series(&self) -> Vec<crate::metrics::TenantSeries> {
        let t = &self.tenants;
        let mut out: Vec<crate::metrics::TenantSeries> = t
            .request_series()
            .into_iter()
            .map(|(label, requests)| crate::metrics::TenantSeries {
                label: label.to_owned(),
                requests,
                bytes: 0,
                keys: 0,
            })
            .collect();
        if let Some(usage) = self.store.usage() {
            for (tenant, c) in usage.all() {
                let label = t.label(&tenant);
                if let Some(s) = out.iter_mut().find(|s| s.label == label) {
                    s.bytes += c.bytes;
                    s.keys += c.keys;
                }
            }
        }
        out
    }
}

/// The audit trail of a server (docs/SECURITY.md, "Audit trail"): the log with its committer,
/// whether an answer waits for its line to be durable (`sync` durability), and the counters.
#[derive(Debug)]
pub struct Audit {
    trail: crate::audit::Trail,
    waits: bool,
    metrics: Arc<Metrics>,
}

/// A line that could not be written or made durable (already logged and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditFailed;

impl Audit {
    /// Whether the trail is closed after a failure: audited work must be refused.
    pub fn is_broken(&self) -> bool {
        self.trail.is_broken()
    }

    /// Appends one line; counted as a record, or as an error (then the trail is broken).
    pub fn append(&self, event: &crate::audit::Event<'_>) -> Result<u64, AuditFailed> {
        match self.trail.append(event) {
            Ok(seq) => {
                self.metrics.audit_record();
                Ok(seq)
            }
            Err(e) => Err(self.failed(&e)),
        }
    }

    /// What an answer waits for after its line `seq` was appended: the sync covering it in
    /// `sync` durability (shared with concurrent answers), nothing in `periodic` (the
    /// committer syncs every `flush_every_ms`).
    pub fn settle(
        &self,
        seq: u64,
    ) -> Option<impl std::future::Future<Output = Result<(), AuditFailed>> + Send + 'static> {
        if !self.waits {
            return None;
        }
        let durable = self.trail.durable(seq);
        let metrics = Arc::clone(&self.metrics);
        Some(async move {
            durable.await.map_err(|e| {
                metrics.audit_error();
                tracing::error!(cause = %e, "audit line not durable");
                AuditFailed
            })
        })
    }

    /// Appends one line and waits as [`Audit::settle`] says.
    pub async fn record(&self, event: &crate::audit::Event<'_>) -> Result<(), AuditFailed> {
        let seq = self.append(event)?;
        match self.settle(seq) {
            Some(wait) => wait.await,
            None => Ok(()),
        }
    }

    /// Stops the committer after a last sync (shutdown).
    pub fn close(&self) -> Result<(), String> {
        self.trail.close().map_err(|e| e.to_string())
    }

    fn failed(&self, e: &crate::audit::AuditError) -> AuditFailed {
        self.metrics.audit_error();
        match e {
            crate::audit::AuditError::Broken { .. } => {
                tracing::debug!(cause = %e, "audit trail closed; refused")
            }
            _ => tracing::error!(cause = %e, "audit line not written; the trail is closed"),
        }
        AuditFailed
    }
}

/// The sweeper's expire deletes go into the trail, one line per removed key; while the trail
/// is broken the sweeper removes nothing (expired keys stay invisible all the same).
impl crate::store::ttl::ExpireLog for App {
    fn paused(&self) -> bool {
        self.audit.as_ref().is_some_and(Audit::is_broken)
    }

    fn removed(&self, bucket: &str, key: &str, revision: u64) {
        let Some(audit) = &self.audit else { return };
        let event = crate::audit::Event {
            op: "expire",
            bucket: Some(bucket),
            key: Some(key),
            status: 204,
            revision: Some(revision),
            ..crate::audit::Event::default()
        };
        // Nobody waits for an expiry: the line is synced with the next batch.
        if audit.append(&event).is_ok() && audit.waits {
            audit.trail.kick();
        }
    }
}

/// The bucket that holds revoked token nonces: a name no request can reach (a user bucket
/// starts with a letter or a digit), so KV routes never see it.
pub const AUTH_BUCKET: &str = "_auth";

/// What verifies tokens: the key ring (replaced on SIGHUP) and the revoked nonces (loaded from
/// the engine at boot, added to by `POST /v1/auth/revoke`).
#[derive(Debug)]
pub struct AuthState {
    keys: RwLock<Arc<crate::auth::KeyRing>>,
    revoked: RwLock<std::collections::HashSet<[u8; 16]>>,
}

impl AuthState {
    pub fn new(keys: crate::auth::KeyRing, revoked: impl IntoIterator<Item = [u8; 16]>) -> Self {
        AuthState {
            keys: RwLock::new(Arc::new(keys)),
            revoked: RwLock::new(revoked.into_iter().collect()),
        }
    }

    pub fn keys(&self) -> Arc<crate::auth::KeyRing> {
        self.keys
            .read()
            .map(|k| Arc::clone(&k))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// A new key ring (reload): tokens of removed keys stop verifying at once.
    pub fn set_keys(&self, keys: crate::auth::KeyRing) {
        if let Ok(mut k) = self.keys.write() {
            *k = Arc::new(keys);
        }
    }

    pub fn is_revoked(&self, nonce: &[u8; 16]) -> bool {
        self.revoked.read().map_or(true, |r| r.contains(nonce))
    }

    pub fn revoke(&self, nonce: [u8; 16]) {
        if let Ok(mut r) = self.revoked.write() {
            r.insert(nonce);
        }
    }
}

/// `(rps, burst)` of the global bucket and of `/dev/rl`'s own one.
fn bucket_rates(cfg: &Config) -> ((u32, u32), (u32, u32)) {
    let rl = &cfg.rate_limit;
    let burst = if rl.burst == 0 { rl.rps } else { rl.burst };
    let global = (rl.rps.max(1), burst.max(1));
    let dev = if rl.rps > 0 {
        global
    } else {
        (DEV_RL_RPS, DEV_RL_BURST)
    };
    (global, dev)
}

/// The live part of the configuration: what every request reads as atomics, the rest (read
/// by slower paths) as the whole newest configuration behind a lock.
#[derive(Debug)]
pub struct Live {
    cfg: RwLock<Arc<Config>>,
    max_body_bytes: AtomicU64,
    allow_compressed: AtomicBool,
    decode_abs_cap_bytes: AtomicU64,
    body_stall_ms: AtomicU64,
    request_timeout_ms: AtomicU64,
    ready_timeout_ms: AtomicU64,
    tarpit_ms: AtomicU64,
    rl_on: AtomicBool,
    /// The CORS origins: `None` = any; checked only while `cors_on`.
    cors: RwLock<Arc<Option<Vec<String>>>>,
    cors_on: AtomicBool,
}

impl Live {
    fn new(cfg: &Config) -> Live {
        let live = Live {
            cfg: RwLock::new(Arc::new(cfg.clone())),
            max_body_bytes: AtomicU64::new(0),
            allow_compressed: AtomicBool::new(false),
            decode_abs_cap_bytes: AtomicU64::new(0),
            body_stall_ms: AtomicU64::new(0),
            request_timeout_ms: AtomicU64::new(0),
            ready_timeout_ms: AtomicU64::new(0),
            tarpit_ms: AtomicU64::new(0),
            rl_on: AtomicBool::new(false),
            cors: RwLock::new(Arc::new(Some(Vec::new()))),
            cors_on: AtomicBool::new(false),
        };
        live.store(cfg.clone());
        live
    }

    fn store(&self, cfg: Config) {
        let r = Ordering::Relaxed;
        self.max_body_bytes.store(cfg.limits.max_body_bytes, r);
        self.allow_compressed.store(cfg.limits.allow_compressed, r);
        self.decode_abs_cap_bytes
            .store(cfg.limits.decode_abs_cap_bytes, r);
        self.body_stall_ms.store(cfg.server.body_read_timeout_ms, r);
        self.request_timeout_ms
            .store(cfg.server.request_timeout_ms, r);
        self.ready_timeout_ms.store(cfg.ready.timeout_ms, r);
        self.tarpit_ms.store(cfg.rate_limit.tarpit_ms, r);
        self.rl_on.store(cfg.rate_limit.rps > 0, r);
        // Validated with the configuration: a parse error here cannot happen; CORS stays off.
        let origins = crate::config::parse_origins(&cfg.cors.origins).unwrap_or(Some(Vec::new()));
        let on = origins.as_ref().is_none_or(|o| !o.is_empty());
        if let Ok(mut c) = self.cors.write() {
            *c = Arc::new(origins);
        }
        self.cors_on.store(on, r);
        if let Ok(mut c) = self.cfg.write() {
            *c = Arc::new(cfg);
        }
    }

    fn config(&self) -> Arc<Config> {
        self.cfg
            .read()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    /// The route time bound of requests.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.load(Ordering::Relaxed))
    }

    /// `/readyz`'s time bound.
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_millis(self.ready_timeout_ms.load(Ordering::Relaxed))
    }

    pub fn tarpit_ms(&self) -> u64 {
        self.tarpit_ms.load(Ordering::Relaxed)
    }

    /// Whether CORS is on (then every answer varies by `Origin`).
    pub fn cors_on(&self) -> bool {
        self.cors_on.load(Ordering::Relaxed)
    }

    /// The request's `Origin`, when CORS is on and it is allowed (the value to echo back).
    pub fn cors_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if !self.cors_on.load(Ordering::Relaxed) {
            return None;
        }
        let origin = origin?;
        let allowed = self.cors.read().ok()?;
        match allowed.as_ref() {
            None => Some(origin.clone()),
            Some(list) => {
                let o = origin.to_str().ok()?;
                list.iter().any(|a| a == o).then(|| origin.clone())
            }
        }
    }
}

/// The open watch streams and the stop signal every long-lived answer listens to.
#[derive(Debug)]
pub struct Streams {
    /// A snapshot is running (each spools the whole store to disk: one at a time).
    snapshot: AtomicBool,
    watchers: AtomicUsize,
    max_watchers: AtomicUsize,
    stop: tokio::sync::watch::Sender<bool>,
}

/// The one snapshot that may run at a time; given back when dropped.
#[derive(Debug)]
pub struct SnapshotSlot(Arc<Streams>);

impl Drop for SnapshotSlot {
    fn drop(&mut self) {
        self.0.snapshot.store(false, Ordering::Release);
    }
}

/// One open watch stream's slot; given back when dropped.
#[derive(Debug)]
pub struct WatcherSlot(Arc<Streams>);

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Streams {
    pub fn new(max_watchers: usize) -> Streams {
        Streams {
            snapshot: AtomicBool::new(false),
            watchers: AtomicUsize::new(0),
            max_watchers: AtomicUsize::new(max_watchers),
            stop: tokio::sync::watch::Sender::new(false),
        }
    }

    /// A watcher slot, or `None` when `MICRONODE_MAX_WATCHERS` are open.
    /// The snapshot slot, or `None` while another snapshot runs.
    pub fn try_snapshot(self: &Arc<Self>) -> Option<SnapshotSlot> {
        self.snapshot
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| SnapshotSlot(Arc::clone(self)))
    }

    /// A new watcher limit (a reload); open streams above it are left alone.
    pub fn set_max_watchers(&self, max: usize) {
        self.max_watchers.store(max, Ordering::Release);
    }

    pub fn try_watch(self: &Arc<Self>) -> Option<WatcherSlot> {
        let max = self.max_watchers.load(Ordering::Relaxed);
        self.watchers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| WatcherSlot(Arc::clone(self)))
    }

    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Acquire)
    }

    /// Tells every stream to end (shutdown).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// A receiver that turns `true` when streams must end.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

/// The build stamp from `build.rs`.
pub fn built_at_unix() -> u64 {
    env!("MICRONODE_BUILD_TS").parse().unwrap_or(0)
}

/// Request ids: a per-process random-ish prefix and a counter, e.g. `6f1c2a9e-1a`. Unique
/// within a process and, with overwhelming likelihood, across restarts.
#[derive(Debug)]
struct RequestIds {
    prefix: u32,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = (t as u64) ^ (u64::from(std::process::id()) << 32);
        // splitmix64 finaliser: spreads time and pid over all bits.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self {
            prefix: (z ^ (z >> 31)) as u32,
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 8 + 1 + 16];
        let len = write_hex(&mut buf, self.prefix, n);
        let mut id = HeaderValue::from_bytes(&buf[..len])
            .expect("hex digits and '-' are a valid header value");
        // Unique per request: HTTP/2 would only churn its HPACK table indexing it.
        id.set_sensitive(true);
        id
    }
}

fn write_hex(buf: &mut [u8; 25], prefix: u32, n: u64) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..8 {
        buf[i] = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    buf[8] = b'-';
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        buf[9 + i] = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    9 + digits
}

/// Whether a client-sent `x-request-id` is usable: 1–64 chars of `[A-Za-z0-9._-]`.
pub fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=64).contains(&b.len())
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Keeps this node's revoked nonces in step with the engine's change feed: a revocation
/// written by another node sharing the engine (PostgreSQL) reaches this node's feed within the
/// feed's delivery time (about a second), and from then on the token is refused here too.
/// Revocations made on this node are already in its set; seeing them again changes nothing.
/// If the feed has dropped events this node did not read, the whole list is read again from
/// the engine.
pub async fn follow_revocations(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(state) = &app.auth else { return };
    let feed = app.store.feed();
    let mut cursor = feed.released();
    let is_revocation = |e: &crate::store::Event| {
        &*e.bucket == AUTH_BUCKET && e.kind == crate::store::EventKind::Put
    };
    loop {
        let changed = feed.changed();
        let mut events = Vec::new();
        let read = feed.read(&mut cursor, is_revocation, usize::MAX, 1024, &mut events);
        if matches!(read, crate::store::feed::Read::Compacted) {
            cursor = feed.released();
            let store = Arc::clone(&app.store);
            match tokio::task::spawn_blocking(move || crate::revoked_nonces(&*store)).await {
                Ok(Ok(all)) => all.into_iter().for_each(|n| state.revoke(n)),
                Ok(Err(e)) => tracing::error!(cause = %e, "cannot re-read the revocations"),
                Err(e) => tracing::error!(cause = %e, "cannot re-read the revocations"),
            }
        }
        let full = events.len() == 1024;
        for e in events {
            if let Some(nonce) = e
                .key
                .strip_prefix("revoked/")
                .and_then(crate::auth::token::parse_nonce_hex)
            {
                state.revoke(nonce);
            }
        }
        if full {
            continue;
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            () = changed => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_valid() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert!(valid_request_id(&a) && valid_request_id(&b));
        let mut buf = [0u8; 25];
        let n = write_hex(&mut buf, 0xdead_beef, 0x1a);
        assert_eq!(&buf[..n], b"deadbeef-1a");
        let n = write_hex(&mut buf, 0, u64::MAX);
        assert_eq!(&buf[..n], b"00000000-ffffffffffffffff");
    }

    #[test]
    fn request_id_validation() {
        assert!(valid_request_id(&HeaderValue::from_static("abc.DEF_1-2")));
        assert!(!valid_request_id(&HeaderValue::from_static("")));
        assert!(!valid_request_id(&HeaderValue::from_static("a b")));
        assert!(!valid_request_id(&HeaderValue::from_static("a/b")));
        let long = "a".repeat(65);
        assert!(!valid_request_id(
            &HeaderValue::from_str(&long).expect("ascii")
        ));
        let max = "a".repeat(64);
        assert!(valid_request_id(
            &HeaderValue::from_str(&max).expect("ascii")
        ));
    }
}
