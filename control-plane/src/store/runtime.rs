//! Runtime rows: API keys, the execution log, worker membership and
//! extension KV storage (spec §9).

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A per-tenant API key; only the SHA-256 of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub permissions: Vec<String>,
    pub secret_sha256: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One `extension_execution_log` row, written by edges through the control plane.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRow {
    pub id: Uuid,
    pub tenant_id: String,
    pub registry_id: Uuid,
    pub version_id: Uuid,
    pub request_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// ok | error | timeout | policy_denied | upstream_error
    pub status: String,
    /// `{method, path, endpoint_template, principal_kind, user_id, http_status?, duration_ms?}`
    pub metrics: serde_json::Value,
    pub error: Option<String>,
}

/// A worker as last seen by any control-plane replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRow {
    pub id: String,
    pub address: String,
    pub capacity: u32,
    pub in_flight: u32,
    pub draining: bool,
    pub cached_hashes: Vec<String>,
    pub last_seen: DateTime<Utc>,
}

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

/// Hard quotas per install (Alga's values; spec §9).
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
