//! The `micronode` binary: load config, set up logging, open the store, bind, serve until
//! SIGTERM/SIGINT, drain, flush. Exit codes: 0 clean stop, 1 boot failure (store, bind),
//! 2 configuration error.

use std::process::ExitCode;

use micronode::config::{Config, ENV_VARS};

const USAGE: &str = "\
micronode — a small, fast, single-node HTTP key-value service

USAGE:
    micronode [--config FILE] [--check-config]

OPTIONS:
    --config FILE    read a TOML config file (also MICRONODE_CONFIG)
    --check-config   validate the configuration, print the effective config, exit
    -h, --help       print this help
    -V, --version    print the version

Precedence: built-in defaults < config file < environment. See docs/CONFIG.md.
";

struct Args {
    config: Option<String>,
    check: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        config: None,
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}\nENVIRONMENT:\n");
                for v in ENV_VARS {
                    println!("    {v}");
                }
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("micronode {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--check-config" => args.check = true,
            "--config" => {
                args.config = Some(it.next().ok_or("--config needs a FILE argument")?);
            }
            s if s.starts_with("--config=") => {
                args.config = Some(s["--config=".len()..].to_owned());
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("micronode: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match Config::from_process_env(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("micronode: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        print!("{}", cfg.to_toml());
        return ExitCode::SUCCESS;
    }
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
    tracing::info!(
        addr = %local,
        engine = ?engine,
        durability = ?app.cfg.storage.durability,
        dev_routes = app.cfg.dev.routes,
        dev_ready = app.cfg.dev.ready,
        workers = app.cfg.worker_threads(),
        "micronode listening"
    );
    micronode::server::run(listener, app.clone(), shutdown_signal()).await;
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

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(cause = %e, "cannot listen for SIGTERM; only SIGINT will stop");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutting down"),
    }
}
