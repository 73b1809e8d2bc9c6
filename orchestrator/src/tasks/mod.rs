//! The task store: one record per job, the source of truth for its status.
//! A SQLite table by default, the DynamoDB table `task_store` in production
//! (which the worker adapters also write). Every status change made here is
//! conditional on the status it replaces, and a final status is never
//! overwritten.

mod dynamodb;
pub(crate) mod sqlite;

pub use dynamodb::DynamoTaskStore;
pub use sqlite::SqliteTaskStore;

use serde::Serialize;

use crate::domain::JobKind;
pub use crate::domain::{JobStatus, StoredStatus};

/// A job's record as stored. Items written by an old adapter's `UpdateItem`
/// alone may lack everything but `task_id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TaskRecord {
    pub task_id: String,
    /// `None` when the item has no status attribute.
    pub status: Option<StoredStatus>,
    /// The job's `api_path`.
    pub job_type: Option<String>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub result_url: Option<String>,
    pub result_s3_uri: Option<String>,
    pub error: Option<String>,
    pub error_message: Option<String>,
    pub attempts: Option<i64>,
    /// The backend's own job id, as the GPU adapter records it.
    pub comfy_job_id: Option<String>,
    /// The backend's own job id, as the CPU adapter records it.
    pub api_job_id: Option<String>,
    /// The Supabase user who submitted the job; `None` for an anonymous job
    /// (or one from before accounts), which anyone holding its id may read.
    pub owner_id: Option<String>,
    /// Written `pending` before its queue message was known to be sent (the
    /// AWS submit path): no worker of ours runs it until the submit confirms
    /// it, and the settle sweep fails it if the submit never did.
    pub awaiting_queue: bool,
}

/// A new `pending` job.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub task_id: String,
    /// Its kind: the record's `kind`, `queue` and `job_type` (`api_path`).
    pub kind: &'static JobKind,
    pub now: i64,
    /// The submitter's `sub`, when signed in.
    pub owner_id: Option<String>,
    /// Its message is sent after the record is written, by a separate call
    /// (see `TaskRecord::awaiting_queue`).
    pub awaiting_queue: bool,
}

/// A status change and what comes with it.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub to: JobStatus,
    pub error_message: Option<String>,
    pub attempts: Option<i64>,
    /// Attributes the worker writes beside the status, as the old adapters did.
    pub details: Vec<(Detail, String)>,
    pub now: i64,
}

impl StatusChange {
    pub fn to(to: JobStatus, now: i64) -> Self {
        Self {
            to,
            error_message: None,
            attempts: None,
            details: vec![],
            now,
        }
    }

    pub fn error(mut self, message: impl Into<String>) -> Self {
        self.error_message = Some(message.into());
        self
    }

    /// How many deliveries the job has had, when the change knows it.
    pub fn attempts(mut self, attempts: i64) -> Self {
        self.attempts = Some(attempts);
        self
    }

    pub fn detail(mut self, detail: Detail, value: impl Into<String>) -> Self {
        self.details.push((detail, value.into()));
        self
    }
}

/// The attributes a status change may set besides the status; a closed set,
/// so their names can go into SQL and update expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// The GPU backend's job id (old GPU adapter's name).
    ComfyJobId,
    /// The CPU backend's job id (old CPU adapter's name).
    ApiJobId,
    /// A CPU job's result.
    ResultUrl,
    /// A GPU job's result (an https CDN URL despite the name).
    ResultS3Uri,
}

impl Detail {
    pub fn attribute(self) -> &'static str {
        match self {
            Self::ComfyJobId => "comfy_job_id",
            Self::ApiJobId => "api_job_id",
            Self::ResultUrl => "result_url",
            Self::ResultS3Uri => "result_s3_uri",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Applied,
    /// The record was not in one of the expected states (or not there):
    /// nothing was written. Carries the status found, if any.
    Refused {
        current: Option<StoredStatus>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyClaim {
    /// The key is new (or its record expired): it now maps to our task.
    Claimed,
    /// The key was used before, within its lifetime.
    Existing {
        task_id: String,
        fingerprint: String,
    },
}

/// One client's jobs on one UTC day, against the daily quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaCount {
    /// Counted; this many jobs (this one included) so far today.
    Counted { used: u64 },
    /// The day's quota is used up; nothing was counted.
    Exhausted,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskStoreError {
    #[error("task {0} already exists")]
    AlreadyExists(String),
    #[error("task store unavailable: {0}")]
    Unavailable(String),
    #[error("task store error: {0}")]
    Other(String),
}

#[async_trait::async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Writes a `pending` record; fails with `AlreadyExists` if the id is taken.
    async fn create(&self, task: &NewTask) -> Result<(), TaskStoreError>;

    /// A strongly consistent read.
    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, TaskStoreError>;

    /// Several records in as few round trips as the store allows (status
    /// push watches many jobs at once). Unknown ids are left out.
    async fn get_many(&self, task_ids: &[String]) -> Result<Vec<TaskRecord>, TaskStoreError>;

    /// Changes the status only if it is currently one of `from`.
    async fn transition(
        &self,
        task_id: &str,
        from: &[JobStatus],
        change: &StatusChange,
    ) -> Result<Transition, TaskStoreError>;

    /// Changes the status only if the job is still in `status` with no
    /// update since `before` (Unix s), so an adapter's update racing the
    /// reaper wins.
    async fn fail_if_stale(
        &self,
        task_id: &str,
        status: JobStatus,
        before: i64,
        change: &StatusChange,
    ) -> Result<Transition, TaskStoreError>;

    /// Jobs in `status` whose last update is older than `before` (Unix s).
    async fn stale(
        &self,
        status: JobStatus,
        before: i64,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, TaskStoreError>;

    /// GPU work in the store: how many jobs of these `job_type`s are
    /// `processing`, and the latest `updated_at` among those created since
    /// `since` (Unix s).
    async fn gpu_activity(
        &self,
        gpu_job_types: &[&str],
        since: i64,
    ) -> Result<(u64, Option<i64>), TaskStoreError>;

    /// Binds an idempotency key (hashed) to a task for `ttl_seconds`.
    async fn claim_idempotency_key(
        &self,
        key_hash: &str,
        fingerprint: &str,
        task_id: &str,
        now: i64,
        ttl_seconds: i64,
    ) -> Result<IdempotencyClaim, TaskStoreError>;

    /// Frees a key claimed for `task_id` when that job could not be
    /// accepted, so a retry with the same key is a fresh submit.
    async fn release_idempotency_key(
        &self,
        key_hash: &str,
        task_id: &str,
    ) -> Result<(), TaskStoreError>;

    /// Counts one job against `client`'s quota for `day` (`YYYY-MM-DD`,
    /// UTC), atomically and only while fewer than `limit` are counted, so
    /// several orchestrators on one store share one count. The count may be
    /// forgotten after `expires_at` (Unix s).
    async fn count_daily_job(
        &self,
        client: &str,
        day: &str,
        limit: u64,
        expires_at: i64,
    ) -> Result<QuotaCount, TaskStoreError>;

    /// Gives back a count taken for a job that was then not accepted.
    async fn uncount_daily_job(&self, client: &str, day: &str) -> Result<(), TaskStoreError>;

    /// Clears `awaiting_queue` once the job's message is sent, only while
    /// the job is `pending` (idempotent: a second confirm is `Applied` too).
    async fn confirm_queued(&self, task_id: &str) -> Result<Transition, TaskStoreError>;

    /// Fails a job whose message may not exist: only while it is `pending`
    /// and still awaiting its queue message, so a confirm racing it wins and
    /// a confirmed job is never failed this way.
    async fn fail_unqueued(
        &self,
        task_id: &str,
        change: &StatusChange,
    ) -> Result<Transition, TaskStoreError>;

    /// `pending` jobs still awaiting their queue message, created before
    /// `before` (Unix s): submits that never settled.
    async fn unqueued(&self, before: i64, limit: usize) -> Result<Vec<TaskRecord>, TaskStoreError>;

    /// Readiness: one round trip.
    async fn ping(&self) -> Result<(), TaskStoreError>;
}
