//! `GET /metrics` through HTTP, on both sets of backends: after uploads
//! that are stored and refused, the Prometheus text holds the upload
//! counters and bytes by result, the size histogram, request latency by
//! route and status, and database and object store call latency by
//! operation and result. Each service instance counts only its own calls.

mod support;

use axum::http::{StatusCode, header};
use serde_json::json;
use support::{TestApp, TestAppBuilder, images};

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    live: super::TestApp::live();

    uploads_latency_and_part_calls_are_measured,
    each_app_counts_only_its_own_calls,
);

/// The value of the series `name{labels…}` (labels in any order; others
/// may be present), if it is there.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let present: Vec<&str> = rest.split(',').collect();
            labels
                .iter()
                .all(|(k, v)| present.contains(&format!("{k}=\"{v}\"").as_str()))
                .then(|| value.parse().ok())?
        })
}

async fn metrics_text(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert!(
        response.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "Prometheus text format"
    );
    response.text()
}

async fn uploads_latency_and_part_calls_are_measured(builder: TestAppBuilder) {
    let app = builder.env("MAX_UPLOAD_BYTES", "4096").start().await;
    let session = app.new_session().await;
    let png = images::png(8, 8);
    let stored = app.upload(&session, "a.png", "image/png", &png).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.text());
    let key = stored.json()["key"].as_str().unwrap().to_owned();
    let mut big = images::png(100, 100);
    big.resize(5000, 0);
    app.upload(&session, "big.png", "image/png", &big)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE);
    app.upload(&session, "a.png", "image/png", b"not an image at all")
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    app.post(
        "/update-position",
        json!({"session_id": session, "s3_key": key, "x": 1.5, "y": -2.0}),
    )
    .await;
    app.get(&format!("/images?session_id={session}")).await;

    let text = metrics_text(&app).await;
    let value = |name: &str, labels: &[(&str, &str)]| {
        series(&text, name, labels)
            .unwrap_or_else(|| panic!("{name}{labels:?} missing from /metrics:\n{text}"))
    };

    // Uploads and their bytes, by result.
    assert_eq!(value("canvas_uploads_total", &[("result", "stored")]), 1.0);
    assert_eq!(
        value("canvas_uploads_total", &[("result", "too_large")]),
        1.0
    );
    assert_eq!(
        value("canvas_uploads_total", &[("result", "unsupported_type")]),
        1.0
    );
    assert_eq!(
        value("canvas_upload_bytes_total", &[("result", "stored")]),
        png.len() as f64
    );
    // A refused file counts up to where it was cut: past the limit.
    assert!(value("canvas_upload_bytes_total", &[("result", "too_large")]) > 4096.0);
    // The size histogram holds the stored upload only.
    assert_eq!(value("canvas_upload_size_bytes_count", &[]), 1.0);
    assert_eq!(value("canvas_upload_size_bytes_sum", &[]), png.len() as f64);
    assert_eq!(
        value("canvas_upload_size_bytes_bucket", &[("le", "4096")]),
        1.0,
        "a {}-byte file falls in the 4 KiB bucket",
        png.len()
    );

    // Request latency by method, route template and status.
    let requests = |method: &str, route: &str, status: &str| {
        value(
            "canvas_http_request_duration_seconds_count",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("POST", "/upload", "200"), 1.0);
    assert_eq!(requests("POST", "/upload", "413"), 1.0);
    assert_eq!(requests("POST", "/upload", "415"), 1.0);
    assert_eq!(requests("POST", "/session", "200"), 1.0);
    assert_eq!(requests("GET", "/images", "200"), 1.0);
    assert!(
        !text.contains(&session),
        "no session id (or other raw path) becomes a label"
    );

    // Calls to the parts, by operation and result.
    let db = |operation: &str| {
        value(
            "canvas_database_call_duration_seconds_count",
            &[("operation", operation), ("result", "ok")],
        )
    };
    assert_eq!(db("create_session"), 1.0);
    assert_eq!(db("add_image"), 1.0);
    assert_eq!(db("update_position"), 1.0);
    assert_eq!(db("list_images"), 1.0);
    assert!(db("session") >= 1.0);
    assert_eq!(
        value(
            "canvas_object_store_call_duration_seconds_count",
            &[("operation", "put"), ("result", "ok")],
        ),
        1.0,
        "refused files never reach the store"
    );
    assert!(text.contains("# HELP canvas_uploads_total"), "{text}");
    assert!(
        text.contains("# TYPE canvas_upload_size_bytes histogram"),
        "{text}"
    );

    // With local storage the service serves the object itself: one more
    // route, and one more kind of store call.
    if app.backends == support::Backends::Embedded {
        assert_eq!(app.get(&format!("/{key}")).await.status, StatusCode::OK);
        let text = metrics_text(&app).await;
        assert_eq!(
            series(
                &text,
                "canvas_http_request_duration_seconds_count",
                &[("method", "GET"), ("route", "/{key}"), ("status", "200")],
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            series(
                &text,
                "canvas_object_store_call_duration_seconds_count",
                &[("operation", "read"), ("result", "ok")],
            ),
            Some(1.0),
            "{text}"
        );
    }

    // /metrics is in the OpenAPI document, as a text response.
    let doc = app.get("/openapi.json").await.json();
    assert!(
        doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"].is_object(),
        "{}",
        doc["paths"]["/metrics"]
    );
}

async fn each_app_counts_only_its_own_calls(builder: TestAppBuilder) {
    let first = builder.start().await;
    let session = first.new_session().await;
    let stored = first
        .upload(&session, "a.png", "image/png", &images::png(2, 2))
        .await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.text());
    // A second instance in the same process (as the launcher runs this
    // service beside the orchestrator) has a registry of its own.
    let second = TestApp::embedded().start().await;
    let text = metrics_text(&second).await;
    assert_eq!(
        series(&text, "canvas_uploads_total", &[("result", "stored")]),
        None,
        "{text}"
    );
    let text = metrics_text(&first).await;
    assert_eq!(
        series(&text, "canvas_uploads_total", &[("result", "stored")]),
        Some(1.0)
    );
}
