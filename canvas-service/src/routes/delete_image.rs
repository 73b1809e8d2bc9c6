//! `DELETE /delete-image` (JSON body): takes an image off this session's
//! canvas, and removes the object once nothing else needs it.

use axum::{Json, extract::State};
use common::{ApiError, caller::Caller};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, AppState, is_someone_elses, parse_session_id};
use crate::keys::{check_client_key, is_other_sessions_upload};

#[derive(Deserialize, ToSchema)]
pub struct DeleteImage {
    #[schema(format = Uuid)]
    session_id: String,
    #[schema(schema_with = crate::storage::key_schema)]
    s3_key: String,
}

#[derive(Serialize, ToSchema)]
pub struct ImageDeleted {
    success: bool,
    s3_key: String,
    #[schema(example = "Image deleted successfully")]
    message: &'static str,
}

/// Removes the session's row for the key (404 when there is none). The
/// object is deleted only when no other session still shows it and it is
/// not another session's upload.
#[utoipa::path(delete, path = "/delete-image", tag = "canvas", request_body = DeleteImage,
    responses(
        (status = 200, body = ImageDeleted),
        (status = 400, description = "Body is not JSON, or a malformed key", body = common::error::ErrorBody),
        (status = 401, description = "Missing (AUTH_MODE=required) or invalid access token", body = common::error::ErrorBody),
        (status = 403, description = "Another session's upload", body = common::error::ErrorBody),
        (status = 404, description = "Image not in this session", body = common::error::ErrorBody),
        (status = 408, description = "The body did not arrive within REQUEST_TIMEOUT_SECONDS", body = common::error::ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = common::error::ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = common::error::ErrorBody),
        (status = 422, description = "Malformed body", body = common::error::ErrorBody),
        (status = 503, description = "Database unavailable", body = common::error::ErrorBody),
    ))]
pub async fn delete_image(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<DeleteImage>,
) -> Result<Json<ImageDeleted>, ApiError> {
    let session_id = parse_session_id(&body.session_id)?;
    check_client_key(session_id, &body.s3_key)?;
    // Another user's session answers as an unknown one does.
    if is_someone_elses(&app, &caller, session_id).await? {
        return Err(ApiError::not_found("Image not found in this session"));
    }
    if !app.db.remove_image(session_id, &body.s3_key).await? {
        return Err(ApiError::not_found("Image not found in this session"));
    }
    // The row is gone either way; failing to remove the object only leaves
    // an orphan in the bucket, so it is logged rather than reported.
    let shared = app.db.key_used_elsewhere(session_id, &body.s3_key).await;
    match shared {
        Ok(false) if !is_other_sessions_upload(session_id, &body.s3_key) => {
            if let Err(e) = app.store.delete(&body.s3_key).await {
                tracing::warn!(key = %body.s3_key, error = %e, "image row removed but object not deleted");
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(key = %body.s3_key, error = %e, "could not check other sessions; object kept")
        }
    }
    Ok(Json(ImageDeleted {
        success: true,
        s3_key: body.s3_key,
        message: "Image deleted successfully",
    }))
}
