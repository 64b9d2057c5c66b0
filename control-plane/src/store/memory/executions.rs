//! The execution log in memory: rows in arrival order, a repeated id skipped
//! (Postgres: `ON CONFLICT (id) DO NOTHING`).

use async_trait::async_trait;
use uuid::Uuid;

use super::{MemoryStore, micros};
use crate::store::{ExecutionLogStore, ExecutionRow, StoreResult};

/// `extension_execution_log`.
#[derive(Default)]
pub(super) struct Executions {
    rows: Vec<ExecutionRow>,
}

impl Executions {
    pub(super) fn rows(&self) -> &[ExecutionRow] {
        &self.rows
    }
}

#[async_trait]
impl ExecutionLogStore for MemoryStore {
    async fn record_executions(&self, rows: Vec<ExecutionRow>) -> StoreResult<()> {
        let mut state = self.lock();
        let log = &mut state.executions.rows;
        for row in rows {
            if log.iter().any(|r| r.id == row.id) {
                continue;
            }
            log.push(ExecutionRow {
                started_at: micros(row.started_at),
                finished_at: row.finished_at.map(micros),
                ..row
            });
        }
        Ok(())
    }

    async fn list_executions(
        &self,
        tenant_id: &str,
        registry_id: Uuid,
        limit: u32,
    ) -> StoreResult<Vec<ExecutionRow>> {
        let mut rows: Vec<_> = self
            .lock()
            .executions
            .rows
            .iter()
            .filter(|r| r.tenant_id == tenant_id && r.registry_id == registry_id)
            .cloned()
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse((r.started_at, r.id)));
        rows.truncate(limit as usize);
        Ok(rows)
    }
}
