//! orchestrator: accepts GPU and CPU jobs, answers 202 at once, records
//! their status, queues them, and wakes the GPU host when work arrives.
//!
//! [`OrchestratorConfig`] is read once; [`App::from_config`] opens the task
//! store, queues and GPU host it names; [`router`] serves them and
//! [`App::spawn_background`] runs the loops (GPU controller, dead letters,
//! reaper, metrics).

pub mod app;
pub mod config;
pub mod domain;
pub mod jobs;
pub mod metrics;
pub mod queue;
pub mod routes;
pub mod stores;
pub mod sweeps;
pub mod tasks;
pub mod worker;

pub use app::App;
pub use config::OrchestratorConfig;
pub use routes::{openapi, router};

/// Seconds since the Unix epoch: the unit of `created_at`/`updated_at`.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
