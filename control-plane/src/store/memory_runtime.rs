//! The in-memory side of the runtime rows (see [`runtime`](super::runtime)),
//! with the same semantics as Postgres.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use uuid::Uuid;

use super::{
    ApiKeyRow, ExecutionRow, StoragePut, StorageQuota, StorageRow, StorageScope, StoreError,
    StoreResult, WorkerRow,
};

type ScopeKey = (String, Uuid);
/// namespace → key → (row, size in bytes).
type Namespaces = BTreeMap<String, BTreeMap<String, (StorageRow, u64)>>;

#[derive(Default)]
pub(super) struct MemoryRuntime {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    api_keys: BTreeMap<Uuid, ApiKeyRow>,
    executions: Vec<ExecutionRow>,
    workers: BTreeMap<String, WorkerRow>,
    storage: HashMap<ScopeKey, Namespaces>,
}

fn scope_key(scope: &StorageScope) -> ScopeKey {
    (scope.tenant_id.clone(), scope.install_id)
}

/// `t` at the resolution of a Postgres `timestamptz`: callers pass their own
/// clock's times, which Postgres would truncate on the way in.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

impl Inner {
    fn expire(&mut self, scope: &StorageScope, now: DateTime<Utc>) {
        if let Some(spaces) = self.storage.get_mut(&scope_key(scope)) {
            for keys in spaces.values_mut() {
                keys.retain(|_, (row, _)| row.ttl_expires_at.is_none_or(|t| t > now));
            }
            spaces.retain(|_, keys| !keys.is_empty());
        }
    }
}

impl MemoryRuntime {
    pub(super) fn create_api_key(&self, row: ApiKeyRow) -> StoreResult<ApiKeyRow> {
        let mut inner = self.inner.lock();
        if inner.api_keys.contains_key(&row.id) {
            return Err(StoreError::AlreadyExists(format!("api key {}", row.id)));
        }
        // `key_hash` is unique in Postgres too.
        if inner
            .api_keys
            .values()
            .any(|k| k.secret_sha256 == row.secret_sha256)
        {
            return Err(StoreError::AlreadyExists(format!("api key {}", row.id)));
        }
        let row = ApiKeyRow {
            created_at: micros(row.created_at),
            revoked_at: row.revoked_at.map(micros),
            ..row
        };
        inner.api_keys.insert(row.id, row.clone());
        Ok(row)
    }

    pub(super) fn list_api_keys(&self, tenant_id: &str) -> Vec<ApiKeyRow> {
        let mut keys: Vec<_> = self
            .inner
            .lock()
            .api_keys
            .values()
            .filter(|k| k.tenant_id == tenant_id)
            .cloned()
            .collect();
        keys.sort_by_key(|k| (k.created_at, k.id));
        keys
    }

    pub(super) fn find_api_key(&self, id: Uuid) -> Option<ApiKeyRow> {
        self.inner.lock().api_keys.get(&id).cloned()
    }

    pub(super) fn revoke_api_key(&self, tenant_id: &str, id: Uuid, now: DateTime<Utc>) -> bool {
        match self.inner.lock().api_keys.get_mut(&id) {
            Some(k) if k.tenant_id == tenant_id => {
                k.revoked_at.get_or_insert(now);
                true
            }
            _ => false,
        }
    }

    pub(super) fn record_executions(&self, rows: Vec<ExecutionRow>) {
        let mut inner = self.inner.lock();
        for row in rows {
            // ON CONFLICT (id) DO NOTHING.
            if inner.executions.iter().any(|r| r.id == row.id) {
                continue;
            }
            inner.executions.push(ExecutionRow {
                started_at: micros(row.started_at),
                finished_at: row.finished_at.map(micros),
                ..row
            });
        }
    }

    pub(super) fn list_executions(
        &self,
        tenant_id: &str,
        registry_id: Uuid,
        limit: u32,
    ) -> Vec<ExecutionRow> {
        let mut rows: Vec<_> = self
            .inner
            .lock()
            .executions
            .iter()
            .filter(|r| r.tenant_id == tenant_id && r.registry_id == registry_id)
            .cloned()
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse((r.started_at, r.id)));
        rows.truncate(limit as usize);
        rows
    }

    pub(super) fn upsert_worker(&self, row: WorkerRow) {
        let row = WorkerRow {
            last_seen: micros(row.last_seen),
            ..row
        };
        self.inner.lock().workers.insert(row.id.clone(), row);
    }

    pub(super) fn list_workers(&self, since: DateTime<Utc>) -> Vec<WorkerRow> {
        self.inner
            .lock()
            .workers
            .values()
            .filter(|w| w.last_seen >= since)
            .cloned()
            .collect()
    }

    /// Drops the install's storage rows (Postgres: the foreign key's cascade).
    pub(super) fn delete_install(&self, install_id: Uuid) {
        self.inner
            .lock()
            .storage
            .retain(|(_, install), _| *install != install_id);
    }

    pub(super) fn storage_get(
        &self,
        scope: &StorageScope,
        namespace: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Option<StorageRow> {
        let mut inner = self.inner.lock();
        inner.expire(scope, now);
        inner
            .storage
            .get(&scope_key(scope))
            .and_then(|s| s.get(namespace))
            .and_then(|k| k.get(key))
            .map(|(row, _)| row.clone())
    }

    pub(super) fn storage_put(
        &self,
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
        let mut inner = self.inner.lock();
        inner.expire(scope, now);
        let spaces = inner.storage.entry(scope_key(scope)).or_default();
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

    pub(super) fn storage_delete(
        &self,
        scope: &StorageScope,
        namespace: &str,
        key: &str,
        if_revision: Option<u64>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut inner = self.inner.lock();
        inner.expire(scope, now);
        let Some(keys) = inner
            .storage
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

    pub(super) fn storage_list(
        &self,
        scope: &StorageScope,
        namespace: &str,
        after_key: Option<&str>,
        prefix: Option<&str>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Vec<StorageRow> {
        let mut inner = self.inner.lock();
        inner.expire(scope, now);
        let Some(keys) = inner
            .storage
            .get(&scope_key(scope))
            .and_then(|s| s.get(namespace))
        else {
            return Vec::new();
        };
        keys.iter()
            .filter(|(k, _)| after_key.is_none_or(|a| k.as_str() > a))
            .filter(|(k, _)| prefix.is_none_or(|p| k.starts_with(p)))
            .take(limit as usize)
            .map(|(_, (row, _))| row.clone())
            .collect()
    }
}
