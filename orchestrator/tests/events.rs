//! `GET /api/v1/jobs/{id}/events`: Server-Sent Events of a job's status —
//! the current state at once, each change, then the stream ends after a
//! final state. One shared watcher serves every stream.

mod support;

use std::time::Duration;

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::{TestApp, TestAppBuilder};
use tower::ServiceExt;

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    aws: super::TestApp::aws();

    stream_follows_a_job_to_its_end,
    many_streams_share_one_watcher
);

const IMAGE: &str = "https://cdn.example.test/images/s/a.png";

/// Reads `status` events off an SSE body until it ends (bounded in time).
async fn next_event(body: &mut Body, buffer: &mut String) -> Option<Value> {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let data: String = block
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(str::trim)
                .collect();
            if block.lines().any(|l| l.trim() == "event: status") {
                return Some(serde_json::from_str(&data).unwrap());
            }
            continue; // a keep-alive comment
        }
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an event within 10 s")?;
        if let Ok(data) = frame.unwrap().into_data() {
            buffer.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

async fn open(app: &TestApp, job_id: &str) -> (axum::http::HeaderMap, Body) {
    let response = app
        .router()
        .oneshot(
            Request::get(format!("/api/v1/jobs/{job_id}/events"))
                .header(header::ORIGIN, support::FRONTEND)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    (headers, response.into_body())
}

async fn stream_follows_a_job_to_its_end(builder: TestAppBuilder) {
    let app = builder.env("EVENTS_POLL_MILLIS", "50").start().await;
    let job = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
    let (headers, mut body) = open(&app, &job).await;
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let mut buffer = String::new();
    let first = next_event(&mut body, &mut buffer).await.unwrap();
    assert_eq!(
        (first["job_id"].as_str(), first["status"].as_str()),
        (Some(job.as_str()), Some("pending"))
    );

    let adapter = app.adapter();
    let now = orchestrator::unix_now();
    adapter.update(&job, &[("status", "processing")], now).await;
    assert_eq!(
        next_event(&mut body, &mut buffer).await.unwrap()["status"],
        "processing"
    );
    adapter
        .update(
            &job,
            &[
                ("status", "completed"),
                ("result_s3_uri", "https://cdn.example.test/r.png"),
            ],
            now + 1,
        )
        .await;
    let last = next_event(&mut body, &mut buffer).await.unwrap();
    assert_eq!(
        (last["status"].as_str(), last["result_url"].as_str()),
        (Some("completed"), Some("https://cdn.example.test/r.png"))
    );
    assert!(
        next_event(&mut body, &mut buffer).await.is_none(),
        "the stream ends after a final state"
    );

    // A final job: one event, then the end. A cancelled one says so.
    let (_, mut body) = open(&app, &job).await;
    let mut buffer = String::new();
    assert_eq!(
        next_event(&mut body, &mut buffer).await.unwrap()["status"],
        "completed"
    );
    assert!(next_event(&mut body, &mut buffer).await.is_none());
    let other = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
    let (_, mut body) = open(&app, &other).await;
    let mut buffer = String::new();
    assert_eq!(
        next_event(&mut body, &mut buffer).await.unwrap()["status"],
        "pending"
    );
    app.post(&format!("/api/v1/jobs/{other}/cancel"), json!({}))
        .await;
    assert_eq!(
        next_event(&mut body, &mut buffer).await.unwrap()["status"],
        "cancelled"
    );
    assert!(next_event(&mut body, &mut buffer).await.is_none());

    app.get(&format!("/api/v1/jobs/{}/events", uuid::Uuid::new_v4()))
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

async fn many_streams_share_one_watcher(builder: TestAppBuilder) {
    let app = builder.env("EVENTS_POLL_MILLIS", "50").start().await;
    let jobs = [
        app.submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
            .await,
        app.submit("/api/v1/face-mask/tasks", json!({"image_url": IMAGE}))
            .await,
    ];
    let mut streams = vec![];
    for i in 0..20 {
        let (_, mut body) = open(&app, &jobs[i % 2]).await;
        let mut buffer = String::new();
        assert_eq!(
            next_event(&mut body, &mut buffer).await.unwrap()["status"],
            "pending"
        );
        streams.push((body, buffer));
    }
    // Twenty streams, two jobs: the watcher reads two records per tick.
    assert_eq!(app.app.watcher.watched(), 2);
    let now = orchestrator::unix_now();
    for job in &jobs {
        app.adapter()
            .update(job, &[("status", "failed"), ("error_message", "boom")], now)
            .await;
    }
    for (body, buffer) in &mut streams {
        let last = next_event(body, buffer).await.unwrap();
        assert_eq!(
            (last["status"].as_str(), last["error"].as_str()),
            (Some("failed"), Some("boom"))
        );
        assert!(next_event(body, buffer).await.is_none());
    }
    assert_eq!(
        app.app.watcher.watched(),
        0,
        "finished jobs are no longer read"
    );
}
