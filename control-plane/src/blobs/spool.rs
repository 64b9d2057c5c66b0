//! The spool: where a publish's bytes land while they stream in, hashed on
//! the way, before anything is committed to the blob store. A spooled file
//! is removed when its [`Spooled`] is dropped (the publish finished, failed
//! or was cut off); files a crashed process left behind carry
//! [`SPOOL_PREFIX`] and are removed by the orphan collector.

use std::path::{Path, PathBuf};

use annex_bundle::hash::{ContentHash, ContentHasher};
use annex_proto::AnnexError;
use tempfile::TempPath;
use tokio::io::{AsyncWriteExt as _, BufWriter};

/// Names of spool files start with this.
pub(crate) const SPOOL_PREFIX: &str = "annex-upload-";

/// Buffered between the gRPC stream and the file.
const WRITE_BUFFER: usize = 1024 * 1024;

/// A complete upload on local disk, with the hash of its bytes.
#[derive(Debug)]
pub(crate) struct Spooled {
    /// Deleted on drop.
    pub(crate) path: TempPath,
    pub(crate) size: u64,
    pub(crate) content_hash: ContentHash,
}

/// An upload being written.
pub(crate) struct SpoolWriter {
    file: BufWriter<tokio::fs::File>,
    path: TempPath,
    hasher: ContentHasher,
    size: u64,
}

fn spool_error(what: &str, dir: &Path, err: std::io::Error) -> AnnexError {
    tracing::error!(dir = %dir.display(), error = %err, "{what}");
    AnnexError::new(
        annex_proto::ErrorCode::Unavailable,
        "the control plane cannot spool the upload; retry shortly",
    )
}

impl SpoolWriter {
    /// A new, empty spool file in `dir`.
    pub(crate) fn create(dir: &Path) -> Result<SpoolWriter, AnnexError> {
        let file = tempfile::Builder::new()
            .prefix(SPOOL_PREFIX)
            .suffix(".part")
            .tempfile_in(dir)
            .map_err(|e| spool_error("creating a spool file", dir, e))?;
        let (file, path) = file.into_parts();
        Ok(SpoolWriter {
            file: BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file)),
            path,
            hasher: ContentHasher::new(),
            size: 0,
        })
    }

    /// Bytes written so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) async fn write(&mut self, chunk: &[u8]) -> Result<(), AnnexError> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| spool_error("writing a spool file", &self.dir(), e))
    }

    /// Flushes the file and returns it with its hash.
    pub(crate) async fn finish(mut self) -> Result<Spooled, AnnexError> {
        self.file
            .flush()
            .await
            .map_err(|e| spool_error("flushing a spool file", &self.dir(), e))?;
        Ok(Spooled {
            path: self.path,
            size: self.size,
            content_hash: self.hasher.finish(),
        })
    }

    fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}
