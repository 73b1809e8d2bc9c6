//! Operations: `GET /`, liveness (`/health`, `/api/v1/health`), readiness
//! (`/ready`: task store and queues answer) and Prometheus `/metrics`.

use axum::{Json, extract::State, http::header, response::IntoResponse};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::AppState;

/// What this service is, which backends it runs on, and where its API is
/// described.
#[utoipa::path(get, path = "/", tag = "operations", responses((status = 200, description = "Service, version, backends")))]
pub async fn root(State(app): State<AppState>) -> Json<Value> {
    Json(json!({
        "service": "orchestrator",
        "version": env!("CARGO_PKG_VERSION"),
        "backends": app.backends,
        "openapi": "/openapi.json",
    }))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "healthy")]
    status: &'static str,
    #[schema(example = "orchestrator")]
    service: &'static str,
}

fn healthy() -> Json<Health> {
    Json(Health {
        status: "healthy",
        service: "orchestrator",
    })
}

/// Liveness: 200 while the process serves; checks no dependency.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    healthy()
}

/// Liveness, at the old path.
#[utoipa::path(get, path = "/api/v1/health", tag = "operations", responses((status = 200, body = Health)))]
pub async fn health_v1() -> Json<Health> {
    healthy()
}

/// Readiness: 200 when the task store and both queues answer, else 503
/// naming what is down.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, description = "Every part answers"), (status = 503, description = "`detail` names the part that is down")))]
pub async fn ready(State(app): State<AppState>) -> axum::response::Response {
    app.readiness.respond().await
}

/// Prometheus metrics: jobs submitted by kind, status transitions, queue
/// depths, GPU state, HTTP latency.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    crate::metrics::gpu_state(&app.gpu.status());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::metrics_handle().render(),
    )
}
