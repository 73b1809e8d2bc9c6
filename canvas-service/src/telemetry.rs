//! Prometheus metrics of the canvas service, rendered at `/metrics`. Metric
//! names are constants here and described once, when the recorder is built.
//!
//! Each [`App`](crate::App) owns its recorder instead of installing a global
//! one: the launcher runs this service and the orchestrator in one process,
//! where a single global recorder would mix (or, installed twice, lose) the
//! two services' series.

use std::{sync::Arc, time::Instant};

use axum::http::StatusCode;
use metrics::Recorder;
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub const UPLOADS: &str = "canvas_uploads_total";
pub const UPLOAD_BYTES: &str = "canvas_upload_bytes_total";
pub const UPLOAD_SIZE: &str = "canvas_upload_size_bytes";
pub const HTTP_DURATION: &str = "canvas_http_request_duration_seconds";
pub const DATABASE_DURATION: &str = "canvas_database_call_duration_seconds";
pub const OBJECT_STORE_DURATION: &str = "canvas_object_store_call_duration_seconds";

/// Latency buckets (seconds) for requests and calls to the parts; S3 puts of
/// large files take tens of seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upload size buckets (bytes): 4 KiB to 64 MiB in powers of four.
const SIZE_BUCKETS: &[f64] = &[
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// How often histogram samples are folded into their buckets when nobody
/// scrapes `/metrics` (otherwise they pile up in memory until the next
/// render).
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    upkeep: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Metrics {
    fn drop(&mut self) {
        if let Some(upkeep) = &self.upkeep {
            upkeep.abort();
        }
    }
}

/// How a call to a part ended, as the `result` label says it.
pub trait CallOutcome {
    /// `ok`, `unavailable` (worth a retry: the part is down or slow) or
    /// `error`.
    fn outcome(&self) -> &'static str;
}

impl Metrics {
    /// A recorder of its own, with its series described. Within a Tokio
    /// runtime it also starts the upkeep task (stopped when dropped).
    pub fn new() -> Arc<Self> {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(UPLOAD_SIZE.into()), SIZE_BUCKETS))
            // The bucket lists are constants and not empty.
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_counter!(UPLOADS, "Uploads received, by result");
            metrics::describe_counter!(
                UPLOAD_BYTES,
                "Bytes of uploaded files received, by result (a refused file counts up to where it was cut)"
            );
            metrics::describe_histogram!(
                UPLOAD_SIZE,
                metrics::Unit::Bytes,
                "Size of the files of stored uploads"
            );
            metrics::describe_histogram!(
                HTTP_DURATION,
                metrics::Unit::Seconds,
                "HTTP request latency, by method, route and status"
            );
            metrics::describe_histogram!(
                DATABASE_DURATION,
                metrics::Unit::Seconds,
                "Database call latency, by operation and result"
            );
            metrics::describe_histogram!(
                OBJECT_STORE_DURATION,
                metrics::Unit::Seconds,
                "Object store call latency, by operation and result"
            );
        });
        let upkeep = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let handle = handle.clone();
            runtime.spawn(async move {
                let mut every = tokio::time::interval(UPKEEP_INTERVAL);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    handle.run_upkeep();
                }
            })
        });
        Arc::new(Self {
            recorder,
            handle,
            upkeep,
        })
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    fn with<T>(&self, record: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder as &dyn Recorder, record)
    }

    pub fn http_request(&self, method: &'static str, route: String, status: u16, seconds: f64) {
        self.with(|| {
            metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route, "status" => status.to_string())
                .record(seconds);
        });
    }

    /// One upload that ended with `result`, having received `bytes` of its
    /// file.
    pub fn upload(&self, result: &'static str, bytes: u64) {
        self.with(|| {
            metrics::counter!(UPLOADS, "result" => result).increment(1);
            metrics::counter!(UPLOAD_BYTES, "result" => result).increment(bytes);
            if result == STORED {
                metrics::histogram!(UPLOAD_SIZE).record(bytes as f64);
            }
        });
    }

    /// Times one database call (`operation`: the store method's name).
    pub async fn database_call<T, E: CallOutcome>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.time(DATABASE_DURATION, operation, call).await
    }

    /// Times one object store call (`operation`: the store method's name).
    pub async fn object_store_call<T, E: CallOutcome>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.time(OBJECT_STORE_DURATION, operation, call).await
    }

    async fn time<T, E: CallOutcome>(
        &self,
        name: &'static str,
        operation: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        let seconds = started.elapsed().as_secs_f64();
        self.with(|| {
            metrics::histogram!(name, "operation" => operation, "result" => outcome)
                .record(seconds);
        });
        result
    }

    /// Starts counting one upload; see [`UploadMeter`].
    pub fn upload_meter(self: &Arc<Self>) -> UploadMeter {
        UploadMeter {
            metrics: self.clone(),
            bytes: 0,
            finished: false,
        }
    }
}

/// The `result` of an upload that was stored.
pub const STORED: &str = "stored";

/// Counts one upload from its first byte to its answer. Dropped before it
/// is finished (the client went away, the request was cut), it counts the
/// upload as `aborted`.
pub struct UploadMeter {
    metrics: Arc<Metrics>,
    /// Bytes of the file received so far.
    pub bytes: u64,
    finished: bool,
}

impl UploadMeter {
    /// Records the upload under the result its answer's status stands for.
    pub fn finish(mut self, status: StatusCode) {
        self.finished = true;
        self.metrics.upload(upload_result(status), self.bytes);
    }
}

impl Drop for UploadMeter {
    fn drop(&mut self) {
        if !self.finished {
            self.metrics.upload("aborted", self.bytes);
        }
    }
}

/// The `result` label of an upload answered with `status`; a short, fixed
/// set, so a client cannot mint new series.
fn upload_result(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => STORED,
        408 => "timed_out",
        413 => "too_large",
        415 => "unsupported_type",
        503 => "unavailable",
        400..=499 => "invalid",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_results_are_a_fixed_set() {
        assert_eq!(upload_result(StatusCode::OK), "stored");
        assert_eq!(upload_result(StatusCode::PAYLOAD_TOO_LARGE), "too_large");
        assert_eq!(upload_result(StatusCode::NOT_FOUND), "invalid");
        assert_eq!(upload_result(StatusCode::INTERNAL_SERVER_ERROR), "error");
    }

    #[tokio::test]
    async fn a_dropped_meter_counts_an_aborted_upload() {
        let metrics = Metrics::new();
        let mut meter = metrics.upload_meter();
        meter.bytes = 10;
        drop(meter);
        metrics.upload_meter().finish(StatusCode::OK);
        let text = metrics.render();
        assert!(
            text.contains("canvas_uploads_total{result=\"aborted\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("canvas_upload_bytes_total{result=\"aborted\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("canvas_uploads_total{result=\"stored\"} 1"),
            "{text}"
        );
    }
}
