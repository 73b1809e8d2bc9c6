//! Admission control on submits, after the per-client rate limit (a route
//! layer, see `routes`): the backlog caps (global: how much work may wait on
//! a queue) and the daily job quota (per client, shared by every
//! orchestrator on the task store). Nothing here calls AWS on the request
//! path: the backlog is read from a gauge the depth sweep keeps fresh, and
//! the quota is one conditional write to the task store.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use common::{
    config::{ConfigError, Env},
    rate_limit::{ClientKey, LimitSettings},
};
use sha2::{Digest, Sha256};

use super::{QueueName, submit::SubmitError};
use crate::tasks::{QuotaCount, TaskStore};

/// Seconds a client refused for backlog is told to wait: long enough for a
/// GPU job or two to finish.
const BACKLOG_RETRY_SECONDS: u64 = 30;

const DAY: i64 = 24 * 3600;

/// What one client may submit, and how much work may wait (see the
/// README's Security section for why the defaults are what they are).
#[derive(Debug, Clone)]
pub struct AdmissionSettings {
    /// `RATE_LIMIT_JOBS_PER_MINUTE` (0 = off) and `RATE_LIMIT_JOBS_BURST`.
    pub jobs_rate: LimitSettings,
    /// `MAX_GPU_BACKLOG` / `MAX_CPU_BACKLOG`: messages waiting or running on
    /// a queue past which submits to it are refused (0 = no cap).
    pub max_gpu_backlog: u64,
    pub max_cpu_backlog: u64,
    /// `DAILY_JOB_QUOTA`: jobs per client per UTC day, shared by every
    /// orchestrator on the task store (0 = unlimited).
    pub daily_job_quota: u64,
    /// `QUEUE_DEPTH_POLL_SECONDS`: how often the cached queue depths behind
    /// the backlog caps (and the depth metrics) are refreshed.
    pub queue_depth_interval: Duration,
}

pub const DEFAULT_JOBS_RATE: LimitSettings = LimitSettings {
    per_minute: 60,
    burst: 20,
};

impl AdmissionSettings {
    /// `queue_depth_poll_seconds`: read by the caller with the other
    /// positive settings.
    pub fn from_env(env: &Env, queue_depth_poll_seconds: u64) -> Result<Self, ConfigError> {
        Ok(Self {
            jobs_rate: LimitSettings::from_env(
                env,
                "RATE_LIMIT_JOBS_PER_MINUTE",
                "RATE_LIMIT_JOBS_BURST",
                DEFAULT_JOBS_RATE,
            )?,
            max_gpu_backlog: env.parse_or(&["MAX_GPU_BACKLOG"], 100)?,
            max_cpu_backlog: env.parse_or(&["MAX_CPU_BACKLOG"], 500)?,
            daily_job_quota: env.parse_or(&["DAILY_JOB_QUOTA"], 500)?,
            queue_depth_interval: Duration::from_secs(queue_depth_poll_seconds),
        })
    }
}

/// The last known depth (visible + in flight) of each queue, plus the jobs
/// accepted since it was read, so a burst between two reads is counted too.
/// A job is counted *before* its message is sent and a read subtracts only
/// what was counted before it began: a message is never counted twice (by
/// the read and as accepted), at worst once too few until the next read.
#[derive(Debug, Default)]
pub struct Backlog {
    gpu: Slot,
    cpu: Slot,
}

#[derive(Debug, Default)]
struct Slot {
    depth: AtomicU64,
    since: AtomicU64,
}

impl Backlog {
    fn slot(&self, queue: QueueName) -> &Slot {
        match queue {
            QueueName::Gpu => &self.gpu,
            QueueName::Cpu => &self.cpu,
        }
    }

    pub fn get(&self, queue: QueueName) -> u64 {
        let slot = self.slot(queue);
        slot.depth
            .load(Ordering::Relaxed)
            .saturating_add(slot.since.load(Ordering::Relaxed))
    }

    /// Call before reading the queue's depth; hand the result to
    /// [`Self::observed`].
    pub fn reading(&self, queue: QueueName) -> u64 {
        self.slot(queue).since.load(Ordering::SeqCst)
    }

    /// A fresh read replaces the depth; the jobs counted before the read
    /// began are in it now.
    pub fn observed(&self, queue: QueueName, depth: u64, counted_before: u64) {
        let slot = self.slot(queue);
        slot.depth.store(depth, Ordering::Relaxed);
        let _ = slot
            .since
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(counted_before))
            });
    }

    /// A job is about to be queued.
    pub fn accepted(&self, queue: QueueName) {
        self.slot(queue).since.fetch_add(1, Ordering::SeqCst);
    }

    /// The job counted by [`Self::accepted`] was not queued after all.
    pub fn withdrawn(&self, queue: QueueName) {
        let _ = self
            .slot(queue)
            .since
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

/// 429 when the job's queue already holds its cap.
pub fn check_backlog(
    settings: &AdmissionSettings,
    backlog: &Backlog,
    queue: QueueName,
) -> Result<(), SubmitError> {
    let cap = match queue {
        QueueName::Gpu => settings.max_gpu_backlog,
        QueueName::Cpu => settings.max_cpu_backlog,
    };
    let waiting = backlog.get(queue);
    if cap > 0 && waiting >= cap {
        tracing::warn!(
            queue = queue.as_str(),
            waiting,
            cap,
            "backlog cap reached: submit refused"
        );
        return Err(SubmitError::Refused {
            detail: format!(
                "The {} queue is full ({waiting} jobs waiting or running, the limit is {cap}); try again shortly",
                queue.as_str().to_uppercase()
            ),
            retry_after: BACKLOG_RETRY_SECONDS,
        });
    }
    Ok(())
}

/// A job counted against a client's daily quota, to give back if the job
/// is then not accepted.
#[derive(Debug)]
pub struct QuotaTicket {
    client: String,
    day: String,
}

impl QuotaTicket {
    pub async fn give_back(self, tasks: &dyn TaskStore) {
        if let Err(e) = tasks.uncount_daily_job(&self.client, &self.day).await {
            tracing::warn!(error = %e, "could not give back a quota count");
        }
    }
}

/// Counts the job against the client's quota for today (UTC), or 429 with
/// the seconds until midnight UTC. `None` when there is no quota.
pub async fn count_against_quota(
    settings: &AdmissionSettings,
    tasks: &dyn TaskStore,
    client: &ClientKey,
    now: i64,
) -> Result<Option<QuotaTicket>, SubmitError> {
    let limit = settings.daily_job_quota;
    if limit == 0 {
        return Ok(None);
    }
    let day_number = now.div_euclid(DAY);
    let day = day_number.to_string();
    let next_day = (day_number + 1) * DAY;
    // Stored hashed: the count needs no one's address or user id in clear.
    let hashed = hex::encode(&Sha256::digest(client.0.as_bytes())[..16]);
    match tasks
        .count_daily_job(&hashed, &day, limit, next_day + DAY)
        .await?
    {
        QuotaCount::Counted { .. } => Ok(Some(QuotaTicket {
            client: hashed,
            day,
        })),
        QuotaCount::Exhausted => {
            tracing::warn!(client = %client.0, limit, "daily job quota used up");
            Err(SubmitError::Refused {
                detail: format!(
                    "Daily job quota used up ({limit} jobs per day); it resets at 00:00 UTC"
                ),
                retry_after: u64::try_from(next_day - now).unwrap_or(1),
            })
        }
    }
}
