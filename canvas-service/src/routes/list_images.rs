//! `GET /images?session_id=…`: the session's images, oldest first.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use common::{ApiError, caller::Caller};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, ImageOut, is_someone_elses, parse_session_id};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The canvas session (UUID).
    #[param(format = Uuid)]
    session_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct ImageList {
    pub items: Vec<ImageOut>,
}

/// Lists a session's images in insertion order (later ones are drawn on
/// top). An unknown session has no images; another user's is 404.
#[utoipa::path(get, path = "/images", tag = "canvas", params(ListQuery),
    responses(
        (status = 200, body = ImageList),
        (status = 401, description = "Missing (AUTH_MODE=required) or invalid access token", body = common::error::ErrorBody),
        (status = 404, description = "Another user's session", body = common::error::ErrorBody),
        (status = 422, description = "Missing or malformed session_id", body = common::error::ErrorBody),
        (status = 503, description = "Database or object store unavailable", body = common::error::ErrorBody),
    ))]
pub async fn list_images(
    State(app): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ImageList>, ApiError> {
    let Query(query) = query?;
    let session_id = parse_session_id(&query.session_id)?;
    if is_someone_elses(&app, &caller, session_id).await? {
        return Err(ApiError::not_found("Session not found"));
    }
    let records = app.db.list_images(session_id).await?;
    let mut items = Vec::with_capacity(records.len());
    for record in records {
        items.push(ImageOut::from_record(&app, record).await?);
    }
    Ok(Json(ImageList { items }))
}
