//! An [`ObjectStore`] that times every call of the one it wraps that may
//! reach the store, for the `canvas_object_store_call_duration_seconds`
//! metric. Building a URL is not timed: it never leaves the process.

use std::{path::Path, sync::Arc};

use bytes::Bytes;

use super::{ObjectStore, StoreError};
use crate::telemetry::{CallOutcome, Metrics};

impl CallOutcome for StoreError {
    fn outcome(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Other(_) => "error",
        }
    }
}

pub struct MeteredObjectStore {
    inner: Arc<dyn ObjectStore>,
    metrics: Arc<Metrics>,
}

impl MeteredObjectStore {
    pub fn new(inner: Arc<dyn ObjectStore>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait::async_trait]
impl ObjectStore for MeteredObjectStore {
    fn spool_dir(&self) -> &Path {
        self.inner.spool_dir()
    }

    async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> Result<(), StoreError> {
        let call = self.inner.put_file(key, path, content_type);
        self.metrics.object_store_call("put", call).await
    }

    async fn put_bytes(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<(), StoreError> {
        let call = self.inner.put_bytes(key, bytes, content_type);
        self.metrics.object_store_call("put", call).await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let call = self.inner.exists(key);
        self.metrics.object_store_call("exists", call).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let call = self.inner.delete(key);
        self.metrics.object_store_call("delete", call).await
    }

    async fn url(&self, key: &str) -> Result<String, StoreError> {
        self.inner.url(key).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.metrics
            .object_store_call("check", self.inner.check())
            .await
    }
}
