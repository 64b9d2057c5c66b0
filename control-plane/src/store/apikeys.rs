//! The API key area: per-tenant edge API keys (`api_keys`), as
//! [`ApiKeyStore`]. Only the SHA-256 of a key's secret is stored; minting
//! secrets and checking presented ones is the `apikeys` module's job.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

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

/// Edge API keys.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// AlreadyExists on a duplicate id (or secret hash).
    async fn create_api_key(&self, row: ApiKeyRow) -> StoreResult<ApiKeyRow>;
    /// The tenant's keys (revoked included), oldest first.
    async fn list_api_keys(&self, tenant_id: &str) -> StoreResult<Vec<ApiKeyRow>>;
    async fn find_api_key(&self, id: Uuid) -> StoreResult<Option<ApiKeyRow>>;
    /// Sets revoked_at; false when the tenant has no such key.
    async fn revoke_api_key(&self, tenant_id: &str, id: Uuid) -> StoreResult<bool>;
}
