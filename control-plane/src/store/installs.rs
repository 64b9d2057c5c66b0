//! The install area: a tenant's installs of an extension version
//! (`tenant_extension_install`), their config rows and sealed secrets, as
//! [`InstallStore`]. Deleting an install takes everything hanging off it
//! (config, secrets, schedules, storage, per-install quotas) with it. Sealing
//! and opening secrets is the `seal` module's job: the store only keeps the
//! ciphertext.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ExtensionRow, ExtensionSelector, StoreResult, VersionRow};

/// `tenant_extension_install.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallStatus {
    Enabled,
    Disabled,
    Pending,
}

impl InstallStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InstallStatus::Enabled => "enabled",
            InstallStatus::Disabled => "disabled",
            InstallStatus::Pending => "pending",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "enabled" => Some(InstallStatus::Enabled),
            "disabled" => Some(InstallStatus::Disabled),
            "pending" => Some(InstallStatus::Pending),
            _ => None,
        }
    }
}

/// A `tenant_extension_install` row with its config row's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallRow {
    pub id: Uuid,
    pub tenant_id: String,
    pub registry_id: Uuid,
    pub version_id: Uuid,
    pub granted_caps: Vec<String>,
    pub enabled: bool,
    pub status: InstallStatus,
    pub egress_allowlist: Vec<String>,
    pub config: BTreeMap<String, String>,
    pub config_version: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl InstallRow {
    /// Active as Alga's gateway means it: `is_enabled` and `status='enabled'`.
    pub fn is_active(&self) -> bool {
        self.enabled && self.status == InstallStatus::Enabled
    }
}

/// A `tenant_extension_install_secrets` row: the sealed secret map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsRow {
    pub ciphertext: String,
    /// `annex-aead:v1` for Annex-sealed rows, `inline/base64` for Alga's.
    pub algorithm: String,
    pub key_path: Option<String>,
    pub mount: Option<String>,
    pub version: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl SecretsRow {
    /// Whether the secrets expired at or before `now` (never, without an
    /// `expires_at`).
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// An install with everything a resolve needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallView {
    pub install: InstallRow,
    pub extension: ExtensionRow,
    pub version: VersionRow,
    pub secrets: Option<SecretsRow>,
}

/// The values an install or re-install writes. A re-install of the same
/// (tenant, registry) keeps the install id and secrets, resets config to
/// `config`, moves to `version_id` and re-enables the install.
#[derive(Debug, Clone)]
pub struct NewInstall {
    pub tenant_id: String,
    pub registry_id: Uuid,
    pub version_id: Uuid,
    pub granted_caps: Vec<String>,
    pub config: BTreeMap<String, String>,
    pub egress_allowlist: Vec<String>,
}

/// Installs with their config and sealed secrets.
#[async_trait]
pub trait InstallStore: Send + Sync {
    /// Installs or re-installs (see [`NewInstall`]); each call writes a new
    /// config version. NotFound when `version_id` is not a version of `registry_id`.
    async fn upsert_install(&self, new: NewInstall) -> StoreResult<InstallRow>;
    /// Moves an install to another version of the same extension with new
    /// grants; config and its version are kept. NotFound when the install is
    /// absent or the version belongs to another extension.
    async fn set_install_version(
        &self,
        install_id: Uuid,
        version_id: Uuid,
        granted_caps: Vec<String>,
    ) -> StoreResult<InstallRow>;
    /// Sets `is_enabled` and `status` (`enabled`/`disabled`) together; NotFound when absent.
    async fn set_install_enabled(&self, install_id: Uuid, enabled: bool)
    -> StoreResult<InstallRow>;
    /// Deletes the install with its config, secrets, schedules, storage rows
    /// and per-install quota; false when absent.
    async fn delete_install(&self, install_id: Uuid) -> StoreResult<bool>;
    /// Finds the tenant's install by install id, registry id or slug, active or
    /// not (callers check [`InstallRow::is_active`]). Another tenant's install
    /// is never returned.
    async fn find_install(
        &self,
        tenant_id: &str,
        selector: &ExtensionSelector,
    ) -> StoreResult<Option<InstallView>>;
    /// The tenant's installs, ordered by publisher, name.
    async fn list_installs(&self, tenant_id: &str) -> StoreResult<Vec<InstallView>>;
    /// Replaces the config map and writes a new config version; NotFound when absent.
    async fn set_install_config(
        &self,
        install_id: Uuid,
        config: BTreeMap<String, String>,
    ) -> StoreResult<InstallRow>;
    /// Writes (or with `None` deletes) the sealed secrets row; NotFound when
    /// the install is absent.
    async fn set_install_secrets(
        &self,
        install_id: Uuid,
        secrets: Option<SecretsRow>,
    ) -> StoreResult<()>;
}
