//! `/ready` for both services, written once: each part is checked with a
//! timeout, a part that answers but slowly is `slow` (still ready), one that
//! fails or does not answer in time is `unavailable` (503 naming it). The
//! answer is cached for a second and computed by one caller at a time, so
//! load balancer and ECS probes cannot add load to a struggling dependency.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

/// One readiness check: `Ok` when the part answers.
pub type Check = Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A check from an async function, e.g.
/// `check(move || { let db = db.clone(); async move { db.ping().await } })`.
pub fn check<F, Fut, E>(f: F) -> Check
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    Box::new(move || {
        let fut = f();
        Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
    })
}

/// A part as `/ready` names it.
pub struct Part {
    /// In the `detail`: "database", "GPU queue", …
    pub name: &'static str,
    /// In `checks`: "database", "gpu_queue", …
    pub key: &'static str,
    pub check: Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartState {
    Ok,
    /// Answered, but took longer than the slow threshold.
    Slow,
    /// Failed, or no answer within the timeout.
    Unavailable,
}

impl PartState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Slow => "slow",
            Self::Unavailable => "unavailable",
        }
    }
}

/// The last answer, for `CACHE_FOR`.
const CACHE_FOR: Duration = Duration::from_secs(1);

pub struct Readiness {
    parts: Vec<Part>,
    /// A part is `unavailable` past this.
    timeout: Duration,
    /// And `slow` past this.
    slow_after: Duration,
    cache: Mutex<Option<(Instant, Vec<PartState>)>>,
    /// One check at a time; the others wait for its answer.
    running: tokio::sync::Mutex<()>,
}

impl Readiness {
    /// `timeout`: consistent with the dependency timeout (a part that takes
    /// longer would fail the requests that need it anyway); `slow` after a
    /// half of it.
    pub fn new(parts: Vec<Part>, timeout: Duration) -> Self {
        Self {
            parts,
            timeout,
            slow_after: timeout / 2,
            cache: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self) -> Option<Vec<PartState>> {
        let cache = self.cache.lock().ok()?;
        cache
            .as_ref()
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, states)| states.clone())
    }

    /// Each part's state, fresh or at most a second old.
    pub async fn states(&self) -> Vec<PartState> {
        if let Some(states) = self.cached() {
            return states;
        }
        let _running = self.running.lock().await;
        // Someone else may have just checked.
        if let Some(states) = self.cached() {
            return states;
        }
        let checks = self.parts.iter().map(|part| async move {
            let started = Instant::now();
            match tokio::time::timeout(self.timeout, (part.check)()).await {
                Ok(Ok(())) if started.elapsed() > self.slow_after => {
                    tracing::warn!(
                        part = part.name,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "readiness check slow"
                    );
                    PartState::Slow
                }
                Ok(Ok(())) => PartState::Ok,
                Ok(Err(cause)) => {
                    // Causes may name hosts and accounts: logged, not shown.
                    tracing::warn!(part = part.name, %cause, "readiness check failed");
                    PartState::Unavailable
                }
                Err(_) => {
                    tracing::warn!(
                        part = part.name,
                        timeout_ms = self.timeout.as_millis() as u64,
                        "readiness check timed out"
                    );
                    PartState::Unavailable
                }
            }
        });
        let states = futures_util::future::join_all(checks).await;
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((Instant::now(), states.clone()));
        }
        states
    }

    /// The `/ready` answer: 200 `{"status":"ready","checks":{…}}`, or 503
    /// `{"detail":"not ready: … unavailable","checks":{…}}`; 503 "shutting
    /// down" once SIGTERM came.
    pub async fn respond(&self) -> Response {
        if crate::http::lifecycle().is_draining() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "detail": "shutting down" })),
            )
                .into_response();
        }
        let states = self.states().await;
        let mut checks = Map::new();
        let mut down = vec![];
        for (part, state) in self.parts.iter().zip(&states) {
            checks.insert(part.key.to_owned(), Value::from(state.as_str()));
            if *state == PartState::Unavailable {
                down.push(part.name);
            }
        }
        if down.is_empty() {
            (
                StatusCode::OK,
                Json(json!({ "status": "ready", "checks": checks })),
            )
                .into_response()
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "detail": format!("not ready: {} unavailable", down.join(", ")),
                    "checks": checks,
                })),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    };

    use super::*;

    /// A check that takes `delay_ms` (changeable) and counts its calls.
    fn part(name: &'static str, delay_ms: Arc<AtomicU64>, calls: Arc<AtomicU32>) -> Part {
        Part {
            name,
            key: name,
            check: Box::new(move || {
                let (delay, calls) = (delay_ms.clone(), calls.clone());
                Box::pin(async move {
                    calls.fetch_add(1, Ordering::Relaxed);
                    match delay.load(Ordering::Relaxed) {
                        u64::MAX => Err("refused".to_owned()),
                        ms => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            Ok(())
                        }
                    }
                })
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_is_not_down_and_answers_are_cached() {
        let (delay, calls) = (Arc::new(AtomicU64::new(10)), Arc::new(AtomicU32::new(0)));
        let ready = Readiness::new(
            vec![part("queue", delay.clone(), calls.clone())],
            Duration::from_secs(2),
        );
        assert_eq!(ready.states().await, [PartState::Ok]);
        // Probes within a second are answered from the cache.
        for _ in 0..10 {
            ready.states().await;
        }
        assert_eq!(calls.load(Ordering::Relaxed), 1);

        tokio::time::advance(Duration::from_secs(2)).await;
        delay.store(1500, Ordering::Relaxed);
        assert_eq!(ready.states().await, [PartState::Slow]);
        let response = ready.respond().await;
        assert_eq!(response.status(), StatusCode::OK, "slow is still ready");

        tokio::time::advance(Duration::from_secs(2)).await;
        delay.store(5000, Ordering::Relaxed);
        assert_eq!(ready.states().await, [PartState::Unavailable]);
        tokio::time::advance(Duration::from_secs(2)).await;
        delay.store(u64::MAX, Ordering::Relaxed);
        let response = ready.respond().await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["detail"], "not ready: queue unavailable");
        assert_eq!(json["checks"]["queue"], "unavailable");
    }
}
