//! The blob area: bundle bytes by content hash, as [`BlobStore`]. Bytes are
//! content-addressed and committed before the bundle row that references
//! them; they are removed only when no bundle row does (the orphan collector,
//! `crate::blobs`). Hashing and verifying the bytes is the caller's job: a
//! store is handed a spooled file whose hash the caller computed.
//!
//! Four stores: Postgres `bytea` (`bundle_blobs`, [`PgStore`](super::PgStore)),
//! memory ([`MemoryStore`](super::MemoryStore)), a filesystem directory
//! ([`FsBlobStore`]) and an S3-compatible object store ([`S3BlobStore`]).
//! Every one commits atomically (a row insert, a rename, a completed
//! multipart upload), so nothing half-written is ever readable under a
//! content hash (docs/design/blob-stores.md).

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use super::StoreResult;

mod fs;
mod s3;
mod spec;

pub use fs::FsBlobStore;
pub(crate) use fs::remove_older;
pub use s3::{S3BlobStore, S3Settings};
pub use spec::{BlobStoreSpec, open_blob_store};

/// A stored blob as listed: its hash, size and when it was last committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub content_hash: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
}

/// A blob being read: its size, then its bytes in chunks of bounded size.
pub struct BlobRead {
    pub size: u64,
    pub chunks: BoxStream<'static, StoreResult<Bytes>>,
}

impl std::fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobRead")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Largest chunk a store yields when reading a blob.
pub const READ_CHUNK: usize = 1024 * 1024;

/// Bundle bytes by content hash.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// What the operator configured (`postgres`, `fs:/path`, `s3://bucket`), for logs.
    fn describe(&self) -> String;

    /// Commits the bytes of `file` (the caller has hashed them) under
    /// `content_hash`, all or nothing: a reader sees either no blob or the
    /// whole of it. Idempotent; committing a hash that exists keeps the
    /// stored bytes and refreshes its modification time where the store can,
    /// so the orphan collector's grace period covers the publish in flight.
    async fn put_blob_file(&self, content_hash: &str, file: &Path) -> StoreResult<()>;

    /// The blob's bytes, streamed; `None` when there is no such blob.
    async fn get_blob(&self, content_hash: &str) -> StoreResult<Option<BlobRead>>;

    /// The blob's size, if it exists.
    async fn blob_size(&self, content_hash: &str) -> StoreResult<Option<u64>>;

    /// Every committed blob.
    async fn list_blobs(&self) -> StoreResult<Vec<BlobEntry>>;

    /// Deletes the blob; returns whether it was there. Stores that hold the
    /// bundle rows as well (Postgres, memory) keep a referenced blob in the
    /// same statement; the others cannot see the rows, so callers check
    /// references first (the orphan collector does, and only for blobs
    /// older than its grace period).
    async fn delete_blob(&self, content_hash: &str) -> StoreResult<bool>;

    /// Deletes the blob unless a bundle row references it, where the store
    /// can tell in one statement (Postgres, memory); the others delete
    /// nothing and return false, leaving the bytes to the orphan collector.
    /// For a publish whose row could not be written.
    async fn delete_unreferenced_blob(&self, content_hash: &str) -> StoreResult<bool> {
        let _ = content_hash;
        Ok(false)
    }

    /// Removes staging leftovers (interrupted commits) last written before
    /// `before`; returns how many. Stores that stage nothing return 0.
    async fn collect_staging(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let _ = before;
        Ok(0)
    }
}

/// The 64 hex digits of a `sha256:<hex>` content hash, or why it is not one
/// (stores build keys and file names from it, so it is checked here).
pub(crate) fn hash_hex(content_hash: &str) -> StoreResult<&str> {
    content_hash
        .strip_prefix("sha256:")
        .filter(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
        .ok_or_else(|| {
            super::StoreError::InvalidData(format!("not a content hash: {content_hash:?}"))
        })
}
