//! The GPU controller: a background task that keeps a cached view of the GPU
//! host, starts the host when GPU work arrives and stops it once it has had
//! no work for the idle timeout — in place of the old CloudWatch alarm and
//! Lambda, and without stopping the host under a running job.
//!
//! Every decision is taken from a fresh look at the host and at the work, and
//! every host operation is idempotent, so two orchestrators running this
//! controller at once agree without sharing any state: the task store's
//! latest job update keeps one from stopping a host the other just used, and
//! either starts a stopped host that has messages waiting for it.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    GpuWork, WorkSnapshot,
    host::{GpuHost, HostError, InstanceState, InstanceView},
    settings::GpuSettings,
    status::{GpuStatus, WallClock, ceil_seconds, unix_seconds},
};

/// A burst of submitted jobs wakes the controller once per this interval at
/// most, so that it never becomes a burst of DescribeInstances calls.
const MIN_WAKE_GAP: Duration = Duration::from_secs(1);

/// Guards against a zero poll interval turning the loop into a spin.
const MIN_POLL_GAP: Duration = Duration::from_millis(10);

/// Starts the controller's background task.
pub struct GpuController;

impl GpuController {
    /// Spawns the controller on the current Tokio runtime and returns the
    /// handle the orchestrator keeps. It looks at the host at once, then
    /// every `poll_interval`, until `shutdown` is cancelled. For a host with
    /// no instance id ([`crate::NoGpuHost`]) nothing is spawned and the host
    /// is never called: it always reads `running`.
    pub fn spawn(
        host: Arc<dyn GpuHost>,
        work: Arc<dyn GpuWork>,
        settings: GpuSettings,
        shutdown: CancellationToken,
    ) -> GpuHandle {
        let instance_id = host.instance_id().map(str::to_owned);
        let shared = Arc::new(Shared {
            host,
            work,
            settings,
            instance_id,
            clock: WallClock::anchor_now(),
            cache: Mutex::new(Cache::default()),
            looks: AtomicU64::new(0),
            wake: Notify::new(),
        });
        if shared.instance_id.is_some() {
            tokio::spawn(Arc::clone(&shared).run(shutdown));
        }
        GpuHandle { shared }
    }
}

/// What the orchestrator holds: cheap to clone, safe to use from request
/// handlers.
#[derive(Clone)]
pub struct GpuHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GpuHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuHandle")
            .field("instance_id", &self.shared.instance_id)
            .finish_non_exhaustive()
    }
}

impl GpuHandle {
    /// A GPU job was just accepted. Does no I/O and never blocks: it resets
    /// the idle clock and wakes the controller, which looks at the host again
    /// (it may have been stopped behind our back) and starts it if it is
    /// stopped, or as soon as it has stopped if it is stopping.
    pub fn work_arrived(&self) {
        let shared = &self.shared;
        if !shared.enabled() {
            return;
        }
        {
            let mut cache = shared.cache();
            cache.local_activity = Some(Instant::now());
            cache.start_wanted = Some(shared.looks.load(Ordering::SeqCst));
        }
        shared.wake.notify_one();
    }

    /// The host as last seen, from the cache (no I/O).
    pub fn status(&self) -> GpuStatus {
        self.shared.status(Instant::now())
    }

    /// An operator's start (`POST /api/v1/gpu/start`): starts a stopped host
    /// now, without waiting out a backoff, and resets the idle clock so the
    /// host gets a full idle timeout. A `stopping` host is started as soon as
    /// it has stopped; a `pending` or `running` one is left as it is.
    pub async fn start_now(&self) -> Result<GpuStatus, HostError> {
        let shared = &self.shared;
        if !shared.enabled() {
            return Ok(self.status());
        }
        info!(instance_id = ?shared.instance_id, "GPU host start requested by an operator");
        {
            let mut cache = shared.cache();
            cache.local_activity = Some(Instant::now());
            cache.start_wanted = Some(shared.looks.load(Ordering::SeqCst));
            cache.next_start_at = None;
        }
        let result = async {
            let view = shared.refresh().await?;
            match view.state {
                InstanceState::Running | InstanceState::Pending | InstanceState::Stopping => Ok(()),
                ref gone if gone.is_gone() => Err(shared.give_up_start(gone)),
                // Stopped, or a state this code does not know: let the
                // provider decide.
                _ => shared.start_host().await,
            }
        }
        .await;
        // From here the controller follows the host closely.
        shared.wake.notify_one();
        result.map(|()| self.status())
    }

    /// An operator's stop (`POST /api/v1/gpu/stop`): stops the host now
    /// **even if GPU work is queued or running** — an explicit decision that
    /// overrides the idle rule. A job it interrupts is not lost: its message
    /// reappears on the queue after the visibility timeout. The host then
    /// stays stopped only while no GPU work waits: the next job submitted,
    /// or messages already waiting on the GPU queue, start it again (on any
    /// orchestrator).
    pub async fn stop_now(&self) -> Result<GpuStatus, HostError> {
        let shared = &self.shared;
        if !shared.enabled() {
            return Ok(self.status());
        }
        warn!(instance_id = ?shared.instance_id, "GPU host stop requested by an operator, idle or not");
        {
            let mut cache = shared.cache();
            cache.start_wanted = None;
            cache.reset_start_attempts();
        }
        if let Err(err) = shared.host.stop().await {
            shared
                .cache()
                .record_error(format!("stop: {err}"), Instant::now());
            return Err(err);
        }
        // The status should show `stopping` at once; a failed look is
        // recorded and the next poll catches up.
        let _ = shared.refresh().await;
        shared.wake.notify_one();
        Ok(self.status())
    }
}

/// Everything the background task and the handles share.
struct Shared {
    host: Arc<dyn GpuHost>,
    work: Arc<dyn GpuWork>,
    settings: GpuSettings,
    instance_id: Option<String>,
    clock: WallClock,
    cache: Mutex<Cache>,
    /// Numbers each look at the host, in the order they were asked for, so
    /// that a slow look never overwrites a newer one and a start request is
    /// satisfied only by a look taken after it.
    looks: AtomicU64,
    wake: Notify,
}

/// The controller's memory. Held under a std mutex for short, I/O-free
/// sections only.
#[derive(Default)]
struct Cache {
    view: Option<InstanceView>,
    /// The number of the look that produced `view`.
    view_look: Option<u64>,
    state_since: Option<Instant>,
    refreshed_at: Option<Instant>,
    /// The last time this controller saw GPU work (a job submitted here, or
    /// work on the queue or in the task store).
    local_activity: Option<Instant>,
    /// The latest job update in the task store, by any orchestrator.
    last_job_update: Option<SystemTime>,
    /// The last work snapshot; `None` when the last read failed.
    work: Option<WorkSnapshot>,
    /// Work is waiting for the host: the first look numbered at least this
    /// that finds the host pending or running satisfies it.
    start_wanted: Option<u64>,
    start_attempts: u32,
    backoff: Option<Duration>,
    next_start_at: Option<Instant>,
    last_error: Option<(String, Instant)>,
}

impl Cache {
    /// Takes in a look at the host, unless a newer look is already in.
    fn observe(&mut self, look: u64, view: InstanceView, now: Instant) -> Option<InstanceState> {
        if self.view_look.is_some_and(|newest| newest > look) {
            return None;
        }
        let previous = self.view.as_ref().map(|v| v.state.clone());
        if previous.as_ref() != Some(&view.state) {
            self.state_since = Some(now);
        }
        if matches!(view.state, InstanceState::Running | InstanceState::Pending)
            && self.start_wanted.is_none_or(|wanted| look >= wanted)
        {
            self.start_wanted = None;
            self.reset_start_attempts();
        }
        self.view = Some(view);
        self.view_look = Some(look);
        self.refreshed_at = Some(now);
        previous
    }

    fn note_work(&mut self, snapshot: &WorkSnapshot, now: Instant) {
        if !snapshot.is_idle() {
            self.local_activity = Some(now);
        }
        self.last_job_update = self.last_job_update.max(snapshot.last_job_update);
        self.work = Some(snapshot.clone());
    }

    fn record_error(&mut self, message: String, now: Instant) {
        self.last_error = Some((message, now));
    }

    fn reset_start_attempts(&mut self) {
        self.start_attempts = 0;
        self.backoff = None;
        self.next_start_at = None;
    }

    /// Counts a failed start and schedules the next attempt: exponential
    /// backoff for errors that may pass, the longest wait for those that
    /// need a person (still retried, since a fixed IAM policy needs no
    /// restart of ours).
    fn start_failed(&mut self, err: &HostError, settings: &GpuSettings, now: Instant) -> Duration {
        let max = settings.max_backoff;
        let backoff = match (err.transient, self.backoff) {
            (false, _) => max,
            (true, None) => settings.min_backoff.min(max),
            (true, Some(previous)) => previous.saturating_mul(2).min(max),
        };
        self.start_attempts = self.start_attempts.saturating_add(1);
        self.backoff = Some(backoff);
        self.next_start_at = Some(now + backoff);
        self.record_error(format!("start: {err}"), now);
        backoff
    }

    fn state(&self) -> Option<&InstanceState> {
        self.view.as_ref().map(|v| &v.state)
    }

    /// When the host's idle time began, if it is running and idle now: the
    /// latest of the last work seen here, the last job update anywhere, and
    /// the moment it was seen running (a host that has just come up is not
    /// stopped for the quiet time before it). `None` while busy, while a
    /// start is wanted, or when the work could not be read.
    fn idle_since(&self, now: Instant, clock: &WallClock) -> Option<Instant> {
        if self.state() != Some(&InstanceState::Running) || self.start_wanted.is_some() {
            return None;
        }
        if !self.work.as_ref()?.is_idle() {
            return None;
        }
        // A job update stamped in the future (clock skew) counts as now.
        let job_update = self
            .last_job_update
            .and_then(|at| clock.instant(at))
            .map(|at| at.min(now));
        [self.state_since, self.local_activity, job_update]
            .into_iter()
            .flatten()
            .max()
    }
}

impl Shared {
    fn enabled(&self) -> bool {
        self.instance_id.is_some()
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // The cache holds no invariant a panic could break halfway.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        info!(
            instance_id = ?self.instance_id,
            poll_interval = ?self.settings.poll_interval,
            idle_timeout = ?self.settings.idle_timeout,
            "GPU controller started"
        );
        loop {
            self.tick().await;
            let ticked_at = Instant::now();
            let delay = self.next_delay(ticked_at);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
                _ = self.wake.notified() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep_until(ticked_at + MIN_WAKE_GAP) => {}
                    }
                }
            }
        }
        info!(instance_id = ?self.instance_id, "GPU controller stopped");
    }

    /// One look at the host, and whatever it calls for.
    async fn tick(&self) {
        let Ok(view) = self.refresh().await else {
            return;
        };
        match view.state {
            InstanceState::Running => self.stop_if_idle().await,
            InstanceState::Stopped => self.start_if_wanted().await,
            ref gone if gone.is_gone() && self.cache().start_wanted.is_some() => {
                self.give_up_start(gone);
            }
            _ => {}
        }
    }

    /// When to look again: often while the host is changing state or work
    /// waits on it, at the next retry while a start backs off, at the idle
    /// deadline if that comes first, otherwise every `poll_interval`.
    fn next_delay(&self, now: Instant) -> Duration {
        let settings = &self.settings;
        let cache = self.cache();
        let wanted = cache.start_wanted.is_some();
        let mut delay = settings.poll_interval;
        let state = cache.state();
        if state.is_some_and(InstanceState::is_transitional) || wanted {
            delay = delay.min(settings.transition_poll_interval);
        }
        if wanted
            && state == Some(&InstanceState::Stopped)
            && let Some(retry_at) = cache.next_start_at.filter(|at| *at > now)
        {
            delay = settings.poll_interval.min(retry_at - now);
        }
        if let Some(since) = cache.idle_since(now, &self.clock) {
            let deadline = since + settings.idle_timeout;
            if deadline > now {
                delay = delay.min(deadline - now);
            }
        }
        delay.max(MIN_POLL_GAP)
    }

    /// Looks at the host and updates the cache.
    async fn refresh(&self) -> Result<InstanceView, HostError> {
        let look = self.looks.fetch_add(1, Ordering::SeqCst);
        let result = self.host.describe().await;
        let now = Instant::now();
        let mut cache = self.cache();
        match result {
            Ok(view) => {
                let state = view.state.clone();
                if let Some(previous) = cache.observe(look, view.clone(), now)
                    && previous != state
                {
                    info!(instance_id = ?self.instance_id, from = %previous, to = %state, "GPU host changed state");
                }
                Ok(view)
            }
            Err(err) => {
                warn!(instance_id = ?self.instance_id, error = %err, "could not look at the GPU host");
                cache.record_error(format!("describe: {err}"), now);
                Err(err)
            }
        }
    }

    /// Reads the GPU work; a failure is recorded and yields `None`, which
    /// every caller takes as "do not stop".
    async fn read_work(&self) -> Option<WorkSnapshot> {
        let result = self.work.snapshot().await;
        let now = Instant::now();
        let mut cache = self.cache();
        match result {
            Ok(snapshot) => {
                cache.note_work(&snapshot, now);
                Some(snapshot)
            }
            Err(err) => {
                warn!(error = %err, "could not read the GPU work; the GPU host will not be stopped until it can be");
                cache.work = None;
                cache.record_error(format!("work snapshot: {err}"), now);
                None
            }
        }
    }

    /// The host is stopped: start it if work wants it and no backoff is
    /// running. Work waiting on the queue wants it as much as a job that
    /// just arrived — this is what restarts a host stopped behind our back,
    /// or by another orchestrator in the moment a job was submitted here.
    async fn start_if_wanted(&self) {
        if self.cache().start_wanted.is_none() {
            let Some(work) = self.read_work().await else {
                return;
            };
            if work.queued == 0 && work.in_flight == 0 {
                return;
            }
            info!(
                instance_id = ?self.instance_id,
                queued = work.queued,
                in_flight = work.in_flight,
                "GPU work is waiting on a stopped GPU host"
            );
            let mut cache = self.cache();
            if cache.start_wanted.is_none() {
                cache.start_wanted = Some(self.looks.load(Ordering::SeqCst));
            }
        }
        let backing_off = self
            .cache()
            .next_start_at
            .is_some_and(|at| Instant::now() < at);
        if !backing_off {
            let _ = self.start_host().await;
        }
    }

    async fn start_host(&self) -> Result<(), HostError> {
        match self.host.start().await {
            Ok(()) => {
                info!(instance_id = ?self.instance_id, "started the GPU host");
                self.cache().reset_start_attempts();
                // Show `pending` at once; a failed look is recorded and the
                // next (fast) poll catches up.
                let _ = self.refresh().await;
                Ok(())
            }
            Err(err) => {
                let mut cache = self.cache();
                let retry_in = cache.start_failed(&err, &self.settings, Instant::now());
                warn!(
                    instance_id = ?self.instance_id,
                    error = %err,
                    attempts = cache.start_attempts,
                    retry_in = ?retry_in,
                    "could not start the GPU host"
                );
                Err(err)
            }
        }
    }

    /// A terminated host cannot be started: say so once and stop trying.
    fn give_up_start(&self, state: &InstanceState) -> HostError {
        let err = HostError::new(
            "IncorrectInstanceState",
            format!("the GPU host is {state} and can never be started again"),
            false,
        );
        error!(instance_id = ?self.instance_id, %state, "GPU work is waiting but the GPU host is gone");
        let mut cache = self.cache();
        cache.start_wanted = None;
        cache.record_error(format!("start: {err}"), Instant::now());
        err
    }

    /// The host is running: stop it if it has had no work for the idle
    /// timeout. Never on a failed or busy read of the work, and only after
    /// a second, fresh read just before the stop.
    async fn stop_if_idle(&self) {
        if self.read_work().await.is_none() || !self.idle_for_long_enough() {
            return;
        }
        // A job may have been submitted or picked up since the first read.
        if self.read_work().await.is_none() || !self.idle_for_long_enough() {
            return;
        }
        info!(
            instance_id = ?self.instance_id,
            idle_timeout = ?self.settings.idle_timeout,
            "stopping the idle GPU host"
        );
        match self.host.stop().await {
            Ok(()) => {
                let _ = self.refresh().await;
            }
            Err(err) => {
                warn!(instance_id = ?self.instance_id, error = %err, "could not stop the idle GPU host");
                self.cache()
                    .record_error(format!("stop: {err}"), Instant::now());
            }
        }
    }

    fn idle_for_long_enough(&self) -> bool {
        let now = Instant::now();
        self.cache()
            .idle_since(now, &self.clock)
            .is_some_and(|since| now.duration_since(since) >= self.settings.idle_timeout)
    }

    fn status(&self, now: Instant) -> GpuStatus {
        if !self.enabled() {
            return GpuStatus::unmanaged();
        }
        let clock = &self.clock;
        let cache = self.cache();
        let idle_since = cache.idle_since(now, clock);
        let last_activity = [
            cache.local_activity.map(|at| clock.unix_seconds(at)),
            cache.last_job_update.map(unix_seconds),
        ]
        .into_iter()
        .flatten()
        .max();
        let next_start_attempt = cache
            .next_start_at
            .filter(|_| cache.start_wanted.is_some())
            .map(|at| ceil_seconds(at.saturating_duration_since(now)));
        GpuStatus {
            enabled: true,
            instance_id: self.instance_id.clone(),
            state: cache
                .state()
                .map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned()),
            public_ip: cache.view.as_ref().and_then(|v| v.public_ip.clone()),
            private_ip: cache.view.as_ref().and_then(|v| v.private_ip.clone()),
            state_since: cache.state_since.map(|at| clock.unix_seconds(at)),
            refreshed_at: cache.refreshed_at.map(|at| clock.unix_seconds(at)),
            last_activity,
            idle_seconds: idle_since.map(|since| now.duration_since(since).as_secs()),
            stops_in_seconds: idle_since.map(|since| {
                ceil_seconds((since + self.settings.idle_timeout).saturating_duration_since(now))
            }),
            last_error: cache
                .last_error
                .as_ref()
                .map(|(message, _)| message.clone()),
            last_error_at: cache
                .last_error
                .as_ref()
                .map(|(_, at)| clock.unix_seconds(*at)),
            start_attempts: cache.start_attempts,
            pending_start: cache.start_wanted.is_some(),
            next_start_attempt_in_seconds: next_start_attempt,
            queued: cache.work.as_ref().map(|w| w.queued),
            in_flight: cache.work.as_ref().map(|w| w.in_flight),
            processing: cache.work.as_ref().map(|w| w.processing),
            looks: self.looks.load(Ordering::SeqCst),
        }
    }
}
