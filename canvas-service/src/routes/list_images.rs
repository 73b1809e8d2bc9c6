//! `GET /images?session_id=…`: the session's images, oldest first.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use common::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, ImageOut, parse_session_id};

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
/// top). An unknown session has no images.
#[utoipa::path(get, path = "/images", tag = "canvas", params(ListQuery),
    responses(
        (status = 200, body = ImageList),
        (status = 422, description = "Missing or malformed session_id", body = common::error::ErrorBody),
        (status = 503, description = "Database or object store unavailable", body = common::error::ErrorBody),
    ))]
pub async fn list_images(
    State(app): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ImageList>, ApiError> {
    let Query(query) = query?;
    let session_id = parse_session_id(&query.session_id)?;
    let records = app.db.list_images(session_id).await?;
    let mut items = Vec::with_capacity(records.len());
    for record in records {
        items.push(ImageOut::from_record(&app, record).await?);
    }
    Ok(Json(ImageList { items }))
}
