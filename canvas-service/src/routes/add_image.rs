//! `POST /add-image`: puts an existing object on a session's canvas — how
//! the frontend keeps a generated image (a job's `result_url`, whose path is
//! the key). Another session's upload cannot be adopted.

use axum::{Json, extract::State};
use common::{ApiError, caller::Caller};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{ApiJson, AppState, ImageOut, may_use_session, parse_session_id};
use crate::{db::NewImage, keys::check_client_key};

#[derive(Deserialize, ToSchema)]
pub struct AddImage {
    #[schema(format = Uuid)]
    session_id: String,
    #[schema(schema_with = crate::storage::key_schema)]
    s3_key: String,
    #[serde(default)]
    x: f64,
    #[serde(default)]
    y: f64,
}

/// Adds an object that exists in the store to the session. Adding a key the
/// session already has keeps one row and returns it.
#[utoipa::path(post, path = "/add-image", tag = "canvas", request_body = AddImage,
    responses(
        (status = 200, body = ImageOut),
        (status = 400, description = "Body is not JSON, or a malformed key", body = common::error::ErrorBody),
        (status = 401, description = "Missing (AUTH_MODE=required) or invalid access token", body = common::error::ErrorBody),
        (status = 403, description = "Another session's upload", body = common::error::ErrorBody),
        (status = 404, description = "No such session (or another user's) or object", body = common::error::ErrorBody),
        (status = 408, description = "The body did not arrive within REQUEST_TIMEOUT_SECONDS", body = common::error::ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = common::error::ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = common::error::ErrorBody),
        (status = 422, description = "Malformed body", body = common::error::ErrorBody),
        (status = 503, description = "Database or object store unavailable", body = common::error::ErrorBody),
    ))]
pub async fn add_image(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<AddImage>,
) -> Result<Json<ImageOut>, ApiError> {
    let session_id = parse_session_id(&body.session_id)?;
    check_client_key(session_id, &body.s3_key)?;
    if !may_use_session(&app, &caller, session_id).await? {
        return Err(ApiError::not_found("Session not found"));
    }
    if !app.store.exists(&body.s3_key).await? {
        return Err(ApiError::not_found("Object not found"));
    }
    let record = app
        .db
        .add_image(&NewImage {
            session_id,
            key: body.s3_key,
            content_type: None,
            size: None,
            width: None,
            height: None,
            x: body.x,
            y: body.y,
        })
        .await?
        .ok_or_else(|| ApiError::not_found("Session not found"))?;
    Ok(Json(ImageOut::from_record(&app, record).await?))
}
