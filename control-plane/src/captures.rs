//! Capture and replay on the control plane (docs/design/replay.md): the
//! per-install capture policy operators start and stop (each change drops
//! the edges' cached resolutions, so the next calls carry it), the
//! settings sent to workers with each execution, the captures workers
//! record (size-capped, secrets sealed under the KEK bound to the capture
//! id, kept for the policy's retention and at most [`KEEP_PER_INSTALL`]
//! per install), and their reads by operators, every one recorded, with
//! secrets opened only when asked. Every read names a tenant; another
//! tenant's capture is not found.

use std::collections::BTreeMap;
use std::sync::Arc;

use annex_proto::domain::TenantId;
use annex_proto::pb;
use annex_proto::{AnnexError, ErrorCode};
use chrono::{Duration, Utc};
use uuid::Uuid;

use crate::grant::VerifiedGrant;
use crate::installs::Installs;
use crate::seal::Sealer;
use crate::store::{CaptureAccessRow, CapturePolicyRow, CaptureRow, Store};

/// Retention of a policy that names none.
pub(crate) const DEFAULT_RETENTION_HOURS: u32 = 72;
/// The longest retention a policy may ask for (30 days).
pub(crate) const MAX_RETENTION_HOURS: u32 = 720;
/// Tape size of a policy that names none.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;
/// The largest tape kept: a worker never ships more (its host-service
/// requests stay under 4 MiB).
pub(crate) const MAX_BYTES: u64 = 3 * 1024 * 1024;
/// Captures kept per install; a new one past it drops the oldest.
pub(crate) const KEEP_PER_INSTALL: u32 = 500;
/// Expired captures deleted per recorded capture (the sweep rides on
/// recording; nothing expired is ever shown).
const SWEEP_BATCH: u32 = 100;

/// What `annex capture start` asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PolicySpec {
    pub(crate) sample_ppm: u32,
    pub(crate) failures: bool,
    pub(crate) retention_hours: u32,
    pub(crate) max_bytes: u64,
}

/// One capture as an operator reads it.
pub(crate) struct ReadCapture {
    pub(crate) row: CaptureRow,
    /// Only when revealed.
    pub(crate) secrets: BTreeMap<String, String>,
}

pub(crate) struct Captures {
    store: Arc<dyn Store>,
    installs: Arc<Installs>,
    sealer: Arc<Sealer>,
}

fn not_found(id: &str) -> AnnexError {
    AnnexError::new(ErrorCode::NotFound, format!("capture {id} not found"))
}

impl Captures {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        installs: Arc<Installs>,
        sealer: Arc<Sealer>,
    ) -> Captures {
        Captures {
            store,
            installs,
            sealer,
        }
    }

    pub(crate) async fn start(
        &self,
        tenant: &TenantId,
        extension: &str,
        spec: PolicySpec,
    ) -> Result<CapturePolicyRow, AnnexError> {
        if spec.sample_ppm > 1_000_000 {
            return Err(AnnexError::invalid(
                "sample_ppm must be at most 1000000 (100 %)",
            ));
        }
        if spec.sample_ppm == 0 && !spec.failures {
            return Err(AnnexError::invalid(
                "a capture policy needs a sample above 0 or failures",
            ));
        }
        if spec.retention_hours > MAX_RETENTION_HOURS {
            return Err(AnnexError::invalid(format!(
                "retention is at most {MAX_RETENTION_HOURS} hours"
            )));
        }
        if spec.max_bytes > MAX_BYTES {
            return Err(AnnexError::invalid(format!(
                "a capture is at most {MAX_BYTES} bytes"
            )));
        }
        let view = self.installs.view(tenant, extension).await?;
        let row = self
            .store
            .set_capture_policy(CapturePolicyRow {
                tenant_id: tenant.to_string(),
                install_id: view.install.id,
                sample_ppm: spec.sample_ppm,
                failures: spec.failures,
                retention_hours: match spec.retention_hours {
                    0 => DEFAULT_RETENTION_HOURS,
                    h => h,
                },
                max_bytes: match spec.max_bytes {
                    0 => DEFAULT_MAX_BYTES,
                    b => b,
                },
                created_at: Utc::now(),
            })
            .await?;
        tracing::info!(tenant = %tenant, install = %view.install.id, sample_ppm = row.sample_ppm, failures = row.failures, "capture started");
        self.installs
            .policy_changed(tenant.as_str(), view.install.id, view.install.registry_id);
        Ok(row)
    }

    pub(crate) async fn stop(&self, tenant: &TenantId, extension: &str) -> Result<(), AnnexError> {
        let view = self.installs.view(tenant, extension).await?;
        if !self
            .store
            .delete_capture_policy(tenant.as_str(), view.install.id)
            .await?
        {
            return Err(AnnexError::new(
                ErrorCode::NotFound,
                format!("{extension} has no capture policy"),
            ));
        }
        tracing::info!(tenant = %tenant, install = %view.install.id, "capture stopped");
        self.installs
            .policy_changed(tenant.as_str(), view.install.id, view.install.registry_id);
        Ok(())
    }

    /// The settings a worker applies to a call of `install`; `None` when
    /// nothing is captured.
    pub(crate) async fn settings(
        &self,
        tenant: &str,
        install: Uuid,
        config_version: &str,
    ) -> Result<Option<pb::CaptureSettings>, AnnexError> {
        Ok(self
            .store
            .capture_policy(tenant, install)
            .await?
            .map(|p| pb::CaptureSettings {
                sample_ppm: p.sample_ppm,
                failures: p.failures,
                max_bytes: p.max_bytes,
                config_version: config_version.to_string(),
            }))
    }

    /// Stores a worker's capture for the grant's install, if that install
    /// captures: the tape within the policy's cap, the secrets sealed.
    pub(crate) async fn record(
        &self,
        grant: &VerifiedGrant,
        capture: pb::RecordCaptureRequest,
    ) -> Result<Uuid, AnnexError> {
        let (tenant, install) = (grant.tenant(), grant.install());
        let Some(policy) = self.store.capture_policy(tenant, install).await? else {
            return Err(AnnexError::new(
                ErrorCode::NotFound,
                "the install has no capture policy",
            ));
        };
        let size = capture.tape.len() as u64;
        if size > policy.max_bytes.min(MAX_BYTES) + 64 * 1024 {
            return Err(AnnexError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "a capture of this install is at most {} bytes",
                    policy.max_bytes
                ),
            ));
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(&capture.tape).is_err() {
            return Err(AnnexError::invalid("the capture's tape is not JSON"));
        }
        if !matches!(capture.reason.as_str(), "sampled" | "failure") {
            return Err(AnnexError::invalid(
                "capture reason must be sampled or failure",
            ));
        }
        let id = Uuid::now_v7();
        let secrets: BTreeMap<String, String> = capture.secrets.into_iter().collect();
        let sealed = if secrets.is_empty() {
            String::new()
        } else {
            self.sealer.seal(&seal_scope(id), &secrets).map_err(|e| {
                tracing::error!(error = %e, "sealing a capture's secrets failed");
                AnnexError::internal()
            })?
        };
        let now = Utc::now();
        let row = CaptureRow {
            id,
            tenant_id: tenant.to_string(),
            install_id: install,
            request_id: bounded(capture.request_id, 200),
            content_hash: bounded(capture.content_hash, 200),
            reason: capture.reason,
            outcome: bounded(capture.outcome, 16),
            status: capture.status,
            method: bounded(capture.method, 16),
            path: bounded(capture.path, 2048),
            size_bytes: size,
            secret_keys: secrets.keys().cloned().collect(),
            sealed_secrets: sealed,
            tape: capture.tape,
            created_at: now,
            expires_at: now + Duration::hours(i64::from(policy.retention_hours)),
        };
        self.store.insert_capture(row, KEEP_PER_INSTALL).await?;
        if let Err(e) = self.store.delete_expired_captures(now, SWEEP_BATCH).await {
            tracing::warn!(error = %e, "deleting expired captures failed");
        }
        Ok(id)
    }

    /// The tenant's captures (one install's when `extension` is set) and
    /// that install's policy.
    pub(crate) async fn list(
        &self,
        tenant: &TenantId,
        extension: &str,
        limit: u32,
    ) -> Result<(Vec<CaptureRow>, Option<CapturePolicyRow>), AnnexError> {
        let limit = match limit {
            0 => 50,
            n => n.min(500),
        };
        let install = if extension.trim().is_empty() {
            None
        } else {
            Some(self.installs.view(tenant, extension).await?.install.id)
        };
        let rows = self
            .store
            .list_captures(tenant.as_str(), install, Utc::now(), limit)
            .await?;
        let policy = match install {
            Some(id) => self.store.capture_policy(tenant.as_str(), id).await?,
            None => None,
        };
        Ok((rows, policy))
    }

    /// One capture of the tenant; its secrets opened only with `reveal`.
    /// Every read is recorded with `actor`.
    pub(crate) async fn get(
        &self,
        tenant: &TenantId,
        id: &str,
        reveal: bool,
        actor: &str,
    ) -> Result<ReadCapture, AnnexError> {
        let uuid = Uuid::parse_str(id.trim()).map_err(|_| not_found(id))?;
        let row = self
            .store
            .get_capture(tenant.as_str(), uuid, Utc::now())
            .await?
            .ok_or_else(|| not_found(id))?;
        let action = if reveal { "reveal" } else { "read" };
        self.store
            .record_capture_access(CaptureAccessRow {
                tenant_id: tenant.to_string(),
                capture_id: uuid,
                action: action.to_string(),
                actor: actor.to_string(),
                at: Utc::now(),
            })
            .await?;
        let secrets = if reveal && !row.sealed_secrets.is_empty() {
            tracing::info!(tenant = %tenant, capture = %uuid, actor, "capture secrets revealed");
            self.sealer
                .open(&seal_scope(uuid), crate::seal::ALGORITHM, &row.sealed_secrets)
                .map_err(|e| {
                    tracing::error!(error = %e, capture = %uuid, "opening a capture's secrets failed");
                    AnnexError::internal()
                })?
        } else {
            BTreeMap::new()
        };
        Ok(ReadCapture { row, secrets })
    }
}

/// What a capture's secrets are sealed to: a sealed map cannot be moved to
/// another capture or read as an install's secrets.
fn seal_scope(id: Uuid) -> String {
    format!("capture:{id}")
}

fn bounded(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
