//! Prometheus metrics. Names are constants here, described once at start-up;
//! `/metrics` renders them.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const JOBS_SUBMITTED: &str = "orchestrator_jobs_submitted_total";
pub const STATUS_TRANSITIONS: &str = "orchestrator_job_status_transitions_total";
pub const QUEUE_MESSAGES: &str = "orchestrator_queue_messages";
pub const GPU_STATE: &str = "orchestrator_gpu_instance_state";
pub const HTTP_DURATION: &str = "orchestrator_http_request_duration_seconds";

/// The process-wide recorder (a global, so installed once however many apps
/// a test process builds).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(HTTP_DURATION.to_owned()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (a test harness): render ours
                // without installing it globally.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            // Histogram samples wait in the recorder until drained; drain
            // them on a timer so memory stays flat when nothing scrapes.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let upkeep = handle.clone();
                runtime.spawn(async move {
                    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
                    loop {
                        every.tick().await;
                        upkeep.run_upkeep();
                    }
                });
            }
            metrics::describe_counter!(JOBS_SUBMITTED, "Jobs accepted, by kind");
            metrics::describe_counter!(
                STATUS_TRANSITIONS,
                "Status changes written by the orchestrator"
            );
            metrics::describe_gauge!(
                QUEUE_MESSAGES,
                "Messages per queue: visible, in flight, dead"
            );
            metrics::describe_gauge!(GPU_STATE, "1 for the GPU instance's current state");
            metrics::describe_histogram!(HTTP_DURATION, "HTTP request latency");
            handle
        })
        .clone()
}

pub fn job_submitted(kind: &'static str) {
    metrics::counter!(JOBS_SUBMITTED, "kind" => kind).increment(1);
}

pub fn status_changed(from: &'static str, to: &'static str) {
    metrics::counter!(STATUS_TRANSITIONS, "from" => from, "to" => to).increment(1);
}

pub fn queue_depth(queue: &'static str, state: &'static str, count: u64) {
    metrics::gauge!(QUEUE_MESSAGES, "queue" => queue, "state" => state).set(count as f64);
}

pub fn http_request(method: String, route: String, status: u16, seconds: f64) {
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route, "status" => status.to_string())
        .record(seconds);
}

/// One gauge per state, 1 for the current one, so a dashboard can plot it.
pub fn gpu_state(status: &gpu::GpuStatus) {
    for state in [
        "pending",
        "running",
        "stopping",
        "stopped",
        "shutting-down",
        "terminated",
        "unknown",
    ] {
        let current = if status.state() == state { 1.0 } else { 0.0 };
        metrics::gauge!(GPU_STATE, "state" => state).set(current);
    }
}
