//! The job as clients read it, from its record: one view for the polling
//! endpoint, the submit's answer to a replayed key, and the event stream.

use serde::Serialize;
use utoipa::ToSchema;

use super::{JobStatus, kinds::KINDS};
use crate::tasks::TaskRecord;

/// A job as the frontend reads it. The first four fields are the old
/// contract; the rest are additions.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JobView {
    pub job_id: String,
    /// `pending`, `processing`, `completed`, `failed` (or `unknown`). A
    /// cancelled job reads `failed` here, with `cancelled: true`: the old
    /// frontend stops polling only on `completed` or `failed`.
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
    /// Deliveries, when known.
    pub attempts: Option<i64>,
    /// Present (true) only for a cancelled job.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    /// An error the record carries that is not what finally happened: a
    /// job cancelled while an old adapter ran it ends `completed` (the
    /// adapter's write is unconditional), and its cancel note shows here,
    /// not in `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl JobView {
    /// The status as stored, `cancelled` included (for new clients: the
    /// event stream).
    pub fn stored_status(&self) -> &str {
        if self.cancelled {
            "cancelled"
        } else {
            &self.status
        }
    }

    /// Whether the job can change no more.
    pub fn is_final(&self) -> bool {
        JobStatus::parse(self.stored_status()).is_some_and(JobStatus::is_final)
    }
}

impl From<TaskRecord> for JobView {
    fn from(record: TaskRecord) -> Self {
        // Records written by the old orchestrator have no kind/queue: derive
        // them from job_type (the api_path).
        let known = record
            .job_type
            .as_deref()
            .and_then(|job_type| KINDS.iter().find(|k| k.api_path == job_type));
        let cancelled = record
            .status
            .as_ref()
            .is_some_and(|s| s.is(JobStatus::Cancelled));
        let completed = record
            .status
            .as_ref()
            .is_some_and(|s| s.is(JobStatus::Completed));
        let error = record.error.or(record.error_message);
        // A completed job has no error, whatever was written before.
        let (error, note) = if completed {
            (None, error)
        } else {
            (error, None)
        };
        Self {
            status: if cancelled {
                JobStatus::Failed.as_str().to_owned()
            } else {
                record
                    .status
                    .map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned())
            },
            result_url: record.result_url.or(record.result_s3_uri),
            error: if cancelled {
                error.or_else(|| Some("cancelled".to_owned()))
            } else {
                error
            },
            cancelled,
            note,
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
