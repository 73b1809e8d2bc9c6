//! The GPU host: its cached state for anyone, start/stop for operators
//! holding `ADMIN_TOKEN` (disabled when none is set).

use axum::{Json, extract::State, http::HeaderMap};
use common::ApiError;
use gpu::GpuStatus;

use super::AppState;

/// The GPU host as the controller last saw it: state, IPs, last activity,
/// idle countdown, last error. Served from cache; no EC2 call.
#[utoipa::path(get, path = "/api/v1/gpu", tag = "gpu", responses((status = 200, body = GpuStatus)))]
pub async fn gpu_status(State(app): State<AppState>) -> Json<GpuStatus> {
    Json(app.gpu.status())
}

/// The old debug endpoint, kept for the tools that call it.
#[utoipa::path(get, path = "/debug/gpu-instance", tag = "gpu", responses((status = 200, body = GpuStatus)))]
pub async fn debug_gpu_instance(State(app): State<AppState>) -> Json<GpuStatus> {
    Json(app.gpu.status())
}

/// Starts the GPU host now (and restarts its idle clock).
#[utoipa::path(post, path = "/api/v1/gpu/start", tag = "gpu",
    security(("admin_token" = [])),
    responses(
        (status = 200, body = GpuStatus),
        (status = 401, description = "Missing or wrong bearer token", body = common::error::ErrorBody),
        (status = 403, description = "No ADMIN_TOKEN configured: disabled", body = common::error::ErrorBody),
        (status = 503, description = "EC2 refused or is unreachable", body = common::error::ErrorBody),
    ))]
pub async fn start_gpu(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<GpuStatus>, ApiError> {
    authorize(&app, &headers)?;
    app.gpu
        .start_now()
        .await
        .map(Json)
        .map_err(host_unavailable)
}

/// Stops the GPU host now, even if work is running: an operator's decision.
#[utoipa::path(post, path = "/api/v1/gpu/stop", tag = "gpu",
    security(("admin_token" = [])),
    responses(
        (status = 200, body = GpuStatus),
        (status = 401, description = "Missing or wrong bearer token", body = common::error::ErrorBody),
        (status = 403, description = "No ADMIN_TOKEN configured: disabled", body = common::error::ErrorBody),
        (status = 503, description = "EC2 refused or is unreachable", body = common::error::ErrorBody),
    ))]
pub async fn stop_gpu(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<GpuStatus>, ApiError> {
    authorize(&app, &headers)?;
    app.gpu.stop_now().await.map(Json).map_err(host_unavailable)
}

fn host_unavailable(e: gpu::HostError) -> ApiError {
    ApiError::unavailable("GPU host", format!("{}: {}", e.code, e.message))
}

/// `Authorization: Bearer $ADMIN_TOKEN`, compared in constant time.
fn authorize(app: &crate::App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = app.admin_token.as_deref() else {
        return Err(ApiError::forbidden(
            "GPU control is disabled: no ADMIN_TOKEN is configured",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let same = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "A valid `Authorization: Bearer <ADMIN_TOKEN>` header is required",
        ))
    }
}
