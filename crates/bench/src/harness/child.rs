//! The service under test: its release binary as a child process on a free
//! loopback port, with a cleared environment (no variable of the caller's
//! and no `.env` can switch its backends), in a temp dir that also holds its
//! log. Dropping it kills the child, then removes the dir — on every exit
//! path, Ctrl-C included (the run future is dropped).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::Client;

use super::{
    BoxError,
    jobs::IMAGE_ORIGIN,
    sampling,
    stats::{mib, ms},
};

const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_FILE: &str = "service.log";

/// Which service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Orchestrator,
    Canvas,
}

impl Binary {
    fn file_name(self) -> &'static str {
        match self {
            Self::Orchestrator => "orchestrator",
            Self::Canvas => "canvas-service",
        }
    }

    /// The variable that names the binary; unset, it is taken from next to
    /// the bench's own binary (the same `target/release`).
    fn variable(self) -> &'static str {
        match self {
            Self::Orchestrator => "ORCHESTRATOR_BIN",
            Self::Canvas => "CANVAS_BIN",
        }
    }

    pub fn path(self) -> Result<PathBuf, BoxError> {
        let path = match std::env::var_os(self.variable()) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => std::env::current_exe()?
                .parent()
                .ok_or("the bench binary has no directory")?
                .join(self.file_name()),
        };
        if !path.is_file() {
            return Err(format!(
                "no {} binary at {} (build it with `cargo build --release -p {}`, or set {})",
                self.file_name(),
                path.display(),
                self.file_name(),
                self.variable()
            )
            .into());
        }
        Ok(path)
    }

    /// What every run gives the service: loopback, quiet logs, and the
    /// limits a benchmark — the one client they exist to stop — would hit
    /// turned off. `extra` is applied after, and wins.
    fn defaults(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Orchestrator => &[
                ("IMAGE_URL_ORIGINS", IMAGE_ORIGIN),
                ("RATE_LIMIT_JOBS_PER_MINUTE", "0"),
                ("DAILY_JOB_QUOTA", "0"),
                ("MAX_GPU_BACKLOG", "0"),
                ("MAX_CPU_BACKLOG", "0"),
            ],
            Self::Canvas => &[
                ("RATE_LIMIT_UPLOADS_PER_MINUTE", "0"),
                ("RATE_LIMIT_SESSIONS_PER_MINUTE", "0"),
            ],
        }
    }
}

pub struct Service {
    binary: Binary,
    child: Child,
    base: String,
    dir: tempfile::TempDir,
    pub boot: Duration,
    pub boot_mem: sampling::Mem,
}

impl Service {
    /// Starts the service with `extra` on top of its defaults and waits
    /// until `GET /health` answers 200.
    pub async fn start(
        binary: Binary,
        extra: &[(String, String)],
        client: &Client,
    ) -> Result<Self, BoxError> {
        let bin = binary.path()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("bench-{}-", binary.file_name()))
            .tempdir()?;
        let log = std::fs::File::create(dir.path().join(LOG_FILE))?;
        let port = testkit::free_port();
        let mut command = Command::new(&bin);
        command
            .current_dir(dir.path())
            .env_clear()
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("DATA_DIR", dir.path())
            .env("RUST_LOG", "warn")
            .env("LOG_FORMAT", "json")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            // The services log to stdout; start-up errors go to stderr.
            .stdout(log.try_clone()?)
            .stderr(log);
        for (name, value) in binary.defaults() {
            command.env(name, value);
        }
        if binary == Binary::Canvas {
            // With S3, uploads wait here; inside the run's dir, not /tmp.
            command.env("SPOOL_DIR", dir.path().join("spool"));
        }
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut service = Self {
            binary,
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            boot: Duration::ZERO,
            boot_mem: sampling::Mem::default(),
        };
        service.boot = service.wait_healthy(client).await?;
        service.boot_mem = sampling::mem(service.pid()).unwrap_or_default();
        println!(
            "{} pid {} at {} (healthy after {:.0} ms, RSS {:.1} MiB)",
            binary.file_name(),
            service.pid(),
            service.base,
            ms(service.boot),
            mib(service.boot_mem.rss_kib)
        );
        Ok(service)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn mem(&self) -> sampling::Mem {
        sampling::mem(self.pid()).unwrap_or_default()
    }

    /// An error (with the end of its log) if the service has exited.
    pub fn check_running(&mut self) -> Result<(), BoxError> {
        match self.child.try_wait()? {
            Some(status) => Err(format!(
                "{} exited: {status}; its log ends:\n{}",
                self.binary.file_name(),
                self.log_tail(20)
            )
            .into()),
            None => Ok(()),
        }
    }

    async fn wait_healthy(&mut self, client: &Client) -> Result<Duration, BoxError> {
        let started = Instant::now();
        while started.elapsed() < HEALTH_TIMEOUT {
            self.check_running()?;
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
        Err(format!(
            "{} did not answer /health within {HEALTH_TIMEOUT:?}; its log ends:\n{}",
            self.binary.file_name(),
            self.log_tail(20)
        )
        .into())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The service's warnings and errors (it logs JSON at `warn`), grouped
    /// by level and message, most frequent first.
    pub fn log_summary(&self) -> Vec<(usize, String)> {
        let mut counts: Vec<(usize, String)> = Vec::new();
        for line in self.log().lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let key = format!(
                "{} {}",
                event["level"].as_str().unwrap_or("?"),
                super::stats::truncate(event["message"].as_str().unwrap_or(line), 120)
            );
            match counts.iter_mut().find(|(_, k)| *k == key) {
                Some((n, _)) => *n += 1,
                None => counts.push((1, key)),
            }
        }
        counts.sort_by_key(|c| std::cmp::Reverse(c.0));
        counts
    }

    /// Prints [`log_summary`](Self::log_summary), a line per message.
    pub fn print_log_summary(&self) {
        let summary = self.log_summary();
        if summary.is_empty() {
            println!("{} logged no warning or error", self.binary.file_name());
            return;
        }
        println!(
            "{} warnings and errors, by message:",
            self.binary.file_name()
        );
        for (n, message) in summary.iter().take(12) {
            println!("  {n:>6} × {message}");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if super::knobs::flag("BENCH_KEEP_LOGS") {
            let kept = self.dir.path().with_extension("log");
            if std::fs::copy(self.dir.path().join(LOG_FILE), &kept).is_ok() {
                println!("{} log kept at {}", self.binary.file_name(), kept.display());
            }
        }
    }
}
