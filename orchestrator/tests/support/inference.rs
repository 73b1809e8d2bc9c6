//! A stand-in for the inference API on a GPU/CPU host, served on a local
//! port: it takes jobs at any `POST` path (answering `{"job_id"}`) and
//! reports them at `GET /api/v1/jobs/{id}` as its mode says.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `processing` for this many polls, then `completed`.
    CompletesAfter(u32),
    /// `processing` forever.
    NeverFinishes,
    /// Every submit answers 500.
    Broken,
    /// Jobs end `failed`.
    Fails,
}

#[derive(Default)]
struct Jobs {
    polls: HashMap<String, u32>,
    submitted: Vec<Value>,
}

#[derive(Clone)]
pub struct Inference {
    pub url: String,
    mode: Arc<Mutex<Mode>>,
    jobs: Arc<Mutex<Jobs>>,
}

impl Inference {
    pub async fn start(mode: Mode) -> Self {
        let inference = Self {
            url: String::new(),
            mode: Arc::new(Mutex::new(mode)),
            jobs: Arc::default(),
        };
        let app = Router::new()
            .route("/api/v1/jobs/{id}", get(status))
            .route("/{*path}", post(submit))
            .with_state(inference.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, ..inference }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Request bodies the backend accepted, in order.
    pub fn submitted(&self) -> Vec<Value> {
        self.jobs.lock().unwrap().submitted.clone()
    }

    pub fn result_url(id: &str) -> String {
        format!("https://cdn.example.test/comfyui-results/{id}.png")
    }
}

async fn submit(
    State(inference): State<Inference>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if *inference.mode.lock().unwrap() == Mode::Broken {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"detail": "CUDA out of memory"})),
        );
    }
    let id = uuid::Uuid::new_v4().to_string();
    let mut jobs = inference.jobs.lock().unwrap();
    jobs.polls.insert(id.clone(), 0);
    jobs.submitted.push(body);
    (
        StatusCode::OK,
        Json(json!({"job_id": id, "status": "pending"})),
    )
}

async fn status(
    State(inference): State<Inference>,
    Path(id): Path<String>,
) -> (StatusCode, Json<Value>) {
    let mode = *inference.mode.lock().unwrap();
    let mut jobs = inference.jobs.lock().unwrap();
    let Some(polls) = jobs.polls.get_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": "no such job"})),
        );
    };
    *polls += 1;
    let body = match mode {
        Mode::CompletesAfter(n) if *polls > n => {
            json!({"job_id": id, "status": "completed", "result_url": Inference::result_url(&id)})
        }
        Mode::Fails => json!({"job_id": id, "status": "failed", "error": "no face found"}),
        _ => json!({"job_id": id, "status": "processing"}),
    };
    (StatusCode::OK, Json(body))
}
