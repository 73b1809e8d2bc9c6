//! `GET /`, `GET /health` (liveness: the process serves), `GET /ready`
//! (readiness: the database and the object store answer) and `GET /metrics`
//! (Prometheus).

use axum::{Json, extract::State, http::header, response::IntoResponse};
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
        "metrics": "/metrics",
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

/// Prometheus metrics: uploads and their bytes by result, the size of
/// stored uploads, request latency by route and status, database and object
/// store call latency by operation and result.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
