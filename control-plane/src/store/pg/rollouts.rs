//! Rollouts on Postgres (`extension_rollouts`). A change is one conditional
//! `UPDATE … WHERE id = $1 AND state = 'active' AND revision = $2`: of two
//! replicas deciding about the same rollout, only the first changes it and
//! the other is told the revision moved on. One active rollout per install
//! is the partial unique index's rule.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use super::cached::Cached;
use super::rows::col;
use super::{PgStore, pg_error};
use crate::store::{
    NewRollout, RolloutChange, RolloutEvent, RolloutRow, RolloutState, RolloutStore, StoreError,
    StoreResult, VersionStats,
};

const COLUMNS: &str = "id, tenant_id, install_id, registry_id, stable_version_id, variants, policy, \
     state, step, step_started_at, revision, reason, history, created_at, updated_at";

fn json<T: serde::Serialize>(value: &T) -> StoreResult<Value> {
    serde_json::to_value(value).map_err(|e| StoreError::InvalidData(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(row: &Row, name: &str) -> StoreResult<T> {
    let value: Value = col(row, name)?;
    serde_json::from_value(value)
        .map_err(|e| StoreError::Internal(format!("decode column {name}: {e}")))
}

fn rollout_from_row(row: &Row) -> StoreResult<RolloutRow> {
    let state: String = col(row, "state")?;
    let step: i32 = col(row, "step")?;
    Ok(RolloutRow {
        id: col(row, "id")?,
        tenant_id: col(row, "tenant_id")?,
        install_id: col(row, "install_id")?,
        registry_id: col(row, "registry_id")?,
        stable_version_id: col(row, "stable_version_id")?,
        variants: decode(row, "variants")?,
        policy: decode(row, "policy")?,
        state: RolloutState::parse(&state)
            .ok_or_else(|| StoreError::Internal(format!("rollout state {state}")))?,
        step: u32::try_from(step).unwrap_or(0),
        step_started_at: col(row, "step_started_at")?,
        revision: col(row, "revision")?,
        reason: col(row, "reason")?,
        history: decode(row, "history")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

#[async_trait]
impl RolloutStore for PgStore {
    async fn create_rollout(&self, new: NewRollout) -> StoreResult<RolloutRow> {
        let client = self.client().await?;
        let history: Vec<&RolloutEvent> = vec![&new.event];
        let row = client
            .query_one_c(
                &format!(
                    "INSERT INTO extension_rollouts \
                     (id, tenant_id, install_id, registry_id, stable_version_id, variants, policy, \
                      state, step, step_started_at, history) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', 0, now(), $8) RETURNING {COLUMNS}"
                ),
                &[
                    &new.id,
                    &new.tenant_id,
                    &new.install_id,
                    &new.registry_id,
                    &new.stable_version_id,
                    &json(&new.variants)?,
                    &json(&new.policy)?,
                    &json(&history)?,
                ],
            )
            .await
            .map_err(pg_error)?;
        rollout_from_row(&row)
    }

    async fn find_rollout(&self, id: Uuid) -> StoreResult<Option<RolloutRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt_c(
                &format!("SELECT {COLUMNS} FROM extension_rollouts WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(rollout_from_row).transpose()
    }

    async fn latest_rollout(&self, install_id: Uuid) -> StoreResult<Option<RolloutRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt_c(
                &format!(
                    "SELECT {COLUMNS} FROM extension_rollouts WHERE install_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT 1"
                ),
                &[&install_id],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(rollout_from_row).transpose()
    }

    async fn active_rollouts(&self) -> StoreResult<Vec<RolloutRow>> {
        let client = self.client().await?;
        let rows = client
            .query_c(
                &format!(
                    "SELECT {COLUMNS} FROM extension_rollouts WHERE state = 'active' \
                     ORDER BY created_at, id"
                ),
                &[],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(rollout_from_row).collect()
    }

    async fn update_rollout(
        &self,
        id: Uuid,
        revision: i64,
        change: RolloutChange,
    ) -> StoreResult<RolloutRow> {
        let client = self.client().await?;
        let step = i32::try_from(change.step)
            .map_err(|_| StoreError::InvalidData(format!("step {}", change.step)))?;
        let event = json(&vec![&change.event])?;
        let row = client
            .query_opt_c(
                &format!(
                    "UPDATE extension_rollouts SET state = $3, step = $4, \
                     step_started_at = CASE WHEN $5 THEN now() ELSE step_started_at END, \
                     variants = $6, reason = COALESCE($7, reason), history = history || $8::jsonb, \
                     revision = revision + 1, updated_at = now() \
                     WHERE id = $1 AND state = 'active' AND revision = $2 RETURNING {COLUMNS}"
                ),
                &[
                    &id,
                    &revision,
                    &change.state.as_str(),
                    &step,
                    &change.restart_step,
                    &json(&change.variants)?,
                    &change.reason,
                    &event,
                ],
            )
            .await
            .map_err(pg_error)?;
        match row {
            Some(row) => rollout_from_row(&row),
            None => match self.find_rollout(id).await? {
                Some(_) => Err(StoreError::RevisionMismatch),
                None => Err(StoreError::NotFound(format!("rollout {id}"))),
            },
        }
    }

    async fn version_stats(
        &self,
        tenant_id: &str,
        registry_id: Uuid,
        versions: &[Uuid],
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<VersionStats>> {
        let client = self.client().await?;
        // The same rule as `store::is_failure`, in SQL; the p99 is the
        // nearest rank (`percentile_disc`), as `store::p99`.
        let rows = client
            .query_c(
                "SELECT v.version_id, COUNT(l.id) AS calls, \
                 COUNT(l.id) FILTER (WHERE COALESCE(l.error, '') <> 'component_compiling' AND \
                   (l.status = 'timeout' OR COALESCE((l.metrics->>'http_status')::bigint, 0) >= 500)) AS failures, \
                 COALESCE(percentile_disc(0.99) WITHIN GROUP \
                   (ORDER BY COALESCE((l.metrics->>'duration_ms')::bigint, 0)), 0)::bigint AS p99_ms \
                 FROM UNNEST($3::uuid[]) AS v(version_id) \
                 LEFT JOIN extension_execution_log l ON l.version_id = v.version_id \
                   AND l.tenant_id = $1 AND l.registry_id = $2 AND l.started_at >= $4 \
                   AND l.status <> 'policy_denied' \
                 GROUP BY v.version_id",
                &[&tenant_id, &registry_id, &versions, &since],
            )
            .await
            .map_err(pg_error)?;
        let mut out = Vec::with_capacity(versions.len());
        for version in versions {
            let found = rows
                .iter()
                .find(|r| r.try_get::<_, Uuid>("version_id").ok() == Some(*version));
            out.push(match found {
                Some(r) => VersionStats {
                    version_id: *version,
                    calls: u64::try_from(col::<i64>(r, "calls")?).unwrap_or(0),
                    failures: u64::try_from(col::<i64>(r, "failures")?).unwrap_or(0),
                    p99_ms: u64::try_from(col::<i64>(r, "p99_ms")?).unwrap_or(0),
                },
                None => VersionStats {
                    version_id: *version,
                    calls: 0,
                    failures: 0,
                    p99_ms: 0,
                },
            });
        }
        Ok(out)
    }
}
