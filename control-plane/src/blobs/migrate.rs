//! `annex-control-plane migrate-blobs --from <store> --to <store>`: copies
//! the bytes of every bundle row's content hash from one blob store to
//! another. Each blob is spooled and its SHA-256 checked against its hash
//! and size before it is committed to the destination; one the destination
//! already holds (at the right size) is skipped, so a run may be repeated or
//! resumed after an interruption. Nothing is deleted from the source.

use std::path::Path;

use futures::StreamExt as _;

use super::spool::SpoolWriter;
use crate::store::{BlobStore, Store};

/// What a migration did, blob by blob.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MigrateReport {
    /// Distinct content hashes the bundle rows reference.
    pub referenced: u64,
    pub copied: u64,
    /// Already in the destination.
    pub present: u64,
    /// In neither store.
    pub missing: u64,
    /// Could not be read, did not match their hash, or could not be written.
    pub failed: u64,
}

impl std::fmt::Display for MigrateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} referenced: {} copied, {} already present, {} missing, {} failed",
            self.referenced, self.copied, self.present, self.missing, self.failed
        )
    }
}

/// Copies every referenced blob from `from` to `to`, spooling through
/// `spool_dir`.
pub async fn migrate_blobs(
    store: &dyn Store,
    from: &dyn BlobStore,
    to: &dyn BlobStore,
    spool_dir: &Path,
) -> anyhow::Result<MigrateReport> {
    let mut referenced = std::collections::BTreeMap::new();
    for ext in store.list_extensions().await? {
        for version in store.list_versions(ext.id).await? {
            referenced.insert(version.bundle.content_hash, version.bundle.size_bytes);
        }
    }
    let mut report = MigrateReport {
        referenced: referenced.len() as u64,
        ..MigrateReport::default()
    };
    for (hash, size) in referenced {
        match copy_one(&hash, size, from, to, spool_dir).await {
            Ok(Outcome::Copied) => {
                tracing::info!(content_hash = %hash, size, "blob copied");
                report.copied += 1;
            }
            Ok(Outcome::Present) => report.present += 1,
            Ok(Outcome::Missing) => {
                tracing::error!(content_hash = %hash, from = %from.describe(), "a referenced blob is missing from the source");
                report.missing += 1;
            }
            Err(e) => {
                tracing::error!(content_hash = %hash, error = %e, "copying a blob failed");
                report.failed += 1;
            }
        }
    }
    Ok(report)
}

enum Outcome {
    Copied,
    Present,
    Missing,
}

async fn copy_one(
    hash: &str,
    size: u64,
    from: &dyn BlobStore,
    to: &dyn BlobStore,
    spool_dir: &Path,
) -> anyhow::Result<Outcome> {
    if to.blob_size(hash).await? == Some(size) {
        return Ok(Outcome::Present);
    }
    let Some(mut read) = from.get_blob(hash).await? else {
        return Ok(Outcome::Missing);
    };
    let mut spool = SpoolWriter::create(spool_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    while let Some(chunk) = read.chunks.next().await {
        spool
            .write(&chunk?)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let spooled = spool.finish().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if spooled.content_hash.to_string() != hash || spooled.size != size {
        anyhow::bail!(
            "the source's bytes do not match: {} bytes hashing to {} (the bundle row says {size} bytes, {hash})",
            spooled.size,
            spooled.content_hash
        );
    }
    to.put_blob_file(hash, &spooled.path).await?;
    Ok(Outcome::Copied)
}
