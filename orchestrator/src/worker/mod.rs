//! The worker adapter: `orchestrator worker` on a GPU or CPU host (or the
//! serve process itself, when a local inference API is configured). It takes
//! jobs off one queue and drives the inference API on its host, writing each
//! job's status as the old Python adapters did — with four differences:
//! every status write is conditional (a finished job is never run or
//! rewritten again), a job whose submit has not confirmed its message is
//! not run (its client may have been told it failed), the message's
//! visibility is extended while the job runs (so a long job is never handed
//! to a second worker), and a cancelled job is noticed at the next heartbeat.

pub mod backend;
pub mod cli;

use std::{sync::Arc, time::Duration};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::backend::{Backend, BackendError, BackendStatus};
use crate::{
    jobs::{
        JobStatus, QueueName,
        image_urls::{ImageUrlPolicy, url_fields},
        message::JobMessage,
    },
    queue::{JobQueue, QueueMessage},
    tasks::StoredStatus,
    tasks::{Detail, StatusChange, TaskStore, Transition},
};

/// How long a worker holds a message whose submit has not confirmed it
/// before giving it back to the queue.
const AWAIT_QUEUED: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub queue: QueueName,
    /// The inference API on this host, e.g. `http://localhost:8000`.
    pub backend_url: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Longest a job may run on the backend before it is failed.
    pub job_timeout: Duration,
    /// On shutdown: how long running jobs may finish before their messages
    /// are released to another worker.
    pub drain: Duration,
    /// How long a received message stays hidden; renewed every third of it.
    pub visibility: Duration,
    /// Backend status polling: first and longest interval.
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// After a transient failure the message comes back after this (times
    /// the attempt number), until the queue dead-letters it.
    pub retry_delay: Duration,
    /// Where a job's image URLs may point; anything else is never handed to
    /// the backend (whoever put the message on the queue).
    pub image_urls: Arc<ImageUrlPolicy>,
}

impl WorkerSettings {
    pub fn new(queue: QueueName, backend_url: &str) -> Self {
        Self {
            queue,
            backend_url: backend_url.to_owned(),
            concurrency: 1,
            job_timeout: Duration::from_secs(900),
            drain: Duration::from_secs(60),
            visibility: Duration::from_secs(120),
            poll_min: Duration::from_millis(500),
            poll_max: Duration::from_secs(5),
            retry_delay: Duration::from_secs(10),
            image_urls: Arc::new(ImageUrlPolicy::local_default()),
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    /// Already final or cancelled: acknowledged without running.
    Skipped,
    /// Left to come back later (transient failure).
    Retried,
    /// Released at shutdown for another worker.
    Released,
    /// Malformed: sent to the dead letters.
    DeadLettered,
}

pub struct Worker {
    tasks: Arc<dyn TaskStore>,
    queue: Arc<dyn JobQueue>,
    backend: Backend,
    settings: WorkerSettings,
}

impl Worker {
    pub fn new(
        tasks: Arc<dyn TaskStore>,
        queue: Arc<dyn JobQueue>,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            tasks,
            queue,
            backend: Backend::new(&settings.backend_url),
            settings,
        }
    }

    /// Runs `concurrency` job slots until `shutdown`; then stops receiving,
    /// lets running jobs finish within `drain`, and releases the rest.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let release = CancellationToken::new();
        let mut slots = JoinSet::new();
        for _ in 0..self.settings.concurrency.max(1) {
            let worker = self.clone();
            let (shutdown, release) = (shutdown.clone(), release.clone());
            slots.spawn(async move { worker.slot(shutdown, release).await });
        }
        tracing::info!(queue = self.settings.queue.as_str(), concurrency = self.settings.concurrency, backend = %self.settings.backend_url, "worker started");
        shutdown.cancelled().await;
        tracing::info!(
            drain_seconds = self.settings.drain.as_secs(),
            "worker stopping: finishing running jobs"
        );
        let drained = tokio::time::timeout(self.settings.drain, async {
            while slots.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("drain time is up: releasing unfinished jobs to other workers");
            release.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while slots.join_next().await.is_some() {}
            })
            .await;
            slots.abort_all();
        }
        tracing::info!("worker stopped");
    }

    async fn slot(&self, shutdown: CancellationToken, release: CancellationToken) {
        let mut backoff = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                received = self.queue.receive(1, Duration::from_secs(10), self.settings.visibility) => received,
            };
            match received {
                Ok(messages) => {
                    backoff = Duration::from_millis(500);
                    for message in messages {
                        self.handle(message, &release).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot receive from the queue; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Runs one message to its end. Public so tests can drive one message.
    pub async fn handle(&self, message: QueueMessage, release: &CancellationToken) -> Outcome {
        let job = match JobMessage::parse(&message.body) {
            Ok(job) => job,
            Err(e) => {
                return self
                    .dead_letter(&message, &format!("malformed message: {e}"))
                    .await;
            }
        };
        if let Err(reason) = self.check_image_urls(&job).await {
            self.refuse(&job.task_id, &reason).await;
            return self.dead_letter(&message, &reason).await;
        }
        let record = match self.tasks.get(&job.task_id).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                return self
                    .dead_letter(&message, "no job record for this task_id")
                    .await;
            }
            Err(e) => return self.retry(&message, &format!("task store: {e}")).await,
        };
        // Its submit has not confirmed the message yet (usually a few ms
        // away; or the submit failed and will fail the record): never run it
        // before then — a submit answered 5xx must not run.
        let record = if record.awaiting_queue {
            match self.await_queued(&job.task_id).await {
                Ok(Some(record)) => record,
                Ok(None) => {
                    return self
                        .retry(&message, "its submit has not confirmed it yet")
                        .await;
                }
                Err(e) => return self.retry(&message, &format!("task store: {e}")).await,
            }
        } else {
            record
        };
        if record.status.as_ref().is_some_and(StoredStatus::is_final) {
            tracing::info!(task_id = job.task_id, status = ?record.status, "job already final: message acknowledged");
            self.ack(&message).await;
            return Outcome::Skipped;
        }
        let attempts = i64::from(message.receive_count);
        let start = StatusChange::to(JobStatus::Processing, crate::unix_now()).attempts(attempts);
        match self
            .tasks
            .transition(
                &job.task_id,
                &[JobStatus::Pending, JobStatus::Processing],
                &start,
            )
            .await
        {
            Ok(Transition::Applied) => {}
            Ok(Transition::Refused { current }) => {
                tracing::info!(
                    task_id = job.task_id,
                    ?current,
                    "job no longer runnable: message acknowledged"
                );
                self.ack(&message).await;
                return Outcome::Skipped;
            }
            Err(e) => return self.retry(&message, &format!("task store: {e}")).await,
        }

        // From here the message is kept hidden, and cancellation watched.
        let cancelled = CancellationToken::new();
        // Dropped with this future, so a worker task that is aborted stops
        // renewing the message, which then returns to the queue.
        let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(
            self.queue.clone(),
            self.tasks.clone(),
            message.receipt.clone(),
            job.task_id.clone(),
            self.settings.visibility,
            cancelled.clone(),
        )));
        self.run_job(
            &job,
            &record_backend_id(&record, self.settings.queue),
            &message,
            &cancelled,
            release,
        )
        .await
    }

    /// Polls the record of a job still awaiting its queue confirm for a few
    /// seconds: the record once confirmed or final, `None` if it is still
    /// awaiting.
    async fn await_queued(
        &self,
        task_id: &str,
    ) -> Result<Option<crate::tasks::TaskRecord>, crate::tasks::TaskStoreError> {
        let mut delay = Duration::from_millis(20);
        let deadline = tokio::time::Instant::now() + AWAIT_QUEUED;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
            match self.tasks.get(task_id).await? {
                Some(record) if record.awaiting_queue => {}
                found => return Ok(found),
            }
        }
        Ok(None)
    }

    /// Every `*_url` of the request, by text and by what its host resolves
    /// to, before anything reaches the backend.
    async fn check_image_urls(&self, job: &JobMessage) -> Result<(), String> {
        for (field, url) in url_fields(&job.request_body) {
            if let Err(refusal) = self.settings.image_urls.check_resolved(url).await {
                return Err(format!("{field}: {refusal}"));
            }
        }
        Ok(())
    }

    /// A job that must not run ends `failed` with the reason, if it is still
    /// waiting; the message then goes to the dead letters.
    async fn refuse(&self, task_id: &str, reason: &str) {
        let change = StatusChange::to(JobStatus::Failed, crate::unix_now())
            .error(format!("refused: {reason}"));
        if let Err(e) = self
            .tasks
            .transition(
                task_id,
                &[JobStatus::Pending, JobStatus::Processing],
                &change,
            )
            .await
        {
            tracing::warn!(task_id, error = %e, "could not mark a refused job failed");
        }
    }

    async fn run_job(
        &self,
        job: &JobMessage,
        recorded_backend_id: &Option<String>,
        message: &QueueMessage,
        cancelled: &CancellationToken,
        release: &CancellationToken,
    ) -> Outcome {
        // A redelivered job whose backend job was already submitted (its
        // worker died) is followed, not submitted twice.
        let mut backend_id = recorded_backend_id.clone();
        for _ in 0..2 {
            let id = match backend_id.take() {
                Some(id) => id,
                None => match self.backend.submit(&job.api_path, &job.request_body).await {
                    Ok(id) => {
                        let detail = match self.settings.queue {
                            QueueName::Gpu => Detail::ComfyJobId,
                            QueueName::Cpu => Detail::ApiJobId,
                        };
                        let change = StatusChange::to(JobStatus::Processing, crate::unix_now())
                            .detail(detail, &id);
                        if let Err(e) = self
                            .tasks
                            .transition(&job.task_id, &[JobStatus::Processing], &change)
                            .await
                        {
                            tracing::warn!(task_id = job.task_id, error = %e, "could not record the backend job id");
                        }
                        id
                    }
                    Err(BackendError::Refused(reason)) => {
                        return self.finish(job, message, Err(reason)).await;
                    }
                    Err(BackendError::Transient(reason)) => {
                        return self.retry(message, &reason).await;
                    }
                    Err(BackendError::UnknownJob) => {
                        return self
                            .retry(message, "the backend did not know the job it just took")
                            .await;
                    }
                },
            };
            match self.follow(&id, cancelled, release).await {
                Followed::Done(result) => return self.finish(job, message, result).await,
                Followed::Cancelled => {
                    tracing::info!(
                        task_id = job.task_id,
                        "job cancelled while running: stopped following it"
                    );
                    self.ack(message).await;
                    return Outcome::Skipped;
                }
                Followed::Released => {
                    if let Err(e) = self
                        .queue
                        .set_visibility(&message.receipt, Duration::ZERO)
                        .await
                    {
                        tracing::warn!(task_id = job.task_id, error = %e, "could not release the message; it returns after its visibility timeout");
                    }
                    return Outcome::Released;
                }
                // The backend lost it (restarted): submit it afresh, once.
                Followed::UnknownJob => continue,
            }
        }
        self.retry(message, "the backend keeps losing the job")
            .await
    }

    /// Polls the backend with growing intervals until the job ends.
    async fn follow(
        &self,
        backend_id: &str,
        cancelled: &CancellationToken,
        release: &CancellationToken,
    ) -> Followed {
        let deadline = tokio::time::Instant::now() + self.settings.job_timeout;
        let mut interval = self.settings.poll_min;
        loop {
            match self.backend.status(backend_id).await {
                Ok(BackendStatus::Completed { result_url }) => {
                    return Followed::Done(Ok(result_url));
                }
                Ok(BackendStatus::Failed { error }) => return Followed::Done(Err(error)),
                Ok(BackendStatus::Running) => {}
                Err(BackendError::UnknownJob) => return Followed::UnknownJob,
                Err(BackendError::Transient(e) | BackendError::Refused(e)) => {
                    tracing::debug!(backend_id, error = %e, "status poll failed; polling on");
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Followed::Done(Err(format!(
                    "timed out after {} s on the backend",
                    self.settings.job_timeout.as_secs()
                )));
            }
            tokio::select! {
                () = cancelled.cancelled() => return Followed::Cancelled,
                () = release.cancelled() => return Followed::Released,
                () = tokio::time::sleep(interval) => {}
            }
            interval = interval.mul_f32(1.5).min(self.settings.poll_max);
        }
    }

    /// Writes the final state (conditionally: a job cancelled meanwhile stays
    /// cancelled), then deletes the message.
    async fn finish(
        &self,
        job: &JobMessage,
        message: &QueueMessage,
        result: Result<Option<String>, String>,
    ) -> Outcome {
        let now = crate::unix_now();
        let (change, outcome) = match result {
            Ok(result_url) => {
                let mut change = StatusChange::to(JobStatus::Completed, now);
                if let Some(url) = result_url {
                    let detail = match self.settings.queue {
                        QueueName::Gpu => Detail::ResultS3Uri,
                        QueueName::Cpu => Detail::ResultUrl,
                    };
                    change = change.detail(detail, url);
                }
                (change, Outcome::Completed)
            }
            Err(error) => (
                StatusChange::to(JobStatus::Failed, now).error(error),
                Outcome::Failed,
            ),
        };
        match self
            .tasks
            .transition(&job.task_id, &[JobStatus::Processing], &change)
            .await
        {
            Ok(Transition::Applied) => {
                crate::metrics::status_changed("processing", change.to.as_str());
                tracing::info!(
                    task_id = job.task_id,
                    status = change.to.as_str(),
                    "job finished"
                );
            }
            Ok(Transition::Refused { current }) => {
                tracing::info!(
                    task_id = job.task_id,
                    ?current,
                    "job became final elsewhere; result not written"
                );
            }
            Err(e) => {
                // Leave the message: the next delivery finds the backend job
                // id and writes the result then.
                return self
                    .retry(message, &format!("could not write the result: {e}"))
                    .await;
            }
        }
        self.ack(message).await;
        outcome
    }

    async fn ack(&self, message: &QueueMessage) {
        if let Err(e) = self.queue.delete(&message.receipt).await {
            tracing::warn!(error = %e, "could not delete a finished message; its job is final, so a redelivery will be skipped");
        }
    }

    async fn retry(&self, message: &QueueMessage, reason: &str) -> Outcome {
        tracing::warn!(
            reason,
            attempt = message.receive_count,
            "job will be retried later"
        );
        let delay = self.settings.retry_delay * message.receive_count.max(1);
        if let Err(e) = self.queue.set_visibility(&message.receipt, delay).await {
            tracing::warn!(error = %e, "could not delay the message; it returns after its visibility timeout");
        }
        Outcome::Retried
    }

    async fn dead_letter(&self, message: &QueueMessage, reason: &str) -> Outcome {
        tracing::error!(reason, body = %message.body, "message can never succeed: dead-lettered");
        if let Err(e) = self.queue.dead_letter(message).await {
            tracing::warn!(error = %e, "could not dead-letter the message");
        }
        Outcome::DeadLettered
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Followed {
    Done(Result<Option<String>, String>),
    Cancelled,
    Released,
    UnknownJob,
}

fn record_backend_id(record: &crate::tasks::TaskRecord, queue: QueueName) -> Option<String> {
    match queue {
        QueueName::Gpu => record.comfy_job_id.clone(),
        QueueName::Cpu => record.api_job_id.clone(),
    }
}

/// Keeps the message hidden while the job runs, and watches for a cancel.
async fn heartbeat(
    queue: Arc<dyn JobQueue>,
    tasks: Arc<dyn TaskStore>,
    receipt: String,
    task_id: String,
    visibility: Duration,
    cancelled: CancellationToken,
) {
    let period = (visibility / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        if let Err(e) = queue.set_visibility(&receipt, visibility).await {
            tracing::warn!(task_id, error = %e, "could not extend the message's visibility");
        }
        if let Ok(Some(record)) = tasks.get(&task_id).await
            && record
                .status
                .as_ref()
                .is_some_and(|s| s.is(JobStatus::Cancelled))
        {
            cancelled.cancel();
            return;
        }
    }
}
