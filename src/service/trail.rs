//! The request side of the audit trail (docs/SECURITY.md, "Audit trail"): which answers get a
//! line, what the line says, and what the answer waits for before it is sent.
//!
//! - Every answer of a write or admin route ([`audited`]) gets a line, whatever its status,
//!   once the request is past the rate limit; a 401 or 403 of any route gets one too.
//! - In `sync` durability the answer waits until its line is on disk (one `fdatasync` shared
//!   by every answer waiting at the time); in `periodic` it does not wait.
//! - Fail closed: a line that cannot be written or made durable turns the answer into 503
//!   `storage_unavailable`. Once the trail is broken, audited routes are refused before their
//!   handler runs, so nothing more is applied without its line.

use crate::app::{App, Audit};
use crate::audit::Event;
use crate::error::{ApiError, Code};
use crate::handlers::{AuditSubject, Handler, kv};
use crate::response::Resp;
use crate::wire::MICRONODE_REVISION;

use super::{Matched, Ran};

/// Who a request's verified token names, copied before the token moves into the handler.
pub(super) struct Who {
    tenant: String,
    key_id: String,
    nonce: String,
}

impl Who {
    pub(super) fn of(token: &crate::auth::Verified) -> Who {
        Who {
            tenant: token.tenant().to_owned(),
            key_id: token.key_id().to_owned(),
            nonce: token.nonce_hex(),
        }
    }
}

/// The routes every answer of which is logged: the writes and the admin operations.
pub(super) fn audited(handler: Handler) -> bool {
    matches!(
        handler,
        Handler::PutKv
            | Handler::DeleteKv
            | Handler::PostTxn
            | Handler::GetSnapshot
            | Handler::PostTokens
            | Handler::PostRevoke
    )
}

/// The `op` of a route's lines (for most routes only a 401 or 403 is ever logged).
fn op(handler: Handler) -> &'static str {
    match handler {
        Handler::PutKv => "put",
        Handler::DeleteKv => "delete",
        Handler::PostTxn => "txn",
        Handler::GetSnapshot => "snapshot",
        Handler::PostTokens => "mint",
        Handler::PostRevoke => "revoke",
        Handler::GetKv => "get",
        Handler::ListKv => "list",
        Handler::GetWatch => "watch",
        Handler::GetWhoami => "whoami",
        Handler::GetMetrics => "metrics",
        Handler::GetVersion => "version",
        Handler::GetOpenapi => "openapi",
        Handler::GetHealthz | Handler::GetReadyz | Handler::GetPing => "probe",
        Handler::PostEcho
        | Handler::GetRl
        | Handler::GetPanic
        | Handler::GetLatency
        | Handler::PostLatencyReset => "dev",
    }
}

/// A 401 or 403: logged on every route.
fn is_refusal(e: &ApiError) -> bool {
    matches!(e.code(), Code::Auth | Code::Policy)
}

/// Appends the line of `result` (counted; a failure is counted and logged by [`Audit`]).
fn append(
    audit: &Audit,
    m: &Matched<'_>,
    who: Option<&Who>,
    result: &Result<Resp, ApiError>,
) -> Result<u64, ()> {
    let path = m.head.uri.path();
    let mut bucket = m.params.get(path, "bucket").filter(|b| kv::valid_bucket(b));
    let mut key = m
        .params
        .get(path, "key")
        .and_then(|k| kv::decode_key(k).ok());
    let (status, revision) = match result {
        Ok(resp) => {
            let revision = resp
                .status()
                .is_success()
                .then(|| resp.headers().get(MICRONODE_REVISION))
                .flatten()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            if let Some(subject) = resp.extensions().get::<AuditSubject>() {
                bucket = Some(subject.bucket);
                key = Some(subject.key.clone());
            }
            (resp.status().as_u16(), revision)
        }
        Err(e) => (e.code().status().as_u16(), None),
    };
    let event = Event {
        request_id: m.request_id.to_str().ok(),
        tenant: who.map(|w| w.tenant.as_str()),
        key_id: who.map(|w| w.key_id.as_str()),
        nonce: who.map(|w| w.nonce.as_str()),
        op: op(m.ep.handler),
        bucket,
        key: key.as_deref(),
        status,
        revision,
    };
    audit.append(&event).map_err(drop)
}

/// The answer of a request that waited, once its line (if it gets one) is written and, in
/// `sync` durability, durable; 503 `storage_unavailable` when it could not be.
pub(super) async fn answer(
    app: &App,
    audit: &Audit,
    m: &Matched<'_>,
    who: Option<&Who>,
    result: Result<Resp, ApiError>,
) -> Result<Resp, ApiError> {
    let logged = match &result {
        Err(e) if e.code() == Code::RateLimit => false,
        Err(e) if is_refusal(e) => true,
        _ => audited(m.ep.handler),
    };
    if !logged {
        return result;
    }
    let Ok(seq) = append(audit, m, who, &result) else {
        return Err(ApiError::StorageUnavailable);
    };
    let Some(wait) = audit.settle(seq) else {
        return result;
    };
    let waited = match m.ep.guards.timeout {
        None => wait.await,
        Some(bound) => match tokio::time::timeout(super::bound_of(app, bound), wait).await {
            Ok(waited) => waited,
            // The line may still reach the disk: like any timeout, the outcome is unknown.
            Err(_) => return Err(ApiError::Timeout),
        },
    };
    match waited {
        Ok(()) => result,
        Err(_) => Err(ApiError::StorageUnavailable),
    }
}

/// A refusal on the fast path (a 401 or 403 of a route that answers at once): its line, and in
/// `sync` durability an answer that waits for it.
pub(super) fn refused_now(app: &App, m: &Matched<'_>, who: Option<&Who>, e: ApiError) -> Ran {
    let audit = match &app.audit {
        Some(audit) if is_refusal(&e) => audit,
        _ => return Ran::Done(Err(e)),
    };
    let result = Err(e);
    let Ok(seq) = append(audit, m, who, &result) else {
        return Ran::Done(Err(ApiError::StorageUnavailable));
    };
    match audit.settle(seq) {
        None => Ran::Done(result),
        Some(wait) => Ran::Detached(Box::pin(async move {
            match wait.await {
                Ok(()) => result,
                Err(_) => Err(ApiError::StorageUnavailable),
            }
        })),
    }
}
