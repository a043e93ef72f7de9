//! Micronode: a small, fast, single-node HTTP key-value service on raw hyper 1.x.
//!
//! # Layout
//! - [`config`]   — defaults < TOML file < env; every knob validated once at boot.
//! - [`server`]   — accept loop, protocol limits, connection budget, header and idle clocks,
//!   graceful drain.
//! - [`service`]  — the per-request pipeline: request id, metrics, route match, guards, handler.
//! - [`router`]   — THE route table (template, plane, per-method handler and guard spec).
//! - [`guards`]   — inline head checks: rate limit, decode, body cap, concurrency, timeout.
//! - [`handlers`] — plain async handlers: admin plane, KV, dev routes.
//! - [`store`]    — the `Storage` trait, the `sled` and `mem` engines, group commit.
//! - [`metrics`]  — the boot-resolved, prewarmed Prometheus registry.
//! - [`latency`]  — dev-only service-time HdrHistograms behind `/dev/latency`.
//! - [`ready`]    — readiness probes, draining, the windowed error-rate gate.
//! - [`error`]    — the one response error type and its envelope.
//! - [`response`] — response building blocks.
//! - [`app`]      — the shared state of one server, request ids.
//! - [`logging`]  — tracing setup (`RUST_LOG`, text or JSON).

pub mod app;
pub mod config;
pub mod error;
pub mod guards;
pub mod handlers;
pub mod latency;
pub mod logging;
pub mod metrics;
pub mod ready;
pub mod response;
pub mod router;
pub mod server;
pub mod service;
pub mod store;
pub mod wire;

use std::sync::Arc;

/// Opens the store and builds the app state: the boot steps between config and bind.
pub fn build_app(cfg: config::Config) -> Result<Arc<app::App>, String> {
    let (dev_routes, dev_metrics) = (cfg.dev.routes, cfg.dev.metrics);
    let labels = router::metric_labels(dev_routes, dev_metrics);
    let metrics = Arc::new(metrics::Metrics::new(&labels));
    let times = dev_metrics.then(|| latency::ServiceTimes::new(&router::templates()));
    let store = store::open(&cfg, Arc::clone(&metrics))?;
    Ok(Arc::new(app::App::new(cfg, metrics, store, times)))
}
