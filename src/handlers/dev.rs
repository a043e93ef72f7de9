//! Dev routes, registered only with `MICRONODE_DEV_ROUTES=1`.

use bytes::Bytes;
use http::StatusCode;
use serde::de::IgnoredAny;

use super::Cx;
use crate::error::ApiError;
use crate::response::{self, Resp};

// POST /dev/echo
pub async fn post_echo(mut cx: Cx<'_>) -> Result<Resp, ApiError> {
    let body = cx.read_body().await?;
    // Validate without building a tree, then echo the exact bytes we got.
    serde_json::from_slice::<IgnoredAny>(&body)
        .map_err(|_| ApiError::BadRequest("malformed JSON body"))?;
    Ok(response::json(StatusCode::OK, body))
}

// GET /dev/rl
pub fn get_rl(_cx: Cx<'_>) -> Result<Resp, ApiError> {
    Ok(response::json(
        StatusCode::OK,
        Bytes::from_static(b"{\"ok\":true}"),
    ))
}

// GET /dev/panic — proves panic isolation: the request gets 500 `internal`, the connection and
// the server live on, and the `/dev/echo` budget permit it holds is given back.
pub fn get_panic(_cx: Cx<'_>) -> Result<Resp, ApiError> {
    panic!("GET /dev/panic asked for a panic")
}
