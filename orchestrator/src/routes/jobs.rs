//! `GET /api/v1/jobs/{job_id}`: what the frontend polls every second.

use axum::{
    Json,
    extract::{Path, State},
};
use common::ApiError;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::{jobs::kinds::KINDS, tasks::TaskRecord};

/// A job as the frontend reads it. The first four fields are the old
/// contract; the rest are additions.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub job_id: String,
    /// `pending`, `processing`, `completed`, `failed` (or `unknown`).
    pub status: String,
    /// The record's `result_url`, else its `result_s3_uri`.
    pub result_url: Option<String>,
    /// The record's `error`, else its `error_message`.
    pub error: Option<String>,
    /// Unix seconds.
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// Deliveries, when known (set when a job gives up).
    pub attempts: Option<i64>,
}

impl From<TaskRecord> for JobView {
    fn from(record: TaskRecord) -> Self {
        // Records written by the old orchestrator have no kind/queue: derive
        // them from job_type (the api_path).
        let known = record
            .job_type
            .as_deref()
            .and_then(|job_type| KINDS.iter().find(|k| k.api_path == job_type));
        Self {
            status: record.status.unwrap_or_else(|| "unknown".to_owned()),
            result_url: record.result_url.or(record.result_s3_uri),
            error: record.error.or(record.error_message),
            created_at: record.created_at,
            updated_at: record.updated_at,
            kind: record.kind.or_else(|| known.map(|k| k.name.to_owned())),
            queue: record
                .queue
                .or_else(|| known.map(|k| k.queue.as_str().to_owned())),
            attempts: record.attempts,
            job_id: record.task_id,
        }
    }
}

/// A job's status; 404 `{"detail":"Job not found"}` for an unknown id.
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "The id a submit returned")),
    responses(
        (status = 200, body = JobView),
        (status = 404, description = "Job not found", body = common::error::ErrorBody),
    ))]
pub async fn get_job(
    State(app): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    // Ids are UUIDs; anything else cannot be a job (and must not reach the
    // store as a key of arbitrary size).
    if job_id.len() > 64 || job_id.starts_with("idempotency#") {
        return Err(ApiError::not_found("Job not found"));
    }
    match app.tasks.get(&job_id).await? {
        Some(record) => Ok(Json(JobView::from(record))),
        None => Err(ApiError::not_found("Job not found")),
    }
}
