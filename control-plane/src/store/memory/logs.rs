//! The debug event log in memory: events in id order (Postgres: a
//! `bigserial` and an index on (tenant, extension, id)).

use std::collections::VecDeque;

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::{DebugEvent, DebugFilter, DebugLogStore, StoreResult};

/// `ext_debug_events`.
#[derive(Default)]
pub(super) struct Logs {
    last_id: u64,
    events: VecDeque<(u64, DebugEvent)>,
}

#[async_trait]
impl DebugLogStore for MemoryStore {
    async fn append_debug_events(&self, events: Vec<DebugEvent>) -> StoreResult<()> {
        let mut state = self.lock();
        let log = &mut state.logs;
        for event in events {
            log.last_id += 1;
            let id = log.last_id;
            log.events.push_back((id, event));
        }
        Ok(())
    }

    async fn read_debug_events(
        &self,
        filter: &DebugFilter,
        after: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<(u64, DebugEvent)>> {
        let state = self.lock();
        let matching = state.logs.events.iter().filter(|(_, e)| filter.matches(e));
        let limit = limit as usize;
        Ok(match after {
            Some(after) => matching
                .filter(|(id, _)| *id > after)
                .take(limit)
                .cloned()
                .collect(),
            None => {
                let mut newest: Vec<_> = matching.rev().take(limit).cloned().collect();
                newest.reverse();
                newest
            }
        })
    }

    async fn trim_debug_events(
        &self,
        tenant_id: &str,
        extension_id: &str,
        keep: u32,
    ) -> StoreResult<()> {
        let mut state = self.lock();
        let log = &mut state.logs;
        let of_key = |e: &DebugEvent| e.tenant_id == tenant_id && e.extension_id == extension_id;
        let total = log.events.iter().filter(|(_, e)| of_key(e)).count();
        let mut excess = total.saturating_sub(keep as usize);
        log.events.retain(|(_, e)| {
            if excess > 0 && of_key(e) {
                excess -= 1;
                return false;
            }
            true
        });
        Ok(())
    }
}
