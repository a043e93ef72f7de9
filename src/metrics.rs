//! The metrics registry (docs/RUNBOOK.md lists the families): fixed arrays of atomics, indexed by route id, verb and
//! status slot, all resolved at boot. Recording a request is two array index computations and
//! three relaxed atomic adds: no map lookup, no string, no lock. Every series that can occur is
//! prewarmed, so `/metrics` shows it (at 0) before the first request.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Code;
use crate::wire::Verb;

/// Success and conditional statuses handlers answer; every error status comes from the code
/// table in `error`.
const SUCCESS_STATUSES: [u16; 4] = [200, 201, 204, 304];

/// Every status Micronode itself produces, sorted, and how many there are.
const KNOWN: ([u16; 64], usize) = known_statuses();

const fn known_statuses() -> ([u16; 64], usize) {
    let mut out = [0u16; 64];
    let mut n = 0;
    let mut i = 0;
    while i < SUCCESS_STATUSES.len() + Code::ALL.len() {
        let s = if i < SUCCESS_STATUSES.len() {
            SUCCESS_STATUSES[i]
        } else {
            Code::ALL[i - SUCCESS_STATUSES.len()].status().as_u16()
        };
        // Insertion into the sorted prefix, skipping duplicates.
        let mut j = 0;
        while j < n && out[j] < s {
            j += 1;
        }
        if j == n || out[j] != s {
            let mut k = n;
            while k > j {
                out[k] = out[k - 1];
                k -= 1;
            }
            out[j] = s;
            n += 1;
        }
        i += 1;
    }
    (out, n)
}

/// One slot per known status, and a last one for anything else.
const STATUS_SLOTS: usize = KNOWN.1 + 1;
const OTHER_SLOT: usize = KNOWN.1;

/// Status code → slot, for every status below 600.
const SLOT_OF: [u8; 600] = slot_table();

const fn slot_table() -> [u8; 600] {
    let mut t = [OTHER_SLOT as u8; 600];
    let mut i = 0;
    while i < KNOWN.1 {
        t[KNOWN.0[i] as usize] = i as u8;
        i += 1;
    }
    t
}

fn status_slot(status: u16) -> usize {
    SLOT_OF
        .get(usize::from(status))
        .map_or(OTHER_SLOT, |&s| usize::from(s))
}

/// The label of a status slot.
fn status_label(slot: usize) -> Option<u16> {
    (slot < KNOWN.1).then(|| KNOWN.0[slot])
}

/// What the registry learns of one route at boot: its template, whether its requests are
/// counted per route, and the `(method, status)` series to show at 0 before any request.
#[derive(Debug, Clone)]
pub struct RouteLabels {
    pub template: &'static str,
    pub recorded: bool,
    pub prewarm: Vec<(Verb, u16)>,
}

/// Index of a route in the label set handed to [`Metrics::new`]; one past the last route
/// stands for "unmatched".
pub(crate) type RouteId = usize;

/// Latency buckets, 10 µs to 10 s, in nanoseconds.
const LATENCY_BOUNDS_NS: &[u64] = &[
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Storage flush buckets, 50 µs to 2.5 s, in nanoseconds.
const FLUSH_BOUNDS_NS: &[u64] = &[
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// Writes per group-commit flush.
const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A Prometheus histogram over integer observations (nanoseconds or counts). Buckets are
/// stored non-cumulative and summed at scrape time, so an observation touches one bucket.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Divides raw values for exposition (1e9 for nanoseconds → seconds).
    scale: f64,
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64], scale: f64) -> Self {
        Self {
            bounds,
            scale,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, raw: u64) {
        let i = self.bounds.partition_point(|&b| b < raw);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(raw, Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Sum of observations in exposition units.
    pub fn sum(&self) -> f64 {
        self.sum.load(Relaxed) as f64 / self.scale
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut acc = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            acc += b.load(Relaxed);
            match self.bounds.get(i) {
                Some(&bound) => {
                    let le = bound as f64 / self.scale;
                    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {acc}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {acc}");
                }
            }
        }
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum());
        let _ = writeln!(out, "{name}_count{} {acc}", braces(labels));
    }
}

/// KV operations counted by `micronode_kv_ops_total{op}`.
#[derive(Debug, Clone, Copy)]
pub enum KvOp {
    Put = 0,
    Get = 1,
    Del = 2,
    List = 3,
    Txn = 4,
    Watch = 5,
}

const KV_OPS: [&str; 6] = ["put", "get", "del", "list", "txn", "watch"];

/// TLS protocol versions labelled by `micronode_tls_handshakes_total{version}`; `None` when
/// the handshake failed before one was agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12 = 0,
    Tls13 = 1,
    None = 2,
}

const TLS_VERSIONS: [&str; 3] = ["TLSv1_2", "TLSv1_3", "none"];

impl TlsVersion {
    /// The label value, rustls's spelling.
    pub fn label(self) -> &'static str {
        TLS_VERSIONS[self as usize]
    }
}

/// Key-exchange groups labelled by `micronode_tls_handshakes_total{group}`, by rustls's names;
/// `None` when no group was agreed (a failed handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsGroup {
    X25519Mlkem768 = 0,
    X25519 = 1,
    Secp256r1 = 2,
    Secp384r1 = 3,
    None = 4,
}

const TLS_GROUPS: [&str; 5] = ["X25519MLKEM768", "X25519", "secp256r1", "secp384r1", "none"];

impl TlsGroup {
    /// The label value, rustls's name of the group.
    pub fn label(self) -> &'static str {
        TLS_GROUPS[self as usize]
    }
}

fn tls_index(ok: bool, version: TlsVersion, group: TlsGroup) -> usize {
    (usize::from(!ok) * TLS_VERSIONS.len() + version as usize) * TLS_GROUPS.len() + group as usize
}

/// Every `{result, version, group}` combination, prewarmed.
const TLS_SERIES: usize = 2 * TLS_VERSIONS.len() * TLS_GROUPS.len();

/// Seconds since the Unix epoch, now.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Gauges owned elsewhere (readiness), read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub ready_inflight: usize,
    pub ready_error_rate_pct: f64,
    pub ready_queue_saturated: bool,
    pub rate_limit_tarpit: usize,
    pub probes: [(&'static str, bool); 4],
    /// Open watch streams.
    pub watchers: usize,
    /// The newest revision answers may show.
    pub store_revision: u64,
    /// Per-tenant series (empty while neither auth nor tenant limits are on).
    pub tenants: Vec<TenantSeries>,
    /// The storage engine's pooled database connections, `(idle, busy)` (postgres only).
    pub pool_connections: Option<(usize, usize)>,
}

/// `micronode_tenant_requests_total{result}` labels, in index order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantResult {
    /// Past the tenant's rate limit: admitted.
    Admitted = 0,
    /// Refused by the tenant's rate or watcher limit (429 `quota`).
    Quota = 1,
    /// A write refused by the tenant's storage quota (507 `quota_storage`).
    QuotaStorage = 2,
}

pub(crate) const TENANT_RESULTS: [&str; 3] = ["admitted", "quota", "quota_storage"];

/// The `micronode_tenant_*` series of one tenant label.
#[derive(Debug, Clone, Default)]
pub struct TenantSeries {
    pub label: String,
    /// By [`TENANT_RESULTS`].
    pub requests: [u64; 3],
    pub bytes: u64,
    pub keys: u64,
}

/// `micronode_watch_events_total{event}` labels, in index order.
pub(crate) const WATCH_EVENTS: [&str; 3] = ["put", "delete", "expire"];
/// `micronode_auth_total{result}`: how a token check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Ok = 0,
    Missing = 1,
    Invalid = 2,
    Expired = 3,
    Revoked = 4,
    Denied = 5,
}

const AUTH_RESULTS: [&str; 6] = ["ok", "missing", "invalid", "expired", "revoked", "denied"];

impl AuthResult {
    pub fn label(self) -> &'static str {
        AUTH_RESULTS[self as usize]
    }
}

/// `micronode_txn_total{result}` labels, in index order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnResult {
    Succeeded = 0,
    Failed = 1,
    Invalid = 2,
}
const TXN_RESULTS: [&str; 3] = ["succeeded", "failed", "invalid"];

#[derive(Debug)]
pub struct Metrics {
    /// Route templates in route-id order; `templates.len()` is the unmatched slot.
    templates: Box<[&'static str]>,
    /// Whether requests to each route are counted per route (dev routes only with dev metrics).
    recorded: Box<[bool]>,
    requests: Box<[AtomicU64]>,
    latency: Box<[Histogram]>,
    /// Which request series are shown even at 0.
    prewarmed: Box<[bool]>,
    rejections: Box<[AtomicU64]>,
    kv_ops: [AtomicU64; 6],
    kv_bytes_in: AtomicU64,
    kv_bytes_out: AtomicU64,
    handler_panics: AtomicU64,
    storage_up: AtomicBool,
    pub flush_seconds: Histogram,
    pub commit_batch_size: Histogram,
    /// `micronode_tls_handshakes_total`, indexed by [`tls_index`].
    tls_handshakes: [AtomicU64; TLS_SERIES],
    /// The serving certificate's notAfter (Unix seconds); shown only while TLS is on.
    tls_cert_not_after: AtomicI64,
    tls_on: AtomicBool,
    /// `micronode_config_reloads_total{result="ok|error"}`.
    config_reloads: [AtomicU64; 2],
    /// Unix seconds of the last successful (re)load; the boot load counts.
    config_last_reload_ok: AtomicI64,
    watch_events: [AtomicU64; 3],
    watch_overflows: AtomicU64,
    kv_expired: AtomicU64,
    txns: [AtomicU64; 3],
    auth: [AtomicU64; 6],
    audit_records: AtomicU64,
    audit_errors: AtomicU64,
}

fn req_index(route: RouteId, verb: Verb, status_slot: usize) -> usize {
    (route * Verb::COUNT + verb as usize) * STATUS_SLOTS + status_slot
}

fn lat_index(route: RouteId, verb: Verb) -> usize {
    route * Verb::COUNT + verb as usize
}

impl Metrics {
    /// A registry for these routes (in route-id order). Unmatched requests get their own slot,
    /// prewarmed with the answers given before any route is matched (404, 414, 431).
    pub fn new(routes: &[RouteLabels]) -> Self {
        let unmatched = routes.len();
        let route_slots = unmatched + 1;
        let requests = (0..route_slots * Verb::COUNT * STATUS_SLOTS)
            .map(|_| AtomicU64::new(0))
            .collect();
        let latency = (0..route_slots * Verb::COUNT)
            .map(|_| Histogram::new(LATENCY_BOUNDS_NS, 1e9))
            .collect();
        let mut prewarmed = vec![false; route_slots * Verb::COUNT * STATUS_SLOTS];
        for (id, route) in routes.iter().enumerate() {
            for &(verb, status) in &route.prewarm {
                prewarmed[req_index(id, verb, status_slot(status))] = true;
            }
        }
        for verb in [Verb::Get, Verb::Head, Verb::Post, Verb::Put, Verb::Delete] {
            for code in [Code::NotFound, Code::UriTooLong, Code::HeaderTooLarge] {
                prewarmed[req_index(unmatched, verb, status_slot(code.status().as_u16()))] = true;
            }
        }
        let mut recorded: Vec<bool> = routes.iter().map(|r| r.recorded).collect();
        recorded.push(true);
        let mut templates: Vec<&'static str> = routes.iter().map(|r| r.template).collect();
        templates.push("unmatched");
        Self {
            templates: templates.into_boxed_slice(),
            recorded: recorded.into_boxed_slice(),
            requests,
            latency,
            prewarmed: prewarmed.into_boxed_slice(),
            rejections: Code::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            kv_ops: Default::default(),
            kv_bytes_in: AtomicU64::new(0),
            kv_bytes_out: AtomicU64::new(0),
            handler_panics: AtomicU64::new(0),
            storage_up: AtomicBool::new(true),
            flush_seconds: Histogram::new(FLUSH_BOUNDS_NS, 1e9),
            commit_batch_size: Histogram::new(BATCH_BOUNDS, 1.0),
            tls_handshakes: std::array::from_fn(|_| AtomicU64::new(0)),
            tls_cert_not_after: AtomicI64::new(0),
            tls_on: AtomicBool::new(false),
            config_reloads: Default::default(),
            config_last_reload_ok: AtomicI64::new(unix_now()),
            watch_events: Default::default(),
            watch_overflows: AtomicU64::new(0),
            kv_expired: AtomicU64::new(0),
            txns: Default::default(),
            auth: Default::default(),
            audit_records: AtomicU64::new(0),
            audit_errors: AtomicU64::new(0),
        }
    }

    /// Counts one line appended to the audit trail.
    pub fn audit_record(&self) {
        self.audit_records.fetch_add(1, Relaxed);
    }

    /// Counts one audit line that could not be written or made durable.
    pub fn audit_error(&self) {
        self.audit_errors.fetch_add(1, Relaxed);
    }

    /// Counts one token check.
    pub fn auth(&self, result: AuthResult) {
        self.auth[result as usize].fetch_add(1, Relaxed);
    }

    /// Counts events sent to watchers, by [`WATCH_EVENTS`] index.
    pub fn watch_events(&self, event: usize, n: u64) {
        if let Some(c) = self.watch_events.get(event) {
            c.fetch_add(n, Relaxed);
        }
    }

    pub fn watch_overflow(&self) {
        self.watch_overflows.fetch_add(1, Relaxed);
    }

    /// Counts keys the sweeper removed.
    pub fn kv_expired(&self, n: u64) {
        self.kv_expired.fetch_add(n, Relaxed);
    }

    pub fn txn(&self, result: TxnResult) {
        self.txns[result as usize].fetch_add(1, Relaxed);
    }

    /// Counts one TLS handshake: completed (`ok`) with its version and group, or failed.
    pub fn tls_handshake(&self, ok: bool, version: TlsVersion, group: TlsGroup) {
        self.tls_handshakes[tls_index(ok, version, group)].fetch_add(1, Relaxed);
    }

    pub fn tls_handshakes(&self, ok: bool, version: TlsVersion, group: TlsGroup) -> u64 {
        self.tls_handshakes[tls_index(ok, version, group)].load(Relaxed)
    }

    /// The serving certificate's notAfter, in Unix seconds; turns the TLS gauge on.
    pub fn set_tls_cert_not_after(&self, unix_secs: i64) {
        self.tls_cert_not_after.store(unix_secs, Relaxed);
        self.tls_on.store(true, Relaxed);
    }

    /// Counts a configuration reload; a successful one also stamps the last-success time.
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads[usize::from(!ok)].fetch_add(1, Relaxed);
        if ok {
            self.config_last_reload_ok.store(unix_now(), Relaxed);
        }
    }

    pub fn config_reloads(&self, ok: bool) -> u64 {
        self.config_reloads[usize::from(!ok)].load(Relaxed)
    }

    /// The route id that stands for "no route matched".
    pub fn unmatched(&self) -> RouteId {
        self.templates.len() - 1
    }

    /// Whether requests to this route are recorded per route.
    pub fn records(&self, route: RouteId) -> bool {
        self.recorded.get(route).copied().unwrap_or(false)
    }

    /// Counts one answered request and its latency.
    pub fn observe_request(&self, route: RouteId, verb: Verb, status: u16, elapsed: Duration) {
        if !self.records(route) {
            return;
        }
        self.requests[req_index(route, verb, status_slot(status))].fetch_add(1, Relaxed);
        self.latency[lat_index(route, verb)].observe_duration(elapsed);
    }

    pub fn reject(&self, code: Code) {
        self.rejections[code.index()].fetch_add(1, Relaxed);
    }

    pub fn rejections(&self, code: Code) -> u64 {
        self.rejections[code.index()].load(Relaxed)
    }

    /// Counts a panic caught while answering a request (answered 500 `internal`).
    pub fn handler_panic(&self) {
        self.handler_panics.fetch_add(1, Relaxed);
    }

    pub fn handler_panics(&self) -> u64 {
        self.handler_panics.load(Relaxed)
    }

    /// Whether the storage engine answers (`micronode_storage_up`).
    pub fn set_storage_up(&self, up: bool) {
        self.storage_up.store(up, Relaxed);
    }

    pub fn kv_op(&self, op: KvOp) {
        self.kv_ops[op as usize].fetch_add(1, Relaxed);
    }

    pub fn kv_bytes_in(&self, n: usize) {
        self.kv_bytes_in.fetch_add(n as u64, Relaxed);
    }

    pub fn kv_bytes_out(&self, n: usize) {
        self.kv_bytes_out.fetch_add(n as u64, Relaxed);
    }

    /// Renders the Prometheus text exposition (format 0.0.4).
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(64 * 1024);
        out.push_str("# HELP micronode_build_info Build information; always 1.\n");
        out.push_str("# TYPE micronode_build_info gauge\n");
        let _ = writeln!(
            out,
            "micronode_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );

        out.push_str("# HELP micronode_http_requests_total HTTP requests answered, by route template, method and status.\n");
        out.push_str("# TYPE micronode_http_requests_total counter\n");
        for (route, template) in self.templates.iter().enumerate() {
            for verb in Verb::ALL {
                for slot in 0..STATUS_SLOTS {
                    let i = req_index(route, verb, slot);
                    let n = self.requests[i].load(Relaxed);
                    if n == 0 && !self.prewarmed[i] {
                        continue;
                    }
                    let status = match status_label(slot) {
                        None => "other".to_owned(),
                        Some(s) => s.to_string(),
                    };
                    let _ = writeln!(
                        out,
                        "micronode_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                        verb.as_str(),
                        template,
                    );
                }
            }
        }

        out.push_str("# HELP micronode_request_latency_seconds Time from request head to response head, by route template and method.\n");
        out.push_str("# TYPE micronode_request_latency_seconds histogram\n");
        for (route, template) in self.templates.iter().enumerate() {
            for verb in Verb::ALL {
                let h = &self.latency[lat_index(route, verb)];
                let shown = (0..STATUS_SLOTS).any(|s| self.prewarmed[req_index(route, verb, s)]);
                if !shown && h.count() == 0 {
                    continue;
                }
                let labels = format!("method=\"{}\",route=\"{template}\"", verb.as_str());
                h.render(&mut out, "micronode_request_latency_seconds", &labels);
            }
        }

        out.push_str(
            "# HELP micronode_rejections_total Requests refused by Micronode, by error code.\n",
        );
        out.push_str("# TYPE micronode_rejections_total counter\n");
        for &code in Code::ALL {
            let _ = writeln!(
                out,
                "micronode_rejections_total{{reason=\"{}\"}} {}",
                code.as_str(),
                self.rejections(code)
            );
        }

        out.push_str("# HELP micronode_handler_panics_total Panics caught while answering a request; each was answered 500.\n");
        out.push_str("# TYPE micronode_handler_panics_total counter\n");
        let _ = writeln!(
            out,
            "micronode_handler_panics_total {}",
            self.handler_panics()
        );

        out.push_str("# HELP micronode_ready_inflight_current Requests in flight on /readyz.\n");
        out.push_str("# TYPE micronode_ready_inflight_current gauge\n");
        let _ = writeln!(
            out,
            "micronode_ready_inflight_current {}",
            gauges.ready_inflight
        );
        out.push_str("# HELP micronode_ready_error_rate_pct Share of 5xx answers over the readiness window, in percent.\n");
        out.push_str("# TYPE micronode_ready_error_rate_pct gauge\n");
        let _ = writeln!(
            out,
            "micronode_ready_error_rate_pct {}",
            gauges.ready_error_rate_pct
        );
        out.push_str("# HELP micronode_ready_queue_saturated 1 while any route's in-flight budget is full.\n");
        out.push_str("# TYPE micronode_ready_queue_saturated gauge\n");
        let _ = writeln!(
            out,
            "micronode_ready_queue_saturated {}",
            u8::from(gauges.ready_queue_saturated)
        );
        out.push_str("# HELP micronode_rate_limit_tarpit_current Rate-limited requests waiting out the tarpit delay.\n");
        out.push_str("# TYPE micronode_rate_limit_tarpit_current gauge\n");
        let _ = writeln!(
            out,
            "micronode_rate_limit_tarpit_current {}",
            gauges.rate_limit_tarpit
        );
        out.push_str("# HELP micronode_ready_probe Readiness probes, 1 when true.\n");
        out.push_str("# TYPE micronode_ready_probe gauge\n");
        for (name, ok) in gauges.probes {
            let _ = writeln!(
                out,
                "micronode_ready_probe{{probe=\"{name}\"}} {}",
                u8::from(ok)
            );
        }

        out.push_str("# HELP micronode_kv_ops_total KV operations, by kind.\n");
        out.push_str("# TYPE micronode_kv_ops_total counter\n");
        for (i, op) in KV_OPS.iter().enumerate() {
            let _ = writeln!(
                out,
                "micronode_kv_ops_total{{op=\"{op}\"}} {}",
                self.kv_ops[i].load(Relaxed)
            );
        }
        out.push_str(
            "# HELP micronode_kv_bytes_total KV value bytes received (in) and sent (out).\n",
        );
        out.push_str("# TYPE micronode_kv_bytes_total counter\n");
        let _ = writeln!(
            out,
            "micronode_kv_bytes_total{{dir=\"in\"}} {}",
            self.kv_bytes_in.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "micronode_kv_bytes_total{{dir=\"out\"}} {}",
            self.kv_bytes_out.load(Relaxed)
        );

        out.push_str("# HELP micronode_storage_up 1 while the storage engine answers.\n");
        out.push_str("# TYPE micronode_storage_up gauge\n");
        let _ = writeln!(
            out,
            "micronode_storage_up {}",
            u8::from(self.storage_up.load(Relaxed))
        );
        if let Some((idle, busy)) = gauges.pool_connections {
            out.push_str("# HELP micronode_storage_pool_connections The storage engine's open database connections, idle or busy (postgres).\n");
            out.push_str("# TYPE micronode_storage_pool_connections gauge\n");
            let _ = writeln!(
                out,
                "micronode_storage_pool_connections{{state=\"idle\"}} {idle}"
            );
            let _ = writeln!(
                out,
                "micronode_storage_pool_connections{{state=\"busy\"}} {busy}"
            );
        }

        out.push_str(
            "# HELP micronode_store_revision The newest store revision answers may show.\n",
        );
        out.push_str("# TYPE micronode_store_revision gauge\n");
        let _ = writeln!(out, "micronode_store_revision {}", gauges.store_revision);
        out.push_str("# HELP micronode_kv_expired_total Keys removed by the TTL sweeper.\n");
        out.push_str("# TYPE micronode_kv_expired_total counter\n");
        let _ = writeln!(
            out,
            "micronode_kv_expired_total {}",
            self.kv_expired.load(Relaxed)
        );
        out.push_str("# HELP micronode_audit_records_total Lines appended to the audit trail.\n");
        out.push_str("# TYPE micronode_audit_records_total counter\n");
        let _ = writeln!(
            out,
            "micronode_audit_records_total {}",
            self.audit_records.load(Relaxed)
        );
        out.push_str("# HELP micronode_audit_errors_total Audit lines that could not be written or made durable (a request whose line failed is answered 503).\n");
        out.push_str("# TYPE micronode_audit_errors_total counter\n");
        let _ = writeln!(
            out,
            "micronode_audit_errors_total {}",
            self.audit_errors.load(Relaxed)
        );
        out.push_str("# HELP micronode_txn_total Transactions, by result.\n");
        out.push_str("# TYPE micronode_txn_total counter\n");
        for (i, result) in TXN_RESULTS.iter().enumerate() {
            let n = self.txns[i].load(Relaxed);
            let _ = writeln!(out, "micronode_txn_total{{result=\"{result}\"}} {n}");
        }
        out.push_str("# HELP micronode_auth_total Token checks, by result.\n");
        out.push_str("# TYPE micronode_auth_total counter\n");
        for (i, result) in AUTH_RESULTS.iter().enumerate() {
            let n = self.auth[i].load(Relaxed);
            let _ = writeln!(out, "micronode_auth_total{{result=\"{result}\"}} {n}");
        }
        if !gauges.tenants.is_empty() {
            out.push_str("# HELP micronode_tenant_requests_total Requests of each tenant on feature routes, by result (tenants not named in the configuration under _other).\n");
            out.push_str("# TYPE micronode_tenant_requests_total counter\n");
            for t in &gauges.tenants {
                for (i, result) in TENANT_RESULTS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "micronode_tenant_requests_total{{tenant=\"{}\",result=\"{result}\"}} {}",
                        t.label, t.requests[i]
                    );
                }
            }
            out.push_str("# HELP micronode_tenant_bytes Key and value bytes stored per tenant.\n");
            out.push_str("# TYPE micronode_tenant_bytes gauge\n");
            for t in &gauges.tenants {
                let _ = writeln!(
                    out,
                    "micronode_tenant_bytes{{tenant=\"{}\"}} {}",
                    t.label, t.bytes
                );
            }
            out.push_str("# HELP micronode_tenant_keys Keys stored per tenant.\n");
            out.push_str("# TYPE micronode_tenant_keys gauge\n");
            for t in &gauges.tenants {
                let _ = writeln!(
                    out,
                    "micronode_tenant_keys{{tenant=\"{}\"}} {}",
                    t.label, t.keys
                );
            }
        }
        out.push_str("# HELP micronode_watchers_current Open watch streams.\n");
        out.push_str("# TYPE micronode_watchers_current gauge\n");
        let _ = writeln!(out, "micronode_watchers_current {}", gauges.watchers);
        out.push_str("# HELP micronode_watch_events_total Events sent to watchers, by event.\n");
        out.push_str("# TYPE micronode_watch_events_total counter\n");
        for (i, event) in WATCH_EVENTS.iter().enumerate() {
            let n = self.watch_events[i].load(Relaxed);
            let _ = writeln!(out, "micronode_watch_events_total{{event=\"{event}\"}} {n}");
        }
        out.push_str("# HELP micronode_watch_overflows_total Watch streams ended because the watcher fell behind.\n");
        out.push_str("# TYPE micronode_watch_overflows_total counter\n");
        let _ = writeln!(
            out,
            "micronode_watch_overflows_total {}",
            self.watch_overflows.load(Relaxed)
        );

        out.push_str("# HELP micronode_storage_flush_seconds Time of one store flush + fsync.\n");
        out.push_str("# TYPE micronode_storage_flush_seconds histogram\n");
        self.flush_seconds
            .render(&mut out, "micronode_storage_flush_seconds", "");
        out.push_str(
            "# HELP micronode_storage_commit_batch_size Writes made durable by one flush.\n",
        );
        out.push_str("# TYPE micronode_storage_commit_batch_size histogram\n");
        self.commit_batch_size
            .render(&mut out, "micronode_storage_commit_batch_size", "");

        out.push_str("# HELP micronode_tls_handshakes_total TLS handshakes, by result, protocol version and key-exchange group.\n");
        out.push_str("# TYPE micronode_tls_handshakes_total counter\n");
        for (r, result) in ["ok", "error"].iter().enumerate() {
            for (v, version) in TLS_VERSIONS.iter().enumerate() {
                for (g, group) in TLS_GROUPS.iter().enumerate() {
                    let n = self.tls_handshakes
                        [(r * TLS_VERSIONS.len() + v) * TLS_GROUPS.len() + g]
                        .load(Relaxed);
                    let _ = writeln!(
                        out,
                        "micronode_tls_handshakes_total{{group=\"{group}\",result=\"{result}\",version=\"{version}\"}} {n}"
                    );
                }
            }
        }
        if self.tls_on.load(Relaxed) {
            out.push_str("# HELP micronode_tls_cert_not_after_seconds Expiry (notAfter) of the serving certificate, Unix seconds.\n");
            out.push_str("# TYPE micronode_tls_cert_not_after_seconds gauge\n");
            let _ = writeln!(
                out,
                "micronode_tls_cert_not_after_seconds {}",
                self.tls_cert_not_after.load(Relaxed)
            );
        }

        out.push_str(
            "# HELP micronode_config_reloads_total Configuration reloads (SIGHUP), by result.\n",
        );
        out.push_str("# TYPE micronode_config_reloads_total counter\n");
        for (i, result) in ["ok", "error"].iter().enumerate() {
            let _ = writeln!(
                out,
                "micronode_config_reloads_total{{result=\"{result}\"}} {}",
                self.config_reloads[i].load(Relaxed)
            );
        }
        out.push_str("# HELP micronode_config_last_reload_success_timestamp_seconds When the configuration last loaded successfully (boot or reload), Unix seconds.\n");
        out.push_str("# TYPE micronode_config_last_reload_success_timestamp_seconds gauge\n");
        let _ = writeln!(
            out,
            "micronode_config_last_reload_success_timestamp_seconds {}",
            self.config_last_reload_ok.load(Relaxed)
        );
        process::render(&mut out);
        out
    }
}

/// The standard process collector's families, read from `/proc/self` at scrape time (absent
/// where `/proc` is not mounted).
mod process {
    use std::fmt::Write as _;

    /// `/proc` reports times in USER_HZ, which Linux fixes at 100 for user space.
    const USER_HZ: f64 = 100.0;

    fn stat_fields() -> Option<Vec<String>> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces: split after its closing parenthesis.
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        Some(rest.split_whitespace().map(str::to_owned).collect())
    }

    fn field(fields: &[String], n: usize) -> Option<f64> {
        // `fields` starts at field 3 (state) of proc(5).
        fields.get(n - 3)?.parse().ok()
    }

    fn boot_time() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    }

    fn rss_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    fn max_fds() -> Option<u64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    fn gauge(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }

    pub(super) fn render(out: &mut String) {
        if let Some(f) = stat_fields() {
            if let (Some(utime), Some(stime)) = (field(&f, 14), field(&f, 15)) {
                let help = "Total user and system CPU time spent in seconds.";
                gauge(
                    out,
                    "process_cpu_seconds_total",
                    "counter",
                    help,
                    (utime + stime) / USER_HZ,
                );
            }
            if let (Some(start), Some(boot)) = (field(&f, 22), boot_time()) {
                let help = "Start time of the process since unix epoch in seconds.";
                gauge(
                    out,
                    "process_start_time_seconds",
                    "gauge",
                    help,
                    boot + start / USER_HZ,
                );
            }
        }
        if let Some(rss) = rss_bytes() {
            let help = "Resident memory size in bytes.";
            gauge(
                out,
                "process_resident_memory_bytes",
                "gauge",
                help,
                rss as f64,
            );
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries.
            let n = dir.count().saturating_sub(1);
            gauge(
                out,
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                n as f64,
            );
        }
        if let Some(max) = max_fds() {
            let help = "Maximum number of open file descriptors.";
            gauge(out, "process_max_fds", "gauge", help, max as f64);
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn process_families_are_read_from_proc() {
            let mut out = String::new();
            super::render(&mut out);
            for family in [
                "process_cpu_seconds_total",
                "process_start_time_seconds",
                "process_resident_memory_bytes",
                "process_open_fds",
            ] {
                let line = out
                    .lines()
                    .find(|l| l.starts_with(&format!("{family} ")))
                    .unwrap_or_else(|| panic!("{family} missing in {out}"));
                let v: f64 = line[family.len() + 1..].parse().expect("a number");
                // A young process may not have used a whole tick of CPU yet.
                let floor_ok = family == "process_cpu_seconds_total" || v > 0.0;
                assert!(v >= 0.0 && floor_ok, "{line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_inf() {
        let h = Histogram::new(&[10, 100], 1.0);
        h.observe(5);
        h.observe(10);
        h.observe(50);
        h.observe(500);
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"100\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_sum{a=\"b\"} 565\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 4\n"), "{out}");
    }

    fn one_route() -> Vec<RouteLabels> {
        vec![RouteLabels {
            template: "/healthz",
            recorded: true,
            prewarm: vec![(Verb::Get, 200), (Verb::Put, 405)],
        }]
    }

    #[test]
    fn known_series_are_prewarmed() {
        let m = Metrics::new(&one_route());
        let text = m.render(&Gauges::default());
        for want in [
            "micronode_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 0",
            "micronode_http_requests_total{method=\"PUT\",route=\"/healthz\",status=\"405\"} 0",
            "micronode_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 0",
            "micronode_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"414\"} 0",
            "micronode_rejections_total{reason=\"stacked_encoding\"} 0",
            "micronode_rejections_total{reason=\"storage_unavailable\"} 0",
            "micronode_request_latency_seconds_count{method=\"GET\",route=\"/healthz\"} 0",
            "micronode_kv_ops_total{op=\"list\"} 0",
            "micronode_storage_up 1",
            "micronode_tls_handshakes_total{group=\"none\",result=\"error\",version=\"none\"} 0",
            "micronode_tls_handshakes_total{group=\"X25519MLKEM768\",result=\"ok\",version=\"TLSv1_3\"} 0",
            "micronode_config_reloads_total{result=\"error\"} 0",
        ] {
            assert!(text.contains(want), "missing {want}");
        }
    }

    /// Each handshake lands in its own series, and the certificate gauge shows once TLS is on.
    #[test]
    fn tls_and_reload_series_count_separately() {
        let m = Metrics::new(&one_route());
        assert!(
            !m.render(&Gauges::default())
                .contains("micronode_tls_cert_not_after_seconds")
        );
        m.tls_handshake(true, TlsVersion::Tls13, TlsGroup::X25519Mlkem768);
        m.tls_handshake(true, TlsVersion::Tls12, TlsGroup::Secp384r1);
        m.tls_handshake(false, TlsVersion::None, TlsGroup::None);
        m.set_tls_cert_not_after(1_900_000_000);
        m.config_reload(false);
        let text = m.render(&Gauges::default());
        for want in [
            "micronode_tls_handshakes_total{group=\"X25519MLKEM768\",result=\"ok\",version=\"TLSv1_3\"} 1",
            "micronode_tls_handshakes_total{group=\"secp384r1\",result=\"ok\",version=\"TLSv1_2\"} 1",
            "micronode_tls_handshakes_total{group=\"none\",result=\"error\",version=\"none\"} 1",
            "micronode_tls_handshakes_total{group=\"X25519\",result=\"ok\",version=\"TLSv1_3\"} 0",
            "micronode_tls_cert_not_after_seconds 1900000000",
            "micronode_config_reloads_total{result=\"ok\"} 0",
            "micronode_config_reloads_total{result=\"error\"} 1",
        ] {
            assert!(text.contains(want), "missing {want}");
        }
        assert_eq!(
            text.matches("micronode_tls_handshakes_total{").count(),
            TLS_SERIES
        );
    }

    #[test]
    fn every_code_status_has_its_own_slot() {
        for &code in Code::ALL {
            let s = code.status().as_u16();
            assert_eq!(status_label(status_slot(s)), Some(s), "{code:?}");
        }
        for s in SUCCESS_STATUSES {
            assert_eq!(status_label(status_slot(s)), Some(s));
        }
        assert_eq!(status_label(status_slot(418)), None);
        assert_eq!(status_label(status_slot(999)), None);
    }

    #[test]
    fn an_unusual_status_is_counted_not_lost() {
        let m = Metrics::new(&one_route());
        m.observe_request(0, Verb::Get, 418, Duration::from_micros(3));
        let text = m.render(&Gauges::default());
        assert!(text.contains(
            "micronode_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"other\"} 1"
        ));
    }
}
