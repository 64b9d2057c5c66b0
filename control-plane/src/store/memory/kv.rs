//! Extension KV storage in memory. Expired rows of the scope go first on
//! every call, as in Postgres; quotas are checked under the store's lock, so
//! they hold under concurrent first writes.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{MemoryStore, micros};
use crate::store::{
    KvStore, StoragePut, StorageQuota, StorageRow, StorageSchema, StorageScope, StoreError,
    StoreResult,
};

type ScopeKey = (String, Uuid);
/// namespace → key → (row, size in bytes).
type Namespaces = BTreeMap<String, BTreeMap<String, (StorageRow, u64)>>;

/// `ext_storage_records` and `ext_storage_schemas`, by scope.
#[derive(Default)]
pub(super) struct Kv {
    scopes: HashMap<ScopeKey, Namespaces>,
    /// namespace → versions in order.
    schemas: HashMap<ScopeKey, BTreeMap<String, Vec<StorageSchema>>>,
}

fn scope_key(scope: &StorageScope) -> ScopeKey {
    (scope.tenant_id.clone(), scope.install_id)
}

impl Kv {
    fn expire(&mut self, scope: &StorageScope, now: DateTime<Utc>) {
        if let Some(spaces) = self.scopes.get_mut(&scope_key(scope)) {
            for keys in spaces.values_mut() {
                keys.retain(|_, (row, _)| row.ttl_expires_at.is_none_or(|t| t > now));
            }
            spaces.retain(|_, keys| !keys.is_empty());
        }
    }

    /// Drops the install's storage rows (Postgres: the foreign key's cascade).
    pub(super) fn delete_install(&mut self, install_id: Uuid) {
        self.scopes.retain(|(_, install), _| *install != install_id);
        self.schemas
            .retain(|(_, install), _| *install != install_id);
    }

    fn put(
        &mut self,
        scope: &StorageScope,
        put: StoragePut,
        quota: StorageQuota,
        now: DateTime<Utc>,
    ) -> StoreResult<StorageRow> {
        let now = micros(now);
        let put = StoragePut {
            ttl_expires_at: put.ttl_expires_at.map(micros),
            ..put
        };
        self.expire(scope, now);
        let spaces = self.scopes.entry(scope_key(scope)).or_default();
        let existing = spaces
            .get(&put.namespace)
            .and_then(|k| k.get(&put.key))
            .cloned();
        match (&existing, put.if_revision) {
            (Some((row, _)), Some(rev)) if row.revision != rev => {
                return Err(StoreError::RevisionMismatch);
            }
            (None, Some(_)) => return Err(StoreError::RevisionMismatch),
            _ => {}
        }
        let used: u64 = spaces
            .values()
            .flat_map(|k| k.values())
            .map(|(_, size)| size)
            .sum();
        let old_size = existing.as_ref().map_or(0, |(_, s)| *s);
        if existing.is_none() {
            if !spaces.contains_key(&put.namespace) && spaces.len() as u64 >= quota.max_namespaces {
                return Err(StoreError::QuotaExceeded(format!(
                    "at most {} namespaces per install",
                    quota.max_namespaces
                )));
            }
            let keys = spaces.get(&put.namespace).map_or(0, |k| k.len() as u64);
            if keys >= quota.max_keys_per_namespace {
                return Err(StoreError::QuotaExceeded(format!(
                    "at most {} keys per namespace",
                    quota.max_keys_per_namespace
                )));
            }
        }
        if used - old_size + put.size_bytes > quota.max_bytes {
            return Err(StoreError::QuotaExceeded(format!(
                "at most {} bytes per install",
                quota.max_bytes
            )));
        }
        let row = StorageRow {
            namespace: put.namespace.clone(),
            key: put.key.clone(),
            value: put.value,
            metadata: put.metadata,
            revision: existing.as_ref().map_or(1, |(r, _)| r.revision + 1),
            ttl_expires_at: put.ttl_expires_at,
            created_at: existing.as_ref().map_or(now, |(r, _)| r.created_at),
            updated_at: now,
        };
        spaces
            .entry(put.namespace)
            .or_default()
            .insert(put.key, (row.clone(), put.size_bytes));
        Ok(row)
    }
}

#[async_trait]
impl KvStore for MemoryStore {
    async fn storage_get(
        &self,
        scope: &StorageScope,
        namespace: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StorageRow>> {
        let mut state = self.lock();
        state.kv.expire(scope, now);
        Ok(state
            .kv
            .scopes
            .get(&scope_key(scope))
            .and_then(|s| s.get(namespace))
            .and_then(|k| k.get(key))
            .map(|(row, _)| row.clone()))
    }

    async fn storage_put(
        &self,
        scope: &StorageScope,
        put: StoragePut,
        quota: StorageQuota,
        now: DateTime<Utc>,
    ) -> StoreResult<StorageRow> {
        let mut state = self.lock();
        // Under the same lock as delete_install, so no rows outlive their
        // install (Postgres: the foreign key).
        if !state.installs.rows.contains_key(&scope.install_id) {
            return Err(StoreError::NotFound("install".into()));
        }
        state.kv.put(scope, put, quota, now)
    }

    async fn storage_put_many(
        &self,
        scope: &StorageScope,
        puts: Vec<StoragePut>,
        quota: StorageQuota,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StorageRow>> {
        let mut state = self.lock();
        if !state.installs.rows.contains_key(&scope.install_id) {
            return Err(StoreError::NotFound("install".into()));
        }
        // All or nothing: keep the scope as it was to put it back on an
        // error (what expired meanwhile stays expired).
        let key = scope_key(scope);
        state.kv.expire(scope, now);
        let before = state.kv.scopes.get(&key).cloned();
        let mut rows = Vec::with_capacity(puts.len());
        for put in puts {
            match state.kv.put(scope, put, quota, now) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    match before {
                        Some(spaces) => state.kv.scopes.insert(key, spaces),
                        None => state.kv.scopes.remove(&key),
                    };
                    return Err(e);
                }
            }
        }
        Ok(rows)
    }

    async fn storage_schema(
        &self,
        scope: &StorageScope,
        namespace: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<StorageSchema>> {
        let state = self.lock();
        let versions = state
            .kv
            .schemas
            .get(&scope_key(scope))
            .and_then(|n| n.get(namespace));
        Ok(versions.and_then(|v| match version {
            Some(want) => v.iter().find(|s| s.version == want).cloned(),
            None => v.last().cloned(),
        }))
    }

    async fn add_storage_schema(
        &self,
        scope: &StorageScope,
        namespace: &str,
        document: serde_json::Value,
    ) -> StoreResult<StorageSchema> {
        let mut state = self.lock();
        if !state.installs.rows.contains_key(&scope.install_id) {
            return Err(StoreError::NotFound("install".into()));
        }
        let now = state.now();
        let versions = state
            .kv
            .schemas
            .entry(scope_key(scope))
            .or_default()
            .entry(namespace.to_owned())
            .or_default();
        let schema = StorageSchema {
            namespace: namespace.to_owned(),
            version: versions.last().map_or(1, |s| s.version + 1),
            document,
            created_at: now,
        };
        versions.push(schema.clone());
        Ok(schema)
    }

    async fn list_storage_schemas(&self, scope: &StorageScope) -> StoreResult<Vec<StorageSchema>> {
        let state = self.lock();
        Ok(state
            .kv
            .schemas
            .get(&scope_key(scope))
            .map(|n| n.values().flatten().cloned().collect())
            .unwrap_or_default())
    }

    async fn storage_delete(
        &self,
        scope: &StorageScope,
        namespace: &str,
        key: &str,
        if_revision: Option<u64>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut state = self.lock();
        state.kv.expire(scope, now);
        let Some(keys) = state
            .kv
            .scopes
            .get_mut(&scope_key(scope))
            .and_then(|s| s.get_mut(namespace))
        else {
            return Ok(false);
        };
        match (keys.get(key), if_revision) {
            (None, _) => Ok(false),
            (Some((row, _)), Some(rev)) if row.revision != rev => Err(StoreError::RevisionMismatch),
            _ => {
                keys.remove(key);
                Ok(true)
            }
        }
    }

    async fn storage_list(
        &self,
        scope: &StorageScope,
        namespace: &str,
        after_key: Option<&str>,
        prefix: Option<&str>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StorageRow>> {
        let mut state = self.lock();
        state.kv.expire(scope, now);
        let Some(keys) = state
            .kv
            .scopes
            .get(&scope_key(scope))
            .and_then(|s| s.get(namespace))
        else {
            return Ok(Vec::new());
        };
        Ok(keys
            .iter()
            .filter(|(k, _)| after_key.is_none_or(|a| k.as_str() > a))
            .filter(|(k, _)| prefix.is_none_or(|p| k.starts_with(p)))
            .take(limit as usize)
            .map(|(_, (row, _))| row.clone())
            .collect())
    }
}
