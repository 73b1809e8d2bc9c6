//! A stand-in inference API on 127.0.0.1 for the orchestrator's worker:
//! any `POST` answers `{"job_id"}`, and `GET /api/v1/jobs/{id}` answers
//! `processing` a set number of times, then `completed` (or never). It
//! keeps when each job was posted and finished, on the bench's clock.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    time::Instant,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use serde_json::{Value, json};

use super::BoxError;

/// `processing` answers before `completed` that mean "never".
pub const NEVER: u32 = u32::MAX;

const RESULT_PREFIX: &str = "https://cdn.example.test/bench-results/";

struct BackendJob {
    posted: Instant,
    polls: u32,
    done: Option<Instant>,
}

#[derive(Default)]
struct Jobs {
    processing_polls: AtomicU32,
    jobs: Mutex<HashMap<String, BackendJob>>,
    submitted: AtomicUsize,
    done: AtomicUsize,
    polls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Clone)]
pub struct StandIn {
    pub url: String,
    state: Arc<Jobs>,
}

/// Its counters since the last [`StandIn::reset`].
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub submitted: usize,
    pub done: usize,
    pub polls: usize,
    pub in_flight: usize,
    pub max_in_flight: usize,
}

impl StandIn {
    /// Serves until the bench's runtime ends.
    pub async fn start() -> Result<Self, BoxError> {
        let state = Arc::new(Jobs::default());
        let app = Router::new()
            .route("/api/v1/jobs/{id}", get(status))
            .route("/{*path}", post(submit))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("stand-in inference API stopped: {e}");
            }
        });
        Ok(Self { url, state })
    }

    /// Forgets every job and counter and sets how many `processing` answers
    /// come first. Only between runs, while the worker holds no job.
    pub fn reset(&self, processing_polls: u32) {
        let s = &self.state;
        s.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        for counter in [
            &s.submitted,
            &s.done,
            &s.polls,
            &s.in_flight,
            &s.max_in_flight,
        ] {
            counter.store(0, Ordering::SeqCst);
        }
        s.processing_polls.store(processing_polls, Ordering::SeqCst);
    }

    pub fn counts(&self) -> Counts {
        let s = &self.state;
        Counts {
            submitted: s.submitted.load(Ordering::SeqCst),
            done: s.done.load(Ordering::SeqCst),
            polls: s.polls.load(Ordering::SeqCst),
            in_flight: s.in_flight.load(Ordering::SeqCst),
            max_in_flight: s.max_in_flight.load(Ordering::SeqCst),
        }
    }

    /// `(posted, finished)` of the backend job behind a job's `result_url`.
    pub fn times_of(&self, result_url: &str) -> Option<(Instant, Option<Instant>)> {
        let id = result_url
            .strip_prefix(RESULT_PREFIX)?
            .strip_suffix(".png")?;
        let jobs = self
            .state
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        jobs.get(id).map(|j| (j.posted, j.done))
    }
}

async fn submit(State(s): State<Arc<Jobs>>, _body: bytes::Bytes) -> Json<Value> {
    let id = uuid::Uuid::new_v4().to_string();
    let job = BackendJob {
        posted: Instant::now(),
        polls: 0,
        done: None,
    };
    s.jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.clone(), job);
    s.submitted.fetch_add(1, Ordering::SeqCst);
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    Json(json!({"job_id": id, "status": "pending"}))
}

async fn status(State(s): State<Arc<Jobs>>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    s.polls.fetch_add(1, Ordering::SeqCst);
    let limit = s.processing_polls.load(Ordering::SeqCst);
    let mut jobs = s.jobs.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(job) = jobs.get_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": "no such job"})),
        );
    };
    job.polls = job.polls.saturating_add(1);
    if job.done.is_none() && limit != NEVER && job.polls > limit {
        job.done = Some(Instant::now());
        s.in_flight.fetch_sub(1, Ordering::SeqCst);
        s.done.fetch_add(1, Ordering::SeqCst);
    }
    let body = if job.done.is_some() {
        json!({"job_id": id, "status": "completed", "result_url": format!("{RESULT_PREFIX}{id}.png")})
    } else {
        json!({"job_id": id, "status": "processing"})
    };
    (StatusCode::OK, Json(body))
}
