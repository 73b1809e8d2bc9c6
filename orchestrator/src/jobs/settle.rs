//! Settling an AWS submit whose outcome a failure left open.
//!
//! On AWS the record and the message are two calls to two services, so a
//! submit writes the record `pending` *awaiting its queue message*, sends the
//! message, then confirms the record. Our workers never run a job that is
//! still awaiting (they wait for the confirm, or for the record to fail), so:
//! - the send failed, or its outcome is unknown (a timeout after the request
//!   left): the client gets 503 and the record is failed — conditional on
//!   being still `pending` and unconfirmed — now, and retried in the
//!   background until the store takes it;
//! - the send succeeded but the confirm did not land: the client gets 202
//!   and the confirm is retried in the background (the job runs once it
//!   lands);
//! - whatever this process could not finish (it stopped, or the store stayed
//!   away): the record itself is the durable note. The settle sweep of any
//!   orchestrator fails records still awaiting their message after
//!   `UNQUEUED_AFTER_SECONDS`, and a confirm racing it is decided by the
//!   store's conditional writes — exactly one of them applies.
//!
//! Old Python adapters do not know the marker: they run any message they
//! receive, so with them a 503 whose message did reach the queue can still
//! run (the README says so).

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    jobs::JobStatus,
    metrics,
    tasks::{StatusChange, TaskStore, TaskStoreError, Transition},
};

/// A record still awaiting its message this long after it was written was
/// never settled by its submit. Far above the longest submit (three calls
/// bounded by the dependency timeout), so the sweep never races one.
pub const UNQUEUED_AFTER_SECONDS: i64 = 60;

/// What the client of a refused submit reads in the record.
pub const NOT_QUEUED: &str = "could not queue the job; submit it again";

/// Background retries back off from the first delay up to the last.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// How long a fail keeps trying a record that is not (yet) there.
const ABSENT_PATIENCE: Duration = Duration::from_secs(30);

/// How long a refused submit waits for its record's first fail attempt.
const INLINE_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Fail,
    Confirm,
}

impl Settle {
    async fn apply(
        self,
        tasks: &dyn TaskStore,
        task_id: &str,
    ) -> Result<Transition, TaskStoreError> {
        match self {
            Self::Fail => tasks.fail_unqueued(task_id, &not_queued()).await,
            Self::Confirm => tasks.confirm_queued(task_id).await,
        }
    }

    fn settled(self, task_id: &str, outcome: &Transition) {
        match (self, outcome) {
            (Self::Fail, Transition::Applied) => {
                metrics::status_changed("pending", "failed");
                tracing::info!(task_id, "unqueued job marked failed");
            }
            (Self::Confirm, Transition::Applied) => {
                tracing::info!(task_id, "job confirmed queued");
            }
            // Failed by the sweep, confirmed by a racing retry, or never
            // written: the store decided, nothing is left to do.
            (_, Transition::Refused { current }) => {
                tracing::info!(task_id, ?current, settle = ?self, "settle not needed");
            }
        }
    }
}

fn not_queued() -> StatusChange {
    StatusChange::to(JobStatus::Failed, crate::unix_now()).error(NOT_QUEUED)
}

/// Fails the record of a submit answered 5xx, retrying in the background
/// until the store takes it. Waits a moment for the first attempt, so that
/// with a healthy store the client's 503 goes out with its record already
/// `failed` — but never long: the 503 must stay prompt.
pub async fn fail(tasks: &Arc<dyn TaskStore>, shutdown: &CancellationToken, task_id: &str) {
    let mut first = spawn_retries(Settle::Fail, tasks, shutdown, task_id);
    let _ = tokio::time::timeout(INLINE_WAIT, &mut first).await;
}

/// [`fail`] without waiting: the store itself just failed.
pub fn fail_later(tasks: &Arc<dyn TaskStore>, shutdown: &CancellationToken, task_id: &str) {
    spawn_retries(Settle::Fail, tasks, shutdown, task_id);
}

/// Confirms, in the background, a record whose message is sent but whose
/// confirm failed.
pub fn confirm_later(tasks: &Arc<dyn TaskStore>, shutdown: &CancellationToken, task_id: &str) {
    spawn_retries(Settle::Confirm, tasks, shutdown, task_id);
}

/// Tries now, then backs off until the store answers or the process stops
/// (the sweep settles what is left).
fn spawn_retries(
    settle: Settle,
    tasks: &Arc<dyn TaskStore>,
    shutdown: &CancellationToken,
    task_id: &str,
) -> tokio::task::JoinHandle<()> {
    let (tasks, shutdown, task_id) = (tasks.clone(), shutdown.clone(), task_id.to_owned());
    tokio::spawn(async move {
        let mut delay = Duration::ZERO;
        let started = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    tracing::warn!(task_id, settle = ?settle, "shutting down before the job was settled; the settle sweep will");
                    return;
                }
                () = tokio::time::sleep(delay) => {}
            }
            match settle.apply(tasks.as_ref(), &task_id).await {
                // A write that timed out on a silent link can still land
                // when the link heals, after our first attempts: keep
                // looking for the record a while before leaving it to the
                // sweep.
                Ok(Transition::Refused { current: None })
                    if settle == Settle::Fail && started.elapsed() < ABSENT_PATIENCE =>
                {
                    delay = (delay * 2).clamp(FIRST_RETRY_DELAY, MAX_RETRY_DELAY);
                }
                Ok(outcome) => return settle.settled(&task_id, &outcome),
                Err(e) => {
                    // Once per job at WARN; an outage retries many jobs many
                    // times, which the first line already says.
                    if delay.is_zero() {
                        tracing::warn!(task_id, error = %e, settle = ?settle, "could not settle the job; retrying until the store answers");
                    } else {
                        tracing::debug!(task_id, error = %e, settle = ?settle, "settle retry failed");
                    }
                    delay = (delay * 2).clamp(FIRST_RETRY_DELAY, MAX_RETRY_DELAY);
                }
            }
        }
    })
}

/// The sweep: fails the records that no submit settled. Returns how many.
pub async fn sweep_unqueued(tasks: &dyn TaskStore) -> Result<usize, TaskStoreError> {
    let before = crate::unix_now() - UNQUEUED_AFTER_SECONDS;
    let mut failed = 0;
    for record in tasks.unqueued(before, 100).await? {
        let outcome = Settle::Fail.apply(tasks, &record.task_id).await?;
        if outcome == Transition::Applied {
            metrics::status_changed("pending", "failed");
            tracing::warn!(
                task_id = record.task_id,
                "job never confirmed queued by its submit: marked failed"
            );
            failed += 1;
        }
    }
    Ok(failed)
}
