//! Whole-pipeline benchmark for the orchestrator (a benchmark, not a test).
//!
//! Starts its own stand-in inference API on 127.0.0.1 (any `POST` answers
//! `{"job_id"}`, `GET /api/v1/jobs/{id}` answers `completed` on the first
//! poll, or after a few polls, or never), then the orchestrator release
//! binary as a child with `GPU_BACKEND_URL` pointing at it, so the child's
//! in-process worker drives every job: embedded SQLite queue → worker →
//! backend → task store.
//!
//! 1. Jobs per second: `N` camera-angle jobs submitted at once (8 client
//!    connections), timed until every one is `completed`, with
//!    `WORKER_CONCURRENCY=1` and then `16` (a fresh child each), and a third
//!    run on the second child whose backend answers `processing` once first,
//!    so each job costs one worker poll interval. Per job it reports
//!    submit→completed latency, split into the wait in the queue
//!    (submit → the backend's `POST`) and the worker's service time
//!    (backend `POST` → the poll that answered `completed`). Times come from
//!    the stand-in, which shares the bench's clock; at the end every job is
//!    read back with `GET /api/v1/jobs/{id}` and must be `completed` there.
//! 2. Open event streams: on the second child, with a backend that never
//!    finishes, `M` jobs are submitted and `K` streams
//!    (`GET /api/v1/jobs/{id}/events`, spread over the jobs) opened in
//!    cumulative stages (default 1000, then 5000), each held for a while
//!    (default 10 s) while the child's RSS and CPU are sampled. Every stream
//!    must receive its first event and still be open at the end.
//!
//! ```text
//! cargo build --release -p orchestrator --bins --examples
//! target/release/examples/pipeline_bench target/release/orchestrator
//! ```
//!
//! The binary comes from the first argument or `ORCHESTRATOR_BIN`. Optional
//! knobs: `BENCH_JOBS_C1` (jobs at worker concurrency 1, default 300),
//! `BENCH_JOBS_C16` (jobs at 16, default 2000), `BENCH_JOBS_SLOW` (jobs of
//! the one-poll-interval run, default 320; 0 skips it), `BENCH_RUN_SECS`
//! (time cap per run, default 60), `BENCH_SSE_JOBS` (default 200),
//! `BENCH_SSE_STREAMS` (comma-separated cumulative stages, default
//! `1000,5000`; empty skips part 2), `BENCH_HOLD_SECS` (default 10),
//! `EVENTS_POLL_MILLIS` (passed to the child, default 1000).
//! Streams need file descriptors on both sides: raise `ulimit -n` first
//! (scripts/bench-pipeline.sh does). Only 127.0.0.1 is contacted; the child
//! gets a cleared environment, is killed and its temp dir removed on every
//! exit path (error, panic, Ctrl-C).

use std::{
    collections::HashMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path as UrlPath, State},
    routing::{get, post},
};
use futures_util::StreamExt;
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const SUBMIT_PATH: &str = "/api/v1/camera-angle/jobs";
const SUBMIT_BODY: &str = r#"{"image_url":"https://cdn.example.test/a.png"}"#;
/// Client connections submitting (and reading back) jobs.
const CLIENT_CONCURRENCY: usize = 8;
const WARMUP_JOBS: usize = 10;
/// After the backend has finished every job: how long the read-back may take.
const CONFIRM_GRACE: Duration = Duration::from_secs(15);
/// Streams being opened at once (each until its first event).
const OPEN_CONCURRENCY: usize = 64;
const FIRST_EVENT_TIMEOUT: Duration = Duration::from_secs(20);
const OPEN_STAGE_CAP: Duration = Duration::from_secs(90);
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The worker's backend polling (`WorkerSettings::new`): first interval,
/// growth factor and longest interval.
const WORKER_POLL_MIN_MS: f64 = 500.0;
const WORKER_POLL_GROWTH: f64 = 1.5;
const WORKER_POLL_MAX_MS: f64 = 5000.0;
/// The watcher reads its jobs in chunks of this many ids (SQLite `IN (…)`).
const WATCHER_CHUNK: usize = 500;
/// `USER_HZ`: the unit of utime/stime in `/proc/<pid>/stat` (100 on Linux).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;
/// Stand-in mode: never answer `completed`.
const NEVER: u32 = u32::MAX;

// ---------------------------------------------------------------------------
// The stand-in inference API
// ---------------------------------------------------------------------------

struct BackendJob {
    posted: Instant,
    polls: u32,
    done: Option<Instant>,
}

#[derive(Default)]
struct StandInState {
    /// `processing` answers before `completed`: 0 completes on the first
    /// poll; [`NEVER`] never completes.
    processing_polls: AtomicU32,
    jobs: Mutex<HashMap<String, BackendJob>>,
    submitted: AtomicUsize,
    done: AtomicUsize,
    polls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Clone)]
struct StandIn {
    url: String,
    state: Arc<StandInState>,
}

impl StandIn {
    async fn start() -> Result<Self, BoxError> {
        let state = Arc::new(StandInState::default());
        let app = Router::new()
            .route("/api/v1/jobs/{id}", get(backend_status))
            .route("/{*path}", post(backend_submit))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        // Lives as long as the bench's runtime.
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("stand-in inference API stopped: {e}");
            }
        });
        Ok(Self { url, state })
    }

    /// Forgets every job and counter and sets the mode. Only between runs,
    /// while the worker holds no backend job.
    fn reset(&self, processing_polls: u32) {
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

    fn done(&self) -> usize {
        self.state.done.load(Ordering::SeqCst)
    }

    /// `(posted, done)` of a backend job.
    fn times(&self, backend_id: &str) -> Option<(Instant, Option<Instant>)> {
        let jobs = self
            .state
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        jobs.get(backend_id).map(|j| (j.posted, j.done))
    }

    fn result_url(id: &str) -> String {
        format!("https://cdn.example.test/bench-results/{id}.png")
    }

    fn backend_id(result_url: &str) -> Option<&str> {
        result_url
            .strip_prefix("https://cdn.example.test/bench-results/")?
            .strip_suffix(".png")
    }
}

async fn backend_submit(State(s): State<Arc<StandInState>>, _body: bytes::Bytes) -> Json<Value> {
    let id = uuid::Uuid::new_v4().to_string();
    s.jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            id.clone(),
            BackendJob {
                posted: Instant::now(),
                polls: 0,
                done: None,
            },
        );
    s.submitted.fetch_add(1, Ordering::SeqCst);
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    Json(json!({"job_id": id, "status": "pending"}))
}

async fn backend_status(
    State(s): State<Arc<StandInState>>,
    UrlPath(id): UrlPath<String>,
) -> (StatusCode, Json<Value>) {
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
        json!({"job_id": id, "status": "completed", "result_url": StandIn::result_url(&id)})
    } else {
        json!({"job_id": id, "status": "processing"})
    };
    (StatusCode::OK, Json(body))
}

// ---------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------

/// The running orchestrator and its data directory. Dropping it kills the
/// child first, then (as the fields drop) removes the directory.
struct Server {
    child: Child,
    base: String,
    data_dir: tempfile::TempDir,
}

impl Server {
    /// Starts `bin` with a cleared environment plus `extra`.
    fn start(bin: &Path, extra: &[(&str, String)]) -> Result<Self, BoxError> {
        let data_dir = tempfile::Builder::new()
            .prefix("orchestrator-pipeline-bench-")
            .tempdir()?;
        let port = free_port()?;
        let mut command = Command::new(bin);
        command
            // No `.env` from the caller's directory, and no variable of the
            // caller's, may switch the backends.
            .current_dir(data_dir.path())
            .env_clear()
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("DATA_DIR", data_dir.path())
            .env("RUST_LOG", "warn")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // A benchmark is the one client a rate limit exists to stop.
            .env("IMAGE_URL_ORIGINS", "https://cdn.example.test")
            .env("RATE_LIMIT_JOBS_PER_MINUTE", "0")
            .env("DAILY_JOB_QUOTA", "0")
            .env("MAX_GPU_BACKLOG", "0")
            .env("MAX_CPU_BACKLOG", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        Ok(Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            data_dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `GET /health` until it answers 200, the child exits, or
    /// [`HEALTH_TIMEOUT`] passes.
    async fn wait_healthy(&mut self, client: &Client) -> Result<Duration, BoxError> {
        let started = Instant::now();
        while started.elapsed() < HEALTH_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("orchestrator exited during start-up: {status}").into());
            }
            let probe = client
                .get(format!("{}/health", self.base))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("no healthy answer within {HEALTH_TIMEOUT:?}").into())
    }

    fn still_running(&mut self) -> Result<(), BoxError> {
        match self.child.try_wait()? {
            Some(status) => Err(format!("orchestrator exited: {status}").into()),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (the service binds it right after).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
#[derive(Clone, Copy, Default)]
struct Mem {
    rss_kib: u64,
    hwm_kib: u64,
}

fn read_mem(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Resets a process's `VmHWM` to its current RSS (Linux >= 4.0).
fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// User + system CPU time of a process so far, in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SEC)
}

/// Busy CPU time of the whole machine so far (all cores), in seconds.
fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle, iowait.
    let busy = fields
        .get(..8)?
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4);
    Some(busy.map(|(_, v)| v).sum::<f64>() / CLOCK_TICKS_PER_SEC)
}

/// CPU use between two readings, as a percentage of one core.
fn cpu_pct(before: Option<f64>, after: Option<f64>, over: Duration) -> Option<f64> {
    Some((after? - before?) / over.as_secs_f64().max(1e-9) * 100.0)
}

/// CPU seconds so far of each thread of a process: `(tid, name, seconds)`,
/// by thread id (creation order).
fn thread_cpu(pid: u32) -> Vec<(u32, String, f64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut threads: Vec<(u32, String, f64)> = dir
        .filter_map(|entry| {
            let tid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_owned();
            let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((tid, name, (utime + stime) / CLOCK_TICKS_PER_SEC))
        })
        .collect();
    threads.sort_by_key(|t| t.0);
    threads
}

/// The busiest threads between two [`thread_cpu`] readings, as `name (% of
/// a core)`. SQLite connection threads are numbered in creation order: the
/// first is the write connection (opened before the read pool).
fn busiest_threads(
    before: &[(u32, String, f64)],
    after: &[(u32, String, f64)],
    over: Duration,
) -> Vec<(String, f64)> {
    let mut sqlite_seen = 0;
    let mut busy: Vec<(String, f64)> = after
        .iter()
        .map(|(tid, name, secs)| {
            let label = if name.starts_with("sqlx-sqlite") {
                sqlite_seen += 1;
                if sqlite_seen == 1 {
                    "sqlite#1 (writes)".to_owned()
                } else {
                    format!("sqlite#{sqlite_seen}")
                }
            } else {
                name.clone()
            };
            let start = before.iter().find(|b| b.0 == *tid).map_or(0.0, |b| b.2);
            (label, (secs - start) / over.as_secs_f64().max(1e-9) * 100.0)
        })
        .collect();
    busy.sort_by(|a, b| b.1.total_cmp(&a.1));
    busy.truncate(4);
    busy
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn pct_or_dash(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---------------------------------------------------------------------------
// HTTP calls
// ---------------------------------------------------------------------------

async fn submit(client: &Client, base: &str) -> Result<String, String> {
    let response = client
        .post(format!("{base}{SUBMIT_PATH}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(SUBMIT_BODY)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("body: {e}"))?;
    if status != StatusCode::ACCEPTED {
        return Err(format!("{status}: {}", truncate(&text, 200)));
    }
    let body: Value = serde_json::from_str(&text).map_err(|e| format!("bad JSON ({e}): {text}"))?;
    body["job_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no job_id in {body}"))
}

/// `(status, result_url)` of a job.
async fn job_status(
    client: &Client,
    base: &str,
    id: &str,
) -> Result<(String, Option<String>), String> {
    let response = client
        .get(format!("{base}/api/v1/jobs/{id}"))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("body: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!("{status}: {}", truncate(&text, 200)));
    }
    let body: Value = serde_json::from_str(&text).map_err(|e| format!("bad JSON ({e}): {text}"))?;
    let job_status = body["status"]
        .as_str()
        .ok_or_else(|| format!("no status in {body}"))?
        .to_owned();
    Ok((job_status, body["result_url"].as_str().map(str::to_owned)))
}

struct Submitted {
    /// `(job id, when its submit request started)`, in no particular order.
    jobs: Vec<(String, Instant)>,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
}

/// Submits `count` jobs over [`CLIENT_CONCURRENCY`] connections, stopping
/// early at `deadline`.
async fn submit_many(
    client: &Client,
    base: &str,
    count: usize,
    deadline: Instant,
) -> Result<Submitted, BoxError> {
    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..CLIENT_CONCURRENCY.min(count.max(1)) {
        let (client, base, issued) = (client.clone(), base.to_owned(), issued.clone());
        workers.spawn(async move {
            let mut jobs = Vec::new();
            let mut errors = Vec::new();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < count {
                let t = Instant::now();
                match submit(&client, &base).await {
                    Ok(id) => jobs.push((id, t)),
                    Err(e) => errors.push(e),
                }
            }
            (jobs, errors)
        });
    }
    let mut jobs = Vec::with_capacity(count);
    let mut errors = Vec::new();
    while let Some(joined) = workers.join_next().await {
        let (j, e) = joined?;
        jobs.extend(j);
        errors.extend(e);
    }
    Ok(Submitted {
        jobs,
        errors: errors.len(),
        first_error: errors.into_iter().next(),
        elapsed: started.elapsed(),
    })
}

/// Reads every job back until all are final or `deadline`; the last answer
/// per id (`None`: never read).
async fn read_back(
    client: &Client,
    base: &str,
    ids: &[String],
    deadline: Instant,
) -> Result<HashMap<String, Result<(String, Option<String>), String>>, BoxError> {
    let mut answers: HashMap<String, Result<(String, Option<String>), String>> = HashMap::new();
    let mut pending: Vec<String> = ids.to_vec();
    while !pending.is_empty() {
        let chunks: Vec<Vec<String>> = pending
            .chunks(pending.len().div_ceil(CLIENT_CONCURRENCY))
            .map(<[String]>::to_vec)
            .collect();
        let mut readers = JoinSet::new();
        for chunk in chunks {
            let (client, base) = (client.clone(), base.to_owned());
            readers.spawn(async move {
                let mut out = Vec::with_capacity(chunk.len());
                for id in chunk {
                    let answer = job_status(&client, &base, &id).await;
                    out.push((id, answer));
                }
                out
            });
        }
        while let Some(joined) = readers.join_next().await {
            answers.extend(joined?);
        }
        pending = answers
            .iter()
            .filter(|(_, a)| {
                !matches!(a, Ok((s, _)) if s == "completed" || s == "failed" || s == "cancelled")
            })
            .map(|(id, _)| id.clone())
            .collect();
        if Instant::now() >= deadline {
            break;
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(answers)
}

/// Submits a few jobs and waits until the backend finished them, so the
/// first measured run starts on warm connections and a warm database.
async fn warm_up(client: &Client, server: &Server, stand_in: &StandIn) -> Result<(), BoxError> {
    stand_in.reset(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = submit_many(client, &server.base, WARMUP_JOBS, deadline).await?;
    if let Some(e) = s.first_error {
        return Err(format!("warm-up submit failed: {e}").into());
    }
    while stand_in.done() < s.jobs.len() {
        if Instant::now() >= deadline {
            return Err(format!(
                "warm-up: {} of {} jobs finished on the backend within 30 s",
                stand_in.done(),
                s.jobs.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids: Vec<String> = s.jobs.into_iter().map(|(id, _)| id).collect();
    let answers = read_back(client, &server.base, &ids, deadline).await?;
    let done = answers
        .values()
        .filter(|a| matches!(a, Ok((s, _)) if s == "completed"))
        .count();
    if done != ids.len() {
        return Err(format!("warm-up: {done} of {} jobs completed", ids.len()).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 1: jobs per second through the pipeline
// ---------------------------------------------------------------------------

struct RunResult {
    label: &'static str,
    worker_concurrency: usize,
    /// `processing` answers per job before `completed`.
    processing_polls: u32,
    requested: usize,
    submitted: usize,
    submit_errors: usize,
    submit_elapsed: Duration,
    completed: usize,
    failed: usize,
    unfinished: usize,
    first_error: Option<String>,
    /// First submit → the last job's completing poll.
    elapsed: Duration,
    /// The last completing poll → the read-back seeing every job final.
    confirm_after: Duration,
    e2e: Vec<Duration>,
    queue_wait: Vec<Duration>,
    service: Vec<Duration>,
    max_in_flight: usize,
    backend_polls: usize,
    backend_submits: usize,
    child_cpu_pct: Option<f64>,
    bench_cpu_pct: Option<f64>,
    /// CPU the rest of the machine used meanwhile, % of one core.
    other_cpu_pct: Option<f64>,
    child_hwm_kib: u64,
    hwm_was_reset: bool,
    capped: bool,
    busiest: Vec<(String, f64)>,
}

impl RunResult {
    fn per_sec(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn errors(&self) -> usize {
        self.submit_errors + self.failed + self.unfinished
    }
}

#[allow(clippy::too_many_arguments)]
async fn pipeline_run(
    client: &Client,
    server: &mut Server,
    stand_in: &StandIn,
    label: &'static str,
    worker_concurrency: usize,
    processing_polls: u32,
    count: usize,
    cap: Duration,
) -> Result<RunResult, BoxError> {
    let pid = server.pid();
    stand_in.reset(processing_polls);
    let hwm_was_reset = reset_hwm(pid);
    let own = std::process::id();
    let (cpu0, own0, machine0) = (cpu_secs(pid), cpu_secs(own), machine_busy_secs());
    let threads0 = thread_cpu(pid);
    let started = Instant::now();
    let deadline = started + cap;

    let submitted = submit_many(client, &server.base, count, deadline).await?;
    // The backend's count is exact and costs the server nothing to watch.
    while stand_in.done() < submitted.jobs.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let capped = stand_in.done() < submitted.jobs.len();
    let waited = started.elapsed();
    let (cpu1, own1, machine1) = (cpu_secs(pid), cpu_secs(own), machine_busy_secs());
    let child_cpu_pct = cpu_pct(cpu0, cpu1, waited);
    let bench_cpu_pct = cpu_pct(own0, own1, waited);
    let other_cpu_pct = cpu_pct(machine0, machine1, waited)
        .and_then(|all| Some((all - child_cpu_pct? - bench_cpu_pct?).max(0.0)));
    let busiest = busiest_threads(&threads0, &thread_cpu(pid), waited);
    server.still_running()?;

    let ids: Vec<String> = submitted.jobs.iter().map(|(id, _)| id.clone()).collect();
    let answers = read_back(client, &server.base, &ids, Instant::now() + CONFIRM_GRACE).await?;
    let confirmed_at = Instant::now();
    let mem = read_mem(pid).unwrap_or_default();

    let (mut completed, mut failed, mut unfinished) = (0, 0, 0);
    let mut first_error = submitted.first_error.clone();
    let (mut e2e, mut queue_wait, mut service) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_done = started;
    for (id, t_submit) in &submitted.jobs {
        match answers.get(id) {
            Some(Ok((status, result_url))) if status == "completed" => {
                completed += 1;
                let times = result_url
                    .as_deref()
                    .and_then(StandIn::backend_id)
                    .and_then(|b| stand_in.times(b));
                if let Some((posted, Some(done))) = times {
                    e2e.push(done.saturating_duration_since(*t_submit));
                    queue_wait.push(posted.saturating_duration_since(*t_submit));
                    service.push(done.saturating_duration_since(posted));
                    last_done = last_done.max(done);
                } else if first_error.is_none() {
                    first_error = Some(format!(
                        "job {id}: completed, but its backend job is unknown ({result_url:?})"
                    ));
                }
            }
            Some(Ok((status, _))) if status == "failed" || status == "cancelled" => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("job {id} ended {status}"));
            }
            Some(Ok((status, _))) => {
                unfinished += 1;
                first_error.get_or_insert_with(|| format!("job {id} still {status}"));
            }
            Some(Err(e)) => {
                unfinished += 1;
                first_error.get_or_insert_with(|| format!("job {id}: {e}"));
            }
            None => unfinished += 1,
        }
    }
    for v in [&mut e2e, &mut queue_wait, &mut service] {
        v.sort_unstable();
    }
    let s = &stand_in.state;
    Ok(RunResult {
        label,
        worker_concurrency,
        processing_polls,
        requested: count,
        submitted: submitted.jobs.len(),
        submit_errors: submitted.errors,
        submit_elapsed: submitted.elapsed,
        completed,
        failed,
        unfinished,
        first_error,
        elapsed: last_done.saturating_duration_since(started),
        confirm_after: confirmed_at.saturating_duration_since(last_done),
        e2e,
        queue_wait,
        service,
        max_in_flight: s.max_in_flight.load(Ordering::SeqCst),
        backend_polls: s.polls.load(Ordering::SeqCst),
        backend_submits: s.submitted.load(Ordering::SeqCst),
        child_cpu_pct,
        bench_cpu_pct,
        other_cpu_pct,
        child_hwm_kib: mem.hwm_kib,
        hwm_was_reset,
        capped,
        busiest,
    })
}

fn print_run_progress(r: &RunResult) {
    println!(
        "  {:<10} worker c={:<2} {:>5}/{:<5} completed in {:>6.2}s  {:>7.1} jobs/s  e2e p50 {:>8.1} ms  p99 {:>8.1} ms  service p50 {:>7.1} ms  errors {}{}",
        r.label,
        r.worker_concurrency,
        r.completed,
        r.requested,
        r.elapsed.as_secs_f64(),
        r.per_sec(),
        ms(percentile(&r.e2e, 50.0)),
        ms(percentile(&r.e2e, 99.0)),
        ms(percentile(&r.service, 50.0)),
        r.errors(),
        if r.capped { "  (time cap hit)" } else { "" }
    );
    if let Some(e) = &r.first_error {
        println!("             first error: {e}");
    }
}

fn busiest_line(r: &RunResult) -> String {
    r.busiest
        .iter()
        .map(|(name, pct)| format!("{name} {pct:.0}%"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The least time the worker spends on a job whose backend answers
/// `processing` `polls` times first: the sleeps between its status polls.
fn poll_floor_ms(polls: u32) -> f64 {
    let (mut total, mut interval) = (0.0, WORKER_POLL_MIN_MS);
    for _ in 0..polls.min(1000) {
        total += interval;
        interval = (interval * WORKER_POLL_GROWTH).min(WORKER_POLL_MAX_MS);
    }
    total
}

fn print_runs(runs: &[RunResult]) {
    println!(
        "| {:<10} | {:>4} | {:>5} | {:>5} | {:>9} | {:>6} | {:>7} | {:>8} | {:>9} | {:>9} | {:>9} | {:>9} | {:>6} | {:>5} | {:>5} | {:>6} | {:>8} |",
        "run",
        "conc",
        "polls",
        "jobs",
        "completed",
        "errors",
        "time s",
        "jobs/s",
        "e2e p50",
        "e2e p99",
        "submit/s",
        "confirm",
        "maxrun",
        "cpu%",
        "bcpu%",
        "other%",
        "HWM MiB"
    );
    println!(
        "|------------|------|-------|-------|-----------|--------|---------|----------|-----------|-----------|-----------|-----------|--------|-------|-------|--------|----------|"
    );
    for r in runs {
        println!(
            "| {:<10} | {:>4} | {:>5} | {:>5} | {:>9} | {:>6} | {:>7.2} | {:>8.1} | {:>6.0} ms | {:>6.0} ms | {:>9.0} | {:>6.0} ms | {:>6} | {:>5} | {:>5} | {:>6} | {:>7.1}{} |",
            r.label,
            r.worker_concurrency,
            r.processing_polls,
            r.requested,
            r.completed,
            r.errors(),
            r.elapsed.as_secs_f64(),
            r.per_sec(),
            ms(percentile(&r.e2e, 50.0)),
            ms(percentile(&r.e2e, 99.0)),
            r.submitted as f64 / r.submit_elapsed.as_secs_f64().max(1e-9),
            ms(r.confirm_after),
            r.max_in_flight,
            pct_or_dash(r.child_cpu_pct),
            pct_or_dash(r.bench_cpu_pct),
            pct_or_dash(r.other_cpu_pct),
            mib(r.child_hwm_kib),
            if r.hwm_was_reset { "" } else { "*" }
        );
    }
    println!();
    println!(
        "| {:<10} | {:>4} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>12} | {:>12} | {:>12} |",
        "run",
        "conc",
        "wait p50",
        "wait p99",
        "svc p50",
        "svc p99",
        "svc max",
        "poll floor",
        "conc/svc50",
        "backend POST",
        "status polls"
    );
    println!(
        "|------------|------|------------|------------|------------|------------|------------|------------|--------------|--------------|--------------|"
    );
    for r in runs {
        let svc50 = percentile(&r.service, 50.0);
        println!(
            "| {:<10} | {:>4} | {:>7.0} ms | {:>7.0} ms | {:>7.1} ms | {:>7.1} ms | {:>7.1} ms | {:>7.0} ms | {:>8.1} j/s | {:>12} | {:>12} |",
            r.label,
            r.worker_concurrency,
            ms(percentile(&r.queue_wait, 50.0)),
            ms(percentile(&r.queue_wait, 99.0)),
            ms(svc50),
            ms(percentile(&r.service, 99.0)),
            ms(r.service.last().copied().unwrap_or_default()),
            poll_floor_ms(r.processing_polls),
            r.worker_concurrency as f64 / svc50.as_secs_f64().max(1e-9),
            r.backend_submits,
            r.backend_polls
        );
    }
    println!("busiest child threads over each run (% of one core):");
    for r in runs {
        println!(
            "  {:<10} c={:<2} {}",
            r.label,
            r.worker_concurrency,
            busiest_line(r)
        );
    }
}

// ---------------------------------------------------------------------------
// Part 2: open event streams
// ---------------------------------------------------------------------------

#[derive(Default)]
struct StreamCounters {
    first_events: AtomicUsize,
    open_failed: AtomicUsize,
    closed_early: AtomicUsize,
    events: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl StreamCounters {
    fn fail(&self, counter: &AtomicUsize, error: String) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(error);
    }
}

fn count_events(bytes: &[u8]) -> usize {
    bytes
        .windows(b"event: status".len())
        .filter(|w| *w == b"event: status")
        .count()
}

/// One event stream: counts its first event (then gives back its opening
/// permit), then reads on until `stop`; ending earlier counts as closed.
async fn hold_stream(
    client: Client,
    url: String,
    counters: Arc<StreamCounters>,
    permit: tokio::sync::OwnedSemaphorePermit,
    stop: CancellationToken,
) {
    let mut permit = Some(permit);
    let opened = tokio::time::timeout(FIRST_EVENT_TIMEOUT, async {
        let response = client
            .get(&url)
            .header(header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| format!("request: {e}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!("answered {}", response.status()));
        }
        let mut body = response.bytes_stream();
        let mut head = Vec::new();
        loop {
            match body.next().await {
                Some(Ok(chunk)) => {
                    head.extend_from_slice(&chunk);
                    if count_events(&head) > 0 {
                        return Ok((body, count_events(&head)));
                    }
                    if head.len() > 64 * 1024 {
                        return Err("64 KiB without an event".to_owned());
                    }
                }
                Some(Err(e)) => return Err(format!("body: {e}")),
                None => return Err("closed before its first event".to_owned()),
            }
        }
    })
    .await;
    let mut body = match opened {
        Ok(Ok((body, events))) => {
            counters.first_events.fetch_add(1, Ordering::SeqCst);
            counters.events.fetch_add(events, Ordering::SeqCst);
            body
        }
        Ok(Err(e)) => return counters.fail(&counters.open_failed, e),
        Err(_) => {
            return counters.fail(
                &counters.open_failed,
                format!("no first event within {FIRST_EVENT_TIMEOUT:?}"),
            );
        }
    };
    permit.take();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            chunk = body.next() => match chunk {
                Some(Ok(chunk)) => {
                    counters.events.fetch_add(count_events(&chunk), Ordering::SeqCst);
                }
                Some(Err(e)) => return counters.fail(&counters.closed_early, format!("stream broke: {e}")),
                None => return counters.fail(&counters.closed_early, "stream ended (job final?)".to_owned()),
            },
        }
    }
}

struct StreamStage {
    target: usize,
    first_events: usize,
    open_failed: usize,
    closed_early: usize,
    open_at_end: usize,
    events: usize,
    open_time: Duration,
    rss_before_kib: u64,
    rss_after_kib: u64,
    peak_rss_kib: u64,
    hold_cpu_pct: Option<f64>,
    bench_rss_kib: u64,
}

/// Holds for `hold`, sampling the child's RSS; `(peak RSS, RSS at the end,
/// CPU % over the hold)`.
async fn hold_and_sample(pid: u32, hold: Duration) -> (u64, u64, Option<f64>) {
    let cpu0 = cpu_secs(pid);
    let started = Instant::now();
    let mut peak = 0;
    while started.elapsed() < hold {
        if let Some(m) = read_mem(pid) {
            peak = peak.max(m.rss_kib);
        }
        tokio::time::sleep(RSS_SAMPLE_EVERY.min(hold.saturating_sub(started.elapsed()))).await;
    }
    let cpu = cpu_pct(cpu0, cpu_secs(pid), started.elapsed());
    let end = read_mem(pid).unwrap_or_default().rss_kib;
    (peak.max(end), end, cpu)
}

struct SsePart {
    jobs: usize,
    job_submit_errors: usize,
    processing_jobs: usize,
    baseline_rss_kib: u64,
    baseline_cpu_pct: Option<f64>,
    stages: Vec<StreamStage>,
    first_error: Option<String>,
    events_interval_ms: u64,
}

async fn sse_part(
    client: &Client,
    server: &mut Server,
    stand_in: &StandIn,
    jobs: usize,
    stages: &[usize],
    hold: Duration,
    events_interval_ms: u64,
) -> Result<SsePart, BoxError> {
    let pid = server.pid();
    stand_in.reset(NEVER);
    let submitted = submit_many(
        client,
        &server.base,
        jobs,
        Instant::now() + Duration::from_secs(60),
    )
    .await?;
    if submitted.jobs.is_empty() {
        return Err(format!(
            "no job to stream: {}",
            submitted.first_error.unwrap_or_default()
        )
        .into());
    }
    let ids: Vec<String> = submitted.jobs.iter().map(|(id, _)| id.clone()).collect();
    // Let the worker take its share (they stay `processing` for ever) and
    // the submit burst settle, then measure the idle process.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, baseline_rss, baseline_cpu) = hold_and_sample(pid, hold).await;
    let processing_jobs = stand_in.state.in_flight.load(Ordering::SeqCst);

    let sse_client = Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .tcp_nodelay(true)
        .build()?;
    let counters = Arc::new(StreamCounters::default());
    let stop = CancellationToken::new();
    let opening = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut streams = JoinSet::new();
    let mut results = Vec::new();
    let mut opened = 0usize;
    let mut rss_before = baseline_rss;
    for &target in stages {
        let started = Instant::now();
        let stage_deadline = started + OPEN_STAGE_CAP;
        while opened < target && Instant::now() < stage_deadline {
            let Ok(Ok(permit)) =
                tokio::time::timeout_at(stage_deadline.into(), opening.clone().acquire_owned())
                    .await
            else {
                break;
            };
            let url = format!(
                "{}/api/v1/jobs/{}/events",
                server.base,
                ids[opened % ids.len()]
            );
            streams.spawn(hold_stream(
                sse_client.clone(),
                url,
                counters.clone(),
                permit,
                stop.clone(),
            ));
            opened += 1;
        }
        // Every stream of the stage has had its first event, or failed.
        while counters.first_events.load(Ordering::SeqCst)
            + counters.open_failed.load(Ordering::SeqCst)
            < opened
            && Instant::now() < stage_deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let open_time = started.elapsed();
        server.still_running()?;
        let (peak, rss_after, cpu) = hold_and_sample(pid, hold).await;
        server.still_running()?;
        let first_events = counters.first_events.load(Ordering::SeqCst);
        let closed_early = counters.closed_early.load(Ordering::SeqCst);
        let stage = StreamStage {
            target,
            first_events,
            open_failed: counters.open_failed.load(Ordering::SeqCst),
            closed_early,
            open_at_end: first_events.saturating_sub(closed_early),
            events: counters.events.load(Ordering::SeqCst),
            open_time,
            rss_before_kib: rss_before,
            rss_after_kib: rss_after,
            peak_rss_kib: peak,
            hold_cpu_pct: cpu,
            bench_rss_kib: read_mem(std::process::id()).unwrap_or_default().rss_kib,
        };
        println!(
            "  {:>5} streams: {} had their first event ({} failed) in {:.2}s; {} open after a {}s hold; child RSS {:.1} -> {:.1} MiB, CPU {}% of a core",
            target,
            stage.first_events,
            stage.open_failed,
            open_time.as_secs_f64(),
            stage.open_at_end,
            hold.as_secs(),
            mib(rss_before),
            mib(rss_after),
            pct_or_dash(cpu)
        );
        rss_before = rss_after;
        let failed = stage.open_failed + stage.closed_early > 0 || stage.first_events < target;
        results.push(stage);
        if failed {
            println!("  (stopping here: not every stream opened and stayed open)");
            break;
        }
    }
    stop.cancel();
    // Closing is quick: the streams only need to see `stop`.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while streams.join_next().await.is_some() {}
    })
    .await;
    streams.abort_all();
    let first_error = counters
        .first_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Ok(SsePart {
        jobs: submitted.jobs.len(),
        job_submit_errors: submitted.errors,
        processing_jobs,
        baseline_rss_kib: baseline_rss,
        baseline_cpu_pct: baseline_cpu,
        stages: results,
        first_error,
        events_interval_ms,
    })
}

fn print_sse(part: &SsePart, hold: Duration) {
    println!(
        "jobs streamed: {} ({} submit errors), {} of them `processing` on the worker, the rest `pending`; streams spread round-robin over them",
        part.jobs, part.job_submit_errors, part.processing_jobs
    );
    println!(
        "idle child with 0 streams: RSS {:.1} MiB, CPU {}% of a core over {}s",
        mib(part.baseline_rss_kib),
        pct_or_dash(part.baseline_cpu_pct),
        hold.as_secs()
    );
    println!(
        "| {:>7} | {:>11} | {:>6} | {:>6} | {:>8} | {:>6} | {:>7} | {:>10} | {:>10} | {:>10} | {:>9} | {:>9} | {:>5} | {:>10} |",
        "streams",
        "first event",
        "failed",
        "closed",
        "open end",
        "events",
        "open s",
        "RSS before",
        "RSS after",
        "peak RSS",
        "KiB/strm",
        "KiB/strm",
        "cpu%",
        "bench RSS"
    );
    println!(
        "| {:>7} | {:>11} | {:>6} | {:>6} | {:>8} | {:>6} | {:>7} | {:>10} | {:>10} | {:>10} | {:>9} | {:>9} | {:>5} | {:>10} |",
        "", "", "", "", "", "", "", "MiB", "MiB", "MiB", "vs 0", "stage", "hold", "MiB"
    );
    println!(
        "|---------|-------------|--------|--------|----------|--------|---------|------------|------------|------------|-----------|-----------|-------|------------|"
    );
    let mut previous = 0usize;
    for s in &part.stages {
        let per = |base: u64, n: usize| {
            if n == 0 {
                0.0
            } else {
                (s.rss_after_kib as f64 - base as f64) / n as f64
            }
        };
        println!(
            "| {:>7} | {:>11} | {:>6} | {:>6} | {:>8} | {:>6} | {:>7.2} | {:>10.1} | {:>10.1} | {:>10.1} | {:>9.1} | {:>9.1} | {:>5} | {:>10.1} |",
            s.target,
            s.first_events,
            s.open_failed,
            s.closed_early,
            s.open_at_end,
            s.events,
            s.open_time.as_secs_f64(),
            mib(s.rss_before_kib),
            mib(s.rss_after_kib),
            mib(s.peak_rss_kib),
            per(part.baseline_rss_kib, s.first_events),
            per(s.rss_before_kib, s.first_events.saturating_sub(previous)),
            pct_or_dash(s.hold_cpu_pct),
            mib(s.bench_rss_kib)
        );
        previous = s.first_events;
    }
    let reads_per_tick = part.jobs.div_ceil(WATCHER_CHUNK).max(1);
    println!(
        "watcher task-store reads (from the design, jobs/watch.rs): one batched `SELECT … WHERE task_id IN (…)` per {WATCHER_CHUNK} watched jobs every EVENTS_POLL_MILLIS={} ms = {:.1} reads/s for {} watched jobs, whatever the number of streams; plus one single-row read per stream when it opens (its first event)",
        part.events_interval_ms,
        reads_per_tick as f64 * 1000.0 / part.events_interval_ms as f64,
        part.jobs
    );
    if let Some(e) = &part.first_error {
        println!("first stream error: {e}");
    }
}

// ---------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid number").into()),
        _ => Ok(default),
    }
}

fn stream_stages() -> Result<Vec<usize>, BoxError> {
    let raw = std::env::var("BENCH_SSE_STREAMS").unwrap_or_else(|_| "1000,5000".to_owned());
    let mut stages = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n: usize = part
            .parse()
            .map_err(|_| format!("BENCH_SSE_STREAMS: {part:?} is not a number"))?;
        if n == 0 || n > 20_000 || stages.last().is_some_and(|&last| n <= last) {
            return Err(
                "BENCH_SSE_STREAMS must be increasing stream counts within 1..=20000".into(),
            );
        }
        stages.push(n);
    }
    Ok(stages)
}

/// The child's environment for one worker concurrency.
fn child_env(
    stand_in: &StandIn,
    concurrency: usize,
    events_ms: u64,
) -> Vec<(&'static str, String)> {
    vec![
        ("GPU_BACKEND_URL", stand_in.url.clone()),
        ("WORKER_CONCURRENCY", concurrency.to_string()),
        ("EVENTS_POLL_MILLIS", events_ms.to_string()),
    ]
}

async fn start_server(
    bin: &Path,
    client: &Client,
    stand_in: &StandIn,
    concurrency: usize,
    events_ms: u64,
) -> Result<Server, BoxError> {
    let mut server = Server::start(bin, &child_env(stand_in, concurrency, events_ms))?;
    let boot = server.wait_healthy(client).await?;
    println!(
        "orchestrator pid {} at {} (WORKER_CONCURRENCY={concurrency}, healthy after {:.0} ms, RSS {:.1} MiB); data in {}",
        server.pid(),
        server.base,
        ms(boot),
        mib(read_mem(server.pid()).unwrap_or_default().rss_kib),
        server.data_dir.path().display()
    );
    warm_up(client, &server, stand_in).await?;
    Ok(server)
}

async fn run(bin: PathBuf) -> Result<(), BoxError> {
    let jobs_c1: usize = env_num("BENCH_JOBS_C1", 300)?;
    let jobs_c16: usize = env_num("BENCH_JOBS_C16", 2000)?;
    let jobs_slow: usize = env_num("BENCH_JOBS_SLOW", 320)?;
    let cap = Duration::from_secs(env_num("BENCH_RUN_SECS", 60)?);
    let sse_jobs: usize = env_num("BENCH_SSE_JOBS", 200)?;
    let hold = Duration::from_secs(env_num("BENCH_HOLD_SECS", 10)?);
    let events_ms: u64 = env_num("EVENTS_POLL_MILLIS", 1000)?;
    let stages = stream_stages()?;
    if jobs_c1 == 0 || jobs_c16 == 0 || jobs_c1.max(jobs_c16).max(jobs_slow) > 100_000 {
        return Err("BENCH_JOBS_C1 and BENCH_JOBS_C16 must be within 1..=100000".into());
    }
    if cap.is_zero() || cap > Duration::from_secs(600) || hold > Duration::from_secs(300) {
        return Err("BENCH_RUN_SECS must be within 1..=600, BENCH_HOLD_SECS at most 300".into());
    }
    if events_ms == 0 || !(1..=10_000).contains(&sse_jobs) {
        return Err("EVENTS_POLL_MILLIS must be > 0, BENCH_SSE_JOBS within 1..=10000".into());
    }

    let client = Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CLIENT_CONCURRENCY * 2)
        .tcp_nodelay(true)
        .build()?;
    let stand_in = StandIn::start().await?;
    println!("stand-in inference API at {}", stand_in.url);

    println!(
        "\npart 1: camera-angle jobs through queue -> worker -> backend -> task store (cap {}s per run)",
        cap.as_secs()
    );
    let mut runs = Vec::new();
    {
        let mut server = start_server(&bin, &client, &stand_in, 1, events_ms).await?;
        let r = pipeline_run(
            &client,
            &mut server,
            &stand_in,
            "instant",
            1,
            0,
            jobs_c1,
            cap,
        )
        .await?;
        print_run_progress(&r);
        runs.push(r);
    }
    let mut server = start_server(&bin, &client, &stand_in, 16, events_ms).await?;
    let r = pipeline_run(
        &client,
        &mut server,
        &stand_in,
        "instant",
        16,
        0,
        jobs_c16,
        cap,
    )
    .await?;
    print_run_progress(&r);
    runs.push(r);
    if jobs_slow > 0 {
        let r = pipeline_run(
            &client,
            &mut server,
            &stand_in,
            "one-poll",
            16,
            1,
            jobs_slow,
            cap,
        )
        .await?;
        print_run_progress(&r);
        runs.push(r);
    }

    let sse = if stages.is_empty() {
        None
    } else {
        println!(
            "\npart 2: open event streams on the same child, backend never finishing (hold {}s per stage)",
            hold.as_secs()
        );
        Some(
            sse_part(
                &client,
                &mut server,
                &stand_in,
                sse_jobs,
                &stages,
                hold,
                events_ms,
            )
            .await?,
        )
    };
    drop(server);

    println!("\n=== orchestrator pipeline benchmark ===");
    println!(
        "machine: {} logical CPUs; the child, the stand-in backend and the bench client share them",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "embedded SQLite queue and task table; jobs submitted at once over {CLIENT_CONCURRENCY} connections, {WARMUP_JOBS} warm-up jobs per child"
    );
    println!(
        "polls = `processing` answers before `completed`; time = first submit -> last completing poll; e2e = submit -> completing poll;"
    );
    println!(
        "confirm = last completing poll -> read-back saw every job `completed`; maxrun = most backend jobs running at once;"
    );
    println!(
        "cpu% / bcpu% / other% = CPU of the child / the bench (client and stand-in) / every other process, % of one core; HWM = child VmHWM over the run (* = not reset)"
    );
    print_runs(&runs);
    println!(
        "wait = submit -> backend POST (queueing); svc = backend POST -> completing poll (the worker's time on the job); poll floor = sleeps the worker must make"
    );
    println!(
        "worker backend polling: poll_min {WORKER_POLL_MIN_MS:.0} ms, x{WORKER_POLL_GROWTH} per poll, poll_max {WORKER_POLL_MAX_MS:.0} ms (WorkerSettings::new); the in-process workers take only WORKER_CONCURRENCY from the environment"
    );
    if let Some(sse) = &sse {
        println!();
        print_sse(sse, hold);
    }

    let run_errors: usize = runs.iter().map(RunResult::errors).sum();
    let stream_problems = sse.as_ref().map_or(0, |s| {
        s.stages.iter().last().map_or(0, |l| {
            l.open_failed + l.closed_early + l.target - l.first_events.min(l.target)
        })
    });
    if run_errors > 0 || stream_problems > 0 || runs.iter().any(|r| r.capped) {
        return Err(format!(
            "{run_errors} job error(s), {stream_problems} stream problem(s){}",
            if runs.iter().any(|r| r.capped) {
                ", a run hit its time cap"
            } else {
                ""
            }
        )
        .into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let bin = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("ORCHESTRATOR_BIN"))
        .map(PathBuf::from);
    let Some(bin) = bin else {
        eprintln!("usage: pipeline_bench <path to orchestrator binary>  (or set ORCHESTRATOR_BIN)");
        return std::process::ExitCode::from(2);
    };
    // Ctrl-C drops the run future, and with it the server (child killed,
    // temp dir removed).
    let result = tokio::select! {
        r = run(bin) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeline_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
