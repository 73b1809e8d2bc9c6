//! Jobs: the kinds the orchestrator accepts, their statuses, and the submit
//! path that records and queues them.

pub mod admission;
pub mod image_urls;
pub mod kinds;
pub mod settle;
pub mod status;
pub mod submit;
pub mod watch;

pub use kinds::{JobKind, JobRequest, QueueName};
pub use status::JobStatus;
