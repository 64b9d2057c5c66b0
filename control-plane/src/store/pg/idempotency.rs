//! Idempotency records on Postgres (`idempotency_records`). A claim is one
//! upsert on the primary key that takes the row only when it is free to
//! take (absent, expired, its lease lapsed, or already the claimant's);
//! otherwise the row is read to say why not. Renew, complete and release
//! are single updates or deletes conditioned on the claim token, so a
//! claimant that lost the row changes nothing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::cached::Cached;
use super::rows::col;
use super::{PgStore, pg_error};
use crate::store::{
    ClaimOutcome, IdempotencyClaim, IdempotencyScope, IdempotencyStore, StoreError, StoreResult,
};

/// Claims the row of ($1, $2, $3) for token $5 unless another claimant
/// holds it or it belongs to another request. `$7` is now.
const CLAIM: &str = "INSERT INTO idempotency_records AS r \
     (tenant_id, install_id, idempotency_key, request_hash, state, claim_token, lease_expires_at, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, 'in_progress', $5, $6::timestamptz, $7::timestamptz, \
             GREATEST($8::timestamptz, $6::timestamptz)) \
     ON CONFLICT (tenant_id, install_id, idempotency_key) DO UPDATE SET \
       request_hash = EXCLUDED.request_hash, state = 'in_progress', response = NULL, completed_at = NULL, \
       claim_token = EXCLUDED.claim_token, lease_expires_at = EXCLUDED.lease_expires_at, \
       created_at = CASE WHEN r.expires_at <= $7 THEN EXCLUDED.created_at ELSE r.created_at END, \
       expires_at = CASE WHEN r.expires_at <= $7 THEN EXCLUDED.expires_at \
                    ELSE GREATEST(r.expires_at, EXCLUDED.lease_expires_at) END \
     WHERE r.expires_at <= $7 \
        OR (r.state = 'in_progress' AND r.request_hash = EXCLUDED.request_hash \
            AND (r.claim_token = EXCLUDED.claim_token OR r.lease_expires_at IS NULL OR r.lease_expires_at <= $7)) \
     RETURNING r.claim_token";

/// The row a claim could not take.
const HELD: &str = "SELECT request_hash, state, response, lease_expires_at FROM idempotency_records \
     WHERE tenant_id = $1 AND install_id = $2 AND idempotency_key = $3 AND expires_at > $4";

/// A claim that found no row to report (it was released or expired
/// between the upsert and the read) tries again, this many times at most.
const CLAIM_ATTEMPTS: usize = 3;

#[async_trait]
impl IdempotencyStore for PgStore {
    async fn idempotency_claim(
        &self,
        scope: &IdempotencyScope,
        claim: IdempotencyClaim,
        now: DateTime<Utc>,
    ) -> StoreResult<ClaimOutcome> {
        let client = self.client().await?;
        for _ in 0..CLAIM_ATTEMPTS {
            let taken = client
                .query_opt_c(
                    CLAIM,
                    &[
                        &scope.tenant_id,
                        &scope.install_id,
                        &scope.key,
                        &claim.request_hash,
                        &claim.token,
                        &claim.lease_expires_at,
                        &now,
                        &claim.expires_at,
                    ],
                )
                .await
                .map_err(pg_error)?;
            if taken.is_some() {
                return Ok(ClaimOutcome::Claimed);
            }
            let Some(row) = client
                .query_opt_c(
                    HELD,
                    &[&scope.tenant_id, &scope.install_id, &scope.key, &now],
                )
                .await
                .map_err(pg_error)?
            else {
                continue;
            };
            let hash: Option<String> = col(&row, "request_hash")?;
            if hash.as_deref() != Some(claim.request_hash.as_str()) {
                return Ok(ClaimOutcome::Conflict);
            }
            let state: String = col(&row, "state")?;
            if state == "completed" {
                let response: Option<serde_json::Value> = col(&row, "response")?;
                return Ok(ClaimOutcome::Completed(
                    response.unwrap_or(serde_json::Value::Null),
                ));
            }
            let lease: Option<DateTime<Utc>> = col(&row, "lease_expires_at")?;
            match lease {
                // Held by another claimant: the upsert's condition failed on
                // a live lease.
                Some(lease_expires_at) if lease_expires_at > now => {
                    return Ok(ClaimOutcome::InProgress { lease_expires_at });
                }
                // Changed hands between the upsert and the read: try again.
                _ => continue,
            }
        }
        Err(StoreError::Unavailable(
            "the idempotency record kept changing; retry".to_owned(),
        ))
    }

    async fn idempotency_renew(
        &self,
        scope: &IdempotencyScope,
        token: Uuid,
        lease_expires_at: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute_c(
                "UPDATE idempotency_records SET lease_expires_at = $5, \
                 expires_at = GREATEST(expires_at, $5) \
                 WHERE tenant_id = $1 AND install_id = $2 AND idempotency_key = $3 \
                 AND state = 'in_progress' AND claim_token = $4",
                &[
                    &scope.tenant_id,
                    &scope.install_id,
                    &scope.key,
                    &token,
                    &lease_expires_at,
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(n == 1)
    }

    async fn idempotency_complete(
        &self,
        scope: &IdempotencyScope,
        token: Uuid,
        response: serde_json::Value,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute_c(
                "UPDATE idempotency_records SET state = 'completed', response = $5, \
                 claim_token = NULL, lease_expires_at = NULL, completed_at = $6, expires_at = $7 \
                 WHERE tenant_id = $1 AND install_id = $2 AND idempotency_key = $3 \
                 AND state = 'in_progress' AND claim_token = $4",
                &[
                    &scope.tenant_id,
                    &scope.install_id,
                    &scope.key,
                    &token,
                    &response,
                    &now,
                    &expires_at,
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(n == 1)
    }

    async fn idempotency_release(
        &self,
        scope: &IdempotencyScope,
        token: Uuid,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute_c(
                "DELETE FROM idempotency_records \
                 WHERE tenant_id = $1 AND install_id = $2 AND idempotency_key = $3 \
                 AND state = 'in_progress' AND claim_token = $4",
                &[&scope.tenant_id, &scope.install_id, &scope.key, &token],
            )
            .await
            .map_err(pg_error)?;
        Ok(n == 1)
    }

    async fn idempotency_sweep(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM idempotency_records WHERE ctid IN ( \
                   SELECT ctid FROM idempotency_records WHERE expires_at <= $1 LIMIT $2)",
                &[&now, &i64::from(limit)],
            )
            .await
            .map_err(pg_error)?;
        Ok(n)
    }
}
