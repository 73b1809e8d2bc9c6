//! Job queues with SQS semantics: a received message is hidden for a
//! visibility timeout and comes back unless deleted; after too many receives
//! it goes to a dead-letter queue. SQS in production, a durable SQLite table
//! by default. One `JobQueue` per queue (GPU, CPU).

mod embedded;
mod sqs;

use std::time::Duration;

pub use crate::domain::QueueName;
pub use embedded::{EmbeddedQueue, IntakeError};
pub use sqs::{SqsQueue, client as sqs_client};

/// A received message: its body, and the receipt that deletes it or changes
/// its visibility (valid for this receive only).
#[derive(Debug, Clone)]
pub struct QueueMessage {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Waiting to be received.
    pub visible: u64,
    /// Received and not yet deleted (being worked on).
    pub in_flight: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("queue error: {0}")]
    Other(String),
}

#[async_trait::async_trait]
pub trait JobQueue: Send + Sync + 'static {
    async fn send(&self, body: &str) -> Result<(), QueueError>;

    /// Up to `max` messages, waiting up to `wait` for the first one.
    async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>, QueueError>;

    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;

    /// Extends (or, with zero, ends) the message's invisibility.
    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError>;

    async fn depth(&self) -> Result<QueueDepth, QueueError>;

    /// Messages that gave up, from the dead-letter queue (none when no DLQ is
    /// configured). `receive_count` is how many times the job was tried.
    async fn receive_dead(&self, max: u32) -> Result<Vec<QueueMessage>, QueueError>;

    async fn delete_dead(&self, receipt: &str) -> Result<(), QueueError>;

    /// Sends a message that can never succeed (malformed) to the dead
    /// letters at once, instead of letting it be retried.
    async fn dead_letter(&self, message: &QueueMessage) -> Result<(), QueueError>;

    /// Readiness: the queue answers.
    async fn ping(&self) -> Result<(), QueueError> {
        self.depth().await.map(|_| ())
    }
}

/// The embedded queues, which can take a job's record with its message.
#[derive(Clone)]
pub struct OneFileIntake {
    pub gpu: std::sync::Arc<EmbeddedQueue>,
    pub cpu: std::sync::Arc<EmbeddedQueue>,
}

impl OneFileIntake {
    pub fn queue(&self, name: QueueName) -> &std::sync::Arc<EmbeddedQueue> {
        match name {
            QueueName::Gpu => &self.gpu,
            QueueName::Cpu => &self.cpu,
        }
    }
}
