//! `POST /session`: starts a new, empty canvas.

use axum::{Json, extract::State};
use common::{ApiError, caller::Caller};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;

#[derive(Serialize, ToSchema)]
pub struct SessionCreated {
    pub session_id: Uuid,
}

/// Creates a canvas session. No body. With an access token, the session
/// belongs to that user: nobody else can see or change it.
#[utoipa::path(post, path = "/session", tag = "canvas",
    responses(
        (status = 200, body = SessionCreated),
        (status = 401, description = "Missing (AUTH_MODE=required) or invalid access token", body = common::error::ErrorBody),
        (status = 503, description = "Database unavailable", body = common::error::ErrorBody),
        (status = 429, description = "Rate limit reached; see `Retry-After`", body = common::error::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ))]
pub async fn create_session(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<SessionCreated>, ApiError> {
    let session_id = Uuid::new_v4();
    app.db
        .create_session(session_id, caller.user_id.as_deref())
        .await?;
    Ok(Json(SessionCreated { session_id }))
}
