//! Schedules on Postgres (`tenant_extension_schedule`). Creates of one install
//! take a transaction-scoped advisory lock, so the per-install quota holds
//! under concurrent creates; names are unique through the partial index.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::rows::{col, to_i64};
use super::{PgStore, pg_error};
use crate::store::{
    ScheduleFields, ScheduleRemap, ScheduleRow, ScheduleRun, ScheduleStore, StoreError, StoreResult,
};

const COLUMNS: &str = "s.id, s.tenant_id, s.install_id, s.endpoint_id, s.endpoint_method, s.endpoint_path, \
     s.name, s.cron, s.timezone, s.enabled, s.payload_json, s.next_run_at, s.last_run_at, \
     s.last_run_status, s.last_error, s.created_at, s.updated_at";

fn schedule_from_row(row: &Row) -> StoreResult<ScheduleRow> {
    let payload: Option<serde_json::Value> = col(row, "payload_json")?;
    Ok(ScheduleRow {
        id: col(row, "id")?,
        tenant_id: col(row, "tenant_id")?,
        install_id: col(row, "install_id")?,
        fields: ScheduleFields {
            endpoint_id: col(row, "endpoint_id")?,
            endpoint_method: col(row, "endpoint_method")?,
            endpoint_path: col(row, "endpoint_path")?,
            name: col(row, "name")?,
            cron: col(row, "cron")?,
            timezone: col(row, "timezone")?,
            enabled: col(row, "enabled")?,
            // A JSON null written by another writer reads as no payload.
            payload: payload.filter(|p| !p.is_null()),
            next_run_at: col(row, "next_run_at")?,
        },
        last_run_at: col(row, "last_run_at")?,
        last_run_status: col(row, "last_run_status")?,
        last_error: col(row, "last_error")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

/// A unique violation here can only be the (install, name) index.
fn name_taken(e: tokio_postgres::Error) -> StoreError {
    match pg_error(e) {
        StoreError::AlreadyExists(_) => StoreError::AlreadyExists("schedule name".into()),
        other => other,
    }
}

#[async_trait]
impl ScheduleStore for PgStore {
    async fn create_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        f: ScheduleFields,
        max_per_install: u64,
    ) -> StoreResult<ScheduleRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let lock = format!("ext-schedule:{install_id}");
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&lock],
        )
        .await
        .map_err(pg_error)?;
        let count: i64 = col(
            &tx.query_one(
                "SELECT COUNT(*)::bigint AS n FROM tenant_extension_schedule WHERE install_id = $1",
                &[&install_id],
            )
            .await
            .map_err(pg_error)?,
            "n",
        )?;
        if count >= to_i64(max_per_install, "quota")? {
            return Err(StoreError::QuotaExceeded(format!(
                "at most {max_per_install} schedules per install"
            )));
        }
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO tenant_extension_schedule AS s (id, install_id, tenant_id, endpoint_id, \
                     endpoint_method, endpoint_path, name, cron, timezone, enabled, payload_json, next_run_at, \
                     created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, clock_timestamp(), clock_timestamp()) \
                     RETURNING {COLUMNS}"
                ),
                &[
                    &Uuid::new_v4(),
                    &install_id,
                    &tenant_id,
                    &f.endpoint_id,
                    &f.endpoint_method,
                    &f.endpoint_path,
                    &f.name,
                    &f.cron,
                    &f.timezone,
                    &f.enabled,
                    &f.payload,
                    &f.next_run_at,
                ],
            )
            .await
            .map_err(name_taken)?;
        let row = schedule_from_row(&row)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(row)
    }

    async fn list_schedules(
        &self,
        tenant_id: &str,
        install_id: Uuid,
    ) -> StoreResult<Vec<ScheduleRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM tenant_extension_schedule s \
                     WHERE s.tenant_id = $1 AND s.install_id = $2 ORDER BY s.created_at, s.id"
                ),
                &[&tenant_id, &install_id],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn get_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<ScheduleRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM tenant_extension_schedule s \
                     WHERE s.id = $1 AND s.tenant_id = $2 AND s.install_id = $3"
                ),
                &[&id, &tenant_id, &install_id],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(schedule_from_row).transpose()
    }

    async fn update_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
        f: ScheduleFields,
    ) -> StoreResult<ScheduleRow> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE tenant_extension_schedule AS s SET endpoint_id = $4, endpoint_method = $5, \
                     endpoint_path = $6, name = $7, cron = $8, timezone = $9, enabled = $10, payload_json = $11, \
                     next_run_at = $12, updated_at = clock_timestamp() \
                     WHERE s.id = $1 AND s.tenant_id = $2 AND s.install_id = $3 RETURNING {COLUMNS}"
                ),
                &[
                    &id,
                    &tenant_id,
                    &install_id,
                    &f.endpoint_id,
                    &f.endpoint_method,
                    &f.endpoint_path,
                    &f.name,
                    &f.cron,
                    &f.timezone,
                    &f.enabled,
                    &f.payload,
                    &f.next_run_at,
                ],
            )
            .await
            .map_err(name_taken)?;
        match row {
            Some(row) => schedule_from_row(&row),
            None => Err(StoreError::NotFound(format!("schedule {id}"))),
        }
    }

    async fn delete_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM tenant_extension_schedule WHERE id = $1 AND tenant_id = $2 AND install_id = $3",
                &[&id, &tenant_id, &install_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    async fn remap_schedules(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        remaps: Vec<ScheduleRemap>,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        for remap in &remaps {
            remap_one(&tx, tenant_id, install_id, remap).await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    async fn claim_due_schedules(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleRow>> {
        let client = self.client().await?;
        // One statement: the CTE locks the due rows (skipping rows another claimer
        // holds), the UPDATE moves them past the lease, and RETURNING reads the
        // due time from the CTE (the pre-update value).
        let rows = client
            .query(
                "WITH due AS ( \
                   SELECT s.id, s.next_run_at FROM tenant_extension_schedule s \
                   JOIN tenant_extension_install i ON i.id = s.install_id \
                   WHERE s.enabled AND s.next_run_at <= $1 AND i.is_enabled AND i.status = 'enabled' \
                   ORDER BY s.next_run_at, s.id LIMIT $3 FOR UPDATE OF s SKIP LOCKED) \
                 UPDATE tenant_extension_schedule AS s SET next_run_at = $2 FROM due WHERE s.id = due.id \
                 RETURNING s.id, s.tenant_id, s.install_id, s.endpoint_id, s.endpoint_method, s.endpoint_path, \
                   s.name, s.cron, s.timezone, s.enabled, s.payload_json, due.next_run_at, s.last_run_at, \
                   s.last_run_status, s.last_error, s.created_at, s.updated_at",
                &[&now, &(now + lease), &i64::from(limit)],
            )
            .await
            .map_err(pg_error)?;
        let mut claimed = rows
            .iter()
            .map(schedule_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|s| (s.fields.next_run_at, s.id));
        Ok(claimed)
    }

    async fn record_schedule_run(&self, id: Uuid, run: ScheduleRun) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE tenant_extension_schedule SET last_run_at = $2, last_run_status = $3, last_error = $4, \
                 next_run_at = CASE WHEN enabled THEN $5::timestamptz END, updated_at = clock_timestamp() WHERE id = $1",
                &[&id, &run.at, &run.status, &run.error, &run.next_run_at],
            )
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }
}

async fn remap_one(
    client: &impl GenericClient,
    tenant_id: &str,
    install_id: Uuid,
    remap: &ScheduleRemap,
) -> StoreResult<()> {
    match remap {
        ScheduleRemap::Endpoint { id, endpoint_id } => client
            .execute(
                "UPDATE tenant_extension_schedule SET endpoint_id = $4, updated_at = clock_timestamp() \
                 WHERE id = $1 AND tenant_id = $2 AND install_id = $3",
                &[id, &tenant_id, &install_id, endpoint_id],
            )
            .await
            .map_err(pg_error)?,
        ScheduleRemap::Disable { id, last_error } => client
            .execute(
                "UPDATE tenant_extension_schedule SET enabled = false, next_run_at = NULL, last_error = $4, \
                 updated_at = clock_timestamp() WHERE id = $1 AND tenant_id = $2 AND install_id = $3",
                &[id, &tenant_id, &install_id, last_error],
            )
            .await
            .map_err(pg_error)?,
    };
    Ok(())
}
