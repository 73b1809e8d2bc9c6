//! What a job is: its kind (route, queue, host path) and the queue that
//! runs it. The kinds themselves are listed in `jobs/kinds.rs`.

use serde::Serialize;

/// Which queue (and so which host) runs a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueName {
    Gpu,
    Cpu,
}

impl QueueName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gpu => "gpu",
            Self::Cpu => "cpu",
        }
    }
}

#[derive(Debug)]
pub struct JobKind {
    /// Short name, e.g. `camera-angle`; a metrics label and a record field.
    pub name: &'static str,
    /// The public route the frontend posts to.
    pub route: &'static str,
    pub queue: QueueName,
    /// The path the adapter calls on its host; also the record's `job_type`.
    pub api_path: &'static str,
    /// Only CPU messages carry a `task_type`.
    pub task_type: Option<&'static str>,
}
