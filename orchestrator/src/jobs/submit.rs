//! The submit path: validate → write the `pending` record → send the message
//! → 202. A 202 means the job has its record and its message; a 5xx means it
//! never runs and its record, if written, ends `failed` (see `settle` for
//! how that holds when a call fails half-way). Nothing else happens on the
//! request path: the GPU controller is only nudged, it talks to EC2 on its
//! own time.

use axum::{
    Extension, Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use common::{ApiError, caller::Caller, extract::ApiJson, rate_limit::ClientKey};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{JobKind, JobRequest, JobStatus, QueueName, admission, image_urls::url_fields, settle};
use crate::{
    App,
    queue::IntakeError,
    routes::AppState,
    tasks::{IdempotencyClaim, NewTask, TaskStoreError, Transition},
    telemetry,
};

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

pub async fn submit_handler<T: JobRequest>(
    State(app): State<AppState>,
    client: Option<Extension<ClientKey>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<T>,
) -> Result<(StatusCode, Json<JobAccepted>), ApiError> {
    request.validate()?;
    let request_body = serde_json::to_value(&request).map_err(ApiError::internal)?;
    // The hosts fetch these URLs from inside the VPC: only the canvas's
    // own origins (or IMAGE_URL_ORIGINS) may appear.
    for (field, url) in url_fields(&request_body) {
        app.image_urls
            .check(url)
            .map_err(|refusal| ApiError::invalid_field(field, refusal))?;
    }
    admission::check_backlog(&app.admission, &app.backlog, T::KIND.queue)?;
    let key = idempotency_key(&headers)?;
    // The rate-limit layer names the client; without it (a router driven
    // directly) every caller is one client.
    let client = client.map_or_else(|| ClientKey::of(None, None), |c| c.0);
    // Its own task: a client that gives up mid-submit drops this handler,
    // not the writes — a record once written always gets its message (or
    // ends `failed`), whatever the connection does.
    let accepted = tokio::spawn(async move {
        submit(
            &app,
            &T::KIND,
            request_body,
            key.as_deref(),
            &client,
            caller.user_id.as_deref(),
        )
        .await
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    Ok(Some(key.to_owned()))
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

/// The queue message, exactly as the adapters parse it.
pub fn message_body(kind: &JobKind, task_id: &str, request_body: &Value) -> String {
    let message = match kind.task_type {
        Some(task_type) => json!({
            "task_id": task_id,
            "task_type": task_type,
            "api_path": kind.api_path,
            "request_body": request_body,
        }),
        None => json!({
            "task_id": task_id,
            "api_path": kind.api_path,
            "request_body": request_body,
        }),
    };
    message.to_string()
}

pub async fn submit(
    app: &App,
    kind: &'static JobKind,
    request_body: Value,
    idempotency_key: Option<&str>,
    client: &ClientKey,
    owner_id: Option<&str>,
) -> Result<JobAccepted, ApiError> {
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
                    None => Err(ApiError::conflict(
                        "A request with this Idempotency-Key is still being accepted; retry shortly",
                    )),
                };
            }
            IdempotencyClaim::Existing { .. } => {
                return Err(ApiError::conflict(
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
            let accepted = accept(app, kind, &task_id, &request_body, now, owner_id).await;
            if accepted.is_err()
                && let Some(ticket) = ticket
            {
                ticket.give_back(app.tasks.as_ref()).await;
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
    app.backlog.accepted(kind.queue);
    telemetry::job_submitted(kind.name);
    if kind.queue == QueueName::Gpu {
        app.gpu_work_arrived();
    }
    Ok(pending(task_id))
}

/// The writes: in one transaction when the queue lives in the task store's
/// file; else the record (awaiting its message), the message, the confirm —
/// see `settle` for what each failure leaves and who finishes it.
async fn accept(
    app: &App,
    kind: &'static JobKind,
    task_id: &str,
    request_body: &Value,
    now: i64,
    owner_id: Option<&str>,
) -> Result<(), ApiError> {
    let mut task = NewTask {
        task_id: task_id.to_owned(),
        job_type: kind.api_path.to_owned(),
        kind: kind.name.to_owned(),
        queue: kind.queue.as_str().to_owned(),
        now,
        owner_id: owner_id.map(str::to_owned),
        awaiting_queue: false,
    };
    let body = message_body(kind, task_id, request_body);
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
                Err(ApiError::unavailable("job queue", e))
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
        return Err(ApiError::unavailable("job queue", send_error));
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
            Err(ApiError::unavailable(
                "task store",
                "the job was settled before it could be confirmed",
            ))
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
