//! The embedded object store: a directory tree, `<root>/objects/<key>`.
//! Objects are written to `<root>/spool/` first and renamed into place, so a
//! reader never sees half an object. [`LocalStore::open`] gives an object's
//! size and version and a reader bounded to a byte range: what the service's
//! `GET /<key>` route serves it from, as a CDN would.

use std::{
    io::SeekFrom,
    path::{Path, PathBuf},
    pin::Pin,
    task::{Context, Poll},
    time::UNIX_EPOCH,
};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, ReadBuf};

use super::{ObjectStore, StoreError, validate_key};

#[derive(Debug)]
pub struct LocalStore {
    objects: PathBuf,
    spool: PathBuf,
    /// Where the service that serves these objects is reachable, e.g.
    /// `http://localhost:9000`; object URLs are `<base>/<key>`.
    public_base_url: String,
}

/// An object opened for reading. Its bytes are read through
/// [`StoredObject::read`], which never goes past the range asked for.
#[derive(Debug)]
pub struct StoredObject {
    file: tokio::fs::File,
    size: u64,
    /// Nanoseconds since the epoch of the last write (0 if unknown).
    modified: u128,
}

impl StoredObject {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Changes whenever the object is replaced (its size and modification
    /// time), so it can serve as a strong ETag.
    pub fn version(&self) -> String {
        format!("{:x}-{:x}", self.size, self.modified)
    }

    /// Up to `n` leading bytes (fewer when the object is shorter).
    pub async fn head(&mut self, n: usize) -> Result<Vec<u8>, StoreError> {
        let mut head = Vec::with_capacity(n.min(64 * 1024));
        self.file
            .seek(SeekFrom::Start(0))
            .await
            .map_err(|e| StoreError::Other(format!("seek: {e}")))?;
        (&mut self.file)
            .take(n as u64)
            .read_to_end(&mut head)
            .await
            .map_err(|e| StoreError::Other(format!("read: {e}")))?;
        Ok(head)
    }

    /// A reader of the `len` bytes from `start` on (fewer past the end).
    pub async fn read(mut self, start: u64, len: u64) -> Result<ObjectReader, StoreError> {
        self.file
            .seek(SeekFrom::Start(start))
            .await
            .map_err(|e| StoreError::Other(format!("seek: {e}")))?;
        Ok(ObjectReader(self.file.take(len)))
    }
}

/// The bytes of one range of an object; ends at the range's end.
#[derive(Debug)]
pub struct ObjectReader(tokio::io::Take<tokio::fs::File>);

impl AsyncRead for ObjectReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
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

    /// The object stored under `key`, opened for reading; `None` when there
    /// is none (a malformed key names none either).
    pub async fn read_object(&self, key: &str) -> Result<Option<StoredObject>, StoreError> {
        if validate_key(key).is_err() {
            return Ok(None);
        }
        let file = match tokio::fs::File::open(self.path_of(key)).await {
            Ok(file) => file,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(io_error("open", key, e)),
        };
        let meta = file
            .metadata()
            .await
            .map_err(|e| io_error("stat", key, e))?;
        if !meta.is_file() {
            return Ok(None);
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(Some(StoredObject {
            file,
            size: meta.len(),
            modified,
        }))
    }

    /// Moves `from` to `target`, creating its directory. Retried a few
    /// times: a delete of the last object beside it may remove that
    /// directory between the two steps.
    async fn place(&self, key: &str, from: &Path, target: &Path) -> Result<(), std::io::Error> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            match tokio::fs::rename(from, target).await {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 3 => {
                    tracing::debug!(%key, "directory removed under a put; trying again");
                }
                other => return other,
            }
        }
    }

    /// Removes the directories a deleted object leaves empty, from its own
    /// up, stopping at the first that still holds something. The store's
    /// root (`objects/`) is never removed.
    async fn remove_empty_parents(&self, key: &str) {
        for dir in Path::new(key).ancestors().skip(1) {
            if dir.as_os_str().is_empty() {
                break;
            }
            // Fails on a directory that is not empty, which ends the walk: a
            // sibling object (or one being put) still needs it.
            if tokio::fs::remove_dir(self.objects.join(dir)).await.is_err() {
                break;
            }
        }
    }
}

fn is_missing(e: &std::io::Error) -> bool {
    // A key like `a.png/b` makes the OS say "not a directory", and a name
    // the file system cannot hold (ENAMETOOLONG, should one pass the key
    // check) cannot exist either: still a 404.
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound
            | std::io::ErrorKind::NotADirectory
            | std::io::ErrorKind::InvalidFilename
    )
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
        // The spool is on the same file system: an atomic rename.
        match self.place(key, path, &target).await {
            Ok(()) => Ok(()),
            // A spool elsewhere (another mount): copy, then the caller
            // removes the original.
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                let tmp = self.spool.join(format!("{}.part", uuid::Uuid::new_v4()));
                tokio::fs::copy(path, &tmp)
                    .await
                    .map_err(|e| io_error("copy", key, e))?;
                let placed = self.place(key, &tmp, &target).await;
                if placed.is_err() {
                    let _ = tokio::fs::remove_file(&tmp).await;
                }
                placed.map_err(|e| io_error("store", key, e))
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
            Ok(()) => {
                self.remove_empty_parents(key).await;
                Ok(())
            }
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

    async fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "http://localhost:9000/")
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn put_read_delete_round_trip() {
        let (_dir, store) = store().await;
        let bytes = b"\x89PNG\r\n\x1a\nrest";
        store
            .put_bytes(
                "comfyui-results/a.png",
                Bytes::from_static(bytes),
                "image/png",
            )
            .await
            .unwrap();
        assert!(store.exists("comfyui-results/a.png").await.unwrap());
        assert_eq!(
            store.url("comfyui-results/a.png").await.unwrap(),
            "http://localhost:9000/comfyui-results/a.png"
        );
        let mut object = store
            .read_object("comfyui-results/a.png")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(object.size(), bytes.len() as u64);
        assert_eq!(object.head(4).await.unwrap(), b"\x89PNG");
        let mut middle = vec![];
        object
            .read(1, 3)
            .await
            .unwrap()
            .read_to_end(&mut middle)
            .await
            .unwrap();
        assert_eq!(middle, b"PNG", "the reader stops at the range's end");
        store.delete("comfyui-results/a.png").await.unwrap();
        store.delete("comfyui-results/a.png").await.unwrap();
        assert!(!store.exists("comfyui-results/a.png").await.unwrap());
        assert!(
            store
                .read_object("comfyui-results/a.png")
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.read_object("../canvas.db").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_delete_removes_the_directories_it_empties_but_never_the_root() {
        let (dir, store) = store().await;
        let put = |key: &'static str| store.put_bytes(key, Bytes::from_static(b"x"), "image/png");
        put("images/s1/a.png").await.unwrap();
        put("images/s1/b.png").await.unwrap();
        put("images/s2/c.png").await.unwrap();
        put("top.png").await.unwrap();
        let objects = dir.path().join("objects");

        store.delete("images/s1/a.png").await.unwrap();
        assert!(objects.join("images/s1").is_dir(), "b.png is still there");
        store.delete("images/s1/b.png").await.unwrap();
        assert!(!objects.join("images/s1").exists());
        assert!(objects.join("images/s2").is_dir());
        store.delete("images/s2/c.png").await.unwrap();
        assert!(!objects.join("images").exists());
        store.delete("top.png").await.unwrap();
        assert!(objects.is_dir(), "the store's root stays");
        store.check().await.unwrap();
        put("images/s1/again.png").await.unwrap();
        assert!(store.exists("images/s1/again.png").await.unwrap());
    }
}
