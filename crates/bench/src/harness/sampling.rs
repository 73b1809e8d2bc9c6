//! What the service costs, read from `/proc`: resident memory and its peak
//! (`VmRSS`, `VmHWM`), CPU time of the process, of its threads and of the
//! whole machine (the load generator shares the cores with it).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat` (100 on Linux).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// `VmRSS` and `VmHWM` of a process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn mem(pid: u32) -> Option<Mem> {
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

/// Resets a process's `VmHWM` to its current RSS (Linux >= 4.0), so a
/// later peak belongs to what happened after; false if the kernel refused.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// utime + stime of one `stat` line, in seconds. The command name may hold
/// spaces, so fields are counted after its closing parenthesis.
fn stat_cpu_secs(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of the line are 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SEC)
}

/// User + system CPU time of a process so far, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    stat_cpu_secs(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Busy CPU time of the whole machine so far (all cores), in seconds.
pub fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: f64 = fields
        .get(..8)?
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy / CLOCK_TICKS_PER_SEC)
}

/// CPU use from a starting point, as a percentage of one core: of the
/// service, of the bench itself, and of every other process.
pub struct CpuMeter {
    pid: u32,
    started: Instant,
    service: Option<f64>,
    bench: Option<f64>,
    machine: Option<f64>,
    threads: Vec<(u32, String, f64)>,
}

/// What a [`CpuMeter`] read.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub service: Option<f64>,
    pub bench: Option<f64>,
    pub others: Option<f64>,
    /// The service's busiest threads, `name (% of a core)`.
    pub busiest: Vec<(String, f64)>,
}

impl CpuMeter {
    pub fn start(pid: u32) -> Self {
        Self {
            pid,
            started: Instant::now(),
            service: cpu_secs(pid),
            bench: cpu_secs(std::process::id()),
            machine: machine_busy_secs(),
            threads: thread_cpu(pid),
        }
    }

    pub fn read(&self) -> CpuUse {
        let over = self.started.elapsed().as_secs_f64().max(1e-9);
        let pct = |before: Option<f64>, after: Option<f64>| Some((after? - before?) / over * 100.0);
        let service = pct(self.service, cpu_secs(self.pid));
        let bench = pct(self.bench, cpu_secs(std::process::id()));
        let machine = pct(self.machine, machine_busy_secs());
        let others = machine.and_then(|all| Some((all - service? - bench?).max(0.0)));
        CpuUse {
            service,
            bench,
            others,
            busiest: busiest_threads(&self.threads, &thread_cpu(self.pid), over),
        }
    }
}

/// CPU seconds so far of each thread of a process, `(tid, name, seconds)`,
/// in creation order.
fn thread_cpu(pid: u32) -> Vec<(u32, String, f64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut threads: Vec<(u32, String, f64)> = dir
        .filter_map(|entry| {
            let tid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_owned();
            Some((tid, name, stat_cpu_secs(&stat)?))
        })
        .collect();
    threads.sort_by_key(|t| t.0);
    threads
}

/// The four busiest threads between two readings. SQLite connection threads
/// are numbered in creation order: the first is the write connection (the
/// services open it before the read pool).
fn busiest_threads(
    before: &[(u32, String, f64)],
    after: &[(u32, String, f64)],
    over: f64,
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
            (label, (secs - start) / over * 100.0)
        })
        .collect();
    busy.sort_by(|a, b| b.1.total_cmp(&a.1));
    busy.truncate(4);
    busy
}

/// Samples a process's `VmRSS` on a plain thread (so the pace holds however
/// busy the bench's runtime is) until stopped; bounded by `limit`.
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, usize)>,
}

impl PeakSampler {
    pub fn start(pid: u32, every: Duration, limit: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let (mut peak, mut samples) = (0u64, 0usize);
            while !flag.load(Ordering::Relaxed) && started.elapsed() < limit {
                if let Some(m) = mem(pid) {
                    peak = peak.max(m.rss_kib);
                    samples += 1;
                }
                std::thread::sleep(every);
            }
            (peak, samples)
        });
        Self { stop, thread }
    }

    /// `(peak VmRSS in KiB, samples taken)`.
    pub fn stop(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
