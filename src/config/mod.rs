//! Configuration: built-in defaults < TOML file < environment.
//!
//! Every knob is declared once, in the `knobs!` block below: its field, type, default, TOML key
//! (`section.field`), environment variable, allowed range and doc line. From that one entry come
//! the section structs and their `Default`s, the [`KNOBS`] table, environment parsing
//! ([`Config::load`]), range validation ([`Config::validate`]), the knob list of
//! `micronode --help` and the table in docs/CONFIG.md (a test fails when the file and the
//! declaration disagree; `micronode config-docs` prints the table).
//!
//! Anything unknown, unparsable or out of range is a [`ConfigError`] that names the key or
//! variable; the binary turns it into exit code 2.
//!
//! # Adding a knob
//! 1. One entry in the right section of `knobs!` below (a new TOML section is one more
//!    `[name] NameCfg { … }` block there).
//! 2. Regenerate the table in docs/CONFIG.md: `cargo run -q -- config-docs`.
//! 3. Read it where it is used: `cfg.section.field`.

mod docs;
mod knob;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use docs::{DOCS_BEGIN, DOCS_END, docs_table};
pub use knob::Knob;
use knob::{KnobEnum, KnobValue, knobs};

/// Why a TLS certificate without its key (or a key without its certificate) is refused.
const TLS_PAIR: &str =
    "MICRONODE_TLS_CERT and MICRONODE_TLS_KEY (tls.cert, tls.key) must be set together, or neither";

/// One day in milliseconds: the upper bound of most time knobs.
const DAY_MS: u64 = 86_400_000;

/// The variable naming a config file when `--config` is not given (not a knob: it decides
/// where knobs come from).
pub const CONFIG_FILE_ENV: &str = "MICRONODE_CONFIG";

knobs! {
    /// Listener, connections and protocol limits.
    [server] ServerCfg {
        /// Listen address, `IP:port` or `host:port`; port 0 = any free port, logged at boot.
        /// A host name is resolved once, at boot, and its first address taken.
        bind_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 5310)),
            env "MICRONODE_BIND_ADDR" | "BIND_ADDR",
            serde(deserialize_with = "knob::deserialize_socket_addr");
        /// Runtime worker threads; 0 = one per core.
        workers: usize = 0, env "MICRONODE_WORKERS", range 0..=1024;
        /// Open connections; when spent the accept loop waits for a slot.
        max_connections: usize = 10_000, env "MICRONODE_MAX_CONNECTIONS", range 1..=1_000_000;
        /// A connection must send a complete request head within this.
        /// The first one (also a connection that sends nothing) and, on HTTP/1, every next one
        /// once the previous answer is out (so idle keep-alive and slowloris heads); enforced
        /// by a per-connection watchdog, so the close lands within 1–1¼× the value.
        header_read_timeout_ms: u64 = 5_000,
            env "MICRONODE_HEADER_READ_TIMEOUT_MS", range 1..=DAY_MS;
        /// Longest stall between body chunks → 408 `body_timeout`.
        body_read_timeout_ms: u64 = 10_000,
            env "MICRONODE_BODY_READ_TIMEOUT_MS", range 1..=DAY_MS;
        /// Feature-route time bound → 503 `timeout`.
        request_timeout_ms: u64 = 5_000, env "MICRONODE_REQUEST_TIMEOUT_MS", range 1..=DAY_MS;
        /// Drain time on SIGTERM/SIGINT.
        shutdown_grace_ms: u64 = 10_000, env "MICRONODE_SHUTDOWN_GRACE_MS", range 0..=DAY_MS;
        /// A connection with no new request for this long is closed (HTTP/2: GOAWAY).
        /// Within 1–1¼× the value; idle HTTP/1 keep-alive is closed sooner by the header
        /// timeout.
        idle_timeout_ms: u64 = 60_000, env "MICRONODE_IDLE_TIMEOUT_MS", range 1..=DAY_MS;
        /// HTTP/1 header fields per request; past it hyper answers a bare 431.
        h1_max_headers: usize = 100, env "MICRONODE_H1_MAX_HEADERS", range 1..=10_000;
        /// HTTP/1 connection read buffer; a request head larger than it gets hyper's bare 431.
        /// hyper refuses a buffer under 8 KiB.
        read_buffer_bytes: usize = 65_536,
            env "MICRONODE_READ_BUFFER_BYTES", range 8_192..=16 << 20;
        /// Summed header fields (`name: value\r\n`) → 431 `header_too_large` (both protocols).
        max_header_bytes: usize = 61_440,
            env "MICRONODE_MAX_HEADER_BYTES", range 256..=16 << 20;
        /// Path + query → 414 `uri_too_long` (both protocols).
        max_uri_bytes: usize = 8_192, env "MICRONODE_MAX_URI_BYTES", range 16..=65_534;
        /// HTTP/2 streams open at once per connection; more are refused (`REFUSED_STREAM`).
        h2_max_concurrent_streams: u32 = 100,
            env "MICRONODE_H2_MAX_CONCURRENT_STREAMS", range 1..=100_000;
        /// Largest decoded HTTP/2 header list (advertised in SETTINGS).
        h2_max_header_list_bytes: u32 = 65_536,
            env "MICRONODE_H2_MAX_HEADER_LIST_BYTES", range 256..=16 << 20;
        /// Streams a peer may reset before we accept them (rapid reset), per connection.
        /// Past it: GOAWAY `ENHANCE_YOUR_CALM`. Always finite: there is no "unlimited".
        h2_max_pending_reset_streams: usize = 20,
            env "MICRONODE_H2_MAX_PENDING_RESET_STREAMS", range 1..=100_000;
        /// Streams we may reset for peer errors per connection before GOAWAY.
        /// Always finite.
        h2_max_local_error_reset_streams: usize = 1_024,
            env "MICRONODE_H2_MAX_LOCAL_ERROR_RESET_STREAMS", range 1..=1_000_000;
    }

    /// Request size and concurrency limits of the feature routes.
    [limits] LimitsCfg {
        /// Body cap → 413 `body_cap`.
        max_body_bytes: u64 = 1_048_576, env "MICRONODE_MAX_BODY_BYTES", range 0..=1 << 30;
        /// Accept a single `gzip` body, decoded while streaming.
        allow_compressed: bool = false, env "MICRONODE_ALLOW_COMPRESSED";
        /// Decoded-size cap for gzip bodies → 413.
        decode_abs_cap_bytes: u64 = 4_194_304,
            env "MICRONODE_DECODE_ABS_CAP_BYTES", range 1..=1 << 30;
        /// In-flight KV writes (PUT/DELETE) → 429 `concurrency`.
        kv_max_inflight: usize = 512, env "MICRONODE_KV_MAX_INFLIGHT", range 1..=1_000_000;
    }

    /// The global token bucket in front of the feature routes.
    [rate_limit] RateLimitCfg {
        /// Tokens per second of the global bucket; 0 turns it off.
        rps: u32 = 0, env "MICRONODE_RL_RPS", range 0..=100_000_000;
        /// Bucket depth; 0 means one second's worth (`rps`).
        burst: u32 = 0, env "MICRONODE_RL_BURST", range 0..=100_000_000;
        /// Delay before a 429 is sent, holding no permit.
        tarpit_ms: u64 = 0, env "MICRONODE_RL_TARPIT_MS", range 0..=60_000;
    }

    /// The storage engine and its durability (docs/STORAGE.md).
    [storage] StorageCfg {
        /// Engine; unset means `sled` (`mem` in amnesia mode).
        /// Kept optional so that an explicit `sled` together with amnesia can be refused.
        engine: Option<Engine> = None, env "MICRONODE_STORAGE_ENGINE",
            check |cfg, engine| {
                if cfg.storage.amnesia && *engine == Some(Engine::Sled) {
                    return Err("engine \"sled\" writes to disk, which amnesia mode \
                                (MICRONODE_AMNESIA=1) forbids".to_owned());
                }
                if cfg.storage.amnesia && *engine == Some(Engine::Postgres) {
                    return Err("engine \"postgres\" keeps data in a database, which amnesia \
                                mode (MICRONODE_AMNESIA=1) forbids".to_owned());
                }
                Ok(())
            },
            serde(skip_serializing_if = "Option::is_none");
        /// sled directory; its parent must exist. Required only when the engine is `sled`.
        path: PathBuf = PathBuf::from("./micronode-data"), env "MICRONODE_STORAGE_PATH",
            check |cfg, path| {
                if cfg.storage.effective_engine() == Engine::Sled && path.as_os_str().is_empty() {
                    return Err("must not be empty when the engine is sled".to_owned());
                }
                Ok(())
            };
        /// What a 2xx write waits for: `sync` (fsynced) or `periodic` (see docs/STORAGE.md).
        durability: Durability = Durability::Sync, env "MICRONODE_DURABILITY";
        /// Flush period in `periodic` mode.
        flush_every_ms: u64 = 500, env "MICRONODE_FLUSH_EVERY_MS", range 1..=DAY_MS;
        /// sled page cache.
        cache_bytes: u64 = 64 * 1024 * 1024,
            env "MICRONODE_STORAGE_CACHE_BYTES", range 1 << 20..=1 << 40;
        /// RAM only: forces `mem`; an explicit `sled` engine is a config error.
        amnesia: bool = false, env "MICRONODE_AMNESIA";
    }

    /// The `postgres` engine: N nodes over one database (docs/STORAGE.md, "PostgreSQL engine").
    [postgres in storage] PostgresCfg {
        /// Connection URL, `postgres://user[:password]@host[:port]/database`.
        /// Required when the engine is `postgres`. `?sslmode=verify-full` (or `require`)
        /// connects over TLS and verifies the server's certificate and host name, `verify-ca`
        /// its certificate only; without them, plain TCP. `--check-config` prints the URL as
        /// given, password included.
        url: String = String::new(), env "MICRONODE_PG_URL",
            check |cfg, url| {
                if cfg.storage.effective_engine() == Engine::Postgres && url.trim().is_empty() {
                    return Err("the postgres engine needs a database: set MICRONODE_PG_URL \
                                (postgres://user@host:port/database)".to_owned());
                }
                Ok(())
            };
        /// Connections in this node's pool; every write holds one until it commits.
        pool_size: usize = 16, env "MICRONODE_PG_POOL_SIZE", range 1..=1_024;
        /// Connecting, and waiting for a pooled connection; past it the call is 503.
        connect_timeout_ms: u64 = 2_000,
            env "MICRONODE_PG_CONNECT_TIMEOUT_MS", range 1..=600_000;
        /// PEM CA certificate(s) for TLS to the database.
        /// With TLS on (`sslmode=verify-full`, `verify-ca` or `require` in the URL), the
        /// database's certificate must chain to one of them; empty = the system's trusted roots.
        ca_file: PathBuf = PathBuf::new(), env "MICRONODE_PG_CA_FILE";
        /// The schema holding the engine's tables, created and migrated at boot.
        /// Lowercase letters, digits and `_`, starting with a letter or `_`, at most 63.
        schema: String = "micronode".to_owned(), env "MICRONODE_PG_SCHEMA",
            check |_, schema| valid_pg_schema(schema);
    }

    /// The readiness probe.
    [ready] ReadyCfg {
        /// `/readyz` time bound.
        timeout_ms: u64 = 1_000, env "MICRONODE_READY_TIMEOUT_MS", range 1..=DAY_MS;
        /// `/readyz` concurrency cap.
        max_inflight: usize = 1_024, env "MICRONODE_READY_MAX_INFLIGHT", range 1..=1_000_000;
        /// Dev hook: `/readyz` sleeps this long before answering.
        sleep_ms: u64 = 0, env "MICRONODE_READY_SLEEP_MS", range 0..=DAY_MS;
        /// 5xx share (percent) at or above which `/readyz` is 503; 0 = gate off.
        error_gate_pct: u32 = 0, env "MICRONODE_READY_ERROR_GATE_PCT", range 0..=100;
        /// Length of the sliding window the error share is taken over.
        error_window_secs: u64 = 10, env "MICRONODE_READY_ERROR_WINDOW_SECS", range 1..=3_600;
    }

    /// Development and benchmark switches; all off in production.
    [dev] DevCfg {
        /// Expose `/dev/*`.
        routes: bool = false, env "MICRONODE_DEV_ROUTES";
        /// Per-route series for dev routes too, and `GET /dev/latency`.
        /// `/dev/latency` gives service time per route from HdrHistograms (count, mean,
        /// p50/p90/p99/p99.9/max in µs); `POST /dev/latency/reset` clears them.
        metrics: bool = false, env "MICRONODE_DEV_METRICS";
        /// Force `/readyz` ready (benches only).
        ready: bool = false, env "MICRONODE_DEV_READY";
    }

    /// TLS on the listener (docs/SECURITY.md). Files are re-read on SIGHUP.
    [tls] TlsCfg {
        /// PEM certificate chain (leaf first); with `key`, turns TLS on. Empty = plain TCP.
        /// Set both `cert` and `key`, or neither.
        cert: PathBuf = PathBuf::new(), env "MICRONODE_TLS_CERT",
            check |cfg, cert| {
                if !cert.as_os_str().is_empty() && cfg.tls.key.as_os_str().is_empty() {
                    return Err(TLS_PAIR.to_owned());
                }
                Ok(())
            };
        /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
        key: PathBuf = PathBuf::new(), env "MICRONODE_TLS_KEY",
            check |cfg, key| {
                if !key.as_os_str().is_empty() && cfg.tls.cert.as_os_str().is_empty() {
                    return Err(TLS_PAIR.to_owned());
                }
                Ok(())
            };
        /// PEM CA certificate(s); when set, clients must present a certificate it signed.
        /// Mutual TLS: a handshake without one, or with one from another CA, is refused.
        client_ca: PathBuf = PathBuf::new(), env "MICRONODE_TLS_CLIENT_CA",
            check |cfg, ca| {
                if !ca.as_os_str().is_empty() && cfg.tls.cert.as_os_str().is_empty() {
                    return Err("a client CA needs TLS on: set MICRONODE_TLS_CERT and \
                                MICRONODE_TLS_KEY too".to_owned());
                }
                Ok(())
            };
        /// Post-quantum key exchange: `off`, `preferred` or `required`.
        /// `off`: X25519, P-256, P-384. `preferred`: the X25519MLKEM768 hybrid when the client
        /// offers it, else those. `required`: the hybrid only, TLS 1.3 only.
        pq: PqMode = PqMode::Preferred, env "MICRONODE_TLS_PQ";
    }

    /// The change feed, `GET /v1/watch/{bucket}` (docs/API.md, "Watch").
    [watch] WatchCfg {
        /// Events kept in memory for resuming watchers.
        /// A resume point (`since`, `Last-Event-ID`) older than the oldest kept event is 410
        /// `compacted`. Values count against a 64 MiB bound as well.
        history: usize = 100_000, env "MICRONODE_WATCH_HISTORY", range 1..=10_000_000;
        /// A `: keep-alive` comment line on an idle stream every this many milliseconds.
        keepalive_ms: u64 = 15_000, env "MICRONODE_WATCH_KEEPALIVE_MS", range 100..=DAY_MS;
        /// Events a watcher may fall behind by.
        /// Past it the stream gets `event: overflow` with the revision to resume from, and
        /// ends.
        buffer: usize = 1_024, env "MICRONODE_WATCH_BUFFER", range 1..=1_000_000;
        /// Open watch streams on this node; past it a new watch is 429 `concurrency`.
        max_watchers: usize = 10_000, env "MICRONODE_MAX_WATCHERS", range 1..=1_000_000;
    }

    /// Transactions, `POST /v1/txn` (docs/API.md, "Transactions").
    [txn] TxnCfg {
        /// Compares plus ops of both branches of one transaction; more is 400.
        max_ops: usize = 64, env "MICRONODE_TXN_MAX_OPS", range 1..=64;
    }

    /// Capability tokens (docs/SECURITY.md, "Tokens").
    [auth] AuthCfg {
        /// Whether routes need a token: `off` or `on`.
        /// With `on`, every route but `/healthz`, `/readyz` and CORS preflights needs
        /// `Authorization: Bearer mn1_…` (docs/SECURITY.md, "Enforcement").
        mode: AuthMode = AuthMode::Off, env "MICRONODE_AUTH",
            check |cfg, mode| {
                if *mode == AuthMode::On && cfg.auth.keys_file.as_os_str().is_empty() {
                    return Err("auth needs a key file: set MICRONODE_AUTH_KEYS_FILE \
                                (micronode auth init --keys FILE makes one)".to_owned());
                }
                Ok(())
            };
        /// The key ring (TOML, mode 0600) that verifies tokens; re-read on SIGHUP.
        keys_file: PathBuf = PathBuf::new(), env "MICRONODE_AUTH_KEYS_FILE";
        /// Clock leeway for a token's `not_before` / `not_after`, in milliseconds.
        leeway_ms: u64 = 0, env "MICRONODE_AUTH_LEEWAY_MS", range 0..=3_600_000;
        /// Serve `/metrics`, `/version` and `/openapi.json` without a token when auth is on.
        open_metrics: bool = false, env "MICRONODE_AUTH_OPEN_METRICS";
        /// Allow a non-loopback bind address without both auth and TLS (warned at every start).
        insecure: bool = false, env "MICRONODE_INSECURE";
    }

    /// The audit trail (docs/SECURITY.md, "Audit trail"). Both need a restart to change.
    [audit] AuditCfg {
        /// The audit log: hash-chained JSON lines, one per write, admin op, 401/403 and reload.
        /// Empty = no audit trail. Opened (created 0600) at boot; a file that cannot be opened
        /// is a configuration error. Rotated files are `<path>.000001`, … beside it.
        path: PathBuf = PathBuf::new(), env "MICRONODE_AUDIT_PATH";
        /// Size past which the audit log is rotated (the chain runs on into the new file).
        rotate_bytes: u64 = 64 * 1024 * 1024,
            env "MICRONODE_AUDIT_ROTATE_BYTES", range 1..=1 << 40;
    }

    /// Cross-origin requests from browsers (docs/API.md, "CORS").
    [cors] CorsCfg {
        /// Origins allowed to call the API from a browser: comma-separated exact origins.
        /// Each is `scheme://host[:port]` as a browser sends it in `Origin`, or `*` for any;
        /// empty = CORS off (no CORS headers, `OPTIONS` is 405).
        origins: String = String::new(), env "MICRONODE_CORS_ORIGINS",
            check |_, origins| parse_origins(origins).map(drop);
    }

    /// Logging to stderr.
    [log] LogCfg {
        /// Log line format on stderr: `text` (coloured only on a terminal) or `json`.
        format: LogFormat = LogFormat::Text, env "MICRONODE_LOG_FORMAT";
        /// A `tracing` filter (the `RUST_LOG` syntax); per-request lines are `debug`.
        filter: String = "info".to_owned(), env "RUST_LOG",
            check |_, filter| {
                tracing_subscriber::EnvFilter::try_new(filter)
                    .map(drop)
                    .map_err(|e| e.to_string())
            };
    }
}

/// The CORS origins of `cors.origins`: `None` = any (`*`), else the exact list. An origin is
/// `http://` or `https://` followed by a host (and an optional port), nothing else.
pub fn parse_origins(raw: &str) -> Result<Option<Vec<String>>, String> {
    let mut out = Vec::new();
    for o in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        if o == "*" {
            return Ok(None);
        }
        let rest = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
            .ok_or_else(|| {
                format!("{o:?} is not an origin: it must start with http:// or https://")
            })?;
        let ok = !rest.is_empty()
            && rest.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
            });
        if !ok {
            return Err(format!(
                "{o:?} is not an origin: scheme://host[:port], no path, no trailing slash"
            ));
        }
        out.push(o.to_owned());
    }
    Ok(Some(out))
}

/// Whether `schema` is a PostgreSQL schema name the engine accepts (it is spliced into SQL,
/// so only plain lowercase identifiers: `[a-z_][a-z0-9_]{0,62}`).
pub fn valid_pg_schema(schema: &str) -> Result<(), String> {
    let ok = schema.len() <= 63
        && schema
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{schema:?} is not a schema name: lowercase letters, digits and _, starting with a \
             letter or _, at most 63 bytes"
        ))
    }
}

/// The limits of one tenant, `[tenants.<id>]`; `[tenants.default]` is both the tenant of
/// requests without a token and the limits of every tenant without a section of its own.
/// Unset = unlimited. Changing them needs a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantCfg {
    /// Requests per second (a token bucket per tenant) → 429 `quota`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rps: Option<u32>,
    /// Bucket depth; unset = one second's worth (`rps`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Key and value bytes stored → 507 `quota_storage`, nothing stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Keys stored → 507 `quota_storage`, nothing stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<u64>,
    /// Open watch streams → 429 `quota`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_watchers: Option<usize>,
}

/// The tenant of requests without a token (auth off), whose section also gives the limits of
/// tenants without their own.
pub const DEFAULT_TENANT: &str = "default";

/// Whether `id` is a tenant name: 1–63 chars of `[a-z0-9._-]`.
pub fn valid_tenant(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

impl Config {
    /// The limits that apply to `tenant`: its own section, else `[tenants.default]`.
    pub fn tenant_limits(&self, tenant: &str) -> Option<&TenantCfg> {
        self.tenants
            .get(tenant)
            .or_else(|| self.tenants.get(DEFAULT_TENANT))
    }

    fn validate_tenants(&self) -> Result<(), ConfigError> {
        for (id, t) in &self.tenants {
            let bad = |cause: String| ConfigError::Tenant {
                id: id.clone(),
                cause,
            };
            if !valid_tenant(id) {
                return Err(bad(
                    "a tenant id is 1-63 characters of [a-z0-9._-]".to_owned()
                ));
            }
            if t.rps == Some(0) {
                return Err(bad(
                    "rps must be at least 1 (leave it out for no limit)".to_owned()
                ));
            }
            if t.burst.is_some() && t.rps.is_none() {
                return Err(bad("burst needs rps".to_owned()));
            }
            if t.burst == Some(0) {
                return Err(bad("burst must be at least 1".to_owned()));
            }
        }
        Ok(())
    }
}

/// The knobs a SIGHUP reload applies without a restart (docs/CONFIG.md marks them). A change
/// to any other knob is logged as needing a restart and left alone.
pub const LIVE_KNOBS: &[&str] = &[
    "server.header_read_timeout_ms",
    "server.body_read_timeout_ms",
    "server.request_timeout_ms",
    "server.shutdown_grace_ms",
    "server.idle_timeout_ms",
    "limits.max_body_bytes",
    "limits.allow_compressed",
    "limits.decode_abs_cap_bytes",
    "limits.kv_max_inflight",
    "rate_limit.rps",
    "rate_limit.burst",
    "rate_limit.tarpit_ms",
    "ready.max_inflight",
    "ready.timeout_ms",
    "watch.keepalive_ms",
    "watch.buffer",
    "watch.max_watchers",
    "txn.max_ops",
    "cors.origins",
    "log.filter",
    "auth.leeway_ms",
    "auth.open_metrics",
];

/// Which key exchanges TLS offers (docs/SECURITY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PqMode {
    /// Classical groups only.
    Off,
    /// The X25519MLKEM768 hybrid first, classical groups after it.
    Preferred,
    /// The hybrid only; TLS 1.3 only.
    Required,
}

impl KnobEnum for PqMode {
    const ALL: &'static [Self] = &[Self::Off, Self::Preferred, Self::Required];
}

impl TlsCfg {
    /// Whether the listener speaks TLS.
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }
}

/// A storage engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Sled,
    Mem,
    Postgres,
}

/// Whether tokens are required (docs/SECURITY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Off,
    On,
}

impl KnobEnum for AuthMode {
    const ALL: &'static [Self] = &[Self::Off, Self::On];
}

impl KnobEnum for Engine {
    const ALL: &'static [Self] = &[Self::Sled, Self::Mem, Self::Postgres];
}

/// What a 2xx write waits for (docs/STORAGE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Sync,
    Periodic,
}

impl KnobEnum for Durability {
    const ALL: &'static [Self] = &[Self::Sync, Self::Periodic];
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl KnobEnum for LogFormat {
    const ALL: &'static [Self] = &[Self::Text, Self::Json];
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

/// Why a configuration was refused. Each variant names the key or variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config file {path}: {cause}")]
    File { path: String, cause: String },
    /// The config file is not valid TOML for our schema (unknown key, wrong type, bad value).
    #[error("config file {path}: {cause}")]
    Toml { path: String, cause: String },
    /// An environment variable could not be parsed.
    #[error("environment variable {var}: {cause}")]
    Env { var: &'static str, cause: String },
    /// A `[tenants.<id>]` section is invalid.
    #[error("config section [tenants.{id}]: {cause}")]
    Tenant { id: String, cause: String },
    /// A value parsed but is out of range or inconsistent; `key` is `section.key (ENV_VAR)`.
    #[error("config key {key}: {cause}")]
    Invalid { key: &'static str, cause: String },
}

/// Every environment variable Micronode reads: the config file variable, then each knob's
/// variable and its aliases, in declaration order.
pub fn env_vars() -> impl Iterator<Item = &'static str> {
    std::iter::once(CONFIG_FILE_ENV).chain(
        KNOBS
            .iter()
            .flat_map(|k| std::iter::once(k.env).chain(k.aliases.iter().copied())),
    )
}

impl Config {
    /// Loads defaults < file < env. `env` looks a variable up (the process environment in
    /// the binary, a map in tests, so parallel tests never share process state).
    pub fn load(
        file: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = file.map(str::to_owned).or_else(|| env(CONFIG_FILE_ENV));
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

    /// Parses TOML text; unknown keys are refused. The postgres engine's section is written
    /// `[storage.postgres]`; it is read into [`Config::postgres`].
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let hint = |e: toml::de::Error| e.message().trim().to_owned() + &span_hint(&e, text);
        let mut table: toml::Table = toml::from_str(text).map_err(hint)?;
        if table.contains_key("postgres") {
            return Err(
                "unknown section [postgres]: the postgres engine's section is \
                        [storage.postgres]"
                    .to_owned(),
            );
        }
        let nested = table
            .get_mut("storage")
            .and_then(toml::Value::as_table_mut)
            .and_then(|storage| storage.remove("postgres"));
        let Some(pg) = nested else {
            // The common case, parsed from the text so errors point at their line.
            return toml::from_str(text).map_err(hint);
        };
        let postgres = PostgresCfg::deserialize(pg)
            .map_err(|e| format!("[storage.postgres]: {}", e.message().trim()))?;
        let mut cfg = Config::deserialize(table).map_err(|e| e.message().trim().to_owned())?;
        cfg.postgres = postgres;
        Ok(cfg)
    }

    /// Applies each knob's variable (or, when it is unset, the first alias that is set).
    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for knob in KNOBS {
            let found = std::iter::once(knob.env)
                .chain(knob.aliases.iter().copied())
                .find_map(|var| env(var).map(|raw| (var, raw)));
            if let Some((var, raw)) = found {
                (knob.set)(self, &raw).map_err(|cause| ConfigError::Env { var, cause })?;
            }
        }
        Ok(())
    }

    /// Each knob's range and own check (a check may look at other knobs), in declaration
    /// order. Keys are named as `section.key (ENV_VAR)`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for knob in KNOBS {
            (knob.check)(self).map_err(|cause| ConfigError::Invalid {
                key: knob.label,
                cause,
            })?;
        }
        self.validate_tenants()
    }

    /// The effective config as TOML, for `--check-config`.
    pub fn to_toml(&self) -> String {
        let render = || -> Result<String, String> {
            let mut table = toml::Table::try_from(self).map_err(|e| e.to_string())?;
            if let Some(pg) = table.remove("postgres")
                && let Some(storage) = table.get_mut("storage").and_then(toml::Value::as_table_mut)
            {
                storage.insert("postgres".to_owned(), pg);
            }
            toml::to_string(&table).map_err(|e| e.to_string())
        };
        render().unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// The secure default: a bind address others can reach needs auth and TLS both, unless
    /// `MICRONODE_INSECURE=1` says otherwise. `Err` names the fix.
    pub fn exposure(&self) -> Result<(), String> {
        let open = !self.server.bind_addr.ip().is_loopback();
        let protected = self.auth.mode == AuthMode::On && self.tls.enabled();
        if open && !protected && !self.auth.insecure {
            return Err(format!(
                "binding {} (not loopback) needs MICRONODE_AUTH=on and TLS \
                 (MICRONODE_TLS_CERT/KEY), or MICRONODE_INSECURE=1 to serve it unprotected",
                self.server.bind_addr
            ));
        }
        Ok(())
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

    /// The defaults are exactly the documented ones (docs/CONFIG.md).
    #[test]
    fn defaults_match_the_documented_table() {
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
    fn tenant_sections_parse_fall_back_to_default_and_are_checked() {
        let c = load(
            Some(
                "[tenants.default]\nrps = 100\nmax_keys = 10\n\
                 [tenants.acme]\nmax_bytes = 1048576\nmax_watchers = 2\n",
            ),
            &[],
        )
        .expect("valid");
        assert_eq!(
            c.tenant_limits("acme").and_then(|t| t.max_bytes),
            Some(1 << 20)
        );
        assert_eq!(
            c.tenant_limits("acme").and_then(|t| t.rps),
            None,
            "own section only"
        );
        assert_eq!(c.tenant_limits("other").and_then(|t| t.max_keys), Some(10));
        assert!(load(None, &[]).expect("valid").tenant_limits("x").is_none());
        for (toml, says) in [
            ("[tenants.Acme]\n", "[a-z0-9._-]"),
            ("[tenants.a]\nrps = 0\n", "rps"),
            ("[tenants.a]\nburst = 5\n", "burst needs rps"),
            ("[tenants.a]\nmax_byte = 5\n", "max_byte"),
        ] {
            let err = load(Some(toml), &[]).expect_err(toml);
            assert!(err.to_string().contains(says), "{toml}: {err}");
        }
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

    /// Each knob's rendered default, fed back through its variable, changes nothing: what
    /// `--help` and docs/CONFIG.md show is what the parser reads.
    #[test]
    fn every_rendered_default_parses_back_through_its_variable() {
        for knob in KNOBS {
            let shown = knob.default_text();
            if shown.is_empty() {
                continue; // an unset optional value has no spelling
            }
            let c = load(None, &[(knob.env, &shown)])
                .unwrap_or_else(|e| panic!("{}={shown:?} refused: {e}", knob.env));
            assert_eq!(c, Config::default(), "{}={shown:?}", knob.env);
        }
    }

    /// Every value an enum knob lists as allowed is accepted, and nothing else.
    #[test]
    fn enum_knobs_accept_exactly_their_listed_values() {
        for (var, names) in [
            (
                "MICRONODE_STORAGE_ENGINE",
                Engine::ALL
                    .iter()
                    .map(KnobValue::render)
                    .collect::<Vec<_>>(),
            ),
            (
                "MICRONODE_DURABILITY",
                Durability::ALL.iter().map(KnobValue::render).collect(),
            ),
            (
                "MICRONODE_LOG_FORMAT",
                LogFormat::ALL.iter().map(KnobValue::render).collect(),
            ),
            (
                "MICRONODE_TLS_PQ",
                PqMode::ALL.iter().map(KnobValue::render).collect(),
            ),
        ] {
            for name in &names {
                // The postgres engine needs a URL; the value itself is all this test judges.
                let url = ("MICRONODE_PG_URL", "postgres://u@127.0.0.1/db");
                load(None, &[(var, name), url]).unwrap_or_else(|e| panic!("{var}={name}: {e}"));
            }
            let err = load(None, &[(var, "nope")]).expect_err(var);
            for name in &names {
                assert!(
                    err.to_string().contains(name.as_str()),
                    "{err} should list {name}"
                );
            }
        }
    }

    /// Booleans: the documented words in any case; the refusal lists exactly those words.
    #[test]
    fn booleans_accept_the_documented_words() {
        for (raw, want) in [("1", true), ("True", true), ("YES", true), ("on", true)] {
            let c = load(None, &[("MICRONODE_DEV_READY", raw)]).expect(raw);
            assert_eq!(c.dev.ready, want, "{raw}");
        }
        for (raw, want) in [
            ("0", false),
            ("FALSE", false),
            ("no", false),
            ("Off", false),
        ] {
            let c = load(
                None,
                &[("MICRONODE_DEV_READY", "1"), ("MICRONODE_AMNESIA", raw)],
            )
            .expect(raw);
            assert_eq!(c.storage.amnesia, want, "{raw}");
        }
        let err = load(None, &[("MICRONODE_DEV_READY", "y")]).expect_err("y");
        assert!(
            err.to_string()
                .ends_with(&format!("expected {}", knob::BOOL_WORDS)),
            "{err}"
        );
    }

    /// A host name in the bind address resolves at load time, from env and from TOML.
    #[test]
    fn bind_address_accepts_a_host_name() {
        let c = load(None, &[("MICRONODE_BIND_ADDR", "localhost:7")]).expect("localhost");
        assert!(c.server.bind_addr.ip().is_loopback());
        assert_eq!(c.server.bind_addr.port(), 7);
        let c = load(Some("[server]\nbind_addr = \"localhost:8\"\n"), &[]).expect("toml");
        assert!(c.server.bind_addr.ip().is_loopback());
        assert_eq!(c.server.bind_addr.port(), 8);
        for bad in [
            "localhost",
            "localhost:",
            ":80",
            "local host:80",
            "-x:80",
            "a..b:80",
        ] {
            let err = load(None, &[("MICRONODE_BIND_ADDR", bad)]).expect_err(bad);
            assert!(err.to_string().contains("MICRONODE_BIND_ADDR"), "{err}");
        }
    }

    /// TLS certificate and key come together; a client CA needs them; both named on error.
    #[test]
    fn tls_cert_and_key_come_together() {
        let c = load(None, &[]).expect("defaults");
        assert!(!c.tls.enabled());
        assert_eq!(c.tls.pq, PqMode::Preferred);
        let c = load(
            None,
            &[
                ("MICRONODE_TLS_CERT", "c.pem"),
                ("MICRONODE_TLS_KEY", "k.pem"),
            ],
        )
        .expect("both");
        assert!(c.tls.enabled());
        for one in ["MICRONODE_TLS_CERT", "MICRONODE_TLS_KEY"] {
            let err = load(None, &[(one, "x.pem")]).expect_err(one).to_string();
            assert!(
                err.contains("MICRONODE_TLS_CERT") && err.contains("MICRONODE_TLS_KEY"),
                "{err}"
            );
        }
        let err = load(None, &[("MICRONODE_TLS_CLIENT_CA", "ca.pem")]).expect_err("ca alone");
        assert!(err.to_string().contains("MICRONODE_TLS_CLIENT_CA"), "{err}");
        let err = load(Some("[tls]\ncert = \"c.pem\"\n"), &[]).expect_err("toml cert alone");
        assert!(err.to_string().contains("tls.cert"), "{err}");
    }

    /// The audit trail is off by default; its rotation size must be above 0; neither knob is
    /// live.
    #[test]
    fn audit_knobs() {
        let c = load(None, &[]).expect("defaults");
        assert!(c.audit.path.as_os_str().is_empty());
        assert_eq!(c.audit.rotate_bytes, 64 << 20);
        let c = load(
            None,
            &[
                ("MICRONODE_AUDIT_PATH", "/var/log/micronode/audit.log"),
                ("MICRONODE_AUDIT_ROTATE_BYTES", "4096"),
            ],
        )
        .expect("valid");
        assert_eq!(c.audit.rotate_bytes, 4096);
        let err = load(None, &[("MICRONODE_AUDIT_ROTATE_BYTES", "0")]).expect_err("zero");
        assert!(
            err.to_string().contains("MICRONODE_AUDIT_ROTATE_BYTES"),
            "{err}"
        );
        assert!(!LIVE_KNOBS.iter().any(|k| k.starts_with("audit.")));
    }

    /// The storage path matters only to sled.
    #[test]
    fn storage_path_is_checked_only_for_sled() {
        load(
            None,
            &[
                ("MICRONODE_STORAGE_PATH", ""),
                ("MICRONODE_STORAGE_ENGINE", "mem"),
            ],
        )
        .expect("mem needs no path");
        load(
            None,
            &[("MICRONODE_STORAGE_PATH", ""), ("MICRONODE_AMNESIA", "1")],
        )
        .expect("amnesia needs no path");
        let err = load(None, &[("MICRONODE_STORAGE_ENGINE", "postgres")])
            .expect_err("postgres needs a URL");
        assert!(err.to_string().contains("MICRONODE_PG_URL"), "{err}");
        let pg = [
            ("MICRONODE_STORAGE_ENGINE", "postgres"),
            ("MICRONODE_PG_URL", "postgres://u@127.0.0.1/db"),
            ("MICRONODE_STORAGE_PATH", ""),
        ];
        let c = load(None, &pg).expect("postgres needs no path");
        assert_eq!(
            (c.postgres.pool_size, c.postgres.connect_timeout_ms),
            (16, 2_000)
        );
        assert_eq!(c.postgres.schema, "micronode");
        // In a file the section is `[storage.postgres]`; `--check-config` prints it there.
        let file = "[storage]\nengine = \"postgres\"\n\n[storage.postgres]\n\
                    url = \"postgres://u@127.0.0.1/db\"\npool_size = 4\n";
        let c = Config::from_toml(file).expect("[storage.postgres]");
        assert_eq!(
            (c.postgres.url.as_str(), c.postgres.pool_size),
            ("postgres://u@127.0.0.1/db", 4)
        );
        let printed = c.to_toml();
        assert!(printed.contains("[storage.postgres]"), "{printed}");
        assert!(!printed.contains("\n[postgres]"), "{printed}");
        assert_eq!(Config::from_toml(&printed), Ok(c));
        let err = Config::from_toml("[postgres]\nurl = \"postgres://u@h/db\"\n")
            .expect_err("[postgres] is not the section's name");
        assert!(err.contains("[storage.postgres]"), "{err}");
        let err = Config::from_toml("[storage.postgres]\nurll = \"x\"\n").expect_err("unknown key");
        assert!(
            err.contains("[storage.postgres]") && err.contains("urll"),
            "{err}"
        );
        let err = Config::from_toml("[storage]\nengine = \"postgress\"\n[storage.postgres]\n")
            .expect_err("bad engine with a postgres section");
        assert!(err.contains("postgress"), "{err}");
        for bad in ["", "Micronode", "1x", "a-b", "a;drop"] {
            let env = [pg[0], pg[1], ("MICRONODE_PG_SCHEMA", bad)];
            let err = load(None, &env).expect_err(bad);
            assert!(err.to_string().contains("MICRONODE_PG_SCHEMA"), "{err}");
        }
        let err = load(None, &[("MICRONODE_STORAGE_PATH", "")]).expect_err("sled needs one");
        assert!(
            err.to_string()
                .contains("storage.path (MICRONODE_STORAGE_PATH)"),
            "{err}"
        );
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
            section in prop::sample::select(vec!["server", "limits", "rate_limit", "storage", "ready", "dev", "tls", "log"]),
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
            var in prop::sample::select(env_vars().collect::<Vec<_>>()),
            value in "\\PC{0,24}|[0-9]{1,25}|-[0-9]{1,5}",
        ) {
            prop_assume!(var != CONFIG_FILE_ENV);
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
