//! Idempotency records in memory: a map keyed by (tenant, install, key),
//! every operation one step under the store's lock (Postgres: one upsert
//! or update per call on the primary key).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{MemoryStore, micros};
use crate::store::{
    ClaimOutcome, IdempotencyClaim, IdempotencyScope, IdempotencyStore, StoreResult,
};

type Key = (String, Uuid, String);

fn key_of(scope: &IdempotencyScope) -> Key {
    (scope.tenant_id.clone(), scope.install_id, scope.key.clone())
}

#[derive(Debug, Clone)]
enum State {
    InProgress {
        token: Uuid,
        lease_expires_at: DateTime<Utc>,
    },
    Completed(serde_json::Value),
}

#[derive(Debug, Clone)]
struct Record {
    request_hash: String,
    state: State,
    expires_at: DateTime<Utc>,
}

/// `idempotency_records`.
#[derive(Default)]
pub(super) struct Idempotency {
    records: HashMap<Key, Record>,
}

impl Idempotency {
    /// The live record of `key`, dropping it when it has expired.
    fn live(&mut self, key: &Key, now: DateTime<Utc>) -> Option<&mut Record> {
        if self.records.get(key).is_some_and(|r| r.expires_at <= now) {
            self.records.remove(key);
        }
        self.records.get_mut(key)
    }

    /// The record `token` holds in progress.
    fn held(&mut self, key: &Key, token: Uuid) -> Option<&mut Record> {
        self.records
            .get_mut(key)
            .filter(|r| matches!(r.state, State::InProgress { token: t, .. } if t == token))
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn idempotency_claim(
        &self,
        scope: &IdempotencyScope,
        claim: IdempotencyClaim,
        now: DateTime<Utc>,
    ) -> StoreResult<ClaimOutcome> {
        let now = micros(now);
        let lease_expires_at = micros(claim.lease_expires_at);
        let mut state = self.lock();
        let key = key_of(scope);
        let Some(record) = state.idempotency.live(&key, now) else {
            state.idempotency.records.insert(
                key,
                Record {
                    request_hash: claim.request_hash,
                    state: State::InProgress {
                        token: claim.token,
                        lease_expires_at,
                    },
                    expires_at: micros(claim.expires_at).max(lease_expires_at),
                },
            );
            return Ok(ClaimOutcome::Claimed);
        };
        if record.request_hash != claim.request_hash {
            return Ok(ClaimOutcome::Conflict);
        }
        match &record.state {
            State::Completed(response) => Ok(ClaimOutcome::Completed(response.clone())),
            State::InProgress {
                token,
                lease_expires_at: held_until,
            } if *token != claim.token && *held_until > now => Ok(ClaimOutcome::InProgress {
                lease_expires_at: *held_until,
            }),
            // The same claimant again, or a lapsed lease taken over.
            State::InProgress { .. } => {
                record.state = State::InProgress {
                    token: claim.token,
                    lease_expires_at,
                };
                record.expires_at = record.expires_at.max(lease_expires_at);
                Ok(ClaimOutcome::Claimed)
            }
        }
    }

    async fn idempotency_renew(
        &self,
        scope: &IdempotencyScope,
        token: Uuid,
        lease_expires_at: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let lease_expires_at = micros(lease_expires_at);
        let mut state = self.lock();
        let Some(record) = state.idempotency.held(&key_of(scope), token) else {
            return Ok(false);
        };
        record.state = State::InProgress {
            token,
            lease_expires_at,
        };
        record.expires_at = record.expires_at.max(lease_expires_at);
        Ok(true)
    }

    async fn idempotency_complete(
        &self,
        scope: &IdempotencyScope,
        token: Uuid,
        response: serde_json::Value,
        expires_at: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut state = self.lock();
        let Some(record) = state.idempotency.held(&key_of(scope), token) else {
            return Ok(false);
        };
        record.state = State::Completed(response);
        record.expires_at = micros(expires_at);
        Ok(true)
    }

    async fn idempotency_release(
        &self,
        scope: &IdempotencyScope,
        token: Uuid,
    ) -> StoreResult<bool> {
        let mut state = self.lock();
        let key = key_of(scope);
        if state.idempotency.held(&key, token).is_none() {
            return Ok(false);
        }
        state.idempotency.records.remove(&key);
        Ok(true)
    }

    async fn idempotency_sweep(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        let now = micros(now);
        let mut state = self.lock();
        let records = &mut state.idempotency.records;
        let expired: Vec<Key> = records
            .iter()
            .filter(|(_, r)| r.expires_at <= now)
            .map(|(k, _)| k.clone())
            .take(limit as usize)
            .collect();
        for k in &expired {
            records.remove(k);
        }
        Ok(expired.len() as u64)
    }
}
