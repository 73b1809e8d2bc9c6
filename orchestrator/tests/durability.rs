//! Embedded durability: the orchestrator binary is killed with SIGKILL
//! while submits are in flight and restarted on the same `DATA_DIR`. Every
//! job it answered 202 is still there, with its queue message, and no
//! `pending` job is left without one (the record and the message are one
//! SQLite transaction).

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::{Connection, Row};

fn start(data_dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .current_dir(data_dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIND_ADDR", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .env("IMAGE_URL_ORIGINS", "https://cdn.example.test")
        .env("RATE_LIMIT_JOBS_PER_MINUTE", "0")
        .env("DAILY_JOB_QUOTA", "0")
        .env("MAX_GPU_BACKLOG", "0")
        .env("MAX_CPU_BACKLOG", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the orchestrator did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_answered_202_survive_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut child = start(dir.path(), port);
    wait_healthy(&http, &base).await;

    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut load = vec![];
    for i in 0..16 {
        let (http, base, accepted) = (http.clone(), base.clone(), accepted.clone());
        load.push(tokio::spawn(async move {
            let (uri, body) = if i % 2 == 0 {
                (
                    "/api/v1/camera-angle/jobs",
                    r#"{"image_url":"https://cdn.example.test/images/s/a.png"}"#,
                )
            } else {
                (
                    "/api/v1/face-mask/tasks",
                    r#"{"image_url":"https://cdn.example.test/images/s/a.png"}"#,
                )
            };
            loop {
                let response = http
                    .post(format!("{base}{uri}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let Ok(response) = response else { return };
                if response.status() == 202
                    && let Ok(json) = response.json::<serde_json::Value>().await
                    && let Some(id) = json["job_id"].as_str()
                {
                    accepted.lock().unwrap().push(id.to_owned());
                }
            }
        }));
    }
    // Let the load run, then kill the process under it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.lock().unwrap().len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for task in load {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 50, "too little load: {}", accepted.len());

    // Restarted on the same directory, it serves every accepted job.
    let mut child = start(dir.path(), port);
    wait_healthy(&http, &base).await;
    for id in accepted.iter().step_by(7) {
        let view: serde_json::Value = http
            .get(format!("{base}/api/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(view["status"], "pending", "{id}: {view}");
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let url = format!("sqlite://{}", dir.path().join("orchestrator.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let messages: HashSet<String> = sqlx::query("SELECT body FROM queue_messages")
        .fetch_all(&mut db)
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let body: String = row.get("body");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            json["task_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let pending: Vec<String> = sqlx::query("SELECT task_id FROM tasks WHERE status = 'pending'")
        .fetch_all(&mut db)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("task_id"))
        .collect();
    let without_message: Vec<&String> = accepted
        .iter()
        .filter(|id| !messages.contains(*id))
        .collect();
    assert!(
        without_message.is_empty(),
        "202 without a message: {without_message:?}"
    );
    let orphans: Vec<&String> = pending
        .iter()
        .filter(|id| !messages.contains(*id))
        .collect();
    assert!(orphans.is_empty(), "pending without a message: {orphans:?}");
}
