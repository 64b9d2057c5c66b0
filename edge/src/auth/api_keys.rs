//! Tenant API keys (`x-api-key`): checked by the control plane's
//! `Dispatch.AuthenticateApiKey`, cached here for a short time keyed by the
//! SHA-256 of the secret (the secret itself is never kept). Refusals are
//! cached more briefly, so a revoked key stops working within the TTL and a
//! flood of bad keys does not become a flood of control-plane calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annex_ops::upstream::Upstream;
use annex_proto::pb;
use annex_proto::pb::dispatch_client::DispatchClient;
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

use super::{AuthError, Permissions, Principal, PrincipalKind};

/// Entries kept before the cache is cleared wholesale; keys are few per tenant.
const MAX_ENTRIES: usize = 10_000;

/// When a check was made and its answer (`None`: refused).
type Cached = (Instant, Option<Principal>);

#[derive(Clone)]
pub(crate) struct ApiKeyCache {
    client: DispatchClient<Upstream>,
    ttl: Duration,
    negative_ttl: Duration,
    entries: Arc<Mutex<HashMap<[u8; 32], Cached>>>,
}

impl std::fmt::Debug for ApiKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl ApiKeyCache {
    pub(crate) fn new(client: DispatchClient<Upstream>, ttl: Duration) -> ApiKeyCache {
        ApiKeyCache {
            client,
            ttl,
            negative_ttl: ttl.min(Duration::from_secs(5)),
            entries: Arc::default(),
        }
    }

    pub(crate) async fn authenticate(&self, secret: &str) -> Result<Principal, AuthError> {
        if secret.is_empty() {
            return Err(AuthError::NoSession);
        }
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Some((at, cached)) = self.entries.lock().get(&digest).cloned() {
            let ttl = if cached.is_some() {
                self.ttl
            } else {
                self.negative_ttl
            };
            if at.elapsed() < ttl {
                return cached.ok_or(AuthError::NoSession);
            }
        }
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
                if key.tenant_id.trim().is_empty() {
                    None
                } else {
                    Some(Principal {
                        tenant: key.tenant_id,
                        permissions: Permissions::from_names(&key.permissions),
                        kind: PrincipalKind::ApiKey { key_id: key.key_id },
                    })
                }
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
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(digest, (Instant::now(), principal.clone()));
        principal.ok_or(AuthError::NoSession)
    }
}
