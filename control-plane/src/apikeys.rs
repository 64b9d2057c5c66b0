//! Per-tenant API keys for service clients of the edge (`x-api-key`), and the
//! execution audit rows edges send in batches.
//!
//! A key's secret is `annex_<key id>_<43 random base64url chars>`, shown once
//! at creation; the store keeps only its SHA-256.
//!
//! [`ApiKeys`] and [`Audit`] hold nothing but the store handle; neither
//! decides what a key may do at the edge.

use std::sync::Arc;

use annex_proto::domain::TenantId;
use annex_proto::pb;
use annex_proto::{AnnexError, ErrorCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{TimeZone, Utc};
use ring::rand::SecureRandom as _;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::store::{ApiKeyRow, ExecutionRow, Store};

/// Permissions a key may carry.
const PERMISSIONS: [&str; 2] = ["extension:read", "extension:write"];

/// Most audit rows accepted in one batch.
const MAX_BATCH: usize = 1_000;

/// Per-tenant API keys.
pub(crate) struct ApiKeys {
    store: Arc<dyn Store>,
}

/// The execution log rows edges ship.
pub(crate) struct Audit {
    store: Arc<dyn Store>,
}

impl ApiKeys {
    pub(crate) fn new(store: Arc<dyn Store>) -> ApiKeys {
        ApiKeys { store }
    }

    /// Creates a key; returns the row and the secret (shown once).
    pub(crate) async fn create(
        &self,
        tenant: &TenantId,
        name: &str,
        permissions: Vec<String>,
    ) -> Result<(ApiKeyRow, String), AnnexError> {
        let name = annex_proto::domain::required("name", name)?.to_owned();
        let mut perms = Vec::new();
        for p in permissions {
            let p = p.trim().to_lowercase();
            if !PERMISSIONS.contains(&p.as_str()) {
                return Err(AnnexError::invalid(format!(
                    "unknown permission {p:?}; use extension:read or extension:write"
                )));
            }
            perms.push(p);
        }
        perms.sort();
        perms.dedup();
        if perms.is_empty() {
            perms.push("extension:read".into());
        }
        let id = Uuid::new_v4();
        let mut random = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| AnnexError::internal())?;
        let secret = format!("annex_{}_{}", id.simple(), B64URL.encode(random));
        let row = ApiKeyRow {
            id,
            tenant_id: tenant.to_string(),
            name,
            permissions: perms,
            secret_sha256: Sha256::digest(secret.as_bytes()).to_vec(),
            created_at: Utc::now(),
            revoked_at: None,
        };
        let row = self.store.create_api_key(row).await?;
        tracing::info!(tenant = %tenant, key = %row.id, "API key created");
        Ok((row, secret))
    }

    pub(crate) async fn list(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRow>, AnnexError> {
        Ok(self.store.list_api_keys(tenant.as_str()).await?)
    }

    pub(crate) async fn revoke(&self, tenant: &TenantId, id: &str) -> Result<(), AnnexError> {
        let id = Uuid::parse_str(id.trim())
            .map_err(|_| AnnexError::invalid("id must be a key id (UUID)"))?;
        if !self.store.revoke_api_key(tenant.as_str(), id).await? {
            return Err(AnnexError::new(ErrorCode::NotFound, "no such API key"));
        }
        tracing::info!(tenant = %tenant, key = %id, "API key revoked");
        Ok(())
    }

    /// The key a secret belongs to, if it is known and not revoked.
    pub(crate) async fn authenticate(&self, secret: &str) -> Result<ApiKeyRow, AnnexError> {
        let denied = || AnnexError::new(ErrorCode::Unauthenticated, "unknown or revoked API key");
        let id = api_key_id(secret).ok_or_else(denied)?;
        let row = self.store.find_api_key(id).await?.ok_or_else(denied)?;
        let digest = Sha256::digest(secret.trim().as_bytes());
        if row.revoked_at.is_some() || digest.as_slice() != row.secret_sha256.as_slice() {
            return Err(denied());
        }
        Ok(row)
    }
}

impl Audit {
    pub(crate) fn new(store: Arc<dyn Store>) -> Audit {
        Audit { store }
    }

    /// Stores audit rows from an edge.
    pub(crate) async fn record_executions(
        &self,
        records: Vec<pb::ExecutionRecord>,
    ) -> Result<(), AnnexError> {
        if records.len() > MAX_BATCH {
            return Err(AnnexError::new(
                ErrorCode::LimitExceeded,
                format!("at most {MAX_BATCH} execution records per batch"),
            ));
        }
        let mut rows = Vec::with_capacity(records.len());
        for r in records {
            let uuid = |field: &str, v: &str| {
                Uuid::parse_str(v)
                    .map_err(|_| AnnexError::invalid(format!("{field} must be a UUID")))
            };
            let at = |ms: i64| Utc.timestamp_millis_opt(ms).single();
            let metrics = if r.metrics_json.trim().is_empty() {
                serde_json::json!({})
            } else {
                serde_json::from_str(&r.metrics_json)
                    .map_err(|_| AnnexError::invalid("metrics_json is not JSON"))?
            };
            rows.push(ExecutionRow {
                id: if r.id.is_empty() {
                    Uuid::new_v4()
                } else {
                    uuid("id", &r.id)?
                },
                tenant_id: TenantId::parse(&r.tenant_id)?.to_string(),
                registry_id: uuid("registry_id", &r.registry_id)?,
                version_id: uuid("version_id", &r.version_id)?,
                request_id: Some(r.request_id).filter(|s| !s.is_empty()),
                started_at: at(r.started_at_ms)
                    .ok_or_else(|| AnnexError::invalid("started_at_ms out of range"))?,
                finished_at: Some(r.finished_at_ms).filter(|ms| *ms > 0).and_then(at),
                status: annex_proto::domain::required("status", &r.status)?.to_owned(),
                metrics,
                error: Some(r.error).filter(|s| !s.is_empty()),
            });
        }
        self.store.record_executions(rows).await?;
        Ok(())
    }
}

/// The key id a presented secret names (`annex_<key id>_<random>`), if it
/// has that shape. Only a lookup hint: the secret's digest decides.
pub fn api_key_id(secret: &str) -> Option<Uuid> {
    secret
        .trim()
        .strip_prefix("annex_")
        .and_then(|rest| rest.split_once('_'))
        .and_then(|(id, _)| Uuid::parse_str(id).ok())
}
