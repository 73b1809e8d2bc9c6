//! The production object store: one S3 bucket. Objects are served by
//! CloudFront (`CLOUDFRONT_DOMAIN/<key>`), or by presigned GET URLs when no
//! CDN is configured. Uploads arrive as spooled files and are streamed from
//! disk with a known length, so memory use does not grow with object size.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aws_sdk_s3::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    presigning::PresigningConfig,
    primitives::ByteStream,
};
use bytes::Bytes;

use super::{ObjectStore, StoreError, validate_key};
use common::aws::{AwsError, AwsService, AwsSettings};

/// How object URLs are made.
#[derive(Debug, Clone)]
pub enum PublicUrls {
    /// `https://<cdn>/<key>`.
    Cdn(String),
    /// A presigned GET, valid this long.
    Presigned(Duration),
}

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    urls: PublicUrls,
    spool: PathBuf,
    dependency_timeout: Duration,
}

impl S3Store {
    /// `spool` must exist or be creatable; uploads wait there until sent.
    pub async fn new(
        aws: &AwsSettings,
        bucket: &str,
        urls: PublicUrls,
        spool: PathBuf,
    ) -> std::io::Result<Self> {
        let sdk = aws.sdk_config_for(AwsService::S3).await;
        let mut config = aws_sdk_s3::config::Builder::from(&sdk);
        // Emulators answer on one host; virtual-hosted buckets need DNS.
        // Production keeps virtual-hosted style, so presigned URL paths are
        // exactly `/<key>`.
        let emulated = aws.endpoint_url.is_some()
            || aws
                .service_endpoints
                .iter()
                .any(|(service, _)| *service == AwsService::S3);
        if emulated {
            config = config.force_path_style(true);
        }
        tokio::fs::create_dir_all(&spool).await?;
        Ok(Self {
            client: Client::from_conf(config.build()),
            bucket: bucket.to_owned(),
            urls,
            spool,
            dependency_timeout: aws.dependency_timeout,
        })
    }
}

/// An upload's deadline: the dependency timeout plus the body's time at a
/// slow rate (`common::aws::upload_timeouts`), so a hanging S3 fails a small
/// upload as fast as any call while a large one still gets its time. Small
/// calls (head, delete) keep the client's dependency timeout.
fn uploading(dependency: Duration, bytes: u64) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default()
        .timeout_config(common::aws::upload_timeouts(dependency, bytes))
}

/// A failed S3 call as the store reports it: "retry later" (no answer,
/// throttling, a server error; `common::aws`'s classifier decides) or not.
/// The message keeps the error code, never credentials.
fn store_error<E, R>(what: &str, key: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let failure = AwsError::classify(&err, &[]);
    let message = format!("{what} {key}: {failure}");
    if failure.is_transient() {
        StoreError::Unavailable(message)
    } else {
        StoreError::Other(message)
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    fn spool_dir(&self) -> &Path {
        &self.spool
    }

    async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> Result<(), StoreError> {
        refuse_bad_key(key)?;
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| StoreError::Other(format!("read spooled {key}: {e}")))?;
        let bytes = body.size_hint().0;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body)
            .customize()
            .config_override(uploading(self.dependency_timeout, bytes))
            .send()
            .await
            .map_err(|e| store_error("put", key, e))?;
        Ok(())
    }

    async fn put_bytes(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<(), StoreError> {
        refuse_bad_key(key)?;
        let size = bytes.len() as u64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .customize()
            .config_override(uploading(self.dependency_timeout, size))
            .send()
            .await
            .map_err(|e| store_error("put", key, e))?;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(false),
            Err(e) => Err(store_error("head", key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| store_error("delete", key, e))?;
        Ok(())
    }

    async fn url(&self, key: &str) -> Result<String, StoreError> {
        match &self.urls {
            PublicUrls::Cdn(base) => Ok(format!("{base}/{key}")),
            PublicUrls::Presigned(valid_for) => {
                let config = PresigningConfig::expires_in(*valid_for)
                    .map_err(|e| StoreError::Other(format!("presign {key}: {e}")))?;
                let request = self
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .presigned(config)
                    .await
                    .map_err(|e| store_error("presign", key, e))?;
                Ok(request.uri().to_owned())
            }
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| match store_error("head bucket", &self.bucket, e) {
                // A missing bucket or a denied role is just as fatal for
                // readiness as a network failure.
                StoreError::Other(m) => StoreError::Unavailable(m),
                other => other,
            })?;
        Ok(())
    }
}

/// What this service writes has a key both stores can hold and a URL needs
/// no encoding for (as `LocalStore` requires). Reads and deletes take any
/// key, so objects the old system wrote stay reachable.
fn refuse_bad_key(key: &str) -> Result<(), StoreError> {
    validate_key(key).map_err(|e| StoreError::Other(format!("{key}: {e}")))
}
