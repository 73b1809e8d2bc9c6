//! The whole path on real parts, in one process: canvas-service and the
//! orchestrator (with its in-process worker) on local ports, and a stand-in
//! inference API that reads the input image, writes its output into the
//! object store and reports it by its CDN-style URL. The test does what the
//! frontend does: upload, submit a camera-angle job with the image's URL,
//! follow it over SSE to `completed`, add the result to the session with
//! the key taken from the URL's path, and list the session.
//! Embedded: SQLite + files. Live: Postgres + S3, SQS, DynamoDB on moto.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{get, post},
};
use canvas_service::storage::ObjectStore;
use common::config::Env;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// A 2×2 PNG (header only: the services read nothing past IHDR).
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(b"IHDR");
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(b"IEND");
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// The stand-in inference API: jobs report `processing` twice, then
/// `completed` with the URL of an output it wrote into the object store.
#[derive(Clone)]
struct Inference {
    store: Arc<dyn ObjectStore>,
    http: reqwest::Client,
    /// Serve the input image over HTTP too (embedded: the canvas serves it).
    fetch_inputs: bool,
    jobs: Arc<Mutex<HashMap<String, (u32, String)>>>,
    inputs_seen: Arc<Mutex<Vec<String>>>,
}

async fn take_job(State(inference): State<Inference>, Json(body): Json<Value>) -> Json<Value> {
    let image_url = body["image_url"].as_str().unwrap_or_default().to_owned();
    // The input must be reachable by the key the URL's path names.
    let key = image_url
        .splitn(4, '/')
        .nth(3)
        .unwrap_or_default()
        .to_owned();
    assert!(
        inference.store.exists(&key).await.unwrap(),
        "input {key} is in the store"
    );
    if inference.fetch_inputs {
        let fetched = inference.http.get(&image_url).send().await.unwrap();
        assert_eq!(fetched.status(), 200, "{image_url}");
    }
    inference.inputs_seen.lock().unwrap().push(image_url);
    let id = uuid::Uuid::new_v4().to_string();
    let output = format!("comfyui-results/{id}_00001_.png");
    inference
        .store
        .put_bytes(&output, bytes::Bytes::from(png(8, 6)), "image/png")
        .await
        .unwrap();
    let url = inference.store.url(&output).await.unwrap();
    inference.jobs.lock().unwrap().insert(id.clone(), (0, url));
    Json(json!({"job_id": id}))
}

async fn job_status(State(inference): State<Inference>, Path(id): Path<String>) -> Json<Value> {
    let mut jobs = inference.jobs.lock().unwrap();
    let (polls, url) = jobs.get_mut(&id).expect("a known job");
    *polls += 1;
    Json(if *polls > 2 {
        json!({"job_id": id, "status": "completed", "result_url": url})
    } else {
        json!({"job_id": id, "status": "processing"})
    })
}

async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

async fn whole_path(
    canvas_env: Vec<(String, String)>,
    orchestrator_env: Vec<(String, String)>,
    live: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();

    let (canvas_listener, canvas_url) = listen().await;
    let canvas_config = canvas_service::CanvasConfig::from_env(
        &Env::from_pairs(canvas_env)
            .with("DATA_DIR", data_dir.clone())
            .with("PUBLIC_BASE_URL", canvas_url.clone()),
    )
    .unwrap();
    let canvas = Arc::new(
        canvas_service::App::from_config(&canvas_config)
            .await
            .unwrap(),
    );
    let canvas_router = canvas_service::router(canvas.clone(), &canvas_config.http);
    tokio::spawn(async move { axum::serve(canvas_listener, canvas_router).await.unwrap() });

    let (inference_listener, inference_url) = listen().await;
    let inference = Inference {
        store: canvas.store.clone(),
        http: reqwest::Client::new(),
        fetch_inputs: !live,
        jobs: Arc::default(),
        inputs_seen: Arc::default(),
    };
    let inference_router = Router::new()
        .route("/api/v1/jobs/{id}", get(job_status))
        .route("/api/v1/camera-angle/jobs", post(take_job))
        .with_state(inference.clone());
    tokio::spawn(async move {
        axum::serve(inference_listener, inference_router)
            .await
            .unwrap()
    });

    let (orchestrator_listener, orchestrator_url) = listen().await;
    let orchestrator_config = orchestrator::OrchestratorConfig::from_env(
        &Env::from_pairs(orchestrator_env)
            .with("DATA_DIR", data_dir)
            // As the launcher does: job image URLs point at this canvas.
            .with("PUBLIC_BASE_URL", canvas_url.clone())
            .with("GPU_BACKEND_URL", inference_url)
            .with("EVENTS_POLL_MILLIS", "100"),
    )
    .unwrap();
    let jobs = Arc::new(
        orchestrator::App::from_config(&orchestrator_config)
            .await
            .unwrap(),
    );
    let orchestrator_router = orchestrator::router(jobs.clone(), &orchestrator_config.http);
    tokio::spawn(async move {
        axum::serve(orchestrator_listener, orchestrator_router)
            .await
            .unwrap()
    });

    // The frontend's calls, over real HTTP.
    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("{canvas_url}/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = session["session_id"].as_str().unwrap().to_owned();
    let form = reqwest::multipart::Form::new()
        .text("session_id", session.clone())
        .part(
            "file",
            reqwest::multipart::Part::bytes(png(64, 48))
                .file_name("photo.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let uploaded: Value = http
        .post(format!("{canvas_url}/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let image_url = uploaded["url"].as_str().unwrap().to_owned();

    let accepted = http
        .post(format!("{orchestrator_url}/api/v1/camera-angle/jobs"))
        .json(
            &json!({"image_url": image_url, "vertical": 1, "horizontal": 0, "zoom": 0, "steps": 8}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let job_id = accepted.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Follow it over SSE to its end.
    let events = http
        .get(format!("{orchestrator_url}/api/v1/jobs/{job_id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    // The in-process worker starts once the stream is open: on the embedded
    // queue it would otherwise take the job within milliseconds, before the
    // client could ask for its events.
    let _workers = jobs.spawn_background();
    let mut stream = events.bytes_stream();
    let mut text = String::new();
    let mut statuses = vec![];
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, stream.next()).await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                last = serde_json::from_str(data.trim()).unwrap();
                statuses.push(last["status"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(
        statuses.first().map(String::as_str),
        Some("pending"),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("completed"),
        "{statuses:?}"
    );
    assert_eq!(
        inference.inputs_seen.lock().unwrap().as_slice(),
        std::slice::from_ref(&image_url)
    );

    // Keep the result on the canvas, as the frontend does: the key is the
    // URL's path without its leading slash.
    let result_url = last["result_url"].as_str().unwrap().to_owned();
    let key = result_url.splitn(4, '/').nth(3).unwrap().to_owned();
    assert!(key.starts_with("comfyui-results/"), "{result_url}");
    let added = http
        .post(format!("{canvas_url}/add-image"))
        .json(&json!({"session_id": session, "s3_key": key, "x": 300.5, "y": -20}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200, "{}", added.text().await.unwrap());
    let listed: Value = http
        .get(format!("{canvas_url}/images?session_id={session}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["url"], image_url.as_str());
    assert_eq!(
        (items[1]["key"].as_str(), items[1]["url"].as_str()),
        (Some(key.as_str()), Some(result_url.as_str()))
    );
    if !live {
        // Served by the canvas service itself, as a CDN would.
        let result = http.get(&result_url).send().await.unwrap();
        assert_eq!(result.status(), 200);
        assert_eq!(result.bytes().await.unwrap().as_ref(), png(8, 6).as_slice());
    }
    // The polling endpoint agrees.
    let polled: Value = http
        .get(format!("{orchestrator_url}/api/v1/jobs/{job_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (polled["status"].as_str(), polled["result_url"].as_str()),
        (Some("completed"), Some(result_url.as_str()))
    );
    jobs.shutdown.cancel();
}

#[tokio::test]
async fn embedded_backends() {
    whole_path(vec![], vec![], false).await;
}

#[tokio::test]
async fn postgres_and_moto() {
    if !testkit::live_backends(testkit::Needs {
        postgres: true,
        moto: true,
    })
    .await
    {
        return;
    }
    let mut canvas = testkit::emulator_env();
    canvas.extend([
        ("DATABASE_URL".to_owned(), testkit::create_database().await),
        ("S3_BUCKET".to_owned(), testkit::create_bucket().await),
        (
            "CLOUDFRONT_DOMAIN".to_owned(),
            "https://cdn.example.test".to_owned(),
        ),
    ]);
    let mut orchestrator = testkit::orchestrator_aws_env(3).await;
    // The worker would otherwise take the job before the event stream is
    // open, and the stream would begin at `processing`.
    let gpu_queue = orchestrator
        .iter()
        .find(|(k, _)| k == "SQS_QUEUE_URL")
        .map(|(_, v)| v.clone())
        .unwrap();
    testkit::delay_queue(&gpu_queue, 1).await;
    // The test CDN has no DNS name: listed on purpose, so the worker
    // does not try to resolve it.
    orchestrator.push((
        "IMAGE_URL_ORIGINS".to_owned(),
        "https://cdn.example.test".to_owned(),
    ));
    whole_path(canvas, orchestrator, true).await;
}
