//! The idempotency area: one record per (tenant, install, idempotency key)
//! in `idempotency_records`, as [`IdempotencyStore`]
//! (docs/design/idempotency.md). A record is claimed by one call at a time
//! (its claim token and lease), completed with that call's response, or
//! released when nothing may be stored; it is kept until `expires_at`.
//!
//! The store enforces what must hold under concurrency: one claimant at a
//! time, a lapsed lease taken over by the next claim, and a complete,
//! renew or release from a claimant that lost the record refused. The
//! `idempotency` module validates keys, hashes, leases and responses first
//! and chooses the times.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// Whose record: keys are scoped to (tenant, install), never shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyScope {
    pub tenant_id: String,
    pub install_id: Uuid,
    /// At most 255 characters (the caller maps longer keys to a digest).
    pub key: String,
}

/// A claim of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// Identifies the request; the same key with another hash conflicts.
    pub request_hash: String,
    /// The claimant's token: the same token claims again without waiting,
    /// and complete, renew and release must present it.
    pub token: Uuid,
    /// Until when the claim holds without a renewal.
    pub lease_expires_at: DateTime<Utc>,
    /// Until when a new record is kept (never before the lease ends).
    pub expires_at: DateTime<Utc>,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The record is the claimant's now: a new one (none existed, or the
    /// old one had expired), one whose lease had lapsed (taken over), or
    /// one the same token already held.
    Claimed,
    /// Another claimant holds the record until `lease_expires_at`.
    InProgress { lease_expires_at: DateTime<Utc> },
    /// An earlier call completed the record with this response.
    Completed(serde_json::Value),
    /// The record was made for another request hash.
    Conflict,
}

/// Idempotency records. Every call treats a record whose `expires_at` is
/// not after `now` as absent.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims the record of `scope` for `claim.token`, or says why not.
    async fn idempotency_claim(
        &self,
        scope: &IdempotencyScope,
        claim: IdempotencyClaim,
        now: DateTime<Utc>,
    ) -> StoreResult<ClaimOutcome>;
    /// Moves the lease of a record `token` still holds in progress to
    /// `lease_expires_at` (and its expiry no earlier); false when `token`
    /// no longer holds it.
    async fn idempotency_renew(
        &self,
        scope: &IdempotencyScope,
        token: Uuid,
        lease_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Completes a record `token` holds in progress with `response`, kept
    /// until `expires_at`; false (and nothing written) when `token` no
    /// longer holds it.
    async fn idempotency_complete(
        &self,
        scope: &IdempotencyScope,
        token: Uuid,
        response: serde_json::Value,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Deletes a record `token` holds in progress, so the next claim runs
    /// the call; false when `token` no longer holds it.
    async fn idempotency_release(&self, scope: &IdempotencyScope, token: Uuid)
    -> StoreResult<bool>;
    /// Deletes up to `limit` records whose `expires_at` is not after `now`;
    /// returns how many.
    async fn idempotency_sweep(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64>;
}
