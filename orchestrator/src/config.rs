//! The orchestrator's settings, read once at start-up. Each part switches to
//! AWS by the variables the deployment already sets (see the README):
//! - queues: SQS when `SQS_QUEUE_URL` is set (then `CPU_SQS_QUEUE_URL` too);
//! - task store: DynamoDB when `DYNAMODB_TABLE` or `SQS_QUEUE_URL` is set
//!   (the adapters on the hosts write to the table, so real queues mean the
//!   real table), else a SQLite table;
//! - GPU host: EC2 when `GPU_INSTANCE_ID` is set, else none.

use std::{path::PathBuf, time::Duration};

use common::{
    auth::AuthSettings,
    aws::AwsSettings,
    config::{ConfigError, Env, HttpSettings},
    telemetry::LogFormat,
};

use crate::jobs::{admission::AdmissionSettings, image_urls::ImageUrlPolicy};

pub const DEFAULT_PORT: u16 = 8080;

#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    pub http: HttpSettings,
    pub log_format: LogFormat,
    pub data_dir: PathBuf,
    pub task_store: TaskStoreSettings,
    pub queues: QueueSettings,
    pub gpu: GpuHostSettings,
    /// `ADMIN_TOKEN`: bearer token for the GPU start/stop endpoints; unset
    /// disables them.
    pub admin_token: Option<String>,
    /// `JOB_TIMEOUT_MINUTES`: a `processing` job with no update for this long
    /// is marked failed.
    pub job_timeout: Duration,
    /// How often the dead-letter drain and the reaper run.
    pub sweep_interval: Duration,
    /// How often the shared watcher re-reads the jobs that event streams
    /// follow (`EVENTS_POLL_MILLIS`).
    pub events_interval: Duration,
    /// `GPU_BACKEND_URL` / `CPU_BACKEND_URL`: inference APIs this process
    /// drives itself (a complete system on a laptop), each with
    /// `WORKER_CONCURRENCY` slots.
    pub local_workers: Vec<(crate::jobs::QueueName, String)>,
    pub worker_concurrency: usize,
    /// `WORKER_POLL_MILLIS`: the in-process worker's first status poll
    /// interval (it grows ×1.5 up to ten times this).
    pub worker_poll: Duration,
    pub aws: AwsSettings,
    /// `IMAGE_URL_ORIGINS` (or the canvas service's own origins): where the
    /// image URLs of a job may point.
    pub image_urls: ImageUrlPolicy,
    pub admission: AdmissionSettings,
    /// `AUTH_MODE` and the Supabase project that signs access tokens.
    pub auth: AuthSettings,
}

#[derive(Debug, Clone)]
pub enum TaskStoreSettings {
    Sqlite,
    DynamoDb { table: String },
}

#[derive(Debug, Clone)]
pub enum QueueSettings {
    /// Durable queues in the orchestrator's SQLite file.
    Embedded {
        /// How long a received message stays invisible.
        visibility_timeout: Duration,
        /// Receives after which a message is dead-lettered.
        max_receive_count: u32,
    },
    Sqs {
        gpu_url: String,
        cpu_url: String,
        gpu_dlq_url: Option<String>,
        cpu_dlq_url: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct GpuHostSettings {
    /// `GPU_INSTANCE_ID`; `None` means no GPU host to manage.
    pub instance_id: Option<String>,
    /// `GPU_POLL_SECONDS`, `GPU_IDLE_MINUTES` (or `GPU_IDLE_SECONDS`, which
    /// wins: finer control for tests and tuning).
    pub controller: gpu::GpuSettings,
}

impl OrchestratorConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let http = HttpSettings::from_env(env, DEFAULT_PORT)?;
        let data_dir = PathBuf::from(env.string(&["DATA_DIR"]).unwrap_or_else(|| "./data".into()));
        let gpu_url = env.string(&["SQS_QUEUE_URL"]);
        let cpu_url = env.string(&["CPU_SQS_QUEUE_URL", "CPU_QUEUE_URL"]);
        let queues = match (gpu_url, cpu_url) {
            (Some(gpu_url), Some(cpu_url)) => QueueSettings::Sqs {
                gpu_url,
                cpu_url,
                gpu_dlq_url: env.string(&["GPU_DLQ_URL"]),
                cpu_dlq_url: env.string(&["CPU_DLQ_URL"]),
            },
            (None, None) => QueueSettings::Embedded {
                visibility_timeout: Duration::from_secs(
                    env.positive("QUEUE_VISIBILITY_SECONDS", 300)?,
                ),
                max_receive_count: u32::try_from(
                    env.positive::<u64>("QUEUE_MAX_RECEIVE_COUNT", 3)?,
                )
                .map_err(|_| ConfigError::new("QUEUE_MAX_RECEIVE_COUNT", "too large"))?,
            },
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "CPU_SQS_QUEUE_URL",
                    "SQS_QUEUE_URL is set, so the CPU queue URL must be set too (CPU_SQS_QUEUE_URL or CPU_QUEUE_URL)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "SQS_QUEUE_URL",
                    "CPU_SQS_QUEUE_URL is set, so the GPU queue URL SQS_QUEUE_URL must be set too",
                ));
            }
        };
        let task_store = match (env.string(&["DYNAMODB_TABLE"]), &queues) {
            (Some(table), _) => TaskStoreSettings::DynamoDb { table },
            (None, QueueSettings::Sqs { .. }) => TaskStoreSettings::DynamoDb {
                table: "task_store".to_owned(),
            },
            (None, QueueSettings::Embedded { .. }) => TaskStoreSettings::Sqlite,
        };
        Ok(Self {
            http,
            log_format: LogFormat::from_env(env)?,
            data_dir,
            task_store,
            queues,
            gpu: GpuHostSettings {
                instance_id: env.string(&["GPU_INSTANCE_ID"]),
                controller: {
                    let mut settings = gpu::GpuSettings::from_env(env)?;
                    if env.lookup(&["GPU_IDLE_SECONDS"]).is_some() {
                        settings.idle_timeout =
                            Duration::from_secs(env.positive("GPU_IDLE_SECONDS", 1800)?);
                    }
                    settings
                },
            },
            admin_token: env.string(&["ADMIN_TOKEN"]),
            job_timeout: Duration::from_secs(60 * env.positive("JOB_TIMEOUT_MINUTES", 60)?),
            sweep_interval: Duration::from_secs(env.positive("SWEEP_INTERVAL_SECONDS", 30)?),
            events_interval: Duration::from_millis(env.positive("EVENTS_POLL_MILLIS", 1000)?),
            local_workers: [
                (crate::jobs::QueueName::Gpu, "GPU_BACKEND_URL"),
                (crate::jobs::QueueName::Cpu, "CPU_BACKEND_URL"),
            ]
            .into_iter()
            .filter_map(|(queue, name)| env.string(&[name]).map(|url| (queue, url)))
            .collect(),
            worker_concurrency: usize::try_from(env.positive::<u64>("WORKER_CONCURRENCY", 1)?)
                .unwrap_or(1),
            worker_poll: Duration::from_millis(env.positive("WORKER_POLL_MILLIS", 500)?),
            aws: AwsSettings::from_env(env)?,
            image_urls: ImageUrlPolicy::from_env(env)?,
            admission: AdmissionSettings::from_env(
                env,
                env.positive("QUEUE_DEPTH_POLL_SECONDS", 5)?,
            )?,
            auth: AuthSettings::from_env(env)?,
        })
    }

    /// The embedded SQLite file (task table and queues).
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("orchestrator.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_configuration_is_embedded() {
        let config = OrchestratorConfig::from_env(&Env::default()).unwrap();
        assert_eq!(config.http.port, 8080);
        assert!(matches!(config.task_store, TaskStoreSettings::Sqlite));
        assert!(matches!(
            config.queues,
            QueueSettings::Embedded {
                max_receive_count: 3,
                ..
            }
        ));
        assert_eq!(config.gpu.instance_id, None);
        assert_eq!(
            config.gpu.controller.idle_timeout,
            Duration::from_secs(30 * 60)
        );
        assert_eq!(config.job_timeout, Duration::from_secs(60 * 60));
    }

    #[test]
    fn queue_urls_switch_to_aws_with_the_cpu_alias() {
        let env = Env::from_pairs([
            ("SQS_QUEUE_URL", "https://q/gpu"),
            ("CPU_QUEUE_URL", "https://q/cpu"),
        ]);
        let config = OrchestratorConfig::from_env(&env).unwrap();
        match (&config.queues, &config.task_store) {
            (QueueSettings::Sqs { cpu_url, .. }, TaskStoreSettings::DynamoDb { table }) => {
                assert_eq!(cpu_url, "https://q/cpu");
                assert_eq!(table, "task_store");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn half_configured_queues_name_the_missing_variable() {
        let err =
            OrchestratorConfig::from_env(&Env::from_pairs([("SQS_QUEUE_URL", "https://q/gpu")]))
                .unwrap_err();
        assert_eq!(err.variable, "CPU_SQS_QUEUE_URL");
        let err = OrchestratorConfig::from_env(&Env::from_pairs([("GPU_IDLE_MINUTES", "0")]))
            .unwrap_err();
        assert_eq!(err.variable, "GPU_IDLE_MINUTES");
    }
}
