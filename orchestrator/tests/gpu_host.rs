//! The orchestrator and its GPU host on moto's EC2: a GPU job wakes a
//! stopped instance out of band (the submit itself makes no EC2 call), CPU
//! jobs never touch it, and once the work is done and the idle time has
//! passed it is stopped again. The controller's finer cases (stopping →
//! start after it stops, start failures, jobs in flight) are covered with a
//! scripted host in `crates/gpu/tests/controller.rs`, since moto's state
//! changes are instant.

mod support;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;
use support::TestApp;

const IMAGE: &str = "https://cdn.example.test/images/s/a.png";

/// Polls until the instance is in `state`, for at most `limit`.
async fn wait_for_state(ec2: &aws_sdk_ec2::Client, id: &str, state: &str, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if support::instance_state(ec2, id).await == state {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// How many times the GPU controller has looked at the host so far.
async fn gpu_looks(app: &TestApp) -> u64 {
    let status = app.get("/api/v1/gpu").await.json();
    status["looks"].as_u64().expect("looks in the GPU status")
}

#[tokio::test]
async fn gpu_job_starts_the_stopped_host_and_idle_stops_it() {
    let Some(builder) = TestApp::aws().await else {
        return;
    };
    let ec2 = aws_sdk_ec2::Client::new(&support::aws().await);
    let instance = support::create_stopped_instance(&ec2).await;
    let app = builder
        .env("GPU_INSTANCE_ID", &instance)
        .env("GPU_POLL_SECONDS", "1")
        .env("GPU_IDLE_SECONDS", "2")
        .start()
        .await;
    assert!(wait_for_state(&ec2, &instance, "stopped", Duration::from_secs(3)).await);

    // A CPU job leaves the GPU host alone: with its message on the CPU
    // queue, the controller runs a whole poll (a look at the host, a read of
    // the GPU work) and leaves the host stopped.
    app.submit("/api/v1/face-mask/tasks", json!({"image_url": IMAGE}))
        .await;
    assert_eq!(app.app.cpu_queue.depth().await.unwrap().visible, 1);
    let looked = gpu_looks(&app).await;
    let started = Instant::now();
    let status = loop {
        let status = app.get("/api/v1/gpu").await.json();
        if status["looks"].as_u64().unwrap() >= looked + 2 {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the GPU controller did not poll: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["state"], "stopped", "{status}");
    assert_eq!(status["queued"], 0, "{status}");
    assert_eq!(status["pending_start"], false, "{status}");
    assert_eq!(support::instance_state(&ec2, &instance).await, "stopped");

    // A GPU job: 202 at once, then the host starts within seconds.
    let job_id = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
    assert!(
        wait_for_state(&ec2, &instance, "running", Duration::from_secs(10)).await,
        "the GPU host was not started"
    );
    let status = app.get("/api/v1/gpu").await.json();
    assert_eq!(status["instance_id"], instance.as_str());

    // While the job waits in the queue, the host stays up past the idle time.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(support::instance_state(&ec2, &instance).await, "running");

    // The adapter runs the job to completion; then the host goes idle.
    let adapter = app.adapter();
    let message = adapter
        .receive("gpu", Duration::from_secs(60))
        .await
        .expect("message");
    adapter
        .update(
            &job_id,
            &[
                ("status", "completed"),
                ("result_s3_uri", "https://cdn.example.test/r.png"),
            ],
            orchestrator::unix_now(),
        )
        .await;
    adapter.delete("gpu", &message.receipt).await;
    assert!(
        wait_for_state(&ec2, &instance, "stopped", Duration::from_secs(15)).await,
        "the idle GPU host was not stopped"
    );
    // The status endpoint serves the controller's cache, which catches up
    // at its next look.
    let mut status = app.get("/api/v1/gpu").await.json();
    for _ in 0..50 {
        if status["state"] == "stopped" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = app.get("/api/v1/gpu").await.json();
    }
    assert_eq!(status["state"], "stopped", "{status}");
}

#[tokio::test]
async fn admin_endpoints_need_the_token() {
    let Some(builder) = TestApp::aws().await else {
        return;
    };
    let ec2 = aws_sdk_ec2::Client::new(&support::aws().await);
    let instance = support::create_stopped_instance(&ec2).await;
    let app = builder
        .env("GPU_INSTANCE_ID", &instance)
        .env("ADMIN_TOKEN", "s3cret-token")
        .start()
        .await;
    app.post("/api/v1/gpu/start", json!({}))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    app.post_with(
        "/api/v1/gpu/start",
        json!({}),
        &[("Authorization", "Bearer wrong-token!")],
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED);
    let started = app
        .post_with(
            "/api/v1/gpu/start",
            json!({}),
            &[("Authorization", "Bearer s3cret-token")],
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text());
    assert!(wait_for_state(&ec2, &instance, "running", Duration::from_secs(5)).await);
    let stopped = app
        .post_with(
            "/api/v1/gpu/stop",
            json!({}),
            &[("Authorization", "Bearer s3cret-token")],
        )
        .await;
    assert_eq!(stopped.status, StatusCode::OK, "{}", stopped.text());
    assert!(wait_for_state(&ec2, &instance, "stopped", Duration::from_secs(5)).await);
    // The old debug endpoint still answers with the instance.
    assert_eq!(
        app.get("/debug/gpu-instance").await.json()["instance_id"],
        instance.as_str()
    );
}
