//! Jobs: the kinds the orchestrator accepts, their statuses, and the submit
//! path that records and queues them.

pub mod admission;
pub mod image_urls;
pub mod kinds;
pub mod message;
pub mod settle;
pub mod submit;
pub mod view;
pub mod watch;

pub use crate::tasks::JobStatus;
pub use kinds::{InvalidField, JobKind, JobRequest, QueueName};
