//! The network to moto cut under a running orchestrator, through
//! `testkit::FaultProxy`, refused and reset (`break_networking`) or accepted
//! and silent (`blackhole`). moto is one endpoint for every AWS service, so
//! one cut takes DynamoDB, SQS and EC2 down together: submits and status
//! reads are 503 naming the task store within the dependency timeout,
//! `/health` stays 200, `/ready` names the parts, and after
//! `restore_networking` the same service serves again without a restart.
//!
//! EC2 is cut apart from the rest by running the orchestrator on its
//! embedded parts (SQLite task store and queues, which are inside the
//! process and cannot be cut) with only the GPU host on moto: the GPU
//! status reports the error and GPU control is 503 while job status stays
//! 200.

mod support;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;
use support::TestApp;
use testkit::{FaultProxy, timed};

/// A correctness bound on "within the dependency timeout" (2 s), with room
/// for a loaded machine; not a benchmark.
const PROMPT: Duration = Duration::from_secs(3);
const IMAGE: &str = "https://cdn.example.test/images/s/a.png";
const ADMIN: &str = "fault-test-admin-token";

#[derive(Debug, Clone, Copy)]
enum Cut {
    Refuse,
    Blackhole,
}

impl Cut {
    fn apply(self, proxy: &FaultProxy) {
        match self {
            Cut::Refuse => proxy.break_networking(),
            Cut::Blackhole => proxy.blackhole(),
        }
    }
}

/// Polls `/ready` until it is 200; false after 15 s.
async fn ready_again(app: &TestApp) -> bool {
    testkit::eventually(Duration::from_secs(15), || async {
        app.get("/ready").await.status == StatusCode::OK
    })
    .await
}

async fn aws_cut(cut: Cut) {
    let Some(builder) = TestApp::aws().await else {
        return;
    };
    // The queues and table are made directly on moto; only the service's
    // own traffic goes through the proxy (moto reads the queue from the
    // queue URL's path, so the URLs need not change).
    let (moto, _) = FaultProxy::in_front_of(&testkit::moto_url()).await;
    let app = builder.env("AWS_ENDPOINT_URL", &moto.url()).start().await;
    let job = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;

    cut.apply(&moto);
    let (response, took) =
        timed(app.post("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))).await;
    let detail = response.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("task store"), "{detail}");
    assert!(took < PROMPT, "a cut task store answered after {took:?}");
    let (status, took) = timed(app.get(&format!("/api/v1/jobs/{job}"))).await;
    let detail = status.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("task store"), "{detail}");
    assert!(took < PROMPT, "{took:?}");

    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    let (ready, took) = timed(app.get("/ready")).await;
    let detail = ready.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    for part in ["task store", "GPU queue", "CPU queue"] {
        assert!(detail.contains(part), "{detail}");
    }
    assert!(took < PROMPT, "{took:?}");

    moto.restore_networking();
    assert!(ready_again(&app).await, "not ready after moto came back");
    let status = app.get(&format!("/api/v1/jobs/{job}")).await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.text());
    assert_eq!(status.json()["status"], "pending");
    app.submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
}

async fn ec2_cut(cut: Cut) {
    if !testkit::live_backends(testkit::Needs {
        postgres: false,
        moto: true,
    })
    .await
    {
        return;
    }
    let ec2 = aws_sdk_ec2::Client::new(&support::aws().await);
    let instance = support::create_stopped_instance(&ec2).await;
    let (moto, _) = FaultProxy::in_front_of(&testkit::moto_url()).await;
    let app = TestApp::embedded()
        .env("AWS_ENDPOINT_URL", &moto.url())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("GPU_INSTANCE_ID", &instance)
        .env("GPU_POLL_SECONDS", "1")
        .env("ADMIN_TOKEN", ADMIN)
        .start()
        .await;
    let job = app
        .submit("/api/v1/face-mask/tasks", json!({"image_url": IMAGE}))
        .await;

    cut.apply(&moto);
    let (started, took) = timed(app.post_with(
        "/api/v1/gpu/start",
        json!({}),
        &[("authorization", &format!("Bearer {ADMIN}"))],
    ))
    .await;
    let detail = started.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("GPU host"), "{detail}");
    assert!(took < PROMPT, "a cut EC2 answered after {took:?}");
    // The controller's next poll fails too; the cached status says so.
    let seen = Instant::now();
    loop {
        let gpu = app.get("/api/v1/gpu").await;
        assert_eq!(gpu.status, StatusCode::OK);
        if gpu.json()["last_error"].is_string() {
            break;
        }
        assert!(
            seen.elapsed() < Duration::from_secs(10),
            "the GPU status never reported the cut: {}",
            gpu.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, took) = timed(app.get(&format!("/api/v1/jobs/{job}"))).await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.text());
    assert!(took < PROMPT, "{took:?}");
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    assert_eq!(app.get("/ready").await.status, StatusCode::OK);

    moto.restore_networking();
    let healed = Instant::now();
    loop {
        let started = app
            .post_with(
                "/api/v1/gpu/start",
                json!({}),
                &[("authorization", &format!("Bearer {ADMIN}"))],
            )
            .await;
        if started.status == StatusCode::OK {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(15),
            "GPU control did not come back: {}",
            started.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn aws_refused() {
    aws_cut(Cut::Refuse).await
}

#[tokio::test]
async fn aws_blackholed() {
    aws_cut(Cut::Blackhole).await
}

#[tokio::test]
async fn ec2_refused() {
    ec2_cut(Cut::Refuse).await
}

#[tokio::test]
async fn ec2_blackholed() {
    ec2_cut(Cut::Blackhole).await
}
