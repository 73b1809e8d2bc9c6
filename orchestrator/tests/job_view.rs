//! `GET /api/v1/jobs/{id}` never contradicts itself: a job cancelled while
//! an old Python adapter ran it ends `completed` (the adapter writes without
//! conditions, and its write wins), and then reads as completed with its
//! result and no `error`; the cancel note stays in the record and shows as
//! `note`.

mod support;

use axum::http::StatusCode;
use serde_json::json;
use support::{IMAGE_ORIGIN, TestApp, TestAppBuilder};

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    aws: super::TestApp::aws();
    a_cancelled_job_an_old_adapter_completed_reads_completed,
);

async fn a_cancelled_job_an_old_adapter_completed_reads_completed(builder: TestAppBuilder) {
    let app = builder.start().await;
    let job = app
        .submit(
            "/api/v1/camera-angle/jobs",
            json!({"image_url": format!("{IMAGE_ORIGIN}/images/s/a.png")}),
        )
        .await;
    let adapter = app.adapter();
    // The old adapter took the job before the cancel came.
    adapter
        .update(&job, &[("status", "processing")], 1_700_000_001)
        .await;
    let cancelled = app
        .post(&format!("/api/v1/jobs/{job}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
    let view = app.job(&job).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["cancelled"], true);
    let note = view["error"].as_str().unwrap().to_owned();

    // It finishes anyway and says so, unconditionally.
    let result = format!("{IMAGE_ORIGIN}/comfyui-results/{job}.png");
    adapter
        .update(
            &job,
            &[("status", "completed"), ("result_s3_uri", &result)],
            1_700_000_100,
        )
        .await;
    let view = app.job(&job).await;
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["result_url"], result.as_str());
    assert!(
        view["error"].is_null(),
        "a completed job shows no error: {view}"
    );
    assert!(view.get("cancelled").is_none(), "{view}");
    assert_eq!(view["note"], note.as_str(), "the cancel note is kept");
}
