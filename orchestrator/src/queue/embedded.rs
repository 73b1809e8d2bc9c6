//! The embedded queue: rows of the `queue_messages` table in the
//! orchestrator's SQLite file, so queued jobs survive a restart. Receiving is
//! one `UPDATE … RETURNING` statement, atomic in SQLite, so two receivers
//! never get the same message. A waiting receiver is woken by a send in this
//! process, and otherwise polls.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sqlx::Row;
use tokio::sync::Notify;

use super::{JobQueue, QueueDepth, QueueError, QueueMessage};
use common::sqlite::SqlitePools;

use crate::tasks::{JobStatus, NewTask, TaskStoreError, sqlite::insert_task};

#[derive(Clone)]
pub struct EmbeddedQueue {
    pools: SqlitePools,
    name: &'static str,
    max_receive_count: u32,
    sent: Arc<Notify>,
}

impl EmbeddedQueue {
    /// `name` tells the queues apart within the table ("gpu", "cpu").
    pub fn new(pools: SqlitePools, name: &'static str, max_receive_count: u32) -> Self {
        Self {
            pools,
            name,
            max_receive_count,
            sent: Arc::new(Notify::new()),
        }
    }

    /// Writes a new job's `pending` record and its message in one
    /// transaction: both exist, or neither (a crash between two commits can
    /// no longer leave a `pending` job that no worker will ever see).
    pub async fn send_with_task(&self, task: &NewTask, body: &str) -> Result<(), IntakeError> {
        let mut tx = self
            .pools
            .writes
            .begin()
            .await
            .map_err(|e| IntakeError::Queue(queue_error(e)))?;
        insert_task(&mut tx, task, JobStatus::Pending, None)
            .await
            .map_err(IntakeError::Tasks)?;
        insert_message(&mut tx, self.name, body)
            .await
            .map_err(IntakeError::Queue)?;
        tx.commit()
            .await
            .map_err(|e| IntakeError::Queue(queue_error(e)))?;
        self.sent.notify_waiters();
        Ok(())
    }

    /// A job that could not be taken in still leaves its record, `failed`
    /// with the reason, when the database allows (best effort: the client
    /// has its 503 either way).
    pub async fn record_refused(&self, task: &NewTask, reason: &str) -> Result<(), TaskStoreError> {
        let mut conn = self
            .pools
            .writes
            .acquire()
            .await
            .map_err(crate::tasks::sqlite::sqlite_error)?;
        insert_task(&mut conn, task, JobStatus::Failed, Some(reason)).await
    }

    async fn receive_now(
        &self,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>, QueueError> {
        let now = now_ms();
        // As on SQS, a message that has used up its receives moves to the
        // dead letters when it would be delivered once more.
        sqlx::query(
            "UPDATE queue_messages SET dead = 1, visible_at = $1, receipt = NULL
             WHERE queue = $2 AND dead = 0 AND visible_at <= $1 AND receive_count >= $3",
        )
        .bind(now)
        .bind(self.name)
        .bind(i64::from(self.max_receive_count))
        .execute(&self.pools.writes)
        .await
        .map_err(queue_error)?;
        let rows = sqlx::query(
            "UPDATE queue_messages
             SET receive_count = receive_count + 1, visible_at = $1, receipt = lower(hex(randomblob(16)))
             WHERE id IN (SELECT id FROM queue_messages
                          WHERE queue = $2 AND dead = 0 AND visible_at <= $3
                          ORDER BY sent_at LIMIT $4)
             RETURNING id, body, receive_count, receipt",
        )
        .bind(now + millis(visibility))
        .bind(self.name)
        .bind(now)
        .bind(i64::from(max.clamp(1, 10)))
        .fetch_all(&self.pools.writes)
        .await
        .map_err(queue_error)?;
        rows.iter().map(message).collect()
    }
}

fn message(row: &sqlx::sqlite::SqliteRow) -> Result<QueueMessage, QueueError> {
    let count: i64 = row.try_get("receive_count").map_err(queue_error)?;
    Ok(QueueMessage {
        message_id: row.try_get("id").map_err(queue_error)?,
        receipt: row.try_get("receipt").map_err(queue_error)?,
        body: row.try_get("body").map_err(queue_error)?,
        receive_count: u32::try_from(count).unwrap_or(u32::MAX),
    })
}

/// Why a job could not be taken in: its record or its message.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Tasks(TaskStoreError),
    #[error(transparent)]
    Queue(QueueError),
}

async fn insert_message(
    conn: &mut sqlx::SqliteConnection,
    queue: &str,
    body: &str,
) -> Result<(), QueueError> {
    let now = now_ms();
    sqlx::query("INSERT INTO queue_messages (id, queue, body, sent_at, visible_at) VALUES ($1, $2, $3, $4, $4)")
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(queue)
        .bind(body)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(queue_error)?;
    Ok(())
}

fn queue_error(err: sqlx::Error) -> QueueError {
    if common::sqlite::is_unavailable(&err) {
        QueueError::Unavailable(err.to_string())
    } else {
        QueueError::Other(err.to_string())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl JobQueue for EmbeddedQueue {
    async fn send(&self, body: &str) -> Result<(), QueueError> {
        let mut conn = self.pools.writes.acquire().await.map_err(queue_error)?;
        insert_message(&mut conn, self.name, body).await?;
        self.sent.notify_waiters();
        Ok(())
    }

    async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for a wake-up before looking, so a send in between
            // is not missed.
            let notified = self.sent.notified();
            let messages = self.receive_now(max, visibility).await?;
            let now = tokio::time::Instant::now();
            if !messages.is_empty() || now >= deadline {
                return Ok(messages);
            }
            // Messages may also reappear when their visibility ends.
            let poll = (deadline - now).min(Duration::from_millis(250));
            let _ = tokio::time::timeout(poll, notified).await;
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        sqlx::query("DELETE FROM queue_messages WHERE receipt = $1 AND queue = $2 AND dead = 0")
            .bind(receipt)
            .bind(self.name)
            .execute(&self.pools.writes)
            .await
            .map_err(queue_error)?;
        Ok(())
    }

    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        let done = sqlx::query("UPDATE queue_messages SET visible_at = $1 WHERE receipt = $2 AND queue = $3 AND dead = 0")
            .bind(now_ms() + millis(timeout))
            .bind(receipt)
            .bind(self.name)
            .execute(&self.pools.writes)
            .await
            .map_err(queue_error)?;
        if done.rows_affected() == 0 {
            return Err(QueueError::Other("receipt is no longer valid".to_owned()));
        }
        if timeout.is_zero() {
            self.sent.notify_waiters();
        }
        Ok(())
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(visible_at <= $1), 0) AS visible, COALESCE(SUM(visible_at > $1), 0) AS in_flight
             FROM queue_messages WHERE queue = $2 AND dead = 0",
        )
        .bind(now_ms())
        .bind(self.name)
        .fetch_one(&self.pools.reads)
        .await
        .map_err(queue_error)?;
        let visible: i64 = row.try_get("visible").map_err(queue_error)?;
        let in_flight: i64 = row.try_get("in_flight").map_err(queue_error)?;
        Ok(QueueDepth {
            visible: u64::try_from(visible).unwrap_or(0),
            in_flight: u64::try_from(in_flight).unwrap_or(0),
        })
    }

    async fn receive_dead(&self, max: u32) -> Result<Vec<QueueMessage>, QueueError> {
        let now = now_ms();
        let rows = sqlx::query(
            "UPDATE queue_messages SET visible_at = $1, receipt = lower(hex(randomblob(16)))
             WHERE id IN (SELECT id FROM queue_messages WHERE queue = $2 AND dead = 1 AND visible_at <= $3
                          ORDER BY sent_at LIMIT $4)
             RETURNING id, body, receive_count, receipt",
        )
        .bind(now + 30_000)
        .bind(self.name)
        .bind(now)
        .bind(i64::from(max.clamp(1, 10)))
        .fetch_all(&self.pools.writes)
        .await
        .map_err(queue_error)?;
        rows.iter().map(message).collect()
    }

    async fn dead_letter(&self, message: &QueueMessage) -> Result<(), QueueError> {
        sqlx::query("UPDATE queue_messages SET dead = 1, visible_at = $1, receipt = NULL WHERE receipt = $2 AND queue = $3")
            .bind(now_ms())
            .bind(&message.receipt)
            .bind(self.name)
            .execute(&self.pools.writes)
            .await
            .map_err(queue_error)?;
        Ok(())
    }

    async fn delete_dead(&self, receipt: &str) -> Result<(), QueueError> {
        sqlx::query("DELETE FROM queue_messages WHERE receipt = $1 AND queue = $2 AND dead = 1")
            .bind(receipt)
            .bind(self.name)
            .execute(&self.pools.writes)
            .await
            .map_err(queue_error)?;
        Ok(())
    }
}
