//! The GPU host: one EC2 instance that is expensive to leave running. The
//! [`GpuHost`] trait hides EC2 (or its absence); the controller starts the
//! host when GPU work arrives and stops it when it has been idle long enough.

mod controller;
mod ec2;
mod host;
mod settings;
mod status;

use std::time::SystemTime;

pub use controller::{GpuController, GpuHandle};
pub use ec2::Ec2GpuHost;
pub use host::{GpuHost, HostError, InstanceState, InstanceView, NoGpuHost};
pub use settings::GpuSettings;
pub use status::GpuStatus;

/// What the controller needs to know about GPU work. The orchestrator
/// implements it from its GPU queue and its task store.
#[async_trait::async_trait]
pub trait GpuWork: Send + Sync + 'static {
    async fn snapshot(&self) -> Result<WorkSnapshot, WorkError>;
}

/// The GPU work could not be read: the part that failed and why. The
/// controller then keeps the host up (it cannot know the host is idle).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {message}")]
pub struct WorkError {
    /// `GPU queue`, `task store`, …
    pub part: &'static str,
    pub message: String,
}

impl WorkError {
    pub fn new(part: &'static str, message: impl std::fmt::Display) -> Self {
        Self {
            part,
            message: message.to_string(),
        }
    }
}

/// GPU work as seen at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkSnapshot {
    /// Messages waiting on the GPU queue.
    pub queued: u64,
    /// Messages received by a worker and not yet deleted.
    pub in_flight: u64,
    /// GPU jobs whose status is `processing`.
    pub processing: u64,
    /// The latest `updated_at` of any GPU job in the task store, so that
    /// several orchestrators agree on when the host was last used.
    pub last_job_update: Option<SystemTime>,
}

impl WorkSnapshot {
    pub fn is_idle(&self) -> bool {
        self.queued == 0 && self.in_flight == 0 && self.processing == 0
    }
}
