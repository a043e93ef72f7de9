//! `/v1/auth/*`: who the caller is, minting tokens, revoking them (docs/API.md, "Tokens").
//! The token itself was verified by the guard (`guards::auth`); these handlers only read it.

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;

use super::Cx;
use super::kv::{store_error, valid_bucket};
use crate::app::AUTH_BUCKET;
use crate::auth::{Caveat, Ops, Unverified, now_unix};
use crate::error::ApiError;
use crate::response::{self, Resp};
use crate::store::{Cond, WriteOp};

/// What a caller's token says, as JSON.
fn caveats_json(token: &crate::auth::Verified) -> serde_json::Value {
    let r = token.restriction();
    let bucket = match r.bucket() {
        crate::auth::BucketScope::Any => serde_json::Value::Null,
        crate::auth::BucketScope::Only(b) => b.as_str().into(),
        crate::auth::BucketScope::Nothing => "(none: conflicting bucket caveats)".into(),
    };
    let ops: Vec<&str> = r.ops().iter().map(|op| op.name()).collect();
    serde_json::json!({
        "bucket": bucket,
        "prefixes": r.prefixes(),
        "ops": ops,
        "not_before": r.not_before(),
        "not_after": r.not_after(),
    })
}

// GET /v1/auth/whoami
pub fn get_whoami(cx: Cx<'_>) -> Result<Resp, ApiError> {
    let mut body = match &cx.token {
        // Auth off: everything is the `default` tenant, with every right.
        None => serde_json::json!({
            "tenant": "default",
            "key_id": null,
            "nonce": null,
            "caveats": {},
            "auth": "off",
        }),
        Some(t) => serde_json::json!({
            "tenant": t.tenant(),
            "key_id": t.key_id(),
            "nonce": t.nonce_hex(),
            "caveats": caveats_json(t),
            "auth": "on",
        }),
    };
    body["usage"] = usage_json(cx.app, cx.tenant());
    Ok(response::json(StatusCode::OK, body.to_string()))
}

/// What `tenant` uses and may use: stored keys and bytes (exact, from the engine), open
/// watch streams, and the limits that apply (`null` = unlimited).
fn usage_json(app: &crate::app::App, tenant: &str) -> serde_json::Value {
    let stored = app.store.usage().map(|u| u.of(tenant));
    let limits = app.tenants.limits(tenant);
    serde_json::json!({
        "tracked": stored.is_some(),
        "keys": stored.map(|c| c.keys),
        "bytes": stored.map(|c| c.bytes),
        "watchers": app.tenants.watchers_of(tenant),
        "limits": {
            "rps": limits.rps,
            "burst": limits.burst.or(limits.rps),
            "max_bytes": limits.max_bytes,
            "max_keys": limits.max_keys,
            "max_watchers": limits.max_watchers,
        },
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintIn {
    tenant: String,
    #[serde(default)]
    bucket: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    /// Comma-separated or a list: `get`, `list`, `watch`, `put`, `delete`, `txn`, `admin`.
    #[serde(default)]
    ops: Option<Vec<String>>,
    #[serde(default)]
    ttl: Option<u64>,
}

fn bad(message: &'static str) -> ApiError {
    ApiError::BadRequest(message)
}

/// A JSON object body, or 400.
fn object<T: serde::de::DeserializeOwned>(raw: &Bytes) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|_| bad("the body must be a JSON object"))?;
    if !value.is_object() {
        return Err(bad("the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|_| bad("malformed request body: see docs/API.md"))
}

// POST /v1/auth/tokens
pub async fn post_tokens(mut cx: Cx<'_>) -> Result<Resp, ApiError> {
    let raw = cx.read_body().await?;
    let state = cx
        .app
        .auth
        .as_ref()
        // With auth off the route has nothing to do: as if it did not exist.
        .ok_or(ApiError::NotFound)?;
    let req: MintIn = object(&raw)?;
    let mut caveats = Vec::new();
    if let Some(b) = req.bucket {
        if !valid_bucket(&b) {
            return Err(bad("invalid bucket name"));
        }
        caveats.push(Caveat::Bucket(b));
    }
    if let Some(p) = req.prefix {
        if p.is_empty() || p.len() > crate::store::MAX_KEY_BYTES {
            return Err(bad("prefix must be 1 to 1024 bytes"));
        }
        caveats.push(Caveat::Prefix(p));
    }
    if let Some(ops) = req.ops {
        let ops = Ops::parse_list(&ops.join(","))
            .map_err(|_| bad("ops are get, list, watch, put, delete, txn, admin"))?;
        caveats.push(Caveat::Ops(ops));
    }
    if let Some(ttl) = req.ttl {
        if !(1..=super::kv::MAX_TTL_SECS).contains(&ttl) {
            return Err(bad("ttl must be 1 to 315360000 seconds"));
        }
        caveats.push(Caveat::NotAfter(now_unix() + ttl));
    }
    let keys = state.keys();
    let token = crate::auth::mint(keys.newest(), &req.tenant, &caveats)
        .map_err(|_| bad("invalid tenant: 1 to 63 of a-z 0-9 . _ -"))?;
    // The token is the answer's only content; it is never logged. The audit line names the
    // new token's nonce (what a revocation names), never the token.
    let minted = Unverified::parse(&token).map(|t| hex_of(&t.nonce())).ok();
    let body = serde_json::json!({ "token": token });
    let mut resp = response::json(StatusCode::OK, body.to_string());
    if let Some(nonce) = minted {
        resp.extensions_mut().insert(super::AuditSubject {
            bucket: AUTH_BUCKET,
            key: format!("minted/{nonce}"),
        });
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeIn {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

fn hex_of(nonce: &[u8]) -> String {
    nonce.iter().map(|b| format!("{b:02x}")).collect()
}

// POST /v1/auth/revoke
pub async fn post_revoke(mut cx: Cx<'_>) -> Result<Resp, ApiError> {
    let raw = cx.read_body().await?;
    let state = cx.app.auth.as_ref().ok_or(ApiError::NotFound)?;
    let req: RevokeIn = object(&raw)?;
    let nonce = match (req.token, req.nonce) {
        (Some(t), None) => Unverified::parse(&t)
            .map_err(|_| bad("token is not a token"))?
            .nonce(),
        (None, Some(n)) => {
            crate::auth::token::parse_nonce_hex(&n).ok_or(bad("nonce must be 32 hex digits"))?
        }
        _ => return Err(bad("give exactly one of token or nonce")),
    };
    let hex = hex_of(&nonce);
    // Durable before the answer, like any write; invisible to KV routes (the bucket name is
    // one no request can use).
    let key = format!("revoked/{hex}");
    let value = Bytes::from(now_unix().to_string());
    let op = WriteOp::Put {
        bucket: AUTH_BUCKET,
        key: &key,
        content_type: b"text/plain",
        value: &value,
        expires_at: None,
        cond: &Cond::NONE,
        owner: crate::store::usage::SYSTEM,
    };
    cx.app
        .store
        .write(&[op])
        .await
        .map_err(|e| store_error(cx.request_id, e))?;
    state.revoke(nonce);
    let body = serde_json::json!({ "revoked": hex });
    let mut resp = response::json(StatusCode::OK, body.to_string());
    resp.extensions_mut().insert(super::AuditSubject {
        bucket: AUTH_BUCKET,
        key,
    });
    Ok(resp)
}
