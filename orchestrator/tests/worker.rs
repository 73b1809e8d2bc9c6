//! The worker adapter (`orchestrator worker`) against a stand-in inference
//! API, on both backend sets: it runs jobs to their end with conditional
//! writes, keeps a running job's message hidden, skips finished and
//! cancelled jobs, survives being killed mid-job without running the job
//! twice, and gives up through the dead letters on a backend that always
//! fails.

mod support;

use std::{sync::Arc, time::Duration};

use orchestrator::{
    jobs::QueueName,
    sweeps,
    worker::{Outcome, Worker, WorkerSettings},
};
use serde_json::json;
use support::{
    MAX_RECEIVES, TestApp, TestAppBuilder,
    inference::{Inference, Mode},
};
use tokio_util::sync::CancellationToken;

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    aws: super::TestApp::aws();

    runs_gpu_and_cpu_jobs_to_completion,
    backend_failure_is_recorded,
    finished_and_cancelled_jobs_are_skipped,
    a_running_job_is_cancelled_at_the_next_heartbeat,
    a_killed_worker_leaves_the_job_to_another_exactly_once,
    a_backend_that_always_fails_ends_in_failed,
    malformed_messages_are_dead_lettered,
    shutdown_releases_unfinished_jobs,
);

const IMAGE: &str = "https://cdn.example.test/images/s/a.png";

fn settings(queue: QueueName, backend: &Inference) -> WorkerSettings {
    WorkerSettings {
        visibility: Duration::from_secs(2),
        poll_min: Duration::from_millis(20),
        poll_max: Duration::from_millis(100),
        retry_delay: Duration::ZERO,
        job_timeout: Duration::from_secs(20),
        drain: Duration::from_secs(5),
        ..WorkerSettings::new(queue, &backend.url)
    }
}

fn worker(app: &TestApp, settings: WorkerSettings) -> Arc<Worker> {
    let queue = app.app.queue(settings.queue).clone();
    // The worker checks image URLs against the same origins as the API.
    let settings = WorkerSettings {
        image_urls: app.app.image_urls.clone(),
        ..settings
    };
    Arc::new(Worker::new(app.app.tasks.clone(), queue, settings))
}

/// Waits (bounded) until the job's status is `status`.
async fn wait_for(app: &TestApp, job_id: &str, status: &str) -> serde_json::Value {
    for _ in 0..200 {
        let job = app.job(job_id).await;
        if job["status"] == status {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "job {job_id} never reached {status}: {}",
        app.job(job_id).await
    );
}

async fn one_message(
    app: &TestApp,
    queue: QueueName,
    visibility: Duration,
) -> orchestrator::queue::QueueMessage {
    for _ in 0..20 {
        if let Some(message) = app
            .app
            .queue(queue)
            .receive(1, Duration::from_secs(1), visibility)
            .await
            .unwrap()
            .pop()
        {
            return message;
        }
    }
    panic!("no message on the {} queue", queue.as_str());
}

async fn runs_gpu_and_cpu_jobs_to_completion(builder: TestAppBuilder) {
    let app = builder.start().await;
    let backend = Inference::start(Mode::CompletesAfter(2)).await;
    let stop = CancellationToken::new();
    for queue in [QueueName::Gpu, QueueName::Cpu] {
        tokio::spawn(worker(&app, settings(queue, &backend)).run(stop.clone()));
    }
    let gpu = app
        .submit(
            "/api/v1/camera-angle/jobs",
            json!({"image_url": IMAGE, "steps": 8}),
        )
        .await;
    let cpu = app
        .submit("/api/v1/face-mask/tasks", json!({"image_url": IMAGE}))
        .await;
    let gpu_job = wait_for(&app, &gpu, "completed").await;
    let cpu_job = wait_for(&app, &cpu, "completed").await;
    stop.cancel();
    assert!(
        gpu_job["result_url"]
            .as_str()
            .unwrap()
            .starts_with("https://cdn.example.test/comfyui-results/")
    );
    assert!(
        cpu_job["result_url"]
            .as_str()
            .unwrap()
            .starts_with("https://cdn.example.test/comfyui-results/")
    );
    assert_eq!(gpu_job["attempts"], 1);
    // The backend got the request body with its defaults filled in.
    let bodies = backend.submitted();
    assert!(bodies.contains(&json!({"image_url": IMAGE, "prompt": null, "vertical": 0, "horizontal": 0, "zoom": 0, "seed": null, "steps": 8})));
    // The attributes the old adapters wrote: GPU results in result_s3_uri,
    // CPU in result_url; the backend ids beside them.
    if let Some(dynamo) = &app.dynamo {
        let table = app.var("DYNAMODB_TABLE").unwrap();
        for (id, result, backend_id) in [
            (&gpu, "result_s3_uri", "comfy_job_id"),
            (&cpu, "result_url", "api_job_id"),
        ] {
            let item = dynamo
                .get_item()
                .table_name(table)
                .key(
                    "task_id",
                    aws_sdk_dynamodb::types::AttributeValue::S(id.clone()),
                )
                .send()
                .await
                .unwrap();
            let item = item.item().unwrap();
            assert!(item.contains_key(result), "{id}: {item:?}");
            assert!(item.contains_key(backend_id), "{id}: {item:?}");
        }
    }
    // Both messages are gone.
    let depth = app.app.gpu_queue.depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (0, 0));
}

async fn backend_failure_is_recorded(builder: TestAppBuilder) {
    let app = builder.start().await;
    let backend = Inference::start(Mode::Fails).await;
    let job = app
        .submit("/api/v1/face-mask/tasks", json!({"image_url": IMAGE}))
        .await;
    let message = one_message(&app, QueueName::Cpu, Duration::from_secs(5)).await;
    let outcome = worker(&app, settings(QueueName::Cpu, &backend))
        .handle(message, &CancellationToken::new())
        .await;
    assert_eq!(outcome, Outcome::Failed);
    let view = app.job(&job).await;
    assert_eq!(
        (view["status"].clone(), view["error"].clone()),
        (json!("failed"), json!("no face found"))
    );
}

async fn finished_and_cancelled_jobs_are_skipped(builder: TestAppBuilder) {
    let app = builder.start().await;
    let backend = Inference::start(Mode::CompletesAfter(0)).await;
    let worker = worker(&app, settings(QueueName::Gpu, &backend));

    // Cancel through the API before any worker sees it.
    let job = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
    let cancelled = app
        .post(&format!("/api/v1/jobs/{job}/cancel"), json!({}))
        .await;
    assert_eq!(
        cancelled.status,
        axum::http::StatusCode::OK,
        "{}",
        cancelled.text()
    );
    // The old frontend only stops on completed/failed: cancelled reads failed.
    assert_eq!(cancelled.json()["status"], "failed");
    assert_eq!(cancelled.json()["cancelled"], true);
    let again = app
        .post(&format!("/api/v1/jobs/{job}/cancel"), json!({}))
        .await;
    assert!(
        again
            .assert_error(axum::http::StatusCode::CONFLICT)
            .contains("cancelled")
    );
    app.post(
        &format!("/api/v1/jobs/{}/cancel", uuid::Uuid::new_v4()),
        json!({}),
    )
    .await
    .assert_error(axum::http::StatusCode::NOT_FOUND);

    let message = one_message(&app, QueueName::Gpu, Duration::from_secs(5)).await;
    assert_eq!(
        worker.handle(message, &CancellationToken::new()).await,
        Outcome::Skipped
    );
    assert!(
        backend.submitted().is_empty(),
        "a cancelled job never reaches the backend"
    );

    // A completed job redelivered (e.g. its delete was lost) is not run again.
    let done = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
    app.adapter()
        .update(&done, &[("status", "completed")], orchestrator::unix_now())
        .await;
    let message = one_message(&app, QueueName::Gpu, Duration::from_secs(5)).await;
    assert_eq!(
        worker.handle(message, &CancellationToken::new()).await,
        Outcome::Skipped
    );
    assert!(backend.submitted().is_empty());
    assert_eq!(app.job(&done).await["status"], "completed");
    let depth = app.app.gpu_queue.depth().await.unwrap();
    assert_eq!(
        (depth.visible, depth.in_flight),
        (0, 0),
        "skipped messages are deleted"
    );
}

async fn a_running_job_is_cancelled_at_the_next_heartbeat(builder: TestAppBuilder) {
    let app = builder.start().await;
    let backend = Inference::start(Mode::NeverFinishes).await;
    let job = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
    let message = one_message(&app, QueueName::Gpu, Duration::from_secs(2)).await;
    let worker = worker(&app, settings(QueueName::Gpu, &backend));
    let running =
        tokio::spawn(async move { worker.handle(message, &CancellationToken::new()).await });
    wait_for(&app, &job, "processing").await;
    app.post(&format!("/api/v1/jobs/{job}/cancel"), json!({}))
        .await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops within a heartbeat")
        .unwrap();
    assert_eq!(outcome, Outcome::Skipped);
    let view = app.job(&job).await;
    assert_eq!(
        (view["status"].clone(), view["cancelled"].clone()),
        (json!("failed"), json!(true))
    );
}

async fn a_killed_worker_leaves_the_job_to_another_exactly_once(builder: TestAppBuilder) {
    let app = builder.start().await;
    let backend = Inference::start(Mode::NeverFinishes).await;
    let job = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;

    // Worker A takes the job, submits it to the backend, and is killed.
    let first = worker(&app, settings(QueueName::Gpu, &backend));
    let message = one_message(&app, QueueName::Gpu, Duration::from_secs(2)).await;
    let a = tokio::spawn(async move { first.handle(message, &CancellationToken::new()).await });
    for _ in 0..100 {
        if !backend.submitted().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.abort();
    assert!(a.await.unwrap_err().is_cancelled());
    assert_eq!(app.job(&job).await["status"], "processing");

    // Its heartbeat died with it: the message comes back after the
    // visibility timeout, and worker B finishes the job.
    backend.set_mode(Mode::CompletesAfter(0));
    let message = one_message(&app, QueueName::Gpu, Duration::from_secs(5)).await;
    assert_eq!(message.receive_count, 2);
    let second = worker(&app, settings(QueueName::Gpu, &backend));
    assert_eq!(
        second.handle(message, &CancellationToken::new()).await,
        Outcome::Completed
    );
    let view = app.job(&job).await;
    assert_eq!(view["status"], "completed");
    assert_eq!(view["attempts"], 2);
    // Exactly once: B followed A's backend job instead of submitting again.
    assert_eq!(backend.submitted().len(), 1);
    let depth = app.app.gpu_queue.depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (0, 0));
}

async fn a_backend_that_always_fails_ends_in_failed(builder: TestAppBuilder) {
    let app = builder.start().await;
    let backend = Inference::start(Mode::Broken).await;
    let job = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
    let worker = worker(&app, settings(QueueName::Gpu, &backend));
    for attempt in 1..=MAX_RECEIVES {
        let message = one_message(&app, QueueName::Gpu, Duration::from_secs(5)).await;
        assert_eq!(message.receive_count, attempt);
        assert_eq!(
            worker.handle(message, &CancellationToken::new()).await,
            Outcome::Retried
        );
    }
    // Used up: the queue dead-letters it, and the drain fails the job.
    assert!(
        app.app
            .gpu_queue
            .receive(1, Duration::from_millis(300), Duration::from_secs(5))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(sweeps::drain_dead_letters(&app.app).await.unwrap(), 1);
    let view = app.job(&job).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(
        view["error"],
        format!("gave up after {MAX_RECEIVES} attempts")
    );
}

async fn malformed_messages_are_dead_lettered(builder: TestAppBuilder) {
    let app = builder.start().await;
    let backend = Inference::start(Mode::CompletesAfter(0)).await;
    let worker = worker(&app, settings(QueueName::Gpu, &backend));
    for body in [
        "not json",
        r#"{"api_path": "/x"}"#,
        r#"{"task_id": "no-such-job", "api_path": "/x", "request_body": {}}"#,
    ] {
        app.app.gpu_queue.send(body).await.unwrap();
        let message = one_message(&app, QueueName::Gpu, Duration::from_secs(5)).await;
        assert_eq!(
            worker.handle(message, &CancellationToken::new()).await,
            Outcome::DeadLettered,
            "{body}"
        );
    }
    assert!(backend.submitted().is_empty());
    let dead = app.app.gpu_queue.receive_dead(10).await.unwrap();
    assert_eq!(dead.len(), 3, "all three are in the dead letters");
}

async fn shutdown_releases_unfinished_jobs(builder: TestAppBuilder) {
    let app = builder.start().await;
    let backend = Inference::start(Mode::NeverFinishes).await;
    let job = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
    let stop = CancellationToken::new();
    let worker = worker(
        &app,
        WorkerSettings {
            visibility: Duration::from_secs(30),
            drain: Duration::from_millis(300),
            ..settings(QueueName::Gpu, &backend)
        },
    );
    let running = tokio::spawn(worker.run(stop.clone()));
    wait_for(&app, &job, "processing").await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("the worker stops")
        .unwrap();
    // Released at once (not after its 30 s visibility) for another worker.
    let message = one_message(&app, QueueName::Gpu, Duration::from_secs(5)).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&message.body).unwrap()["task_id"],
        job.as_str()
    );
}
