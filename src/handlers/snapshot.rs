//! placeholder
use super::Cx;
use crate::error::ApiError;
use crate::response::Resp;

pub async fn get_snapshot(_cx: Cx<'_>) -> Result<Resp, ApiError> {
    Err(ApiError::NotFound)
}
