//! The admin plane: liveness, readiness, version, metrics, the OpenAPI document — plus
//! `/v1/ping`.

use bytes::Bytes;
use http::StatusCode;

use super::{Cx, Step};
use crate::error::ApiError;
use crate::response::{self, PROMETHEUS_TEXT, Resp};

const HEALTHZ_BODY: &[u8] = b"{\"status\":\"ok\"}";
const PONG_BODY: &[u8] = b"{\"pong\":true}";

// GET /healthz
pub fn get_healthz(_cx: Cx<'_>) -> Result<Resp, ApiError> {
    Ok(response::json(
        StatusCode::OK,
        Bytes::from_static(HEALTHZ_BODY),
    ))
}

// GET /readyz — answers at once, unless the dev sleep hook is on.
pub fn get_readyz(cx: Cx<'_>) -> Step<'_> {
    let sleep_ms = cx.app.cfg.ready.sleep_ms;
    if sleep_ms == 0 {
        return Step::Done(readyz_verdict(&cx));
    }
    Step::Pending(Box::pin(async move {
        tokio::time::sleep(std::time::Duration::from_millis(sleep_ms)).await;
        // Judged after the sleep, so a request held across SIGTERM reports draining.
        readyz_verdict(&cx)
    }))
}

/// `/readyz` waits only with the dev sleep hook on.
pub fn readyz_waits(app: &crate::app::App) -> bool {
    app.cfg.ready.sleep_ms > 0
}

fn readyz_verdict(cx: &Cx<'_>) -> Result<Resp, ApiError> {
    cx.app.refresh_store_health();
    let verdict = cx.app.ready.verdict(std::time::Instant::now());
    let status = if verdict.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(response::json(status, verdict.json_body()))
}

// GET /version
pub fn get_version(cx: Cx<'_>) -> Result<Resp, ApiError> {
    Ok(response::json(StatusCode::OK, cx.app.version_body.clone()))
}

// GET /metrics
pub fn get_metrics(cx: Cx<'_>) -> Result<Resp, ApiError> {
    let text = cx.app.metrics.render(&cx.app.gauges());
    Ok(response::with_body(StatusCode::OK, PROMETHEUS_TEXT, text))
}

/// docs/openapi.json, generated from docs/openapi.yaml by scripts/openapi_json.sh.
const OPENAPI_JSON: &[u8] = include_bytes!("../../docs/openapi.json");

// GET /openapi.json
pub fn get_openapi(_cx: Cx<'_>) -> Result<Resp, ApiError> {
    Ok(response::json(
        StatusCode::OK,
        Bytes::from_static(OPENAPI_JSON),
    ))
}

// GET /v1/ping
pub fn get_ping(_cx: Cx<'_>) -> Result<Resp, ApiError> {
    Ok(response::json(
        StatusCode::OK,
        Bytes::from_static(PONG_BODY),
    ))
}
