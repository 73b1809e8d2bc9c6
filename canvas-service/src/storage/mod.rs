//! The object store: where image bytes live. A directory on disk by default
//! (whose objects the service serves itself, as a CDN would), S3 in
//! production. Chosen once at start-up; callers hold an `Arc<dyn
//! ObjectStore>`. Nothing here speaks HTTP: the routes map [`StoreError`] to
//! answers.

mod key;
mod local;
mod metered;
mod s3;

use std::path::Path;

use bytes::Bytes;

pub use key::{KEY_PATTERN, KeyError, key_schema, validate_key};
pub use local::{LocalStore, ObjectReader, StoredObject};
pub use metered::MeteredObjectStore;
pub use s3::{PublicUrls, S3Store};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or answered with a server error:
    /// worth a 503 and a retry.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    #[error("object store error: {0}")]
    Other(String),
}

#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// A directory for spooling incoming uploads before they are stored. For
    /// the local store it is on the same file system, so storing is a rename.
    fn spool_dir(&self) -> &Path;

    /// Stores the file at `path` under `key`. The store may move the file
    /// away; the caller removes whatever is left at `path` afterwards.
    async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> Result<(), StoreError>;

    /// Stores a small object held in memory.
    async fn put_bytes(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<(), StoreError>;

    async fn exists(&self, key: &str) -> Result<bool, StoreError>;

    /// Removes the object; removing one that is not there is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// The absolute URL a browser (and a GPU host) fetches the object from;
    /// its path is exactly `/<key>`, as the frontend derives keys from it.
    async fn url(&self, key: &str) -> Result<String, StoreError>;

    /// Readiness: can the store be reached and written to?
    async fn check(&self) -> Result<(), StoreError>;
}
