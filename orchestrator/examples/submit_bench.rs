//! Submit/status benchmark for the orchestrator (a benchmark, not a test).
//!
//! Starts the release binary as a child process on a free loopback port and
//! loads `POST /api/v1/camera-angle/jobs` (the frontend's exact camera body),
//! then `GET /api/v1/jobs/{job_id}` of the ids it submitted, at concurrency
//! 1, 8 and 64, on each backend set:
//!
//! - (a) embedded: zero configuration, SQLite task table and SQLite queues
//!   in a fresh temp `DATA_DIR`;
//! - (b) moto: fresh GPU/CPU queues (each with a DLQ and redrive policy) and
//!   a fresh `task_store` table with the `status-created_at-index` GSI,
//!   created here with the SDK, then the child started with `SQS_QUEUE_URL`,
//!   `CPU_SQS_QUEUE_URL`, `DYNAMODB_TABLE` and `AWS_ENDPOINT_URL`;
//! - (c) the moto ceiling: the same backend calls made directly with the SDK,
//!   no orchestrator in between — a submit is one conditional `PutItem` plus
//!   one `SendMessage`, a status is one consistent `GetItem`.
//!
//! Each row gives requests/s, p50/p99/max latency, errors, the server's CPU
//! use and (on moto) the GPU queue's depth before the level; each part gives
//! the server's RSS and peak RSS (`VmHWM`).
//!
//! ```text
//! cargo build --release -p orchestrator --bins --examples
//! target/release/examples/submit_bench target/release/orchestrator
//! ```
//!
//! The binary comes from the first argument or `ORCHESTRATOR_BIN`. Optional
//! knobs (moto is single-threaded and slow, so its counts are small):
//! `MOTO_URL` (default `http://127.0.0.1:5000`),
//! `BENCH_SUBMITS_EMBEDDED` (submits per level, default 3000),
//! `BENCH_STATUS_EMBEDDED` (status reads per level, default 10000),
//! `BENCH_SUBMITS_MOTO` (default 300), `BENCH_STATUS_MOTO` (default 1000),
//! `BENCH_LEVEL_SECS` (time cap per level, default 30),
//! `BENCH_SKIP_MOTO=1` (run part (a) only).
//! Only 127.0.0.1 is contacted; the child gets a cleared environment (so no
//! caller variable or `.env` can switch its backends), is killed and its temp
//! dir removed on every exit path (error, panic, Ctrl-C). The queues and
//! table made on moto are deleted after their part.

use std::{
    future::Future,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;
use common::aws::AwsSettings;
use reqwest::{Client, StatusCode, header};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const LEVELS: [usize; 3] = [1, 8, 64];
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const SUBMIT_PATH: &str = "/api/v1/camera-angle/jobs";
/// What the frontend sends for a camera-angle job.
const SUBMIT_BODY: &str = r#"{"image_url":"https://cdn.example.test/images/s/a.png","vertical":0,"horizontal":0,"zoom":0,"steps":8}"#;
/// The camera-angle job as the orchestrator queues it (`request_body` with
/// its defaults filled in), for the SDK-only ceiling.
const CEILING_MESSAGE_API_PATH: &str = "/api/v1/camera-angle/jobs";
/// Receives before a message is dead-lettered, on the bench's queues.
const MAX_RECEIVES: u32 = 3;
const TABLE_INDEX: &str = "status-created_at-index";
/// `USER_HZ`: the unit of utime/stime in `/proc/<pid>/stat` (100 on Linux).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

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
    fn start(bin: &Path, extra: &[(String, String)]) -> Result<Self, BoxError> {
        let data_dir = tempfile::Builder::new()
            .prefix("orchestrator-bench-")
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

/// User + system CPU time of a process so far, in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, so 11 and 12
    // after the name (which is field 2; field 3 is the first of `rest`).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SEC)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------
// The load: one operation, repeated at a given concurrency
// ---------------------------------------------------------------------------

/// One operation's outcome: a job id to remember (submits), or nothing.
type OpResult = Result<Option<String>, String>;

struct Level {
    op: &'static str,
    concurrency: usize,
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    capped: bool,
    /// Server CPU time over the level, as a percentage of one core.
    server_cpu_pct: Option<f64>,
    /// GPU queue depth (visible messages) before the level, on SQS.
    queued_before: Option<u64>,
}

impl Level {
    fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `count` calls of `op(i)` with `concurrency` workers, stopping early
/// at `time_cap`. Returns the level and the ids the calls returned.
async fn run_level<F, Fut>(
    name: &'static str,
    concurrency: usize,
    count: usize,
    time_cap: Duration,
    server_pid: Option<u32>,
    op: F,
) -> Result<(Level, Vec<String>), BoxError>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = OpResult> + Send + 'static,
{
    let issued = Arc::new(AtomicUsize::new(0));
    let capped = Arc::new(AtomicBool::new(false));
    let cpu_before = server_pid.and_then(cpu_secs);
    let started = Instant::now();
    let deadline = started + time_cap;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (op, issued, capped) = (op.clone(), issued.clone(), capped.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let mut ids = Vec::new();
            loop {
                if Instant::now() >= deadline {
                    capped.store(true, Ordering::Relaxed);
                    break;
                }
                let i = issued.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t = Instant::now();
                match op(i).await {
                    Ok(id) => {
                        latencies.push(t.elapsed());
                        ids.extend(id);
                    }
                    Err(e) => errors.push(e),
                }
            }
            (latencies, errors, ids)
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    let mut errors = Vec::new();
    let mut ids = Vec::with_capacity(count);
    for worker in workers {
        let (l, e, i) = worker.await?;
        latencies.extend(l);
        errors.extend(e);
        ids.extend(i);
    }
    let elapsed = started.elapsed();
    let server_cpu_pct = match (cpu_before, server_pid.and_then(cpu_secs)) {
        (Some(before), Some(after)) => Some((after - before) / elapsed.as_secs_f64() * 100.0),
        _ => None,
    };
    latencies.sort_unstable();
    let level = Level {
        op: name,
        concurrency,
        ok: latencies.len(),
        errors: errors.len(),
        first_error: errors.into_iter().next(),
        elapsed,
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
        capped: capped.load(Ordering::Relaxed),
        server_cpu_pct,
        queued_before: None,
    };
    print_progress(&level);
    Ok((level, ids))
}

fn print_progress(r: &Level) {
    println!(
        "  {:<8} c={:<3} {:>5} ok {:>3} err in {:>6.2}s  {:>8.1} req/s  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms{}",
        r.op,
        r.concurrency,
        r.ok,
        r.errors,
        r.elapsed.as_secs_f64(),
        r.per_sec(),
        ms(r.p50),
        ms(r.p99),
        ms(r.max),
        if r.capped { "  (time cap hit)" } else { "" }
    );
    if let Some(e) = &r.first_error {
        println!("           first error: {e}");
    }
}

// ---------------------------------------------------------------------------
// HTTP calls
// ---------------------------------------------------------------------------

async fn submit(client: &Client, base: &str) -> OpResult {
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
    let body: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("bad JSON ({e}): {text}"))?;
    body["job_id"]
        .as_str()
        .map(|id| Some(id.to_owned()))
        .ok_or_else(|| format!("no job_id in {body}"))
}

async fn status(client: &Client, base: &str, id: &str) -> OpResult {
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
    let body: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("bad JSON ({e}): {text}"))?;
    match body["status"].as_str() {
        Some(_) => Ok(None),
        None => Err(format!("no status in {body}")),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---------------------------------------------------------------------------
// moto: queues and table, made and removed with the SDK
// ---------------------------------------------------------------------------

struct MotoResources {
    sqs: aws_sdk_sqs::Client,
    dynamo: aws_sdk_dynamodb::Client,
    gpu_url: String,
    gpu_dlq_url: String,
    cpu_url: String,
    cpu_dlq_url: String,
    table: String,
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

async fn moto_answers(client: &Client, moto: &str) -> bool {
    client
        .get(format!("{moto}/moto-api/"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .is_ok()
}

/// A queue with its dead-letter queue and redrive policy, as production has.
async fn create_queue_pair(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
) -> Result<(String, String), BoxError> {
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await?;
    let dlq_url = dlq.queue_url().ok_or("CreateQueue gave no URL")?.to_owned();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?;
    let dlq_arn = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .ok_or("the DLQ has no ARN")?
        .clone();
    let queue = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "300")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES})
                .to_string(),
        )
        .send()
        .await?;
    let url = queue
        .queue_url()
        .ok_or("CreateQueue gave no URL")?
        .to_owned();
    Ok((url, dlq_url))
}

/// The `task_store` table with the production GSI.
async fn create_table(dynamo: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), BoxError> {
    let attribute = |name: &str, kind| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    dynamo
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("task_id", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("status", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("created_at", ScalarAttributeType::N)?)
        .key_schema(key("task_id", KeyType::Hash)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(TABLE_INDEX)
                .key_schema(key("status", KeyType::Hash)?)
                .key_schema(key("created_at", KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()?,
        )
        .send()
        .await?;
    Ok(())
}

impl MotoResources {
    async fn create(sdk: &aws_config::SdkConfig, prefix: &str) -> Result<Self, BoxError> {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        let (gpu_url, gpu_dlq_url) = create_queue_pair(&sqs, &unique(&format!("{prefix}-gpu")))
            .await
            .map_err(|e| format!("creating the GPU queues: {}", error_chain(&*e)))?;
        let (cpu_url, cpu_dlq_url) = create_queue_pair(&sqs, &unique(&format!("{prefix}-cpu")))
            .await
            .map_err(|e| format!("creating the CPU queues: {}", error_chain(&*e)))?;
        let table = unique(&format!("{prefix}-task_store"));
        create_table(&dynamo, &table)
            .await
            .map_err(|e| format!("creating the table: {}", error_chain(&*e)))?;
        Ok(Self {
            sqs,
            dynamo,
            gpu_url,
            gpu_dlq_url,
            cpu_url,
            cpu_dlq_url,
            table,
        })
    }

    /// The variables that switch the orchestrator to these resources.
    fn env(&self, moto: &str) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", moto),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("SQS_QUEUE_URL", &self.gpu_url),
            ("CPU_SQS_QUEUE_URL", &self.cpu_url),
            ("GPU_DLQ_URL", &self.gpu_dlq_url),
            ("CPU_DLQ_URL", &self.cpu_dlq_url),
            ("DYNAMODB_TABLE", &self.table),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Visible messages in the GPU queue.
    async fn gpu_depth(&self) -> Option<u64> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.gpu_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .ok()?;
        out.attributes()?
            .get(&QueueAttributeName::ApproximateNumberOfMessages)?
            .parse()
            .ok()
    }

    /// Best effort: moto keeps everything in memory.
    async fn delete(&self) {
        for url in [
            &self.gpu_url,
            &self.gpu_dlq_url,
            &self.cpu_url,
            &self.cpu_dlq_url,
        ] {
            let _ = self.sqs.delete_queue().queue_url(url).send().await;
        }
        let _ = self
            .dynamo
            .delete_table()
            .table_name(&self.table)
            .send()
            .await;
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

// ---------------------------------------------------------------------------
// Parts (a) and (b): the orchestrator on one backend set
// ---------------------------------------------------------------------------

struct Counts {
    submits: usize,
    statuses: usize,
    warmup: usize,
}

struct ServerPart {
    title: String,
    boot: Duration,
    boot_mem: Mem,
    after_submits: Mem,
    end: Mem,
    levels: Vec<Level>,
}

async fn bench_server(
    title: String,
    client: &Client,
    bin: &Path,
    env: &[(String, String)],
    counts: &Counts,
    level_cap: Duration,
    moto: Option<&MotoResources>,
) -> Result<ServerPart, BoxError> {
    let mut server = Server::start(bin, env)?;
    let boot = server.wait_healthy(client).await?;
    let pid = server.pid();
    let boot_mem = read_mem(pid).unwrap_or_default();
    println!(
        "\n{title}\n  orchestrator pid {pid} at {} (healthy after {:.0} ms, RSS {:.1} MiB); data in {}",
        server.base,
        ms(boot),
        mib(boot_mem.rss_kib),
        server.data_dir.path().display()
    );
    println!(
        "  {} submits, then {} status reads of the submitted ids, per level (cap {}s per level); {} warm-up submits",
        counts.submits,
        counts.statuses,
        level_cap.as_secs(),
        counts.warmup
    );
    let base: Arc<str> = server.base.clone().into();

    let submit_op = {
        let (client, base) = (client.clone(), base.clone());
        move |_i: usize| {
            let (client, base) = (client.clone(), base.clone());
            async move { submit(&client, &base).await }
        }
    };
    let (warm, mut ids) = run_level(
        "warm-up",
        4.min(counts.warmup.max(1)),
        counts.warmup,
        Duration::from_secs(30),
        None,
        submit_op.clone(),
    )
    .await?;
    if warm.errors > 0 {
        return Err(format!(
            "warm-up submits failed: {}",
            warm.first_error.unwrap_or_default()
        )
        .into());
    }

    let mut levels = Vec::new();
    for concurrency in LEVELS {
        let queued_before = match moto {
            Some(m) => m.gpu_depth().await,
            None => None,
        };
        let (mut level, new_ids) = run_level(
            "submit",
            concurrency,
            counts.submits,
            level_cap,
            Some(pid),
            submit_op.clone(),
        )
        .await?;
        level.queued_before = queued_before;
        ids.extend(new_ids);
        levels.push(level);
    }
    let after_submits = read_mem(pid).unwrap_or_default();
    if ids.is_empty() {
        return Err("no submit succeeded, so there is no id to read".into());
    }

    let ids: Arc<Vec<String>> = Arc::new(ids);
    let status_op = {
        let (client, base, ids) = (client.clone(), base.clone(), ids.clone());
        move |i: usize| {
            let (client, base, ids) = (client.clone(), base.clone(), ids.clone());
            async move { status(&client, &base, &ids[i % ids.len()]).await }
        }
    };
    for concurrency in LEVELS {
        let (level, _) = run_level(
            "status",
            concurrency,
            counts.statuses,
            level_cap,
            Some(pid),
            status_op.clone(),
        )
        .await?;
        levels.push(level);
    }
    let end = read_mem(pid).unwrap_or_default();
    if let Some(status) = server.child.try_wait()? {
        return Err(format!("the orchestrator exited during the run: {status}").into());
    }
    drop(server);
    Ok(ServerPart {
        title,
        boot,
        boot_mem,
        after_submits,
        end,
        levels,
    })
}

// ---------------------------------------------------------------------------
// Part (c): what moto itself takes, no orchestrator in between
// ---------------------------------------------------------------------------

/// One submit's backend calls, as the orchestrator makes them: the
/// conditional `PutItem` of the `pending` record, then `SendMessage`.
async fn ceiling_submit(
    dynamo: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    table: &str,
    queue_url: &str,
) -> OpResult {
    let task_id = uuid::Uuid::new_v4().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let s = |v: &str| AttributeValue::S(v.to_owned());
    dynamo
        .put_item()
        .table_name(table)
        .item("task_id", s(&task_id))
        .item("status", s("pending"))
        .item("job_type", s(CEILING_MESSAGE_API_PATH))
        .item("kind", s("camera-angle"))
        .item("queue", s("gpu"))
        .item("created_at", AttributeValue::N(now.clone()))
        .item("updated_at", AttributeValue::N(now))
        .condition_expression("attribute_not_exists(task_id)")
        .send()
        .await
        .map_err(|e| {
            format!(
                "PutItem: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            )
        })?;
    let body = serde_json::json!({
        "task_id": task_id,
        "api_path": CEILING_MESSAGE_API_PATH,
        "request_body": {
            "image_url": "https://cdn.example.test/images/s/a.png",
            "prompt": null,
            "vertical": 0,
            "horizontal": 0,
            "zoom": 0,
            "seed": null,
            "steps": 8,
        },
    })
    .to_string();
    sqs.send_message()
        .queue_url(queue_url)
        .message_body(body)
        .send()
        .await
        .map_err(|e| {
            format!(
                "SendMessage: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })?;
    Ok(Some(task_id))
}

/// One status read, as the orchestrator makes it: a consistent `GetItem`.
async fn ceiling_status(dynamo: &aws_sdk_dynamodb::Client, table: &str, id: &str) -> OpResult {
    let out = dynamo
        .get_item()
        .table_name(table)
        .key("task_id", AttributeValue::S(id.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| {
            format!(
                "GetItem: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            )
        })?;
    match out.item() {
        Some(_) => Ok(None),
        None => Err(format!("GetItem: no item {id}")),
    }
}

async fn bench_ceiling(
    resources: &MotoResources,
    counts: &Counts,
    level_cap: Duration,
) -> Result<Vec<Level>, BoxError> {
    let (dynamo, sqs) = (resources.dynamo.clone(), resources.sqs.clone());
    let table: Arc<str> = resources.table.clone().into();
    let queue: Arc<str> = resources.gpu_url.clone().into();
    let submit_op = {
        let (dynamo, sqs, table, queue) = (dynamo.clone(), sqs, table.clone(), queue);
        move |_i: usize| {
            let (dynamo, sqs, table, queue) =
                (dynamo.clone(), sqs.clone(), table.clone(), queue.clone());
            async move { ceiling_submit(&dynamo, &sqs, &table, &queue).await }
        }
    };
    let (warm, mut ids) = run_level(
        "warm-up",
        1,
        counts.warmup,
        Duration::from_secs(30),
        None,
        submit_op.clone(),
    )
    .await?;
    if warm.errors > 0 {
        return Err(format!(
            "warm-up calls failed: {}",
            warm.first_error.unwrap_or_default()
        )
        .into());
    }
    let mut levels = Vec::new();
    for concurrency in LEVELS {
        let queued_before = resources.gpu_depth().await;
        let (mut level, new_ids) = run_level(
            "put+send",
            concurrency,
            counts.submits,
            level_cap,
            None,
            submit_op.clone(),
        )
        .await?;
        level.queued_before = queued_before;
        ids.extend(new_ids);
        levels.push(level);
    }
    if ids.is_empty() {
        return Err("no PutItem succeeded, so there is no id to read".into());
    }
    let ids: Arc<Vec<String>> = Arc::new(ids);
    let status_op = move |i: usize| {
        let (dynamo, table, ids) = (dynamo.clone(), table.clone(), ids.clone());
        async move { ceiling_status(&dynamo, &table, &ids[i % ids.len()]).await }
    };
    for concurrency in LEVELS {
        let (level, _) = run_level(
            "get",
            concurrency,
            counts.statuses,
            level_cap,
            None,
            status_op.clone(),
        )
        .await?;
        levels.push(level);
    }
    Ok(levels)
}

// ---------------------------------------------------------------------------
// Driver and report
// ---------------------------------------------------------------------------

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid number").into()),
        Err(_) => Ok(default),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_table(levels: &[Level]) {
    println!(
        "| {:<8} | {:>4} | {:>6} | {:>6} | {:>7} | {:>9} | {:>8} | {:>8} | {:>8} | {:>7} | {:>7} |",
        "op",
        "conc",
        "ok",
        "errors",
        "time s",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "srv CPU",
        "queued"
    );
    println!(
        "|----------|------|--------|--------|---------|-----------|----------|----------|----------|---------|---------|"
    );
    for r in levels {
        let cpu = r
            .server_cpu_pct
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.0}%"));
        let queued = r
            .queued_before
            .map_or_else(|| "-".to_owned(), |q| q.to_string());
        println!(
            "| {:<8} | {:>4} | {:>6} | {:>6} | {:>7.2} | {:>9.1} | {:>8.2} | {:>8.2} | {:>8.2} | {:>7} | {:>7} |{}",
            r.op,
            r.concurrency,
            r.ok,
            r.errors,
            r.elapsed.as_secs_f64(),
            r.per_sec(),
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            cpu,
            queued,
            if r.capped { " time cap" } else { "" }
        );
    }
    for r in levels {
        if let Some(e) = &r.first_error {
            println!(
                "  {} c={}: {} error(s), first: {e}",
                r.op, r.concurrency, r.errors
            );
        }
    }
}

fn print_server_part(part: &ServerPart) {
    println!("\n{}", part.title);
    print_table(&part.levels);
    println!(
        "server RSS: {:.1} MiB at boot (healthy after {:.0} ms), {:.1} MiB after the submits, {:.1} MiB at the end; peak (VmHWM) {:.1} MiB after the submits, {:.1} MiB at the end",
        mib(part.boot_mem.rss_kib),
        ms(part.boot),
        mib(part.after_submits.rss_kib),
        mib(part.end.rss_kib),
        mib(part.after_submits.hwm_kib),
        mib(part.end.hwm_kib),
    );
}

/// The orchestrator on moto against the bare moto rate, level by level.
fn print_comparison(server: &[Level], ceiling: &[Level]) {
    println!("\norchestrator on moto as a share of the moto ceiling (req/s):");
    for (s, c) in server.iter().zip(ceiling) {
        println!(
            "  {:<6} vs {:<8} c={:<3} {:>8.1} / {:>8.1} = {:>5.1}%",
            s.op,
            c.op,
            s.concurrency,
            s.per_sec(),
            c.per_sec(),
            s.per_sec() / c.per_sec() * 100.0
        );
    }
}

async fn run(bin: PathBuf) -> Result<(), BoxError> {
    let moto = std::env::var("MOTO_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    if !moto.starts_with("http://127.0.0.1:") {
        return Err(format!("MOTO_URL must be http://127.0.0.1:<port>, not {moto}").into());
    }
    let level_cap = Duration::from_secs(env_num("BENCH_LEVEL_SECS", 30)?);
    let embedded = Counts {
        submits: env_num("BENCH_SUBMITS_EMBEDDED", 3000)?,
        statuses: env_num("BENCH_STATUS_EMBEDDED", 10_000)?,
        warmup: 20,
    };
    let on_moto = Counts {
        submits: env_num("BENCH_SUBMITS_MOTO", 300)?,
        statuses: env_num("BENCH_STATUS_MOTO", 1000)?,
        warmup: 5,
    };
    let skip_moto = std::env::var("BENCH_SKIP_MOTO").is_ok_and(|v| v == "1" || v == "true");
    if [
        embedded.submits,
        embedded.statuses,
        on_moto.submits,
        on_moto.statuses,
    ]
    .contains(&0)
        || level_cap.is_zero()
    {
        return Err("the BENCH_* counts and BENCH_LEVEL_SECS must be > 0".into());
    }

    let client = Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(LEVELS[LEVELS.len() - 1])
        .tcp_nodelay(true)
        .build()?;
    println!(
        "orchestrator submit/status benchmark: {} logical CPUs shared by the client, the server{}",
        std::thread::available_parallelism().map_or(0, usize::from),
        if skip_moto { "" } else { " and moto" }
    );
    println!("submit body: {SUBMIT_BODY}");

    // Fail before any work rather than after part (a).
    if !skip_moto && !moto_answers(&client, &moto).await {
        return Err(format!(
            "moto is not reachable at {moto}; start it (scripts/bench-orchestrator.sh does) or set BENCH_SKIP_MOTO=1"
        )
        .into());
    }

    // (a) embedded.
    let part_a = bench_server(
        "(a) embedded: SQLite task table + SQLite queues".to_owned(),
        &client,
        &bin,
        &[],
        &embedded,
        level_cap,
        None,
    )
    .await?;

    let mut part_b = None;
    let mut part_c = None;
    let mut moto_errors: Vec<String> = Vec::new();
    if skip_moto {
        println!("\nBENCH_SKIP_MOTO is set: parts (b) and (c) skipped");
    } else {
        let sdk = AwsSettings::emulator(&moto).sdk_config().await;

        // (b) the orchestrator on SQS + DynamoDB on moto.
        match MotoResources::create(&sdk, "bench").await {
            Ok(resources) => {
                let result = bench_server(
                    format!(
                        "(b) moto at {moto}: DynamoDB table {} + SQS queues (with DLQs)",
                        resources.table
                    ),
                    &client,
                    &bin,
                    &resources.env(&moto),
                    &on_moto,
                    level_cap,
                    Some(&resources),
                )
                .await;
                resources.delete().await;
                match result {
                    Ok(part) => part_b = Some(part),
                    Err(e) => moto_errors.push(format!("part (b): {e}")),
                }
            }
            Err(e) => moto_errors.push(format!("part (b): {e}")),
        }

        // (c) the ceiling, on fresh resources of its own.
        println!(
            "\n(c) moto ceiling: SDK calls straight to moto, no orchestrator; {} submits (PutItem + SendMessage), then {} consistent GetItem, per level",
            on_moto.submits, on_moto.statuses
        );
        match MotoResources::create(&sdk, "ceiling").await {
            Ok(resources) => {
                let result = bench_ceiling(&resources, &on_moto, level_cap).await;
                resources.delete().await;
                match result {
                    Ok(levels) => part_c = Some(levels),
                    Err(e) => moto_errors.push(format!("part (c): {e}")),
                }
            }
            Err(e) => moto_errors.push(format!("part (c): {e}")),
        }
    }

    // Summary.
    println!("\n=== orchestrator submit/status benchmark ===");
    println!(
        "submits: POST {SUBMIT_PATH} (202 expected); status: GET /api/v1/jobs/{{id}} round-robin over the submitted ids (200 expected)"
    );
    println!(
        "srv CPU: orchestrator user+system CPU over the level, % of one core; queued: GPU queue depth before the level"
    );
    print_server_part(&part_a);
    if let Some(part) = &part_b {
        print_server_part(part);
    }
    if let Some(levels) = &part_c {
        println!(
            "\n(c) moto ceiling at {moto}: put+send = conditional PutItem + SendMessage, get = consistent GetItem"
        );
        print_table(levels);
    }
    if let (Some(b), Some(c)) = (&part_b, &part_c) {
        print_comparison(&b.levels, c);
    }
    for e in &moto_errors {
        println!("\nFAILED {e}");
    }

    let errors: usize = part_a
        .levels
        .iter()
        .chain(part_b.iter().flat_map(|p| &p.levels))
        .chain(part_c.iter().flatten())
        .map(|l| l.errors)
        .sum();
    if errors > 0 || !moto_errors.is_empty() {
        return Err(format!(
            "{errors} request(s) failed; {} part(s) failed",
            moto_errors.len()
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
        eprintln!("usage: submit_bench <path to orchestrator binary>  (or set ORCHESTRATOR_BIN)");
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
            eprintln!("submit_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
