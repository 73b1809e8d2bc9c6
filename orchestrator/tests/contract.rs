//! The orchestrator contract (`CONTRACT.md` §2) with the same test bodies on
//! both backend sets: `embedded::*` (SQLite task table and queues) and
//! `aws::*` (DynamoDB + SQS on moto). The worker adapter is played by
//! `support::Adapter`, which touches the queues and records directly, as the
//! old Python adapters do.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use orchestrator::sweeps;
use serde_json::json;
use support::{MAX_RECEIVES, TestApp, TestAppBuilder};

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    aws: super::TestApp::aws();

    frontend_submits_get_202_and_the_exact_messages,
    out_of_range_values_are_422_naming_the_field,
    unknown_jobs_and_odd_records_read_back,
    gpu_worker_contract_step_by_step,
    cpu_worker_contract_with_result_url,
    send_failure_marks_the_job_failed_and_answers_503,
    idempotency_key_returns_the_same_job,
    dead_letters_fail_the_job_after_max_receives,
    reaper_fails_jobs_stuck_in_processing,
    operations_endpoints,
    odd_paths_and_methods_get_json_errors,
);

const IMAGE: &str = "https://cdn.example.test/images/s/a.png";

async fn frontend_submits_get_202_and_the_exact_messages(builder: TestAppBuilder) {
    let app = builder.start().await;
    // Exactly what the frontend sends (CONTRACT.md §2).
    let cases = [
        (
            "/api/v1/qwen-image-edit/jobs",
            json!({"image_url": IMAGE, "prompt": "make it night", "steps": 4}),
            "gpu",
            json!({"api_path": "/api/v1/qwen-image-edit/jobs", "request_body": {
                "image_url": IMAGE, "prompt": "make it night", "image2_url": null, "image3_url": null,
                "seed": null, "steps": 4, "cfg": 1.0, "sampler_name": "sa_solver", "scheduler": "beta", "denoise": 1.0}}),
        ),
        (
            "/api/v1/camera-angle/jobs",
            json!({"image_url": IMAGE, "vertical": -2, "horizontal": 1, "zoom": 1, "steps": 8}),
            "gpu",
            json!({"api_path": "/api/v1/camera-angle/jobs", "request_body": {
                "image_url": IMAGE, "prompt": null, "vertical": -2, "horizontal": 1, "zoom": 1, "seed": null, "steps": 8}}),
        ),
        (
            "/api/v1/face-mask/tasks",
            json!({"image_url": IMAGE, "face_index": 0}),
            "cpu",
            json!({"task_type": "face_mask", "api_path": "/api/v1/face-mask/jobs", "request_body": {
                "image_url": IMAGE, "face_position_prompt": null, "face_index": 0}}),
        ),
        (
            "/api/v1/full-face-swap/tasks",
            json!({"source_image_url": IMAGE, "target_face_url": IMAGE, "model": "seedream", "face_index": 0, "size": "auto"}),
            "cpu",
            json!({"task_type": "full_face_swap", "api_path": "/api/v1/full-face-swap/jobs", "request_body": {
                "source_image_url": IMAGE, "target_face_url": IMAGE, "model": "seedream",
                "face_position_prompt": null, "expression_prompt": null, "face_index": 0, "size": "auto"}}),
        ),
        (
            "/api/v1/face-swap/tasks",
            json!({"masked_image_url": IMAGE, "target_face_url": IMAGE}),
            "cpu",
            json!({"task_type": "face_swap", "api_path": "/api/v1/face-swap/jobs", "request_body": {
                "masked_image_url": IMAGE, "target_face_url": IMAGE, "prompt": null, "size": null}}),
        ),
    ];
    for (route, body, queue, mut expected) in cases {
        let response = app.post(route, body).await;
        assert_eq!(
            response.status,
            StatusCode::ACCEPTED,
            "{route}: {}",
            response.text()
        );
        let accepted = response.json();
        let job_id = accepted["job_id"].as_str().unwrap().to_owned();
        assert_eq!(uuid::Uuid::parse_str(&job_id).unwrap().get_version_num(), 4);
        assert_eq!(
            accepted,
            json!({"job_id": job_id, "status": "pending", "result_url": null, "error": null})
        );

        let job = app.job(&job_id).await;
        assert_eq!(
            (
                job["status"].clone(),
                job["result_url"].clone(),
                job["error"].clone()
            ),
            (json!("pending"), json!(null), json!(null))
        );
        assert_eq!(job["queue"], queue);

        let message = app
            .adapter()
            .receive(queue, Duration::from_secs(30))
            .await
            .expect("a message");
        expected["task_id"] = json!(job_id);
        assert_eq!(message.body, expected, "{route}");
        // Integers stay integers, floats stay floats.
        if route.contains("qwen") {
            assert!(message.body["request_body"]["steps"].is_u64());
            assert!(message.body["request_body"]["cfg"].is_f64());
        }
        app.adapter().delete(queue, &message.receipt).await;
    }
}

async fn out_of_range_values_are_422_naming_the_field(builder: TestAppBuilder) {
    let app = builder.start().await;
    let camera = "/api/v1/camera-angle/jobs";
    let qwen = "/api/v1/qwen-image-edit/jobs";
    for (route, body, field) in [
        (
            camera,
            json!({"image_url": IMAGE, "vertical": 3}),
            "vertical",
        ),
        (
            camera,
            json!({"image_url": IMAGE, "horizontal": -3}),
            "horizontal",
        ),
        (camera, json!({"image_url": IMAGE, "zoom": 2}), "zoom"),
        (camera, json!({"image_url": IMAGE, "steps": 0}), "steps"),
        (camera, json!({"image_url": IMAGE, "steps": "8"}), "steps"),
        (
            camera,
            json!({"image_url": IMAGE, "vertical": 1.5}),
            "vertical",
        ),
        (camera, json!({"vertical": 1}), "image_url"),
        (camera, json!({"image_url": "not a url"}), "image_url"),
        (qwen, json!({"image_url": IMAGE}), "prompt"),
        (
            qwen,
            json!({"image_url": IMAGE, "prompt": "x", "denoise": 1.5}),
            "denoise",
        ),
        (
            qwen,
            json!({"image_url": IMAGE, "prompt": "x", "image2_url": "ftp://x"}),
            "image2_url",
        ),
        (
            "/api/v1/face-mask/tasks",
            json!({"image_url": IMAGE, "face_index": -1}),
            "face_index",
        ),
        (
            "/api/v1/full-face-swap/tasks",
            json!({"source_image_url": IMAGE}),
            "target_face_url",
        ),
    ] {
        let detail = app
            .post(route, body.clone())
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            detail.contains(field),
            "{route} {body}: {detail:?} should name {field}"
        );
    }
    app.post(camera, json!([1, 2]))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    let not_json = app
        .send(
            axum::http::Request::post(camera)
                .header("content-type", "application/json")
                .header("origin", support::FRONTEND)
                .body(axum::body::Body::from("{oops"))
                .unwrap(),
        )
        .await;
    not_json.assert_error(StatusCode::BAD_REQUEST);
    // Nothing was recorded or queued for any of them.
    assert!(app.all_tasks().await.is_empty());
    assert!(
        app.adapter()
            .receive("gpu", Duration::from_secs(1))
            .await
            .is_none()
    );
}

async fn unknown_jobs_and_odd_records_read_back(builder: TestAppBuilder) {
    let app = builder.start().await;
    let missing = app
        .get(&format!("/api/v1/jobs/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(missing.assert_error(StatusCode::NOT_FOUND), "Job not found");
    app.get("/api/v1/jobs/not-a-uuid")
        .await
        .assert_error(StatusCode::NOT_FOUND);
    app.get(&format!("/api/v1/jobs/{}", "x".repeat(500)))
        .await
        .assert_error(StatusCode::NOT_FOUND);

    // An item an adapter created with UpdateItem alone: no status, no
    // job_type, no created_at.
    let orphan = uuid::Uuid::new_v4().to_string();
    app.adapter()
        .update(
            &orphan,
            &[(
                "result_s3_uri",
                "https://cdn.example.test/comfyui-results/x.png",
            )],
            1_700_000_000,
        )
        .await;
    let job = app.job(&orphan).await;
    assert_eq!(job["status"], "unknown");
    assert_eq!(
        job["result_url"],
        "https://cdn.example.test/comfyui-results/x.png"
    );
    assert_eq!(job["updated_at"], 1_700_000_000);
    assert_eq!(job["created_at"], json!(null));
}

async fn gpu_worker_contract_step_by_step(builder: TestAppBuilder) {
    let app = builder.start().await;
    let job_id = app
        .submit(
            "/api/v1/camera-angle/jobs",
            json!({"image_url": IMAGE, "vertical": 1, "horizontal": 0, "zoom": 0, "steps": 8}),
        )
        .await;
    let adapter = app.adapter();
    let message = adapter
        .receive("gpu", Duration::from_secs(60))
        .await
        .expect("the job's message");
    assert_eq!(message.body["task_id"], job_id.as_str());
    assert_eq!(message.body["api_path"], "/api/v1/camera-angle/jobs");
    assert!(
        message.body.get("task_type").is_none(),
        "GPU messages carry no task_type"
    );

    let now = orchestrator::unix_now();
    adapter
        .update(
            &job_id,
            &[("status", "processing"), ("comfy_job_id", "comfy-123")],
            now,
        )
        .await;
    let job = app.job(&job_id).await;
    assert_eq!(job["status"], "processing");
    assert_eq!(job["result_url"], json!(null));

    let result = "https://cdn.example.test/comfyui-results/out_00001_.png";
    adapter
        .update(
            &job_id,
            &[("status", "completed"), ("result_s3_uri", result)],
            now + 5,
        )
        .await;
    adapter.delete("gpu", &message.receipt).await;
    let job = app.job(&job_id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["result_url"], result);
    assert_eq!(job["error"], json!(null));
    assert_eq!(job["kind"], "camera-angle");
    assert_eq!(job["updated_at"], now + 5);
}

async fn cpu_worker_contract_with_result_url(builder: TestAppBuilder) {
    let app = builder.start().await;
    let job_id = app
        .submit(
            "/api/v1/face-mask/tasks",
            json!({"image_url": IMAGE, "face_index": 0}),
        )
        .await;
    let adapter = app.adapter();
    let message = adapter
        .receive("cpu", Duration::from_secs(60))
        .await
        .expect("the job's message");
    assert_eq!(message.body["task_type"], "face_mask");
    assert_eq!(message.body["api_path"], "/api/v1/face-mask/jobs");
    let now = orchestrator::unix_now();
    adapter
        .update(
            &job_id,
            &[("status", "processing"), ("api_job_id", "api-9")],
            now,
        )
        .await;
    assert_eq!(app.job(&job_id).await["status"], "processing");
    let result = "https://cdn.example.test/paid-api-results/mask.png";
    adapter
        .update(
            &job_id,
            &[("status", "completed"), ("result_url", result)],
            now + 1,
        )
        .await;
    adapter.delete("cpu", &message.receipt).await;
    let job = app.job(&job_id).await;
    assert_eq!(
        (job["status"].clone(), job["result_url"].clone()),
        (json!("completed"), json!(result))
    );

    // A failing job reports its error_message as `error`.
    let failing = app
        .submit("/api/v1/face-mask/tasks", json!({"image_url": IMAGE}))
        .await;
    adapter
        .update(
            &failing,
            &[("status", "failed"), ("error_message", "no face found")],
            now,
        )
        .await;
    let job = app.job(&failing).await;
    assert_eq!(
        (job["status"].clone(), job["error"].clone()),
        (json!("failed"), json!("no face found"))
    );
}

async fn send_failure_marks_the_job_failed_and_answers_503(builder: TestAppBuilder) {
    // Break the GPU queue for real: a queue that does not exist on SQS, a
    // dropped table for the embedded queue.
    let builder = match builder.backends() {
        support::Backends::Aws => builder.env(
            "SQS_QUEUE_URL",
            &format!("{}/123456789012/no-such-queue", support::moto_url()),
        ),
        support::Backends::Embedded => builder,
    };
    let app = builder.start().await;
    if app.backends == support::Backends::Embedded {
        app.sqlite("DROP TABLE queue_messages").await;
    }
    let detail = app
        .post("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("queue"), "{detail}");
    let tasks = app.all_tasks().await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let (task_id, status, error) = &tasks[0];
    assert_eq!(
        status.as_deref(),
        Some("failed"),
        "no pending job without a message"
    );
    assert!(
        error
            .as_deref()
            .unwrap_or_default()
            .contains("could not queue"),
        "{error:?}"
    );
    assert_eq!(app.job(task_id).await["status"], "failed");
    let error = error.as_deref().unwrap_or_default();
    assert!(
        !error.contains("queue_messages") && !error.contains("NonExistentQueue"),
        "no internal text: {error:?}"
    );

    // A refused submit frees its Idempotency-Key: the retry is a fresh
    // attempt (503 again here), not a replay of a job that never ran.
    let body = json!({"image_url": IMAGE, "steps": 8});
    for _ in 0..2 {
        app.post_with(
            "/api/v1/camera-angle/jobs",
            body.clone(),
            &[("Idempotency-Key", "retry-me")],
        )
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE);
    }
}

async fn idempotency_key_returns_the_same_job(builder: TestAppBuilder) {
    let app = builder.start().await;
    let route = "/api/v1/qwen-image-edit/jobs";
    let body = json!({"image_url": IMAGE, "prompt": "rain", "steps": 4});
    let first = app
        .post_with(route, body.clone(), &[("Idempotency-Key", "click-42")])
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let job_id = first.json()["job_id"].as_str().unwrap().to_owned();
    // The same body with defaults written out is the same request.
    let same = json!({"image_url": IMAGE, "prompt": "rain", "steps": 4, "cfg": 1.0});
    let again = app
        .post_with(route, same, &[("Idempotency-Key", "click-42")])
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.json()["job_id"], job_id.as_str());

    let other_body = json!({"image_url": IMAGE, "prompt": "snow"});
    app.post_with(
        route,
        other_body.clone(),
        &[("Idempotency-Key", "click-42")],
    )
    .await
    .assert_error(StatusCode::CONFLICT);
    let other = app
        .post_with(route, other_body, &[("Idempotency-Key", "click-43")])
        .await;
    assert_ne!(other.json()["job_id"], job_id.as_str());

    // One message for the repeated submit, one for the other key.
    let adapter = app.adapter();
    let mut ids = vec![];
    while let Some(message) = adapter.receive("gpu", Duration::from_secs(60)).await {
        ids.push(message.body["task_id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    let mut expected = vec![job_id, other.json()["job_id"].as_str().unwrap().to_owned()];
    expected.sort();
    assert_eq!(ids, expected);
}

async fn dead_letters_fail_the_job_after_max_receives(builder: TestAppBuilder) {
    let app = builder.start().await;
    let job_id = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
    let adapter = app.adapter();
    // An adapter that keeps failing: it takes the message and never deletes
    // it; with a zero visibility it is back at once.
    for attempt in 1..=MAX_RECEIVES {
        let message = adapter.receive("gpu", Duration::ZERO).await;
        assert!(message.is_some(), "delivery {attempt}");
        adapter
            .update(
                &job_id,
                &[("status", "processing")],
                orchestrator::unix_now(),
            )
            .await;
    }
    // The next receive finds nothing: the message moved to the dead letters.
    assert!(adapter.receive("gpu", Duration::ZERO).await.is_none());
    assert_eq!(app.job(&job_id).await["status"], "processing");

    assert_eq!(sweeps::drain_dead_letters(&app.app).await.unwrap(), 1);
    let job = app.job(&job_id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(
        job["error"],
        format!("gave up after {MAX_RECEIVES} attempts")
    );
    assert_eq!(job["attempts"], MAX_RECEIVES);
    // Drained: a second sweep finds nothing.
    assert_eq!(sweeps::drain_dead_letters(&app.app).await.unwrap(), 0);
}

async fn reaper_fails_jobs_stuck_in_processing(builder: TestAppBuilder) {
    let app = builder.env("JOB_TIMEOUT_MINUTES", "60").start().await;
    let adapter = app.adapter();
    let now = orchestrator::unix_now();
    let stuck = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
    adapter
        .update(&stuck, &[("status", "processing")], now - 2 * 3600)
        .await;
    let busy = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
    adapter
        .update(&busy, &[("status", "processing")], now - 60)
        .await;
    let done = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
    adapter
        .update(&done, &[("status", "completed")], now - 3 * 3600)
        .await;

    // Never picked up (its message lost or dead-lettered before any worker
    // wrote `processing`), and one that is simply young.
    let forgotten = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;
    adapter.update(&forgotten, &[], now - 2 * 3600).await;
    let waiting = app
        .submit("/api/v1/camera-angle/jobs", json!({"image_url": IMAGE}))
        .await;

    assert_eq!(sweeps::reap_stale_jobs(&app.app).await.unwrap(), 2);
    let job = app.job(&forgotten).await;
    assert_eq!(job["status"], "failed");
    assert!(
        job["error"].as_str().unwrap().contains("not picked up"),
        "{job}"
    );
    assert_eq!(app.job(&waiting).await["status"], "pending");
    let job = app.job(&stuck).await;
    assert_eq!(job["status"], "failed");
    assert!(
        job["error"].as_str().unwrap().contains("timed out"),
        "{job}"
    );
    assert_eq!(app.job(&busy).await["status"], "processing");
    assert_eq!(app.job(&done).await["status"], "completed");
    assert_eq!(sweeps::reap_stale_jobs(&app.app).await.unwrap(), 0);
}

async fn operations_endpoints(builder: TestAppBuilder) {
    let app = builder.start().await;
    for path in ["/health", "/api/v1/health"] {
        let health = app.get(path).await;
        assert_eq!(health.status, StatusCode::OK);
        assert_eq!(health.json()["status"], "healthy");
    }
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    assert_eq!(
        ready.json()["checks"],
        json!({"task_store": "ok", "gpu_queue": "ok", "cpu_queue": "ok"})
    );

    app.submit("/api/v1/face-mask/tasks", json!({"image_url": IMAGE}))
        .await;
    sweeps::record_queue_depths(&app.app).await;
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text();
    for needle in [
        "orchestrator_jobs_submitted_total{kind=\"face-mask\"}",
        "orchestrator_queue_messages{queue=\"cpu\",state=\"visible\"}",
        "orchestrator_gpu_instance_state{state=\"running\"} 1",
        "orchestrator_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "{needle} missing from /metrics");
    }

    let gpu = app.get("/api/v1/gpu").await.json();
    assert_eq!(
        gpu["state"], "running",
        "no GPU host configured: always available"
    );
    assert_eq!(app.get("/debug/gpu-instance").await.status, StatusCode::OK);
    let detail = app
        .post("/api/v1/gpu/start", json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    assert!(detail.contains("ADMIN_TOKEN"), "{detail}");

    let doc = app.get("/openapi.json").await.json();
    for (path, method) in [
        ("/api/v1/camera-angle/jobs", "post"),
        ("/api/v1/qwen-image-edit/jobs", "post"),
        ("/api/v1/face-mask/tasks", "post"),
        ("/api/v1/face-swap/tasks", "post"),
        ("/api/v1/full-face-swap/tasks", "post"),
        ("/api/v1/jobs/{job_id}", "get"),
        ("/api/v1/gpu", "get"),
        ("/api/v1/gpu/start", "post"),
        ("/api/v1/gpu/stop", "post"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from OpenAPI"
        );
    }
    // The old unchecked delete-any-object endpoint is gone.
    let gone = app
        .send(
            axum::http::Request::delete("/api/v1/images/images/x.png")
                .header("origin", support::FRONTEND)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    gone.assert_error(StatusCode::NOT_FOUND);
}

/// Found by the OpenAPI fuzzer's kind of input: a job id that is not UTF-8
/// is an unknown job (it was axum's plain-text 400), and a method a route
/// does not have is 405 with `Allow` and a `{"detail"}` body like every
/// other error (it was an empty body).
async fn odd_paths_and_methods_get_json_errors(builder: TestAppBuilder) {
    use axum::{
        body::Body,
        http::{Method, Request, header},
    };
    let app = builder.start().await;
    for (method, uri) in [
        (Method::GET, "/api/v1/jobs/%FF"),
        (Method::GET, "/api/v1/jobs/%FF/events"),
        (Method::POST, "/api/v1/jobs/%C3%28/cancel"),
    ] {
        let response = app
            .send(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .header(header::ORIGIN, support::FRONTEND)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(
            response.assert_error(StatusCode::NOT_FOUND),
            "Job not found",
            "{uri}"
        );
    }
    for (method, uri, allow) in [
        (Method::PUT, "/api/v1/jobs/abc", "GET,HEAD"),
        (Method::GET, "/api/v1/face-mask/tasks", "POST"),
        (Method::DELETE, "/health", "GET,HEAD"),
    ] {
        let response = app
            .send(
                Request::builder()
                    .method(method.clone())
                    .uri(uri)
                    .header(header::ORIGIN, support::FRONTEND)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(
            response.assert_error(StatusCode::METHOD_NOT_ALLOWED),
            "Method Not Allowed",
            "{method} {uri}"
        );
        assert_eq!(response.headers[header::ALLOW], allow, "{method} {uri}");
    }
}
