//! The controller's rules, driven through the public API against a scripted
//! GPU host and scripted GPU work, on Tokio's paused clock: thirty idle
//! minutes pass in milliseconds, and every time asserted is virtual.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use gpu::{
    GpuController, GpuHandle, GpuHost, GpuSettings, GpuWork, HostError, InstanceState,
    InstanceView, NoGpuHost, WorkError, WorkSnapshot,
};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- doubles

#[derive(Debug, Clone, PartialEq)]
enum Call {
    /// A look, with the state it reported.
    Describe(InstanceState),
    Start,
    Stop,
}

struct HostScript {
    state: InstanceState,
    /// Looks that still report `stopping` before the host is `stopped`.
    stopping_looks_left: u32,
    /// How many looks a stop takes to complete.
    stopping_looks: u32,
    /// Starts that still fail with `InsufficientInstanceCapacity`.
    start_failures_left: u32,
    calls: Vec<(Call, Instant)>,
}

/// An EC2 instance in miniature: `start` makes it `pending` (running at
/// the next look), `stop` makes it `stopping` for a scripted number of
/// looks; it records every call with the (virtual) time it was made.
struct ScriptedHost {
    id: Option<String>,
    script: Mutex<HostScript>,
}

impl ScriptedHost {
    fn new(state: InstanceState) -> Arc<Self> {
        Self::with_id(Some("i-0123456789abcdef0"), state)
    }

    fn with_id(id: Option<&str>, state: InstanceState) -> Arc<Self> {
        Arc::new(Self {
            id: id.map(str::to_owned),
            script: Mutex::new(HostScript {
                state,
                stopping_looks_left: 0,
                stopping_looks: 0,
                start_failures_left: 0,
                calls: Vec::new(),
            }),
        })
    }

    fn without_instance() -> Arc<Self> {
        Self::with_id(None, InstanceState::Stopped)
    }

    /// The host is `stopping` and reports so for `looks` more looks.
    fn stopping_for(looks: u32) -> Arc<Self> {
        let host = Self::new(InstanceState::Stopping);
        {
            let mut script = host.script.lock().unwrap();
            script.stopping_looks_left = looks;
            script.stopping_looks = looks;
        }
        host
    }

    fn fail_starts(&self, times: u32) {
        self.script.lock().unwrap().start_failures_left = times;
    }

    /// Someone else (the console, another orchestrator) changed the host.
    fn set_state(&self, state: InstanceState) {
        self.script.lock().unwrap().state = state;
    }

    fn state(&self) -> InstanceState {
        self.script.lock().unwrap().state.clone()
    }

    fn calls(&self) -> Vec<(Call, Instant)> {
        self.script.lock().unwrap().calls.clone()
    }

    fn times_of(&self, wanted: &Call) -> Vec<Instant> {
        self.calls()
            .into_iter()
            .filter(|(call, _)| call == wanted)
            .map(|(_, at)| at)
            .collect()
    }

    fn starts(&self) -> Vec<Instant> {
        self.times_of(&Call::Start)
    }

    fn stops(&self) -> Vec<Instant> {
        self.times_of(&Call::Stop)
    }

    fn looks(&self) -> usize {
        self.calls()
            .iter()
            .filter(|(call, _)| matches!(call, Call::Describe(_)))
            .count()
    }
}

#[async_trait::async_trait]
impl GpuHost for ScriptedHost {
    async fn describe(&self) -> Result<InstanceView, HostError> {
        let mut script = self.script.lock().unwrap();
        match script.state {
            InstanceState::Stopping if script.stopping_looks_left > 0 => {
                script.stopping_looks_left -= 1;
            }
            InstanceState::Stopping => script.state = InstanceState::Stopped,
            InstanceState::Pending => script.state = InstanceState::Running,
            _ => {}
        }
        let state = script.state.clone();
        script
            .calls
            .push((Call::Describe(state.clone()), Instant::now()));
        Ok(InstanceView {
            public_ip: (state == InstanceState::Running).then(|| "203.0.113.7".to_owned()),
            private_ip: Some("10.0.0.7".to_owned()),
            state,
        })
    }

    async fn start(&self) -> Result<(), HostError> {
        let mut script = self.script.lock().unwrap();
        script.calls.push((Call::Start, Instant::now()));
        if script.start_failures_left > 0 {
            script.start_failures_left -= 1;
            return Err(HostError::new(
                "InsufficientInstanceCapacity",
                "We currently do not have sufficient g5.xlarge capacity",
                true,
            ));
        }
        match script.state {
            InstanceState::Stopped => {
                script.state = InstanceState::Pending;
                Ok(())
            }
            InstanceState::Pending | InstanceState::Running => Ok(()),
            ref other => Err(HostError::new(
                "IncorrectInstanceState",
                format!("the instance is {other}"),
                true,
            )),
        }
    }

    async fn stop(&self) -> Result<(), HostError> {
        let mut script = self.script.lock().unwrap();
        script.calls.push((Call::Stop, Instant::now()));
        if matches!(
            script.state,
            InstanceState::Running | InstanceState::Pending
        ) {
            script.state = InstanceState::Stopping;
            script.stopping_looks_left = script.stopping_looks;
        }
        Ok(())
    }

    fn instance_id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// GPU work as the test says it is.
struct ScriptedWork {
    snapshot: Mutex<Result<WorkSnapshot, WorkError>>,
    /// The first read at or after this instant still reports the scripted
    /// snapshot, and every later read reports one job in flight: a job
    /// picked up between two reads.
    busy_after_read_at: Mutex<Option<Instant>>,
    reads: Mutex<Vec<Instant>>,
}

impl ScriptedWork {
    fn idle() -> Arc<Self> {
        Self::with(WorkSnapshot::default())
    }

    fn with(snapshot: WorkSnapshot) -> Arc<Self> {
        Arc::new(Self {
            snapshot: Mutex::new(Ok(snapshot)),
            busy_after_read_at: Mutex::new(None),
            reads: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, snapshot: WorkSnapshot) {
        *self.snapshot.lock().unwrap() = Ok(snapshot);
    }

    fn fail(&self, message: &str) {
        *self.snapshot.lock().unwrap() = Err(WorkError::new("work", message));
    }

    fn reads(&self) -> usize {
        self.reads.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl GpuWork for ScriptedWork {
    async fn snapshot(&self) -> Result<WorkSnapshot, WorkError> {
        let now = Instant::now();
        self.reads.lock().unwrap().push(now);
        let mut flip = self.busy_after_read_at.lock().unwrap();
        if flip.is_some_and(|at| now >= at) {
            *flip = None;
            let current = self.snapshot.lock().unwrap().clone();
            self.set(WorkSnapshot {
                in_flight: 1,
                ..WorkSnapshot::default()
            });
            return current;
        }
        self.snapshot.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------- helpers

fn settings() -> GpuSettings {
    GpuSettings::default()
}

fn spawn(host: &Arc<ScriptedHost>, work: &Arc<ScriptedWork>) -> (GpuHandle, CancellationToken) {
    spawn_with(host, work, settings())
}

fn spawn_with(
    host: &Arc<ScriptedHost>,
    work: &Arc<ScriptedWork>,
    settings: GpuSettings,
) -> (GpuHandle, CancellationToken) {
    let shutdown = CancellationToken::new();
    let handle = GpuController::spawn(host.clone(), work.clone(), settings, shutdown.clone());
    (handle, shutdown)
}

/// Lets virtual time run in 100 ms steps until `done` holds or `limit` has
/// passed; returns how long it took.
async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if done() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= limit {
            return None;
        }
        sleep(Duration::from_millis(100)).await;
    }
}

fn busy(queued: u64, in_flight: u64, processing: u64) -> WorkSnapshot {
    WorkSnapshot {
        queued,
        in_flight,
        processing,
        last_job_update: None,
    }
}

// ---------------------------------------------------------------- starting

#[tokio::test(start_paused = true)]
async fn a_stopped_host_is_started_within_seconds_of_work_arriving() {
    let host = ScriptedHost::new(InstanceState::Stopped);
    let work = ScriptedWork::idle();
    let (gpu, _shutdown) = spawn(&host, &work);

    sleep(5 * SECOND).await;
    assert!(host.starts().is_empty(), "no work, no start");
    assert_eq!(gpu.status().state, "stopped");

    let looks_before = host.looks();
    let arrived_at = Instant::now();
    gpu.work_arrived();
    assert_eq!(
        host.looks(),
        looks_before,
        "work_arrived does no I/O itself"
    );
    assert!(gpu.status().pending_start);

    let took = wait_for(10 * SECOND, || !host.starts().is_empty()).await;
    assert!(
        took.is_some_and(|t| t <= 2 * SECOND),
        "started after {took:?}"
    );
    // It looked again before starting, after the work arrived.
    let calls = host.calls();
    let start_index = calls.iter().position(|(c, _)| *c == Call::Start).unwrap();
    assert!(matches!(
        calls[start_index - 1],
        (Call::Describe(InstanceState::Stopped), at) if at >= arrived_at
    ));

    wait_for(5 * SECOND, || gpu.status().is_running()).await;
    let status = gpu.status();
    assert_eq!(status.state, "running");
    assert_eq!(status.public_ip.as_deref(), Some("203.0.113.7"));
    assert!(!status.pending_start);
    assert_eq!(host.starts().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_host_that_is_stopping_is_started_as_soon_as_it_has_stopped() {
    // The old system's bug: a job submitted while the host was stopping was
    // never started until another job arrived.
    let host = ScriptedHost::stopping_for(3);
    let work = ScriptedWork::idle();
    let (gpu, _shutdown) = spawn(&host, &work);
    gpu.work_arrived();

    let took = wait_for(2 * MINUTE, || !host.starts().is_empty()).await;
    // Fast polling while stopping: well before the 30 s poll interval.
    assert!(
        took.is_some_and(|t| t < 10 * SECOND),
        "started after {took:?}"
    );

    let calls = host.calls();
    let first_stopped = calls
        .iter()
        .position(|(c, _)| *c == Call::Describe(InstanceState::Stopped))
        .unwrap();
    assert_eq!(
        calls[first_stopped + 1].0,
        Call::Start,
        "started at the first look that found it stopped: {calls:?}"
    );
    assert_eq!(calls[first_stopped + 1].1, calls[first_stopped].1);
    assert_eq!(host.starts().len(), 1, "no start tried while stopping");
    wait_for(10 * SECOND, || gpu.status().is_running()).await;
    assert_eq!(gpu.status().state, "running");
}

#[tokio::test(start_paused = true)]
async fn failed_starts_are_retried_with_capped_backoff_and_shown_in_the_status() {
    let host = ScriptedHost::new(InstanceState::Stopped);
    host.fail_starts(6);
    let work = ScriptedWork::idle();
    let (gpu, _shutdown) = spawn(&host, &work);
    gpu.work_arrived();

    wait_for(10 * SECOND, || !host.starts().is_empty()).await;
    let status = gpu.status();
    assert_eq!(status.state, "stopped");
    assert_eq!(status.start_attempts, 1);
    assert!(status.pending_start);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("InsufficientInstanceCapacity")),
        "{:?}",
        status.last_error
    );
    assert!(status.last_error_at.is_some());
    assert_eq!(status.next_start_attempt_in_seconds, Some(5));

    let started = wait_for(10 * MINUTE, || host.state() == InstanceState::Running).await;
    assert!(
        started.is_some(),
        "never started; calls: {:?}",
        host.calls()
    );

    let starts = host.starts();
    assert_eq!(starts.len(), 7, "six failures, then success");
    let gaps: Vec<u64> = starts.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    assert_eq!(
        gaps,
        [5, 10, 20, 40, 60, 60],
        "backoff doubles up to its cap"
    );

    wait_for(5 * SECOND, || gpu.status().is_running()).await;
    let status = gpu.status();
    assert_eq!(status.start_attempts, 0, "reset once the host is up");
    assert!(!status.pending_start);
    assert!(
        status.last_error.is_some(),
        "the last error stays visible with its time"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_start_counts_are_visible_while_backing_off() {
    let host = ScriptedHost::new(InstanceState::Stopped);
    host.fail_starts(u32::MAX);
    let work = ScriptedWork::idle();
    let (gpu, _shutdown) = spawn(&host, &work);
    gpu.work_arrived();

    sleep(3 * MINUTE).await;
    let status = gpu.status();
    // Attempts at about 1, 6, 16, 36, 76, 136 s: six in three minutes.
    assert_eq!(status.start_attempts, 6);
    assert!(status.pending_start);
    assert_eq!(host.starts().len(), 6);
}

#[tokio::test(start_paused = true)]
async fn work_waiting_on_the_queue_starts_a_stopped_host_without_a_submit() {
    // E.g. the host was stopped behind our back, or by another orchestrator
    // in the moment a job was submitted here.
    let host = ScriptedHost::new(InstanceState::Stopped);
    let work = ScriptedWork::with(busy(2, 0, 0));
    let (gpu, _shutdown) = spawn(&host, &work);

    let took = wait_for(5 * SECOND, || !host.starts().is_empty()).await;
    assert!(took.is_some(), "calls: {:?}", host.calls());
    wait_for(5 * SECOND, || gpu.status().is_running()).await;
    assert_eq!(gpu.status().state, "running");
}

#[tokio::test(start_paused = true)]
async fn a_terminated_host_is_never_started() {
    let host = ScriptedHost::new(InstanceState::Terminated);
    let work = ScriptedWork::idle();
    let (gpu, _shutdown) = spawn(&host, &work);
    gpu.work_arrived();
    sleep(MINUTE).await;

    assert!(host.starts().is_empty());
    let status = gpu.status();
    assert_eq!(status.state, "terminated");
    assert!(!status.pending_start);
    assert!(status.last_error.unwrap().contains("terminated"));
    assert!(gpu.start_now().await.is_err());
    assert!(host.starts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_submits_is_not_a_burst_of_looks() {
    let host = ScriptedHost::new(InstanceState::Running);
    let work = ScriptedWork::idle();
    let (gpu, _shutdown) = spawn(&host, &work);
    sleep(SECOND / 2).await;
    let looks_before = host.looks();

    for _ in 0..1000 {
        gpu.work_arrived();
        sleep(Duration::from_millis(1)).await;
    }
    // One second of submits: at most a look per second, plus the first.
    assert!(
        host.looks() - looks_before <= 2,
        "{} looks",
        host.looks() - looks_before
    );
}

// ---------------------------------------------------------------- stopping

#[tokio::test(start_paused = true)]
async fn an_idle_host_is_stopped_after_the_idle_timeout_and_not_before() {
    let host = ScriptedHost::new(InstanceState::Running);
    let work = ScriptedWork::idle();
    let spawned_at = Instant::now();
    let (gpu, _shutdown) = spawn(&host, &work);

    sleep(29 * MINUTE).await;
    assert!(host.stops().is_empty(), "stopped before the idle timeout");
    let status = gpu.status();
    assert_eq!(status.idle_seconds, Some(29 * 60));
    assert_eq!(status.stops_in_seconds, Some(60));

    let stopped = wait_for(2 * MINUTE, || !host.stops().is_empty()).await;
    assert!(stopped.is_some(), "never stopped");
    let stopped_at = host.stops()[0];
    assert!(stopped_at - spawned_at >= 30 * MINUTE);
    assert!(stopped_at - spawned_at < 30 * MINUTE + SECOND);
    assert_eq!(host.stops().len(), 1);

    wait_for(10 * SECOND, || gpu.status().state == "stopped").await;
    let status = gpu.status();
    assert_eq!(status.state, "stopped");
    assert_eq!(status.stops_in_seconds, None);
}

#[tokio::test(start_paused = true)]
async fn a_busy_host_is_never_stopped() {
    // The old alarm looked at visible messages only, and stopped the host
    // under long jobs.
    for (what, snapshot) in [
        ("a message in flight", busy(0, 1, 0)),
        ("a job processing", busy(0, 0, 1)),
        ("a message waiting", busy(1, 0, 0)),
    ] {
        let host = ScriptedHost::new(InstanceState::Running);
        let work = ScriptedWork::with(snapshot);
        let (gpu, shutdown) = spawn(&host, &work);

        sleep(10 * 30 * MINUTE).await;
        assert!(host.stops().is_empty(), "stopped under {what}");
        assert!(work.reads() > 500, "the work was read on every poll");
        let status = gpu.status();
        assert_eq!(status.state, "running");
        assert_eq!(status.stops_in_seconds, None, "{what}");
        assert_eq!(status.idle_seconds, None, "{what}");
        shutdown.cancel();
    }
}

#[tokio::test(start_paused = true)]
async fn the_idle_clock_restarts_when_the_work_ends() {
    let host = ScriptedHost::new(InstanceState::Running);
    let work = ScriptedWork::with(busy(0, 0, 1));
    let (_gpu, _shutdown) = spawn(&host, &work);

    sleep(2 * 30 * MINUTE).await;
    work.set(WorkSnapshot::default());
    let idle_from = Instant::now();

    sleep(29 * MINUTE).await;
    assert!(
        host.stops().is_empty(),
        "stopped before a full idle timeout"
    );
    wait_for(2 * MINUTE, || !host.stops().is_empty()).await;
    let stopped_at = host.stops()[0];
    // Idle from the last poll that saw the job, at most a poll before.
    assert!(stopped_at - idle_from >= 30 * MINUTE - 30 * SECOND);
    assert!(stopped_at - idle_from <= 30 * MINUTE + SECOND);
}

#[tokio::test(start_paused = true)]
async fn a_work_snapshot_error_never_stops_the_host() {
    let host = ScriptedHost::new(InstanceState::Running);
    let work = ScriptedWork::idle();
    work.fail("GetQueueAttributes: connection refused");
    let (gpu, _shutdown) = spawn(&host, &work);

    sleep(10 * 30 * MINUTE).await;
    assert!(host.stops().is_empty(), "stopped without knowing the work");
    let status = gpu.status();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("connection refused")),
        "{:?}",
        status.last_error
    );
    assert_eq!(status.stops_in_seconds, None);
    assert_eq!(status.queued, None);
}

#[tokio::test(start_paused = true)]
async fn the_work_is_read_again_right_before_a_stop() {
    let host = ScriptedHost::new(InstanceState::Running);
    let work = ScriptedWork::idle();
    // A worker picks up a job between the read that finds the host idle
    // past its timeout and the stop.
    *work.busy_after_read_at.lock().unwrap() = Some(Instant::now() + 30 * MINUTE);
    let (gpu, _shutdown) = spawn(&host, &work);

    sleep(3 * 30 * MINUTE).await;
    assert!(
        host.stops().is_empty(),
        "stopped under a job just picked up"
    );
    assert_eq!(gpu.status().in_flight, Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_job_update_by_another_orchestrator_postpones_the_stop() {
    let wall_at_start = SystemTime::now();
    let started = Instant::now();
    let host = ScriptedHost::new(InstanceState::Running);
    let work = ScriptedWork::idle();
    let (_gpu, _shutdown) = spawn(&host, &work);

    sleep(20 * MINUTE).await;
    // Another orchestrator's job finished just now (its `updated_at`).
    work.set(WorkSnapshot {
        last_job_update: Some(wall_at_start + 20 * MINUTE),
        ..WorkSnapshot::default()
    });

    sleep(25 * MINUTE).await;
    assert!(
        host.stops().is_empty(),
        "stopped 30 min after start, ignoring the job update"
    );
    wait_for(10 * MINUTE, || !host.stops().is_empty()).await;
    let stopped_after = host.stops()[0] - started;
    assert!(stopped_after >= 50 * MINUTE - SECOND, "{stopped_after:?}");
    assert!(stopped_after <= 51 * MINUTE, "{stopped_after:?}");
}

// ---------------------------------------------------------------- noticing

#[tokio::test(start_paused = true)]
async fn changes_made_behind_our_back_are_noticed_on_the_next_poll() {
    let host = ScriptedHost::new(InstanceState::Running);
    let work = ScriptedWork::idle();
    let (gpu, _shutdown) = spawn(&host, &work);
    sleep(SECOND).await;
    assert_eq!(gpu.status().state, "running");

    host.set_state(InstanceState::Stopped);
    assert_eq!(gpu.status().state, "running", "status is the cache, no I/O");
    let noticed = wait_for(MINUTE, || gpu.status().state == "stopped").await;
    assert!(noticed.is_some_and(|t| t <= 30 * SECOND), "{noticed:?}");
    let stopped_since = gpu.status().state_since;

    host.set_state(InstanceState::Running);
    let noticed = wait_for(MINUTE, || gpu.status().state == "running").await;
    assert!(noticed.is_some_and(|t| t <= 30 * SECOND), "{noticed:?}");
    assert!(gpu.status().state_since > stopped_since);

    assert!(host.starts().is_empty() && host.stops().is_empty());
}

// ---------------------------------------------------------------- admin

#[tokio::test(start_paused = true)]
async fn start_now_starts_a_stopped_host_before_it_returns() {
    let host = ScriptedHost::new(InstanceState::Stopped);
    let work = ScriptedWork::idle();
    let (gpu, _shutdown) = spawn(&host, &work);
    sleep(SECOND).await;

    let status = gpu.start_now().await.unwrap();
    assert_eq!(host.starts().len(), 1);
    assert!(
        ["pending", "running"].contains(&status.state.as_str()),
        "{}",
        status.state
    );
}

#[tokio::test(start_paused = true)]
async fn start_now_resets_the_idle_clock() {
    let host = ScriptedHost::new(InstanceState::Running);
    let work = ScriptedWork::idle();
    let (gpu, _shutdown) = spawn(&host, &work);

    sleep(20 * MINUTE).await;
    let status = gpu.start_now().await.unwrap();
    assert!(host.starts().is_empty(), "a running host is left alone");
    assert_eq!(status.stops_in_seconds, Some(30 * 60));

    sleep(29 * MINUTE).await;
    assert!(host.stops().is_empty(), "stopped 30 min after spawn");
    wait_for(2 * MINUTE, || !host.stops().is_empty()).await;
    assert_eq!(host.stops().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn start_now_skips_a_running_backoff() {
    let host = ScriptedHost::new(InstanceState::Stopped);
    host.fail_starts(3);
    let work = ScriptedWork::idle();
    let (gpu, _shutdown) = spawn(&host, &work);
    gpu.work_arrived();
    wait_for(MINUTE, || host.starts().len() == 3).await;
    assert_eq!(host.starts().len(), 3, "in a 20 s backoff now");

    gpu.start_now().await.unwrap();
    assert_eq!(host.starts().len(), 4);
    assert_eq!(gpu.status().start_attempts, 0);
}

#[tokio::test(start_paused = true)]
async fn stop_now_stops_even_a_busy_host() {
    let host = ScriptedHost::new(InstanceState::Running);
    let work = ScriptedWork::with(busy(0, 1, 1));
    let (gpu, _shutdown) = spawn(&host, &work);
    sleep(SECOND).await;

    let status = gpu.stop_now().await.unwrap();
    assert_eq!(host.stops().len(), 1);
    assert!(
        ["stopping", "stopped"].contains(&status.state.as_str()),
        "{}",
        status.state
    );
}

#[tokio::test(start_paused = true)]
async fn stop_now_on_a_stopped_host_is_harmless() {
    let host = ScriptedHost::new(InstanceState::Stopped);
    let work = ScriptedWork::idle();
    let (gpu, _shutdown) = spawn(&host, &work);

    let status = gpu.stop_now().await.unwrap();
    assert_eq!(status.state, "stopped");
    sleep(5 * MINUTE).await;
    assert!(host.starts().is_empty());
}

// ---------------------------------------------------------------- no host

#[tokio::test(start_paused = true)]
async fn without_an_instance_the_host_is_always_running_and_never_called() {
    let host = ScriptedHost::without_instance();
    let work = ScriptedWork::idle();
    let (gpu, _shutdown) = spawn(&host, &work);

    gpu.work_arrived();
    let started = gpu.start_now().await.unwrap();
    let stopped = gpu.stop_now().await.unwrap();
    sleep(10 * 30 * MINUTE).await;

    assert!(host.calls().is_empty(), "{:?}", host.calls());
    assert_eq!(work.reads(), 0);
    for status in [started, stopped, gpu.status()] {
        assert!(!status.enabled);
        assert_eq!(status.state, "running");
        assert!(status.is_running());
        assert_eq!(status.instance_id, None);
    }
}

#[tokio::test(start_paused = true)]
async fn no_gpu_host_reads_running() {
    let host = Arc::new(NoGpuHost);
    assert_eq!(host.instance_id(), None);
    assert_eq!(host.describe().await.unwrap().state, InstanceState::Running);

    let work = ScriptedWork::idle();
    let gpu = GpuController::spawn(host, work.clone(), settings(), CancellationToken::new());
    gpu.work_arrived();
    sleep(MINUTE).await;
    assert_eq!(gpu.status().state, "running");
    assert_eq!(work.reads(), 0);
}

// ---------------------------------------------------------------- status

#[tokio::test(start_paused = true)]
async fn the_status_serialises_for_the_admin_api() {
    let host = ScriptedHost::new(InstanceState::Running);
    let work = ScriptedWork::with(busy(3, 1, 1));
    let (gpu, shutdown) = spawn(&host, &work);
    sleep(SECOND).await;

    let json = serde_json::to_value(gpu.status()).unwrap();
    assert_eq!(json["enabled"], true);
    assert_eq!(json["instance_id"], "i-0123456789abcdef0");
    assert_eq!(json["state"], "running");
    assert_eq!(json["private_ip"], "10.0.0.7");
    assert_eq!(json["queued"], 3);
    assert_eq!(json["stops_in_seconds"], serde_json::Value::Null);
    assert!(json["refreshed_at"].as_u64().unwrap() > 1_700_000_000);

    // After shutdown the loop no longer looks.
    shutdown.cancel();
    sleep(SECOND).await;
    let looks = host.looks();
    sleep(10 * MINUTE).await;
    assert_eq!(host.looks(), looks);
}
