//! `micronode [serve] [--config FILE]`: config → logging → runtime → open the store → load
//! the TLS files (when TLS is on) → bind → serve until SIGTERM/SIGINT → drain → final flush.
//! SIGHUP reloads the configuration file and the TLS files. Exit 0 on a clean stop, 1 when the store cannot open, the
//! address cannot be bound or the final flush fails, 2 on a configuration error, bad TLS files
//! included (docs/RUNBOOK.md).

use std::process::ExitCode;
use std::sync::Arc;

use micronode::app::App;
use micronode::config::Config;
use micronode::server::{self, PlainTcp};
use micronode::tls::Tls;

use super::{ConfigArgs, load_config};

pub(crate) fn run(args: ConfigArgs) -> ExitCode {
    let cfg = match load_config(&args) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    if let Err(e) = cfg.exposure() {
        eprintln!("micronode: configuration error: {e}");
        return ExitCode::from(2);
    }
    if cfg.auth.mode == micronode::config::AuthMode::On
        && let Err(e) = micronode::auth::KeyRing::load(&cfg.auth.keys_file)
    {
        eprintln!("micronode: configuration error: auth.keys_file (MICRONODE_AUTH_KEYS_FILE): {e}");
        return ExitCode::from(2);
    }
    micronode::logging::init(&cfg.log);
    if cfg.auth.insecure && !cfg.server.bind_addr.ip().is_loopback() {
        tracing::warn!(
            bind = %cfg.server.bind_addr,
            "MICRONODE_INSECURE=1: serving a non-loopback address without auth and TLS both on"
        );
    }
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
    let config_file = args.config.clone();
    runtime.block_on(serve(cfg, config_file))
}

async fn serve(cfg: Config, config_file: Option<String>) -> ExitCode {
    let bind = cfg.server.bind_addr;
    let engine = cfg.storage.effective_engine();
    // An audit log that cannot be opened is a configuration error (the message names the file).
    let trail = match micronode::open_audit(&cfg) {
        Ok(trail) => trail,
        Err(e) => {
            eprintln!("micronode: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let app = match micronode::build_app_with(cfg, trail) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("micronode: {e}");
            return ExitCode::from(1);
        }
    };
    let tls = match app.cfg.tls.enabled() {
        false => None,
        true => match Tls::load(&app.cfg.tls, Arc::clone(&app.metrics)) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("micronode: configuration error: {e}");
                return ExitCode::from(2);
            }
        },
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
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    tracing::info!(
        addr = %local,
        engine = ?engine,
        durability = ?app.cfg.storage.durability,
        dev_routes = app.cfg.dev.routes,
        dev_ready = app.cfg.dev.ready,
        workers = app.cfg.worker_threads(),
        tls = tls.is_some(),
        tls_pq = ?app.cfg.tls.pq,
        mtls = !app.cfg.tls.client_ca.as_os_str().is_empty(),
        audit = app.audit.is_some(),
        "micronode listening"
    );
    let reloader = tokio::spawn(reload_on_sighup(
        hangups,
        Arc::clone(&app),
        tls.clone(),
        config_file,
    ));
    match &tls {
        Some(tls) => server::run_with(listener, app.clone(), tls.transport(), shutdown).await,
        None => server::run_with(listener, app.clone(), PlainTcp, shutdown).await,
    }
    reloader.abort();
    let store = app.store.clone();
    let flushed = tokio::task::spawn_blocking(move || store.flush_blocking()).await;
    if let Some(audit) = &app.audit
        && let Err(e) = audit.close()
    {
        tracing::error!(cause = %e, "final audit log sync failed");
        return ExitCode::from(1);
    }
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

/// On each SIGHUP: re-reads the configuration (file and environment, as at boot) and the TLS
/// files, and applies what can change live (docs/CONFIG.md, "Reload"). An invalid new
/// configuration or a bad TLS file changes nothing: the old one stays in force, and the
/// failure is logged and counted in `micronode_config_reloads_total{result="error"}`. Changed
/// knobs that need a restart are logged as such and left alone. The handler is registered by
/// the caller before the "listening" line, so an early SIGHUP is never the default, fatal one.
async fn reload_on_sighup(
    hangups: std::io::Result<tokio::signal::unix::Signal>,
    app: Arc<App>,
    tls: Option<Arc<Tls>>,
    config_file: Option<String>,
) {
    let mut hup = match hangups {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(cause = %e, "cannot listen for SIGHUP; reload is off");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let file = config_file.clone();
        let files = tls.clone();
        let app_now = Arc::clone(&app);
        let result = tokio::task::spawn_blocking(move || {
            reload(file.as_deref(), files.as_deref(), &app_now)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        // Fail closed: a reload that could not be put on record is not applied.
        let result = result.and_then(|new| match &app.audit {
            Some(audit) if audit.is_broken() => {
                Err("the audit trail cannot be written: reload refused".to_owned())
            }
            _ => Ok(new),
        });
        let result = result.map(|new| {
            let filter_changed = new.log.filter != app.config().log.filter;
            if filter_changed && let Err(e) = micronode::logging::set_filter(&new.log.filter) {
                tracing::warn!(cause = %e, "the new log filter was not applied");
            }
            app.reload(new)
        });
        app.metrics.config_reload(result.is_ok());
        if let Some(audit) = &app.audit {
            // 200: applied; 400: refused, the previous configuration stays in force.
            let event = micronode::audit::Event {
                op: "reload",
                status: if result.is_ok() { 200 } else { 400 },
                ..micronode::audit::Event::default()
            };
            let _ = audit.record(&event).await;
        }
        match result {
            Ok(restart) => {
                for key in &restart {
                    tracing::warn!(
                        knob = key,
                        "changed in the configuration but needs a restart; the running value stays"
                    );
                }
                tracing::info!(
                    signal = "SIGHUP",
                    tls = tls.is_some(),
                    "configuration reloaded"
                );
            }
            Err(e) => tracing::error!(
                signal = "SIGHUP",
                cause = %e,
                "reload failed; the previous configuration stays in force"
            ),
        }
    }
}

/// Loads and validates the new configuration, then reloads the TLS files; either failing
/// leaves everything as it was.
fn reload(file: Option<&str>, tls: Option<&Tls>, app: &App) -> Result<Config, String> {
    let cfg = Config::from_process_env(file).map_err(|e| e.to_string())?;
    // The key ring is re-read from the file in force (its path needs a restart to change):
    // removing a key kills its tokens now.
    let keys = match &app.auth {
        Some(_) => Some(
            micronode::auth::KeyRing::load(&app.cfg.auth.keys_file).map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    if let Some(tls) = tls {
        tls.reload().map_err(|e| e.to_string())?;
    }
    if let (Some(state), Some(keys)) = (&app.auth, keys) {
        state.set_keys(keys);
    }
    Ok(cfg)
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
