//! Bundle bytes in memory, by content hash. Whether a hash is referenced is
//! read from the registry's versions under the same lock.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;

use super::MemoryStore;
use crate::store::{BlobStore, StoreResult};

/// `bundle_blobs`.
#[derive(Default)]
pub(super) struct Blobs {
    bytes: HashMap<String, Bytes>,
}

#[async_trait]
impl BlobStore for MemoryStore {
    async fn put_blob(&self, content_hash: &str, bytes: Bytes) -> StoreResult<()> {
        self.lock()
            .blobs
            .bytes
            .entry(content_hash.to_owned())
            .or_insert(bytes);
        Ok(())
    }

    async fn get_blob(&self, content_hash: &str) -> StoreResult<Option<Bytes>> {
        Ok(self.lock().blobs.bytes.get(content_hash).cloned())
    }

    async fn delete_unreferenced_blob(&self, content_hash: &str) -> StoreResult<bool> {
        let mut state = self.lock();
        if state
            .registry
            .versions
            .values()
            .any(|v| v.bundle.content_hash == content_hash)
        {
            return Ok(false);
        }
        Ok(state.blobs.bytes.remove(content_hash).is_some())
    }
}
