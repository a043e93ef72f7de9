//! Tracing setup. The per-request span and access line are `debug`, so at the default `info`
//! the fast path logs nothing and pays only a cached callsite check. The filter can be changed
//! while running ([`set_filter`], on a SIGHUP reload).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogCfg, LogFormat};

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. The filter was validated with the config. Text lines are
/// coloured only when stderr is a terminal, so a log file or pipe gets plain text.
pub fn init(cfg: &LogCfg) {
    let filter = EnvFilter::try_new(&cfg.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    };
    match result {
        Ok(()) => {
            let _ = FILTER.set(handle);
        }
        Err(e) => eprintln!("micronode: logging already initialised: {e}"),
    }
}

/// Replaces the log filter (`RUST_LOG` syntax). Does nothing when logging was not set up by
/// [`init`] (tests).
pub fn set_filter(filter: &str) -> Result<(), String> {
    let new = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    match FILTER.get() {
        Some(handle) => handle.reload(new).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}
