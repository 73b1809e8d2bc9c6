//! `bench pipeline`: jobs through the whole embedded pipeline — SQLite
//! queue → the orchestrator's in-process worker → a stand-in inference API
//! → task store. Camera-angle jobs are submitted at once over 8
//! connections and timed until the stand-in has finished every one, with
//! `WORKER_CONCURRENCY=1`, then `16`, then 16 with a backend that answers
//! `processing` once first (so each job waits one worker poll interval).
//! Every job is then read back and must be `completed`. Times come from
//! the stand-in, on the bench's clock: the wait in the queue (submit →
//! the backend's POST) and the worker's time (POST → the completing poll).
//!
//! Knobs: `BENCH_JOBS_C1` (300), `BENCH_JOBS_C16` (2000), `BENCH_JOBS_SLOW`
//! (320; 0 skips that run), `BENCH_RUN_SECS` (cap per run, 60).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use super::Verdict;
use crate::harness::{
    BoxError,
    child::{Binary, Service},
    http,
    jobs::CAMERA_ANGLE,
    knobs,
    load::Load,
    report::Table,
    sampling::{self, CpuMeter, CpuUse},
    stand_in::{Counts, StandIn},
    stats::{Latencies, mib, ms, pct, rate},
};

const CLIENTS: usize = 8;
const WARMUP_JOBS: usize = 10;
/// After the backend finished every job: how long the read-back may take.
const CONFIRM_GRACE: Duration = Duration::from_secs(15);

struct RunResult {
    label: &'static str,
    worker_concurrency: usize,
    polls: u32,
    jobs: usize,
    completed: usize,
    errors: usize,
    first_error: Option<String>,
    /// First submit → the last completing poll.
    elapsed: Duration,
    e2e: Latencies,
    wait: Latencies,
    service_time: Latencies,
    cpu: CpuUse,
    peak_kib: u64,
    capped: bool,
    backend: Counts,
}

pub async fn run() -> Result<Verdict, BoxError> {
    let c1 = knobs::number("BENCH_JOBS_C1", 300, 1..=100_000)?;
    let c16 = knobs::number("BENCH_JOBS_C16", 2000, 1..=100_000)?;
    let slow = knobs::number("BENCH_JOBS_SLOW", 320, 0..=100_000)?;
    let cap = knobs::seconds("BENCH_RUN_SECS", 60, 1..=600)?;
    let client = http::client(CLIENTS * 2)?;
    let stand_in = StandIn::start().await?;
    println!("stand-in inference API at {}", stand_in.url);

    let mut runs = Vec::new();
    {
        let mut service = start(&client, &stand_in, 1).await?;
        runs.push(pipeline_run(&client, &mut service, &stand_in, "instant", 1, 0, c1, cap).await?);
    }
    let mut service = start(&client, &stand_in, 16).await?;
    runs.push(pipeline_run(&client, &mut service, &stand_in, "instant", 16, 0, c16, cap).await?);
    if slow > 0 {
        runs.push(
            pipeline_run(
                &client,
                &mut service,
                &stand_in,
                "one-poll",
                16,
                1,
                slow,
                cap,
            )
            .await?,
        );
    }
    drop(service);

    println!("\n=== orchestrator pipeline (embedded: SQLite queue and task table) ===");
    let mut table = Table::new(&[
        "run",
        "worker conc",
        "jobs",
        "completed",
        "errors",
        "time s",
        "jobs/s",
        "e2e p50",
        "e2e p99",
        "wait p50",
        "worker p50",
        "worker p99",
        "service CPU",
        "bench CPU",
        "others CPU",
        "peak RSS",
    ]);
    for r in &runs {
        table.row(vec![
            r.label.to_owned(),
            r.worker_concurrency.to_string(),
            r.jobs.to_string(),
            r.completed.to_string(),
            r.errors.to_string(),
            format!(
                "{:.2}{}",
                r.elapsed.as_secs_f64(),
                if r.capped { " (cap)" } else { "" }
            ),
            format!("{:.1}", rate(r.completed, r.elapsed)),
            format!("{:.0} ms", ms(r.e2e.p(50.0))),
            format!("{:.0} ms", ms(r.e2e.p(99.0))),
            format!("{:.0} ms", ms(r.wait.p(50.0))),
            format!("{:.1} ms", ms(r.service_time.p(50.0))),
            format!("{:.1} ms", ms(r.service_time.p(99.0))),
            pct(r.cpu.service),
            pct(r.cpu.bench),
            pct(r.cpu.others),
            format!("{:.1} MiB", mib(r.peak_kib)),
        ]);
    }
    table.print();
    println!(
        "one-poll: the backend answers `processing` once before `completed`; e2e = submit -> completing poll; wait = submit -> backend POST; worker = backend POST -> completing poll"
    );
    for r in &runs {
        let b = &r.backend;
        println!(
            "  {:<8} c={:<2}: the backend took {} jobs, answered {} status polls, ran at most {} at once ({} still running)",
            r.label, r.worker_concurrency, b.submitted, b.polls, b.max_in_flight, b.in_flight
        );
    }
    println!("busiest service threads over each run (% of one core):");
    for r in &runs {
        let threads: Vec<String> = r
            .cpu
            .busiest
            .iter()
            .map(|(n, p)| format!("{n} {p:.0}%"))
            .collect();
        println!(
            "  {:<8} c={:<2} polls={} {}",
            r.label,
            r.worker_concurrency,
            r.polls,
            threads.join(", ")
        );
    }
    let errors: usize = runs.iter().map(|r| r.errors).sum();
    if errors > 0 || runs.iter().any(|r| r.capped) {
        let first = runs
            .iter()
            .find_map(|r| r.first_error.clone())
            .unwrap_or_default();
        return Err(
            format!("{errors} job error(s) or a run hit its time cap; first: {first}").into(),
        );
    }
    Ok(Verdict::Done)
}

/// An orchestrator whose in-process worker has `slots` slots, warmed up.
async fn start(
    client: &reqwest::Client,
    stand_in: &StandIn,
    slots: usize,
) -> Result<Service, BoxError> {
    let env = [
        ("GPU_BACKEND_URL".to_owned(), stand_in.url.clone()),
        ("WORKER_CONCURRENCY".to_owned(), slots.to_string()),
    ];
    let mut service = Service::start(Binary::Orchestrator, &env, client).await?;
    let warm = pipeline_run(
        client,
        &mut service,
        stand_in,
        "warm-up",
        slots,
        0,
        WARMUP_JOBS,
        Duration::from_secs(30),
    )
    .await?;
    if warm.errors > 0 {
        return Err(format!("warm-up failed: {}", warm.first_error.unwrap_or_default()).into());
    }
    Ok(service)
}

/// Submits `count` jobs over [`CLIENTS`] connections: `(id, submit start)`.
async fn submit_all(
    client: &reqwest::Client,
    base: &str,
    count: usize,
    cap: Duration,
) -> Result<(Vec<(String, Instant)>, Vec<String>), BoxError> {
    let (client, base): (reqwest::Client, Arc<str>) = (client.clone(), base.into());
    let run = Load::new(CLIENTS, count, cap)
        .run(move |_| {
            let (client, base) = (client.clone(), base.clone());
            async move { http::submit(&client, &base, CAMERA_ANGLE).await }
        })
        .await?;
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    for call in run.calls {
        match call.outcome {
            Ok(id) => ids.push((id, call.started)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Ok((ids, errors))
}

/// Reads every job until all are final or `deadline`: id → last answer.
async fn read_back(
    client: &reqwest::Client,
    base: &str,
    ids: Vec<String>,
    deadline: Instant,
) -> Result<HashMap<String, Result<(String, Option<String>), String>>, BoxError> {
    let mut answers = HashMap::new();
    let mut pending = ids;
    while !pending.is_empty() {
        let batch = Arc::new(std::mem::take(&mut pending));
        let (c, b, ids) = (client.clone(), Arc::<str>::from(base), batch.clone());
        let run = Load::new(CLIENTS, batch.len(), Duration::from_secs(60))
            .run(move |i| {
                let (c, b, ids) = (c.clone(), b.clone(), ids.clone());
                async move {
                    (
                        i,
                        http::job_status(&c, &b, &ids[i])
                            .await
                            .map_err(|e| e.to_string()),
                    )
                }
            })
            .await?;
        for call in run.calls {
            let (i, answer) = call.outcome;
            let is_final = matches!(&answer, Ok((s, _)) if ["completed", "failed", "cancelled"].contains(&s.as_str()));
            if !is_final {
                pending.push(batch[i].clone());
            }
            answers.insert(batch[i].clone(), answer);
        }
        if Instant::now() >= deadline {
            break;
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(answers)
}

#[allow(clippy::too_many_arguments)]
async fn pipeline_run(
    client: &reqwest::Client,
    service: &mut Service,
    stand_in: &StandIn,
    label: &'static str,
    worker_concurrency: usize,
    polls: u32,
    count: usize,
    cap: Duration,
) -> Result<RunResult, BoxError> {
    stand_in.reset(polls);
    sampling::reset_peak(service.pid());
    let meter = CpuMeter::start(service.pid());
    let started = Instant::now();
    let deadline = started + cap;
    let (submitted, submit_errors) = submit_all(client, service.base(), count, cap).await?;
    while stand_in.counts().done < submitted.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let capped = stand_in.counts().done < submitted.len();
    let cpu = meter.read();
    service.check_running()?;
    let ids = submitted.iter().map(|(id, _)| id.clone()).collect();
    let answers = read_back(client, service.base(), ids, Instant::now() + CONFIRM_GRACE).await?;

    let (mut e2e, mut wait, mut service_time) = (Vec::new(), Vec::new(), Vec::new());
    let mut first_error = submit_errors.first().cloned();
    let mut errors = submit_errors.len();
    let mut last_done = started;
    for (id, submit_started) in &submitted {
        let times = match answers.get(id) {
            Some(Ok((status, Some(url)))) if status == "completed" => stand_in.times_of(url),
            other => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("job {id}: {other:?}"));
                continue;
            }
        };
        let Some((posted, Some(done))) = times else {
            errors += 1;
            first_error
                .get_or_insert_with(|| format!("job {id}: completed, but not by the stand-in"));
            continue;
        };
        e2e.push(done.saturating_duration_since(*submit_started));
        wait.push(posted.saturating_duration_since(*submit_started));
        service_time.push(done.saturating_duration_since(posted));
        last_done = last_done.max(done);
    }
    let result = RunResult {
        label,
        worker_concurrency,
        polls,
        jobs: count,
        completed: e2e.len(),
        errors,
        first_error,
        elapsed: last_done.saturating_duration_since(started),
        e2e: Latencies::new(e2e),
        wait: Latencies::new(wait),
        service_time: Latencies::new(service_time),
        cpu,
        peak_kib: service.mem().hwm_kib,
        capped,
        backend: stand_in.counts(),
    };
    println!(
        "  {:<8} worker c={:<2} {:>5}/{:<5} completed in {:>6.2} s  {:>7.1} jobs/s  e2e p50 {:>7.0} ms  worker p50 {:>6.1} ms  errors {}",
        label,
        worker_concurrency,
        result.completed,
        count,
        result.elapsed.as_secs_f64(),
        rate(result.completed, result.elapsed),
        ms(result.e2e.p(50.0)),
        ms(result.service_time.p(50.0)),
        errors
    );
    Ok(result)
}
