//! The execution log on Postgres (`extension_execution_log`): batches are one
//! statement, and their commit does not wait for the WAL flush.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::cached::Cached;
use super::rows::col;
use super::{PgStore, pg_error};
use crate::store::{ExecutionLogStore, ExecutionRow, StoreResult};

#[async_trait]
impl ExecutionLogStore for PgStore {
    async fn record_executions(&self, rows: Vec<ExecutionRow>) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // One statement per batch: edges ship hundreds of rows at a time, and a
        // round trip per row caps how many audited requests a second the fleet serves.
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let tenants: Vec<&str> = rows.iter().map(|r| r.tenant_id.as_str()).collect();
        let registries: Vec<Uuid> = rows.iter().map(|r| r.registry_id).collect();
        let versions: Vec<Uuid> = rows.iter().map(|r| r.version_id).collect();
        let requests: Vec<Option<&str>> = rows.iter().map(|r| r.request_id.as_deref()).collect();
        let started: Vec<DateTime<Utc>> = rows.iter().map(|r| r.started_at).collect();
        let finished: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.finished_at).collect();
        let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
        let metrics: Vec<&Value> = rows.iter().map(|r| &r.metrics).collect();
        let errors: Vec<Option<&str>> = rows.iter().map(|r| r.error.as_deref()).collect();
        let mut client = self.client().await?;
        // Audit rows do not wait for their WAL flush: a Postgres crash may lose
        // the last few hundred milliseconds of them (never a row another
        // transaction depends on), and the batch no longer holds the pipeline
        // for an fsync.
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await
            .map_err(pg_error)?;
        tx
            .execute_c(
                "INSERT INTO extension_execution_log \
                 (id, tenant_id, registry_id, version_id, request_id, started_at, finished_at, status, metrics, error) \
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], \
                 $6::timestamptz[], $7::timestamptz[], $8::text[], $9::jsonb[], $10::text[]) \
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &ids,
                    &tenants,
                    &registries,
                    &versions,
                    &requests,
                    &started,
                    &finished,
                    &statuses,
                    &metrics,
                    &errors,
                ],
            )
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(())
    }

    async fn list_executions(
        &self,
        tenant_id: &str,
        registry_id: Uuid,
        limit: u32,
    ) -> StoreResult<Vec<ExecutionRow>> {
        let client = self.client().await?;
        let rows = client
            .query_c(
                "SELECT id, tenant_id, registry_id, version_id, request_id, started_at, finished_at, status, \
                 COALESCE(metrics, '{}'::jsonb) AS metrics, error \
                 FROM extension_execution_log WHERE tenant_id = $1 AND registry_id = $2 \
                 ORDER BY started_at DESC, id DESC LIMIT $3",
                &[&tenant_id, &registry_id, &i64::from(limit)],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                Ok(ExecutionRow {
                    id: col(row, "id")?,
                    tenant_id: col(row, "tenant_id")?,
                    registry_id: col(row, "registry_id")?,
                    version_id: col(row, "version_id")?,
                    request_id: col(row, "request_id")?,
                    started_at: col(row, "started_at")?,
                    finished_at: col(row, "finished_at")?,
                    status: col(row, "status")?,
                    metrics: col(row, "metrics")?,
                    error: col(row, "error")?,
                })
            })
            .collect()
    }
}
