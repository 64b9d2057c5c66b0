//! [`MemoryStore`]: the [`Store`] on plain collections behind one mutex, for
//! unit tests and for `annex dev` when no Postgres binaries are installed.
//!
//! It keeps the semantics of [`super::PgStore`] exactly (the conformance suite
//! runs against both): one lock makes every operation a transaction, timestamps
//! have Postgres's microsecond resolution, and orderings compare bytes as
//! Postgres's `COLLATE "C"` does. Nothing survives the process.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;
use uuid::Uuid;

use super::{
    BundleRow, ExtensionRow, ExtensionSelector, InstallRow, InstallStatus, InstallView, KeyRow,
    NewInstall, NewVersion, SecretsRow, Store, StoreError, StoreResult, VersionRow, VersionSpec,
    resolve_wildcard, slug,
};

/// The in-memory store. Cheap to create; share it behind an `Arc`.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    runtime: super::memory_runtime::MemoryRuntime,
    quotas: super::memory_quota::MemoryQuotas,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Default)]
struct Inner {
    /// The last timestamp handed out; see [`Inner::now`].
    last_now: Option<DateTime<Utc>>,
    extensions: HashMap<Uuid, ExtensionRow>,
    versions: HashMap<Uuid, VersionRow>,
    blobs: HashMap<String, Bytes>,
    keys: BTreeMap<String, KeyRow>,
    trust_revision: u64,
    installs: HashMap<Uuid, InstallRow>,
    secrets: HashMap<Uuid, SecretsRow>,
    schedules: super::memory_schedules::MemorySchedules,
}

/// `t` at the resolution of a Postgres `timestamptz`.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

impl Inner {
    /// Now, truncated to microseconds like a Postgres `timestamptz`, and strictly
    /// after the previous call so "newest first" orderings never tie.
    fn now(&mut self) -> DateTime<Utc> {
        let wall = micros(Utc::now());
        let now = match self.last_now {
            Some(last) if wall <= last => last + TimeDelta::microseconds(1),
            _ => wall,
        };
        self.last_now = Some(now);
        now
    }

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

    fn version_of_extension(
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

    fn install_mut(&mut self, install_id: Uuid) -> StoreResult<&mut InstallRow> {
        self.installs
            .get_mut(&install_id)
            .ok_or_else(|| StoreError::NotFound(format!("install {install_id}")))
    }

    fn view(&self, install: &InstallRow) -> StoreResult<InstallView> {
        let extension = self.extensions.get(&install.registry_id).ok_or_else(|| {
            StoreError::Internal(format!("install {} has no extension row", install.id))
        })?;
        let version = self.versions.get(&install.version_id).ok_or_else(|| {
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
impl Store for MemoryStore {
    async fn publish_version(&self, new: NewVersion) -> StoreResult<(ExtensionRow, VersionRow)> {
        let mut inner = self.inner.lock();
        let existing = inner.extension_by_name(&new.publisher, &new.name).cloned();
        let version = match &new.version {
            VersionSpec::Exact(v) => v.clone(),
            VersionSpec::Wildcard { major, minor } => {
                let taken = existing
                    .iter()
                    .flat_map(|e| inner.versions_of(e.id).map(|v| v.version.as_str()));
                resolve_wildcard(*major, *minor, taken)
            }
        };
        if let Some(e) = &existing
            && inner.versions_of(e.id).any(|v| v.version == version)
        {
            return Err(StoreError::VersionExists { version });
        }

        let extension = match existing {
            Some(e) => e,
            None => {
                let created_at = inner.now();
                let e = ExtensionRow {
                    id: Uuid::new_v4(),
                    publisher: new.publisher,
                    name: new.name,
                    created_at,
                };
                inner.extensions.insert(e.id, e.clone());
                e
            }
        };
        let created_at = inner.now();
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
        inner.versions.insert(version_id, row.clone());
        Ok((extension, row))
    }

    async fn list_extensions(&self) -> StoreResult<Vec<ExtensionRow>> {
        let inner = self.inner.lock();
        let mut all: Vec<ExtensionRow> = inner.extensions.values().cloned().collect();
        all.sort_by(|a, b| (&a.publisher, &a.name).cmp(&(&b.publisher, &b.name)));
        Ok(all)
    }

    async fn get_extension(
        &self,
        selector: &ExtensionSelector,
    ) -> StoreResult<Option<ExtensionRow>> {
        let inner = self.inner.lock();
        Ok(match selector {
            ExtensionSelector::Id(id) => inner.extensions.get(id).cloned(),
            ExtensionSelector::Slug(s) => inner.extension_by_slug(s).cloned(),
        })
    }

    async fn list_versions(&self, registry_id: Uuid) -> StoreResult<Vec<VersionRow>> {
        let inner = self.inner.lock();
        let mut all: Vec<VersionRow> = inner.versions_of(registry_id).cloned().collect();
        all.sort_by_key(|v| std::cmp::Reverse((v.created_at, v.id)));
        Ok(all)
    }

    async fn get_version(
        &self,
        registry_id: Uuid,
        version: &str,
    ) -> StoreResult<Option<VersionRow>> {
        let inner = self.inner.lock();
        Ok(inner
            .versions_of(registry_id)
            .find(|v| v.version == version)
            .cloned())
    }

    async fn get_version_by_id(&self, version_id: Uuid) -> StoreResult<Option<VersionRow>> {
        Ok(self.inner.lock().versions.get(&version_id).cloned())
    }

    async fn deprecate_version(
        &self,
        registry_id: Uuid,
        version: &str,
        reason: &str,
    ) -> StoreResult<VersionRow> {
        let mut inner = self.inner.lock();
        let row = inner
            .versions
            .values_mut()
            .find(|v| v.registry_id == registry_id && v.version == version)
            .ok_or_else(|| StoreError::NotFound(format!("version {version}")))?;
        row.deprecated = true;
        row.deprecation_reason = Some(reason.to_owned());
        Ok(row.clone())
    }

    async fn version_by_content_hash(&self, content_hash: &str) -> StoreResult<Option<VersionRow>> {
        let inner = self.inner.lock();
        Ok(inner
            .versions
            .values()
            .filter(|v| v.bundle.content_hash == content_hash)
            .max_by_key(|v| (v.bundle.created_at, v.bundle.id))
            .cloned())
    }

    async fn put_blob(&self, content_hash: &str, bytes: Bytes) -> StoreResult<()> {
        self.inner
            .lock()
            .blobs
            .entry(content_hash.to_owned())
            .or_insert(bytes);
        Ok(())
    }

    async fn get_blob(&self, content_hash: &str) -> StoreResult<Option<Bytes>> {
        Ok(self.inner.lock().blobs.get(content_hash).cloned())
    }

    async fn delete_unreferenced_blob(&self, content_hash: &str) -> StoreResult<bool> {
        let mut inner = self.inner.lock();
        if inner
            .versions
            .values()
            .any(|v| v.bundle.content_hash == content_hash)
        {
            return Ok(false);
        }
        Ok(inner.blobs.remove(content_hash).is_some())
    }

    async fn add_key(&self, key: KeyRow) -> StoreResult<KeyRow> {
        let mut inner = self.inner.lock();
        if inner.keys.contains_key(&key.key_id) {
            return Err(StoreError::AlreadyExists(format!("key {}", key.key_id)));
        }
        let created_at = inner.now();
        let key = KeyRow {
            not_before: micros(key.not_before),
            not_after: key.not_after.map(micros),
            revoked_at: key.revoked_at.map(micros),
            created_at,
            ..key
        };
        inner.keys.insert(key.key_id.clone(), key.clone());
        inner.trust_revision += 1;
        Ok(key)
    }

    async fn list_keys(&self, publisher: Option<&str>) -> StoreResult<(Vec<KeyRow>, u64)> {
        let inner = self.inner.lock();
        let mut keys: Vec<KeyRow> = inner
            .keys
            .values()
            .filter(|k| publisher.is_none_or(|p| k.publisher == p))
            .cloned()
            .collect();
        keys.sort_by(|a, b| (&a.publisher, &a.key_id).cmp(&(&b.publisher, &b.key_id)));
        Ok((keys, inner.trust_revision))
    }

    async fn revoke_key(&self, key_id: &str) -> StoreResult<KeyRow> {
        let mut inner = self.inner.lock();
        let now = inner.now();
        let key = inner
            .keys
            .get_mut(key_id)
            .ok_or_else(|| StoreError::NotFound(format!("key {key_id}")))?;
        if key.revoked_at.is_some() {
            return Ok(key.clone());
        }
        key.revoked_at = Some(now);
        let key = key.clone();
        inner.trust_revision += 1;
        Ok(key)
    }

    async fn upsert_install(&self, new: NewInstall) -> StoreResult<InstallRow> {
        let mut inner = self.inner.lock();
        inner.version_of_extension(new.version_id, new.registry_id)?;
        let now = inner.now();
        let existing = inner
            .installs
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
        inner.installs.insert(id, row.clone());
        Ok(row)
    }

    async fn set_install_version(
        &self,
        install_id: Uuid,
        version_id: Uuid,
        granted_caps: Vec<String>,
    ) -> StoreResult<InstallRow> {
        let mut inner = self.inner.lock();
        let registry_id = inner.install_mut(install_id)?.registry_id;
        inner.version_of_extension(version_id, registry_id)?;
        let now = inner.now();
        let install = inner.install_mut(install_id)?;
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
        let mut inner = self.inner.lock();
        let now = inner.now();
        let install = inner.install_mut(install_id)?;
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
        let mut inner = self.inner.lock();
        inner.secrets.remove(&install_id);
        // Postgres cascades to schedules and storage rows. Lock order: inner, then runtime.
        inner.schedules.delete_install(install_id);
        self.runtime.delete_install(install_id);
        self.quotas.delete_install(install_id);
        Ok(inner.installs.remove(&install_id).is_some())
    }

    async fn find_install(
        &self,
        tenant_id: &str,
        selector: &ExtensionSelector,
    ) -> StoreResult<Option<InstallView>> {
        let inner = self.inner.lock();
        let mut own = inner.installs.values().filter(|i| i.tenant_id == tenant_id);
        let found = match selector {
            ExtensionSelector::Id(id) => inner
                .installs
                .get(id)
                .filter(|i| i.tenant_id == tenant_id)
                .or_else(|| own.find(|i| i.registry_id == *id)),
            ExtensionSelector::Slug(wanted) => {
                let wanted = wanted.to_lowercase();
                own.filter_map(|i| inner.extensions.get(&i.registry_id).map(|e| (e, i)))
                    .filter(|(e, _)| slug(&e.publisher, &e.name) == wanted)
                    .min_by_key(|(e, _)| (e.created_at, e.id))
                    .map(|(_, i)| i)
            }
        };
        found.map(|i| inner.view(i)).transpose()
    }

    async fn list_installs(&self, tenant_id: &str) -> StoreResult<Vec<InstallView>> {
        let inner = self.inner.lock();
        let mut views = inner
            .installs
            .values()
            .filter(|i| i.tenant_id == tenant_id)
            .map(|i| inner.view(i))
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
        let mut inner = self.inner.lock();
        let now = inner.now();
        let install = inner.install_mut(install_id)?;
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
        let mut inner = self.inner.lock();
        inner.install_mut(install_id)?;
        match secrets {
            Some(row) => {
                let row = SecretsRow {
                    expires_at: row.expires_at.map(micros),
                    ..row
                };
                inner.secrets.insert(install_id, row)
            }
            None => inner.secrets.remove(&install_id),
        };
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn create_api_key(&self, row: super::ApiKeyRow) -> StoreResult<super::ApiKeyRow> {
        self.runtime.create_api_key(row)
    }

    async fn list_api_keys(&self, tenant_id: &str) -> StoreResult<Vec<super::ApiKeyRow>> {
        Ok(self.runtime.list_api_keys(tenant_id))
    }

    async fn find_api_key(&self, id: Uuid) -> StoreResult<Option<super::ApiKeyRow>> {
        Ok(self.runtime.find_api_key(id))
    }

    async fn revoke_api_key(&self, tenant_id: &str, id: Uuid) -> StoreResult<bool> {
        let now = self.inner.lock().now();
        Ok(self.runtime.revoke_api_key(tenant_id, id, now))
    }

    async fn record_executions(&self, rows: Vec<super::ExecutionRow>) -> StoreResult<()> {
        self.runtime.record_executions(rows);
        Ok(())
    }

    async fn list_executions(
        &self,
        tenant_id: &str,
        registry_id: Uuid,
        limit: u32,
    ) -> StoreResult<Vec<super::ExecutionRow>> {
        Ok(self.runtime.list_executions(tenant_id, registry_id, limit))
    }

    async fn upsert_worker(&self, row: super::WorkerRow) -> StoreResult<()> {
        self.runtime.upsert_worker(row);
        Ok(())
    }

    async fn list_workers(&self, since: DateTime<Utc>) -> StoreResult<Vec<super::WorkerRow>> {
        Ok(self.runtime.list_workers(since))
    }

    async fn active_content_hashes(&self) -> StoreResult<Vec<String>> {
        let inner = self.inner.lock();
        let mut hashes: Vec<String> = inner
            .installs
            .values()
            .filter(|i| i.is_active())
            .filter_map(|i| inner.versions.get(&i.version_id))
            .map(|v| v.bundle.content_hash.clone())
            .collect();
        hashes.sort();
        hashes.dedup();
        Ok(hashes)
    }

    async fn storage_get(
        &self,
        scope: &super::StorageScope,
        namespace: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<super::StorageRow>> {
        Ok(self.runtime.storage_get(scope, namespace, key, now))
    }

    async fn storage_put(
        &self,
        scope: &super::StorageScope,
        put: super::StoragePut,
        quota: super::StorageQuota,
        now: DateTime<Utc>,
    ) -> StoreResult<super::StorageRow> {
        // Held across the put, so a concurrent delete_install cannot leave rows
        // behind (Postgres: the foreign key).
        let inner = self.inner.lock();
        if !inner.installs.contains_key(&scope.install_id) {
            return Err(StoreError::NotFound("install".into()));
        }
        self.runtime.storage_put(scope, put, quota, now)
    }

    async fn storage_delete(
        &self,
        scope: &super::StorageScope,
        namespace: &str,
        key: &str,
        if_revision: Option<u64>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.runtime
            .storage_delete(scope, namespace, key, if_revision, now)
    }

    async fn storage_list(
        &self,
        scope: &super::StorageScope,
        namespace: &str,
        after_key: Option<&str>,
        prefix: Option<&str>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<super::StorageRow>> {
        Ok(self
            .runtime
            .storage_list(scope, namespace, after_key, prefix, limit, now))
    }

    async fn create_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        fields: super::ScheduleFields,
        max_per_install: u64,
    ) -> StoreResult<super::ScheduleRow> {
        let mut inner = self.inner.lock();
        inner.install_mut(install_id)?;
        let now = inner.now();
        inner
            .schedules
            .create(tenant_id, install_id, fields, max_per_install, now)
    }

    async fn list_schedules(
        &self,
        tenant_id: &str,
        install_id: Uuid,
    ) -> StoreResult<Vec<super::ScheduleRow>> {
        Ok(self.inner.lock().schedules.list(tenant_id, install_id))
    }

    async fn get_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<super::ScheduleRow>> {
        Ok(self.inner.lock().schedules.get(tenant_id, install_id, id))
    }

    async fn update_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
        fields: super::ScheduleFields,
    ) -> StoreResult<super::ScheduleRow> {
        let mut inner = self.inner.lock();
        let now = inner.now();
        inner
            .schedules
            .update(tenant_id, install_id, id, fields, now)
    }

    async fn delete_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
    ) -> StoreResult<bool> {
        Ok(self
            .inner
            .lock()
            .schedules
            .delete(tenant_id, install_id, id))
    }

    async fn remap_schedules(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        remaps: Vec<super::ScheduleRemap>,
    ) -> StoreResult<()> {
        let mut inner = self.inner.lock();
        let now = inner.now();
        inner.schedules.remap(tenant_id, install_id, remaps, now);
        Ok(())
    }

    async fn claim_due_schedules(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u32,
    ) -> StoreResult<Vec<super::ScheduleRow>> {
        let mut inner = self.inner.lock();
        let Inner {
            installs,
            schedules,
            ..
        } = &mut *inner;
        Ok(schedules.claim_due(now, lease, limit, |id| {
            installs.get(&id).is_some_and(InstallRow::is_active)
        }))
    }

    async fn record_schedule_run(&self, id: Uuid, run: super::ScheduleRun) -> StoreResult<bool> {
        let mut inner = self.inner.lock();
        let now = inner.now();
        Ok(inner.schedules.record_run(id, run, now))
    }

    async fn set_quota(
        &self,
        tenant_id: &str,
        install_id: Option<Uuid>,
        limits: super::QuotaLimits,
    ) -> StoreResult<super::QuotaRow> {
        // Held across the write, so a concurrent delete_install cannot leave
        // the quota behind (Postgres: the foreign key).
        let mut inner = self.inner.lock();
        if let Some(id) = install_id
            && inner
                .installs
                .get(&id)
                .is_none_or(|i| i.tenant_id != tenant_id)
        {
            return Err(StoreError::NotFound("install".into()));
        }
        let now = inner.now();
        Ok(self.quotas.set(tenant_id, install_id, limits, now))
    }

    async fn list_quotas(&self, tenant_id: Option<&str>) -> StoreResult<Vec<super::QuotaRow>> {
        Ok(self.quotas.list(tenant_id))
    }

    async fn delete_quota(&self, tenant_id: &str, install_id: Option<Uuid>) -> StoreResult<bool> {
        Ok(self.quotas.delete(tenant_id, install_id))
    }

    async fn touch_route_watcher(
        &self,
        edge_id: &str,
        replica_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.quotas.touch_watcher(edge_id, replica_id, now);
        Ok(())
    }

    async fn remove_route_watcher(&self, edge_id: &str, replica_id: &str) -> StoreResult<()> {
        self.quotas.remove_watcher(edge_id, replica_id);
        Ok(())
    }

    async fn count_route_watchers(&self, since: DateTime<Utc>) -> StoreResult<u32> {
        Ok(self.quotas.count_watchers(since))
    }

    async fn add_usage(&self, rows: Vec<super::UsageRow>) -> StoreResult<()> {
        self.quotas.add_usage(rows);
        Ok(())
    }

    async fn list_usage(
        &self,
        tenant_id: &str,
        registry_id: Option<Uuid>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<super::UsageRow>> {
        Ok(self.quotas.list_usage(tenant_id, registry_id, since, until))
    }
}
