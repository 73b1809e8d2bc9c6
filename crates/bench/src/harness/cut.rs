//! What both soaks share: their knobs, the cut of a live dependency through
//! `testkit::FaultProxy` once a third of the calls have answered, how the
//! service behaved during and after it, and the table of counters whose
//! loss rows must all be 0.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use testkit::FaultProxy;
use tokio::task::JoinHandle;

use super::{
    BoxError,
    http::Failure,
    knobs,
    load::Call,
    report::Table,
    stats::{Latencies, ms},
};

/// How the dependency fails while cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Connections reset, new ones refused (`break_networking`).
    Refuse,
    /// Connections accepted and never answered (`blackhole`).
    Blackhole,
}

/// `SOAK_*`: the same for both soaks, except the count.
#[derive(Debug, Clone)]
pub struct SoakSettings {
    pub count: usize,
    pub concurrency: usize,
    pub cut: Duration,
    pub mode: CutMode,
    pub settle: Duration,
    /// How long a client waits after a failed call before its next one.
    pub backoff: Duration,
}

impl SoakSettings {
    /// `count_variable` (e.g. `SOAK_SUBMITS`) names the count.
    pub fn from_env(count_variable: &str, default_count: usize) -> Result<Self, BoxError> {
        let mode = match knobs::choice("SOAK_MODE", "refuse", &["refuse", "blackhole"])? {
            "blackhole" => CutMode::Blackhole,
            _ => CutMode::Refuse,
        };
        Ok(Self {
            count: knobs::number(count_variable, default_count, 3..=1_000_000)?,
            concurrency: knobs::number("SOAK_CONCURRENCY", 16, 1..=1024)?,
            cut: knobs::seconds("SOAK_CUT_SECS", 20, 0..=600)?,
            mode,
            settle: knobs::seconds("SOAK_SETTLE_SECS", 60, 0..=3600)?,
            backoff: Duration::from_millis(knobs::number("SOAK_BACKOFF_MILLIS", 1000, 0..=60_000)?),
        })
    }

    /// The cut begins when this many calls have answered: a third.
    pub fn cut_after(&self) -> usize {
        self.count / 3
    }

    pub fn describe(&self, calls: &str, part: &str) -> String {
        format!(
            "{} {calls} at concurrency {} (a client waits {} ms after a failure); {part} cut ({}) for {} s after {} answers; {} s settle before the check",
            self.count,
            self.concurrency,
            self.backoff.as_millis(),
            match self.mode {
                CutMode::Refuse => "refused",
                CutMode::Blackhole => "blackholed",
            },
            self.cut.as_secs(),
            self.cut_after(),
            self.settle.as_secs()
        )
    }
}

/// When the dependency was cut and restored.
#[derive(Debug, Clone, Copy)]
pub struct CutWindow {
    pub from: Instant,
    pub to: Instant,
}

/// The cut, run beside the load: waits for `after` answers, cuts `proxy`,
/// restores it `length` later.
pub struct Cut {
    task: JoinHandle<CutWindow>,
    answered: Arc<AtomicUsize>,
    after: usize,
}

impl Cut {
    pub fn schedule(
        proxy: Arc<FaultProxy>,
        answered: Arc<AtomicUsize>,
        settings: &SoakSettings,
    ) -> Self {
        let (after, mode, length) = (settings.cut_after(), settings.mode, settings.cut);
        let counter = answered.clone();
        let task = tokio::spawn(async move {
            while counter.load(Ordering::Relaxed) < after {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let from = Instant::now();
            match mode {
                CutMode::Refuse => proxy.break_networking(),
                CutMode::Blackhole => proxy.blackhole(),
            }
            println!("  cut after {} answers", counter.load(Ordering::Relaxed));
            tokio::time::sleep(length).await;
            proxy.restore_networking();
            let to = Instant::now();
            println!("  restored after {:.1} s", (to - from).as_secs_f64());
            CutWindow { from, to }
        });
        Self {
            task,
            answered,
            after,
        }
    }

    /// After the load: the window, once the restore has happened (`None`
    /// when the load ended before the cut was due).
    pub async fn finish(self) -> Result<Option<CutWindow>, BoxError> {
        if self.answered.load(Ordering::Relaxed) < self.after {
            self.task.abort();
            return Ok(None);
        }
        Ok(Some(self.task.await?))
    }
}

/// How the service answered around the cut.
pub struct Recovery {
    /// Latency of the 503s to calls that started while it was cut.
    pub unavailable_during_cut: Latencies,
    /// Calls started while it was cut, and how many of them succeeded.
    pub started_during_cut: usize,
    pub ok_during_cut: usize,
    /// From the restore to the first success answered after it.
    pub restore_to_first_ok: Option<Duration>,
}

impl Recovery {
    pub fn of<O>(
        calls: &[Call<O>],
        window: &CutWindow,
        ok: impl Fn(&O) -> bool,
        unavailable: impl Fn(&O) -> bool,
    ) -> Self {
        let during: Vec<&Call<O>> = calls
            .iter()
            .filter(|c| c.started >= window.from && c.started < window.to)
            .collect();
        Self {
            unavailable_during_cut: during
                .iter()
                .filter(|c| unavailable(&c.outcome))
                .map(|c| c.took)
                .collect(),
            started_during_cut: during.len(),
            ok_during_cut: during.iter().filter(|c| ok(&c.outcome)).count(),
            restore_to_first_ok: calls
                .iter()
                .filter(|c| ok(&c.outcome) && c.answered() >= window.to)
                .map(|c| c.answered() - window.to)
                .min(),
        }
    }

    /// Its rows of the soak's table.
    pub fn add_to(&self, ledger: &mut Ledger, success: &str) {
        ledger.figure(
            "calls started during the cut",
            self.started_during_cut.to_string(),
        );
        ledger.figure(
            &format!("{success} among them"),
            self.ok_during_cut.to_string(),
        );
        let l = &self.unavailable_during_cut;
        ledger.figure(
            "503 latency during the cut, p50 / p99 / max",
            if l.is_empty() {
                "no 503".to_owned()
            } else {
                format!(
                    "{:.0} / {:.0} / {:.0} ms ({} answers)",
                    ms(l.p(50.0)),
                    ms(l.p(99.0)),
                    ms(l.max()),
                    l.len()
                )
            },
        );
        ledger.figure(
            &format!("seconds from restore to the first {success}"),
            self.restore_to_first_ok.map_or_else(
                || format!("no {success} after the restore"),
                |d| format!("{:.2}", d.as_secs_f64()),
            ),
        );
    }
}

/// The soak's result table: counts, figures, and the loss counters, which
/// must be 0.
#[derive(Default)]
pub struct Ledger {
    rows: Vec<(String, String, Option<usize>)>,
}

impl Ledger {
    pub fn count(&mut self, name: &str, value: usize) {
        self.rows.push((name.to_owned(), value.to_string(), None));
    }

    pub fn figure(&mut self, name: &str, value: String) {
        self.rows.push((name.to_owned(), value, None));
    }

    /// A counter that must be 0.
    pub fn loss(&mut self, name: &str, value: usize) {
        self.rows
            .push((name.to_owned(), value.to_string(), Some(value)));
    }

    /// The sum of the loss counters.
    pub fn losses(&self) -> usize {
        self.rows.iter().filter_map(|r| r.2).sum()
    }

    pub fn print(&self) {
        let mut table = Table::new(&["counter", "value", "goal"]);
        for (name, value, loss) in &self.rows {
            let goal = match loss {
                Some(0) => "0 ✓",
                Some(_) => "0 ✗ LOSS",
                None => "",
            };
            table.row(vec![name.clone(), value.clone(), goal.to_owned()]);
        }
        table.print();
    }
}

/// One row per kind of failure: `non-2xx <code>` (or `no answer`), with
/// the first such answer.
pub fn add_failures_by_code<T>(ledger: &mut Ledger, calls: &[Call<Result<T, Failure>>]) {
    let mut codes: Vec<(String, usize, String)> = Vec::new();
    for failure in calls.iter().filter_map(|c| c.outcome.as_ref().err()) {
        let code = failure.code();
        match codes.iter_mut().find(|(c, _, _)| *c == code) {
            Some((_, n, _)) => *n += 1,
            None => codes.push((code, 1, failure.detail.clone())),
        }
    }
    codes.sort();
    if codes.is_empty() {
        ledger.count("non-2xx", 0);
    }
    for (code, n, example) in codes {
        ledger.figure(
            &format!("non-2xx {code}"),
            format!("{n} (first: {})", super::stats::truncate(&example, 90)),
        );
    }
}
