//! `bench events`: many open job event streams (`GET
//! /api/v1/jobs/{id}/events`, SSE) on one embedded orchestrator with no
//! worker, so its jobs stay `pending`. Streams are opened in cumulative
//! stages (`BENCH_SSE_STREAMS`, default 1000 then 5000) spread over
//! `BENCH_SSE_JOBS` jobs, and each stage is held `BENCH_HOLD_SECS` while the
//! service's RSS and CPU are sampled: the cost per open stream. Then every
//! job is cancelled, and each stream's `cancelled` event is timed from the
//! moment its job's cancel was answered: the time to deliver a status
//! change, which the shared watcher bounds by `EVENTS_POLL_MILLIS`. The
//! cancels are spread over two watcher intervals, so the times cover every
//! phase of its tick.
//!
//! Every stream takes a socket on each side: raise `ulimit -n` first
//! (scripts/bench-pipeline.sh does).

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use reqwest::header;
use tokio::{sync::Semaphore, task::JoinSet};

use super::Verdict;
use crate::{
    cells,
    harness::{
        BoxError,
        child::{Binary, Service},
        http,
        jobs::CAMERA_ANGLE,
        knobs,
        load::Load,
        report::Table,
        sampling::{CpuMeter, PeakSampler},
        stats::{Latencies, mib, ms, pct},
    },
};

/// Streams being opened at once (each until its first event).
const OPENING: usize = 64;
const FIRST_EVENT_TIMEOUT: Duration = Duration::from_secs(20);
const STAGE_CAP: Duration = Duration::from_secs(90);
const DELIVERY_CAP: Duration = Duration::from_secs(30);

/// What the streams saw, shared by their tasks.
#[derive(Default)]
struct Streams {
    first_events: AtomicUsize,
    failed: AtomicUsize,
    /// Ended before their job was cancelled.
    closed_early: AtomicUsize,
    /// `(job index, when the `cancelled` event arrived)`.
    cancelled: Mutex<Vec<(usize, Instant)>>,
    first_error: Mutex<Option<String>>,
}

impl Streams {
    fn fail(&self, counter: &AtomicUsize, error: String) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(error);
    }
}

struct Stage {
    streams: usize,
    first_events: usize,
    open_time: Duration,
    rss_kib: u64,
    peak_kib: u64,
    cpu: Option<f64>,
}

pub async fn run() -> Result<Verdict, BoxError> {
    let jobs = knobs::number("BENCH_SSE_JOBS", 200, 1..=10_000)?;
    let stages = knobs::increasing_counts("BENCH_SSE_STREAMS", "1000,5000", 1..=20_000)?;
    let hold = knobs::seconds("BENCH_HOLD_SECS", 10, 1..=300)?;
    let poll_ms: u64 = knobs::number("EVENTS_POLL_MILLIS", 1000, 10..=60_000)?;
    if stages.is_empty() {
        println!("BENCH_SSE_STREAMS is empty: no event streams");
        return Ok(Verdict::Done);
    }
    let client = http::client(8)?;
    let env = [("EVENTS_POLL_MILLIS".to_owned(), poll_ms.to_string())];
    let mut service = Service::start(Binary::Orchestrator, &env, &client).await?;
    let base: Arc<str> = service.base().into();
    let submits = {
        let (client, base) = (client.clone(), base.clone());
        Load::new(8, jobs, Duration::from_secs(60))
            .run(move |_| {
                let (client, base) = (client.clone(), base.clone());
                async move { http::submit(&client, &base, CAMERA_ANGLE).await }
            })
            .await?
    };
    let ids: Arc<Vec<String>> = Arc::new(
        submits
            .calls
            .into_iter()
            .filter_map(|c| c.outcome.ok())
            .collect(),
    );
    if ids.len() < jobs {
        return Err(format!("only {} of {jobs} jobs were accepted", ids.len()).into());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = hold_and_sample(&service, hold).await;
    println!(
        "{jobs} pending jobs; idle service: RSS {:.1} MiB, CPU {}",
        mib(baseline.rss_kib),
        pct(baseline.cpu)
    );

    // Streams, each on its own connection.
    let sse = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .tcp_nodelay(true)
        .build()?;
    let seen = Arc::new(Streams::default());
    let opening = Arc::new(Semaphore::new(OPENING));
    let mut tasks = JoinSet::new();
    let mut results = Vec::new();
    let mut opened = 0;
    for &target in &stages {
        let started = Instant::now();
        while opened < target && started.elapsed() < STAGE_CAP {
            let permit = opening.clone().acquire_owned().await?;
            let url = format!("{base}/api/v1/jobs/{}/events", ids[opened % ids.len()]);
            tasks.spawn(follow(
                sse.clone(),
                url,
                opened % ids.len(),
                seen.clone(),
                permit,
            ));
            opened += 1;
        }
        while seen.first_events.load(Ordering::SeqCst) + seen.failed.load(Ordering::SeqCst) < opened
            && started.elapsed() < STAGE_CAP
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let open_time = started.elapsed();
        service.check_running()?;
        let mut stage = hold_and_sample(&service, hold).await;
        stage.streams = target;
        stage.first_events = seen.first_events.load(Ordering::SeqCst);
        stage.open_time = open_time;
        println!(
            "  {target:>5} streams: {} had their first event in {:.2} s; RSS {:.1} MiB, CPU {} over {} s",
            stage.first_events,
            open_time.as_secs_f64(),
            mib(stage.rss_kib),
            pct(stage.cpu),
            hold.as_secs()
        );
        let short = stage.first_events < target || seen.closed_early.load(Ordering::SeqCst) > 0;
        results.push(stage);
        if short {
            println!("  (stopping: not every stream opened and stayed open)");
            break;
        }
    }

    // The status change: cancel the jobs one by one, spread over two
    // watcher intervals so the cancels land at every phase of its tick,
    // and time each stream's event from its job's cancel.
    let meter = CpuMeter::start(service.pid());
    let spread = Duration::from_millis(2 * poll_ms) / u32::try_from(ids.len()).unwrap_or(u32::MAX);
    let mut cancelled_at = vec![None; ids.len()];
    let cancels_started = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        tokio::time::sleep_until(
            (cancels_started + spread * u32::try_from(i).unwrap_or(u32::MAX)).into(),
        )
        .await;
        if http::cancel(&client, &base, id).await.is_ok() {
            cancelled_at[i] = Some(Instant::now());
        }
    }
    let open = seen.first_events.load(Ordering::SeqCst) - seen.closed_early.load(Ordering::SeqCst);
    let started = Instant::now();
    while seen
        .cancelled
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len()
        < open
        && started.elapsed() < DELIVERY_CAP
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = meter.read();
    let delivery: Latencies = seen
        .cancelled
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(|(job, at)| Some(at.saturating_duration_since(cancelled_at[*job]?)))
        .collect();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();

    println!("\n=== orchestrator job event streams (embedded, EVENTS_POLL_MILLIS={poll_ms}) ===");
    let mut table = Table::new(&[
        "streams",
        "first event",
        "open s",
        "RSS MiB",
        "peak MiB",
        "KiB per stream",
        "CPU while held",
    ]);
    table.row(cells![
        0,
        "-",
        "-",
        format!("{:.1}", mib(baseline.rss_kib)),
        format!("{:.1}", mib(baseline.peak_kib)),
        "-",
        pct(baseline.cpu)
    ]);
    for s in &results {
        let per = (s.rss_kib as f64 - baseline.rss_kib as f64) / s.first_events.max(1) as f64;
        table.row(cells![
            s.streams,
            s.first_events,
            format!("{:.2}", s.open_time.as_secs_f64()),
            format!("{:.1}", mib(s.rss_kib)),
            format!("{:.1}", mib(s.peak_kib)),
            format!("{per:.0}"),
            pct(s.cpu)
        ]);
    }
    table.print();
    let failed = seen.failed.load(Ordering::SeqCst);
    let closed_early = seen.closed_early.load(Ordering::SeqCst);
    println!(
        "status change (cancel of all {} jobs over {} ms, {} answered 200): {} of {open} open streams got `cancelled`; cancel answered -> event p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; service CPU meanwhile {}",
        ids.len(),
        2 * poll_ms,
        cancelled_at.iter().flatten().count(),
        delivery.len(),
        ms(delivery.p(50.0)),
        ms(delivery.p(99.0)),
        ms(delivery.max()),
        pct(cpu.service)
    );
    println!("streams failed to open: {failed}; ended before the cancel: {closed_early}");
    if let Some(e) = seen
        .first_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        println!("first stream error: {e}");
    }
    if failed + closed_early > 0
        || delivery.len() < open
        || results.last().is_some_and(|s| s.first_events < s.streams)
    {
        return Err("not every stream opened, stayed open and saw the change".into());
    }
    Ok(Verdict::Done)
}

/// Holds `hold` while sampling the service: `(RSS at the end, peak, CPU)`.
async fn hold_and_sample(service: &Service, hold: Duration) -> Stage {
    let meter = CpuMeter::start(service.pid());
    let sampler = PeakSampler::start(service.pid(), Duration::from_millis(250), hold);
    tokio::time::sleep(hold).await;
    let (peak, _) = sampler.stop();
    let rss = service.mem().rss_kib;
    Stage {
        streams: 0,
        first_events: 0,
        open_time: Duration::ZERO,
        rss_kib: rss,
        peak_kib: peak.max(rss),
        cpu: meter.read().service,
    }
}

/// One stream: its first event (then the opening permit goes back), then
/// read on until its job's `cancelled` event ends it.
async fn follow(
    client: reqwest::Client,
    url: String,
    job: usize,
    seen: Arc<Streams>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let opened = tokio::time::timeout(FIRST_EVENT_TIMEOUT, async {
        let response = client
            .get(&url)
            .header(header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| format!("request: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let mut body = response.bytes_stream();
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(
                &chunk.map_err(|e| format!("body: {e}"))?,
            ));
            if text.contains("event: status") {
                return Ok(body);
            }
        }
        Err("closed before its first event".to_owned())
    })
    .await;
    let mut body = match opened {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return seen.fail(&seen.failed, e),
        Err(_) => {
            return seen.fail(
                &seen.failed,
                format!("no first event within {FIRST_EVENT_TIMEOUT:?}"),
            );
        }
    };
    seen.first_events.fetch_add(1, Ordering::SeqCst);
    drop(permit);
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Err(e) => return seen.fail(&seen.closed_early, format!("stream broke: {e}")),
        }
        if text.contains("\"status\":\"cancelled\"") {
            seen.cancelled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((job, Instant::now()));
            return;
        }
        // Keep-alive comments and earlier events: nothing to wait for.
        if let Some(end) = text.rfind("\n\n") {
            text.drain(..end + 2);
        }
    }
    seen.fail(
        &seen.closed_early,
        "stream ended before the cancel".to_owned(),
    );
}
