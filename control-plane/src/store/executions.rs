//! The execution log area: one audit row per execution
//! (`extension_execution_log`), shipped in batches by edges through the
//! control plane, as [`ExecutionLogStore`]. Rows are written once (a repeated
//! id is ignored) and never updated.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// One `extension_execution_log` row, written by edges through the control plane.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRow {
    pub id: Uuid,
    pub tenant_id: String,
    pub registry_id: Uuid,
    pub version_id: Uuid,
    pub request_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// ok | error | timeout | policy_denied | upstream_error
    pub status: String,
    /// `{method, path, endpoint_template, principal_kind, user_id, http_status?, duration_ms?}`
    pub metrics: serde_json::Value,
    pub error: Option<String>,
}

/// The execution audit log.
#[async_trait]
pub trait ExecutionLogStore: Send + Sync {
    /// Writes the batch; a row whose id exists already is skipped.
    async fn record_executions(&self, rows: Vec<ExecutionRow>) -> StoreResult<()>;
    /// Newest first, at most `limit`.
    async fn list_executions(
        &self,
        tenant_id: &str,
        registry_id: Uuid,
        limit: u32,
    ) -> StoreResult<Vec<ExecutionRow>>;
}
