//! Bundle bytes in memory, by content hash. Whether a hash is referenced is
//! read from the registry's versions under the same lock.

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::store::{BlobEntry, BlobRead, BlobStore, READ_CHUNK, StoreError, StoreResult};

/// `bundle_blobs`: bytes and when they were last committed.
#[derive(Default)]
pub(super) struct Blobs {
    bytes: HashMap<String, (Bytes, DateTime<Utc>)>,
}

impl MemoryStore {
    fn referenced(state: &super::State, content_hash: &str) -> bool {
        state
            .registry
            .versions
            .values()
            .any(|v| v.bundle.content_hash == content_hash)
    }
}

#[async_trait]
impl BlobStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    async fn put_blob_file(&self, content_hash: &str, file: &Path) -> StoreResult<()> {
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|e| StoreError::Internal(format!("reading the spooled upload: {e}")))?;
        let mut state = self.lock();
        let now = state.now();
        state
            .blobs
            .bytes
            .entry(content_hash.to_owned())
            .and_modify(|(_, at)| *at = now)
            .or_insert((Bytes::from(bytes), now));
        Ok(())
    }

    async fn get_blob(&self, content_hash: &str) -> StoreResult<Option<BlobRead>> {
        let Some((bytes, _)) = self.lock().blobs.bytes.get(content_hash).cloned() else {
            return Ok(None);
        };
        let chunks: Vec<StoreResult<Bytes>> = (0..bytes.len())
            .step_by(READ_CHUNK)
            .map(|at| Ok(bytes.slice(at..(at + READ_CHUNK).min(bytes.len()))))
            .collect();
        Ok(Some(BlobRead {
            size: bytes.len() as u64,
            chunks: Box::pin(futures::stream::iter(chunks)),
        }))
    }

    async fn blob_size(&self, content_hash: &str) -> StoreResult<Option<u64>> {
        Ok(self
            .lock()
            .blobs
            .bytes
            .get(content_hash)
            .map(|(b, _)| b.len() as u64))
    }

    async fn list_blobs(&self) -> StoreResult<Vec<BlobEntry>> {
        Ok(self
            .lock()
            .blobs
            .bytes
            .iter()
            .map(|(hash, (bytes, at))| BlobEntry {
                content_hash: hash.clone(),
                size: bytes.len() as u64,
                modified: *at,
            })
            .collect())
    }

    async fn delete_blob(&self, content_hash: &str) -> StoreResult<bool> {
        self.delete_unreferenced_blob(content_hash).await
    }

    async fn delete_unreferenced_blob(&self, content_hash: &str) -> StoreResult<bool> {
        let mut state = self.lock();
        if MemoryStore::referenced(&state, content_hash) {
            return Ok(false);
        }
        Ok(state.blobs.bytes.remove(content_hash).is_some())
    }
}
