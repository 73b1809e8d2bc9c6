//! When the task store or a queue is down, submits fail within seconds with
//! 503 (and nothing is half-written), liveness stays 200, and readiness
//! names the part that is down.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use support::TestApp;

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn aws_unreachable_is_503_within_seconds() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let app = TestApp::embedded()
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("SQS_QUEUE_URL", &format!("{endpoint}/123456789012/gpu"))
        .env("CPU_SQS_QUEUE_URL", &format!("{endpoint}/123456789012/cpu"))
        .env("DYNAMODB_TABLE", "task_store")
        .start()
        .await;
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        app.post(
            "/api/v1/camera-angle/jobs",
            json!({"image_url": "https://cdn.example.test/a.png"}),
        ),
    )
    .await
    .expect("answers within seconds");
    let detail = response.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("task store"), "{detail}");
    assert!(
        !detail.contains("127.0.0.1"),
        "no connection details leak: {detail}"
    );
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    let ready = app.get("/ready").await;
    let detail = ready.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    for part in ["task store", "GPU queue", "CPU queue"] {
        assert!(detail.contains(part), "{detail}");
    }
}

#[tokio::test]
async fn a_missing_table_is_named_by_readiness() {
    let Some(builder) = TestApp::aws().await else {
        return;
    };
    let app = builder.env("DYNAMODB_TABLE", "no-such-table").start().await;
    let ready = app.get("/ready").await;
    let detail = ready.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("task store"), "{detail}");
    assert!(!detail.contains("queue"), "the queues are fine: {detail}");
}

#[tokio::test]
async fn aws_that_never_answers_is_503_within_seconds() {
    let endpoint = testkit::unresponsive_endpoint().await;
    let app = TestApp::embedded()
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("SQS_QUEUE_URL", &format!("{endpoint}/123456789012/gpu"))
        .env("CPU_SQS_QUEUE_URL", &format!("{endpoint}/123456789012/cpu"))
        .env("DYNAMODB_TABLE", "task_store")
        .start()
        .await;
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        app.post(
            "/api/v1/camera-angle/jobs",
            json!({"image_url": "https://cdn.example.test/a.png"}),
        ),
    )
    .await
    .expect("a hanging task store fails the submit within seconds");
    response.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    let ready = tokio::time::timeout(Duration::from_secs(10), app.get("/ready"))
        .await
        .expect("readiness answers within its check timeout");
    ready.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
}
