//! Schedules in memory, under the store's one lock, so that install checks,
//! the per-install quota, name uniqueness and claims are decided atomically,
//! as in Postgres.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{MemoryStore, State, micros};
use crate::store::{
    InstallRow, ScheduleFields, ScheduleRemap, ScheduleRow, ScheduleRun, ScheduleStore, StoreError,
    StoreResult,
};

/// `tenant_extension_schedule`, by id.
#[derive(Default)]
pub(super) struct Schedules {
    rows: HashMap<Uuid, ScheduleRow>,
}

/// Timestamps at Postgres's resolution.
fn stored(fields: ScheduleFields) -> ScheduleFields {
    ScheduleFields {
        next_run_at: fields.next_run_at.map(micros),
        ..fields
    }
}

impl Schedules {
    fn of_install(&self, tenant_id: &str, install_id: Uuid) -> impl Iterator<Item = &ScheduleRow> {
        self.rows
            .values()
            .filter(move |s| s.tenant_id == tenant_id && s.install_id == install_id)
    }

    fn scoped_mut(
        &mut self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
    ) -> Option<&mut ScheduleRow> {
        self.rows
            .get_mut(&id)
            .filter(|s| s.tenant_id == tenant_id && s.install_id == install_id)
    }

    fn name_taken(&self, install_id: Uuid, name: Option<&str>, except: Option<Uuid>) -> bool {
        name.is_some_and(|name| {
            self.rows.values().any(|s| {
                s.install_id == install_id
                    && Some(s.id) != except
                    && s.fields.name.as_deref() == Some(name)
            })
        })
    }

    /// The caller has checked that the install exists.
    fn create(
        &mut self,
        tenant_id: &str,
        install_id: Uuid,
        fields: ScheduleFields,
        max_per_install: u64,
        now: DateTime<Utc>,
    ) -> StoreResult<ScheduleRow> {
        // The quota counts the install's rows whatever their tenant column says, as Postgres does.
        let count = self
            .rows
            .values()
            .filter(|s| s.install_id == install_id)
            .count();
        if count as u64 >= max_per_install {
            return Err(StoreError::QuotaExceeded(format!(
                "at most {max_per_install} schedules per install"
            )));
        }
        if self.name_taken(install_id, fields.name.as_deref(), None) {
            return Err(StoreError::AlreadyExists("schedule name".into()));
        }
        let row = ScheduleRow {
            id: Uuid::new_v4(),
            tenant_id: tenant_id.to_owned(),
            install_id,
            fields: stored(fields),
            last_run_at: None,
            last_run_status: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        self.rows.insert(row.id, row.clone());
        Ok(row)
    }

    fn list(&self, tenant_id: &str, install_id: Uuid) -> Vec<ScheduleRow> {
        let mut rows: Vec<_> = self.of_install(tenant_id, install_id).cloned().collect();
        rows.sort_by_key(|s| (s.created_at, s.id));
        rows
    }

    fn get(&self, tenant_id: &str, install_id: Uuid, id: Uuid) -> Option<ScheduleRow> {
        self.rows
            .get(&id)
            .filter(|s| s.tenant_id == tenant_id && s.install_id == install_id)
            .cloned()
    }

    fn update(
        &mut self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
        fields: ScheduleFields,
        now: DateTime<Utc>,
    ) -> StoreResult<ScheduleRow> {
        if self.get(tenant_id, install_id, id).is_none() {
            return Err(StoreError::NotFound(format!("schedule {id}")));
        }
        if self.name_taken(install_id, fields.name.as_deref(), Some(id)) {
            return Err(StoreError::AlreadyExists("schedule name".into()));
        }
        let row = self
            .scoped_mut(tenant_id, install_id, id)
            .ok_or_else(|| StoreError::NotFound(format!("schedule {id}")))?;
        row.fields = stored(fields);
        row.updated_at = now;
        Ok(row.clone())
    }

    fn delete(&mut self, tenant_id: &str, install_id: Uuid, id: Uuid) -> bool {
        if self.get(tenant_id, install_id, id).is_none() {
            return false;
        }
        self.rows.remove(&id).is_some()
    }

    fn remap(
        &mut self,
        tenant_id: &str,
        install_id: Uuid,
        remaps: Vec<ScheduleRemap>,
        now: DateTime<Utc>,
    ) {
        for remap in remaps {
            match remap {
                ScheduleRemap::Endpoint { id, endpoint_id } => {
                    if let Some(row) = self.scoped_mut(tenant_id, install_id, id) {
                        row.fields.endpoint_id = endpoint_id;
                        row.updated_at = now;
                    }
                }
                ScheduleRemap::Disable { id, last_error } => {
                    if let Some(row) = self.scoped_mut(tenant_id, install_id, id) {
                        row.fields.enabled = false;
                        row.fields.next_run_at = None;
                        row.last_error = Some(last_error);
                        row.updated_at = now;
                    }
                }
            }
        }
    }

    /// `active(install)` says whether the install is enabled.
    fn claim_due(
        &mut self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u32,
        active: impl Fn(Uuid) -> bool,
    ) -> Vec<ScheduleRow> {
        let mut due: Vec<(DateTime<Utc>, Uuid)> = self
            .rows
            .values()
            .filter(|s| s.fields.enabled && active(s.install_id))
            .filter_map(|s| {
                s.fields
                    .next_run_at
                    .filter(|t| *t <= now)
                    .map(|t| (t, s.id))
            })
            .collect();
        due.sort();
        due.truncate(limit as usize);
        let leased = micros(now + lease);
        due.into_iter()
            .filter_map(|(_, id)| {
                let row = self.rows.get_mut(&id)?;
                let claimed = row.clone();
                row.fields.next_run_at = Some(leased);
                Some(claimed)
            })
            .collect()
    }

    fn record_run(&mut self, id: Uuid, run: ScheduleRun, now: DateTime<Utc>) -> bool {
        let Some(row) = self.rows.get_mut(&id) else {
            return false;
        };
        row.last_run_at = Some(micros(run.at));
        row.last_run_status = Some(run.status);
        row.last_error = run.error;
        row.fields.next_run_at = run.next_run_at.filter(|_| row.fields.enabled).map(micros);
        row.updated_at = now;
        true
    }

    /// What the foreign key's cascade does in Postgres.
    pub(super) fn delete_install(&mut self, install_id: Uuid) {
        self.rows.retain(|_, s| s.install_id != install_id);
    }
}

#[async_trait]
impl ScheduleStore for MemoryStore {
    async fn create_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        fields: ScheduleFields,
        max_per_install: u64,
    ) -> StoreResult<ScheduleRow> {
        let mut state = self.lock();
        state.installs.require(install_id)?;
        let now = state.now();
        state
            .schedules
            .create(tenant_id, install_id, fields, max_per_install, now)
    }

    async fn list_schedules(
        &self,
        tenant_id: &str,
        install_id: Uuid,
    ) -> StoreResult<Vec<ScheduleRow>> {
        Ok(self.lock().schedules.list(tenant_id, install_id))
    }

    async fn get_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<ScheduleRow>> {
        Ok(self.lock().schedules.get(tenant_id, install_id, id))
    }

    async fn update_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
        fields: ScheduleFields,
    ) -> StoreResult<ScheduleRow> {
        let mut state = self.lock();
        let now = state.now();
        state
            .schedules
            .update(tenant_id, install_id, id, fields, now)
    }

    async fn delete_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
    ) -> StoreResult<bool> {
        Ok(self.lock().schedules.delete(tenant_id, install_id, id))
    }

    async fn remap_schedules(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        remaps: Vec<ScheduleRemap>,
    ) -> StoreResult<()> {
        let mut state = self.lock();
        let now = state.now();
        state.schedules.remap(tenant_id, install_id, remaps, now);
        Ok(())
    }

    async fn claim_due_schedules(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleRow>> {
        let mut state = self.lock();
        let State {
            installs,
            schedules,
            ..
        } = &mut *state;
        Ok(schedules.claim_due(now, lease, limit, |id| {
            installs.rows.get(&id).is_some_and(InstallRow::is_active)
        }))
    }

    async fn record_schedule_run(&self, id: Uuid, run: ScheduleRun) -> StoreResult<bool> {
        let mut state = self.lock();
        let now = state.now();
        Ok(state.schedules.record_run(id, run, now))
    }
}
