//! What the controller knows about the GPU host, as the admin API and the
//! metrics show it, and the one place where the controller's monotonic
//! clock is turned into wall-clock (Unix) seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;

/// The GPU host as last seen, read from the controller's cache (no I/O).
/// Times are Unix seconds; durations are whole seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GpuStatus {
    /// `false` when no GPU instance is configured; the host then always
    /// reads `running`.
    pub enabled: bool,
    pub instance_id: Option<String>,
    /// The EC2 state name (`stopped`, `pending`, `running`, `stopping`,
    /// `shutting-down`, `terminated`), or `unknown` before the first look.
    pub state: String,
    pub public_ip: Option<String>,
    pub private_ip: Option<String>,
    /// When this controller first saw the host in its current state.
    pub state_since: Option<u64>,
    /// When the host was last looked at successfully.
    pub refreshed_at: Option<u64>,
    /// The last sign of GPU work: a job submitted here, work seen on the
    /// queue or in the task store, or the latest job update of any
    /// orchestrator.
    pub last_activity: Option<u64>,
    /// How long the running host has had no GPU work; `None` when it is
    /// busy, not running, or the work could not be read.
    pub idle_seconds: Option<u64>,
    /// Countdown to the idle stop; `None` when the host is busy, not
    /// running, or the work could not be read (it is then never stopped).
    pub stops_in_seconds: Option<u64>,
    /// The most recent failure (of the host or of reading the work), kept
    /// after recovery; `last_error_at` says how old it is.
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    /// Failed start attempts since the host last started.
    pub start_attempts: u32,
    /// GPU work is waiting for the host to start.
    pub pending_start: bool,
    /// When a failed start is retried, while backing off.
    pub next_start_attempt_in_seconds: Option<u64>,
    /// GPU work as last read: messages waiting, messages being worked on,
    /// jobs `processing`. `None` when the last read failed or before one.
    pub queued: Option<u64>,
    pub in_flight: Option<u64>,
    pub processing: Option<u64>,
    /// How many times this controller has looked at the host since it
    /// started. A poll looks first, then reads the work and acts; the next
    /// poll's look comes after. A count two past one read earlier therefore
    /// means a whole poll began and ended in between: what a test waits for,
    /// instead of sleeping, to see the controller leave a host alone.
    pub looks: u64,
}

impl GpuStatus {
    /// The status of a host that is not managed (no GPU instance).
    pub(crate) fn unmanaged() -> Self {
        Self {
            enabled: false,
            instance_id: None,
            state: "running".to_owned(),
            public_ip: None,
            private_ip: None,
            state_since: None,
            refreshed_at: None,
            last_activity: None,
            idle_seconds: None,
            stops_in_seconds: None,
            last_error: None,
            last_error_at: None,
            start_attempts: 0,
            pending_start: false,
            next_start_attempt_in_seconds: None,
            queued: None,
            in_flight: None,
            processing: None,
            looks: 0,
        }
    }

    /// The state name, e.g. for a metric label.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// Whether the host can take GPU work now.
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }
}

/// Ties the controller's monotonic clock to the wall clock at one moment.
/// All decisions use [`Instant`] (so tests can pause and advance time);
/// Unix seconds appear only in [`GpuStatus`], and job timestamps from the
/// task store are mapped back onto the monotonic clock through this anchor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    instant: Instant,
    system: SystemTime,
}

impl WallClock {
    pub(crate) fn anchor_now() -> Self {
        Self {
            instant: Instant::now(),
            system: SystemTime::now(),
        }
    }

    pub(crate) fn system_time(&self, at: Instant) -> SystemTime {
        if at >= self.instant {
            self.system + (at - self.instant)
        } else {
            self.system - (self.instant - at)
        }
    }

    pub(crate) fn unix_seconds(&self, at: Instant) -> u64 {
        unix_seconds(self.system_time(at))
    }

    /// `at` on the monotonic clock; `None` when it lies before the anchor
    /// (older than anything the controller compares it with).
    pub(crate) fn instant(&self, at: SystemTime) -> Option<Instant> {
        at.duration_since(self.system)
            .ok()
            .map(|after| self.instant + after)
    }
}

pub(crate) fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whole seconds, rounded up, so that a countdown reads 0 only when due.
pub(crate) fn ceil_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
