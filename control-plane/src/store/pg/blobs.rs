//! Bundle bytes on Postgres (`bundle_blobs`), keyed by content hash. A
//! commit is one `INSERT` of the whole file (Postgres cannot take a `bytea`
//! in pieces), so it holds the bundle in memory once, bounded by the
//! publish limit (200 MiB by default); reads stream it back in
//! [`READ_CHUNK`]-sized `substring`s (the column is stored uncompressed
//! out of line, migration 0010, so each slice reads only its own pages).
//! Whether a bundle row references a blob is checked in the same statement
//! that deletes it.

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::rows::{col, to_i64};
use super::{PgStore, pg_error};
use crate::store::{BlobEntry, BlobRead, BlobStore, READ_CHUNK, StoreError, StoreResult};

const DELETE_UNREFERENCED: &str = "DELETE FROM bundle_blobs WHERE content_hash = $1 \
     AND NOT EXISTS (SELECT 1 FROM extension_bundle WHERE content_hash = $1)";

#[async_trait]
impl BlobStore for PgStore {
    fn describe(&self) -> String {
        "postgres".to_owned()
    }

    async fn put_blob_file(&self, content_hash: &str, file: &Path) -> StoreResult<()> {
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|e| StoreError::Internal(format!("reading the spooled upload: {e}")))?;
        let client = self.client().await?;
        let size = to_i64(bytes.len() as u64, "blob size")?;
        // An existing row keeps its bytes (the same, by content address) and
        // gets a fresh `created_at`, so the orphan collector's grace period
        // covers the publish about to reference it.
        client
            .execute(
                "INSERT INTO bundle_blobs (content_hash, bytes, size) VALUES ($1, $2, $3) \
                 ON CONFLICT (content_hash) DO UPDATE SET created_at = now()",
                &[&content_hash, &bytes.as_slice(), &size],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn get_blob(&self, content_hash: &str) -> StoreResult<Option<BlobRead>> {
        let Some(size) = self.blob_size(content_hash).await? else {
            return Ok(None);
        };
        let (store, hash) = (self.clone(), content_hash.to_owned());
        let chunks = async_stream::try_stream! {
            let mut offset = 0u64;
            while offset < size {
                let len = (size - offset).min(READ_CHUNK as u64);
                // The connection goes back to the pool before the chunk is
                // handed on, however slowly the receiver takes it.
                let chunk = store.read_slice(&hash, offset, len).await?;
                offset += chunk.len() as u64;
                yield chunk;
            }
        };
        Ok(Some(BlobRead {
            size,
            chunks: Box::pin(chunks),
        }))
    }

    async fn blob_size(&self, content_hash: &str) -> StoreResult<Option<u64>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT size FROM bundle_blobs WHERE content_hash = $1",
                &[&content_hash],
            )
            .await
            .map_err(pg_error)?;
        row.map(|r| col::<i64>(&r, "size").map(|s| s.max(0) as u64))
            .transpose()
    }

    async fn list_blobs(&self) -> StoreResult<Vec<BlobEntry>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT content_hash, size, created_at FROM bundle_blobs",
                &[],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                Ok(BlobEntry {
                    content_hash: col(r, "content_hash")?,
                    size: col::<i64>(r, "size")?.max(0) as u64,
                    modified: col::<DateTime<Utc>>(r, "created_at")?,
                })
            })
            .collect()
    }

    async fn delete_blob(&self, content_hash: &str) -> StoreResult<bool> {
        self.delete_unreferenced_blob(content_hash).await
    }

    async fn delete_unreferenced_blob(&self, content_hash: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let deleted = client
            .execute(DELETE_UNREFERENCED, &[&content_hash])
            .await
            .map_err(pg_error)?;
        Ok(deleted > 0)
    }
}

impl PgStore {
    /// `len` bytes of the blob from `offset`.
    async fn read_slice(&self, hash: &str, offset: u64, len: u64) -> StoreResult<Bytes> {
        let client = self.client().await?;
        // substring() counts from 1.
        let row = client
            .query_opt(
                "SELECT substring(bytes FROM $2::int FOR $3::int) AS chunk \
                 FROM bundle_blobs WHERE content_hash = $1",
                &[&hash, &to_i32(offset + 1)?, &to_i32(len)?],
            )
            .await
            .map_err(pg_error)?
            .ok_or_else(|| StoreError::NotFound(format!("blob {hash} (deleted while read)")))?;
        let chunk: Vec<u8> = col(&row, "chunk")?;
        if chunk.is_empty() {
            return Err(StoreError::Internal(format!(
                "blob {hash} is shorter than its size"
            )));
        }
        Ok(Bytes::from(chunk))
    }
}

fn to_i32(value: u64) -> StoreResult<i32> {
    i32::try_from(value)
        .map_err(|_| StoreError::InvalidData(format!("blob offset {value} is out of range")))
}
