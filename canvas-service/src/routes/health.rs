//! `GET /`, `GET /health` (liveness: the process serves) and `GET /ready`
//! (readiness: the database and the object store answer).

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::AppState;

/// How long readiness waits for a part before calling it down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

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
    // SIGTERM came: the load balancer must stop routing here.
    if common::http::lifecycle().is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "detail": "shutting down" })),
        )
            .into_response();
    }
    let (database, objects) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, app.db.ping()),
        tokio::time::timeout(CHECK_TIMEOUT, app.store.check()),
    );
    let database = outcome(
        database
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string())),
    );
    let objects = outcome(
        objects
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string())),
    );
    let down: Vec<&str> = [("database", &database), ("object store", &objects)]
        .into_iter()
        .filter(|(_, state)| **state != "ok")
        .map(|(name, _)| name)
        .collect();
    let checks = json!({ "database": database, "object_store": objects });
    let answer = if down.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "checks": checks })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "detail": format!("not ready: {} unavailable", down.join(" and ")), "checks": checks }),
            ),
        )
    };
    answer.into_response()
}

/// "ok", or "unavailable" with the cause logged (causes may name hosts).
fn outcome(result: Result<(), String>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(cause) => {
            tracing::warn!(%cause, "readiness check failed");
            "unavailable"
        }
    }
}
