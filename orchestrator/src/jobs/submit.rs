//! The submit path: validate → write the `pending` record → send the message
//! → 202. A 202 means the job has its record and its message; a 5xx means it
//! never runs and its record, if written, ends `failed` (see `settle` for
//! how that holds when a call fails half-way). Nothing else happens on the
//! request path: the GPU controller is only nudged, it talks to EC2 on its
//! own time.

use std::sync::Arc;

use common::rate_limit::ClientKey;
use gpu::GpuHandle;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::{
    InvalidField, JobKind, JobRequest, JobStatus, QueueName,
    admission::{self, AdmissionSettings, Backlog},
    image_urls::{ImageUrlPolicy, url_fields},
    message::JobMessage,
    settle,
};
use crate::{
    metrics,
    queue::{IntakeError, JobQueue, OneFileIntake},
    tasks::{IdempotencyClaim, NewTask, TaskStore, TaskStoreError, Transition},
};

/// Everything a submit needs, built once at start-up.
pub struct Intake {
    pub tasks: Arc<dyn TaskStore>,
    pub gpu_queue: Arc<dyn JobQueue>,
    pub cpu_queue: Arc<dyn JobQueue>,
    /// Embedded mode: record and message in one transaction.
    pub one_file: Option<OneFileIntake>,
    /// Where the image URLs of a job may point.
    pub image_urls: Arc<ImageUrlPolicy>,
    pub admission: AdmissionSettings,
    /// Queue depths as last read, for the backlog caps.
    pub backlog: Backlog,
    /// Nudged when GPU work arrives; it talks to EC2 on its own time.
    pub gpu: GpuHandle,
    /// Background settles stop here (the settle sweep takes the rest).
    pub shutdown: CancellationToken,
}

impl Intake {
    pub fn queue(&self, name: QueueName) -> &Arc<dyn JobQueue> {
        match name {
            QueueName::Gpu => &self.gpu_queue,
            QueueName::Cpu => &self.cpu_queue,
        }
    }
}

/// Why a submit was not accepted; the HTTP face maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// 422 naming the field.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// 409: the Idempotency-Key is in use.
    #[error("{0}")]
    Conflict(&'static str),
    /// 429: backlog cap or daily quota; retry after so many seconds.
    #[error("{detail}")]
    Refused { detail: String, retry_after: u64 },
    /// 503 naming the part.
    #[error("{part} unavailable: {cause}")]
    Unavailable { part: &'static str, cause: String },
    #[error("{0}")]
    Internal(String),
}

impl From<TaskStoreError> for SubmitError {
    fn from(err: TaskStoreError) -> Self {
        match err {
            TaskStoreError::Unavailable(cause) => Self::Unavailable {
                part: "task store",
                cause,
            },
            other => Self::Internal(other.to_string()),
        }
    }
}

/// Who submits, as the HTTP face knows it.
#[derive(Debug, Clone)]
pub struct Submitter {
    /// The rate-limit key: `user:<sub>` or the address.
    pub client: ClientKey,
    /// The signed-in user's `sub`.
    pub owner_id: Option<String>,
    /// The `Idempotency-Key` header, checked for shape.
    pub idempotency_key: Option<String>,
}

/// Checks and accepts one job: validation, image origins and the backlog
/// cap first, then the writes in their own task — a client that gives up
/// mid-submit drops its request, not the writes: a record once written
/// always gets its message (or ends `failed`).
pub async fn submit<T: JobRequest>(
    intake: &Arc<Intake>,
    request: T,
    submitter: Submitter,
) -> Result<JobAccepted, SubmitError> {
    request.validate()?;
    let request_body =
        serde_json::to_value(&request).map_err(|e| SubmitError::Internal(e.to_string()))?;
    // The hosts fetch these URLs from inside the VPC: only the canvas's
    // own origins (or IMAGE_URL_ORIGINS) may appear.
    for (field, url) in url_fields(&request_body) {
        intake
            .image_urls
            .check(url)
            .map_err(|refusal| InvalidField::new(field, refusal))?;
    }
    admission::check_backlog(&intake.admission, &intake.backlog, T::KIND.queue)?;
    let intake = intake.clone();
    tokio::spawn(async move {
        submit_checked(
            &intake,
            &T::KIND,
            request_body,
            submitter.idempotency_key.as_deref(),
            &submitter.client,
            submitter.owner_id.as_deref(),
        )
        .await
    })
    .await
    .map_err(|e| SubmitError::Internal(e.to_string()))?
}

/// An idempotency key binds to its job for this long.
const IDEMPOTENCY_TTL_SECONDS: i64 = 24 * 3600;

/// The answer to a submit, exactly as the old service gave it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobAccepted {
    pub job_id: String,
    #[schema(example = "pending")]
    pub status: String,
    pub result_url: Option<String>,
    pub error: Option<String>,
}

/// The stored form of an Idempotency-Key, scoped to its user: the same key
/// from two users names two jobs, so a key never shows one user another's
/// job. Anonymous keys hash as before accounts. (A header value cannot hold
/// the newline, so no anonymous key can pose as a user's.)
fn idempotency_key_hash(owner_id: Option<&str>, key: &str) -> String {
    let scoped = match owner_id {
        Some(owner) => Sha256::digest(format!("{owner}\n{key}").as_bytes()),
        None => Sha256::digest(key.as_bytes()),
    };
    hex::encode(scoped)
}

async fn submit_checked(
    app: &Intake,
    kind: &'static JobKind,
    request_body: Value,
    idempotency_key: Option<&str>,
    client: &ClientKey,
    owner_id: Option<&str>,
) -> Result<JobAccepted, SubmitError> {
    let task_id = uuid::Uuid::new_v4().to_string();
    let now = crate::unix_now();

    let key_hash = idempotency_key.map(|key| idempotency_key_hash(owner_id, key));
    if let Some(key_hash) = &key_hash {
        let fingerprint = hex::encode(Sha256::digest(
            format!("{}\n{}", kind.route, request_body).as_bytes(),
        ));
        match app
            .tasks
            .claim_idempotency_key(
                key_hash,
                &fingerprint,
                &task_id,
                now,
                IDEMPOTENCY_TTL_SECONDS,
            )
            .await?
        {
            IdempotencyClaim::Claimed => {}
            IdempotencyClaim::Existing {
                task_id: existing,
                fingerprint: seen,
            } if seen == fingerprint => {
                return match app.tasks.get(&existing).await? {
                    Some(record) => {
                        let view = super::view::JobView::from(record);
                        Ok(JobAccepted {
                            job_id: existing,
                            status: view.status,
                            result_url: view.result_url,
                            error: view.error,
                        })
                    }
                    // The first request holds the key but has not written its
                    // record yet (or is failing and about to free the key).
                    None => Err(SubmitError::Conflict(
                        "A request with this Idempotency-Key is still being accepted; retry shortly",
                    )),
                };
            }
            IdempotencyClaim::Existing { .. } => {
                return Err(SubmitError::Conflict(
                    "Idempotency-Key was already used with a different request body",
                ));
            }
        }
    }

    // After the idempotency check, so a replayed submit costs nothing.
    let counted =
        admission::count_against_quota(&app.admission, app.tasks.as_ref(), client, now).await;
    let accepted = match counted {
        Ok(ticket) => {
            // Counted before the message exists, so a depth read never
            // sees it twice (see `Backlog`).
            app.backlog.accepted(kind.queue);
            let accepted = accept(app, kind, &task_id, &request_body, now, owner_id).await;
            if accepted.is_err() {
                app.backlog.withdrawn(kind.queue);
                if let Some(ticket) = ticket {
                    ticket.give_back(app.tasks.as_ref()).await;
                }
            }
            accepted
        }
        Err(refused) => Err(refused),
    };
    if accepted.is_err()
        && let Some(key_hash) = &key_hash
        && let Err(e) = app.tasks.release_idempotency_key(key_hash, &task_id).await
    {
        tracing::warn!(task_id, error = %e, "could not free the idempotency key of a refused job");
    }
    accepted?;
    metrics::job_submitted(kind.name);
    if kind.queue == QueueName::Gpu {
        app.gpu.work_arrived();
    }
    Ok(pending(task_id))
}

/// The writes: in one transaction when the queue lives in the task store's
/// file; else the record (awaiting its message), the message, the confirm —
/// see `settle` for what each failure leaves and who finishes it.
async fn accept(
    app: &Intake,
    kind: &'static JobKind,
    task_id: &str,
    request_body: &Value,
    now: i64,
    owner_id: Option<&str>,
) -> Result<(), SubmitError> {
    let mut task = NewTask {
        task_id: task_id.to_owned(),
        kind,
        now,
        owner_id: owner_id.map(str::to_owned),
        awaiting_queue: false,
    };
    let body = JobMessage::new(kind, task_id, request_body.clone()).to_body();
    if let Some(one_file) = &app.one_file {
        let queue = one_file.queue(kind.queue);
        return match queue.send_with_task(&task, &body).await {
            Ok(()) => Ok(()),
            Err(IntakeError::Tasks(e)) => Err(e.into()),
            Err(IntakeError::Queue(e)) => {
                tracing::error!(task_id, error = %e, "could not queue the job");
                if let Err(e) = queue.record_refused(&task, settle::NOT_QUEUED).await {
                    tracing::warn!(task_id, error = %e, "could not record the refused job");
                }
                Err(SubmitError::Unavailable {
                    part: "job queue",
                    cause: e.to_string(),
                })
            }
        };
    }
    task.awaiting_queue = true;
    if let Err(e) = app.tasks.create(&task).await {
        // A write that timed out may still have landed: settle it like a
        // failed send (a record that was never written refuses the fail).
        if matches!(e, TaskStoreError::Unavailable(_)) {
            settle::fail_later(&app.tasks, &app.shutdown, task_id);
        }
        return Err(e.into());
    }
    if let Err(send_error) = app.queue(kind.queue).send(&body).await {
        // The client sees the record's error: a fixed reason, the cause
        // (which may name accounts and roles) only in the log.
        tracing::error!(task_id, error = %send_error, "could not queue the job");
        settle::fail(&app.tasks, &app.shutdown, task_id).await;
        return Err(SubmitError::Unavailable {
            part: "job queue",
            cause: send_error.to_string(),
        });
    }
    match app.tasks.confirm_queued(task_id).await {
        Ok(Transition::Applied) => Ok(()),
        // Only the settle sweep fails a confirmed-later record, long after
        // any submit ends; if it did, the job will not run: say so.
        Ok(Transition::Refused { current }) => {
            tracing::error!(
                task_id,
                ?current,
                "queued job was settled before its confirm"
            );
            Err(SubmitError::Unavailable {
                part: "task store",
                cause: "the job was settled before it could be confirmed".to_owned(),
            })
        }
        // The message is sent: the job is accepted, and runs once the
        // confirm lands (or ends `failed` if it never can).
        Err(e) => {
            tracing::warn!(task_id, error = %e, "could not confirm the queued job; retrying in the background");
            settle::confirm_later(&app.tasks, &app.shutdown, task_id);
            Ok(())
        }
    }
}

fn pending(job_id: String) -> JobAccepted {
    JobAccepted {
        job_id,
        status: JobStatus::Pending.as_str().to_owned(),
        result_url: None,
        error: None,
    }
}
