//! The job vocabulary every layer shares — kinds, queue names, statuses —
//! below the stores, the queues and the submit path, so each of them can
//! name these types without importing the others.

mod kind;
mod status;

pub use kind::{JobKind, QueueName};
pub use status::{JobStatus, StoredStatus};
