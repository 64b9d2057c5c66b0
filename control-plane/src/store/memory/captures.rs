//! Captures in memory: policies by (tenant, install), captures in arrival
//! order, reads appended.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{MemoryStore, micros};
use crate::store::{CaptureAccessRow, CapturePolicyRow, CaptureRow, CaptureStore, StoreResult};

/// `capture_policies`, `captures`, `capture_access`.
#[derive(Default)]
pub(super) struct Captures {
    policies: Vec<CapturePolicyRow>,
    rows: Vec<CaptureRow>,
    access: Vec<CaptureAccessRow>,
}

fn newest_first(rows: &mut [CaptureRow]) {
    rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
}

#[async_trait]
impl CaptureStore for MemoryStore {
    async fn set_capture_policy(&self, policy: CapturePolicyRow) -> StoreResult<CapturePolicyRow> {
        let mut state = self.lock();
        let row = CapturePolicyRow {
            created_at: state.now(),
            ..policy
        };
        let policies = &mut state.captures.policies;
        policies.retain(|p| !(p.tenant_id == row.tenant_id && p.install_id == row.install_id));
        policies.push(row.clone());
        Ok(row)
    }

    async fn delete_capture_policy(&self, tenant_id: &str, install_id: Uuid) -> StoreResult<bool> {
        let mut state = self.lock();
        let policies = &mut state.captures.policies;
        let before = policies.len();
        policies.retain(|p| !(p.tenant_id == tenant_id && p.install_id == install_id));
        Ok(policies.len() != before)
    }

    async fn capture_policy(
        &self,
        tenant_id: &str,
        install_id: Uuid,
    ) -> StoreResult<Option<CapturePolicyRow>> {
        Ok(self
            .lock()
            .captures
            .policies
            .iter()
            .find(|p| p.tenant_id == tenant_id && p.install_id == install_id)
            .cloned())
    }

    async fn insert_capture(&self, row: CaptureRow, keep: u32) -> StoreResult<()> {
        let mut state = self.lock();
        let rows = &mut state.captures.rows;
        if rows.iter().any(|r| r.id == row.id) {
            return Err(crate::store::StoreError::AlreadyExists(format!(
                "capture {}",
                row.id
            )));
        }
        let (tenant, install) = (row.tenant_id.clone(), row.install_id);
        rows.push(CaptureRow {
            created_at: micros(row.created_at),
            expires_at: micros(row.expires_at),
            ..row
        });
        let mut same: Vec<CaptureRow> = rows
            .iter()
            .filter(|r| r.tenant_id == tenant && r.install_id == install)
            .cloned()
            .collect();
        newest_first(&mut same);
        let dropped: Vec<Uuid> = same.iter().skip(keep as usize).map(|r| r.id).collect();
        rows.retain(|r| !dropped.contains(&r.id));
        Ok(())
    }

    async fn list_captures(
        &self,
        tenant_id: &str,
        install_id: Option<Uuid>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<CaptureRow>> {
        let mut rows: Vec<CaptureRow> = self
            .lock()
            .captures
            .rows
            .iter()
            .filter(|r| r.tenant_id == tenant_id && r.expires_at > now)
            .filter(|r| install_id.is_none_or(|i| r.install_id == i))
            .map(|r| CaptureRow {
                tape: Vec::new(),
                ..r.clone()
            })
            .collect();
        newest_first(&mut rows);
        rows.truncate(limit as usize);
        Ok(rows)
    }

    async fn get_capture(
        &self,
        tenant_id: &str,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<CaptureRow>> {
        Ok(self
            .lock()
            .captures
            .rows
            .iter()
            .find(|r| r.id == id && r.tenant_id == tenant_id && r.expires_at > now)
            .cloned())
    }

    async fn delete_expired_captures(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        let mut state = self.lock();
        let rows = &mut state.captures.rows;
        let expired: Vec<Uuid> = rows
            .iter()
            .filter(|r| r.expires_at <= now)
            .take(limit as usize)
            .map(|r| r.id)
            .collect();
        rows.retain(|r| !expired.contains(&r.id));
        Ok(expired.len() as u64)
    }

    async fn record_capture_access(&self, access: CaptureAccessRow) -> StoreResult<()> {
        self.lock().captures.access.push(CaptureAccessRow {
            at: micros(access.at),
            ..access
        });
        Ok(())
    }

    async fn list_capture_access(
        &self,
        tenant_id: &str,
        capture_id: Uuid,
    ) -> StoreResult<Vec<CaptureAccessRow>> {
        Ok(self
            .lock()
            .captures
            .access
            .iter()
            .filter(|a| a.tenant_id == tenant_id && a.capture_id == capture_id)
            .cloned()
            .collect())
    }
}
