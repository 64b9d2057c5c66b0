//! The blob area: bundle bytes by content hash (`bundle_blobs`), as
//! [`BlobStore`]. Bytes are content-addressed and written before the bundle
//! row that references them; they are removed only when no bundle row does.
//! Hashing and verifying the bytes is the caller's job.

use async_trait::async_trait;
use bytes::Bytes;

use super::StoreResult;

/// Bundle bytes by content hash.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores bundle bytes by content hash; idempotent.
    async fn put_blob(&self, content_hash: &str, bytes: Bytes) -> StoreResult<()>;
    async fn get_blob(&self, content_hash: &str) -> StoreResult<Option<Bytes>>;
    /// Deletes the bytes unless a bundle row references the hash; returns whether
    /// deleted. One statement: a publish still in flight is not seen, so a
    /// collector should only pass hashes that were put well before.
    async fn delete_unreferenced_blob(&self, content_hash: &str) -> StoreResult<bool>;
}
