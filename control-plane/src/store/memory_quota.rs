//! The in-memory side of the quota rows (see [`quota`](super::quota)), with
//! the same semantics as Postgres.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use uuid::Uuid;

use super::{QuotaLimits, QuotaRow, UsageRow, merge_usage};

#[derive(Default)]
pub(super) struct MemoryQuotas {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (tenant, install) → row; `None` sorts first, as the listing wants.
    quotas: BTreeMap<(String, Option<Uuid>), QuotaRow>,
    /// edge id → (replica id, last seen).
    watchers: BTreeMap<String, (String, DateTime<Utc>)>,
    usage: BTreeMap<(String, Uuid, DateTime<Utc>), UsageRow>,
}

/// `t` at the resolution of a Postgres `timestamptz`.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

impl MemoryQuotas {
    pub(super) fn set(
        &self,
        tenant_id: &str,
        install_id: Option<Uuid>,
        limits: QuotaLimits,
        now: DateTime<Utc>,
    ) -> QuotaRow {
        let row = QuotaRow {
            tenant_id: tenant_id.to_owned(),
            install_id,
            limits,
            updated_at: micros(now),
        };
        self.inner
            .lock()
            .quotas
            .insert((tenant_id.to_owned(), install_id), row.clone());
        row
    }

    pub(super) fn list(&self, tenant_id: Option<&str>) -> Vec<QuotaRow> {
        self.inner
            .lock()
            .quotas
            .values()
            .filter(|q| tenant_id.is_none_or(|t| q.tenant_id == t))
            .cloned()
            .collect()
    }

    pub(super) fn delete(&self, tenant_id: &str, install_id: Option<Uuid>) -> bool {
        self.inner
            .lock()
            .quotas
            .remove(&(tenant_id.to_owned(), install_id))
            .is_some()
    }

    /// Postgres cascades from the install row.
    pub(super) fn delete_install(&self, install_id: Uuid) {
        self.inner
            .lock()
            .quotas
            .retain(|(_, install), _| *install != Some(install_id));
    }

    pub(super) fn touch_watcher(&self, edge_id: &str, replica_id: &str, now: DateTime<Utc>) {
        self.inner
            .lock()
            .watchers
            .insert(edge_id.to_owned(), (replica_id.to_owned(), micros(now)));
    }

    pub(super) fn remove_watcher(&self, edge_id: &str, replica_id: &str) {
        let mut inner = self.inner.lock();
        if inner
            .watchers
            .get(edge_id)
            .is_some_and(|(replica, _)| replica == replica_id)
        {
            inner.watchers.remove(edge_id);
        }
    }

    pub(super) fn count_watchers(&self, since: DateTime<Utc>) -> u32 {
        let n = self
            .inner
            .lock()
            .watchers
            .values()
            .filter(|(_, seen)| *seen >= since)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    pub(super) fn add_usage(&self, rows: Vec<UsageRow>) {
        let mut inner = self.inner.lock();
        for row in merge_usage(rows) {
            let row = UsageRow {
                window_start: micros(row.window_start),
                ..row
            };
            inner
                .usage
                .entry(row.key())
                .and_modify(|r| r.add(&row))
                .or_insert(row);
        }
    }

    pub(super) fn list_usage(
        &self,
        tenant_id: &str,
        registry_id: Option<Uuid>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Vec<UsageRow> {
        let mut rows: Vec<UsageRow> = self
            .inner
            .lock()
            .usage
            .values()
            .filter(|u| u.tenant_id == tenant_id)
            .filter(|u| registry_id.is_none_or(|r| u.registry_id == r))
            .filter(|u| since.is_none_or(|s| u.window_start >= s))
            .filter(|u| until.is_none_or(|t| u.window_start < t))
            .cloned()
            .collect();
        rows.sort_by_key(|u| (u.window_start, u.registry_id));
        rows
    }
}
