//! Execution grants: short-lived tokens the control plane signs for one
//! install, which workers present on every host-service call made for that
//! install's executions. The grant, not the request, names the tenant and
//! install, so a guest of install A cannot reach install B's data through its
//! worker.
//!
//! Format: `v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256)>`, keyed by a
//! subkey derived from the key-encryption key, so every control-plane replica
//! sharing the KEK can verify any replica's grants.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use ring::hmac;
use uuid::Uuid;

/// How long a grant is valid. Edges refresh resolutions well before this.
pub const GRANT_TTL: chrono::Duration = chrono::Duration::minutes(10);

const PREFIX: &str = "v1";

/// What a grant allows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    pub tenant: String,
    pub install: Uuid,
    pub registry: Uuid,
    pub version: Uuid,
    /// Granted capabilities (with defaults).
    pub caps: Vec<String>,
    /// Expiry, unix ms.
    pub exp: i64,
}

impl Grant {
    pub fn has(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    #[error("the execution grant is malformed")]
    Malformed,
    #[error("the execution grant's signature does not verify")]
    BadSignature,
    #[error("the execution grant has expired")]
    Expired,
}

/// Signs and verifies grants.
pub struct GrantSigner {
    key: hmac::Key,
}

impl std::fmt::Debug for GrantSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantSigner(..)")
    }
}

impl GrantSigner {
    /// Derives the grant key from the key-encryption key.
    pub fn from_kek(kek: &[u8]) -> GrantSigner {
        let root = hmac::Key::new(hmac::HMAC_SHA256, kek);
        let derived = hmac::sign(&root, b"annex-execution-grant-v1");
        GrantSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    pub fn sign(&self, grant: &Grant) -> String {
        // Serialising a plain struct of strings and numbers cannot fail.
        let claims = serde_json::to_vec(grant).unwrap_or_default();
        let body = format!("{PREFIX}.{}", B64URL.encode(claims));
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", B64URL.encode(tag.as_ref()))
    }

    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Grant, GrantError> {
        let (body, tag) = token.trim().rsplit_once('.').ok_or(GrantError::Malformed)?;
        let (prefix, claims) = body.split_once('.').ok_or(GrantError::Malformed)?;
        if prefix != PREFIX {
            return Err(GrantError::Malformed);
        }
        let tag = B64URL.decode(tag).map_err(|_| GrantError::Malformed)?;
        hmac::verify(&self.key, body.as_bytes(), &tag).map_err(|_| GrantError::BadSignature)?;
        let claims = B64URL.decode(claims).map_err(|_| GrantError::Malformed)?;
        let grant: Grant = serde_json::from_slice(&claims).map_err(|_| GrantError::Malformed)?;
        if grant.exp <= now.timestamp_millis() {
            return Err(GrantError::Expired);
        }
        Ok(grant)
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
        assert_eq!(signer.verify(&token, now), Ok(g.clone()));
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
    }
}
