//! The trust area: publisher keys (`publisher_keys`) and the trust revision
//! that moves whenever the key set changes, as [`TrustStore`]. Deciding what a
//! key's state means for a signature is the `trust` module's job.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

/// A publisher key row (the trust bundle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub key_id: String,
    pub publisher: String,
    /// Raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    pub not_before: DateTime<Utc>,
    pub not_after: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Publisher keys and the trust revision.
#[async_trait]
pub trait TrustStore: Send + Sync {
    /// Stores the key as given except `created_at`, which the store sets;
    /// AlreadyExists when the key id exists.
    async fn add_key(&self, key: KeyRow) -> StoreResult<KeyRow>;
    /// All keys (or one publisher's), ordered by publisher, key id; plus the
    /// trust revision, read in the same snapshot, which increases whenever the
    /// key set changes (every add, every revoke that revokes).
    async fn list_keys(&self, publisher: Option<&str>) -> StoreResult<(Vec<KeyRow>, u64)>;
    /// Sets `revoked_at` (idempotent: an already revoked key keeps its time and
    /// the revision does not move); NotFound when absent.
    async fn revoke_key(&self, key_id: &str) -> StoreResult<KeyRow>;
}
