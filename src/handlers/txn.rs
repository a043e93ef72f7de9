//! `POST /v1/txn`: compares, then one of two branches of puts, deletes and gets, judged and
//! applied at one point of the revision order under one revision (docs/API.md,
//! "Transactions"). Everything about the request is checked before the store is touched, so a
//! malformed transaction is 400 with nothing applied.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;

use super::Cx;
use super::kv::{check_key, record_json, store_error, tag_revision, valid_bucket};
use crate::auth::{Op, Target};
use crate::error::ApiError;
use crate::metrics::{AuthResult, KvOp, TxnResult};
use crate::response::{self, OCTET_STREAM, Resp};
use crate::store::{Compare, Cond, IfMatch, MAX_CONTENT_TYPE_BYTES, OpResult, Txn, TxnOp, WriteOp};
use crate::wire::MICRONODE_REVISION;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default, rename = "if")]
    compares: Vec<CompareIn>,
    #[serde(default)]
    then: Vec<OpIn>,
    #[serde(default, rename = "else")]
    otherwise: Vec<OpIn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareIn {
    bucket: String,
    key: String,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    exists: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum OpIn {
    Put {
        bucket: String,
        key: String,
        value: String,
        #[serde(default)]
        content_type: Option<String>,
        #[serde(default)]
        /// Seconds; a JSON number with no fraction (`30` or `30.0`).
        ttl: Option<serde_json::Number>,
    },
    Delete {
        bucket: String,
        key: String,
    },
    Get {
        bucket: String,
        key: String,
    },
}

/// An op after validation, owning what the store op borrows.
enum Checked {
    Put {
        bucket: String,
        key: String,
        value: Bytes,
        content_type: Vec<u8>,
        expires_at: Option<u64>,
    },
    Delete {
        bucket: String,
        key: String,
    },
    Get {
        bucket: String,
        key: String,
    },
}

fn bad(message: &'static str) -> ApiError {
    ApiError::BadRequest(message)
}

fn checked_key(bucket: &str, key: &str) -> Result<(), ApiError> {
    if !valid_bucket(bucket) {
        return Err(bad("invalid bucket name in transaction"));
    }
    check_key(key)
}

/// The condition of one compare: `etag` (`"<R>"`, strong comparison) or `exists`.
fn compare_cond(c: &CompareIn) -> Result<Cond, ApiError> {
    checked_key(&c.bucket, &c.key)?;
    match (&c.etag, c.exists) {
        (Some(tag), None) => {
            let inner = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .ok_or(bad("a compare's etag must be a quoted entity tag"))?;
            Ok(Cond {
                if_match: Some(IfMatch::Versions(tag_revision(inner).into_iter().collect())),
                if_none_match: None,
            })
        }
        (None, Some(true)) => Ok(Cond {
            if_match: Some(IfMatch::Any),
            if_none_match: None,
        }),
        (None, Some(false)) => Ok(Cond {
            if_match: None,
            if_none_match: Some(IfMatch::Any),
        }),
        _ => Err(bad("a compare takes exactly one of etag or exists")),
    }
}

/// A TTL in whole seconds within range: JSON Schema (and many clients) count `30.0` as the
/// integer 30, so a number with no fraction is accepted in either spelling.
fn whole_seconds(n: &serde_json::Number) -> Option<u64> {
    let secs = match n.as_u64() {
        Some(u) => u,
        None => {
            let f = n.as_f64()?;
            if f.fract() != 0.0 || !(1.0..=super::kv::MAX_TTL_SECS as f64).contains(&f) {
                return None;
            }
            f as u64
        }
    };
    (1..=super::kv::MAX_TTL_SECS)
        .contains(&secs)
        .then_some(secs)
}

fn check_op(op: OpIn) -> Result<Checked, ApiError> {
    Ok(match op {
        OpIn::Put {
            bucket,
            key,
            value,
            content_type,
            ttl,
        } => {
            checked_key(&bucket, &key)?;
            let value = BASE64
                .decode(value.as_bytes())
                .map_err(|_| bad("a put's value must be standard base64"))?;
            let content_type = match content_type {
                None => OCTET_STREAM.as_bytes().to_vec(),
                Some(ct) => {
                    if ct.len() > MAX_CONTENT_TYPE_BYTES || HeaderValue::from_str(&ct).is_err() {
                        return Err(bad(
                            "content_type must be a header value of at most 1024 bytes",
                        ));
                    }
                    ct.into_bytes()
                }
            };
            let expires_at = match ttl {
                None => None,
                Some(t) => Some(super::kv::expiry_after(
                    whole_seconds(&t)
                        .ok_or(bad("ttl must be a whole number of seconds, 1 to 315360000"))?,
                )),
            };
            Checked::Put {
                bucket,
                key,
                value: Bytes::from(value),
                content_type,
                expires_at,
            }
        }
        OpIn::Delete { bucket, key } => {
            checked_key(&bucket, &key)?;
            Checked::Delete { bucket, key }
        }
        OpIn::Get { bucket, key } => {
            checked_key(&bucket, &key)?;
            Checked::Get { bucket, key }
        }
    })
}

/// The key an op writes, if it writes.
fn written(c: &Checked) -> Option<(&str, &str)> {
    match c {
        Checked::Put { bucket, key, .. } | Checked::Delete { bucket, key } => {
            Some((bucket.as_str(), key.as_str()))
        }
        Checked::Get { .. } => None,
    }
}

fn check_branch(ops: Vec<OpIn>) -> Result<Vec<Checked>, ApiError> {
    let ops = ops
        .into_iter()
        .map(check_op)
        .collect::<Result<Vec<_>, _>>()?;
    for (i, op) in ops.iter().enumerate() {
        if let Some(k) = written(op)
            && ops[..i].iter().any(|o| written(o) == Some(k))
        {
            return Err(bad("a key may be written once per branch"));
        }
    }
    Ok(ops)
}

/// Whether a token allows every op of a branch on its own key.
fn branch_allowed(token: &crate::auth::Verified, ops: &[Checked]) -> bool {
    ops.iter().all(|op| match op {
        Checked::Put { bucket, key, .. } => token.allows(Op::Put, bucket, Target::Key(key)),
        Checked::Delete { bucket, key } => token.allows(Op::Delete, bucket, Target::Key(key)),
        Checked::Get { bucket, key } => token.allows(Op::Get, bucket, Target::Key(key)),
    })
}

const NONE: Cond = Cond::NONE;

/// The ops of one branch; the records they write count for `owner`.
fn store_ops<'a>(ops: &'a [Checked], owner: &'a str) -> Vec<TxnOp<'a>> {
    ops.iter()
        .map(|op| match op {
            Checked::Put {
                bucket,
                key,
                value,
                content_type,
                expires_at,
            } => TxnOp::Write(WriteOp::Put {
                bucket,
                key,
                content_type,
                value,
                expires_at: *expires_at,
                cond: &NONE,
                owner,
            }),
            Checked::Delete { bucket, key } => TxnOp::Write(WriteOp::Delete {
                bucket,
                key,
                cond: &NONE,
                expire: false,
            }),
            Checked::Get { bucket, key } => TxnOp::Get { bucket, key },
        })
        .collect()
}

// POST /v1/txn
pub async fn post_txn(mut cx: Cx<'_>) -> Result<Resp, ApiError> {
    let raw = cx.read_body().await?;
    let app = cx.app;
    let invalid = |e: ApiError| {
        app.metrics.txn(TxnResult::Invalid);
        e
    };
    let malformed = || invalid(bad("malformed transaction: see docs/API.md, Transactions"));
    // A JSON object only: serde would also take a struct written as an array.
    let value: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| malformed())?;
    if !value.is_object() {
        return Err(malformed());
    }
    let body: Body = serde_json::from_value(value).map_err(|_| malformed())?;
    let count = body.compares.len() + body.then.len() + body.otherwise.len();
    if count > app.config().txn.max_ops {
        return Err(invalid(bad("too many compares and ops in one transaction")));
    }
    let conds = body
        .compares
        .iter()
        .map(compare_cond)
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let compares: Vec<Compare<'_>> = body
        .compares
        .iter()
        .zip(&conds)
        .map(|(c, cond)| Compare {
            bucket: &c.bucket,
            key: &c.key,
            cond,
        })
        .collect();
    let then = check_branch(body.then).map_err(invalid)?;
    let otherwise = check_branch(body.otherwise).map_err(invalid)?;
    if let Some(token) = &cx.token {
        // Every compare (a read) and every op of both branches, before anything is applied.
        let compares_ok = body
            .compares
            .iter()
            .all(|c| token.allows(Op::Get, &c.bucket, Target::Key(&c.key)));
        if !compares_ok || !branch_allowed(token, &then) || !branch_allowed(token, &otherwise) {
            app.metrics.auth(AuthResult::Denied);
            return Err(ApiError::Policy);
        }
    }
    let tenant = cx.tenant();
    let (then_ops, else_ops) = (store_ops(&then, tenant), store_ops(&otherwise, tenant));
    let txn = Txn {
        compares: &compares,
        then: &then_ops,
        otherwise: &else_ops,
    };
    app.metrics.kv_op(KvOp::Txn);
    let outcome = app.store.txn(&txn).await.map_err(|e| {
        super::kv::quota_refusal(&cx, &e);
        store_error(cx.request_id, e)
    })?;
    app.metrics.txn(if outcome.succeeded {
        TxnResult::Succeeded
    } else {
        TxnResult::Failed
    });
    let results: Vec<serde_json::Value> = outcome
        .results
        .iter()
        .map(|r| match r {
            OpResult::Put { revision } => {
                serde_json::json!({"op": "put", "etag": format!("\"{revision}\"")})
            }
            OpResult::Delete { deleted } => serde_json::json!({"op": "delete", "deleted": deleted}),
            OpResult::Get(None) => serde_json::json!({"op": "get", "found": false}),
            OpResult::Get(Some(record)) => {
                let mut v = record_json(None, record);
                if let Some(map) = v.as_object_mut() {
                    map.insert("op".into(), "get".into());
                    map.insert("found".into(), true.into());
                }
                v
            }
        })
        .collect();
    let body = serde_json::json!({
        "succeeded": outcome.succeeded,
        "revision": outcome.revision,
        "results": results,
    });
    let mut resp = response::json(StatusCode::OK, body.to_string());
    resp.headers_mut()
        .insert(MICRONODE_REVISION, HeaderValue::from(outcome.revision));
    Ok(resp)
}
