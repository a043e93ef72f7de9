//! Tracing setup. The per-request span and access line are `debug`, so at the default `info`
//! the fast path logs nothing and pays only a cached callsite check.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogCfg, LogFormat};

/// Installs the global subscriber. The filter was validated with the config. Text lines are
/// coloured only when stderr is a terminal, so a log file or pipe gets plain text.
pub fn init(cfg: &LogCfg) {
    let filter = EnvFilter::try_new(&cfg.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(e) = result {
        eprintln!("micronode: logging already initialised: {e}");
    }
}
