//! The embedded task store: the `tasks` table of the orchestrator's SQLite
//! file. Conditional writes are single `UPDATE … WHERE status IN (…)`
//! statements, atomic in SQLite.

use sqlx::{Row, sqlite::SqliteRow};

use super::{
    IdempotencyClaim, NewTask, QuotaCount, StatusChange, StoredStatus, TaskRecord, TaskStore,
    TaskStoreError, Transition,
};
use common::sqlite::SqlitePools;

use super::JobStatus;

pub struct SqliteTaskStore {
    pools: SqlitePools,
}

impl SqliteTaskStore {
    pub fn new(pools: SqlitePools) -> Self {
        Self { pools }
    }

    /// Applied when the conditional update touched the row, else refused
    /// with the status found.
    async fn outcome(
        &self,
        task_id: &str,
        rows_affected: u64,
    ) -> Result<Transition, TaskStoreError> {
        if rows_affected > 0 {
            return Ok(Transition::Applied);
        }
        Ok(Transition::Refused {
            current: self.current_status(task_id).await?,
        })
    }

    async fn current_status(&self, task_id: &str) -> Result<Option<StoredStatus>, TaskStoreError> {
        Ok(self.get(task_id).await?.and_then(|r| r.status))
    }
}

pub(crate) fn sqlite_error(err: sqlx::Error) -> TaskStoreError {
    if common::sqlite::is_unavailable(&err) {
        TaskStoreError::Unavailable(err.to_string())
    } else {
        TaskStoreError::Other(err.to_string())
    }
}

/// Inserts a new record in `status` (`pending`, or `failed` for a job that
/// could not be queued), on any connection: the embedded queue writes the
/// record and its message in one transaction with it.
pub(crate) async fn insert_task(
    conn: &mut sqlx::SqliteConnection,
    task: &NewTask,
    status: JobStatus,
    error_message: Option<&str>,
) -> Result<(), TaskStoreError> {
    let done = sqlx::query(
        "INSERT INTO tasks (task_id, status, job_type, kind, queue, created_at, updated_at, owner_id, error_message, awaiting_queue)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9) ON CONFLICT (task_id) DO NOTHING",
    )
    .bind(&task.task_id)
    .bind(status.as_str())
    .bind(task.kind.api_path)
    .bind(task.kind.name)
    .bind(task.kind.queue.as_str())
    .bind(task.now)
    .bind(&task.owner_id)
    .bind(error_message)
    .bind(task.awaiting_queue)
    .execute(&mut *conn)
    .await
    .map_err(sqlite_error)?;
    if done.rows_affected() == 0 {
        return Err(TaskStoreError::AlreadyExists(task.task_id.clone()));
    }
    Ok(())
}

const COLUMNS: &str = "task_id, status, job_type, kind, queue, created_at, updated_at, result_url, \
     result_s3_uri, error, error_message, attempts, comfy_job_id, api_job_id, owner_id, awaiting_queue";

fn record(row: &SqliteRow) -> Result<TaskRecord, sqlx::Error> {
    Ok(TaskRecord {
        task_id: row.try_get("task_id")?,
        status: row
            .try_get::<Option<String>, _>("status")?
            .map(StoredStatus::from),
        job_type: row.try_get("job_type")?,
        kind: row.try_get("kind")?,
        queue: row.try_get("queue")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        result_url: row.try_get("result_url")?,
        result_s3_uri: row.try_get("result_s3_uri")?,
        error: row.try_get("error")?,
        error_message: row.try_get("error_message")?,
        attempts: row.try_get("attempts")?,
        comfy_job_id: row.try_get("comfy_job_id")?,
        api_job_id: row.try_get("api_job_id")?,
        owner_id: row.try_get("owner_id")?,
        awaiting_queue: row.try_get("awaiting_queue")?,
    })
}

#[async_trait::async_trait]
impl TaskStore for SqliteTaskStore {
    async fn create(&self, task: &NewTask) -> Result<(), TaskStoreError> {
        let mut conn = self.pools.writes.acquire().await.map_err(sqlite_error)?;
        insert_task(&mut conn, task, JobStatus::Pending, None).await
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, TaskStoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tasks WHERE task_id = $1"
        )))
        .bind(task_id)
        .fetch_optional(&self.pools.reads)
        .await
        .map_err(sqlite_error)?;
        row.as_ref().map(record).transpose().map_err(sqlite_error)
    }

    async fn get_many(&self, task_ids: &[String]) -> Result<Vec<TaskRecord>, TaskStoreError> {
        let mut records = Vec::with_capacity(task_ids.len());
        // SQLite binds at most 32766 parameters; stay well below.
        for chunk in task_ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {COLUMNS} FROM tasks WHERE task_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            let rows = query
                .fetch_all(&self.pools.reads)
                .await
                .map_err(sqlite_error)?;
            for row in &rows {
                records.push(record(row).map_err(sqlite_error)?);
            }
        }
        Ok(records)
    }

    async fn transition(
        &self,
        task_id: &str,
        from: &[JobStatus],
        change: &StatusChange,
    ) -> Result<Transition, TaskStoreError> {
        // `from` never holds a final status (callers pass pending/processing),
        // so a final record is never matched.
        let allowed: Vec<&str> = from
            .iter()
            .filter(|s| !s.is_final())
            .map(|s| s.as_str())
            .collect();
        let placeholders: Vec<String> = (0..allowed.len()).map(|i| format!("${}", i + 5)).collect();
        // Detail columns come from a closed enum, never from input.
        let details: String = change
            .details
            .iter()
            .enumerate()
            .map(|(i, (detail, _))| {
                format!(", {} = ${}", detail.attribute(), allowed.len() + 6 + i)
            })
            .collect();
        let sql = format!(
            "UPDATE tasks SET status = $1, updated_at = $2,
                 error_message = COALESCE($3, error_message), attempts = COALESCE($4, attempts){details}
             WHERE task_id = ${} AND status IN ({})",
            allowed.len() + 5,
            if placeholders.is_empty() {
                "NULL".to_owned()
            } else {
                placeholders.join(", ")
            }
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(change.to.as_str())
            .bind(change.now)
            .bind(&change.error_message)
            .bind(change.attempts);
        for status in &allowed {
            query = query.bind(*status);
        }
        query = query.bind(task_id);
        for (_, value) in &change.details {
            query = query.bind(value);
        }
        let done = query
            .execute(&self.pools.writes)
            .await
            .map_err(sqlite_error)?;
        self.outcome(task_id, done.rows_affected()).await
    }

    async fn fail_if_stale(
        &self,
        task_id: &str,
        status: JobStatus,
        before: i64,
        change: &StatusChange,
    ) -> Result<Transition, TaskStoreError> {
        // A final status is never overwritten, even when named.
        if status.is_final() {
            return Ok(Transition::Refused {
                current: self.current_status(task_id).await?,
            });
        }
        let done = sqlx::query(
            "UPDATE tasks SET status = $1, updated_at = $2, error_message = $3
             WHERE task_id = $4 AND status = $5 AND COALESCE(updated_at, created_at, 0) < $6",
        )
        .bind(change.to.as_str())
        .bind(change.now)
        .bind(&change.error_message)
        .bind(task_id)
        .bind(status.as_str())
        .bind(before)
        .execute(&self.pools.writes)
        .await
        .map_err(sqlite_error)?;
        self.outcome(task_id, done.rows_affected()).await
    }

    async fn stale(
        &self,
        status: JobStatus,
        before: i64,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, TaskStoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tasks WHERE status = $1 AND COALESCE(updated_at, created_at, 0) < $2
             ORDER BY updated_at LIMIT $3"
        )))
        .bind(status.as_str())
        .bind(before)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pools.reads)
        .await
        .map_err(sqlite_error)?;
        rows.iter()
            .map(record)
            .collect::<Result<_, _>>()
            .map_err(sqlite_error)
    }

    async fn confirm_queued(&self, task_id: &str) -> Result<Transition, TaskStoreError> {
        let done =
            sqlx::query("UPDATE tasks SET awaiting_queue = 0 WHERE task_id = $1 AND status = $2")
                .bind(task_id)
                .bind(JobStatus::Pending.as_str())
                .execute(&self.pools.writes)
                .await
                .map_err(sqlite_error)?;
        self.outcome(task_id, done.rows_affected()).await
    }

    async fn fail_unqueued(
        &self,
        task_id: &str,
        change: &StatusChange,
    ) -> Result<Transition, TaskStoreError> {
        let done = sqlx::query(
            "UPDATE tasks SET status = $1, updated_at = $2, error_message = $3, awaiting_queue = 0
             WHERE task_id = $4 AND status = $5 AND awaiting_queue = 1",
        )
        .bind(change.to.as_str())
        .bind(change.now)
        .bind(&change.error_message)
        .bind(task_id)
        .bind(JobStatus::Pending.as_str())
        .execute(&self.pools.writes)
        .await
        .map_err(sqlite_error)?;
        self.outcome(task_id, done.rows_affected()).await
    }

    async fn unqueued(&self, before: i64, limit: usize) -> Result<Vec<TaskRecord>, TaskStoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tasks WHERE status = $1 AND awaiting_queue = 1 AND created_at < $2
             ORDER BY created_at LIMIT $3"
        )))
        .bind(JobStatus::Pending.as_str())
        .bind(before)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pools.reads)
        .await
        .map_err(sqlite_error)?;
        rows.iter()
            .map(record)
            .collect::<Result<_, _>>()
            .map_err(sqlite_error)
    }

    async fn gpu_activity(
        &self,
        gpu_job_types: &[&str],
        since: i64,
    ) -> Result<(u64, Option<i64>), TaskStoreError> {
        let placeholders: Vec<String> = (2..gpu_job_types.len() + 2)
            .map(|i| format!("${i}"))
            .collect();
        let sql = format!(
            "SELECT COALESCE(SUM(status = 'processing'), 0) AS processing,
                    MAX(CASE WHEN created_at >= $1 THEN updated_at END) AS last_update
             FROM tasks WHERE job_type IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(since);
        for job_type in gpu_job_types {
            query = query.bind(*job_type);
        }
        let row = query
            .fetch_one(&self.pools.reads)
            .await
            .map_err(sqlite_error)?;
        let processing: i64 = row.try_get("processing").map_err(sqlite_error)?;
        let last: Option<i64> = row.try_get("last_update").map_err(sqlite_error)?;
        Ok((u64::try_from(processing).unwrap_or(0), last))
    }

    async fn claim_idempotency_key(
        &self,
        key_hash: &str,
        fingerprint: &str,
        task_id: &str,
        now: i64,
        ttl_seconds: i64,
    ) -> Result<IdempotencyClaim, TaskStoreError> {
        // Insert, or take over an expired record, in one statement.
        let done = sqlx::query(
            "INSERT INTO idempotency_keys (key_hash, fingerprint, task_id, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key_hash) DO UPDATE SET fingerprint = excluded.fingerprint,
                 task_id = excluded.task_id, expires_at = excluded.expires_at
             WHERE idempotency_keys.expires_at <= $5",
        )
        .bind(key_hash)
        .bind(fingerprint)
        .bind(task_id)
        .bind(now + ttl_seconds)
        .bind(now)
        .execute(&self.pools.writes)
        .await
        .map_err(sqlite_error)?;
        if done.rows_affected() > 0 {
            return Ok(IdempotencyClaim::Claimed);
        }
        let row =
            sqlx::query("SELECT fingerprint, task_id FROM idempotency_keys WHERE key_hash = $1")
                .bind(key_hash)
                .fetch_one(&self.pools.writes)
                .await
                .map_err(sqlite_error)?;
        Ok(IdempotencyClaim::Existing {
            task_id: row.try_get("task_id").map_err(sqlite_error)?,
            fingerprint: row.try_get("fingerprint").map_err(sqlite_error)?,
        })
    }

    async fn release_idempotency_key(
        &self,
        key_hash: &str,
        task_id: &str,
    ) -> Result<(), TaskStoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE key_hash = $1 AND task_id = $2")
            .bind(key_hash)
            .bind(task_id)
            .execute(&self.pools.writes)
            .await
            .map_err(sqlite_error)?;
        Ok(())
    }

    async fn count_daily_job(
        &self,
        client: &str,
        day: &str,
        limit: u64,
        expires_at: i64,
    ) -> Result<QuotaCount, TaskStoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // One statement: insert the day's first count, or add one while
        // under the limit; no row back means the quota is used up.
        let used: Option<i64> = sqlx::query_scalar(
            "INSERT INTO job_quota (client, day, used, expires_at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (client, day) DO UPDATE SET used = job_quota.used + 1
             WHERE job_quota.used < $4
             RETURNING used",
        )
        .bind(client)
        .bind(day)
        .bind(expires_at)
        .bind(limit)
        .fetch_optional(&self.pools.writes)
        .await
        .map_err(sqlite_error)?;
        match used {
            Some(used) => {
                if used == 1 {
                    // A client's first job of the day: forget past days.
                    sqlx::query("DELETE FROM job_quota WHERE expires_at < $1")
                        .bind(crate::unix_now())
                        .execute(&self.pools.writes)
                        .await
                        .map_err(sqlite_error)?;
                }
                Ok(QuotaCount::Counted {
                    used: u64::try_from(used).unwrap_or(0),
                })
            }
            None => Ok(QuotaCount::Exhausted),
        }
    }

    async fn uncount_daily_job(&self, client: &str, day: &str) -> Result<(), TaskStoreError> {
        sqlx::query(
            "UPDATE job_quota SET used = used - 1 WHERE client = $1 AND day = $2 AND used > 0",
        )
        .bind(client)
        .bind(day)
        .execute(&self.pools.writes)
        .await
        .map_err(sqlite_error)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), TaskStoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pools.reads)
            .await
            .map_err(sqlite_error)?;
        Ok(())
    }
}
