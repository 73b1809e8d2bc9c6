//! When the database or the object store is down, requests fail within
//! seconds with 503 naming the part, liveness stays 200, and readiness says
//! which part is down. Nothing is left half-written.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use support::{TestApp, images};

/// A local port nothing listens on: connections are refused at once.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn database_down_is_503_not_a_hang() {
    let port = closed_port();
    let app = TestApp::embedded()
        .env(
            "DATABASE_URL",
            &format!("postgres://postgres@127.0.0.1:{port}/canvas"),
        )
        .env("RUN_MIGRATIONS", "false")
        .env("DATABASE_TIMEOUT_SECONDS", "2")
        .start()
        .await;
    let detail = tokio::time::timeout(
        Duration::from_secs(20),
        app.send(
            axum::http::Request::post("/session")
                .body(axum::body::Body::empty())
                .unwrap(),
        ),
    )
    .await
    .expect("answers within seconds")
    .assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("database"), "{detail}");
    assert!(
        !detail.contains(&port.to_string()),
        "no connection details leak: {detail}"
    );

    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    let ready = app.get("/ready").await;
    let detail = ready.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("database"), "{detail}");
    assert_eq!(ready.json()["checks"]["database"], "unavailable");
    assert_eq!(ready.json()["checks"]["object_store"], "ok");
}

#[tokio::test]
async fn object_store_down_is_503_and_leaves_no_row() {
    let port = closed_port();
    let db = tempfile::tempdir().unwrap();
    let app = TestApp::embedded()
        .env(
            "DATABASE_URL",
            &format!("sqlite://{}/canvas.db", db.path().display()),
        )
        .env("S3_BUCKET", "media")
        .env("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY", "testing")
        .env("AWS_ACCESS_SECRET", "testing")
        .env("CLOUDFRONT_DOMAIN", "cdn.example.test")
        .start()
        .await;
    let session = app.new_session().await;
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        app.upload(&session, "a.png", "image/png", &images::png(1, 1)),
    )
    .await
    .expect("answers within seconds");
    let detail = response.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("object store"), "{detail}");
    assert_eq!(
        app.get(&format!("/images?session_id={session}"))
            .await
            .json(),
        serde_json::json!({"items": []})
    );
    let ready = app.get("/ready").await;
    let detail = ready.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("object store"), "{detail}");
    assert_eq!(ready.json()["checks"]["database"], "ok");
}

#[tokio::test]
async fn database_and_s3_that_never_answer_are_503_within_seconds() {
    let database = testkit::unresponsive_endpoint()
        .await
        .replace("http://", "postgres://postgres@");
    let app = TestApp::embedded()
        .env("DATABASE_URL", &format!("{database}/canvas"))
        .env("RUN_MIGRATIONS", "false")
        .env("DATABASE_TIMEOUT_SECONDS", "2")
        .start()
        .await;
    let detail = tokio::time::timeout(
        Duration::from_secs(15),
        app.send(
            axum::http::Request::post("/session")
                .body(axum::body::Body::empty())
                .unwrap(),
        ),
    )
    .await
    .expect("a hanging database fails the request within seconds")
    .assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("database"), "{detail}");

    let s3 = testkit::unresponsive_endpoint().await;
    let db = tempfile::tempdir().unwrap();
    let app = TestApp::embedded()
        .env(
            "DATABASE_URL",
            &format!("sqlite://{}/canvas.db", db.path().display()),
        )
        .env("S3_BUCKET", "media")
        .env("AWS_ENDPOINT_URL", &s3)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .start()
        .await;
    let ready = tokio::time::timeout(Duration::from_secs(15), app.get("/ready"))
        .await
        .expect("readiness answers within seconds");
    let detail = ready.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("object store"), "{detail}");
    let session = app.new_session().await;
    let added = tokio::time::timeout(
        Duration::from_secs(20),
        app.post(
            "/add-image",
            serde_json::json!({"session_id": session, "s3_key": "comfyui-results/x.png"}),
        ),
    )
    .await
    .expect("a hanging S3 fails the request within seconds");
    added.assert_error(StatusCode::SERVICE_UNAVAILABLE);
}
