//! Bundle bytes in a filesystem directory: `<root>/sha256/<hex>`, one file
//! per blob. A commit copies the spooled upload to `<root>/staging/`, syncs
//! it and renames it into place, so a blob's path names a complete file or
//! nothing; leftovers of an interrupted commit stay in `staging/` until the
//! orphan collector removes them.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::AsyncReadExt as _;

use super::{BlobEntry, BlobRead, BlobStore, READ_CHUNK, hash_hex};
use crate::store::{StoreError, StoreResult};

/// Blobs in a directory (local disk or a mounted volume shared by replicas).
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// Creates `root/sha256` and `root/staging` if missing.
    pub fn open(root: impl Into<PathBuf>) -> StoreResult<FsBlobStore> {
        let root = root.into();
        for dir in ["sha256", "staging"] {
            std::fs::create_dir_all(root.join(dir))
                .map_err(|e| fs_error(&format!("creating {}", root.join(dir).display()), e))?;
        }
        Ok(FsBlobStore { root })
    }

    fn blob_path(&self, content_hash: &str) -> StoreResult<PathBuf> {
        Ok(self.root.join("sha256").join(hash_hex(content_hash)?))
    }
}

fn fs_error(what: &str, err: io::Error) -> StoreError {
    StoreError::BlobStore(format!("{what}: {err}"))
}

/// Runs blocking filesystem work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Internal(format!("blob store task: {e}")))?
}

fn modified(meta: &std::fs::Metadata) -> DateTime<Utc> {
    meta.modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now())
}

#[async_trait]
impl BlobStore for FsBlobStore {
    fn describe(&self) -> String {
        format!("fs:{}", self.root.display())
    }

    async fn put_blob_file(&self, content_hash: &str, file: &Path) -> StoreResult<()> {
        let target = self.blob_path(content_hash)?;
        let staging = self
            .root
            .join("staging")
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let (dir, source) = (self.root.join("sha256"), file.to_owned());
        blocking(move || {
            if target.exists() {
                // Content-addressed: the bytes are the same; a fresh mtime
                // keeps the collector off a blob a publish is about to reference.
                std::fs::File::options()
                    .write(true)
                    .open(&target)
                    .and_then(|f| f.set_modified(SystemTime::now()))
                    .map_err(|e| fs_error("refreshing a committed blob", e))?;
                return Ok(());
            }
            let result = commit(&source, &staging, &target, &dir);
            if result.is_err() {
                let _ = std::fs::remove_file(&staging);
            }
            result.map_err(|e| fs_error("committing a blob", e))
        })
        .await
    }

    async fn get_blob(&self, content_hash: &str) -> StoreResult<Option<BlobRead>> {
        let path = self.blob_path(content_hash)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fs_error("opening a blob", e)),
        };
        let size = file
            .metadata()
            .await
            .map_err(|e| fs_error("reading a blob's size", e))?
            .len();
        let chunks = async_stream::try_stream! {
            loop {
                let mut buf = Vec::with_capacity(READ_CHUNK);
                let n = (&mut file)
                    .take(READ_CHUNK as u64)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(|e| fs_error("reading a blob", e))?;
                if n == 0 {
                    break;
                }
                yield bytes::Bytes::from(buf);
            }
        };
        Ok(Some(BlobRead {
            size,
            chunks: Box::pin(chunks),
        }))
    }

    async fn blob_size(&self, content_hash: &str) -> StoreResult<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(content_hash)?).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fs_error("reading a blob's size", e)),
        }
    }

    async fn list_blobs(&self) -> StoreResult<Vec<BlobEntry>> {
        let dir = self.root.join("sha256");
        blocking(move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&dir).map_err(|e| fs_error("listing blobs", e))? {
                let entry = entry.map_err(|e| fs_error("listing blobs", e))?;
                let content_hash = format!("sha256:{}", entry.file_name().to_string_lossy());
                if hash_hex(&content_hash).is_err() {
                    continue;
                }
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    // Deleted since it was listed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(fs_error("listing blobs", e)),
                };
                out.push(BlobEntry {
                    content_hash,
                    size: meta.len(),
                    modified: modified(&meta),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn delete_blob(&self, content_hash: &str) -> StoreResult<bool> {
        match tokio::fs::remove_file(self.blob_path(content_hash)?).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(fs_error("deleting a blob", e)),
        }
    }

    async fn collect_staging(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let dir = self.root.join("staging");
        blocking(move || remove_older(&dir, before, |_| true)).await
    }
}

/// Copies `source` to `staging`, syncs it and renames it to `target` in `dir`.
fn commit(source: &Path, staging: &Path, target: &Path, dir: &Path) -> io::Result<()> {
    std::fs::copy(source, staging)?;
    std::fs::File::open(staging)?.sync_all()?;
    std::fs::rename(staging, target)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Removes the regular files in `dir` that `select` picks by name and that
/// were last written before `before`; returns how many.
pub(crate) fn remove_older(
    dir: &Path,
    before: DateTime<Utc>,
    select: impl Fn(&str) -> bool,
) -> StoreResult<u64> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(fs_error(&format!("listing {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| fs_error(&format!("listing {}", dir.display()), e))?;
        if !select(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() && modified(&meta) < before && std::fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    Ok(removed)
}
