//! Per-tenant installs: install, upgrade, uninstall, enable and disable;
//! capability grants; config; sealed secrets; and resolve, which turns
//! (tenant, install id | registry id | slug) into the active install with what
//! an execution needs.
//!
//! A version's signature is checked again at install and upgrade: a key that
//! was revoked or expired since publish blocks new installs of its bundles.
//!
//! [`Installs`] owns the key-encryption key's uses for installs (sealing and
//! opening secrets, signing execution grants) and the invalidation broadcast
//! edges follow; every change it makes is announced there. It does not run
//! executions or decide placement (it only asks [`Fleet`] to place a new
//! bundle early).

use std::collections::BTreeMap;
use std::sync::Arc;

use annex_proto::domain::TenantId;
use annex_proto::pb::InstallInvalidation;
use annex_proto::{AnnexError, ErrorCode};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::active_installs::ActiveInstalls;
use crate::egress::EgressEntry;
use crate::fleet::Fleet;
use crate::grant::{GRANT_TTL, Grant, VerifiedGrant};
use crate::metrics::Metrics;
use crate::registry::{Registry, selector};
use crate::seal::{self, Sealer};
use crate::store::{ExtensionSelector, InstallView, NewInstall, SecretsRow, Store};
use crate::trust::Trust;

/// An install request, validated.
#[derive(Debug, Clone)]
pub(crate) struct InstallSpec {
    pub(crate) tenant: TenantId,
    pub(crate) extension: String,
    /// None: the newest version that is not deprecated.
    pub(crate) version: Option<String>,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) egress_allowlist: Vec<String>,
}

/// A secrets update, validated.
#[derive(Debug, Clone)]
pub(crate) struct SecretsUpdate {
    pub(crate) values: BTreeMap<String, String>,
    pub(crate) clear: bool,
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

/// Install changes wait for slow routes streams in a broadcast of this many; a
/// stream further behind skips the oldest.
const INVALIDATION_BUFFER: usize = 1024;

/// The install lifecycle, secrets and execution grants.
pub(crate) struct Installs {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    registry: Arc<Registry>,
    trust: Arc<Trust>,
    fleet: Arc<Fleet>,
    /// Hosts installs may be allowed to reach (see [`crate::Limits`]).
    platform_egress_allowlist: Vec<String>,
    metrics: Arc<Metrics>,
    /// Install changes, for edges following `Dispatch.WatchRoutes`.
    invalidations: tokio::sync::broadcast::Sender<InstallInvalidation>,
    /// Host calls' "is the grant's install active" answers, briefly.
    active: ActiveInstalls,
}

/// What [`Installs`] works with besides the store.
pub(crate) struct InstallsParts {
    pub(crate) sealer: Arc<Sealer>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) trust: Arc<Trust>,
    pub(crate) fleet: Arc<Fleet>,
    pub(crate) platform_egress_allowlist: Vec<String>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Installs {
    pub(crate) fn new(store: Arc<dyn Store>, parts: InstallsParts) -> Installs {
        let (invalidations, _) = tokio::sync::broadcast::channel(INVALIDATION_BUFFER);
        Installs {
            store,
            sealer: parts.sealer,
            registry: parts.registry,
            trust: parts.trust,
            fleet: parts.fleet,
            platform_egress_allowlist: parts.platform_egress_allowlist,
            metrics: parts.metrics,
            invalidations,
            active: ActiveInstalls::default(),
        }
    }

    /// Follows install changes from now on.
    pub(crate) fn invalidations(&self) -> tokio::sync::broadcast::Receiver<InstallInvalidation> {
        self.invalidations.subscribe()
    }

    pub(crate) async fn install(&self, spec: InstallSpec) -> Result<InstallView, AnnexError> {
        let ext = self.registry.find_extension(&spec.extension).await?;
        let version = match spec
            .version
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            Some(v) => {
                let version = self.registry.find_version(&ext.id.to_string(), v).await?;
                if version.deprecated {
                    return Err(AnnexError::new(
                        ErrorCode::VersionDeprecated,
                        format!("version {v} is deprecated and cannot be installed"),
                    ));
                }
                version
            }
            None => self
                .store
                .list_versions(ext.id)
                .await?
                .into_iter()
                .find(|v| !v.deprecated)
                .ok_or_else(|| {
                    AnnexError::new(
                        ErrorCode::VersionNotFound,
                        format!("{} has no installable version", ext.slug()),
                    )
                })?,
        };
        self.trust.verify_version(&version).await?;
        let egress_allowlist = self.check_egress(spec.egress_allowlist)?;
        let row = self
            .store
            .upsert_install(NewInstall {
                tenant_id: spec.tenant.to_string(),
                registry_id: ext.id,
                version_id: version.id,
                granted_caps: annex_bundle::capability::granted(&version.capabilities)
                    .map_err(|e| AnnexError::new(ErrorCode::InvalidManifest, e.to_string()))?,
                config: spec.config,
                egress_allowlist,
            })
            .await?;
        tracing::info!(
            tenant = %spec.tenant, install = %row.id, extension = %ext.id,
            version = %version.version, "extension installed"
        );
        self.changed("install", &row.tenant_id, row.id, row.registry_id);
        self.prewarm(&version.bundle.content_hash).await;
        self.view(&spec.tenant, &row.id.to_string()).await
    }

    pub(crate) async fn upgrade(
        &self,
        tenant: &TenantId,
        extension: &str,
        version: &str,
        disable_missing_schedules: bool,
    ) -> Result<InstallView, AnnexError> {
        let current = self.view(tenant, extension).await?;
        let target = self
            .registry
            .find_version(&current.extension.id.to_string(), version)
            .await?;
        self.trust.verify_version(&target).await?;
        // Decided before anything is written: a refused remap leaves the install as it was.
        let remaps = crate::scheduler::plan_remap(
            self.store.as_ref(),
            &current,
            &target,
            disable_missing_schedules,
        )
        .await?;
        let row = self
            .store
            .set_install_version(
                current.install.id,
                target.id,
                annex_bundle::capability::granted(&target.capabilities)
                    .map_err(|e| AnnexError::new(ErrorCode::InvalidManifest, e.to_string()))?,
            )
            .await?;
        self.store
            .remap_schedules(&row.tenant_id, row.id, remaps)
            .await?;
        tracing::info!(
            tenant = %tenant, install = %row.id, from = %current.version.version,
            to = %target.version, "install upgraded"
        );
        self.changed("upgrade", &row.tenant_id, row.id, row.registry_id);
        self.prewarm(&target.bundle.content_hash).await;
        self.view(tenant, &row.id.to_string()).await
    }

    /// The checks an upgrade of `view` to `target` makes before writing:
    /// the signature holds, the manifest's grants are valid and the
    /// install's schedules map onto the version (or may be disabled).
    pub(crate) async fn check_upgrade(
        &self,
        view: &InstallView,
        target: &crate::store::VersionRow,
        disable_missing_schedules: bool,
    ) -> Result<(), AnnexError> {
        self.trust.verify_version(target).await?;
        annex_bundle::capability::granted(&target.capabilities)
            .map_err(|e| AnnexError::new(ErrorCode::InvalidManifest, e.to_string()))?;
        crate::scheduler::plan_remap(self.store.as_ref(), view, target, disable_missing_schedules)
            .await?;
        Ok(())
    }

    pub(crate) async fn uninstall(
        &self,
        tenant: &TenantId,
        extension: &str,
    ) -> Result<(), AnnexError> {
        let view = self.view(tenant, extension).await?;
        self.store.delete_install(view.install.id).await?;
        tracing::info!(tenant = %tenant, install = %view.install.id, "extension uninstalled");
        self.changed(
            "uninstall",
            &view.install.tenant_id,
            view.install.id,
            view.install.registry_id,
        );
        Ok(())
    }

    pub(crate) async fn set_enabled(
        &self,
        tenant: &TenantId,
        extension: &str,
        enabled: bool,
    ) -> Result<InstallView, AnnexError> {
        let view = self.view(tenant, extension).await?;
        let row = self
            .store
            .set_install_enabled(view.install.id, enabled)
            .await?;
        tracing::info!(tenant = %tenant, install = %row.id, enabled, "install toggled");
        self.changed("toggle", &row.tenant_id, row.id, row.registry_id);
        self.view(tenant, &row.id.to_string()).await
    }

    pub(crate) async fn set_config(
        &self,
        tenant: &TenantId,
        extension: &str,
        config: BTreeMap<String, String>,
    ) -> Result<InstallView, AnnexError> {
        let view = self.view(tenant, extension).await?;
        let row = self
            .store
            .set_install_config(view.install.id, config)
            .await?;
        self.changed("config", &row.tenant_id, row.id, row.registry_id);
        self.view(tenant, &row.id.to_string()).await
    }

    /// Merges `update` into the install's secrets (new values win, empty
    /// values are ignored, `clear` starts from nothing); an empty result
    /// deletes the row. Returns the new secrets version, if any.
    pub(crate) async fn set_secrets(
        &self,
        tenant: &TenantId,
        extension: &str,
        update: SecretsUpdate,
    ) -> Result<(InstallView, Option<String>), AnnexError> {
        let view = self.view(tenant, extension).await?;
        let install_id = view.install.id.to_string();
        let mut values = match (&view.secrets, update.clear) {
            (Some(s), false) => self.open_secrets(&install_id, s)?,
            _ => BTreeMap::new(),
        };
        values.extend(update.values.into_iter().filter(|(_, v)| !v.is_empty()));
        let row = if values.is_empty() {
            None
        } else {
            let ciphertext = self.sealer.seal(&install_id, &values).map_err(|e| {
                tracing::error!(install = %install_id, error = %e, "sealing secrets");
                AnnexError::internal()
            })?;
            Some(SecretsRow {
                ciphertext,
                algorithm: seal::ALGORITHM.to_owned(),
                key_path: None,
                mount: None,
                version: Uuid::new_v4().to_string(),
                expires_at: update.expires_at,
            })
        };
        let version = row.as_ref().map(|r| r.version.clone());
        self.store.set_install_secrets(view.install.id, row).await?;
        tracing::info!(tenant = %tenant, install = %install_id, keys = values.len(), "install secrets updated");
        self.changed(
            "secrets",
            &view.install.tenant_id,
            view.install.id,
            view.install.registry_id,
        );
        Ok((self.view(tenant, &install_id).await?, version))
    }

    /// The install's secret keys (never the values), their version and
    /// when they expire.
    pub(crate) async fn secret_keys(
        &self,
        tenant: &TenantId,
        extension: &str,
    ) -> Result<(Vec<String>, Option<String>, Option<DateTime<Utc>>), AnnexError> {
        let view = self.view(tenant, extension).await?;
        match &view.secrets {
            None => Ok((Vec::new(), None, None)),
            Some(s) => {
                let values = self.open_secrets(&view.install.id.to_string(), s)?;
                Ok((
                    values.into_keys().collect(),
                    Some(s.version.clone()),
                    s.expires_at,
                ))
            }
        }
    }

    /// Opens a secrets row (Annex-sealed or Alga inline).
    pub(crate) fn open_secrets(
        &self,
        install_id: &str,
        row: &SecretsRow,
    ) -> Result<BTreeMap<String, String>, AnnexError> {
        self.sealer
            .open(install_id, &row.algorithm, &row.ciphertext)
            .map_err(|e| {
                tracing::error!(install = %install_id, error = %e, "opening install secrets");
                AnnexError::new(ErrorCode::Internal, "secret_decrypt_failed")
            })
    }

    /// The tenant's install, active or not.
    pub(crate) async fn view(
        &self,
        tenant: &TenantId,
        extension: &str,
    ) -> Result<InstallView, AnnexError> {
        let sel = selector(extension)?;
        self.store
            .find_install(tenant.as_str(), &sel)
            .await?
            .ok_or_else(|| install_not_found(tenant, extension))
    }

    /// The tenant's active install (`is_enabled` and `status='enabled'`):
    /// what the edge executes. An inactive install answers as not found.
    pub(crate) async fn resolve(
        &self,
        tenant: &TenantId,
        extension: &str,
    ) -> Result<InstallView, AnnexError> {
        let view = self.view(tenant, extension).await?;
        if !view.install.is_active() {
            return Err(install_not_found(tenant, extension));
        }
        Ok(view)
    }

    /// Signs an execution grant for an install, valid for [`GRANT_TTL`].
    pub(crate) fn issue_grant(&self, view: &InstallView) -> (String, DateTime<Utc>) {
        let exp = Utc::now() + GRANT_TTL;
        let grant = Grant {
            tenant: view.install.tenant_id.clone(),
            install: view.install.id,
            registry: view.install.registry_id,
            version: view.install.version_id,
            caps: view.install.granted_caps.clone(),
            exp: exp.timestamp_millis(),
        };
        (self.sealer.grants().sign(&grant), exp)
    }

    /// The grant's install if it is still active (enabled, and the one the
    /// grant names); `None` otherwise. Each host service says in its own
    /// terms what an inactive install means for its call. Answers are kept
    /// for `active_installs::TTL` (a change through this replica is seen at
    /// once, through another within the TTL).
    pub(crate) async fn granted_install(
        &self,
        grant: &VerifiedGrant,
    ) -> Result<Option<InstallView>, AnnexError> {
        let (tenant, install) = (grant.tenant(), grant.install());
        if let Some(kept) = self.active.get(tenant, install) {
            return Ok(kept);
        }
        let generation = self.active.generation();
        let view = self
            .store
            .find_install(tenant, &ExtensionSelector::Id(install))
            .await?
            .filter(|v| v.install.id == install && v.install.is_active());
        self.active.put(generation, tenant, install, view.clone());
        Ok(view)
    }

    pub(crate) async fn list_installs(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<InstallView>, AnnexError> {
        Ok(self.store.list_installs(tenant.as_str()).await?)
    }

    /// Validates an install's egress entries (`host[:port]`, `*.suffix`,
    /// IP literals, `private:host[:port]`) against the platform allowlist;
    /// see [`crate::egress`].
    fn check_egress(&self, hosts: Vec<String>) -> Result<Vec<String>, AnnexError> {
        let platform = &self.platform_egress_allowlist;
        let mut out = Vec::new();
        for host in hosts {
            if host.trim().is_empty() {
                continue;
            }
            let entry = EgressEntry::parse(&host)
                .map_err(|e| AnnexError::invalid(format!("egress entry {e}")))?;
            let text = entry.to_text();
            if !platform.iter().any(|p| crate::egress::covers(p, &entry)) {
                return Err(AnnexError::new(
                    ErrorCode::PermissionDenied,
                    format!("egress entry {text} is outside the platform allowlist"),
                ));
            }
            out.push(text);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Places the bundle now, so the workers it is placed on (and only
    /// those) compile it before its first request. A failure is not the
    /// install's: the placement loop places it on its next round.
    async fn prewarm(&self, content_hash: &str) {
        if let Err(e) = self.fleet.place().await {
            tracing::warn!(%content_hash, error = %e, "placing a new bundle");
        }
    }

    /// Places bundles now (a rollout's canaries), as an install does.
    pub(crate) async fn prewarm_now(&self) {
        self.prewarm("rollout").await;
    }

    /// Announces a change to an install's routing made elsewhere (a
    /// rollout's weights): counted and broadcast like an install change.
    pub(crate) fn announce(&self, op: &str, tenant: &str, install: Uuid, registry: Uuid) {
        self.changed(op, tenant, install, registry);
    }

    /// The install's capture policy changed: following edges drop their
    /// cached resolutions, so the next calls carry the new settings.
    pub(crate) fn policy_changed(&self, tenant: &str, install: Uuid, registry: Uuid) {
        self.changed("capture", tenant, install, registry);
    }

    /// The key-encryption key's sealer (captures seal with it too).
    pub(crate) fn sealer(&self) -> Arc<Sealer> {
        self.sealer.clone()
    }

    /// Counts the change and tells following edges to drop cached resolutions.
    fn changed(&self, op: &str, tenant: &str, install: Uuid, registry: Uuid) {
        self.metrics.install_change(op);
        self.active.changed(tenant, install);
        // No edge listening is fine.
        let _ = self.invalidations.send(InstallInvalidation {
            tenant_id: tenant.to_owned(),
            install_id: install.to_string(),
            registry_id: registry.to_string(),
        });
    }
}

fn install_not_found(tenant: &TenantId, extension: &str) -> AnnexError {
    AnnexError::new(
        ErrorCode::InstallNotFound,
        format!("tenant {tenant} has no install of {extension}"),
    )
}
