//! The load: `count` calls of one operation by `concurrency` workers, each
//! starting its next call when the last one answered (a closed loop, as
//! browsers behave), stopped early by a time cap. Every call is kept with
//! its start and latency, so a scenario can ask anything of them later:
//! levels summarise them, the soaks reconcile them one by one.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    BoxError,
    sampling::{CpuMeter, CpuUse},
    stats::{Latencies, ms, pct, rate},
};

/// One call: when it started, how long its answer took, what it was.
#[derive(Debug, Clone)]
pub struct Call<O> {
    pub started: Instant,
    pub took: Duration,
    pub outcome: O,
}

impl<O> Call<O> {
    pub fn answered(&self) -> Instant {
        self.started + self.took
    }
}

pub struct Load {
    concurrency: usize,
    count: usize,
    cap: Duration,
    answered: Arc<AtomicUsize>,
    progress_every: Option<Duration>,
}

/// Every call of a run, in no particular order.
pub struct Run<O> {
    pub calls: Vec<Call<O>>,
    pub elapsed: Duration,
    /// The time cap ended the run before `count` calls.
    pub capped: bool,
}

impl Load {
    pub fn new(concurrency: usize, count: usize, cap: Duration) -> Self {
        Self {
            concurrency: concurrency.max(1),
            count,
            cap,
            answered: Arc::default(),
            progress_every: None,
        }
    }

    /// Prints how far the run is every `every` (long runs: the soaks).
    pub fn reporting(mut self, every: Duration) -> Self {
        self.progress_every = Some(every);
        self
    }

    /// Calls answered so far, for a task that acts at a point of the run.
    pub fn answered(&self) -> Arc<AtomicUsize> {
        self.answered.clone()
    }

    /// Runs `op(i)` for `i` in `0..count`.
    pub async fn run<O, F, Fut>(&self, op: F) -> Result<Run<O>, BoxError>
    where
        O: Send + 'static,
        F: Fn(usize) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = O> + Send + 'static,
    {
        self.run_pausing(op, Duration::ZERO, |_: &O| false).await
    }

    /// Like [`run`](Self::run), but a worker whose call failed waits
    /// `pause` before its next one, as a client told "try again shortly"
    /// does — instead of spinning through the rest of the calls while a
    /// service fails fast.
    pub async fn run_backing_off<T, E, F, Fut>(
        &self,
        op: F,
        pause: Duration,
    ) -> Result<Run<Result<T, E>>, BoxError>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: Fn(usize) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.run_pausing(op, pause, |o: &Result<T, E>| o.is_err())
            .await
    }

    async fn run_pausing<O, F, Fut, P>(
        &self,
        op: F,
        pause: Duration,
        failed: P,
    ) -> Result<Run<O>, BoxError>
    where
        O: Send + 'static,
        F: Fn(usize) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = O> + Send + 'static,
        P: Fn(&O) -> bool + Clone + Send + 'static,
    {
        let issued = Arc::new(AtomicUsize::new(0));
        let capped = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let deadline = started + self.cap;
        let mut workers = Vec::with_capacity(self.concurrency);
        for _ in 0..self.concurrency {
            let (op, failed, issued, capped, answered) = (
                op.clone(),
                failed.clone(),
                issued.clone(),
                capped.clone(),
                self.answered.clone(),
            );
            let count = self.count;
            workers.push(tokio::spawn(async move {
                let mut calls = Vec::new();
                loop {
                    if Instant::now() >= deadline {
                        capped.store(true, Ordering::Relaxed);
                        break;
                    }
                    let index = issued.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        break;
                    }
                    let started = Instant::now();
                    let outcome = op(index).await;
                    let wait = failed(&outcome);
                    calls.push(Call {
                        started,
                        took: started.elapsed(),
                        outcome,
                    });
                    answered.fetch_add(1, Ordering::Relaxed);
                    if wait && !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                calls
            }));
        }
        let ticker = self.progress_every.map(|every| {
            let (answered, count) = (self.answered.clone(), self.count);
            tokio::spawn(async move {
                let mut last = 0;
                loop {
                    tokio::time::sleep(every).await;
                    let now = answered.load(Ordering::Relaxed);
                    println!(
                        "  {now:>7} / {count} answered ({:.0}/s lately) at {:.0} s",
                        rate(now - last, every),
                        started.elapsed().as_secs_f64()
                    );
                    last = now;
                }
            })
        });
        let mut calls = Vec::with_capacity(self.count);
        for worker in workers {
            calls.extend(worker.await?);
        }
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        Ok(Run {
            calls,
            elapsed: started.elapsed(),
            capped: capped.load(Ordering::Relaxed),
        })
    }
}

/// A run of calls that succeed or fail, summarised as one table row.
pub struct Level {
    pub label: String,
    pub concurrency: usize,
    pub ok: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latencies: Latencies,
    pub capped: bool,
    pub cpu: CpuUse,
}

impl Level {
    pub fn of<T, E: std::fmt::Display>(
        label: &str,
        concurrency: usize,
        run: &Run<Result<T, E>>,
        cpu: CpuUse,
    ) -> Self {
        let ok: Vec<Duration> = run
            .calls
            .iter()
            .filter(|c| c.outcome.is_ok())
            .map(|c| c.took)
            .collect();
        let first_error = run
            .calls
            .iter()
            .find_map(|c| c.outcome.as_ref().err().map(ToString::to_string));
        let level = Self {
            label: label.to_owned(),
            concurrency,
            ok: ok.len(),
            errors: run.calls.len() - ok.len(),
            first_error,
            elapsed: run.elapsed,
            latencies: Latencies::new(ok),
            capped: run.capped,
            cpu,
        };
        level.print_progress();
        level
    }

    pub fn per_sec(&self) -> f64 {
        rate(self.ok, self.elapsed)
    }

    /// The columns of [`cells`](Self::cells).
    pub const HEADER: [&'static str; 9] = [
        "op",
        "conc",
        "ok",
        "errors",
        "per s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "service CPU",
    ];

    pub fn cells(&self) -> Vec<String> {
        vec![
            self.label.clone(),
            self.concurrency.to_string(),
            self.ok.to_string(),
            self.errors.to_string(),
            format!(
                "{:.1}{}",
                self.per_sec(),
                if self.capped { " (cap)" } else { "" }
            ),
            format!("{:.2}", ms(self.latencies.p(50.0))),
            format!("{:.2}", ms(self.latencies.p(99.0))),
            format!("{:.2}", ms(self.latencies.max())),
            pct(self.cpu.service),
        ]
    }

    fn print_progress(&self) {
        println!(
            "  {:<10} c={:<3} {:>6} ok {:>4} err in {:>6.2}s {:>8.1}/s  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  service CPU {}{}",
            self.label,
            self.concurrency,
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.per_sec(),
            ms(self.latencies.p(50.0)),
            ms(self.latencies.p(99.0)),
            ms(self.latencies.max()),
            pct(self.cpu.service),
            if self.capped { "  (time cap hit)" } else { "" }
        );
        if let Some(e) = &self.first_error {
            println!("             first error: {e}");
        }
    }
}

/// One level: `count` calls of `op` at `concurrency` (cap `cap`), with the
/// service's CPU over it when `service_pid` is given; the level and the
/// values the successful calls returned.
pub async fn level<T, E, F, Fut>(
    label: &str,
    concurrency: usize,
    count: usize,
    cap: Duration,
    service_pid: Option<u32>,
    op: F,
) -> Result<(Level, Vec<T>), BoxError>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    let meter = service_pid.map(CpuMeter::start);
    let run = Load::new(concurrency, count, cap).run(op).await?;
    let cpu = meter.map(|m| m.read()).unwrap_or_default();
    let level = Level::of(label, concurrency, &run, cpu);
    let values = run
        .calls
        .into_iter()
        .filter_map(|c| c.outcome.ok())
        .collect();
    Ok((level, values))
}
