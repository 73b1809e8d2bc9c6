//! `GET /api/v1/jobs/{job_id}`: what the frontend polls every second.

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::request::Parts,
};
use common::{ApiError, caller::Caller};

use super::AppState;
pub use crate::jobs::view::JobView;
use crate::{
    jobs::JobStatus,
    tasks::{StatusChange, TaskRecord, Transition},
};

/// The `{job_id}` of a path. Ids are UUIDs: anything much longer, or an
/// idempotency record's id, cannot be a job, and must not reach the store as
/// a key of arbitrary size; nor can the store's own records (`idempotency#…`,
/// `quota#…`). A segment that is not UTF-8 (`%FF`) cannot be
/// one either: 404 like any other unknown id, rather than axum's plain-text
/// 400.
pub struct JobId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let not_found = || ApiError::not_found("Job not found");
        let Path(job_id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| not_found())?;
        if job_id.len() > 64 || job_id.contains('#') {
            return Err(not_found());
        }
        Ok(Self(job_id))
    }
}

/// The job's record, if `caller` may see it: another user's job is "not
/// found", exactly as an unknown id. Jobs without an owner (anonymous, or
/// from before accounts) are anyone's who holds the id.
pub async fn visible_job(
    app: &crate::App,
    caller: &Caller,
    job_id: &str,
) -> Result<TaskRecord, ApiError> {
    match app.tasks.get(job_id).await? {
        Some(record) if caller.may_access(record.owner_id.as_deref()) => Ok(record),
        _ => Err(ApiError::not_found("Job not found")),
    }
}

/// A job's status; 404 `{"detail":"Job not found"}` for an unknown id (or
/// another user's job).
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "The id a submit returned")),
    responses(
        (status = 200, body = JobView),
        (status = 401, description = "Missing (AUTH_MODE=required) or invalid access token", body = common::error::ErrorBody),
        (status = 404, description = "Job not found", body = common::error::ErrorBody),
        (status = 503, description = "Task store unavailable", body = common::error::ErrorBody),
    ))]
pub async fn get_job(
    State(app): State<AppState>,
    caller: Caller,
    JobId(job_id): JobId,
) -> Result<Json<JobView>, ApiError> {
    let record = visible_job(&app, &caller, &job_id).await?;
    Ok(Json(JobView::from(record)))
}

/// Cancels a job that is not final yet: it becomes `cancelled` (read as
/// `failed` with `cancelled: true` by `GET /api/v1/jobs/{id}`). A worker
/// that receives it skips it; a running one stops at its next heartbeat.
#[utoipa::path(post, path = "/api/v1/jobs/{job_id}/cancel", tag = "jobs",
    params(("job_id" = String, Path, description = "The id a submit returned")),
    responses(
        (status = 200, body = JobView),
        (status = 401, description = "Missing (AUTH_MODE=required) or invalid access token", body = common::error::ErrorBody),
        (status = 404, description = "Job not found", body = common::error::ErrorBody),
        (status = 409, description = "The job is already final", body = common::error::ErrorBody),
        (status = 503, description = "Task store unavailable", body = common::error::ErrorBody),
    ))]
pub async fn cancel_job(
    State(app): State<AppState>,
    caller: Caller,
    JobId(job_id): JobId,
) -> Result<Json<JobView>, ApiError> {
    // Only who may see the job may cancel it.
    visible_job(&app, &caller, &job_id).await?;
    let change =
        StatusChange::to(JobStatus::Cancelled, crate::unix_now()).error("cancelled by request");
    match app
        .tasks
        .transition(
            &job_id,
            &[JobStatus::Pending, JobStatus::Processing],
            &change,
        )
        .await?
    {
        Transition::Applied => {
            crate::metrics::status_changed("active", "cancelled");
        }
        Transition::Refused { current: None } => {
            // Either no such job, or a record without status (written by an
            // adapter alone): neither can be cancelled.
            return match app.tasks.get(&job_id).await? {
                None => Err(ApiError::not_found("Job not found")),
                Some(_) => Err(ApiError::conflict(
                    "Job has no status that can be cancelled",
                )),
            };
        }
        Transition::Refused {
            current: Some(status),
        } => {
            return Err(ApiError::conflict(format!("Job is already {status}")));
        }
    }
    let record = app
        .tasks
        .get(&job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Job not found"))?;
    Ok(Json(JobView::from(record)))
}
