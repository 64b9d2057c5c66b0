//! Quotas, route watchers and usage windows in memory. A per-install quota
//! is checked against the install table under the same lock, so it cannot
//! outlive its install (Postgres: the foreign key).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{MemoryStore, micros};
use crate::store::{
    QuotaLimits, QuotaRow, QuotaStore, StoreError, StoreResult, UsageRow, merge_usage,
};

/// `tenant_quotas`, `route_watchers` and `extension_quota_usage`.
#[derive(Default)]
pub(super) struct Quotas {
    /// (tenant, install) → row; `None` sorts first, as the listing wants.
    quotas: BTreeMap<(String, Option<Uuid>), QuotaRow>,
    /// edge id → (replica id, last seen).
    watchers: BTreeMap<String, (String, DateTime<Utc>)>,
    usage: BTreeMap<(String, Uuid, DateTime<Utc>), UsageRow>,
}

impl Quotas {
    /// Postgres cascades from the install row.
    pub(super) fn delete_install(&mut self, install_id: Uuid) {
        self.quotas
            .retain(|(_, install), _| *install != Some(install_id));
    }
}

#[async_trait]
impl QuotaStore for MemoryStore {
    async fn set_quota(
        &self,
        tenant_id: &str,
        install_id: Option<Uuid>,
        limits: QuotaLimits,
    ) -> StoreResult<QuotaRow> {
        let mut state = self.lock();
        if let Some(id) = install_id
            && state
                .installs
                .rows
                .get(&id)
                .is_none_or(|i| i.tenant_id != tenant_id)
        {
            return Err(StoreError::NotFound("install".into()));
        }
        let row = QuotaRow {
            tenant_id: tenant_id.to_owned(),
            install_id,
            limits,
            updated_at: state.now(),
        };
        state
            .quotas
            .quotas
            .insert((tenant_id.to_owned(), install_id), row.clone());
        Ok(row)
    }

    async fn list_quotas(&self, tenant_id: Option<&str>) -> StoreResult<Vec<QuotaRow>> {
        Ok(self
            .lock()
            .quotas
            .quotas
            .values()
            .filter(|q| tenant_id.is_none_or(|t| q.tenant_id == t))
            .cloned()
            .collect())
    }

    async fn delete_quota(&self, tenant_id: &str, install_id: Option<Uuid>) -> StoreResult<bool> {
        Ok(self
            .lock()
            .quotas
            .quotas
            .remove(&(tenant_id.to_owned(), install_id))
            .is_some())
    }

    async fn touch_route_watcher(
        &self,
        edge_id: &str,
        replica_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.lock()
            .quotas
            .watchers
            .insert(edge_id.to_owned(), (replica_id.to_owned(), micros(now)));
        Ok(())
    }

    async fn remove_route_watcher(&self, edge_id: &str, replica_id: &str) -> StoreResult<()> {
        let mut state = self.lock();
        let watchers = &mut state.quotas.watchers;
        if watchers
            .get(edge_id)
            .is_some_and(|(replica, _)| replica == replica_id)
        {
            watchers.remove(edge_id);
        }
        Ok(())
    }

    async fn count_route_watchers(&self, since: DateTime<Utc>) -> StoreResult<u32> {
        let n = self
            .lock()
            .quotas
            .watchers
            .values()
            .filter(|(_, seen)| *seen >= since)
            .count();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn add_usage(&self, rows: Vec<UsageRow>) -> StoreResult<()> {
        let mut state = self.lock();
        for row in merge_usage(rows) {
            let row = UsageRow {
                window_start: micros(row.window_start),
                ..row
            };
            state
                .quotas
                .usage
                .entry(row.key())
                .and_modify(|r| r.add(&row))
                .or_insert(row);
        }
        Ok(())
    }

    async fn list_usage(
        &self,
        tenant_id: &str,
        registry_id: Option<Uuid>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<UsageRow>> {
        let mut rows: Vec<UsageRow> = self
            .lock()
            .quotas
            .usage
            .values()
            .filter(|u| u.tenant_id == tenant_id)
            .filter(|u| registry_id.is_none_or(|r| u.registry_id == r))
            .filter(|u| since.is_none_or(|s| u.window_start >= s))
            .filter(|u| until.is_none_or(|t| u.window_start < t))
            .cloned()
            .collect();
        rows.sort_by_key(|u| (u.window_start, u.registry_id));
        Ok(rows)
    }
}
