//! Receiving an image: the multipart file is streamed to a spool file while
//! it is counted and its first bytes kept, so memory stays flat whatever the
//! size; then its type is read from those bytes and its dimensions from the
//! file's header. A bounded number of uploads is received at once.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::extract::multipart::{Field, MultipartError};
use common::ApiError;
use tokio::{
    io::AsyncWriteExt,
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::image_kind::{ImageKind, SNIFF_LEN};

/// How long a client refused for want of an upload slot is asked to wait.
const SLOTS_RETRY_AFTER_SECONDS: u64 = 5;

/// The uploads that may be received at once (`MAX_CONCURRENT_UPLOADS`).
/// Each holds a spool file and a stream; past the limit a client is told to
/// come back (503) instead of waiting in an unbounded queue on disk.
pub struct UploadSlots {
    slots: Option<(Arc<Semaphore>, usize)>,
}

impl UploadSlots {
    /// `None`: no limit.
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            slots: limit.map(|n| (Arc::new(Semaphore::new(n)), n)),
        }
    }

    /// A slot for one upload, held until it is dropped; 503 with
    /// `Retry-After` when all are taken. Never waits.
    pub fn try_take(&self) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        let Some((semaphore, limit)) = &self.slots else {
            return Ok(None);
        };
        match semaphore.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{limit} uploads are already in progress (MAX_CONCURRENT_UPLOADS); try again shortly"
                ),
            )
            .retry_after(SLOTS_RETRY_AFTER_SECONDS)),
        }
    }
}

/// A file in the spool directory, removed when dropped unless the object
/// store took it away first.
pub struct SpooledFile {
    path: PathBuf,
    pub size: u64,
    head: Vec<u8>,
    pub file_name: Option<String>,
    pub declared_type: Option<String>,
}

impl SpooledFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpooledFile {
    fn drop(&mut self) {
        // Usually already moved into the store; a missing file is fine.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A multipart body that could not be read: 408 when it did not arrive
/// before the request's deadline, else axum's status (400, 413).
pub fn multipart_error(err: MultipartError) -> ApiError {
    if let Some(timed_out) = common::http::timed_out(&err) {
        return timed_out.into();
    }
    ApiError::new(
        err.status(),
        format!("malformed multipart body: {}", err.body_text()),
    )
}

fn too_large(limit: u64) -> ApiError {
    ApiError::payload_too_large(format!(
        "file is larger than the upload limit of {limit} bytes ({:.1} MiB)",
        limit as f64 / (1024.0 * 1024.0)
    ))
}

/// Streams the `file` field into `spool_dir`, refusing it past `limit`
/// bytes. `received` counts every byte of it that arrives, also when the
/// file is refused or the body breaks off.
pub async fn spool(
    mut field: Field<'_>,
    spool_dir: &Path,
    limit: u64,
    received: &mut u64,
) -> Result<SpooledFile, ApiError> {
    let mut spooled = SpooledFile {
        path: spool_dir.join(format!("{}.upload", uuid::Uuid::new_v4())),
        size: 0,
        head: Vec::with_capacity(SNIFF_LEN),
        file_name: field.file_name().map(str::to_owned),
        declared_type: field.content_type().map(str::to_owned),
    };
    let mut file = tokio::fs::File::create(&spooled.path)
        .await
        .map_err(|e| ApiError::internal(format!("create spool file: {e}")))?;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        spooled.size += chunk.len() as u64;
        *received += chunk.len() as u64;
        if spooled.size > limit {
            return Err(too_large(limit));
        }
        if spooled.head.len() < SNIFF_LEN {
            let take = (SNIFF_LEN - spooled.head.len()).min(chunk.len());
            spooled.head.extend_from_slice(&chunk[..take]);
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(format!("write spool file: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::internal(format!("flush spool file: {e}")))?;
    Ok(spooled)
}

/// Reads a small text field, refusing more than `limit` bytes.
pub async fn small_text(
    mut field: Field<'_>,
    name: &str,
    limit: usize,
) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::payload_too_large(format!(
                "{name}: longer than {limit} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::invalid_field(name, "is not UTF-8 text"))
}

/// What the bytes turned out to be.
pub struct Inspected {
    pub kind: ImageKind,
    pub extension: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// Checks that the spooled bytes are an accepted image that agrees with the
/// declared content type and the file name's extension (415 otherwise), and
/// reads its dimensions, refusing more than `max_pixels` (413): a few
/// hundred bytes can claim 100000 × 100000, and whoever decodes it (a
/// browser, a GPU host) pays for 40 GB of pixels.
pub async fn inspect(spooled: &SpooledFile, max_pixels: u64) -> Result<Inspected, ApiError> {
    let kind = ImageKind::sniff(&spooled.head).ok_or_else(|| {
        ApiError::unsupported_media_type("file is not a PNG, JPEG, WebP or GIF image")
    })?;
    if let Some(declared) = spooled.declared_type.as_deref() {
        let essence = declared.split(';').next().unwrap_or_default().trim();
        let generic =
            essence.is_empty() || essence.eq_ignore_ascii_case("application/octet-stream");
        if !generic && ImageKind::from_mime(declared) != Some(kind) {
            return Err(ApiError::unsupported_media_type(format!(
                "file is declared as {essence} but its bytes are a {} image",
                kind.mime()
            )));
        }
    }
    let extension = match spooled.file_name.as_deref().and_then(client_extension) {
        Some(ext) => match ImageKind::from_extension(&ext) {
            Some(named) if named == kind => ext,
            Some(named) => {
                return Err(ApiError::unsupported_media_type(format!(
                    "file name says {} but its bytes are a {} image",
                    named.mime(),
                    kind.mime()
                )));
            }
            // Not an image extension (`.bin`, `.tmp`): name the bytes instead.
            None => kind.extension().to_owned(),
        },
        None => kind.extension().to_owned(),
    };
    let path = spooled.path.clone();
    let size = tokio::task::spawn_blocking(move || imagesize::size(path))
        .await
        .map_err(ApiError::internal)?
        .map_err(|_| {
            ApiError::unsupported_media_type(format!(
                "file is not a readable {} image",
                kind.mime()
            ))
        })?;
    let pixels = u64::try_from(size.width)
        .unwrap_or(u64::MAX)
        .saturating_mul(u64::try_from(size.height).unwrap_or(u64::MAX));
    if pixels > max_pixels {
        return Err(ApiError::payload_too_large(format!(
            "image is {} × {} pixels ({pixels}), more than the limit of {max_pixels} pixels (MAX_IMAGE_PIXELS)",
            size.width, size.height
        )));
    }
    Ok(Inspected {
        kind,
        extension,
        width: u32::try_from(size.width).ok(),
        height: u32::try_from(size.height).ok(),
    })
}

/// The extension of a client's file name, lower-cased and reduced to
/// `[a-z0-9]` (keys must need no percent-encoding); `None` when there is
/// none or it is longer than 6 characters, as the old service did.
fn client_extension(file_name: &str) -> Option<String> {
    let (_, ext) = file_name.rsplit_once('.')?;
    let ext: String = ext
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (!ext.is_empty() && ext.len() <= 6).then_some(ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_sanitised() {
        assert_eq!(client_extension("Photo.PNG").as_deref(), Some("png"));
        assert_eq!(client_extension("a.j%p#g").as_deref(), Some("jpg"));
        assert_eq!(client_extension("noext"), None);
        assert_eq!(client_extension("x.toolongext"), None);
        assert_eq!(client_extension("x.%%"), None);
    }
}
