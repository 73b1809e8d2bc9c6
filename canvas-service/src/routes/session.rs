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
    ))]
pub async fn create_session(State(app): State<AppState>) -> Result<Json<SessionCreated>, ApiError> {
    let session_id = Uuid::new_v4();
    app.db.create_session(session_id).await?;
    Ok(Json(SessionCreated { session_id }))
}
