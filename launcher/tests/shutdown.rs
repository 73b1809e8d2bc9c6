//! SIGTERM under load, on the real binary (both services): `/ready` turns
//! 503 at once, requests keep being served for `SHUTDOWN_DELAY_SECONDS` with
//! `Connection: close`, open event streams get `event: shutdown` and end,
//! and not one request that started before the signal fails. The process
//! exits 0 within the delay plus `SHUTDOWN_GRACE_SECONDS`.

use std::{
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8, 0xCF, 0xC0, 0xF0,
    0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D, 0x1D, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

#[derive(Default)]
struct Tally {
    /// (what, error) of requests that started before the signal and failed.
    failed_before_signal: Vec<(String, String)>,
    ok: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_request_accepted_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (canvas_port, jobs_port) = (testkit::free_port(), testkit::free_port());
    let canvas = format!("http://127.0.0.1:{canvas_port}");
    let jobs = format!("http://127.0.0.1:{jobs_port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_canvas-backend"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIND_ADDR", "127.0.0.1")
        .env("DATA_DIR", dir.path())
        .env("CANVAS_PORT", canvas_port.to_string())
        .env("ORCHESTRATOR_PORT", jobs_port.to_string())
        .env("PUBLIC_BASE_URL", &canvas)
        .env("RUST_LOG", "warn")
        .env("SHUTDOWN_DELAY_SECONDS", "1")
        .env("SHUTDOWN_GRACE_SECONDS", "10")
        .env("RATE_LIMIT_JOBS_PER_MINUTE", "0")
        .env("RATE_LIMIT_UPLOADS_PER_MINUTE", "0")
        .env("DAILY_JOB_QUOTA", "0")
        .env("MAX_GPU_BACKLOG", "0")
        .env("MAX_CPU_BACKLOG", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = http.get(format!("{jobs}/ready")).send().await.is_ok()
            && http.get(format!("{canvas}/ready")).send().await.is_ok();
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "the backend did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let session: serde_json::Value = http
        .post(format!("{canvas}/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = session["session_id"].as_str().unwrap().to_owned();
    let image = format!("{canvas}/images/{session}/a.png");
    let body = serde_json::json!({"image_url": image});
    let first: serde_json::Value = http
        .post(format!("{jobs}/api/v1/camera-angle/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = first["job_id"].as_str().unwrap().to_owned();

    // Event streams on a job that never finishes (no worker here).
    let mut streams = vec![];
    for _ in 0..4 {
        let response = http
            .get(format!("{jobs}/api/v1/jobs/{job}/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        streams.push(tokio::spawn(async move {
            let mut text = String::new();
            let mut bytes = response.bytes_stream();
            while let Some(Ok(chunk)) = bytes.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            text
        }));
    }

    let signalled: Arc<Mutex<Option<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let mut load = vec![];
    for worker in 0..12 {
        let (http, canvas, jobs, session, body, job) = (
            http.clone(),
            canvas.clone(),
            jobs.clone(),
            session.clone(),
            body.clone(),
            job.clone(),
        );
        let (signalled, stop, tally) = (signalled.clone(), stop.clone(), tally.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let (what, result) = match (worker + n) % 3 {
                    0 => (
                        "submit",
                        http.post(format!("{jobs}/api/v1/face-mask/tasks"))
                            .json(&body)
                            .send()
                            .await,
                    ),
                    1 => (
                        "poll",
                        http.get(format!("{jobs}/api/v1/jobs/{job}")).send().await,
                    ),
                    _ => {
                        let form = reqwest::multipart::Form::new()
                            .text("session_id", session.clone())
                            .part(
                                "file",
                                reqwest::multipart::Part::bytes(PNG.to_vec())
                                    .file_name("a.png")
                                    .mime_str("image/png")
                                    .unwrap(),
                            );
                        (
                            "upload",
                            http.post(format!("{canvas}/upload"))
                                .multipart(form)
                                .send()
                                .await,
                        )
                    }
                };
                let outcome = match result {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(format!("{e:?}")),
                };
                let before_signal = signalled.lock().unwrap().is_none_or(|at| started < at);
                let mut tally = tally.lock().unwrap();
                match outcome {
                    Ok(()) => tally.ok += 1,
                    Err(e) if before_signal => {
                        tally.failed_before_signal.push((what.to_owned(), e));
                    }
                    // After the signal, the listener closes: refusals are expected.
                    Err(_) => {}
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    *signalled.lock().unwrap() = Some(Instant::now());
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // At once: not ready any more, on both services, while still serving.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for base in [&canvas, &jobs] {
        let ready = reqwest::Client::new()
            .get(format!("{base}/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 503, "{base}");
        assert_eq!(ready.headers()["connection"], "close");
    }

    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "not exited within the delay plus the grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(exit.success(), "{exit:?}");
    for stream in streams {
        let text = tokio::time::timeout(Duration::from_secs(5), stream)
            .await
            .expect("the stream ended")
            .unwrap();
        assert!(text.contains("event: shutdown"), "{text}");
    }
    let tally = tally.lock().unwrap();
    assert!(tally.ok > 50, "too little load: {}", tally.ok);
    assert!(
        tally.failed_before_signal.is_empty(),
        "{} requests started before SIGTERM failed: {:?}",
        tally.failed_before_signal.len(),
        &tally.failed_before_signal[..tally.failed_before_signal.len().min(5)]
    );
}
