//! Quota rows on Postgres: `tenant_quotas`, `route_watchers` and the
//! `extension_quota_usage` windows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::cached::Cached;
use super::rows::{col, to_i64, to_u64};
use super::{PgStore, pg_error};
use crate::store::{
    QuotaLimits, QuotaRow, QuotaStore, StoreError, StoreResult, UsageRow, merge_usage,
};

const QUOTA_COLUMNS: &str =
    "tenant_id, install_id, max_concurrency, requests_per_second, updated_at";

fn limit(row: &Row, name: &str) -> StoreResult<u32> {
    let v: i32 = col(row, name)?;
    u32::try_from(v).map_err(|_| StoreError::Internal(format!("{name} {v} is negative")))
}

fn quota_from_row(row: &Row) -> StoreResult<QuotaRow> {
    Ok(QuotaRow {
        tenant_id: col(row, "tenant_id")?,
        install_id: col(row, "install_id")?,
        limits: QuotaLimits {
            max_concurrency: limit(row, "max_concurrency")?,
            requests_per_second: limit(row, "requests_per_second")?,
        },
        updated_at: col(row, "updated_at")?,
    })
}

fn to_i32(value: u32, what: &str) -> StoreResult<i32> {
    i32::try_from(value)
        .map_err(|_| StoreError::Internal(format!("{what} {value} is out of range")))
}

#[async_trait]
impl QuotaStore for PgStore {
    async fn set_quota(
        &self,
        tenant_id: &str,
        install_id: Option<Uuid>,
        limits: QuotaLimits,
    ) -> StoreResult<QuotaRow> {
        let client = self.client().await?;
        let conc = to_i32(limits.max_concurrency, "max_concurrency")?;
        let rps = to_i32(limits.requests_per_second, "requests_per_second")?;
        let row = match install_id {
            None => client
                .query_opt_c(
                    &format!(
                        "INSERT INTO tenant_quotas (tenant_id, install_id, max_concurrency, requests_per_second) \
                         VALUES ($1, NULL, $2, $3) \
                         ON CONFLICT (tenant_id) WHERE install_id IS NULL DO UPDATE \
                         SET max_concurrency = EXCLUDED.max_concurrency, \
                             requests_per_second = EXCLUDED.requests_per_second, updated_at = now() \
                         RETURNING {QUOTA_COLUMNS}"
                    ),
                    &[&tenant_id, &conc, &rps],
                )
                .await,
            Some(id) => client
                .query_opt_c(
                    &format!(
                        "INSERT INTO tenant_quotas (tenant_id, install_id, max_concurrency, requests_per_second) \
                         SELECT i.tenant_id, i.id, $3, $4 FROM tenant_extension_install i \
                          WHERE i.id = $2 AND i.tenant_id = $1 \
                         ON CONFLICT (tenant_id, install_id) WHERE install_id IS NOT NULL DO UPDATE \
                         SET max_concurrency = EXCLUDED.max_concurrency, \
                             requests_per_second = EXCLUDED.requests_per_second, updated_at = now() \
                         RETURNING {QUOTA_COLUMNS}"
                    ),
                    &[&tenant_id, &id, &conc, &rps],
                )
                .await,
        }
        .map_err(|e| match e.code() {
            // The install went away between the SELECT and the insert.
            Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => StoreError::NotFound("install".into()),
            _ => pg_error(e),
        })?;
        match row {
            Some(row) => quota_from_row(&row),
            None => Err(StoreError::NotFound("install".into())),
        }
    }

    async fn list_quotas(&self, tenant_id: Option<&str>) -> StoreResult<Vec<QuotaRow>> {
        let client = self.client().await?;
        let rows = client
            .query_c(
                &format!(
                    "SELECT {QUOTA_COLUMNS} FROM tenant_quotas \
                     WHERE $1::varchar IS NULL OR tenant_id = $1 \
                     ORDER BY tenant_id COLLATE \"C\", install_id NULLS FIRST"
                ),
                &[&tenant_id],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(quota_from_row).collect()
    }

    async fn delete_quota(&self, tenant_id: &str, install_id: Option<Uuid>) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute_c(
                "DELETE FROM tenant_quotas WHERE tenant_id = $1 AND install_id IS NOT DISTINCT FROM $2",
                &[&tenant_id, &install_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    async fn touch_route_watcher(
        &self,
        edge_id: &str,
        replica_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute_c(
                "INSERT INTO route_watchers (edge_id, replica_id, last_seen) VALUES ($1, $2, $3) \
                 ON CONFLICT (edge_id) DO UPDATE SET replica_id = EXCLUDED.replica_id, last_seen = EXCLUDED.last_seen",
                &[&edge_id, &replica_id, &now],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn remove_route_watcher(&self, edge_id: &str, replica_id: &str) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute_c(
                "DELETE FROM route_watchers WHERE edge_id = $1 AND replica_id = $2",
                &[&edge_id, &replica_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn count_route_watchers(&self, since: DateTime<Utc>) -> StoreResult<u32> {
        let client = self.client().await?;
        let row = client
            .query_one_c(
                "SELECT count(*) AS n FROM route_watchers WHERE last_seen >= $1",
                &[&since],
            )
            .await
            .map_err(pg_error)?;
        let n: i64 = col(&row, "n")?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn add_usage(&self, rows: Vec<UsageRow>) -> StoreResult<()> {
        let rows = merge_usage(rows);
        if rows.is_empty() {
            return Ok(());
        }
        let tenants: Vec<&str> = rows.iter().map(|r| r.tenant_id.as_str()).collect();
        let registries: Vec<Uuid> = rows.iter().map(|r| r.registry_id).collect();
        let windows: Vec<DateTime<Utc>> = rows.iter().map(|r| r.window_start).collect();
        let figures = |f: fn(&UsageRow) -> u64, what: &str| -> StoreResult<Vec<i64>> {
            rows.iter().map(|r| to_i64(f(r), what)).collect()
        };
        let invocations = figures(|r| r.invocations, "invocations")?;
        let cpu = figures(|r| r.cpu_us, "cpu_us")?;
        let memory = figures(|r| r.memory_byte_ms, "memory_byte_ms")?;
        let egress = figures(|r| r.egress_bytes, "egress_bytes")?;
        let fuel = figures(|r| r.fuel, "fuel")?;
        let client = self.client().await?;
        // One statement per heartbeat; the added milliseconds are whole ones of
        // the remainder so far plus the new microseconds.
        client
            .execute_c(
                "INSERT INTO extension_quota_usage AS u \
                     (tenant_id, registry_id, window_start, invocations, cpu_us, cpu_ms, \
                      memory_byte_ms, mem_mb_ms, egress_bytes, fuel) \
                 SELECT t, r, w, n, c, c / $9, m, m / $10, e, f \
                   FROM UNNEST($1::varchar[], $2::uuid[], $3::timestamptz[], $4::bigint[], \
                               $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[]) \
                        AS x(t, r, w, n, c, m, e, f) \
                 ON CONFLICT (tenant_id, registry_id, window_start) DO UPDATE SET \
                     invocations    = u.invocations + EXCLUDED.invocations, \
                     cpu_ms         = u.cpu_ms + (u.cpu_us % $9 + EXCLUDED.cpu_us) / $9, \
                     cpu_us         = u.cpu_us + EXCLUDED.cpu_us, \
                     mem_mb_ms      = u.mem_mb_ms + (u.memory_byte_ms % $10 + EXCLUDED.memory_byte_ms) / $10, \
                     memory_byte_ms = u.memory_byte_ms + EXCLUDED.memory_byte_ms, \
                     egress_bytes   = u.egress_bytes + EXCLUDED.egress_bytes, \
                     fuel           = u.fuel + EXCLUDED.fuel",
                &[
                    &tenants,
                    &registries,
                    &windows,
                    &invocations,
                    &cpu,
                    &memory,
                    &egress,
                    &fuel,
                    &US_PER_MS,
                    &BYTES_PER_MB,
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn list_usage(
        &self,
        tenant_id: &str,
        registry_id: Option<Uuid>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<UsageRow>> {
        let client = self.client().await?;
        let rows = client
            .query_c(
                "SELECT tenant_id, registry_id, window_start, invocations, cpu_us, memory_byte_ms, \
                        egress_bytes, fuel \
                   FROM extension_quota_usage \
                  WHERE tenant_id = $1 \
                    AND ($2::uuid IS NULL OR registry_id = $2) \
                    AND ($3::timestamptz IS NULL OR window_start >= $3) \
                    AND ($4::timestamptz IS NULL OR window_start < $4) \
                  ORDER BY window_start, registry_id",
                &[&tenant_id, &registry_id, &since, &until],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(usage_from_row).collect()
    }
}

/// Microseconds per millisecond, and bytes per MiB: the divisors of Alga's
/// `cpu_ms` and `mem_mb_ms`, kept equal to the exact columns rounded down.
const US_PER_MS: i64 = 1_000;
const BYTES_PER_MB: i64 = 1024 * 1024;

fn usage_from_row(row: &Row) -> StoreResult<UsageRow> {
    Ok(UsageRow {
        tenant_id: col(row, "tenant_id")?,
        registry_id: col(row, "registry_id")?,
        window_start: col(row, "window_start")?,
        invocations: to_u64(col(row, "invocations")?, "invocations")?,
        cpu_us: to_u64(col(row, "cpu_us")?, "cpu_us")?,
        memory_byte_ms: to_u64(col(row, "memory_byte_ms")?, "memory_byte_ms")?,
        egress_bytes: to_u64(col(row, "egress_bytes")?, "egress_bytes")?,
        fuel: to_u64(col(row, "fuel")?, "fuel")?,
    })
}
