//! The quota and usage area: fleet-wide execution quotas per tenant or
//! install (`tenant_quotas`), the edges following routes through each replica
//! (`route_watchers`, to split quotas across them) and per-minute usage
//! windows (`extension_quota_usage`), as [`QuotaStore`]. Enforcing quotas and
//! computing shares is the `quota` module's job.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// Limits of one quota; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaLimits {
    /// Executions in flight at once across the fleet.
    pub max_concurrency: u32,
    /// Executions started per second across the fleet.
    pub requests_per_second: u32,
}

/// A `tenant_quotas` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRow {
    pub tenant_id: String,
    /// `None`: the tenant's quota over all of its installs.
    pub install_id: Option<Uuid>,
    pub limits: QuotaLimits,
    pub updated_at: DateTime<Utc>,
}

/// One `extension_quota_usage` window: what a tenant's extension used in the
/// minute starting at `window_start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub tenant_id: String,
    pub registry_id: Uuid,
    pub window_start: DateTime<Utc>,
    pub invocations: u64,
    pub cpu_us: u64,
    pub memory_byte_ms: u64,
    pub egress_bytes: u64,
    pub fuel: u64,
}

impl UsageRow {
    /// The window's key: rows with equal keys are added together.
    pub(crate) fn key(&self) -> (String, Uuid, DateTime<Utc>) {
        (self.tenant_id.clone(), self.registry_id, self.window_start)
    }

    /// Adds `other`'s figures into `self` (saturating).
    pub(crate) fn add(&mut self, other: &UsageRow) {
        self.invocations = self.invocations.saturating_add(other.invocations);
        self.cpu_us = self.cpu_us.saturating_add(other.cpu_us);
        self.memory_byte_ms = self.memory_byte_ms.saturating_add(other.memory_byte_ms);
        self.egress_bytes = self.egress_bytes.saturating_add(other.egress_bytes);
        self.fuel = self.fuel.saturating_add(other.fuel);
    }
}

/// Merges rows with equal keys, keeping the first occurrence's order.
pub(crate) fn merge_usage(rows: Vec<UsageRow>) -> Vec<UsageRow> {
    let mut out: Vec<UsageRow> = Vec::with_capacity(rows.len());
    let mut index = std::collections::HashMap::new();
    for row in rows {
        match index.get(&row.key()) {
            Some(&i) => UsageRow::add(&mut out[i], &row),
            None => {
                index.insert(row.key(), out.len());
                out.push(row);
            }
        }
    }
    out
}

/// Quotas, route watchers and usage windows.
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Sets (insert or replace) the tenant's quota, or with `install_id` the
    /// quota of one of its installs; NotFound when the tenant has no such
    /// install. A per-install quota goes with its install.
    async fn set_quota(
        &self,
        tenant_id: &str,
        install_id: Option<Uuid>,
        limits: QuotaLimits,
    ) -> StoreResult<QuotaRow>;
    /// One tenant's quotas (or every tenant's), by tenant, the tenant-wide
    /// quota first, then by install id.
    async fn list_quotas(&self, tenant_id: Option<&str>) -> StoreResult<Vec<QuotaRow>>;
    /// False when no such quota is set.
    async fn delete_quota(&self, tenant_id: &str, install_id: Option<Uuid>) -> StoreResult<bool>;
    /// Records that `edge_id` follows routes through `replica_id`, seen at `now`.
    async fn touch_route_watcher(
        &self,
        edge_id: &str,
        replica_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Forgets `edge_id` if `replica_id` still holds it (its stream ended).
    async fn remove_route_watcher(&self, edge_id: &str, replica_id: &str) -> StoreResult<()>;
    /// Edges seen at or after `since`, across every replica.
    async fn count_route_watchers(&self, since: DateTime<Utc>) -> StoreResult<u32>;
    /// Adds each row's figures into its (tenant, registry, window) row,
    /// creating it when absent. Rows with equal keys in one call add up.
    async fn add_usage(&self, rows: Vec<UsageRow>) -> StoreResult<()>;
    /// The tenant's windows (of one extension, or all) with
    /// `since <= window_start < until`, oldest first, then by registry id.
    async fn list_usage(
        &self,
        tenant_id: &str,
        registry_id: Option<Uuid>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<UsageRow>>;
}
