//! `POST /update-position`: moves an image on its canvas. Called on every
//! click with arbitrary floats, which are stored exactly.

use axum::{Json, extract::State};
use common::{ApiError, caller::Caller};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, AppState, is_someone_elses, parse_session_id};
use crate::storage::validate_key;

#[derive(Deserialize, ToSchema)]
pub struct UpdatePosition {
    #[schema(format = Uuid)]
    session_id: String,
    #[schema(schema_with = crate::storage::key_schema)]
    s3_key: String,
    x: f64,
    y: f64,
}

#[derive(Serialize, ToSchema)]
pub struct PositionUpdated {
    success: bool,
    s3_key: String,
    x: f64,
    y: f64,
}

/// Stores the image's new position; 404 when the key is not in the session.
#[utoipa::path(post, path = "/update-position", tag = "canvas", request_body = UpdatePosition,
    responses(
        (status = 200, body = PositionUpdated),
        (status = 400, description = "Body is not JSON, or a malformed key", body = common::error::ErrorBody),
        (status = 401, description = "Missing (AUTH_MODE=required) or invalid access token", body = common::error::ErrorBody),
        (status = 404, description = "Image not in this session", body = common::error::ErrorBody),
        (status = 408, description = "The body did not arrive within REQUEST_TIMEOUT_SECONDS", body = common::error::ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = common::error::ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = common::error::ErrorBody),
        (status = 422, description = "Malformed body", body = common::error::ErrorBody),
        (status = 503, description = "Database unavailable", body = common::error::ErrorBody),
    ))]
pub async fn update_position(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<UpdatePosition>,
) -> Result<Json<PositionUpdated>, ApiError> {
    let session_id = parse_session_id(&body.session_id)?;
    validate_key(&body.s3_key).map_err(|e| ApiError::bad_request(format!("s3_key: {e}")))?;
    // Another user's session answers as an unknown one does.
    if is_someone_elses(&app, &caller, session_id).await? {
        return Err(ApiError::not_found("Image not found in this session"));
    }
    if !app
        .db
        .update_position(session_id, &body.s3_key, body.x, body.y)
        .await?
    {
        return Err(ApiError::not_found("Image not found in this session"));
    }
    Ok(Json(PositionUpdated {
        success: true,
        s3_key: body.s3_key,
        x: body.x,
        y: body.y,
    }))
}
