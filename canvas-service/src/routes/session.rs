//! `POST /session`: starts a new, empty canvas.

use axum::{Json, extract::State};
use common::ApiError;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;

#[derive(Serialize, ToSchema)]
pub struct SessionCreated {
    pub session_id: Uuid,
}

/// Creates a canvas session. No body.
#[utoipa::path(post, path = "/session", tag = "canvas",
    responses(
        (status = 200, body = SessionCreated),
        (status = 503, description = "Database unavailable", body = common::error::ErrorBody),
        (status = 429, description = "Rate limit reached; see `Retry-After`", body = common::error::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ))]
pub async fn create_session(State(app): State<AppState>) -> Result<Json<SessionCreated>, ApiError> {
    let session_id = Uuid::new_v4();
    app.db.create_session(session_id).await?;
    Ok(Json(SessionCreated { session_id }))
}
