//! Micronode: a small, fast, single-node HTTP key-value service on raw hyper 1.x.
//!
//! # Layout
//! Layers from the edge down; each imports only the ones below it (docs/ARCHITECTURE.md).
//! - [`server`]   — accept loop, transport (plain TCP, or a handshake in the connection task),
//!   protocol limits, connection budget, header and idle clocks, graceful drain.
//! - [`tls`]      — the TLS transport: rustls (aws-lc-rs), post-quantum modes, mTLS, reload.
//! - [`service`]  — the per-request pipeline: request id, metrics, route match, guards, handler.
//! - [`router`]   — THE route table (template, plane, per-method handler and guard spec) and
//!   the metric label sets derived from it.
//! - [`guards`]   — inline head checks: rate limit, decode, body cap, concurrency, timeout.
//! - [`handlers`] — plain handlers: admin plane, KV, watch (SSE), transactions, snapshots,
//!   dev routes.
//! - [`app`]      — the shared state of one server, request ids, open streams.
//! - [`store`]    — the `Storage` contract, the `sled`, `mem` and `postgres` engines (the last
//!   for N nodes over one database), group commit, the change feed, the TTL sweeper,
//!   point-in-time dumps.
//! - [`snapshot`] — the snapshot file format: header, key and system records, end line with
//!   count and SHA-256; an incremental writer and a checking reader.
//! - [`audit`]    — the audit trail: hash-chained JSON lines, durable on `sync`, rotation,
//!   offline verification.
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

/// Opens the store and builds the app state: the boot steps between config and bind.
pub fn build_app(cfg: config::Config) -> Result<Arc<app::App>, String> {
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
    Ok(Arc::new(app::App::new(cfg, metrics, store, times, auth)))
}

/// The revoked token nonces kept in the engine (`_auth/revoked/<hex>`).
fn revoked_nonces(store: &dyn store::Storage) -> Result<Vec<[u8; 16]>, String> {
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
    let usage = store::usage::Usage::from_config(cfg);
    store::open(cfg, Arc::new(metrics::Metrics::new(&[])), usage)
}
