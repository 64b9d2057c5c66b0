//! Edge API keys in memory; the secret hash is unique, as `key_hash` is in
//! Postgres.

use std::collections::BTreeMap;

use async_trait::async_trait;
use uuid::Uuid;

use super::{MemoryStore, micros};
use crate::store::{ApiKeyRow, ApiKeyStore, StoreError, StoreResult};

/// `api_keys`, by id.
#[derive(Default)]
pub(super) struct ApiKeys {
    rows: BTreeMap<Uuid, ApiKeyRow>,
}

#[async_trait]
impl ApiKeyStore for MemoryStore {
    async fn create_api_key(&self, row: ApiKeyRow) -> StoreResult<ApiKeyRow> {
        let mut state = self.lock();
        let keys = &mut state.api_keys.rows;
        if keys.contains_key(&row.id) {
            return Err(StoreError::AlreadyExists(format!("api key {}", row.id)));
        }
        // `key_hash` is unique in Postgres too.
        if keys.values().any(|k| k.secret_sha256 == row.secret_sha256) {
            return Err(StoreError::AlreadyExists(format!("api key {}", row.id)));
        }
        let row = ApiKeyRow {
            created_at: micros(row.created_at),
            revoked_at: row.revoked_at.map(micros),
            ..row
        };
        keys.insert(row.id, row.clone());
        Ok(row)
    }

    async fn list_api_keys(&self, tenant_id: &str) -> StoreResult<Vec<ApiKeyRow>> {
        let mut keys: Vec<_> = self
            .lock()
            .api_keys
            .rows
            .values()
            .filter(|k| k.tenant_id == tenant_id)
            .cloned()
            .collect();
        keys.sort_by_key(|k| (k.created_at, k.id));
        Ok(keys)
    }

    async fn find_api_key(&self, id: Uuid) -> StoreResult<Option<ApiKeyRow>> {
        Ok(self.lock().api_keys.rows.get(&id).cloned())
    }

    async fn revoke_api_key(&self, tenant_id: &str, id: Uuid) -> StoreResult<bool> {
        let mut state = self.lock();
        let now = state.now();
        Ok(match state.api_keys.rows.get_mut(&id) {
            Some(k) if k.tenant_id == tenant_id => {
                k.revoked_at.get_or_insert(now);
                true
            }
            _ => false,
        })
    }
}
