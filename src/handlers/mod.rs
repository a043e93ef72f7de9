//! Handlers: plain functions, one per route method, named `verb_noun`. Most answer at once
//! (`sync`: a plain `fn`); the ones that wait — for a body, a commit, a sleep — are `async fn`
//! and get boxed when called, so the fast path carries no big state machine and allocates no
//! future. The [`handlers!`] list below is the one place a handler is named for the route
//! table; it generates the `Handler` id used by the table, the dispatch `match` and the
//! statuses each handler can answer (for metric prewarming).

pub mod admin;
pub mod auth;
pub mod dev;
pub mod kv;
pub mod snapshot;
pub mod txn;
pub mod watch;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::HeaderValue;
use http::request::Parts;

use crate::app::App;
use crate::error::ApiError;
use crate::guards::BodyPlan;
use crate::guards::body;
use crate::response::Resp;
use crate::wire::{ConnInfo, PathParams, Query, RequestBody};

/// What a handler gets: the app, the connection, the request head, the route's path
/// parameters, and the body
/// (not yet polled) with the plan the head checks made for it.
pub struct Cx<'a> {
    pub app: &'a App,
    pub conn: &'a ConnInfo,
    pub head: &'a Parts,
    pub params: PathParams,
    pub request_id: &'a HeaderValue,
    /// The query parameters, already checked against the route's accepted names.
    pub query: Query,
    /// The request's verified token (auth on and the route not open), already allowed for
    /// what the route touches.
    pub token: Option<crate::auth::Verified>,
    pub plan: BodyPlan,
    pub body: RequestBody,
}

impl<'a> Cx<'a> {
    /// Reads the body under the body cap, stall bound and decode cap.
    pub async fn read_body(&mut self) -> Result<Bytes, ApiError> {
        let body = std::mem::replace(&mut self.body, RequestBody::from(Bytes::new()));
        body::read(body, self.plan, self.app.body_limits()).await
    }

    /// A path parameter of the route (empty when the route has no such parameter). Borrows
    /// the request head, not the context, so a handler can still read its body afterwards.
    pub fn param(&self, name: &str) -> &'a str {
        self.params.get(self.head.uri.path(), name).unwrap_or("")
    }

    /// The tenant the request acts for: the token's, or `default` without one.
    pub fn tenant(&self) -> &str {
        self.token
            .as_ref()
            .map_or(crate::config::DEFAULT_TENANT, |t| t.tenant())
    }
}

/// What an audit line names when the request path names no key: set by a handler in its
/// answer's extensions (a revocation names the record it writes, `_auth` / `revoked/<nonce>`).
#[derive(Debug, Clone)]
pub struct AuditSubject {
    pub bucket: &'static str,
    pub key: String,
}

/// What a handler gives back: an answer now, or a future that will produce one.
pub enum Step<'a> {
    Done(Result<Resp, ApiError>),
    Pending(Pending<'a>),
    /// The answer is decided but must wait for something that owns all it needs (a read
    /// waiting for the commit of the write it shows): a fast-path handler returns this
    /// instead of being boxed on every call.
    Detached(Detached),
}

/// A handler that has to wait, boxed (its state lives on the heap, not in every request's).
pub type Pending<'a> = Pin<Box<dyn Future<Output = Result<Resp, ApiError>> + Send + 'a>>;

/// The rest of an answer that no longer borrows the request.
pub type Detached = Pin<Box<dyn Future<Output = Result<Resp, ApiError>> + Send + 'static>>;

macro_rules! dispatch {
    (sync, $path:path, $cx:ident) => {
        Step::Done($path($cx))
    };
    (async, $path:path, $cx:ident) => {
        Step::Pending(Box::pin($path($cx)))
    };
    (step, $path:path, $cx:ident) => {
        $path($cx)
    };
}

macro_rules! may_wait {
    (sync, $app:ident) => {
        false
    };
    (async, $app:ident) => {
        true
    };
    (step, $app:ident, $pred:path) => {
        $pred($app)
    };
}

macro_rules! handlers {
    ($($variant:ident => $kind:ident $path:path $(, waits if $pred:path)?, answers [$($status:literal),*];)*) => {
        /// Names a handler in the route table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Handler { $($variant),* }

        /// Runs a handler up to its first wait.
        pub fn call(handler: Handler, cx: Cx<'_>) -> Step<'_> {
            match handler { $(Handler::$variant => dispatch!($kind, $path, cx)),* }
        }

        /// Whether a handler may wait (and so runs as a boxed future) under this config.
        pub fn waits(handler: Handler, app: &App) -> bool {
            match handler { $(Handler::$variant => may_wait!($kind, app $(, $pred)?)),* }
        }

        /// The statuses a handler itself can answer (guards add theirs).
        pub fn statuses(handler: Handler) -> &'static [u16] {
            match handler { $(Handler::$variant => &[$($status),*]),* }
        }
    };
}

// `sync`: `fn(Cx) -> Result`; `async`: `async fn(Cx) -> Result`; `step`: `fn(Cx) -> Step`,
// which answers at once unless its `waits if` predicate holds for the config.
handlers! {
    GetHealthz => sync admin::get_healthz, answers [200];
    GetReadyz => step admin::get_readyz, waits if admin::readyz_waits, answers [200, 503];
    GetVersion => sync admin::get_version, answers [200];
    GetMetrics => sync admin::get_metrics, answers [200];
    GetOpenapi => sync admin::get_openapi, answers [200];
    GetPing => sync admin::get_ping, answers [200];
    GetKv => step kv::get_kv, waits if kv::reads_wait, answers [200, 304, 400, 404, 412];
    PutKv => async kv::put_kv, answers [201, 204, 400, 412, 507];
    DeleteKv => async kv::delete_kv, answers [204, 400, 404, 412, 507];
    ListKv => step kv::list_kv, waits if kv::reads_wait, answers [200, 400];
    GetWatch => async watch::get_watch, answers [200, 400, 410, 429];
    PostTxn => async txn::post_txn, answers [200, 400, 507];
    GetSnapshot => async snapshot::get_snapshot, answers [200, 429];
    GetWhoami => sync auth::get_whoami, answers [200];
    PostTokens => async auth::post_tokens, answers [200, 400, 404];
    PostRevoke => async auth::post_revoke, answers [200, 400, 404, 507];
    PostEcho => async dev::post_echo, answers [200, 400];
    GetRl => sync dev::get_rl, answers [200];
    GetPanic => sync dev::get_panic, answers [];
    GetLatency => sync dev::get_latency, answers [200];
    PostLatencyReset => sync dev::post_latency_reset, answers [204];
}
