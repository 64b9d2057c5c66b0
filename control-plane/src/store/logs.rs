//! The debug log area: guest log events for the debug stream
//! (`ext_debug_events`), as [`DebugLogStore`]. Every control-plane replica
//! appends the events workers publish to it and reads watchers' events from
//! it, so a watcher sees every worker's events whichever replica it reached.
//! Each event gets an ascending id, the position a reader resumes after; only
//! the newest events of each (tenant, extension) are kept.

use async_trait::async_trait;

use super::StoreResult;

/// One guest log event, as the worker described it. Text fields arrive
/// bounded and free of NUL characters (the `host` module cleans them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugEvent {
    pub tenant_id: String,
    /// Registry id.
    pub extension_id: String,
    pub install_id: String,
    pub request_id: String,
    pub version_id: String,
    pub content_hash: String,
    pub ts_ms: i64,
    pub level: String,
    pub stream: String,
    pub message: String,
    pub truncated: bool,
}

/// Which events a reader wants: always one tenant's extension; optionally
/// one install or one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugFilter {
    pub tenant_id: String,
    pub extension_id: String,
    pub install_id: Option<String>,
    pub request_id: Option<String>,
}

impl DebugFilter {
    /// Whether `e` is one of the events this filter selects.
    pub fn matches(&self, e: &DebugEvent) -> bool {
        e.tenant_id == self.tenant_id
            && e.extension_id == self.extension_id
            && self.install_id.as_ref().is_none_or(|i| *i == e.install_id)
            && self.request_id.as_ref().is_none_or(|r| *r == e.request_id)
    }
}

/// The debug event log.
#[async_trait]
pub trait DebugLogStore: Send + Sync {
    /// Appends the events in order; each gets an id above every earlier one.
    async fn append_debug_events(&self, events: Vec<DebugEvent>) -> StoreResult<()>;
    /// Matching events oldest first: those with an id above `after`, or,
    /// with no `after`, the newest `limit`. At most `limit`.
    async fn read_debug_events(
        &self,
        filter: &DebugFilter,
        after: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<(u64, DebugEvent)>>;
    /// Deletes all but the newest `keep` events of one tenant's extension.
    async fn trim_debug_events(
        &self,
        tenant_id: &str,
        extension_id: &str,
        keep: u32,
    ) -> StoreResult<()>;
}
