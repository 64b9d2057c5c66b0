//! The capture area (docs/design/replay.md): one capture policy per
//! install, the captured executions with their tapes and sealed secrets,
//! and the record of who read them ([`CaptureStore`]). Every read names a
//! tenant, and a capture of another tenant reads as absent. Expired
//! captures are invisible before they are deleted.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// One install's capture policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePolicyRow {
    pub tenant_id: String,
    pub install_id: Uuid,
    /// Parts per million of calls recorded.
    pub sample_ppm: u32,
    /// Failed executions are kept too.
    pub failures: bool,
    pub retention_hours: u32,
    pub max_bytes: u64,
    /// Set by the store.
    pub created_at: DateTime<Utc>,
}

/// One captured execution. Lists leave `tape` empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRow {
    pub id: Uuid,
    pub tenant_id: String,
    pub install_id: Uuid,
    pub request_id: String,
    pub content_hash: String,
    /// `sampled` or `failure`.
    pub reason: String,
    pub outcome: String,
    pub status: u32,
    pub method: String,
    pub path: String,
    pub size_bytes: u64,
    pub secret_keys: Vec<String>,
    /// The secret values, sealed; empty when the guest read none.
    pub sealed_secrets: String,
    pub tape: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One read of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureAccessRow {
    pub tenant_id: String,
    pub capture_id: Uuid,
    /// `read` or `reveal`.
    pub action: String,
    pub actor: String,
    pub at: DateTime<Utc>,
}

#[async_trait]
pub trait CaptureStore: Send + Sync {
    /// Creates or replaces the install's policy (`created_at` is now).
    async fn set_capture_policy(&self, policy: CapturePolicyRow) -> StoreResult<CapturePolicyRow>;
    /// False when the install had none.
    async fn delete_capture_policy(&self, tenant_id: &str, install_id: Uuid) -> StoreResult<bool>;
    async fn capture_policy(
        &self,
        tenant_id: &str,
        install_id: Uuid,
    ) -> StoreResult<Option<CapturePolicyRow>>;
    /// Stores a capture and deletes the install's oldest beyond `keep`.
    async fn insert_capture(&self, row: CaptureRow, keep: u32) -> StoreResult<()>;
    /// The tenant's unexpired captures at `now` (one install's with
    /// `install_id`), newest first, without tapes.
    async fn list_captures(
        &self,
        tenant_id: &str,
        install_id: Option<Uuid>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<CaptureRow>>;
    /// One unexpired capture of the tenant, with its tape.
    async fn get_capture(
        &self,
        tenant_id: &str,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<CaptureRow>>;
    /// Deletes up to `limit` captures expired at `now`; how many went.
    async fn delete_expired_captures(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64>;
    async fn record_capture_access(&self, access: CaptureAccessRow) -> StoreResult<()>;
    /// The reads of one capture of the tenant, oldest first.
    async fn list_capture_access(
        &self,
        tenant_id: &str,
        capture_id: Uuid,
    ) -> StoreResult<Vec<CaptureAccessRow>>;
}
