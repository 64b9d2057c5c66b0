//! Captures on Postgres (`capture_policies`, `captures`, `capture_access`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::cached::Cached;
use super::rows::col;
use super::{PgStore, pg_error};
use crate::store::{
    CaptureAccessRow, CapturePolicyRow, CaptureRow, CaptureStore, StoreError, StoreResult,
};

fn int(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn policy(row: &Row) -> StoreResult<CapturePolicyRow> {
    Ok(CapturePolicyRow {
        tenant_id: col(row, "tenant_id")?,
        install_id: col(row, "install_id")?,
        sample_ppm: u32::try_from(col::<i32>(row, "sample_ppm")?).unwrap_or(0),
        failures: col(row, "failures")?,
        retention_hours: u32::try_from(col::<i32>(row, "retention_hours")?).unwrap_or(0),
        max_bytes: u64::try_from(col::<i64>(row, "max_bytes")?).unwrap_or(0),
        created_at: col(row, "created_at")?,
    })
}

const CAPTURE_COLUMNS: &str = "id, tenant_id, install_id, request_id, content_hash, reason, \
     outcome, status, method, path, size_bytes, secret_keys, sealed_secrets, created_at, expires_at";

fn capture(row: &Row, tape: Vec<u8>) -> StoreResult<CaptureRow> {
    Ok(CaptureRow {
        id: col(row, "id")?,
        tenant_id: col(row, "tenant_id")?,
        install_id: col(row, "install_id")?,
        request_id: col(row, "request_id")?,
        content_hash: col(row, "content_hash")?,
        reason: col(row, "reason")?,
        outcome: col(row, "outcome")?,
        status: u32::try_from(col::<i32>(row, "status")?).unwrap_or(0),
        method: col(row, "method")?,
        path: col(row, "path")?,
        size_bytes: u64::try_from(col::<i64>(row, "size_bytes")?).unwrap_or(0),
        secret_keys: col(row, "secret_keys")?,
        sealed_secrets: col(row, "sealed_secrets")?,
        tape,
        created_at: col(row, "created_at")?,
        expires_at: col(row, "expires_at")?,
    })
}

#[async_trait]
impl CaptureStore for PgStore {
    async fn set_capture_policy(&self, p: CapturePolicyRow) -> StoreResult<CapturePolicyRow> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO capture_policies \
                 (tenant_id, install_id, sample_ppm, failures, retention_hours, max_bytes, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, now()) \
                 ON CONFLICT (tenant_id, install_id) DO UPDATE SET sample_ppm = EXCLUDED.sample_ppm, \
                 failures = EXCLUDED.failures, retention_hours = EXCLUDED.retention_hours, \
                 max_bytes = EXCLUDED.max_bytes, created_at = EXCLUDED.created_at \
                 RETURNING *",
                &[
                    &p.tenant_id,
                    &p.install_id,
                    &int(p.sample_ppm),
                    &p.failures,
                    &int(p.retention_hours),
                    &big(p.max_bytes),
                ],
            )
            .await
            .map_err(pg_error)?;
        policy(&row)
    }

    async fn delete_capture_policy(&self, tenant_id: &str, install_id: Uuid) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM capture_policies WHERE tenant_id = $1 AND install_id = $2",
                &[&tenant_id, &install_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    async fn capture_policy(
        &self,
        tenant_id: &str,
        install_id: Uuid,
    ) -> StoreResult<Option<CapturePolicyRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt_c(
                "SELECT * FROM capture_policies WHERE tenant_id = $1 AND install_id = $2",
                &[&tenant_id, &install_id],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(policy).transpose()
    }

    async fn insert_capture(&self, r: CaptureRow, keep: u32) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let inserted = tx
            .execute(
                "INSERT INTO captures (id, tenant_id, install_id, request_id, content_hash, reason, \
                 outcome, status, method, path, size_bytes, secret_keys, sealed_secrets, tape, \
                 created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &r.id,
                    &r.tenant_id,
                    &r.install_id,
                    &r.request_id,
                    &r.content_hash,
                    &r.reason,
                    &r.outcome,
                    &int(r.status),
                    &r.method,
                    &r.path,
                    &big(r.size_bytes),
                    &r.secret_keys,
                    &r.sealed_secrets,
                    &r.tape,
                    &r.created_at,
                    &r.expires_at,
                ],
            )
            .await
            .map_err(pg_error)?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(format!("capture {}", r.id)));
        }
        tx.execute(
            "DELETE FROM captures WHERE id IN (SELECT id FROM captures \
             WHERE tenant_id = $1 AND install_id = $2 \
             ORDER BY created_at DESC, id DESC OFFSET $3)",
            &[&r.tenant_id, &r.install_id, &i64::from(keep)],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(())
    }

    async fn list_captures(
        &self,
        tenant_id: &str,
        install_id: Option<Uuid>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<CaptureRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {CAPTURE_COLUMNS} FROM captures \
                     WHERE tenant_id = $1 AND ($2::uuid IS NULL OR install_id = $2) \
                     AND expires_at > $3 ORDER BY created_at DESC, id DESC LIMIT $4"
                ),
                &[&tenant_id, &install_id, &now, &i64::from(limit)],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(|row| capture(row, Vec::new())).collect()
    }

    async fn get_capture(
        &self,
        tenant_id: &str,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<CaptureRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {CAPTURE_COLUMNS}, tape FROM captures \
                     WHERE id = $1 AND tenant_id = $2 AND expires_at > $3"
                ),
                &[&id, &tenant_id, &now],
            )
            .await
            .map_err(pg_error)?;
        match row {
            None => Ok(None),
            Some(row) => {
                let tape: Vec<u8> = col(&row, "tape")?;
                capture(&row, tape).map(Some)
            }
        }
    }

    async fn delete_expired_captures(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM captures WHERE id IN \
                 (SELECT id FROM captures WHERE expires_at <= $1 LIMIT $2)",
                &[&now, &i64::from(limit)],
            )
            .await
            .map_err(pg_error)
    }

    async fn record_capture_access(&self, a: CaptureAccessRow) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO capture_access (tenant_id, capture_id, action, actor, at) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[&a.tenant_id, &a.capture_id, &a.action, &a.actor, &a.at],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn list_capture_access(
        &self,
        tenant_id: &str,
        capture_id: Uuid,
    ) -> StoreResult<Vec<CaptureAccessRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT tenant_id, capture_id, action, actor, at FROM capture_access \
                 WHERE tenant_id = $1 AND capture_id = $2 ORDER BY id",
                &[&tenant_id, &capture_id],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                Ok(CaptureAccessRow {
                    tenant_id: col(row, "tenant_id")?,
                    capture_id: col(row, "capture_id")?,
                    action: col(row, "action")?,
                    actor: col(row, "actor")?,
                    at: col(row, "at")?,
                })
            })
            .collect()
    }
}
