//! The loops that keep jobs from getting stuck, safe with several
//! orchestrators running: every write they make is conditional.
//! - dead letters: a job whose message gave up is marked `failed`;
//! - settle: a job whose submit never confirmed its message is marked
//!   `failed` (see `jobs::settle`);
//! - reaper: a job left `processing` with no update for `JOB_TIMEOUT_MINUTES`
//!   is marked `failed`;
//! - queue depths for `/metrics` and the backlog caps.

use std::{sync::Arc, time::Duration};

use crate::{
    App,
    jobs::{JobStatus, QueueName, message::JobMessage, settle},
    metrics,
    queue::{QueueError, QueueMessage},
    tasks::{StatusChange, TaskStoreError, Transition},
};

impl App {
    /// Starts the sweeping loops (dead letters, reaper, queue metrics) and
    /// the in-process workers, if any. All stop when `self.shutdown` is
    /// cancelled; the returned handles finish once the workers have drained.
    pub fn spawn_background(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        spawn(self.clone());
        self.local_workers
            .iter()
            .map(|settings| {
                let worker = Arc::new(crate::worker::Worker::new(
                    self.tasks.clone(),
                    self.queue(settings.queue).clone(),
                    settings.clone(),
                ));
                tokio::spawn(worker.run(self.shutdown.clone()))
            })
            .collect()
    }
}

fn spawn(app: Arc<App>) {
    let interval = app.sweep_interval;
    tokio::spawn(every(
        app.clone(),
        interval,
        Duration::ZERO,
        |app| async move {
            if let Err(e) = drain_dead_letters(&app).await {
                tracing::warn!(error = %e, "dead-letter drain failed; will retry");
            }
        },
    ));
    tokio::spawn(every(
        app.clone(),
        interval,
        Duration::ZERO,
        |app| async move {
            if let Err(e) = settle::sweep_unqueued(app.tasks.as_ref()).await {
                tracing::warn!(error = %e, "settle sweep failed; will retry");
            }
        },
    ));
    tokio::spawn(every(
        app.clone(),
        interval,
        Duration::ZERO,
        |app| async move {
            if let Err(e) = reap_stale_jobs(&app).await {
                tracing::warn!(error = %e, "reaper failed; will retry");
            }
        },
    ));
    let depth_interval = app.intake.admission.queue_depth_interval;
    // The first read one period after start: the backlog starts from the
    // jobs accepted since, and a read racing the very first submits (which
    // could count one of them twice) does not greet every start-up.
    tokio::spawn(every(
        app,
        depth_interval,
        depth_interval,
        |app| async move {
            record_queue_depths(&app).await;
        },
    ));
}

async fn every<F, Fut>(app: Arc<App>, period: Duration, first: Duration, mut tick: F)
where
    F: FnMut(Arc<App>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            _ = interval.tick() => tick(app.clone()).await,
        }
    }
}

/// Why a sweep stopped; it runs again at its next tick.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Tasks(#[from] TaskStoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// The job id a queue message is about, if it is one of ours.
fn task_id(message: &QueueMessage) -> Option<String> {
    JobMessage::parse(&message.body).ok().map(|m| m.task_id)
}

/// Marks the jobs of dead-lettered messages `failed` ("gave up after N
/// attempts") and deletes the messages. Returns how many jobs it failed.
pub async fn drain_dead_letters(app: &App) -> Result<usize, SweepError> {
    let mut failed = 0;
    for name in [QueueName::Gpu, QueueName::Cpu] {
        let queue = app.queue(name);
        // Bounded per sweep; the next sweep takes the rest.
        for _ in 0..20 {
            let messages = queue.receive_dead(10).await?;
            if messages.is_empty() {
                break;
            }
            for message in messages {
                match task_id(&message) {
                    Some(task_id) => {
                        let change = StatusChange::to(JobStatus::Failed, crate::unix_now())
                            .error(format!("gave up after {} attempts", message.receive_count))
                            .attempts(i64::from(message.receive_count));
                        let outcome = app
                            .tasks
                            .transition(
                                &task_id,
                                &[JobStatus::Pending, JobStatus::Processing],
                                &change,
                            )
                            .await?;
                        if outcome == Transition::Applied {
                            metrics::status_changed("active", "failed");
                            tracing::warn!(
                                task_id,
                                attempts = message.receive_count,
                                queue = name.as_str(),
                                "job dead-lettered: marked failed"
                            );
                            failed += 1;
                        }
                    }
                    None => {
                        tracing::error!(queue = name.as_str(), body = %message.body, "dead letter without a task_id dropped")
                    }
                }
                queue.delete_dead(&message.receipt).await?;
            }
        }
    }
    Ok(failed)
}

/// Marks `failed` ("timed out") the jobs left `processing` — or still
/// `pending`, waiting for a worker — with no update for the job timeout.
/// Returns how many.
pub async fn reap_stale_jobs(app: &App) -> Result<usize, SweepError> {
    let now = crate::unix_now();
    let timeout = i64::try_from(app.job_timeout.as_secs()).unwrap_or(i64::MAX);
    let before = now - timeout;
    let minutes = timeout / 60;
    let mut reaped = 0;
    for (status, reason) in [
        (
            JobStatus::Processing,
            format!("timed out: no progress for {minutes} minutes"),
        ),
        (
            JobStatus::Pending,
            format!("timed out: not picked up by a worker within {minutes} minutes"),
        ),
    ] {
        let stale = app.tasks.stale(status, before, 100).await?;
        for record in stale {
            let change = StatusChange::to(JobStatus::Failed, now).error(reason.clone());
            if app
                .tasks
                .fail_if_stale(&record.task_id, status, before, &change)
                .await?
                == Transition::Applied
            {
                metrics::status_changed(status.as_str(), "failed");
                tracing::warn!(
                    task_id = record.task_id,
                    from = status.as_str(),
                    "job timed out: marked failed"
                );
                reaped += 1;
            }
        }
    }
    Ok(reaped)
}

pub async fn record_queue_depths(app: &App) {
    for name in [QueueName::Gpu, QueueName::Cpu] {
        let counted_before = app.intake.backlog.reading(name);
        match app.queue(name).depth().await {
            Ok(depth) => {
                app.intake.backlog.observed(
                    name,
                    depth.visible.saturating_add(depth.in_flight),
                    counted_before,
                );
                metrics::queue_depth(name.as_str(), "visible", depth.visible);
                metrics::queue_depth(name.as_str(), "in_flight", depth.in_flight);
            }
            Err(e) => tracing::warn!(queue = name.as_str(), error = %e, "queue depth unavailable"),
        }
    }
}
