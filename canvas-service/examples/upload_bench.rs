//! Upload benchmark for canvas-service (a benchmark, not a test).
//!
//! Starts the release binary as a child process on a free loopback port with
//! zero configuration (SQLite + a local directory in a fresh temp dir), then:
//!
//! 1. uploads many small (~16 KiB) PNGs at concurrency 1, 8 and 64 and
//!    reports uploads/s, MiB/s, p50/p99 latency and errors per level;
//! 2. streams one large (default 256 MiB) upload from a generated body while
//!    sampling the server's `VmRSS`/`VmHWM` every ~20 ms, and reports idle
//!    and peak RSS against the 64 MiB goal.
//!
//! ```text
//! cargo build --release -p canvas-service --bins --examples
//! target/release/examples/upload_bench target/release/canvas-service
//! ```
//!
//! The binary comes from the first argument or `CANVAS_BIN`. Optional knobs:
//! `BENCH_SMALL_UPLOADS` (uploads per level, default 5000),
//! `BENCH_LEVEL_SECS` (time cap per level, default 20),
//! `BENCH_BIG_MIB` (size of the large upload, default 256).
//! Only 127.0.0.1 is contacted; the child is killed and the temp dir removed
//! on every exit path (error, panic, Ctrl-C).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use reqwest::{
    Body, Client,
    multipart::{Form, Part},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MIB: f64 = 1024.0 * 1024.0;
const LEVELS: [usize; 3] = [1, 8, 64];
const WARMUP_UPLOADS: usize = 20;
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const BIG_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
const RSS_GOAL_KIB: u64 = 64 * 1024;
const BIG_CHUNK: usize = 256 * 1024;

// ---------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------

/// The running service and its data directory. Dropping it kills the child
/// first, then (as the fields drop) removes the directory.
struct Server {
    child: Child,
    base: String,
    data_dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: &Path) -> Result<Self, BoxError> {
        let data_dir = tempfile::Builder::new().prefix("canvas-bench-").tempdir()?;
        let port = free_port()?;
        let child = Command::new(bin)
            // No `.env` from the caller's directory may switch the backends.
            .current_dir(data_dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("S3_BUCKET")
            .env_remove("S3_BUCKET_NAME")
            .env_remove("AWS_S3_BUCKET")
            .env_remove("PUBLIC_BASE_URL")
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("DATA_DIR", data_dir.path())
            .env("RUST_LOG", "warn")
            // A benchmark is the one client a rate limit exists to stop.
            .env("RATE_LIMIT_UPLOADS_PER_MINUTE", "0")
            .env("RATE_LIMIT_SESSIONS_PER_MINUTE", "0")
            .env("MAX_UPLOAD_BYTES", (300u64 * 1024 * 1024).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
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
                return Err(format!("canvas-service exited during start-up: {status}").into());
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

/// Resets a process's `VmHWM` to its current RSS (Linux >= 4.0), so that a
/// later peak belongs to what happened after the reset.
fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------
// A small, fully valid PNG
// ---------------------------------------------------------------------------

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

fn ihdr(width: u32, height: u32) -> [u8; 13] {
    let mut data = [0u8; 13];
    data[..4].copy_from_slice(&width.to_be_bytes());
    data[4..8].copy_from_slice(&height.to_be_bytes());
    data[8] = 8; // bit depth
    data[9] = 6; // RGBA
    // compression, filter and interlace methods: 0
    data
}

/// A `side`×`side` RGBA PNG whose pixel data is stored uncompressed (zlib
/// "stored" blocks), so it is about `side² × 4` bytes and decodes anywhere.
fn small_png(side: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..side {
        raw.push(0); // filter: none
        for x in 0..side {
            raw.extend_from_slice(&[(x * 4) as u8, (y * 4) as u8, ((x ^ y) * 4) as u8, 255]);
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let mut blocks = raw.chunks(65_535).peekable();
    while let Some(block) = blocks.next() {
        zlib.push(u8::from(blocks.peek().is_none())); // BFINAL, BTYPE=00
        let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut png = PNG_SIGNATURE.to_vec();
    png_chunk(&mut png, b"IHDR", &ihdr(side, side));
    png_chunk(&mut png, b"IDAT", &zlib);
    png_chunk(&mut png, b"IEND", &[]);
    png
}

/// `total` bytes starting with a PNG signature and IHDR, then filler, as a
/// stream of chunks that share one buffer: the client never holds the body.
fn big_png_stream(
    total: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let mut head = PNG_SIGNATURE.to_vec();
    png_chunk(&mut head, b"IHDR", &ihdr(8192, 8192));
    let head = Bytes::from(head);
    let filler = Bytes::from(vec![0xA5u8; BIG_CHUNK]);
    futures_util::stream::unfold(0u64, move |sent| {
        let chunk = if sent >= total {
            None
        } else if sent == 0 {
            Some(head.slice(..head.len().min(usize::try_from(total).unwrap_or(usize::MAX))))
        } else {
            let left = usize::try_from(total - sent).unwrap_or(usize::MAX);
            Some(filler.slice(..left.min(BIG_CHUNK)))
        };
        std::future::ready(chunk.map(|c| {
            let next = sent + c.len() as u64;
            (Ok(c), next)
        }))
    })
}

// ---------------------------------------------------------------------------
// HTTP calls
// ---------------------------------------------------------------------------

async fn new_session(client: &Client, base: &str) -> Result<String, BoxError> {
    let response = client
        .post(format!("{base}/session"))
        .send()
        .await?
        .error_for_status()?;
    let body: serde_json::Value = response.json().await?;
    body["session_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no session_id in {body}").into())
}

/// Sends a multipart upload; returns the stored key on 200.
async fn upload(
    client: &Client,
    base: &str,
    session: &str,
    part: Part,
    timeout: Duration,
) -> Result<String, String> {
    let form = Form::new()
        .text("session_id", session.to_owned())
        .part("file", part);
    let response = client
        .post(format!("{base}/upload"))
        .multipart(form)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("body: {e}"))?;
    if !status.is_success() {
        return Err(format!("{status}: {}", truncate(&text, 200)));
    }
    let body: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("bad JSON ({e}): {text}"))?;
    body["key"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no key in {body}"))
}

fn png_part(png: &Bytes) -> Part {
    Part::stream_with_length(Body::from(png.clone()), png.len() as u64)
        .file_name("bench.png")
        .mime_str("image/png")
        .expect("static MIME type")
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---------------------------------------------------------------------------
// Phase 1: many small uploads
// ---------------------------------------------------------------------------

struct LevelResult {
    concurrency: usize,
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    capped: bool,
    file_bytes: usize,
}

impl LevelResult {
    fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn mib_per_sec(&self) -> f64 {
        self.ok as f64 * self.file_bytes as f64 / MIB / self.elapsed.as_secs_f64()
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

async fn run_level(
    client: &Client,
    base: &str,
    png: &Bytes,
    concurrency: usize,
    count: usize,
    time_cap: Duration,
) -> Result<LevelResult, BoxError> {
    // One session per level, made before the clock starts.
    let session: Arc<str> = new_session(client, base).await?.into();
    let issued = Arc::new(AtomicUsize::new(0));
    let capped = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + time_cap;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, base, png) = (client.clone(), base.to_owned(), png.clone());
        let (session, issued, capped) = (session.clone(), issued.clone(), capped.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            loop {
                if Instant::now() >= deadline {
                    capped.store(true, Ordering::Relaxed);
                    break;
                }
                if issued.fetch_add(1, Ordering::Relaxed) >= count {
                    break;
                }
                let t = Instant::now();
                let result = upload(
                    &client,
                    &base,
                    &session,
                    png_part(&png),
                    SMALL_REQUEST_TIMEOUT,
                )
                .await;
                match result {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(e) => errors.push(e),
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    let mut errors = Vec::new();
    for worker in workers {
        let (l, e) = worker.await?;
        latencies.extend(l);
        errors.extend(e);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(LevelResult {
        concurrency,
        ok: latencies.len(),
        errors: errors.len(),
        first_error: errors.into_iter().next(),
        elapsed,
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
        capped: capped.load(Ordering::Relaxed),
        file_bytes: png.len(),
    })
}

// ---------------------------------------------------------------------------
// Phase 2: one large streamed upload under RSS sampling
// ---------------------------------------------------------------------------

struct BigResult {
    bytes: u64,
    outcome: Result<String, String>,
    elapsed: Duration,
    idle: Mem,
    hwm_before_reset: u64,
    hwm_was_reset: bool,
    peak_hwm_kib: u64,
    peak_sampled_rss_kib: u64,
    samples: usize,
    after: Mem,
    stored_len: Option<u64>,
}

async fn run_big(client: &Client, server: &Server, total: u64) -> Result<BigResult, BoxError> {
    let pid = server.pid();
    let session = new_session(client, &server.base).await?;
    // Let phase 1's work settle before calling the process idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = read_mem(pid).ok_or("cannot read /proc/<pid>/status")?;
    let hwm_was_reset = reset_hwm(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        // A plain thread, so that sampling keeps its pace however busy the
        // client's runtime is. Bounded by the stop flag and the timeout.
        std::thread::spawn(move || {
            let started = Instant::now();
            let (mut peak_rss, mut samples) = (0u64, 0usize);
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < BIG_REQUEST_TIMEOUT + Duration::from_secs(5)
            {
                if let Some(m) = read_mem(pid) {
                    peak_rss = peak_rss.max(m.rss_kib);
                    samples += 1;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            (peak_rss, samples)
        })
    };

    let part = Part::stream_with_length(Body::wrap_stream(big_png_stream(total)), total)
        .file_name("big.png")
        .mime_str("image/png")?;
    let started = Instant::now();
    let outcome = upload(client, &server.base, &session, part, BIG_REQUEST_TIMEOUT).await;
    let elapsed = started.elapsed();
    // A last look at the peak after the response, then stop sampling.
    let after = read_mem(pid).unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    let (peak_sampled_rss_kib, samples) = sampler.join().map_err(|_| "sampler panicked")?;

    let stored_len = outcome.as_ref().ok().and_then(|key| {
        std::fs::metadata(server.data_dir.path().join("objects").join(key))
            .ok()
            .map(|m| m.len())
    });
    Ok(BigResult {
        bytes: total,
        outcome,
        elapsed,
        idle,
        hwm_before_reset: idle.hwm_kib,
        hwm_was_reset,
        peak_hwm_kib: after.hwm_kib,
        peak_sampled_rss_kib: peak_sampled_rss_kib.max(after.rss_kib),
        samples,
        after,
        stored_len,
    })
}

// ---------------------------------------------------------------------------
// Driver
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

async fn run(bin: PathBuf) -> Result<(), BoxError> {
    let small_count: usize = env_num("BENCH_SMALL_UPLOADS", 5000)?;
    let level_cap = Duration::from_secs(env_num("BENCH_LEVEL_SECS", 20)?);
    let big_mib: u64 = env_num("BENCH_BIG_MIB", 256)?;
    if small_count == 0 || big_mib == 0 || big_mib > 300 {
        return Err("BENCH_SMALL_UPLOADS must be > 0 and BENCH_BIG_MIB within 1..=300".into());
    }

    let client = Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(LEVELS[LEVELS.len() - 1])
        .tcp_nodelay(true)
        .build()?;

    let mut server = Server::start(&bin)?;
    let boot = server.wait_healthy(&client).await?;
    let boot_mem = read_mem(server.pid()).unwrap_or_default();
    println!(
        "canvas-service pid {} at {} (healthy after {:.0} ms, RSS {:.1} MiB); data in {}",
        server.pid(),
        server.base,
        ms(boot),
        mib(boot_mem.rss_kib),
        server.data_dir.path().display()
    );

    // Phase 1.
    let png = Bytes::from(small_png(64));
    println!(
        "\nphase 1: {} uploads of a {} byte PNG per level (cap {}s per level)",
        small_count,
        png.len(),
        level_cap.as_secs()
    );
    let warm = run_level(
        &client,
        &server.base,
        &png,
        4,
        WARMUP_UPLOADS,
        Duration::from_secs(10),
    )
    .await?;
    if warm.errors > 0 {
        return Err(format!(
            "warm-up uploads failed: {}",
            warm.first_error.unwrap_or_default()
        )
        .into());
    }
    let mut levels = Vec::new();
    for concurrency in LEVELS {
        let r = run_level(
            &client,
            &server.base,
            &png,
            concurrency,
            small_count,
            level_cap,
        )
        .await?;
        println!(
            "  c={:<3} {:>5} ok {:>3} err in {:>6.2}s  {:>7.1} uploads/s {:>6.1} MiB/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms{}",
            r.concurrency,
            r.ok,
            r.errors,
            r.elapsed.as_secs_f64(),
            r.per_sec(),
            r.mib_per_sec(),
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            if r.capped { "  (time cap hit)" } else { "" }
        );
        if let Some(e) = &r.first_error {
            println!("        first error: {e}");
        }
        levels.push(r);
    }
    let after_small = read_mem(server.pid()).unwrap_or_default();

    // Phase 2.
    let total = big_mib * 1024 * 1024;
    println!("\nphase 2: one {big_mib} MiB streamed upload, sampling RSS every {SAMPLE_EVERY:?}");
    let big = run_big(&client, &server, total).await?;
    let own = read_mem(std::process::id()).unwrap_or_default();

    // Summary.
    println!("\n=== canvas-service upload benchmark ===");
    println!(
        "machine: {} logical CPUs; client and server share them",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "small file: {} bytes (64x64 RGBA PNG); one session per level; {} warm-up uploads",
        png.len(),
        WARMUP_UPLOADS
    );
    println!(
        "| {:>4} | {:>6} | {:>6} | {:>8} | {:>9} | {:>7} | {:>9} | {:>9} | {:>9} |",
        "conc", "ok", "errors", "time s", "uploads/s", "MiB/s", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "|------|--------|--------|----------|-----------|---------|-----------|-----------|-----------|"
    );
    for r in &levels {
        println!(
            "| {:>4} | {:>6} | {:>6} | {:>8.2} | {:>9.1} | {:>7.2} | {:>9.2} | {:>9.2} | {:>9.2} |",
            r.concurrency,
            r.ok,
            r.errors,
            r.elapsed.as_secs_f64(),
            r.per_sec(),
            r.mib_per_sec(),
            ms(r.p50),
            ms(r.p99),
            ms(r.max)
        );
    }
    println!(
        "server RSS after phase 1: {:.1} MiB (VmHWM so far {:.1} MiB)",
        mib(after_small.rss_kib),
        mib(after_small.hwm_kib)
    );
    println!();
    let status = match &big.outcome {
        Ok(key) => format!("200, key {key}"),
        Err(e) => format!("FAILED: {e}"),
    };
    let stored = match big.stored_len {
        Some(len) if len == big.bytes => "stored object size matches".to_owned(),
        Some(len) => format!("STORED OBJECT IS {len} BYTES"),
        None => "stored object not found".to_owned(),
    };
    println!("large upload: {} MiB -> {status}; {stored}", big_mib);
    println!("| {:<34} | {:>12} |", "metric", "value");
    println!("|------------------------------------|--------------|");
    let rows: [(&str, String); 9] = [
        ("upload time", format!("{:.2} s", big.elapsed.as_secs_f64())),
        (
            "throughput",
            format!(
                "{:.1} MiB/s",
                big.bytes as f64 / MIB / big.elapsed.as_secs_f64()
            ),
        ),
        (
            "server idle RSS before",
            format!("{:.1} MiB", mib(big.idle.rss_kib)),
        ),
        (
            "server VmHWM before (since start)",
            format!("{:.1} MiB", mib(big.hwm_before_reset)),
        ),
        (
            if big.hwm_was_reset {
                "server peak RSS (VmHWM, reset)"
            } else {
                "server peak RSS (VmHWM, NOT reset)"
            },
            format!("{:.1} MiB", mib(big.peak_hwm_kib)),
        ),
        (
            "server peak RSS (sampled VmRSS)",
            format!("{:.1} MiB", mib(big.peak_sampled_rss_kib)),
        ),
        (
            "server RSS after",
            format!("{:.1} MiB", mib(big.after.rss_kib)),
        ),
        ("RSS samples taken", big.samples.to_string()),
        ("bench client VmHWM", format!("{:.1} MiB", mib(own.hwm_kib))),
    ];
    for (name, value) in rows {
        println!("| {name:<34} | {value:>12} |");
    }
    let peak = big.peak_hwm_kib.max(big.peak_sampled_rss_kib);
    println!(
        "goal: server peak RSS < 64 MiB during the large upload -> {} ({:.1} MiB)",
        if peak < RSS_GOAL_KIB { "MET" } else { "MISSED" },
        mib(peak)
    );

    let small_errors: usize = levels.iter().map(|r| r.errors).sum();
    if small_errors > 0 || big.outcome.is_err() {
        return Err(format!(
            "{small_errors} small upload(s) failed; large upload {}",
            if big.outcome.is_ok() { "ok" } else { "failed" }
        )
        .into());
    }
    drop(server);
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let bin = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("CANVAS_BIN"))
        .map(PathBuf::from);
    let Some(bin) = bin else {
        eprintln!("usage: upload_bench <path to canvas-service binary>  (or set CANVAS_BIN)");
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
            eprintln!("upload_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
