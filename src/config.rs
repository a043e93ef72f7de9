//! Configuration: built-in defaults < TOML file < environment.
//!
//! Every knob of SPEC §5 is parsed and validated here, once, at boot. Anything unknown,
//! unparsable or out of range is a [`ConfigError`] that names the key or variable; the binary
//! turns it into exit code 2.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The effective configuration of one server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerCfg,
    pub limits: LimitsCfg,
    pub rate_limit: RateLimitCfg,
    pub storage: StorageCfg,
    pub ready: ReadyCfg,
    pub dev: DevCfg,
    pub log: LogCfg,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerCfg {
    pub bind_addr: SocketAddr,
    /// Runtime worker threads; 0 means one per core.
    pub workers: usize,
    pub max_connections: usize,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
    /// A connection with no new request for this long is closed (HTTP/2 with GOAWAY).
    pub idle_timeout_ms: u64,
    /// HTTP/1: most header fields in one request (hyper answers 431 past it).
    pub h1_max_headers: usize,
    /// HTTP/1: the connection read buffer; a request head must fit in it (else 431).
    pub read_buffer_bytes: usize,
    /// Both protocols: summed size of the header fields (name + value + 4) before 431.
    pub max_header_bytes: usize,
    /// Both protocols: longest path + query before 414.
    pub max_uri_bytes: usize,
    /// HTTP/2: streams one connection may have open at once.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: largest decoded header list a peer may send.
    pub h2_max_header_list_bytes: u32,
    /// HTTP/2: streams reset by the peer before we accepted them (rapid reset), per connection.
    pub h2_max_pending_reset_streams: usize,
    /// HTTP/2: streams we reset because the peer misbehaved, per connection.
    pub h2_max_local_error_reset_streams: usize,
}

impl Default for ServerCfg {
    fn default() -> Self {
        Self {
            bind_addr: SocketAddr::from(([127, 0, 0, 1], 5310)),
            workers: 0,
            max_connections: 10_000,
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 10_000,
            request_timeout_ms: 5_000,
            shutdown_grace_ms: 10_000,
            idle_timeout_ms: 60_000,
            h1_max_headers: 100,
            read_buffer_bytes: 65_536,
            max_header_bytes: 61_440,
            max_uri_bytes: 8_192,
            h2_max_concurrent_streams: 100,
            h2_max_header_list_bytes: 65_536,
            h2_max_pending_reset_streams: 20,
            h2_max_local_error_reset_streams: 1_024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsCfg {
    pub max_body_bytes: u64,
    pub allow_compressed: bool,
    pub decode_abs_cap_bytes: u64,
    pub kv_max_inflight: usize,
}

impl Default for LimitsCfg {
    fn default() -> Self {
        Self {
            max_body_bytes: 1_048_576,
            allow_compressed: false,
            decode_abs_cap_bytes: 4_194_304,
            kv_max_inflight: 512,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitCfg {
    /// Tokens per second of the global bucket; 0 turns it off.
    pub rps: u32,
    /// Bucket depth; 0 means one second's worth (`rps`).
    pub burst: u32,
    /// Delay before a 429 is sent, holding no permit.
    pub tarpit_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Sled,
    Mem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Sync,
    Periodic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageCfg {
    /// `None` = the default (`sled`, or `mem` in amnesia mode). Kept optional so that an
    /// explicit `sled` together with amnesia can be refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    pub path: PathBuf,
    pub durability: Durability,
    pub flush_every_ms: u64,
    pub cache_bytes: u64,
    pub amnesia: bool,
}

impl Default for StorageCfg {
    fn default() -> Self {
        Self {
            engine: None,
            path: PathBuf::from("./micronode-data"),
            durability: Durability::Sync,
            flush_every_ms: 500,
            cache_bytes: 64 * 1024 * 1024,
            amnesia: false,
        }
    }
}

impl StorageCfg {
    /// The engine that will really run.
    pub fn effective_engine(&self) -> Engine {
        match (self.amnesia, self.engine) {
            (true, _) => Engine::Mem,
            (false, e) => e.unwrap_or(Engine::Sled),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadyCfg {
    pub timeout_ms: u64,
    pub max_inflight: usize,
    /// Dev hook: `/readyz` sleeps this long before answering.
    pub sleep_ms: u64,
    /// 5xx share (percent) at or above which `/readyz` is 503; 0 = gate off.
    pub error_gate_pct: u32,
    /// Length of the sliding window the error rate is taken over.
    pub error_window_secs: u64,
}

impl Default for ReadyCfg {
    fn default() -> Self {
        Self {
            timeout_ms: 1_000,
            max_inflight: 1_024,
            sleep_ms: 0,
            error_gate_pct: 0,
            error_window_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevCfg {
    pub routes: bool,
    pub metrics: bool,
    pub ready: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogCfg {
    pub format: LogFormat,
    /// A `tracing` filter (the `RUST_LOG` syntax).
    pub filter: String,
}

impl Default for LogCfg {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}

/// Why a configuration was refused. Each variant names the key or variable at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The config file could not be read.
    File { path: String, cause: String },
    /// The config file is not valid TOML for our schema (unknown key, wrong type).
    Toml { path: String, cause: String },
    /// An environment variable could not be parsed.
    Env { var: &'static str, cause: String },
    /// A value parsed but is out of range or inconsistent.
    Invalid { key: &'static str, cause: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, cause } => write!(f, "config file {path}: {cause}"),
            Self::Toml { path, cause } => write!(f, "config file {path}: {cause}"),
            Self::Env { var, cause } => write!(f, "environment variable {var}: {cause}"),
            Self::Invalid { key, cause } => write!(f, "config key {key}: {cause}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses one environment string into a typed knob.
trait FromEnv: Sized {
    fn from_env(raw: &str) -> Result<Self, String>;
}

macro_rules! from_env_via_parse {
    ($($t:ty),*) => {$(
        impl FromEnv for $t {
            fn from_env(raw: &str) -> Result<Self, String> {
                raw.trim().parse::<$t>().map_err(|e| format!("invalid value {raw:?}: {e}"))
            }
        }
    )*};
}
from_env_via_parse!(u32, u64, usize, SocketAddr);

impl FromEnv for bool {
    fn from_env(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" | "" => Ok(false),
            _ => Err(format!("invalid value {raw:?}: expected 0 or 1")),
        }
    }
}

impl FromEnv for String {
    fn from_env(raw: &str) -> Result<Self, String> {
        Ok(raw.to_owned())
    }
}

impl FromEnv for PathBuf {
    fn from_env(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(PathBuf::from(raw))
    }
}

impl FromEnv for Option<Engine> {
    fn from_env(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "sled" => Ok(Some(Engine::Sled)),
            "mem" => Ok(Some(Engine::Mem)),
            _ => Err(format!("invalid value {raw:?}: expected sled or mem")),
        }
    }
}

impl FromEnv for Durability {
    fn from_env(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "sync" => Ok(Self::Sync),
            "periodic" => Ok(Self::Periodic),
            _ => Err(format!("invalid value {raw:?}: expected sync or periodic")),
        }
    }
}

impl FromEnv for LogFormat {
    fn from_env(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("invalid value {raw:?}: expected text or json")),
        }
    }
}

/// The environment table: variable → field. One line per knob of SPEC §5.
macro_rules! env_knobs {
    ($cfg:ident, $env:ident; $($var:literal => $sec:ident . $field:ident),* $(,)?) => {
        $(
            if let Some(raw) = $env($var) {
                $cfg.$sec.$field = FromEnv::from_env(&raw)
                    .map_err(|cause| ConfigError::Env { var: $var, cause })?;
            }
        )*
    };
}

/// Every environment variable Micronode reads (for docs and `--help`).
pub const ENV_VARS: &[&str] = &[
    "MICRONODE_CONFIG",
    "MICRONODE_BIND_ADDR",
    "BIND_ADDR",
    "RUST_LOG",
    "MICRONODE_LOG_FORMAT",
    "MICRONODE_WORKERS",
    "MICRONODE_DEV_ROUTES",
    "MICRONODE_DEV_METRICS",
    "MICRONODE_DEV_READY",
    "MICRONODE_READY_TIMEOUT_MS",
    "MICRONODE_READY_MAX_INFLIGHT",
    "MICRONODE_READY_SLEEP_MS",
    "MICRONODE_READY_ERROR_GATE_PCT",
    "MICRONODE_READY_ERROR_WINDOW_SECS",
    "MICRONODE_REQUEST_TIMEOUT_MS",
    "MICRONODE_KV_MAX_INFLIGHT",
    "MICRONODE_MAX_BODY_BYTES",
    "MICRONODE_ALLOW_COMPRESSED",
    "MICRONODE_DECODE_ABS_CAP_BYTES",
    "MICRONODE_RL_RPS",
    "MICRONODE_RL_BURST",
    "MICRONODE_RL_TARPIT_MS",
    "MICRONODE_STORAGE_ENGINE",
    "MICRONODE_STORAGE_PATH",
    "MICRONODE_DURABILITY",
    "MICRONODE_FLUSH_EVERY_MS",
    "MICRONODE_STORAGE_CACHE_BYTES",
    "MICRONODE_AMNESIA",
    "MICRONODE_MAX_CONNECTIONS",
    "MICRONODE_HEADER_READ_TIMEOUT_MS",
    "MICRONODE_BODY_READ_TIMEOUT_MS",
    "MICRONODE_SHUTDOWN_GRACE_MS",
    "MICRONODE_IDLE_TIMEOUT_MS",
    "MICRONODE_H1_MAX_HEADERS",
    "MICRONODE_READ_BUFFER_BYTES",
    "MICRONODE_MAX_HEADER_BYTES",
    "MICRONODE_MAX_URI_BYTES",
    "MICRONODE_H2_MAX_CONCURRENT_STREAMS",
    "MICRONODE_H2_MAX_HEADER_LIST_BYTES",
    "MICRONODE_H2_MAX_PENDING_RESET_STREAMS",
    "MICRONODE_H2_MAX_LOCAL_ERROR_RESET_STREAMS",
];

impl Config {
    /// Loads defaults < file < env. `env` looks a variable up (the process environment in
    /// the binary, a map in tests, so parallel tests never share process state).
    pub fn load(
        file: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = file.map(str::to_owned).or_else(|| env("MICRONODE_CONFIG"));
        let mut cfg = match file {
            Some(path) => Self::from_file(&path)?,
            None => Config::default(),
        };
        cfg.apply_env(&env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads from the real process environment.
    pub fn from_process_env(file: Option<&str>) -> Result<Config, ConfigError> {
        Self::load(file, |k| std::env::var(k).ok())
    }

    fn from_file(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            cause: e.kind().to_string(),
        })?;
        Self::from_toml(&text).map_err(|cause| ConfigError::Toml {
            path: path.to_owned(),
            cause,
        })
    }

    /// Parses TOML text; unknown keys are refused.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.message().trim().to_owned() + &span_hint(&e, text))
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let cfg = self;
        // The short alias first, so that the prefixed name wins when both are set.
        env_knobs!(cfg, env;
            "BIND_ADDR" => server.bind_addr,
            "MICRONODE_BIND_ADDR" => server.bind_addr,
            "MICRONODE_WORKERS" => server.workers,
            "MICRONODE_MAX_CONNECTIONS" => server.max_connections,
            "MICRONODE_HEADER_READ_TIMEOUT_MS" => server.header_read_timeout_ms,
            "MICRONODE_BODY_READ_TIMEOUT_MS" => server.body_read_timeout_ms,
            "MICRONODE_REQUEST_TIMEOUT_MS" => server.request_timeout_ms,
            "MICRONODE_SHUTDOWN_GRACE_MS" => server.shutdown_grace_ms,
            "MICRONODE_IDLE_TIMEOUT_MS" => server.idle_timeout_ms,
            "MICRONODE_H1_MAX_HEADERS" => server.h1_max_headers,
            "MICRONODE_READ_BUFFER_BYTES" => server.read_buffer_bytes,
            "MICRONODE_MAX_HEADER_BYTES" => server.max_header_bytes,
            "MICRONODE_MAX_URI_BYTES" => server.max_uri_bytes,
            "MICRONODE_H2_MAX_CONCURRENT_STREAMS" => server.h2_max_concurrent_streams,
            "MICRONODE_H2_MAX_HEADER_LIST_BYTES" => server.h2_max_header_list_bytes,
            "MICRONODE_H2_MAX_PENDING_RESET_STREAMS" => server.h2_max_pending_reset_streams,
            "MICRONODE_H2_MAX_LOCAL_ERROR_RESET_STREAMS" => server.h2_max_local_error_reset_streams,
            "MICRONODE_MAX_BODY_BYTES" => limits.max_body_bytes,
            "MICRONODE_ALLOW_COMPRESSED" => limits.allow_compressed,
            "MICRONODE_DECODE_ABS_CAP_BYTES" => limits.decode_abs_cap_bytes,
            "MICRONODE_KV_MAX_INFLIGHT" => limits.kv_max_inflight,
            "MICRONODE_RL_RPS" => rate_limit.rps,
            "MICRONODE_RL_BURST" => rate_limit.burst,
            "MICRONODE_RL_TARPIT_MS" => rate_limit.tarpit_ms,
            "MICRONODE_STORAGE_ENGINE" => storage.engine,
            "MICRONODE_STORAGE_PATH" => storage.path,
            "MICRONODE_DURABILITY" => storage.durability,
            "MICRONODE_FLUSH_EVERY_MS" => storage.flush_every_ms,
            "MICRONODE_STORAGE_CACHE_BYTES" => storage.cache_bytes,
            "MICRONODE_AMNESIA" => storage.amnesia,
            "MICRONODE_READY_TIMEOUT_MS" => ready.timeout_ms,
            "MICRONODE_READY_MAX_INFLIGHT" => ready.max_inflight,
            "MICRONODE_READY_SLEEP_MS" => ready.sleep_ms,
            "MICRONODE_READY_ERROR_GATE_PCT" => ready.error_gate_pct,
            "MICRONODE_READY_ERROR_WINDOW_SECS" => ready.error_window_secs,
            "MICRONODE_DEV_ROUTES" => dev.routes,
            "MICRONODE_DEV_METRICS" => dev.metrics,
            "MICRONODE_DEV_READY" => dev.ready,
            "MICRONODE_LOG_FORMAT" => log.format,
            "RUST_LOG" => log.filter,
        );
        Ok(())
    }

    /// Range and consistency checks. Keys are named as `section.key (ENV_VAR)`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const DAY_MS: u64 = 86_400_000;
        fn range<T: PartialOrd + fmt::Display + Copy>(
            key: &'static str,
            v: T,
            lo: T,
            hi: T,
        ) -> Result<(), ConfigError> {
            if v < lo || v > hi {
                return Err(ConfigError::Invalid {
                    key,
                    cause: format!("{v} is out of range {lo}..={hi}"),
                });
            }
            Ok(())
        }
        let s = &self.server;
        range("server.workers (MICRONODE_WORKERS)", s.workers, 0, 1024)?;
        range(
            "server.max_connections (MICRONODE_MAX_CONNECTIONS)",
            s.max_connections,
            1,
            1_000_000,
        )?;
        range(
            "server.header_read_timeout_ms (MICRONODE_HEADER_READ_TIMEOUT_MS)",
            s.header_read_timeout_ms,
            1,
            DAY_MS,
        )?;
        range(
            "server.body_read_timeout_ms (MICRONODE_BODY_READ_TIMEOUT_MS)",
            s.body_read_timeout_ms,
            1,
            DAY_MS,
        )?;
        range(
            "server.request_timeout_ms (MICRONODE_REQUEST_TIMEOUT_MS)",
            s.request_timeout_ms,
            1,
            DAY_MS,
        )?;
        range(
            "server.shutdown_grace_ms (MICRONODE_SHUTDOWN_GRACE_MS)",
            s.shutdown_grace_ms,
            0,
            DAY_MS,
        )?;
        range(
            "server.idle_timeout_ms (MICRONODE_IDLE_TIMEOUT_MS)",
            s.idle_timeout_ms,
            1,
            DAY_MS,
        )?;
        range(
            "server.h1_max_headers (MICRONODE_H1_MAX_HEADERS)",
            s.h1_max_headers,
            1,
            10_000,
        )?;
        // hyper refuses (panics on) a read buffer under 8 KiB.
        range(
            "server.read_buffer_bytes (MICRONODE_READ_BUFFER_BYTES)",
            s.read_buffer_bytes,
            8_192,
            16 << 20,
        )?;
        range(
            "server.max_header_bytes (MICRONODE_MAX_HEADER_BYTES)",
            s.max_header_bytes,
            256,
            16 << 20,
        )?;
        range(
            "server.max_uri_bytes (MICRONODE_MAX_URI_BYTES)",
            s.max_uri_bytes,
            16,
            65_534,
        )?;
        range(
            "server.h2_max_concurrent_streams (MICRONODE_H2_MAX_CONCURRENT_STREAMS)",
            s.h2_max_concurrent_streams,
            1,
            100_000,
        )?;
        range(
            "server.h2_max_header_list_bytes (MICRONODE_H2_MAX_HEADER_LIST_BYTES)",
            s.h2_max_header_list_bytes,
            256,
            16 << 20,
        )?;
        // Finite by construction: 0 would be "no streams" and there is no "unlimited".
        range(
            "server.h2_max_pending_reset_streams (MICRONODE_H2_MAX_PENDING_RESET_STREAMS)",
            s.h2_max_pending_reset_streams,
            1,
            100_000,
        )?;
        range(
            "server.h2_max_local_error_reset_streams (MICRONODE_H2_MAX_LOCAL_ERROR_RESET_STREAMS)",
            s.h2_max_local_error_reset_streams,
            1,
            1_000_000,
        )?;
        let l = &self.limits;
        range(
            "limits.max_body_bytes (MICRONODE_MAX_BODY_BYTES)",
            l.max_body_bytes,
            0,
            1 << 30,
        )?;
        range(
            "limits.decode_abs_cap_bytes (MICRONODE_DECODE_ABS_CAP_BYTES)",
            l.decode_abs_cap_bytes,
            1,
            1 << 30,
        )?;
        range(
            "limits.kv_max_inflight (MICRONODE_KV_MAX_INFLIGHT)",
            l.kv_max_inflight,
            1,
            1_000_000,
        )?;
        let r = &self.rate_limit;
        range("rate_limit.rps (MICRONODE_RL_RPS)", r.rps, 0, 100_000_000)?;
        range(
            "rate_limit.burst (MICRONODE_RL_BURST)",
            r.burst,
            0,
            100_000_000,
        )?;
        range(
            "rate_limit.tarpit_ms (MICRONODE_RL_TARPIT_MS)",
            r.tarpit_ms,
            0,
            60_000,
        )?;
        let st = &self.storage;
        range(
            "storage.flush_every_ms (MICRONODE_FLUSH_EVERY_MS)",
            st.flush_every_ms,
            1,
            DAY_MS,
        )?;
        range(
            "storage.cache_bytes (MICRONODE_STORAGE_CACHE_BYTES)",
            st.cache_bytes,
            1 << 20,
            1 << 40,
        )?;
        if st.amnesia && st.engine == Some(Engine::Sled) {
            return Err(ConfigError::Invalid {
                key: "storage.engine (MICRONODE_STORAGE_ENGINE)",
                cause: "engine \"sled\" writes to disk, which amnesia mode (MICRONODE_AMNESIA=1) forbids".to_owned(),
            });
        }
        if st.path.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "storage.path (MICRONODE_STORAGE_PATH)",
                cause: "must not be empty".to_owned(),
            });
        }
        let rd = &self.ready;
        range(
            "ready.timeout_ms (MICRONODE_READY_TIMEOUT_MS)",
            rd.timeout_ms,
            1,
            DAY_MS,
        )?;
        range(
            "ready.max_inflight (MICRONODE_READY_MAX_INFLIGHT)",
            rd.max_inflight,
            1,
            1_000_000,
        )?;
        range(
            "ready.sleep_ms (MICRONODE_READY_SLEEP_MS)",
            rd.sleep_ms,
            0,
            DAY_MS,
        )?;
        range(
            "ready.error_gate_pct (MICRONODE_READY_ERROR_GATE_PCT)",
            rd.error_gate_pct,
            0,
            100,
        )?;
        range(
            "ready.error_window_secs (MICRONODE_READY_ERROR_WINDOW_SECS)",
            rd.error_window_secs,
            1,
            3_600,
        )?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(ConfigError::Invalid {
                key: "log.filter (RUST_LOG)",
                cause: e.to_string(),
            });
        }
        Ok(())
    }

    /// The effective config as TOML, for `--check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Worker threads to start: the knob, or one per core.
    pub fn worker_threads(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.server.header_read_timeout_ms)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.server.body_read_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.server.request_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.server.idle_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.server.shutdown_grace_ms)
    }

    pub fn ready_timeout(&self) -> Duration {
        Duration::from_millis(self.ready.timeout_ms)
    }
}

/// " (line L, column C)" for a TOML error, when it has a position.
fn span_hint(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(file_toml: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut cfg = match file_toml {
            Some(t) => Config::from_toml(t).map_err(|cause| ConfigError::Toml {
                path: "test.toml".into(),
                cause,
            })?,
            None => Config::default(),
        };
        cfg.apply_env(&|k: &str| map.get(k).cloned())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The defaults are exactly the SPEC §5 table.
    #[test]
    fn defaults_match_the_spec_table() {
        let c = load(None, &[]).expect("defaults are valid");
        assert_eq!(c.server.bind_addr.to_string(), "127.0.0.1:5310");
        assert_eq!(c.limits.max_body_bytes, 1_048_576);
        assert_eq!(c.limits.decode_abs_cap_bytes, 4_194_304);
        assert_eq!(c.limits.kv_max_inflight, 512);
        assert_eq!(c.ready.timeout_ms, 1000);
        assert_eq!(c.ready.max_inflight, 1024);
        assert_eq!(c.server.request_timeout_ms, 5000);
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.server.header_read_timeout_ms, 5000);
        assert_eq!(c.server.body_read_timeout_ms, 10_000);
        assert_eq!(c.server.shutdown_grace_ms, 10_000);
        assert_eq!(c.storage.effective_engine(), Engine::Sled);
        assert_eq!(c.storage.durability, Durability::Sync);
        assert_eq!(c.storage.flush_every_ms, 500);
        assert_eq!(c.storage.cache_bytes, 67_108_864);
        assert_eq!(c.log.filter, "info");
    }

    #[test]
    fn env_overrides_file() {
        let c = load(
            Some("[limits]\nmax_body_bytes = 10\n[server]\nrequest_timeout_ms = 7\n"),
            &[("MICRONODE_MAX_BODY_BYTES", "20")],
        )
        .expect("valid");
        assert_eq!(c.limits.max_body_bytes, 20);
        assert_eq!(c.server.request_timeout_ms, 7);
    }

    #[test]
    fn prefixed_bind_addr_wins_over_alias() {
        let c = load(
            None,
            &[
                ("BIND_ADDR", "127.0.0.1:1"),
                ("MICRONODE_BIND_ADDR", "127.0.0.1:2"),
            ],
        )
        .expect("valid");
        assert_eq!(c.server.bind_addr.port(), 2);
        let c = load(None, &[("BIND_ADDR", "127.0.0.1:3")]).expect("valid");
        assert_eq!(c.server.bind_addr.port(), 3);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&str, &str)] = &[
            ("MICRONODE_MAX_BODY_BYTES", "abc"),
            ("MICRONODE_BIND_ADDR", "127.0.0.1:99999"),
            ("MICRONODE_STORAGE_ENGINE", "rocks"),
            ("MICRONODE_DURABILITY", "sometimes"),
            ("MICRONODE_DEV_ROUTES", "maybe"),
            ("MICRONODE_LOG_FORMAT", "xml"),
        ];
        for (var, val) in cases {
            let err = load(None, &[(var, val)]).expect_err(var);
            assert!(err.to_string().contains(var), "{err} should name {var}");
        }
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let err = load(None, &[("MICRONODE_READY_ERROR_GATE_PCT", "101")]).expect_err("range");
        assert!(err.to_string().contains("MICRONODE_READY_ERROR_GATE_PCT"));
        let err = load(None, &[("MICRONODE_REQUEST_TIMEOUT_MS", "0")]).expect_err("range");
        assert!(err.to_string().contains("request_timeout_ms"));
        let err = load(None, &[("RUST_LOG", "info,[[[")]).expect_err("filter");
        assert!(err.to_string().contains("RUST_LOG"));
    }

    #[test]
    fn unknown_toml_key_is_refused() {
        let err = load(Some("[limits]\nmax_bodybytes = 1\n"), &[]).expect_err("unknown");
        assert!(err.to_string().contains("max_bodybytes"), "{err}");
        let err = load(Some("[nope]\n"), &[]).expect_err("unknown section");
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn amnesia_forces_mem_and_refuses_explicit_sled() {
        let c = load(None, &[("MICRONODE_AMNESIA", "1")]).expect("valid");
        assert_eq!(c.storage.effective_engine(), Engine::Mem);
        let err = load(
            None,
            &[
                ("MICRONODE_AMNESIA", "1"),
                ("MICRONODE_STORAGE_ENGINE", "sled"),
            ],
        )
        .expect_err("conflict");
        assert!(err.to_string().contains("MICRONODE_STORAGE_ENGINE"));
    }

    #[test]
    fn rendered_config_parses_back_to_itself() {
        let c = load(None, &[("MICRONODE_RL_RPS", "5")]).expect("valid");
        let back = Config::from_toml(&c.to_toml()).expect("round trip");
        assert_eq!(back, c);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any TOML text: parsed or refused with a message, never a panic; what parses and
        /// validates renders back to the same config.
        #[test]
        fn any_toml_text_is_parsed_or_refused(text in "\\PC{0,200}") {
            if let Ok(cfg) = Config::from_toml(&text)
                && cfg.validate().is_ok()
            {
                prop_assert_eq!(Config::from_toml(&cfg.to_toml()), Ok(cfg));
            }
        }

        /// Section-shaped TOML with plausible keys and junk values.
        #[test]
        fn toml_sections_with_junk_values(
            section in prop::sample::select(vec!["server", "limits", "rate_limit", "storage", "ready", "dev", "log"]),
            key in "[a-z_]{1,30}",
            value in prop::sample::select(vec!["0", "-1", "1e99", "\"x\"", "true", "[]", "{}", "18446744073709551616", "\"127.0.0.1:0\""]),
        ) {
            let text = format!("[{section}]\n{key} = {value}\n");
            if let Ok(cfg) = Config::from_toml(&text) {
                let _ = cfg.validate();
            }
        }

        /// Any value for any variable: applied or refused naming that variable, never a panic.
        #[test]
        fn any_env_value_is_applied_or_named(
            var in prop::sample::select(ENV_VARS.to_vec()),
            value in "\\PC{0,24}|[0-9]{1,25}|-[0-9]{1,5}",
        ) {
            prop_assume!(var != "MICRONODE_CONFIG");
            let value2 = value.clone();
            match Config::load(None, move |k| (k == var).then(|| value2.clone())) {
                Ok(cfg) => prop_assert!(cfg.validate().is_ok()),
                Err(ConfigError::Env { var: named, .. }) => prop_assert_eq!(named, var),
                Err(ConfigError::Invalid { key, .. }) => {
                    // Range errors name `section.key (VAR)`; the alias names the prefixed var.
                    let shown = if var == "BIND_ADDR" { "MICRONODE_BIND_ADDR" } else { var };
                    prop_assert!(key.contains(shown) || key.contains(var), "{} for {}", key, var);
                }
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
