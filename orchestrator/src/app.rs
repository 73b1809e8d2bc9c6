//! The application state every handler and loop shares, built once from the
//! config: the task store, the two queues and the GPU controller.

use std::{sync::Arc, time::Duration};

use common::auth::Authenticator;
use gpu::{
    Ec2GpuHost, GpuController, GpuHandle, GpuHost, GpuWork, NoGpuHost, WorkError, WorkSnapshot,
};
use tokio_util::sync::CancellationToken;

use common::{
    rate_limit::RateLimit,
    readiness::{Part, Readiness, check},
};

use crate::{
    config::{OrchestratorConfig, QueueSettings, TaskStoreSettings},
    jobs::watch::JobWatcher,
    jobs::{QueueName, kinds::gpu_job_types},
    jobs::{admission::Backlog, image_urls::ImageUrlPolicy, submit::Intake},
    queue::JobQueue,
    tasks::TaskStore,
};

pub use crate::stores::{StartupError, Stores};

pub struct App {
    pub tasks: Arc<dyn TaskStore>,
    pub gpu_queue: Arc<dyn JobQueue>,
    pub cpu_queue: Arc<dyn JobQueue>,
    /// The GPU controller, running from start-up.
    pub gpu: GpuHandle,
    pub admin_token: Option<String>,
    pub job_timeout: Duration,
    pub sweep_interval: Duration,
    /// Cancelled on shutdown; stops every background loop.
    pub shutdown: CancellationToken,
    /// Workers this process runs itself (`GPU_BACKEND_URL`, `CPU_BACKEND_URL`).
    pub local_workers: Vec<crate::worker::WorkerSettings>,
    /// The shared reader behind every job event stream.
    pub watcher: JobWatcher,
    /// Which backends are in use, for the logs and `GET /`.
    pub backends: Backends,
    /// Where the image URLs of a job may point.
    pub image_urls: Arc<ImageUrlPolicy>,
    /// The per-client rate limit on submits.
    pub jobs_rate: Arc<RateLimit>,
    /// What a submit needs: the stores, admission control, the GPU nudge.
    pub intake: Arc<Intake>,
    /// Who is calling; installed as a layer by the router.
    pub auth: Arc<Authenticator>,
    /// `/ready`: the task store and both queues.
    pub readiness: Readiness,
}

/// Requests the accounts layer leaves alone besides health, readiness,
/// metrics and the OpenAPI document: GPU start/stop carry their own bearer
/// token (`ADMIN_TOKEN`), not a user's.
pub fn is_public(method: &http::Method, path: &str) -> bool {
    *method == http::Method::POST && matches!(path, "/api/v1/gpu/start" | "/api/v1/gpu/stop")
}

/// A readiness check is `unavailable` past the dependency timeout and a
/// second (the part's own bounded error shows first), `slow` past half.
fn ready_timeout(config: &OrchestratorConfig) -> Duration {
    config.aws.dependency_timeout + Duration::from_secs(1)
}

fn queue_check(queue: &Arc<dyn JobQueue>) -> common::readiness::Check {
    let queue = queue.clone();
    check(move || {
        let queue = queue.clone();
        async move { queue.ping().await }
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Backends {
    pub task_store: &'static str,
    pub queues: &'static str,
    pub gpu_host: &'static str,
}

impl App {
    pub async fn from_config(config: &OrchestratorConfig) -> Result<Self, StartupError> {
        // The metrics recorder must exist before anything counts.
        crate::metrics::metrics_handle();
        let auth = Arc::new(Authenticator::new(&config.auth)?.with_public(is_public));
        let Stores {
            tasks,
            gpu_queue,
            cpu_queue,
            one_file,
        } = Stores::open(config).await?;
        let gpu_host: Arc<dyn GpuHost> = match &config.gpu.instance_id {
            Some(id) => Arc::new(Ec2GpuHost::new(&config.aws, id).await),
            None => Arc::new(NoGpuHost),
        };
        let backends = Backends {
            task_store: match config.task_store {
                TaskStoreSettings::Sqlite => "sqlite",
                TaskStoreSettings::DynamoDb { .. } => "dynamodb",
            },
            queues: match config.queues {
                QueueSettings::Embedded { .. } => "sqlite",
                QueueSettings::Sqs { .. } => "sqs",
            },
            gpu_host: if config.gpu.instance_id.is_some() {
                "ec2"
            } else {
                "none"
            },
        };
        tracing::info!(?backends, "orchestrator parts ready");
        // The embedded queues live in this process: with no worker for one,
        // its jobs are accepted and wait forever.
        if matches!(config.queues, QueueSettings::Embedded { .. }) {
            for (queue, variable) in [
                (QueueName::Gpu, "GPU_BACKEND_URL"),
                (QueueName::Cpu, "CPU_BACKEND_URL"),
            ] {
                if !config.local_workers.iter().any(|(q, _)| *q == queue) {
                    tracing::warn!(
                        queue = queue.as_str(),
                        "embedded {} queue has no consumer: its jobs will wait until one runs; set {variable} to the inference API of a host (or run `orchestrator worker --queue {}` on the same DATA_DIR)",
                        queue.as_str(),
                        queue.as_str()
                    );
                }
            }
        }
        tracing::info!(
            allowed = config.image_urls.describe(),
            "job image URLs must point at these origins (IMAGE_URL_ORIGINS)"
        );
        let gpu_settings = config.gpu.controller.clone();
        let shutdown = CancellationToken::new();
        let work = Arc::new(QueueAndStoreWork {
            queue: gpu_queue.clone(),
            tasks: tasks.clone(),
            idle_window: gpu_settings.idle_timeout,
        });
        let gpu = GpuController::spawn(gpu_host, work, gpu_settings, shutdown.clone());
        let watcher = JobWatcher::spawn(tasks.clone(), config.events_interval, shutdown.clone());
        let image_urls = Arc::new(config.image_urls.clone());
        let intake = Arc::new(Intake {
            tasks: tasks.clone(),
            gpu_queue: gpu_queue.clone(),
            cpu_queue: cpu_queue.clone(),
            one_file,
            image_urls: image_urls.clone(),
            admission: config.admission.clone(),
            backlog: Backlog::default(),
            gpu: gpu.clone(),
            shutdown: shutdown.clone(),
        });
        Ok(Self {
            tasks: tasks.clone(),
            gpu_queue: gpu_queue.clone(),
            cpu_queue: cpu_queue.clone(),
            gpu,
            watcher,
            local_workers: config
                .local_workers
                .iter()
                .map(|(queue, url)| {
                    let defaults = crate::worker::WorkerSettings::new(*queue, url);
                    crate::worker::WorkerSettings {
                        image_urls: image_urls.clone(),
                        concurrency: config.worker_concurrency,
                        poll_min: config.worker_poll,
                        poll_max: config.worker_poll * 10,
                        // On the embedded queues the configured visibility is
                        // the in-process worker's lease.
                        visibility: match config.queues {
                            QueueSettings::Embedded {
                                visibility_timeout, ..
                            } => visibility_timeout,
                            QueueSettings::Sqs { .. } => defaults.visibility,
                        },
                        ..defaults
                    }
                })
                .collect(),
            admin_token: config.admin_token.clone(),
            job_timeout: config.job_timeout,
            sweep_interval: config.sweep_interval,
            shutdown,
            backends,
            image_urls,
            jobs_rate: RateLimit::new("job submits", config.admission.jobs_rate),
            intake,
            readiness: Readiness::new(
                vec![
                    Part {
                        name: "task store",
                        key: "task_store",
                        check: {
                            let tasks = tasks.clone();
                            check(move || {
                                let tasks = tasks.clone();
                                async move { tasks.ping().await }
                            })
                        },
                    },
                    Part {
                        name: "GPU queue",
                        key: "gpu_queue",
                        check: queue_check(&gpu_queue),
                    },
                    Part {
                        name: "CPU queue",
                        key: "cpu_queue",
                        check: queue_check(&cpu_queue),
                    },
                ],
                ready_timeout(config),
            ),
            auth,
        })
    }

    pub fn queue(&self, name: QueueName) -> &Arc<dyn JobQueue> {
        match name {
            QueueName::Gpu => &self.gpu_queue,
            QueueName::Cpu => &self.cpu_queue,
        }
    }
}

/// GPU work as the controller needs it: the GPU queue's depth and the GPU
/// jobs in the task store.
struct QueueAndStoreWork {
    queue: Arc<dyn JobQueue>,
    tasks: Arc<dyn TaskStore>,
    idle_window: Duration,
}

#[async_trait::async_trait]
impl GpuWork for QueueAndStoreWork {
    async fn snapshot(&self) -> Result<WorkSnapshot, WorkError> {
        let since = crate::unix_now() - i64::try_from(self.idle_window.as_secs()).unwrap_or(0) * 2;
        let job_types = gpu_job_types();
        let (depth, activity) = tokio::join!(
            self.queue.depth(),
            self.tasks.gpu_activity(&job_types, since)
        );
        let depth = depth.map_err(|e| WorkError::new("GPU queue", e))?;
        let (processing, last_update) = activity.map_err(|e| WorkError::new("task store", e))?;
        Ok(WorkSnapshot {
            queued: depth.visible,
            in_flight: depth.in_flight,
            processing,
            last_job_update: last_update
                .and_then(|s| u64::try_from(s).ok())
                .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s)),
        })
    }
}
