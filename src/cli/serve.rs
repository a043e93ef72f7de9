//! `micronode [serve] [--config FILE]`: config → logging → runtime → open the store → bind →
//! serve until SIGTERM/SIGINT → drain → final flush. Exit 0 on a clean stop, 1 when the store
//! cannot open, the address cannot be bound or the final flush fails, 2 on a configuration
//! error (docs/RUNBOOK.md).

use std::process::ExitCode;

use micronode::config::Config;

use super::{ConfigArgs, load_config};

pub(crate) fn run(args: ConfigArgs) -> ExitCode {
    let cfg = match load_config(&args) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    micronode::logging::init(&cfg.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("micronode: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(serve(cfg))
}

async fn serve(cfg: Config) -> ExitCode {
    let bind = cfg.server.bind_addr;
    let engine = cfg.storage.effective_engine();
    let app = match micronode::build_app(cfg) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("micronode: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("micronode: cannot bind {bind}: {e}");
            return ExitCode::from(1);
        }
    };
    let local = listener.local_addr().map_or(bind, |a| a);
    let shutdown = shutdown_signal();
    tracing::info!(
        addr = %local,
        engine = ?engine,
        durability = ?app.cfg.storage.durability,
        dev_routes = app.cfg.dev.routes,
        dev_ready = app.cfg.dev.ready,
        workers = app.cfg.worker_threads(),
        "micronode listening"
    );
    micronode::server::run(listener, app.clone(), shutdown).await;
    let store = app.store.clone();
    let flushed = tokio::task::spawn_blocking(move || store.flush_blocking()).await;
    match flushed {
        Ok(Ok(())) => {
            tracing::info!("store flushed; bye");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            tracing::error!(cause = %e, "final store flush failed");
            ExitCode::from(1)
        }
        Err(e) => {
            tracing::error!(cause = %e, "final store flush panicked");
            ExitCode::from(1)
        }
    }
}

/// Registers the SIGTERM and SIGINT handlers now — before the "listening" line, so a signal
/// sent as soon as a supervisor sees the server up is never the default, fatal one — and
/// resolves when either arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (mut term, mut int) = match (term, int) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(cause = %e, "cannot listen for SIGTERM/SIGINT; running until killed");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
    }
}
