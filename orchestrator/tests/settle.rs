//! The AWS submit invariants when a call fails half-way, on SQS and
//! DynamoDB (moto), each behind its own `testkit::FaultProxy` through
//! `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL_DYNAMODB`:
//! - a submit answered 5xx never runs, and its record ends `failed` — even
//!   when its `SendMessage` did reach the queue (the answer was lost);
//! - a 202 whose confirm could not be written still runs, once the store
//!   takes the confirm;
//! - a record no submit settled is failed by the settle sweep;
//! - our worker never runs a job whose submit has not confirmed it.
//!
//! The embedded backends write the record and its message in one SQLite
//! transaction (`durability.rs`), so none of this applies to them.

mod support;

use std::{sync::Arc, time::Duration};

use axum::http::StatusCode;
use orchestrator::{
    jobs::{JobStatus, QueueName, kinds, message::JobMessage, settle},
    tasks::{NewTask, StatusChange, Transition},
    worker::{Outcome, Worker, WorkerSettings},
};
use serde_json::{Value, json};
use support::{
    TestApp, TestAppBuilder,
    inference::{Inference, Mode},
};
use testkit::FaultProxy;
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "https://cdn.example.test/images/s/a.png";
const SUBMIT: &str = "/api/v1/camera-angle/jobs";

/// SQS and DynamoDB each behind a proxy; background loops slowed to a crawl
/// so the only traffic through the proxies is the test's own.
async fn app_behind_proxies() -> Option<(TestApp, FaultProxy, FaultProxy)> {
    let builder = TestApp::aws().await?;
    let (sqs, _) = FaultProxy::in_front_of(&testkit::moto_url()).await;
    let (dynamo, _) = FaultProxy::in_front_of(&testkit::moto_url()).await;
    let app = quiet(builder)
        .env("AWS_ENDPOINT_URL_SQS", &sqs.url())
        .env("AWS_ENDPOINT_URL_DYNAMODB", &dynamo.url())
        .start()
        .await;
    Some((app, sqs, dynamo))
}

fn quiet(builder: TestAppBuilder) -> TestAppBuilder {
    builder
        .env("SWEEP_INTERVAL_SECONDS", "3600")
        .env("QUEUE_DEPTH_POLL_SECONDS", "3600")
        .env("DAILY_JOB_QUOTA", "0")
}

fn body() -> Value {
    json!({"image_url": IMAGE})
}

/// Bytes one submit sends through `proxy`: the size of the same submit's
/// calls next time (ids and signatures have fixed lengths).
async fn bytes_of_one_submit(app: &TestApp, proxy: &FaultProxy) -> u64 {
    // The first submit opens connections and lets start-up calls finish.
    app.submit(SUBMIT, body()).await;
    let before = proxy.bytes_sent_upstream();
    app.submit(SUBMIT, body()).await;
    proxy.bytes_sent_upstream() - before
}

fn worker(app: &TestApp, backend: &Inference) -> Arc<Worker> {
    let settings = WorkerSettings {
        visibility: Duration::from_secs(2),
        poll_min: Duration::from_millis(20),
        poll_max: Duration::from_millis(100),
        retry_delay: Duration::ZERO,
        job_timeout: Duration::from_secs(20),
        drain: Duration::from_secs(5),
        image_urls: app.app.image_urls.clone(),
        ..WorkerSettings::new(QueueName::Gpu, &backend.url)
    };
    Arc::new(Worker::new(
        app.app.tasks.clone(),
        app.app.queue(QueueName::Gpu).clone(),
        settings,
    ))
}

/// Every message now on the GPU queue, by task id (hidden for a minute).
async fn gpu_messages(app: &TestApp) -> Vec<orchestrator::queue::QueueMessage> {
    let mut all = Vec::new();
    loop {
        let batch = app
            .app
            .queue(QueueName::Gpu)
            .receive(10, Duration::from_millis(200), Duration::from_secs(60))
            .await
            .unwrap();
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

fn task_id(message: &orchestrator::queue::QueueMessage) -> String {
    let body: Value = serde_json::from_str(&message.body).unwrap();
    body["task_id"].as_str().unwrap().to_owned()
}

/// Polls until `check` holds for the record of `task_id`; false after 15 s.
async fn eventually(
    app: &TestApp,
    task_id: &str,
    check: impl Fn(&orchestrator::tasks::TaskRecord) -> bool,
) -> bool {
    testkit::eventually(Duration::from_secs(15), || async {
        matches!(app.app.tasks.get(task_id).await, Ok(Some(record)) if check(&record))
    })
    .await
}

/// The id of the one record that is not among `known`.
async fn new_task(app: &TestApp, known: &[String]) -> (String, Option<String>, Option<String>) {
    let mut fresh: Vec<_> = app
        .all_tasks()
        .await
        .into_iter()
        .filter(|(id, _, _)| !known.contains(id))
        .collect();
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    fresh.remove(0)
}

async fn known_tasks(app: &TestApp) -> Vec<String> {
    app.all_tasks()
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect()
}

/// The `SendMessage` reaches the queue but its answer never comes back: the
/// client gets 503, the record ends `failed`, and a worker that receives the
/// message acknowledges it without running the job.
#[tokio::test]
async fn a_send_whose_answer_is_lost_is_failed_and_never_runs() {
    let Some((app, sqs, _dynamo)) = app_behind_proxies().await else {
        return;
    };
    let send = bytes_of_one_submit(&app, &sqs).await;
    for message in gpu_messages(&app).await {
        app.app
            .queue(QueueName::Gpu)
            .delete(&message.receipt)
            .await
            .unwrap();
    }
    let known = known_tasks(&app).await;

    // The whole request goes through, then the link goes silent.
    sqs.blackhole_after(send);
    let response = app.post(SUBMIT, body()).await;
    let detail = response.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("job queue"), "{detail}");
    let (task, status, error) = new_task(&app, &known).await;
    assert_eq!(status.as_deref(), Some("failed"), "{error:?}");
    assert_eq!(error.as_deref(), Some(settle::NOT_QUEUED));

    sqs.restore_networking();
    // The message did reach the queue…
    let messages = gpu_messages(&app).await;
    let message = messages
        .into_iter()
        .find(|m| task_id(m) == task)
        .expect("the lost send's message is on the queue");
    // …and is never run.
    let backend = Inference::start(Mode::CompletesAfter(1)).await;
    let outcome = worker(&app, &backend)
        .handle(message, &CancellationToken::new())
        .await;
    assert_eq!(outcome, Outcome::Skipped);
    assert!(backend.submitted().is_empty());
    assert_eq!(app.job(&task).await["status"], "failed");
}

/// SQS refused or silent while DynamoDB answers: 503 naming the queue within
/// the dependency timeout, the record `failed`, no message, job status still
/// 200, `/ready` naming the queues only, and serving again after the heal.
async fn sqs_cut(cut: fn(&FaultProxy)) {
    let Some((app, sqs, _dynamo)) = app_behind_proxies().await else {
        return;
    };
    let earlier = app.submit(SUBMIT, body()).await;
    let known = known_tasks(&app).await;

    cut(&sqs);
    let response = app.post(SUBMIT, body()).await;
    let detail = response.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("job queue"), "{detail}");
    let (_, status, _) = new_task(&app, &known).await;
    assert_eq!(status.as_deref(), Some("failed"));
    assert_eq!(app.job(&earlier).await["status"], "pending");
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    let ready = app.get("/ready").await;
    let detail = ready.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("GPU queue"), "{detail}");
    assert!(!detail.contains("task store: down"), "{detail}");

    sqs.restore_networking();
    assert!(ready_again(&app).await, "not ready after SQS came back");
    let after = app.submit(SUBMIT, body()).await;
    // A silent link may still deliver the cut send once it heals: then the
    // message is there, for a record that is `failed` and will not run.
    for message in gpu_messages(&app).await {
        let task = task_id(&message);
        if task != earlier && task != after {
            assert_eq!(app.job(&task).await["status"], "failed");
        }
    }
    assert_eq!(app.job(&after).await["status"], "pending");
}

#[tokio::test]
async fn sqs_refused() {
    sqs_cut(FaultProxy::break_networking).await
}

#[tokio::test]
async fn sqs_blackholed() {
    sqs_cut(FaultProxy::blackhole).await
}

/// DynamoDB refused or silent while SQS answers: submits and status reads
/// are 503 naming the task store within the dependency timeout and send no
/// message; `/ready` names the task store only; serving again after.
async fn dynamodb_cut(cut: fn(&FaultProxy)) {
    let Some((app, _sqs, dynamo)) = app_behind_proxies().await else {
        return;
    };
    let earlier = app.submit(SUBMIT, body()).await;

    cut(&dynamo);
    let response = app.post(SUBMIT, body()).await;
    let detail = response.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("task store"), "{detail}");
    let status = app.get(&format!("/api/v1/jobs/{earlier}")).await;
    let detail = status.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("task store"), "{detail}");
    let ready = app.get("/ready").await;
    let detail = ready.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("task store"), "{detail}");
    assert!(!detail.contains("GPU queue: down"), "{detail}");

    dynamo.restore_networking();
    assert!(
        ready_again(&app).await,
        "not ready after DynamoDB came back"
    );
    let after = app.submit(SUBMIT, body()).await;
    let queued: Vec<String> = gpu_messages(&app).await.iter().map(task_id).collect();
    assert_eq!(queued, vec![earlier, after]);
    // Whatever the cut submit wrote is settled: nothing stays pending but
    // the two queued jobs.
    let mut settled = false;
    for _ in 0..150 {
        let pending: Vec<_> = app
            .all_tasks()
            .await
            .into_iter()
            .filter(|(_, status, _)| status.as_deref() == Some("pending"))
            .collect();
        if pending.len() == 2 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "{:?}", app.all_tasks().await);
}

#[tokio::test]
async fn dynamodb_refused() {
    dynamodb_cut(FaultProxy::break_networking).await
}

#[tokio::test]
async fn dynamodb_blackholed() {
    dynamodb_cut(FaultProxy::blackhole).await
}

/// The message is sent, then DynamoDB goes silent before the confirm lands:
/// the client gets 202 (the job has its record and its message), and once
/// DynamoDB is back the confirm lands and a worker runs the job.
#[tokio::test]
async fn a_202_whose_confirm_was_cut_still_runs() {
    let Some((app, _sqs, dynamo)) = app_behind_proxies().await else {
        return;
    };
    let calls = bytes_of_one_submit(&app, &dynamo).await;
    // The confirm's size alone, from a confirm of the same shape.
    let confirmed = app.submit(SUBMIT, body()).await;
    let before = dynamo.bytes_sent_upstream();
    app.app.tasks.confirm_queued(&confirmed).await.unwrap();
    let confirm = dynamo.bytes_sent_upstream() - before;
    let known = known_tasks(&app).await;
    for message in gpu_messages(&app).await {
        app.app
            .queue(QueueName::Gpu)
            .delete(&message.receipt)
            .await
            .unwrap();
    }

    // The record's write goes through and is answered; the confirm does not.
    dynamo.blackhole_from(calls - confirm);
    let response = app.post(SUBMIT, body()).await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
    let job = response.json()["job_id"].as_str().unwrap().to_owned();
    dynamo.restore_networking();
    assert!(
        eventually(&app, &job, |r| !r.awaiting_queue
            && r.status == Some(JobStatus::Pending.into()))
        .await,
        "the confirm never landed: {:?}",
        app.app.tasks.get(&job).await
    );
    let (id, _, _) = new_task(&app, &known).await;
    assert_eq!(id, job);

    let backend = Inference::start(Mode::CompletesAfter(1)).await;
    let message = gpu_messages(&app).await.pop().expect("the job's message");
    assert_eq!(task_id(&message), job);
    let outcome = worker(&app, &backend)
        .handle(message, &CancellationToken::new())
        .await;
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(app.job(&job).await["status"], "completed");
}

/// A record written, its message sent, and no confirm yet: the worker waits
/// for the confirm and then runs the job.
#[tokio::test]
async fn the_worker_waits_for_the_confirm() {
    let Some(builder) = TestApp::aws().await else {
        return;
    };
    let app = quiet(builder).start().await;
    let task = unconfirmed_job(&app, orchestrator::unix_now()).await;
    let backend = Inference::start(Mode::CompletesAfter(1)).await;
    let message = gpu_messages(&app).await.pop().unwrap();
    let worker = worker(&app, &backend);
    let handled =
        tokio::spawn(async move { worker.handle(message, &CancellationToken::new()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(backend.submitted().is_empty(), "ran before its confirm");
    assert_eq!(
        app.app.tasks.confirm_queued(&task).await.unwrap(),
        Transition::Applied
    );
    assert_eq!(handled.await.unwrap(), Outcome::Completed);
    assert_eq!(backend.submitted().len(), 1);
}

/// A record no submit confirmed: the worker gives its message back without
/// running it, the settle sweep fails it, and the next delivery is skipped.
/// A confirm arriving after the sweep is refused.
#[tokio::test]
async fn an_unsettled_record_is_failed_by_the_sweep_and_never_runs() {
    let Some(builder) = TestApp::aws().await else {
        return;
    };
    let app = quiet(builder).start().await;
    let long_ago = orchestrator::unix_now() - settle::UNQUEUED_AFTER_SECONDS - 10;
    let task = unconfirmed_job(&app, long_ago).await;
    // Recent records are left to their submit.
    let recent = unconfirmed_job(&app, orchestrator::unix_now()).await;
    let backend = Inference::start(Mode::CompletesAfter(1)).await;
    let worker = worker(&app, &backend);

    let messages = gpu_messages(&app).await;
    let message = messages.into_iter().find(|m| task_id(m) == task).unwrap();
    assert_eq!(
        worker.handle(message, &CancellationToken::new()).await,
        Outcome::Retried
    );
    assert!(backend.submitted().is_empty());

    assert_eq!(
        settle::sweep_unqueued(app.app.tasks.as_ref())
            .await
            .unwrap(),
        1
    );
    let job = app.job(&task).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(app.job(&recent).await["status"], "pending");
    assert_eq!(
        app.app.tasks.confirm_queued(&task).await.unwrap(),
        Transition::Refused {
            current: Some("failed".into())
        }
    );

    let again = one_message_for(&app, &task).await;
    assert_eq!(
        worker.handle(again, &CancellationToken::new()).await,
        Outcome::Skipped
    );
    assert!(backend.submitted().is_empty());
}

/// A confirmed record is never failed as unqueued.
#[tokio::test]
async fn a_confirmed_record_is_never_failed_as_unqueued() {
    let Some(builder) = TestApp::aws().await else {
        return;
    };
    let app = quiet(builder).start().await;
    let long_ago = orchestrator::unix_now() - settle::UNQUEUED_AFTER_SECONDS - 10;
    let task = unconfirmed_job(&app, long_ago).await;
    app.app.tasks.confirm_queued(&task).await.unwrap();
    let change = StatusChange::to(JobStatus::Failed, orchestrator::unix_now()).error("no");
    assert_eq!(
        app.app.tasks.fail_unqueued(&task, &change).await.unwrap(),
        Transition::Refused {
            current: Some("pending".into())
        }
    );
    assert_eq!(
        settle::sweep_unqueued(app.app.tasks.as_ref())
            .await
            .unwrap(),
        0
    );
    assert_eq!(app.job(&task).await["status"], "pending");
}

/// Writes what a submit writes before its confirm: the record awaiting its
/// message, then the message.
async fn unconfirmed_job(app: &TestApp, created_at: i64) -> String {
    let kind = kinds::KINDS
        .iter()
        .find(|k| k.route == SUBMIT)
        .expect("a known kind");
    let task_id = uuid::Uuid::new_v4().to_string();
    app.app
        .tasks
        .create(&NewTask {
            task_id: task_id.clone(),
            kind,
            now: created_at,
            owner_id: None,
            awaiting_queue: true,
        })
        .await
        .unwrap();
    app.app
        .queue(kind.queue)
        .send(&JobMessage::new(kind, &task_id, body()).to_body())
        .await
        .unwrap();
    task_id
}

async fn one_message_for(app: &TestApp, task: &str) -> orchestrator::queue::QueueMessage {
    for _ in 0..50 {
        if let Some(message) = gpu_messages(app)
            .await
            .into_iter()
            .find(|m| task_id(m) == task)
        {
            return message;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no message for {task}");
}

/// Polls `/ready` until it is 200; false after 15 s.
async fn ready_again(app: &TestApp) -> bool {
    testkit::eventually(Duration::from_secs(15), || async {
        app.get("/ready").await.status == StatusCode::OK
    })
    .await
}
