//! Ingress guards (SPEC §3): plain checks on the parsed request head, run before the body
//! stream is polled. Each route's [`GuardSpec`] in the route table says which apply; the
//! request pipeline in `service` applies them in the SPEC order:
//! rate limit → decode guard → body cap → concurrency permit → timeout → handler.

pub mod body;
pub mod budget;
pub mod decode;
pub mod rate_limit;

use http::HeaderMap;

use crate::error::ApiError;
use crate::router::Verb;

/// Which token bucket a route draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    None,
    /// The global bucket (`MICRONODE_RL_RPS`), when it is on.
    Global,
    /// `/dev/rl`'s own bucket, always on.
    Dev,
}

/// Which in-flight budget a route holds a permit of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetId {
    Ready = 0,
    KvWrite = 1,
    DevEcho = 2,
}

impl BudgetId {
    pub const COUNT: usize = 3;
}

/// Which time bound a route runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `MICRONODE_READY_TIMEOUT_MS`
    Ready,
    /// `MICRONODE_REQUEST_TIMEOUT_MS`
    Request,
}

/// The guards of one endpoint, declared in the route table.
#[derive(Debug, Clone, Copy)]
pub struct GuardSpec {
    pub bucket: Bucket,
    /// Decode guard and body cap on the head.
    pub edge: bool,
    pub budget: Option<BudgetId>,
    pub timeout: Option<Bound>,
    /// Refused with 503 `not_ready` while the store is not open.
    pub needs_store: bool,
}

impl GuardSpec {
    /// Admin routes: request id and metrics only.
    pub const ADMIN: GuardSpec = GuardSpec {
        bucket: Bucket::None,
        edge: false,
        budget: None,
        timeout: None,
        needs_store: false,
    };
    /// `/readyz`: its own concurrency cap and time bound.
    pub const READY: GuardSpec = GuardSpec {
        budget: Some(BudgetId::Ready),
        timeout: Some(Bound::Ready),
        ..GuardSpec::ADMIN
    };
    /// Feature routes.
    pub const FEATURE: GuardSpec = GuardSpec {
        bucket: Bucket::Global,
        edge: true,
        budget: None,
        timeout: Some(Bound::Request),
        needs_store: false,
    };
    /// KV reads: a feature route that needs the store.
    pub const KV_READ: GuardSpec = GuardSpec {
        needs_store: true,
        ..GuardSpec::FEATURE
    };
    /// KV writes: everything a read has, plus the write budget.
    pub const KV_WRITE: GuardSpec = GuardSpec {
        budget: Some(BudgetId::KvWrite),
        ..GuardSpec::KV_READ
    };
    /// `/dev/echo`: a small fixed budget.
    pub const DEV_ECHO: GuardSpec = GuardSpec {
        budget: Some(BudgetId::DevEcho),
        ..GuardSpec::FEATURE
    };
    /// `/dev/rl`: always its own bucket.
    pub const DEV_RL: GuardSpec = GuardSpec {
        bucket: Bucket::Dev,
        ..GuardSpec::FEATURE
    };
}

/// What the head checks decided about the body, for the handler that reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyPlan {
    /// The declared `Content-Length` (0 when absent on a method without a body).
    pub declared: u64,
    /// A single `gzip` coding, accepted because compressed bodies are allowed.
    pub gzip: bool,
}

/// Limits the head checks compare against.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_body_bytes: u64,
    pub allow_compressed: bool,
}

/// The decode guard, then the body cap, on the request head alone.
pub fn check_head(
    verb: Verb,
    headers: &HeaderMap,
    limits: HeadLimits,
) -> Result<BodyPlan, ApiError> {
    let gzip = decode::check(headers, limits.allow_compressed)?;
    let declared = body::check_length(verb, headers, limits.max_body_bytes)?;
    Ok(BodyPlan { declared, gzip })
}
