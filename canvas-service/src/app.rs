//! The application state every handler shares, built once from the config.

use std::sync::Arc;

use common::{
    auth::{AuthError, AuthMode, Authenticator},
    rate_limit::RateLimit,
    readiness::{Part, Readiness, check},
};

use crate::{
    config::{CanvasConfig, StorageSettings},
    db::{self, CanvasStore, MeteredCanvasStore},
    spool::UploadSlots,
    storage::{LocalStore, MeteredObjectStore, ObjectStore, S3Store},
    telemetry::Metrics,
};

pub struct App {
    /// The database and the object store, each timed for `/metrics`.
    pub db: Arc<dyn CanvasStore>,
    pub store: Arc<dyn ObjectStore>,
    /// Set when objects live on local disk: the service then serves them
    /// at `/<key>` itself.
    pub local_files: Option<Arc<LocalStore>>,
    pub max_upload_bytes: u64,
    /// Per-client limits on uploads and new sessions.
    pub uploads_rate: Arc<RateLimit>,
    /// `/ready`: the database and the object store.
    pub readiness: Readiness,
    pub sessions_rate: Arc<RateLimit>,
    pub max_image_pixels: u64,
    pub(crate) upload_slots: UploadSlots,
    /// Who is calling; installed as a layer by the router.
    pub auth: Arc<Authenticator>,
    /// This service's own metrics registry, rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// A readiness check is `unavailable` past the longest bound of its parts
/// and a second (their own bounded errors show first), `slow` past half.
fn ready_timeout(config: &CanvasConfig) -> std::time::Duration {
    let objects = match &config.storage {
        StorageSettings::S3 { aws, .. } => aws.dependency_timeout,
        StorageSettings::Local { .. } => std::time::Duration::ZERO,
    };
    config.database.acquire_timeout.max(objects) + std::time::Duration::from_secs(1)
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("object store: {0}")]
    Storage(#[from] std::io::Error),
    #[error("{0}")]
    Auth(#[from] AuthError),
}

impl App {
    pub async fn from_config(config: &CanvasConfig) -> Result<Self, StartupError> {
        let metrics = Metrics::new();
        let db: Arc<dyn CanvasStore> = Arc::new(MeteredCanvasStore::new(
            db::connect(&config.database).await?,
            metrics.clone(),
        ));
        let (store, local_files): (Arc<dyn ObjectStore>, _) = match &config.storage {
            StorageSettings::Local {
                dir,
                public_base_url,
            } => {
                let local = Arc::new(LocalStore::open(dir, public_base_url).await?);
                (local.clone(), Some(local))
            }
            StorageSettings::S3 {
                bucket,
                urls,
                spool_dir,
                aws,
            } => (
                Arc::new(S3Store::new(aws, bucket, urls.clone(), spool_dir.clone()).await?),
                None,
            ),
        };
        let store: Arc<dyn ObjectStore> = Arc::new(MeteredObjectStore::new(store, metrics.clone()));
        tracing::info!(
            database = if config.database.is_postgres() {
                "postgres"
            } else {
                "sqlite"
            },
            objects = if local_files.is_some() {
                "local directory"
            } else {
                "s3"
            },
            "canvas-service parts ready"
        );
        let auth =
            Arc::new(Authenticator::new(&config.auth)?.with_public(crate::routes::is_public));
        Ok(Self {
            db: db.clone(),
            store: store.clone(),
            local_files,
            max_upload_bytes: config.max_upload_bytes,
            readiness: Readiness::new(
                vec![
                    Part {
                        name: "database",
                        key: "database",
                        check: {
                            let db = db.clone();
                            check(move || {
                                let db = db.clone();
                                async move { db.ping().await }
                            })
                        },
                    },
                    Part {
                        name: "object store",
                        key: "object_store",
                        check: {
                            let store = store.clone();
                            check(move || {
                                let store = store.clone();
                                async move { store.check().await }
                            })
                        },
                    },
                ],
                ready_timeout(config),
            ),
            uploads_rate: RateLimit::new("uploads", config.uploads_rate),
            sessions_rate: RateLimit::new("new sessions", config.sessions_rate),
            max_image_pixels: config.max_image_pixels,
            upload_slots: UploadSlots::new(config.max_concurrent_uploads),
            auth,
            metrics,
        })
    }

    /// Whether sessions are scoped to their owner. With accounts off every
    /// caller is anonymous, and the session id alone is the capability, as
    /// before accounts (an owned session stays reachable by its id).
    pub fn checks_owners(&self) -> bool {
        self.auth.mode() != AuthMode::Off
    }
}
