//! Execution grants: short-lived tokens the control plane signs for one
//! install, which workers present on every host-service call made for that
//! install's executions. The grant, not the request, names the tenant and
//! install, so a guest of install A cannot reach install B's data through its
//! worker.
//!
//! Format: `v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256)>`, keyed by a
//! subkey derived from the key-encryption key, so every control-plane replica
//! sharing the KEK can verify any replica's grants.
//!
//! A token is checked once, where a `HostServices` call arrives: the gRPC
//! layer turns it into a [`VerifiedGrant`], the only proof of a valid
//! signature and expiry the domain code accepts. What a grant must also
//! satisfy per call (the capability, the install still active) is checked by
//! the code that serves the call. This module stores nothing and reads no
//! database.

use annex_bundle::capability::Capability;
use annex_proto::{AnnexError, ErrorCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use ring::hmac;
use uuid::Uuid;

/// How long a grant is valid. Edges refresh resolutions well before this.
pub(crate) const GRANT_TTL: chrono::Duration = chrono::Duration::minutes(10);

const PREFIX: &str = "v1";

/// The claims of a grant, as signed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Grant {
    pub(crate) tenant: String,
    pub(crate) install: Uuid,
    pub(crate) registry: Uuid,
    pub(crate) version: Uuid,
    /// Granted capabilities (with defaults).
    pub(crate) caps: Vec<String>,
    /// Expiry, unix ms.
    pub(crate) exp: i64,
}

/// A grant whose signature and expiry were checked by [`GrantSigner::verify`],
/// the only way to make one. It names the tenant, install, extension and
/// version the call may act for and the capabilities it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedGrant {
    claims: Grant,
}

impl VerifiedGrant {
    pub(crate) fn tenant(&self) -> &str {
        &self.claims.tenant
    }

    pub(crate) fn install(&self) -> Uuid {
        self.claims.install
    }

    /// The extension's registry id.
    pub(crate) fn extension(&self) -> Uuid {
        self.claims.registry
    }

    pub(crate) fn version(&self) -> Uuid {
        self.claims.version
    }

    pub(crate) fn capabilities(&self) -> &[String] {
        &self.claims.caps
    }

    /// Refuses the call unless the grant carries `cap`.
    pub(crate) fn require(&self, cap: Capability) -> Result<(), AnnexError> {
        if self.capabilities().iter().any(|c| c == cap.as_str()) {
            return Ok(());
        }
        Err(AnnexError::new(
            ErrorCode::PermissionDenied,
            format!("{cap} is not granted to this install"),
        ))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum GrantError {
    #[error("the execution grant is malformed")]
    Malformed,
    #[error("the execution grant's signature does not verify")]
    BadSignature,
    #[error("the execution grant has expired")]
    Expired,
}

/// What the caller of a host service sees: every refusal is
/// `GRANT_INVALID`, an expired grant saying so.
impl From<GrantError> for AnnexError {
    fn from(err: GrantError) -> Self {
        let msg = match err {
            GrantError::Expired => "the execution grant has expired",
            GrantError::BadSignature | GrantError::Malformed => "the execution grant is not valid",
        };
        AnnexError::new(ErrorCode::GrantInvalid, msg)
    }
}

/// Signs and verifies grants.
#[derive(Clone)]
pub(crate) struct GrantSigner {
    key: hmac::Key,
}

impl std::fmt::Debug for GrantSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantSigner(..)")
    }
}

impl GrantSigner {
    /// Derives the grant key from the key-encryption key.
    pub(crate) fn from_kek(kek: &[u8]) -> GrantSigner {
        let root = hmac::Key::new(hmac::HMAC_SHA256, kek);
        let derived = hmac::sign(&root, b"annex-execution-grant-v1");
        GrantSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    pub(crate) fn sign(&self, grant: &Grant) -> String {
        // Serialising a plain struct of strings and numbers cannot fail.
        let claims = serde_json::to_vec(grant).unwrap_or_default();
        let body = format!("{PREFIX}.{}", B64URL.encode(claims));
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", B64URL.encode(tag.as_ref()))
    }

    pub(crate) fn verify(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<VerifiedGrant, GrantError> {
        self.verify_expired_within(token, now, chrono::Duration::zero())
    }

    /// [`verify`](Self::verify), also accepting a grant that expired less
    /// than `grace` ago: for the calls that only finish what a valid grant
    /// began (renewing, completing or releasing an idempotency claim the
    /// caller proves it holds), so a call that started just before its
    /// grant expired still records its outcome.
    pub(crate) fn verify_expired_within(
        &self,
        token: &str,
        now: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> Result<VerifiedGrant, GrantError> {
        let (body, tag) = token.trim().rsplit_once('.').ok_or(GrantError::Malformed)?;
        let (prefix, claims) = body.split_once('.').ok_or(GrantError::Malformed)?;
        if prefix != PREFIX {
            return Err(GrantError::Malformed);
        }
        let tag = B64URL.decode(tag).map_err(|_| GrantError::Malformed)?;
        hmac::verify(&self.key, body.as_bytes(), &tag).map_err(|_| GrantError::BadSignature)?;
        let claims = B64URL.decode(claims).map_err(|_| GrantError::Malformed)?;
        let grant: Grant = serde_json::from_slice(&claims).map_err(|_| GrantError::Malformed)?;
        if grant.exp <= (now - grace).timestamp_millis() {
            return Err(GrantError::Expired);
        }
        Ok(VerifiedGrant { claims: grant })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(exp: i64) -> Grant {
        Grant {
            tenant: "t".into(),
            install: Uuid::new_v4(),
            registry: Uuid::new_v4(),
            version: Uuid::new_v4(),
            caps: vec!["cap:storage.kv".into()],
            exp,
        }
    }

    #[test]
    fn grants_verify_only_untampered_unexpired_and_with_the_same_key() {
        let signer = GrantSigner::from_kek(&[1; 32]);
        let now = Utc::now();
        let g = grant(now.timestamp_millis() + 60_000);
        let token = signer.sign(&g);
        let verified = signer.verify(&token, now).expect("verifies");
        assert_eq!(verified.install(), g.install);
        assert_eq!(verified.tenant(), "t");
        assert!(verified.require(Capability::StorageKv).is_ok());
        assert_eq!(
            verified.require(Capability::SecretsGet).map_err(|e| e.code),
            Err(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            GrantSigner::from_kek(&[2; 32]).verify(&token, now),
            Err(GrantError::BadSignature)
        );
        // Swap the claims for another install's, keep the tag.
        let (_, tag) = token.rsplit_once('.').expect("tag");
        let mut other = g.clone();
        other.install = Uuid::new_v4();
        let forged_body = signer.sign(&other);
        let (forged_body, _) = forged_body.rsplit_once('.').expect("body");
        assert_eq!(
            signer.verify(&format!("{forged_body}.{tag}"), now),
            Err(GrantError::BadSignature)
        );
        assert_eq!(
            signer.verify(&token, now + chrono::Duration::minutes(2)),
            Err(GrantError::Expired)
        );
        assert_eq!(signer.verify("junk", now), Err(GrantError::Malformed));
        let later = now + chrono::Duration::minutes(2);
        let grace = chrono::Duration::minutes(5);
        assert!(signer.verify_expired_within(&token, later, grace).is_ok());
        assert_eq!(
            signer.verify_expired_within(&token, later + grace, grace),
            Err(GrantError::Expired)
        );
    }
}
