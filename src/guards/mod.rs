//! Ingress guards (docs/API.md, "Guards"): plain checks on the parsed request head, run before the body
//! stream is polled. Each route's [`GuardSpec`] in the route table says which apply; the
//! request pipeline in `service` applies them in this order:
//! rate limit → decode guard → body cap → concurrency permit → timeout → handler.

pub mod auth;
pub mod body;
pub mod budget;
pub mod decode;
pub mod rate_limit;
pub mod tenant;

use http::HeaderMap;

use crate::error::ApiError;
use crate::wire::Verb;

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
    /// Shared by `/dev/echo` and `/dev/panic`.
    Dev = 2,
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
    /// Refused with 503 `storage_unavailable` (`Retry-After: 1`) while the engine reports
    /// itself down (a failed flush, a full disk, an unreachable database).
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
    /// Watch streams: a KV read without the time bound (a stream lives until the client
    /// leaves, the server stops or the watcher falls behind); the watcher limit is the
    /// handler's.
    pub const WATCH: GuardSpec = GuardSpec {
        timeout: None,
        ..GuardSpec::KV_READ
    };
    /// Snapshots: a KV read whose stream outlives any request time bound; one at a time per
    /// write budget slot is not needed, the stream is bounded in memory.
    pub const SNAPSHOT: GuardSpec = GuardSpec {
        timeout: None,
        ..GuardSpec::KV_READ
    };
    /// `/dev/echo` and `/dev/panic`: one small fixed budget for both.
    pub const DEV_BUDGETED: GuardSpec = GuardSpec {
        budget: Some(BudgetId::Dev),
        ..GuardSpec::FEATURE
    };
    /// `/dev/rl`: always its own bucket.
    pub const DEV_RL: GuardSpec = GuardSpec {
        bucket: Bucket::Dev,
        ..GuardSpec::FEATURE
    };
}

impl GuardSpec {
    /// The statuses these guards can answer on an endpoint of this method (for metric
    /// prewarming).
    pub fn statuses(&self, verb: Verb) -> Vec<u16> {
        let mut s = Vec::new();
        if self.bucket != Bucket::None || self.budget.is_some() {
            s.push(429);
        }
        if self.edge {
            s.extend([400, 413, 415]);
            if verb.needs_length() {
                s.extend([408, 411]);
            }
        }
        if self.timeout.is_some() || self.needs_store {
            s.push(503);
        }
        s
    }
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

#[cfg(test)]
mod props {
    use super::*;
    use http::HeaderValue;
    use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, TRANSFER_ENCODING};
    use proptest::prelude::*;

    /// The reference model of the head guards (docs/API.md), written as plainly as possible.
    fn model(
        verb: Verb,
        encodings: &[String],
        length: Option<u64>,
        chunked: bool,
        cap: u64,
        allow: bool,
    ) -> Result<BodyPlan, ApiError> {
        let codings: Vec<String> = encodings
            .iter()
            .flat_map(|h| h.split(',').map(|c| c.trim().to_ascii_lowercase()))
            .filter(|c| !c.is_empty())
            .collect();
        let headers = encodings.len();
        let gzip = if headers == 0 {
            false
        } else if headers > 1 || codings.len() > 1 {
            return Err(ApiError::StackedEncoding);
        } else if allow && codings.first().map(String::as_str) == Some("gzip") {
            true
        } else {
            return Err(ApiError::UnsupportedEncoding);
        };
        let body_verb = matches!(verb, Verb::Post | Verb::Put | Verb::Patch);
        if body_verb && (chunked || length.is_none()) {
            return Err(ApiError::LengthRequired);
        }
        let declared = length.unwrap_or(0);
        if declared > cap {
            return Err(ApiError::BodyCap {
                limit: cap,
                decoded: false,
            });
        }
        Ok(BodyPlan { declared, gzip })
    }

    fn coding() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("gzip".to_owned()),
            Just("GZIP".to_owned()),
            Just("identity".to_owned()),
            Just("br".to_owned()),
            Just("gzip, br".to_owned()),
            Just(" gzip ".to_owned()),
            Just("deflate,gzip".to_owned()),
        ]
    }

    proptest! {
        #[test]
        fn head_verdict_matches_the_model(
            verb in prop::sample::select(vec![Verb::Get, Verb::Head, Verb::Post, Verb::Put, Verb::Delete, Verb::Patch]),
            encodings in prop::collection::vec(coding(), 0..3),
            cap in 0u64..2048,
            delta in -3i64..3,
            has_length in any::<bool>(),
            chunked in any::<bool>(),
            allow in any::<bool>(),
        ) {
            let length = has_length.then(|| (cap as i64 + delta).max(0) as u64);
            let mut h = HeaderMap::new();
            for e in &encodings {
                h.append(CONTENT_ENCODING, HeaderValue::from_str(e).expect("ascii"));
            }
            if let Some(l) = length {
                h.insert(CONTENT_LENGTH, HeaderValue::from(l));
            }
            if chunked {
                h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            }
            let limits = HeadLimits { max_body_bytes: cap, allow_compressed: allow };
            prop_assert_eq!(
                check_head(verb, &h, limits),
                model(verb, &encodings, length, chunked, cap, allow)
            );
        }
    }
}
