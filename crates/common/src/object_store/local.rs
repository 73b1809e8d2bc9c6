//! The embedded object store: a directory tree, `<root>/objects/<key>`.
//! Objects are written to `<root>/spool/` first and renamed into place, so a
//! reader never sees half an object. [`LocalStore::serve`] answers `GET
//! /<key>` the way a CDN would (type, ETag, ranges, cache headers), which
//! is what lets the frontend display uploads with no CDN at all.

use std::{
    io::SeekFrom,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use axum::{
    body::Body,
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{ObjectStore, StoreError, validate_key};
use crate::{ApiError, image_kind::ImageKind, image_kind::content_type_for_key};

#[derive(Debug)]
pub struct LocalStore {
    objects: PathBuf,
    spool: PathBuf,
    /// Where the service that serves these objects is reachable, e.g.
    /// `http://localhost:9000`; object URLs are `<base>/<key>`.
    public_base_url: String,
}

impl LocalStore {
    /// Opens (creating if needed) the store under `root`.
    pub async fn open(root: &Path, public_base_url: &str) -> std::io::Result<Self> {
        let objects = root.join("objects");
        let spool = root.join("spool");
        tokio::fs::create_dir_all(&objects).await?;
        tokio::fs::create_dir_all(&spool).await?;
        Ok(Self {
            objects,
            spool,
            public_base_url: public_base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The file an object lives in. Only called with validated keys, which
    /// cannot contain `..` or start with `/`.
    fn path_of(&self, key: &str) -> PathBuf {
        self.objects.join(key)
    }

    /// Answers a `GET` or `HEAD` for `key` as a CDN would: `Content-Type`,
    /// a strong `ETag` (size and modification time), `If-None-Match` → 304,
    /// a single byte range → 206 (416 when unsatisfiable), and cache headers.
    pub async fn serve(&self, key: &str, method: &Method, headers: &HeaderMap) -> Response {
        match self.serve_inner(key, method, headers).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        }
    }

    async fn serve_inner(
        &self,
        key: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Response, ApiError> {
        let not_found = || ApiError::not_found("Not Found");
        if validate_key(key).is_err() {
            return Err(not_found());
        }
        let mut file = match tokio::fs::File::open(self.path_of(key)).await {
            Ok(file) => file,
            Err(e) if is_missing(&e) => return Err(not_found()),
            Err(e) => return Err(ApiError::internal(format!("open {key}: {e}"))),
        };
        let meta = file
            .metadata()
            .await
            .map_err(|e| ApiError::internal(format!("stat {key}: {e}")))?;
        if !meta.is_file() {
            return Err(not_found());
        }
        let len = meta.len();
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let etag = format!("\"{len:x}-{modified:x}\"");

        let content_type = match content_type_for_key(key) {
            Some(t) => t,
            None => {
                let mut head = [0u8; crate::image_kind::SNIFF_LEN];
                let n = read_up_to(&mut file, &mut head).await?;
                file.seek(SeekFrom::Start(0))
                    .await
                    .map_err(|e| ApiError::internal(format!("seek {key}: {e}")))?;
                ImageKind::sniff(&head[..n]).map_or("application/octet-stream", ImageKind::mime)
            }
        };

        let mut builder = Response::builder()
            .header(header::ETAG, &etag)
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CACHE_CONTROL, "public, max-age=86400")
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");

        let etag_matches = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        if etag_matches {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .map_err(ApiError::internal);
        }

        builder = builder.header(header::CONTENT_TYPE, content_type);
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(|v| parse_range(v, len));
        let (status, start, count) = match range {
            Some(RangeRequest::Satisfiable { start, end }) => {
                builder =
                    builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
                (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
            }
            Some(RangeRequest::Unsatisfiable) => {
                return builder
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .body(Body::empty())
                    .map_err(ApiError::internal);
            }
            // An unparseable or multi-part range is ignored (RFC 9110 allows it).
            Some(RangeRequest::Ignored) | None => (StatusCode::OK, 0, len),
        };
        builder = builder.status(status).header(header::CONTENT_LENGTH, count);
        if method == Method::HEAD {
            return builder.body(Body::empty()).map_err(ApiError::internal);
        }
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| ApiError::internal(format!("seek {key}: {e}")))?;
        }
        let body = Body::from_stream(ReaderStream::new(file.take(count)));
        builder.body(body).map_err(ApiError::internal)
    }
}

async fn read_up_to(file: &mut tokio::fs::File, buf: &mut [u8]) -> Result<usize, ApiError> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file
            .read(&mut buf[filled..])
            .await
            .map_err(ApiError::internal)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

fn is_missing(e: &std::io::Error) -> bool {
    // A key like `a.png/b` makes the OS say "not a directory", and a key
    // segment longer than a file name may be (255 bytes on most file
    // systems) "file name too long": no object can live there, so a 404.
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound
            | std::io::ErrorKind::NotADirectory
            | std::io::ErrorKind::InvalidFilename
    )
}

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    Satisfiable { start: u64, end: u64 },
    Unsatisfiable,
    Ignored,
}

/// Parses a single `bytes=` range against an object of `len` bytes.
fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Ignored;
    };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Ignored;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match last.parse::<u64>() {
            Ok(0) => return RangeRequest::Unsatisfiable,
            Ok(n) => Some((len.saturating_sub(n), len.saturating_sub(1))),
            Err(_) => None,
        },
        (false, true) => first
            .parse::<u64>()
            .ok()
            .map(|s| (s, len.saturating_sub(1))),
        (false, false) => match (first.parse::<u64>(), last.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(len.saturating_sub(1)))),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => RangeRequest::Ignored,
        Some((start, _)) if len == 0 || start >= len => RangeRequest::Unsatisfiable,
        Some((start, end)) => RangeRequest::Satisfiable { start, end },
    }
}

fn io_error(what: &str, key: &str, e: std::io::Error) -> StoreError {
    StoreError::Other(format!("{what} {key}: {e}"))
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    fn spool_dir(&self) -> &Path {
        &self.spool
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        _content_type: &str,
    ) -> Result<(), StoreError> {
        validate_key(key).map_err(|e| StoreError::Other(format!("{key}: {e}")))?;
        let target = self.path_of(key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_error("create directory for", key, e))?;
        }
        // The spool is on the same file system: an atomic rename.
        match tokio::fs::rename(path, &target).await {
            Ok(()) => Ok(()),
            // A spool elsewhere (another mount): copy, then the caller
            // removes the original.
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                let tmp = self.spool.join(format!("{}.part", uuid::Uuid::new_v4()));
                tokio::fs::copy(path, &tmp)
                    .await
                    .map_err(|e| io_error("copy", key, e))?;
                tokio::fs::rename(&tmp, &target)
                    .await
                    .map_err(|e| io_error("store", key, e))
            }
            Err(e) => Err(io_error("store", key, e)),
        }
    }

    async fn put_bytes(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<(), StoreError> {
        let tmp = self.spool.join(format!("{}.part", uuid::Uuid::new_v4()));
        tokio::fs::write(&tmp, &bytes)
            .await
            .map_err(|e| io_error("write", key, e))?;
        let result = self.put_file(key, &tmp, content_type).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        if validate_key(key).is_err() {
            return Ok(false);
        }
        match tokio::fs::metadata(self.path_of(key)).await {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(io_error("stat", key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key).map_err(|e| StoreError::Other(format!("{key}: {e}")))?;
        match tokio::fs::remove_file(self.path_of(key)).await {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(io_error("delete", key, e)),
        }
    }

    async fn url(&self, key: &str) -> Result<String, StoreError> {
        Ok(format!("{}/{key}", self.public_base_url))
    }

    async fn check(&self) -> Result<(), StoreError> {
        let meta = tokio::fs::metadata(&self.objects)
            .await
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", self.objects.display())))?;
        if meta.permissions().readonly() {
            return Err(StoreError::Unavailable(format!(
                "{} is read-only",
                self.objects.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(
            parse_range("bytes=0-9", 100),
            Satisfiable { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=90-", 100),
            Satisfiable { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            Satisfiable { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-500", 100),
            Satisfiable { start: 0, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=50-500", 100),
            Satisfiable { start: 50, end: 99 }
        );
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignored);
        assert_eq!(parse_range("items=0-1", 100), Ignored);
        assert_eq!(parse_range("bytes=9-1", 100), Ignored);
        assert_eq!(parse_range("bytes=x-1", 100), Ignored);
    }

    #[tokio::test]
    async fn put_serve_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "http://localhost:9000/")
            .await
            .unwrap();
        store
            .put_bytes(
                "comfyui-results/a.png",
                Bytes::from_static(b"\x89PNG\r\n\x1a\nrest"),
                "image/png",
            )
            .await
            .unwrap();
        assert!(store.exists("comfyui-results/a.png").await.unwrap());
        assert_eq!(
            store.url("comfyui-results/a.png").await.unwrap(),
            "http://localhost:9000/comfyui-results/a.png"
        );
        let response = store
            .serve("comfyui-results/a.png", &Method::GET, &HeaderMap::new())
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "image/png");
        store.delete("comfyui-results/a.png").await.unwrap();
        store.delete("comfyui-results/a.png").await.unwrap();
        assert!(!store.exists("comfyui-results/a.png").await.unwrap());
    }
}
