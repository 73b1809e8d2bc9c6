//! Canvas metadata: sessions and the images placed on them. SQLite by
//! default, Supabase Postgres in production; both behind [`CanvasStore`],
//! chosen once by [`connect`].

mod metered;
mod postgres;
mod sqlite;

use std::sync::Arc;

use uuid::Uuid;

pub use metered::MeteredCanvasStore;

use crate::config::DatabaseSettings;

/// An image as it sits on a canvas.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    pub key: String,
    pub x: f64,
    pub y: f64,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// A canvas session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The Supabase user it belongs to; `None` for an anonymous session (or
    /// one created before accounts), which anyone holding its id may use.
    pub owner_id: Option<String>,
}

/// What is known about an image when it is added to a session.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub session_id: Uuid,
    pub key: String,
    pub content_type: Option<String>,
    pub size: Option<i64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had in time, or it broke: answer 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err.to_string()),
            // SQLite's "database is locked" after the busy timeout is load,
            // not a bug: worth a retry.
            sqlx::Error::Database(_) if common::sqlite::is_busy(&err) => {
                Self::Unavailable(err.to_string())
            }
            other => Self::Other(other.to_string()),
        }
    }
}

#[async_trait::async_trait]
pub trait CanvasStore: Send + Sync + 'static {
    /// Creates a session, owned by `owner_id` when a signed-in user asked.
    async fn create_session(&self, id: Uuid, owner_id: Option<&str>) -> Result<(), DbError>;

    /// The session, `None` when there is no such session.
    async fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, DbError>;

    /// Adds the image to its session unless that key is already there, and
    /// returns the session's row for the key (the existing one, if any).
    /// `None` when the session does not exist.
    async fn add_image(&self, image: &NewImage) -> Result<Option<ImageRecord>, DbError>;

    /// The session's images, oldest first (later ones are drawn on top).
    async fn list_images(&self, session_id: Uuid) -> Result<Vec<ImageRecord>, DbError>;

    /// Moves the image; `false` when the key is not in the session.
    async fn update_position(
        &self,
        session_id: Uuid,
        key: &str,
        x: f64,
        y: f64,
    ) -> Result<bool, DbError>;

    /// Takes the key off the session; `false` when it was not there.
    async fn remove_image(&self, session_id: Uuid, key: &str) -> Result<bool, DbError>;

    /// Whether a session other than `session_id` still shows `key`.
    async fn key_used_elsewhere(&self, session_id: Uuid, key: &str) -> Result<bool, DbError>;

    /// Readiness: one round trip.
    async fn ping(&self) -> Result<(), DbError>;
}

/// Opens the database named by the settings and, unless turned off, brings
/// its schema up to date.
pub async fn connect(settings: &DatabaseSettings) -> Result<Arc<dyn CanvasStore>, sqlx::Error> {
    if settings.is_postgres() {
        Ok(Arc::new(
            postgres::PostgresCanvasStore::connect(settings).await?,
        ))
    } else {
        Ok(Arc::new(
            sqlite::SqliteCanvasStore::connect(settings).await?,
        ))
    }
}

fn dimension(value: Option<i64>) -> Option<u32> {
    value.and_then(|v| u32::try_from(v).ok())
}
