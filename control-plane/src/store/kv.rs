//! The KV storage area: extensions' key-value records (`ext_storage_records`),
//! scoped to one (tenant, install), with revisions, compare-and-swap, lazy
//! TTL expiry and per-install quotas, as [`KvStore`] (docs/design/alga-compatibility.md,
//! "Storage"). The store enforces what must hold under concurrency (quotas,
//! revisions); the `storage` module validates sizes, keys and TTLs first.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// Whose storage: data is scoped to (tenant, install), never shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageScope {
    pub tenant_id: String,
    pub install_id: Uuid,
}

/// An `ext_storage_records` row. `value` and `metadata` are JSON as Alga
/// stores them (the worker's bytes arrive as a base64 string with metadata
/// `{"encoding":"base64-bytes"}`).
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRow {
    pub namespace: String,
    pub key: String,
    pub value: serde_json::Value,
    pub metadata: serde_json::Value,
    pub revision: u64,
    pub ttl_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A put, validated by the caller (sizes, key characters, TTL range).
#[derive(Debug, Clone, PartialEq)]
pub struct StoragePut {
    pub namespace: String,
    pub key: String,
    pub value: serde_json::Value,
    pub metadata: serde_json::Value,
    /// Serialised size of value + metadata, counted against the install's quota.
    pub size_bytes: u64,
    pub ttl_expires_at: Option<DateTime<Utc>>,
    /// Compare-and-swap: the stored revision must equal this; a missing record
    /// with `if_revision` set is a mismatch.
    pub if_revision: Option<u64>,
}

/// An `ext_storage_schemas` row: the JSON schema a namespace's values must
/// match.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageSchema {
    pub namespace: String,
    pub version: u32,
    pub document: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Hard quotas per install: Alga's values (docs/design/alga-compatibility.md,
/// "Storage").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageQuota {
    pub max_namespaces: u64,
    pub max_keys_per_namespace: u64,
    pub max_bytes: u64,
}

impl Default for StorageQuota {
    fn default() -> Self {
        StorageQuota {
            max_namespaces: 32,
            max_keys_per_namespace: 5_120,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Extension KV storage. Every call first deletes the scope's expired rows,
/// lazily, as Alga does.
#[async_trait]
pub trait KvStore: Send + Sync {
    async fn storage_get(
        &self,
        scope: &StorageScope,
        namespace: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StorageRow>>;
    /// Insert or update; revision starts at 1 and increments on every write.
    /// Errors: RevisionMismatch, QuotaExceeded (namespaces, keys per namespace,
    /// bytes per install; held under concurrent first writes), NotFound when
    /// the install is gone.
    async fn storage_put(
        &self,
        scope: &StorageScope,
        put: StoragePut,
        quota: StorageQuota,
        now: DateTime<Utc>,
    ) -> StoreResult<StorageRow>;
    /// Several puts of one scope as one transaction: every put is applied
    /// in order, or none is (the first error is returned).
    async fn storage_put_many(
        &self,
        scope: &StorageScope,
        puts: Vec<StoragePut>,
        quota: StorageQuota,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StorageRow>>;
    /// The namespace's JSON schema: `version`, or with none the newest
    /// active one; `None` when there is none.
    async fn storage_schema(
        &self,
        scope: &StorageScope,
        namespace: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<StorageSchema>>;
    /// Adds the namespace's next schema version (1 for the first) and
    /// returns it.
    async fn add_storage_schema(
        &self,
        scope: &StorageScope,
        namespace: &str,
        document: serde_json::Value,
    ) -> StoreResult<StorageSchema>;
    /// Every schema version of the scope, by namespace then version.
    async fn list_storage_schemas(&self, scope: &StorageScope) -> StoreResult<Vec<StorageSchema>>;
    /// False when absent; RevisionMismatch when `if_revision` differs.
    async fn storage_delete(
        &self,
        scope: &StorageScope,
        namespace: &str,
        key: &str,
        if_revision: Option<u64>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Keys > `after_key` (if any) that start with `prefix` (literal: `%`/`_`
    /// are not wildcards), ordered by key, at most `limit`.
    async fn storage_list(
        &self,
        scope: &StorageScope,
        namespace: &str,
        after_key: Option<&str>,
        prefix: Option<&str>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StorageRow>>;
}
