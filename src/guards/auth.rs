//! The token guard (docs/SECURITY.md, "Tokens"): with auth on, every endpoint but the open ones
//! needs `Authorization: Bearer mn1_…`, checked on the request head before anything else is
//! done for the request. The route table says what each endpoint touches ([`Access`]); the
//! decision is the token's ([`Verified::allows`] and friends). Transactions are checked op by
//! op in their handler, once their body is read.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::app::AuthState;
use crate::auth::{Op, Target, Unverified, Verified, now_unix};
use crate::error::ApiError;
use crate::metrics::{AuthResult, Metrics};
use crate::wire::Query;

/// What an endpoint touches, for the token check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Never needs a token (`/healthz`, `/readyz`).
    Open,
    /// Operator routes (`/metrics` needs `admin`; `/version`, `/openapi.json` any valid token);
    /// open when `MICRONODE_AUTH_OPEN_METRICS=1`.
    Meta(Option<Op>),
    /// Any valid token.
    Token,
    /// One key: `op` on `{bucket}/{*key}`.
    Key(Op),
    /// A bucket under the `prefix` parameter (and the `after` cursor): list, watch.
    Prefix(Op),
    /// A transaction: the token must allow `txn`; each compare and op is checked by the handler.
    Txn,
    /// The whole node (`admin` with no bucket or prefix caveat): snapshot, mint, revoke.
    Node(Op),
}

/// The parts of a request the check reads. `bucket` and `key` are `None` when the request's
/// are malformed (the handler answers those 400 before the store is touched).
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
    pub bucket: Option<&'a str>,
    /// The key, percent-decoded as the store sees it.
    pub key: Option<&'a str>,
    pub query: &'a Query,
}

fn fail(metrics: &Metrics, result: AuthResult) -> ApiError {
    metrics.auth(result);
    ApiError::Auth {
        reason: result.label(),
    }
}

/// The verified token of a request, or the 401/403 to answer.
pub fn check(
    state: &AuthState,
    leeway_ms: u64,
    metrics: &Metrics,
    access: Access,
    req: &Request<'_>,
) -> Result<Verified, ApiError> {
    let verified = verify(state, leeway_ms, metrics, req)?;
    decide(metrics, &verified, access, req)?;
    Ok(verified)
}

/// The first half of [`check`]: the request's token, verified and not revoked, or the 401.
pub fn verify(
    state: &AuthState,
    leeway_ms: u64,
    metrics: &Metrics,
    req: &Request<'_>,
) -> Result<Verified, ApiError> {
    let raw = match req.headers.get(AUTHORIZATION) {
        None => return Err(fail(metrics, AuthResult::Missing)),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| fail(metrics, AuthResult::Invalid))?,
    };
    let token = Unverified::parse(raw).map_err(|_| fail(metrics, AuthResult::Invalid))?;
    let leeway_secs = leeway_ms.div_ceil(1000);
    let verified = token
        .into_verified(&state.keys(), now_unix(), leeway_secs)
        .map_err(|f| {
            fail(
                metrics,
                match f {
                    crate::auth::AuthFailure::Expired => AuthResult::Expired,
                    crate::auth::AuthFailure::Revoked => AuthResult::Revoked,
                    _ => AuthResult::Invalid,
                },
            )
        })?;
    if state.is_revoked(&verified.nonce()) {
        return Err(fail(metrics, AuthResult::Revoked));
    }
    Ok(verified)
}

/// The second half of [`check`]: whether the verified token allows what the endpoint touches,
/// or the 403.
pub fn decide(
    metrics: &Metrics,
    verified: &Verified,
    access: Access,
    req: &Request<'_>,
) -> Result<(), ApiError> {
    if !allows(verified, access, req) {
        metrics.auth(AuthResult::Denied);
        return Err(ApiError::Policy);
    }
    metrics.auth(AuthResult::Ok);
    Ok(())
}

/// The decision for one endpoint. A malformed bucket or key is allowed through here: the
/// handler answers it 400 before the store is touched, so nothing is read or written.
fn allows(token: &Verified, access: Access, req: &Request<'_>) -> bool {
    match access {
        Access::Open | Access::Token | Access::Meta(None) => true,
        Access::Meta(Some(op)) | Access::Node(op) => token.allows_node(op),
        Access::Txn => token.restriction().ops().contains(Op::Txn),
        Access::Key(op) => match (req.bucket, req.key) {
            (Some(bucket), Some(key)) => token.allows(op, bucket, Target::Key(key)),
            _ => true,
        },
        Access::Prefix(op) => match req.bucket {
            None => true,
            Some(bucket) => {
                let prefix = req.query.get("prefix").unwrap_or("");
                token.allows(op, bucket, Target::Prefix(prefix))
                    && req
                        .query
                        .get("after")
                        .is_none_or(|after| token.allows_cursor(bucket, after))
            }
        },
    }
}
