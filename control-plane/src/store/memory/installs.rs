//! Installs in memory with their config and sealed secrets. Deleting an
//! install removes everything hanging off it in every area (secrets,
//! schedules, storage, per-install quotas), as Postgres's cascades do.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use uuid::Uuid;

use super::registry::Registry;
use super::{MemoryStore, micros};
use crate::store::{
    ExtensionSelector, InstallRow, InstallStatus, InstallStore, InstallView, NewInstall,
    SecretsRow, StoreError, StoreResult, slug,
};

/// `tenant_extension_install` (with its config row) and
/// `tenant_extension_install_secrets`.
#[derive(Default)]
pub(super) struct Installs {
    pub(super) rows: HashMap<Uuid, InstallRow>,
    secrets: HashMap<Uuid, SecretsRow>,
}

impl Installs {
    fn row_mut(&mut self, install_id: Uuid) -> StoreResult<&mut InstallRow> {
        self.rows
            .get_mut(&install_id)
            .ok_or_else(|| StoreError::NotFound(format!("install {install_id}")))
    }

    /// NotFound when the install is absent.
    pub(super) fn require(&self, install_id: Uuid) -> StoreResult<&InstallRow> {
        self.rows
            .get(&install_id)
            .ok_or_else(|| StoreError::NotFound(format!("install {install_id}")))
    }

    fn view(&self, registry: &Registry, install: &InstallRow) -> StoreResult<InstallView> {
        let extension = registry
            .extensions
            .get(&install.registry_id)
            .ok_or_else(|| {
                StoreError::Internal(format!("install {} has no extension row", install.id))
            })?;
        let version = registry.versions.get(&install.version_id).ok_or_else(|| {
            StoreError::Internal(format!("install {} has no version row", install.id))
        })?;
        Ok(InstallView {
            install: install.clone(),
            extension: extension.clone(),
            version: version.clone(),
            secrets: self.secrets.get(&install.id).cloned(),
        })
    }
}

#[async_trait]
impl InstallStore for MemoryStore {
    async fn upsert_install(&self, new: NewInstall) -> StoreResult<InstallRow> {
        let mut state = self.lock();
        state
            .registry
            .version_of_extension(new.version_id, new.registry_id)?;
        let now = state.now();
        let existing = state
            .installs
            .rows
            .values()
            .find(|i| i.tenant_id == new.tenant_id && i.registry_id == new.registry_id)
            .map(|i| (i.id, i.created_at));
        let (id, created_at) = existing.unwrap_or_else(|| (Uuid::new_v4(), now));
        let row = InstallRow {
            id,
            tenant_id: new.tenant_id,
            registry_id: new.registry_id,
            version_id: new.version_id,
            granted_caps: new.granted_caps,
            enabled: true,
            status: InstallStatus::Enabled,
            egress_allowlist: new.egress_allowlist,
            config: new.config,
            config_version: Uuid::new_v4().to_string(),
            created_at,
            updated_at: now,
        };
        state.installs.rows.insert(id, row.clone());
        Ok(row)
    }

    async fn set_install_version(
        &self,
        install_id: Uuid,
        version_id: Uuid,
        granted_caps: Vec<String>,
    ) -> StoreResult<InstallRow> {
        let mut state = self.lock();
        let registry_id = state.installs.require(install_id)?.registry_id;
        state
            .registry
            .version_of_extension(version_id, registry_id)?;
        let now = state.now();
        let install = state.installs.row_mut(install_id)?;
        install.version_id = version_id;
        install.granted_caps = granted_caps;
        install.updated_at = now;
        Ok(install.clone())
    }

    async fn set_install_enabled(
        &self,
        install_id: Uuid,
        enabled: bool,
    ) -> StoreResult<InstallRow> {
        let mut state = self.lock();
        let now = state.now();
        let install = state.installs.row_mut(install_id)?;
        install.enabled = enabled;
        install.status = if enabled {
            InstallStatus::Enabled
        } else {
            InstallStatus::Disabled
        };
        install.updated_at = now;
        Ok(install.clone())
    }

    async fn delete_install(&self, install_id: Uuid) -> StoreResult<bool> {
        let mut state = self.lock();
        // What the foreign keys' cascades do in Postgres.
        state.installs.secrets.remove(&install_id);
        state.schedules.delete_install(install_id);
        state.kv.delete_install(install_id);
        state.quotas.delete_install(install_id);
        state.rollouts.delete_install(install_id);
        Ok(state.installs.rows.remove(&install_id).is_some())
    }

    async fn find_install(
        &self,
        tenant_id: &str,
        selector: &ExtensionSelector,
    ) -> StoreResult<Option<InstallView>> {
        let state = self.lock();
        let (installs, registry) = (&state.installs, &state.registry);
        let mut own = installs.rows.values().filter(|i| i.tenant_id == tenant_id);
        let found = match selector {
            ExtensionSelector::Id(id) => installs
                .rows
                .get(id)
                .filter(|i| i.tenant_id == tenant_id)
                .or_else(|| own.find(|i| i.registry_id == *id)),
            ExtensionSelector::Slug(wanted) => {
                let wanted = wanted.to_lowercase();
                own.filter_map(|i| registry.extensions.get(&i.registry_id).map(|e| (e, i)))
                    .filter(|(e, _)| slug(&e.publisher, &e.name) == wanted)
                    .min_by_key(|(e, _)| (e.created_at, e.id))
                    .map(|(_, i)| i)
            }
        };
        found.map(|i| installs.view(registry, i)).transpose()
    }

    async fn list_installs(&self, tenant_id: &str) -> StoreResult<Vec<InstallView>> {
        let state = self.lock();
        let (installs, registry) = (&state.installs, &state.registry);
        let mut views = installs
            .rows
            .values()
            .filter(|i| i.tenant_id == tenant_id)
            .map(|i| installs.view(registry, i))
            .collect::<StoreResult<Vec<_>>>()?;
        views.sort_by(|a, b| {
            (&a.extension.publisher, &a.extension.name)
                .cmp(&(&b.extension.publisher, &b.extension.name))
        });
        Ok(views)
    }

    async fn set_install_config(
        &self,
        install_id: Uuid,
        config: BTreeMap<String, String>,
    ) -> StoreResult<InstallRow> {
        let mut state = self.lock();
        let now = state.now();
        let install = state.installs.row_mut(install_id)?;
        install.config = config;
        install.config_version = Uuid::new_v4().to_string();
        install.updated_at = now;
        Ok(install.clone())
    }

    async fn set_install_secrets(
        &self,
        install_id: Uuid,
        secrets: Option<SecretsRow>,
    ) -> StoreResult<()> {
        let mut state = self.lock();
        state.installs.require(install_id)?;
        match secrets {
            Some(row) => {
                let row = SecretsRow {
                    expires_at: row.expires_at.map(micros),
                    ..row
                };
                state.installs.secrets.insert(install_id, row)
            }
            None => state.installs.secrets.remove(&install_id),
        };
        Ok(())
    }
}
