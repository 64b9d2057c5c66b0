//! Rollouts in memory, with the same rules as Postgres: one active rollout
//! per install (the partial unique index), changes only against the current
//! revision of an active rollout, rows gone with their install.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::MemoryStore;
use crate::store::{
    NewRollout, RolloutChange, RolloutRow, RolloutState, RolloutStore, StoreError, StoreResult,
    VersionStats, is_failure, p99,
};

/// `extension_rollouts`, in creation order.
#[derive(Default)]
pub(super) struct Rollouts {
    rows: Vec<RolloutRow>,
}

impl Rollouts {
    /// (install, canary version) of every active rollout.
    pub(super) fn canaries(&self) -> impl Iterator<Item = (Uuid, Uuid)> + '_ {
        self.rows
            .iter()
            .filter(|r| r.state == RolloutState::Active)
            .flat_map(|r| r.variants.iter().map(|v| (r.install_id, v.version_id)))
    }

    pub(super) fn delete_install(&mut self, install_id: Uuid) {
        self.rows.retain(|r| r.install_id != install_id);
    }
}

#[async_trait]
impl RolloutStore for MemoryStore {
    async fn create_rollout(&self, new: NewRollout) -> StoreResult<RolloutRow> {
        let mut state = self.lock();
        if !state.installs.rows.contains_key(&new.install_id) {
            return Err(StoreError::NotFound(format!("install {}", new.install_id)));
        }
        if state
            .rollouts
            .rows
            .iter()
            .any(|r| r.install_id == new.install_id && r.state == RolloutState::Active)
        {
            return Err(StoreError::AlreadyExists(
                "extension_rollouts_one_active_idx".into(),
            ));
        }
        let now = state.now();
        let row = RolloutRow {
            id: new.id,
            tenant_id: new.tenant_id,
            install_id: new.install_id,
            registry_id: new.registry_id,
            stable_version_id: new.stable_version_id,
            variants: new.variants,
            policy: new.policy,
            state: RolloutState::Active,
            step: 0,
            step_started_at: now,
            revision: 1,
            reason: None,
            history: vec![new.event],
            created_at: now,
            updated_at: now,
        };
        state.rollouts.rows.push(row.clone());
        Ok(row)
    }

    async fn find_rollout(&self, id: Uuid) -> StoreResult<Option<RolloutRow>> {
        Ok(self
            .lock()
            .rollouts
            .rows
            .iter()
            .find(|r| r.id == id)
            .cloned())
    }

    async fn latest_rollout(&self, install_id: Uuid) -> StoreResult<Option<RolloutRow>> {
        Ok(self
            .lock()
            .rollouts
            .rows
            .iter()
            .rev()
            .find(|r| r.install_id == install_id)
            .cloned())
    }

    async fn active_rollouts(&self) -> StoreResult<Vec<RolloutRow>> {
        Ok(self
            .lock()
            .rollouts
            .rows
            .iter()
            .filter(|r| r.state == RolloutState::Active)
            .cloned()
            .collect())
    }

    async fn update_rollout(
        &self,
        id: Uuid,
        revision: i64,
        change: RolloutChange,
    ) -> StoreResult<RolloutRow> {
        let mut state = self.lock();
        let now = state.now();
        let row = state
            .rollouts
            .rows
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| StoreError::NotFound(format!("rollout {id}")))?;
        if row.state != RolloutState::Active || row.revision != revision {
            return Err(StoreError::RevisionMismatch);
        }
        row.state = change.state;
        row.step = change.step;
        if change.restart_step {
            row.step_started_at = now;
        }
        row.variants = change.variants;
        if change.reason.is_some() {
            row.reason = change.reason;
        }
        row.history.push(change.event);
        row.revision += 1;
        row.updated_at = now;
        Ok(row.clone())
    }

    async fn version_stats(
        &self,
        tenant_id: &str,
        registry_id: Uuid,
        versions: &[Uuid],
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<VersionStats>> {
        let state = self.lock();
        let rows = state.executions.rows();
        Ok(versions
            .iter()
            .map(|version| {
                let mut durations = Vec::new();
                let mut failures = 0;
                for r in rows.iter().filter(|r| {
                    r.tenant_id == tenant_id
                        && r.registry_id == registry_id
                        && r.version_id == *version
                        && r.started_at >= since
                        && r.status != "policy_denied"
                }) {
                    let http_status = r.metrics.get("http_status").and_then(|s| s.as_u64());
                    if is_failure(&r.status, r.error.as_deref(), http_status) {
                        failures += 1;
                    }
                    durations.push(
                        r.metrics
                            .get("duration_ms")
                            .and_then(|d| d.as_u64())
                            .unwrap_or(0),
                    );
                }
                VersionStats {
                    version_id: *version,
                    calls: durations.len() as u64,
                    failures,
                    p99_ms: p99(&mut durations),
                }
            })
            .collect())
    }
}
