//! Idempotency records for executions that carry a key
//! (docs/design/idempotency.md), as workers reach them through
//! `HostServices`: a worker claims a keyed call before it runs anything,
//! renews the claim's lease while the call runs, then completes the record
//! with the guest's response or releases it when nothing may be stored. A
//! completed record is kept for the retention (24 h by default) and
//! answers every later claim of the same request; the same key with
//! another request is a conflict.
//!
//! Records are scoped to the verified grant's (tenant, install), never to
//! what the request says. Keys longer than the column holds, or with
//! control characters, are kept as their SHA-256 digest. [`Idempotency`]
//! validates what workers send, picks the times (this replica's clock, as
//! for KV TTLs) and leaves concurrency to the store; `sweep` deletes
//! expired records in the background.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use annex_proto::domain::MAX_IDEMPOTENT_BODY_BYTES;
use annex_proto::{AnnexError, ErrorCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::grant::VerifiedGrant;
use crate::installs::Installs;
use crate::store::{ClaimOutcome, IdempotencyClaim, IdempotencyScope, Store};

/// Longest key kept as written (the column is `varchar(255)`).
const MAX_KEY_BYTES: usize = 255;
/// Shortest and longest lease a claim may ask for.
const MIN_LEASE: Duration = Duration::from_secs(1);
const MAX_LEASE: Duration = Duration::from_secs(600);
/// Headers a kept response may carry (the worker's bounds on a guest answer).
const MAX_HEADERS: usize = 100;
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How often expired records are deleted, and how many per statement.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
const SWEEP_BATCH: u32 = 1_000;

/// How long a completed record is kept when not configured.
pub(crate) const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// The bounds of the configured retention.
pub(crate) const MIN_RETENTION: Duration = Duration::from_secs(60);
pub(crate) const MAX_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A guest response as a record keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeptResponse {
    pub(crate) status: u32,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Option<Vec<u8>>,
    /// The guest answered above the bound: nothing else is kept.
    pub(crate) not_kept: bool,
}

impl KeptResponse {
    fn to_json(&self) -> Value {
        json!({
            "status": self.status,
            "headers": self.headers,
            "body_b64": self.body.as_ref().map(|b| B64.encode(b)),
            "not_kept": self.not_kept,
        })
    }

    fn from_json(value: &Value) -> Option<KeptResponse> {
        let status = u32::try_from(value.get("status")?.as_u64()?).ok()?;
        let headers = value
            .get("headers")?
            .as_object()?
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect::<Option<BTreeMap<_, _>>>()?;
        let body = match value.get("body_b64") {
            None | Some(Value::Null) => None,
            Some(v) => Some(B64.decode(v.as_str()?).ok()?),
        };
        let not_kept = value
            .get("not_kept")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Some(KeptResponse {
            status,
            headers,
            body,
            not_kept,
        })
    }

    /// Refuses a response above the bounds a worker keeps to.
    fn check(&self) -> Result<(), AnnexError> {
        let too_large = |what: String| Err(AnnexError::new(ErrorCode::LimitExceeded, what));
        let body = self.body.as_ref().map_or(0, Vec::len);
        if body > MAX_IDEMPOTENT_BODY_BYTES {
            return too_large(format!(
                "a kept response body is at most {MAX_IDEMPOTENT_BODY_BYTES} bytes"
            ));
        }
        let header_bytes: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        if self.headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
            return too_large(format!(
                "a kept response has at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes"
            ));
        }
        Ok(())
    }
}

/// A claim as a worker asks for it.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRequest {
    pub(crate) key: String,
    pub(crate) request_hash: String,
    pub(crate) token: String,
    pub(crate) lease: Duration,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Found {
    /// The caller holds the record: run the call.
    Claimed,
    /// Another call holds it until then.
    InProgress { lease_expires_at: DateTime<Utc> },
    /// An earlier call's response.
    Completed(KeptResponse),
    /// The key belongs to another request.
    Conflict,
}

/// The idempotency host API.
pub(crate) struct Idempotency {
    store: Arc<dyn Store>,
    installs: Arc<Installs>,
    retention: Duration,
}

impl Idempotency {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        installs: Arc<Installs>,
        retention: Duration,
    ) -> Idempotency {
        Idempotency {
            store,
            installs,
            retention,
        }
    }

    /// Claims the record of the grant's install and `req.key`. The install
    /// must still be active (nothing runs for one that is not).
    pub(crate) async fn claim(
        &self,
        grant: &VerifiedGrant,
        req: ClaimRequest,
    ) -> Result<Found, AnnexError> {
        let scope = scope(grant, &req.key)?;
        let request_hash = check_hash(&req.request_hash)?;
        let token = token(&req.token)?;
        let lease = check_lease(req.lease)?;
        if self.installs.granted_install(grant).await?.is_none() {
            return Err(AnnexError::new(
                ErrorCode::GrantInvalid,
                "the install is not active",
            ));
        }
        let now = Utc::now();
        let claim = IdempotencyClaim {
            request_hash,
            token,
            lease_expires_at: now + lease,
            expires_at: now + self.retention(),
        };
        Ok(
            match self.store.idempotency_claim(&scope, claim, now).await? {
                ClaimOutcome::Claimed => Found::Claimed,
                ClaimOutcome::InProgress { lease_expires_at } => {
                    Found::InProgress { lease_expires_at }
                }
                ClaimOutcome::Conflict => Found::Conflict,
                ClaimOutcome::Completed(value) => {
                    let response = KeptResponse::from_json(&value).ok_or_else(|| {
                        tracing::error!(tenant = %scope.tenant_id, install = %scope.install_id,
                        "an idempotency record holds an unreadable response");
                        AnnexError::internal()
                    })?;
                    Found::Completed(response)
                }
            },
        )
    }

    /// Moves the lease of a claim the caller holds; false when it no
    /// longer holds it.
    pub(crate) async fn renew(
        &self,
        grant: &VerifiedGrant,
        key: &str,
        token_text: &str,
        lease: Duration,
    ) -> Result<bool, AnnexError> {
        let scope = scope(grant, key)?;
        let token = token(token_text)?;
        let lease = check_lease(lease)?;
        let now = Utc::now();
        Ok(self
            .store
            .idempotency_renew(&scope, token, now + lease, now)
            .await?)
    }

    /// Completes a claim the caller holds with the guest's response, kept
    /// for the retention; false (nothing written) when it no longer holds it.
    pub(crate) async fn complete(
        &self,
        grant: &VerifiedGrant,
        key: &str,
        token_text: &str,
        response: KeptResponse,
    ) -> Result<bool, AnnexError> {
        let scope = scope(grant, key)?;
        let token = token(token_text)?;
        response.check()?;
        let now = Utc::now();
        Ok(self
            .store
            .idempotency_complete(
                &scope,
                token,
                response.to_json(),
                now + self.retention(),
                now,
            )
            .await?)
    }

    /// Deletes a claim the caller holds, so the next claim runs the call;
    /// false when it no longer holds it.
    pub(crate) async fn release(
        &self,
        grant: &VerifiedGrant,
        key: &str,
        token_text: &str,
    ) -> Result<bool, AnnexError> {
        let scope = scope(grant, key)?;
        let token = token(token_text)?;
        Ok(self.store.idempotency_release(&scope, token).await?)
    }

    /// Deletes expired records every minute until `stop` turns true.
    pub(crate) async fn sweep(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let mut deleted = 0u64;
            loop {
                match self.store.idempotency_sweep(Utc::now(), SWEEP_BATCH).await {
                    Ok(n) => {
                        deleted += n;
                        if n < u64::from(SWEEP_BATCH) {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "deleting expired idempotency records failed");
                        break;
                    }
                }
            }
            if deleted > 0 {
                tracing::debug!(deleted, "expired idempotency records deleted");
            }
        }
    }

    fn retention(&self) -> chrono::TimeDelta {
        delta(self.retention)
    }
}

fn delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// The record's scope: the grant's tenant and install, and the key as
/// kept (see [`record_key`]).
fn scope(grant: &VerifiedGrant, key: &str) -> Result<IdempotencyScope, AnnexError> {
    Ok(IdempotencyScope {
        tenant_id: grant.tenant().to_owned(),
        install_id: grant.install(),
        key: record_key(key)?,
    })
}

/// The key as a record keeps it: as written when it is at most 255 bytes
/// without control characters and does not itself look like a digest;
/// otherwise `sha256:` and the hex digest of its bytes.
pub(crate) fn record_key(key: &str) -> Result<String, AnnexError> {
    if key.is_empty() {
        return Err(AnnexError::invalid("the idempotency key is empty"));
    }
    let plain = key.len() <= MAX_KEY_BYTES
        && !key.chars().any(char::is_control)
        && !key.starts_with("sha256:");
    if plain {
        return Ok(key.to_owned());
    }
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(key.as_bytes()))
    ))
}

fn check_hash(hash: &str) -> Result<String, AnnexError> {
    let ok = hash.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(hash.to_owned())
    } else {
        Err(AnnexError::invalid(
            "request_hash must be sha256: and 64 lower-case hex digits",
        ))
    }
}

fn token(text: &str) -> Result<Uuid, AnnexError> {
    Uuid::parse_str(text).map_err(|_| AnnexError::invalid("claim_token must be a UUID"))
}

fn check_lease(lease: Duration) -> Result<chrono::TimeDelta, AnnexError> {
    if lease < MIN_LEASE || lease > MAX_LEASE {
        return Err(AnnexError::invalid(format!(
            "lease_ms must be {}..={}",
            MIN_LEASE.as_millis(),
            MAX_LEASE.as_millis()
        )));
    }
    Ok(delta(lease))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_as_written_or_as_their_digest() {
        assert_eq!(record_key("order-17").expect("ok"), "order-17");
        let long = "k".repeat(256);
        let digest = record_key(&long).expect("ok");
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{digest}"
        );
        assert_eq!(record_key(&long).expect("ok"), digest, "stable");
        assert_ne!(record_key("a\nb").expect("ok"), "a\nb");
        // A key that looks like a digest is hashed too, so it cannot name
        // another key's record.
        assert_ne!(record_key(&digest).expect("ok"), digest);
        assert!(record_key("").is_err());
    }

    #[test]
    fn hashes_and_leases_are_checked() {
        let hash = format!("sha256:{}", "a".repeat(64));
        assert!(check_hash(&hash).is_ok());
        assert!(check_hash(&hash.to_uppercase()).is_err());
        assert!(check_hash("sha256:abc").is_err());
        assert!(check_lease(Duration::from_millis(999)).is_err());
        assert!(check_lease(Duration::from_secs(10)).is_ok());
        assert!(check_lease(Duration::from_secs(601)).is_err());
    }

    #[test]
    fn kept_responses_round_trip_and_are_bounded() {
        let r = KeptResponse {
            status: 201,
            headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
            body: Some(b"{}".to_vec()),
            not_kept: false,
        };
        assert_eq!(KeptResponse::from_json(&r.to_json()), Some(r.clone()));
        let empty = KeptResponse {
            body: None,
            ..r.clone()
        };
        assert_eq!(KeptResponse::from_json(&empty.to_json()), Some(empty));
        let big = KeptResponse {
            body: Some(vec![0; MAX_IDEMPOTENT_BODY_BYTES + 1]),
            ..r
        };
        assert_eq!(
            big.check().expect_err("too large").code,
            ErrorCode::LimitExceeded
        );
    }
}
