//! Micronode: a small, fast, single-node HTTP key-value service on raw hyper 1.x.
//!
//! # Layout
//! Layers from the edge down; each imports only the ones below it (docs/ARCHITECTURE.md).
//! - [`server`]   — accept loop, transport (plain TCP, or a handshake in the connection task),
//!   protocol limits, connection budget, header and idle clocks, graceful drain.
//! - [`tls`]      — the TLS transport: rustls (aws-lc-rs), post-quantum modes, mTLS, reload.
//! - [`service`]  — the per-request pipeline: request id, metrics, route match, guards, handler,
//!   the audit line of an answer (`service::trail`).
//! - [`router`]   — THE route table (template, plane, per-method handler and guard spec) and
//!   the metric label sets derived from it.
//! - [`guards`]   — inline head checks: rate limit, token check, tenant rate and watcher
//!   quotas, decode, body cap, concurrency, timeout.
//! - [`handlers`] — plain handlers: admin plane, KV, watch (SSE), transactions, snapshots,
//!   dev routes.
//! - [`app`]      — the shared state of one server, request ids, open streams.
//! - [`store`]    — the `Storage` contract, the `sled`, `mem` and `postgres` engines (the last
//!   for N nodes over one database), group commit, the change feed, the TTL sweeper,
//!   point-in-time dumps, per-tenant usage and storage quotas.
//! - [`snapshot`] — the snapshot file format: header, key and system records, end line with
//!   count and SHA-256; an incremental writer and a checking reader.
//! - [`audit`]    — the audit trail: hash-chained JSON lines, durable on `sync`, rotation,
//!   offline verification, and the committer that shares syncs between waiters.
//! - [`auth`]     — capability tokens: wire form, HMAC chain, mint, attenuate, verify, the
//!   allow decision, and the key ring file.
//! - [`ready`]    — readiness probes, draining, the windowed error-rate gate.
//! - [`metrics`]  — the Prometheus registry, label sets handed over at boot.
//! - [`latency`]  — dev-only service-time HdrHistograms behind `/dev/latency`.
//! - [`config`]   — defaults < TOML file < env; every knob declared once, validated at boot.
//! - [`error`]    — the code table and the one response error type with its envelope.
//! - [`response`] — response bodies (full or streamed) and builders.
//! - [`wire`]     — types every layer shares: methods, request body, path params, query,
//!   conn info, header names.
//! - [`logging`]  — tracing setup (`RUST_LOG`, text or JSON).

#![warn(unreachable_pub)]
pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub(crate) mod error;
pub mod guards;
pub mod handlers;
pub(crate) mod latency;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod ready;
pub(crate) mod response;
pub(crate) mod router;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod store;
pub mod tls;
pub mod wire;

use std::sync::Arc;

/// Opens the audit trail and the store and builds the app state: the boot steps between
/// config and bind.
pub fn build_app(cfg: config::Config) -> Result<Arc<app::App>, String> {
    let trail = open_audit(&cfg)?;
    build_app_with(cfg, trail)
}

/// Opens the audit log of `audit.path` and starts its committer; `None` when the path is
/// unset. The error names the knob and the file (the binary exits 2 on it, a configuration
/// error).
pub fn open_audit(cfg: &config::Config) -> Result<Option<audit::Trail>, String> {
    let path = &cfg.audit.path;
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let knob = "audit.path (MICRONODE_AUDIT_PATH)";
    let log =
        audit::AuditLog::open(path, cfg.audit.rotate_bytes).map_err(|e| format!("{knob}: {e}"))?;
    let policy = match cfg.storage.durability {
        config::Durability::Sync => audit::SyncPolicy::OnDemand,
        config::Durability::Periodic => {
            audit::SyncPolicy::Every(std::time::Duration::from_millis(cfg.storage.flush_every_ms))
        }
    };
    let trail = audit::Trail::start(log, policy)
        .map_err(|e| format!("{knob}: cannot start the audit committer: {e}"))?;
    Ok(Some(trail))
}

/// [`build_app`] around an audit trail already opened by [`open_audit`].
pub fn build_app_with(
    cfg: config::Config,
    trail: Option<audit::Trail>,
) -> Result<Arc<app::App>, String> {
    let (dev_routes, dev_metrics) = (cfg.dev.routes, cfg.dev.metrics);
    let labels = router::metric_labels(dev_routes, dev_metrics);
    let metrics = Arc::new(metrics::Metrics::new(&labels));
    let times = dev_metrics.then(|| latency::ServiceTimes::new(&router::templates()));
    let store = store::open(
        &cfg,
        Arc::clone(&metrics),
        store::usage::Usage::from_config(&cfg),
    )?;
    let auth = match cfg.auth.mode {
        config::AuthMode::Off => None,
        config::AuthMode::On => {
            let keys = auth::KeyRing::load(&cfg.auth.keys_file).map_err(|e| e.to_string())?;
            Some(app::AuthState::new(keys, revoked_nonces(&*store)?))
        }
    };
    let app = app::App::new(cfg, metrics, store, times, auth).with_audit(trail);
    Ok(Arc::new(app))
}

/// The revoked token nonces kept in the engine (`_auth/revoked/<hex>`).
pub(crate) fn revoked_nonces(store: &dyn store::Storage) -> Result<Vec<[u8; 16]>, String> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let opts = store::ListOpts {
            limit: 1000,
            values: None,
        };
        let call = store.list(app::AUTH_BUCKET, "revoked/", after.as_deref(), opts);
        let page = match call.into_ready() {
            Ok(page) => page.map_err(|e| format!("cannot read revocations: {e}"))?,
            // An engine whose reads wait (postgres) does the work on its own runtime: a
            // short-lived thread awaits it, inside or outside the caller's runtime (boot only).
            Err(pending) => std::thread::scope(|s| {
                s.spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("cannot read revocations: {e}"))?
                        .block_on(pending)
                        .map_err(|e| format!("cannot read revocations: {e}"))
                })
                .join()
                .unwrap_or_else(|_| Err("cannot read revocations: the reader panicked".into()))
            })?,
        };
        out.extend(page.keys.iter().filter_map(|k| {
            k.strip_prefix("revoked/")
                .and_then(auth::token::parse_nonce_hex)
        }));
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

/// Opens the configured engine outside a server, for offline tools (`micronode snapshot
/// restore`): the engine's metrics go to a registry nobody scrapes.
pub fn open_store_offline(cfg: &config::Config) -> Result<Arc<dyn store::Storage>, String> {
    // No usage tracking offline: a restore must not be refused by today's quotas (records keep
    // their owners; the next server to open the store counts them).
    store::open(cfg, Arc::new(metrics::Metrics::new(&[])), None)
}
