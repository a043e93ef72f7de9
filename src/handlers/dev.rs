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

// GET /dev/latency (MICRONODE_DEV_METRICS=1) — service time per route: count, mean and
// p50/p90/p99/p99.9/max in microseconds.
pub fn get_latency(cx: Cx<'_>) -> Result<Resp, ApiError> {
    let times = cx.app.service_times.as_ref().ok_or(ApiError::NotFound)?;
    Ok(response::json(StatusCode::OK, times.to_json()))
}

// POST /dev/latency/reset (MICRONODE_DEV_METRICS=1) — empties every service-time histogram.
pub fn post_latency_reset(cx: Cx<'_>) -> Result<Resp, ApiError> {
    let times = cx.app.service_times.as_ref().ok_or(ApiError::NotFound)?;
    times.reset();
    Ok(response::empty(StatusCode::NO_CONTENT))
}
