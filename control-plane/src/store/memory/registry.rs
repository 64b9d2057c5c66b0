//! Extensions and versions in memory. A publish holds the store's lock from
//! the duplicate check to the insert, so versions of one extension are written
//! one at a time, as under the registry row's lock in Postgres.

use std::collections::HashMap;

use async_trait::async_trait;
use uuid::Uuid;

use super::MemoryStore;
use crate::store::{
    BundleRow, ExtensionRow, ExtensionSelector, NewVersion, RegistryStore, StoreError, StoreResult,
    VersionRow, VersionSpec, resolve_wildcard,
};

/// `extension_registry` and `extension_version` with each version's bundle.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) extensions: HashMap<Uuid, ExtensionRow>,
    pub(super) versions: HashMap<Uuid, VersionRow>,
}

impl Registry {
    fn extension_by_name(&self, publisher: &str, name: &str) -> Option<&ExtensionRow> {
        self.extensions
            .values()
            .find(|e| e.publisher == publisher && e.name == name)
    }

    /// The oldest extension with this slug (slugs of distinct extensions can collide).
    fn extension_by_slug(&self, wanted: &str) -> Option<&ExtensionRow> {
        let wanted = wanted.to_lowercase();
        self.extensions
            .values()
            .filter(|e| e.slug() == wanted)
            .min_by_key(|e| (e.created_at, e.id))
    }

    fn versions_of(&self, registry_id: Uuid) -> impl Iterator<Item = &VersionRow> {
        self.versions
            .values()
            .filter(move |v| v.registry_id == registry_id)
    }

    /// The version when it belongs to the extension; NotFound otherwise.
    pub(super) fn version_of_extension(
        &self,
        version_id: Uuid,
        registry_id: Uuid,
    ) -> StoreResult<&VersionRow> {
        self.versions
            .get(&version_id)
            .filter(|v| v.registry_id == registry_id)
            .ok_or_else(|| {
                StoreError::NotFound(format!("version {version_id} of extension {registry_id}"))
            })
    }
}

#[async_trait]
impl RegistryStore for MemoryStore {
    async fn publish_version(&self, new: NewVersion) -> StoreResult<(ExtensionRow, VersionRow)> {
        let mut state = self.lock();
        let registry = &state.registry;
        let existing = registry
            .extension_by_name(&new.publisher, &new.name)
            .cloned();
        let version = match &new.version {
            VersionSpec::Exact(v) => v.clone(),
            VersionSpec::Wildcard { major, minor } => {
                let taken = existing
                    .iter()
                    .flat_map(|e| registry.versions_of(e.id).map(|v| v.version.as_str()));
                resolve_wildcard(*major, *minor, taken)
            }
        };
        if let Some(e) = &existing
            && registry.versions_of(e.id).any(|v| v.version == version)
        {
            return Err(StoreError::VersionExists { version });
        }

        let extension = match existing {
            Some(e) => e,
            None => {
                let created_at = state.now();
                let e = ExtensionRow {
                    id: Uuid::new_v4(),
                    publisher: new.publisher,
                    name: new.name,
                    created_at,
                };
                state.registry.extensions.insert(e.id, e.clone());
                e
            }
        };
        let created_at = state.now();
        let version_id = Uuid::new_v4();
        let row = VersionRow {
            id: version_id,
            registry_id: extension.id,
            publisher: extension.publisher.clone(),
            name: extension.name.clone(),
            version,
            manifest_version: new.version.as_written(),
            runtime: new.runtime,
            main_entry: new.main_entry,
            endpoints: new.endpoints,
            ui: new.ui,
            capabilities: new.capabilities,
            deprecated: false,
            deprecation_reason: None,
            created_at,
            bundle: BundleRow {
                id: Uuid::new_v4(),
                version_id,
                content_hash: new.content_hash,
                signature: new.signature,
                signing_key_id: new.signing_key_id,
                size_bytes: new.size_bytes,
                created_at,
            },
        };
        state.registry.versions.insert(version_id, row.clone());
        Ok((extension, row))
    }

    async fn list_extensions(&self) -> StoreResult<Vec<ExtensionRow>> {
        let state = self.lock();
        let mut all: Vec<ExtensionRow> = state.registry.extensions.values().cloned().collect();
        all.sort_by(|a, b| (&a.publisher, &a.name).cmp(&(&b.publisher, &b.name)));
        Ok(all)
    }

    async fn get_extension(
        &self,
        selector: &ExtensionSelector,
    ) -> StoreResult<Option<ExtensionRow>> {
        let state = self.lock();
        Ok(match selector {
            ExtensionSelector::Id(id) => state.registry.extensions.get(id).cloned(),
            ExtensionSelector::Slug(s) => state.registry.extension_by_slug(s).cloned(),
        })
    }

    async fn list_versions(&self, registry_id: Uuid) -> StoreResult<Vec<VersionRow>> {
        let state = self.lock();
        let mut all: Vec<VersionRow> = state.registry.versions_of(registry_id).cloned().collect();
        all.sort_by_key(|v| std::cmp::Reverse((v.created_at, v.id)));
        Ok(all)
    }

    async fn get_version(
        &self,
        registry_id: Uuid,
        version: &str,
    ) -> StoreResult<Option<VersionRow>> {
        let state = self.lock();
        Ok(state
            .registry
            .versions_of(registry_id)
            .find(|v| v.version == version)
            .cloned())
    }

    async fn get_version_by_id(&self, version_id: Uuid) -> StoreResult<Option<VersionRow>> {
        Ok(self.lock().registry.versions.get(&version_id).cloned())
    }

    async fn deprecate_version(
        &self,
        registry_id: Uuid,
        version: &str,
        reason: &str,
    ) -> StoreResult<VersionRow> {
        let mut state = self.lock();
        let row = state
            .registry
            .versions
            .values_mut()
            .find(|v| v.registry_id == registry_id && v.version == version)
            .ok_or_else(|| StoreError::NotFound(format!("version {version}")))?;
        row.deprecated = true;
        row.deprecation_reason = Some(reason.to_owned());
        Ok(row.clone())
    }

    async fn version_by_content_hash(&self, content_hash: &str) -> StoreResult<Option<VersionRow>> {
        let state = self.lock();
        Ok(state
            .registry
            .versions
            .values()
            .filter(|v| v.bundle.content_hash == content_hash)
            .max_by_key(|v| (v.bundle.created_at, v.bundle.id))
            .cloned())
    }
}
