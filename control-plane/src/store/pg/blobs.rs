//! Bundle bytes on Postgres (`bundle_blobs`), keyed by content hash.

use async_trait::async_trait;
use bytes::Bytes;

use super::rows::{col, to_i64};
use super::{PgStore, pg_error};
use crate::store::{BlobStore, StoreResult};

#[async_trait]
impl BlobStore for PgStore {
    async fn put_blob(&self, content_hash: &str, bytes: Bytes) -> StoreResult<()> {
        let client = self.client().await?;
        let size = to_i64(bytes.len() as u64, "blob size")?;
        client
            .execute(
                "INSERT INTO bundle_blobs (content_hash, bytes, size) VALUES ($1, $2, $3) \
                 ON CONFLICT (content_hash) DO NOTHING",
                &[&content_hash, &&bytes[..], &size],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn get_blob(&self, content_hash: &str) -> StoreResult<Option<Bytes>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT bytes FROM bundle_blobs WHERE content_hash = $1",
                &[&content_hash],
            )
            .await
            .map_err(pg_error)?;
        row.map(|r| col::<Vec<u8>>(&r, "bytes").map(Bytes::from))
            .transpose()
    }

    async fn delete_unreferenced_blob(&self, content_hash: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                "DELETE FROM bundle_blobs WHERE content_hash = $1 \
                 AND NOT EXISTS (SELECT 1 FROM extension_bundle WHERE content_hash = $1)",
                &[&content_hash],
            )
            .await
            .map_err(pg_error)?;
        Ok(deleted > 0)
    }
}
