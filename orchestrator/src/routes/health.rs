//! Operations: `GET /`, liveness (`/health`, `/api/v1/health`), readiness
//! (`/ready`: task store and queues answer) and Prometheus `/metrics`.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

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
    // SIGTERM came: the load balancer must stop routing here.
    if common::http::lifecycle().is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "detail": "shutting down" })),
        )
            .into_response();
    }
    let check = |result: Result<Result<(), String>, tokio::time::error::Elapsed>| match result {
        Ok(Ok(())) => "ok",
        Ok(Err(cause)) => {
            tracing::warn!(%cause, "readiness check failed");
            "unavailable"
        }
        Err(_) => "unavailable",
    };
    let (tasks, gpu_queue, cpu_queue) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, async {
            app.tasks.ping().await.map_err(|e| e.to_string())
        }),
        tokio::time::timeout(CHECK_TIMEOUT, async {
            app.gpu_queue.ping().await.map_err(|e| e.to_string())
        }),
        tokio::time::timeout(CHECK_TIMEOUT, async {
            app.cpu_queue.ping().await.map_err(|e| e.to_string())
        }),
    );
    let checks = [
        ("task store", check(tasks)),
        ("GPU queue", check(gpu_queue)),
        ("CPU queue", check(cpu_queue)),
    ];
    let down: Vec<&str> = checks
        .iter()
        .filter(|(_, s)| *s != "ok")
        .map(|(n, _)| *n)
        .collect();
    let checks_json = json!({
        "task_store": checks[0].1,
        "gpu_queue": checks[1].1,
        "cpu_queue": checks[2].1,
    });
    let answer = if down.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "checks": checks_json })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "detail": format!("not ready: {} unavailable", down.join(", ")), "checks": checks_json }),
            ),
        )
    };
    answer.into_response()
}

/// Prometheus metrics: jobs submitted by kind, status transitions, queue
/// depths, GPU state, HTTP latency.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    crate::telemetry::gpu_state(&app.gpu.status());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics_handle().render(),
    )
}
