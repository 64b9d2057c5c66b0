//! Quota rows: fleet-wide execution quotas per tenant or install, the edges
//! following routes (to split quotas across them) and usage windows.

use chrono::{DateTime, Utc};
use uuid::Uuid;

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
    pub fn key(&self) -> (String, Uuid, DateTime<Utc>) {
        (self.tenant_id.clone(), self.registry_id, self.window_start)
    }

    /// Adds `other`'s figures into `self` (saturating).
    pub fn add(&mut self, other: &UsageRow) {
        self.invocations = self.invocations.saturating_add(other.invocations);
        self.cpu_us = self.cpu_us.saturating_add(other.cpu_us);
        self.memory_byte_ms = self.memory_byte_ms.saturating_add(other.memory_byte_ms);
        self.egress_bytes = self.egress_bytes.saturating_add(other.egress_bytes);
        self.fuel = self.fuel.saturating_add(other.fuel);
    }
}

/// Merges rows with equal keys, keeping the first occurrence's order.
pub fn merge_usage(rows: Vec<UsageRow>) -> Vec<UsageRow> {
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
