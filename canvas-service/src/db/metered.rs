//! A [`CanvasStore`] that times every call of the one it wraps, for the
//! `canvas_database_call_duration_seconds` metric.

use std::sync::Arc;

use uuid::Uuid;

use super::{CanvasStore, DbError, ImageRecord, NewImage, SessionRecord};
use crate::telemetry::{CallOutcome, Metrics};

impl CallOutcome for DbError {
    fn outcome(&self) -> &'static str {
        match self {
            DbError::Unavailable(_) => "unavailable",
            DbError::Other(_) => "error",
        }
    }
}

pub struct MeteredCanvasStore {
    inner: Arc<dyn CanvasStore>,
    metrics: Arc<Metrics>,
}

impl MeteredCanvasStore {
    pub fn new(inner: Arc<dyn CanvasStore>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait::async_trait]
impl CanvasStore for MeteredCanvasStore {
    async fn create_session(&self, id: Uuid, owner_id: Option<&str>) -> Result<(), DbError> {
        let call = self.inner.create_session(id, owner_id);
        self.metrics.database_call("create_session", call).await
    }

    async fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, DbError> {
        let call = self.inner.session(id);
        self.metrics.database_call("session", call).await
    }

    async fn add_image(&self, image: &NewImage) -> Result<Option<ImageRecord>, DbError> {
        let call = self.inner.add_image(image);
        self.metrics.database_call("add_image", call).await
    }

    async fn list_images(&self, session_id: Uuid) -> Result<Vec<ImageRecord>, DbError> {
        let call = self.inner.list_images(session_id);
        self.metrics.database_call("list_images", call).await
    }

    async fn update_position(
        &self,
        session_id: Uuid,
        key: &str,
        x: f64,
        y: f64,
    ) -> Result<bool, DbError> {
        let call = self.inner.update_position(session_id, key, x, y);
        self.metrics.database_call("update_position", call).await
    }

    async fn remove_image(&self, session_id: Uuid, key: &str) -> Result<bool, DbError> {
        let call = self.inner.remove_image(session_id, key);
        self.metrics.database_call("remove_image", call).await
    }

    async fn key_used_elsewhere(&self, session_id: Uuid, key: &str) -> Result<bool, DbError> {
        let call = self.inner.key_used_elsewhere(session_id, key);
        self.metrics.database_call("key_used_elsewhere", call).await
    }

    async fn ping(&self) -> Result<(), DbError> {
        self.metrics.database_call("ping", self.inner.ping()).await
    }
}
