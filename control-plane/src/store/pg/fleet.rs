//! Worker membership on Postgres (`workers`, one row per worker id, written
//! by whichever replica received the heartbeat) and the content hashes of
//! what active installs run.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::cached::Cached;
use super::rows::col;
use super::{PgStore, pg_error};
use crate::store::{FleetStore, StoreResult, WorkerRow};

#[async_trait]
impl FleetStore for PgStore {
    async fn upsert_worker(&self, w: WorkerRow) -> StoreResult<()> {
        let client = self.client().await?;
        let hashes = serde_json::json!(w.cached_hashes);
        let capacity = i32::try_from(w.capacity).unwrap_or(i32::MAX);
        let in_flight = i32::try_from(w.in_flight).unwrap_or(i32::MAX);
        client
            .execute_c(
                "INSERT INTO workers (id, address, capacity, in_flight, draining, cached_hashes, last_heartbeat_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, capacity = EXCLUDED.capacity, \
                 in_flight = EXCLUDED.in_flight, draining = EXCLUDED.draining, \
                 cached_hashes = EXCLUDED.cached_hashes, last_heartbeat_at = EXCLUDED.last_heartbeat_at",
                &[&w.id, &w.address, &capacity, &in_flight, &w.draining, &hashes, &w.last_seen],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn active_content_hashes(&self) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query_c(
                "SELECT DISTINCT b.content_hash FROM tenant_extension_install i \
                 JOIN extension_bundle b ON b.version_id = i.version_id \
                 WHERE i.is_enabled AND i.status = 'enabled' \
                 UNION \
                 SELECT b.content_hash FROM extension_rollouts r \
                 JOIN tenant_extension_install i ON i.id = r.install_id \
                 CROSS JOIN LATERAL jsonb_array_elements(r.variants) AS v(variant) \
                 JOIN extension_bundle b ON b.version_id = (v.variant->>'version_id')::uuid \
                 WHERE r.state = 'active' AND i.is_enabled AND i.status = 'enabled' \
                 ORDER BY content_hash",
                &[],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(|row| col(row, "content_hash")).collect()
    }

    async fn list_workers(&self, since: DateTime<Utc>) -> StoreResult<Vec<WorkerRow>> {
        let client = self.client().await?;
        let rows = client
            .query_c(
                "SELECT id, address, capacity, in_flight, draining, cached_hashes, last_heartbeat_at \
                 FROM workers WHERE last_heartbeat_at >= $1 ORDER BY id",
                &[&since],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                let hashes: Value = col(row, "cached_hashes")?;
                Ok(WorkerRow {
                    id: col(row, "id")?,
                    address: col(row, "address")?,
                    capacity: u32::try_from(col::<i32>(row, "capacity")?).unwrap_or(0),
                    in_flight: u32::try_from(col::<i32>(row, "in_flight")?).unwrap_or(0),
                    draining: col(row, "draining")?,
                    cached_hashes: serde_json::from_value(hashes).unwrap_or_default(),
                    last_seen: col(row, "last_heartbeat_at")?,
                })
            })
            .collect()
    }
}
