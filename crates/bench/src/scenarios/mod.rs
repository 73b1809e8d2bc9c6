//! One file per scenario; each reads its knobs, drives the services through
//! the harness and prints its tables. The list below is what `bench help`
//! shows and what `main` dispatches on.

pub mod events;
pub mod pipeline;
pub mod soak;
pub mod soak_uploads;
pub mod submit;
pub mod upload;

use crate::harness::BoxError;

/// How a scenario ended, when it ran to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Figures printed; every request that had to succeed did.
    Done,
    /// A soak found losses (its table says which).
    Losses(usize),
}

impl Verdict {
    pub fn from_losses(losses: usize) -> Self {
        if losses == 0 {
            Self::Done
        } else {
            Self::Losses(losses)
        }
    }
}

/// `(name, what it measures)`, in the order `bench help` lists them.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "upload",
        "canvas-service: small uploads at concurrency 1/8/64, one large streamed upload's RSS",
    ),
    (
        "submit",
        "orchestrator: submit and status at concurrency 1/8/64, embedded and on moto, and moto's own ceiling",
    ),
    (
        "pipeline",
        "orchestrator: jobs/s through queue -> in-process worker -> stand-in inference API -> task store",
    ),
    (
        "events",
        "orchestrator: many open job event streams (SSE): memory and CPU per stream, time to deliver a change",
    ),
    (
        "soak",
        "orchestrator on moto: 10 000 submits of the 5 kinds with moto cut for 20 s, reconciled with store and queues",
    ),
    (
        "soak-uploads",
        "canvas-service on Postgres + S3: uploads with S3 cut for 20 s, rows reconciled with objects",
    ),
];

/// Runs the scenario called `name`; `None` if there is none.
pub async fn run(name: &str) -> Option<Result<Verdict, BoxError>> {
    Some(match name {
        "upload" => upload::run().await,
        "submit" => submit::run().await,
        "pipeline" => pipeline::run().await,
        "events" => events::run().await,
        "soak" => soak::run().await,
        "soak-uploads" => soak_uploads::run().await,
        _ => return None,
    })
}
