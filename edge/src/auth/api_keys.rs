//! Tenant API keys (`x-api-key`): checked by the control plane's
//! `Dispatch.AuthenticateApiKey`, cached here for a short time keyed by the
//! SHA-256 of the secret (the secret itself is never kept). Refusals are
//! cached more briefly, so a revoked key stops working within the TTL.
//!
//! A header that is not shaped like a key (`annex_<32 hex>_<base64url>`)
//! is refused without asking anyone. A well-shaped key the cache does not
//! know spends a lookup from the client's budget ([`crate::clients`]), so a
//! flood of made-up keys does not become a flood of control-plane calls.
//! Answers and refusals are bounded by bytes separately (least recently
//! used first), so refusals never push out a working key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annex_ops::upstream::Upstream;
use annex_proto::pb;
use annex_proto::pb::dispatch_client::DispatchClient;
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest as _, Sha256};

use super::{AuthError, Credential, Permissions, Principal, PrincipalKind};
use crate::byte_lru::ByteLru;
use crate::clients::{ClientKey, Clients};

/// Refusals may hold this fraction (1/n) of the cache's bytes, on top.
const NEGATIVE_SHARE: usize = 4;

/// Longest secret part after the key id (the control plane mints 43).
const MAX_SECRET_PART: usize = 128;

/// Whether `secret` has the shape of a key the control plane mints:
/// `annex_`, the key id as 32 hex digits, `_`, 1–128 base64url characters.
pub(crate) fn well_formed(secret: &str) -> bool {
    let Some((id, rest)) = secret
        .strip_prefix("annex_")
        .and_then(|r| r.split_once('_'))
    else {
        return false;
    };
    id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && !rest.is_empty()
        && rest.len() <= MAX_SECRET_PART
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Answers (a principal) and refusals, by secret digest, each with the
/// instant it was learned.
struct Entries {
    known: ByteLru<[u8; 32], (Instant, Principal)>,
    refused: ByteLru<[u8; 32], Instant>,
}

#[derive(Clone)]
pub(crate) struct ApiKeyCache {
    client: DispatchClient<Upstream>,
    ttl: Duration,
    negative_ttl: Duration,
    entries: Arc<Mutex<Entries>>,
    clients: Arc<Clients>,
    /// The bytes held, for `annex_edge_api_key_cache_bytes`.
    bytes: Gauge,
}

impl std::fmt::Debug for ApiKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// What the cache is built from.
#[derive(Debug, Clone)]
pub(crate) struct ApiKeyCacheParts {
    pub client: DispatchClient<Upstream>,
    pub ttl: Duration,
    pub max_bytes: usize,
    pub clients: Arc<Clients>,
    pub bytes: Gauge,
}

impl ApiKeyCache {
    pub(crate) fn new(p: ApiKeyCacheParts) -> ApiKeyCache {
        ApiKeyCache {
            client: p.client,
            ttl: p.ttl,
            negative_ttl: p.ttl.min(Duration::from_secs(5)),
            entries: Arc::new(Mutex::new(Entries {
                known: ByteLru::new(p.max_bytes),
                refused: ByteLru::new(p.max_bytes / NEGATIVE_SHARE),
            })),
            clients: p.clients,
            bytes: p.bytes,
        }
    }

    pub(crate) async fn authenticate(
        &self,
        secret: &str,
        client: ClientKey,
    ) -> Result<Principal, AuthError> {
        if !well_formed(secret) {
            return Err(AuthError::NoSession);
        }
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Some(cached) = self.cached(&digest) {
            return cached;
        }
        self.clients
            .take_lookup(client)
            .map_err(AuthError::Limited)?;
        let answer = self
            .client
            .clone()
            .authenticate_api_key(annex_ops::trace_context::request(
                pb::AuthenticateApiKeyRequest {
                    secret: secret.to_owned(),
                },
            ))
            .await;
        let principal = match answer {
            Ok(r) => {
                let key = r.into_inner();
                crate::identifiers::is_tenant(&key.tenant_id).then(|| Principal {
                    tenant: key.tenant_id,
                    permissions: Permissions::from_names(&key.permissions),
                    kind: PrincipalKind::ApiKey { key_id: key.key_id },
                    via: Credential::ApiKey,
                })
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::PermissionDenied
                        | tonic::Code::Unauthenticated
                        | tonic::Code::NotFound
                        | tonic::Code::InvalidArgument
                ) =>
            {
                None
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "checking an API key failed");
                return Err(AuthError::Unavailable);
            }
        };
        self.remember(digest, principal.clone());
        principal.ok_or(AuthError::NoSession)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Result<Principal, AuthError>> {
        let mut entries = self.entries.lock();
        if let Some((at, p)) = entries.known.get(digest)
            && at.elapsed() < self.ttl
        {
            return Some(Ok(p.clone()));
        }
        entries
            .refused
            .peek(digest)
            .is_some_and(|at| at.elapsed() < self.negative_ttl)
            .then_some(Err(AuthError::NoSession))
    }

    fn remember(&self, digest: [u8; 32], principal: Option<Principal>) {
        let mut entries = self.entries.lock();
        let now = Instant::now();
        match principal {
            Some(p) => {
                let weight = std::mem::size_of::<([u8; 32], Instant, Principal)>()
                    + p.tenant.len()
                    + p.audit_id().len();
                entries.refused.retain(|k, _| *k != digest);
                entries.known.insert(digest, (now, p), weight);
            }
            None => {
                entries.known.retain(|k, _| *k != digest);
                entries
                    .refused
                    .insert(digest, now, std::mem::size_of::<([u8; 32], Instant)>());
            }
        }
        let bytes = entries.known.bytes() + entries.refused.bytes();
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_key_shaped_secrets_are_looked_up() {
        let id = "0123456789abcdef0123456789abcdef";
        assert!(well_formed(&format!("annex_{id}_AbC-d_9")));
        for bad in [
            String::new(),
            "annex_nope_nope".into(),
            format!("annex_{id}_"),
            format!("annex_{id}"),
            format!("annex_{id}_a b"),
            format!("annex_{id}_{}", "x".repeat(MAX_SECRET_PART + 1)),
            format!("other_{id}_abc"),
            format!("annex_{}_abc", "g".repeat(32)),
        ] {
            assert!(!well_formed(&bad), "{bad:?}");
        }
    }
}
