//! The task store and the two queues, opened from the config: what both the
//! API (`App`) and a worker host (`worker::cli`) need.

use std::{sync::Arc, time::Duration};

use common::{
    auth::AuthError,
    sqlite::{SqliteOptions, SqlitePools},
};

use crate::{
    config::{OrchestratorConfig, QueueSettings, TaskStoreSettings},
    queue::{EmbeddedQueue, JobQueue, OneFileIntake, QueueName, SqsQueue},
    tasks::{DynamoTaskStore, SqliteTaskStore, TaskStore},
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("embedded database: {0}")]
    Sqlite(#[from] sqlx::Error),
    #[error("embedded database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Auth(#[from] AuthError),
}

/// The task store and the two queues: what both the API and a worker need.
#[derive(Clone)]
pub struct Stores {
    pub tasks: Arc<dyn TaskStore>,
    pub gpu_queue: Arc<dyn JobQueue>,
    pub cpu_queue: Arc<dyn JobQueue>,
    /// Set when the task table and the queues live in the same SQLite file:
    /// a new job's record and message are then written in one transaction.
    pub one_file: Option<OneFileIntake>,
}

impl Stores {
    pub async fn open(config: &OrchestratorConfig) -> Result<Self, StartupError> {
        let needs_sqlite = matches!(config.task_store, TaskStoreSettings::Sqlite)
            || matches!(config.queues, QueueSettings::Embedded { .. });
        let sqlite = if needs_sqlite {
            Some(open_sqlite(config).await?)
        } else {
            None
        };

        let tasks: Arc<dyn TaskStore> = match (&config.task_store, &sqlite) {
            (TaskStoreSettings::DynamoDb { table }, _) => {
                Arc::new(DynamoTaskStore::new(&config.aws, table).await)
            }
            (TaskStoreSettings::Sqlite, Some(pool)) => Arc::new(SqliteTaskStore::new(pool.clone())),
            (TaskStoreSettings::Sqlite, None) => unreachable!("opened above when needed"),
        };
        let mut embedded = None;
        let (gpu_queue, cpu_queue): (Arc<dyn JobQueue>, Arc<dyn JobQueue>) =
            match (&config.queues, &sqlite) {
                (
                    QueueSettings::Sqs {
                        gpu_url,
                        cpu_url,
                        gpu_dlq_url,
                        cpu_dlq_url,
                    },
                    _,
                ) => {
                    let client = crate::queue::sqs_client(&config.aws).await;
                    let (gpu, cpu) = tokio::join!(
                        SqsQueue::connect(client.clone(), gpu_url, gpu_dlq_url.as_deref()),
                        SqsQueue::connect(client, cpu_url, cpu_dlq_url.as_deref()),
                    );
                    (Arc::new(gpu), Arc::new(cpu))
                }
                (
                    QueueSettings::Embedded {
                        max_receive_count, ..
                    },
                    Some(pool),
                ) => {
                    let intake = OneFileIntake {
                        gpu: Arc::new(EmbeddedQueue::new(pool.clone(), "gpu", *max_receive_count)),
                        cpu: Arc::new(EmbeddedQueue::new(pool.clone(), "cpu", *max_receive_count)),
                    };
                    embedded = Some(intake.clone());
                    (intake.gpu, intake.cpu)
                }
                (QueueSettings::Embedded { .. }, None) => unreachable!("opened above when needed"),
            };
        let one_file = match config.task_store {
            TaskStoreSettings::Sqlite => embedded,
            TaskStoreSettings::DynamoDb { .. } => None,
        };
        Ok(Self {
            tasks,
            gpu_queue,
            cpu_queue,
            one_file,
        })
    }

    pub fn queue(&self, name: QueueName) -> &Arc<dyn JobQueue> {
        match name {
            QueueName::Gpu => &self.gpu_queue,
            QueueName::Cpu => &self.cpu_queue,
        }
    }
}

/// The orchestrator's SQLite file: its task table and embedded queues.
async fn open_sqlite(config: &OrchestratorConfig) -> Result<SqlitePools, StartupError> {
    tokio::fs::create_dir_all(&config.data_dir).await?;
    let path = config.sqlite_path().display().to_string();
    Ok(SqlitePools::open(&SqliteOptions {
        url: &path,
        migrator: Some(&MIGRATOR),
        readers: 4,
        acquire_timeout: Duration::from_secs(5),
        foreign_keys: false,
    })
    .await?)
}
