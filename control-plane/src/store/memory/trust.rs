//! Publisher keys and the trust revision in memory.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{MemoryStore, micros};
use crate::store::{KeyRow, StoreError, StoreResult, TrustStore};

/// `publisher_keys` and `trust_revision`.
#[derive(Default)]
pub(super) struct Trust {
    keys: BTreeMap<String, KeyRow>,
    revision: u64,
}

#[async_trait]
impl TrustStore for MemoryStore {
    async fn add_key(&self, key: KeyRow) -> StoreResult<KeyRow> {
        let mut state = self.lock();
        if state.trust.keys.contains_key(&key.key_id) {
            return Err(StoreError::AlreadyExists(format!("key {}", key.key_id)));
        }
        let created_at = state.now();
        let key = KeyRow {
            not_before: micros(key.not_before),
            not_after: key.not_after.map(micros),
            revoked_at: key.revoked_at.map(micros),
            created_at,
            ..key
        };
        state.trust.keys.insert(key.key_id.clone(), key.clone());
        state.trust.revision += 1;
        Ok(key)
    }

    async fn list_keys(&self, publisher: Option<&str>) -> StoreResult<(Vec<KeyRow>, u64)> {
        let state = self.lock();
        let mut keys: Vec<KeyRow> = state
            .trust
            .keys
            .values()
            .filter(|k| publisher.is_none_or(|p| k.publisher == p))
            .cloned()
            .collect();
        keys.sort_by(|a, b| (&a.publisher, &a.key_id).cmp(&(&b.publisher, &b.key_id)));
        Ok((keys, state.trust.revision))
    }

    async fn revoke_key(&self, key_id: &str) -> StoreResult<KeyRow> {
        let mut state = self.lock();
        let now = state.now();
        let trust = &mut state.trust;
        let key = trust
            .keys
            .get_mut(key_id)
            .ok_or_else(|| StoreError::NotFound(format!("key {key_id}")))?;
        if key.revoked_at.is_some() {
            return Ok(key.clone());
        }
        key.revoked_at = Some(now);
        let key = key.clone();
        trust.revision += 1;
        Ok(key)
    }
}
