//! `GET /`, `GET /health` (liveness: the process serves) and `GET /ready`
//! (readiness: the database and the object store answer).

use axum::{Json, extract::State};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::AppState;

/// What this service is and where its API is described.
#[utoipa::path(get, path = "/", tag = "operations",
    responses((status = 200, description = "Service name, version and links")))]
pub async fn root() -> Json<Value> {
    Json(json!({
        "service": "canvas-service",
        "version": env!("CARGO_PKG_VERSION"),
        "openapi": "/openapi.json",
        "health": "/health",
        "ready": "/ready",
    }))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "healthy")]
    status: &'static str,
    #[schema(example = "canvas-service")]
    service: &'static str,
}

/// Liveness: 200 while the process serves requests. It checks no
/// dependency, so a database blip does not get the task killed.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "healthy",
        service: "canvas-service",
    })
}

/// Readiness: 200 when the database and the object store both answer,
/// else 503 naming the part that is down.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Every part answers"),
        (status = 503, description = "A part is down; `detail` names it"),
    ))]
pub async fn ready(State(app): State<AppState>) -> axum::response::Response {
    app.readiness.respond().await
}
