//! Worker membership in memory, and the content hashes active installs run
//! (read from the install and registry tables under the same lock).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MemoryStore, micros};
use crate::store::{FleetStore, StoreResult, WorkerRow};

/// `workers`, by id.
#[derive(Default)]
pub(super) struct Fleet {
    workers: BTreeMap<String, WorkerRow>,
}

#[async_trait]
impl FleetStore for MemoryStore {
    async fn upsert_worker(&self, row: WorkerRow) -> StoreResult<()> {
        let row = WorkerRow {
            last_seen: micros(row.last_seen),
            ..row
        };
        self.lock().fleet.workers.insert(row.id.clone(), row);
        Ok(())
    }

    async fn list_workers(&self, since: DateTime<Utc>) -> StoreResult<Vec<WorkerRow>> {
        Ok(self
            .lock()
            .fleet
            .workers
            .values()
            .filter(|w| w.last_seen >= since)
            .cloned()
            .collect())
    }

    async fn active_content_hashes(&self) -> StoreResult<Vec<String>> {
        let state = self.lock();
        let mut hashes: Vec<String> = state
            .installs
            .rows
            .values()
            .filter(|i| i.is_active())
            .filter_map(|i| state.registry.versions.get(&i.version_id))
            .map(|v| v.bundle.content_hash.clone())
            .collect();
        // Canaries of active rollouts run beside their install's version.
        let canaries = state
            .rollouts
            .canaries()
            .filter(|(install, _)| {
                state
                    .installs
                    .rows
                    .get(install)
                    .is_some_and(|i| i.is_active())
            })
            .filter_map(|(_, version)| state.registry.versions.get(&version))
            .map(|v| v.bundle.content_hash.clone())
            .collect::<Vec<_>>();
        hashes.extend(canaries);
        hashes.sort();
        hashes.dedup();
        Ok(hashes)
    }
}
