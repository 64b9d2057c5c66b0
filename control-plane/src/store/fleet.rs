//! The fleet area: worker membership (`workers`, written from heartbeats by
//! any replica) and the content hashes placement keeps warm, as
//! [`FleetStore`]. Placement itself is the `fleet` module's pure function over
//! what this returns.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

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

/// Worker membership and what placement keeps warm.
#[async_trait]
pub trait FleetStore: Send + Sync {
    async fn upsert_worker(&self, row: WorkerRow) -> StoreResult<()>;
    /// Workers seen at or after `since`, by id.
    async fn list_workers(&self, since: DateTime<Utc>) -> StoreResult<Vec<WorkerRow>>;
    /// Content hashes of the versions active installs run, sorted, each once
    /// (what placement keeps warm).
    async fn active_content_hashes(&self) -> StoreResult<Vec<String>>;
}
