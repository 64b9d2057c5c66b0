//! All persistent state of the control plane, behind one [`Store`] trait with
//! two implementations: [`PgStore`] (Postgres via deadpool-postgres, the system
//! of record) and [`MemoryStore`] (unit tests, and `annex dev` without Postgres).
//! Both run through the one conformance suite in `tests/store_suite.rs`.
//!
//! This module is the only place in Annex that holds SQL text (with
//! `migrations/`). It knows nothing of gRPC; callers pass validated values.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

mod memory;
mod memory_quota;
mod memory_runtime;
mod memory_schedules;
mod pg;
mod quota;
mod runtime;
mod schedule;

pub use memory::MemoryStore;
pub use pg::{PgStore, PgStoreConfig};
pub use quota::{QuotaLimits, QuotaRow, UsageRow, merge_usage};
pub use runtime::{
    ApiKeyRow, ExecutionRow, StoragePut, StorageQuota, StorageRow, StorageScope, WorkerRow,
};
pub use schedule::{ScheduleFields, ScheduleRemap, ScheduleRow, ScheduleRun};

/// What a store operation can fail with; callers branch on these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `(registry, version)` exists already; versions are immutable.
    #[error("version {version} already exists")]
    VersionExists { version: String },
    /// A unique key other than a version exists already (e.g. a key id).
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The row an update or delete targets does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The database cannot be reached or is overloaded; safe to retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else; the message is for the log.
    #[error("store failure: {0}")]
    Internal(String),
    /// A storage compare-and-swap found another revision.
    #[error("revision mismatch")]
    RevisionMismatch,
    /// A storage quota would be exceeded; the message says which.
    #[error("{0}")]
    QuotaExceeded(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An `extension_registry` row: one per (publisher, name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionRow {
    pub id: Uuid,
    pub publisher: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl ExtensionRow {
    /// `lower(publisher + "." + name)`, the slug Alga accepts in URLs.
    pub fn slug(&self) -> String {
        slug(&self.publisher, &self.name)
    }
}

/// `lower(publisher + "." + name)`.
pub fn slug(publisher: &str, name: &str) -> String {
    format!("{publisher}.{name}").to_lowercase()
}

/// A declared endpoint, normalised as at publish.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointRow {
    pub method: String,
    pub path: String,
    pub handler: String,
}

/// The stored `ui` of a version: `{type:'iframe', entry, hooks?}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct UiRow {
    pub entry: String,
    pub app_menu_label: Option<String>,
    pub client_portal_menu_label: Option<String>,
}

/// An `extension_version` row joined with its current bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub id: Uuid,
    pub registry_id: Uuid,
    pub publisher: String,
    pub name: String,
    pub version: String,
    /// The manifest's `version` field as written and signed: equal to
    /// `version`, or the `X.Y.*` pattern a wildcard publish resolved.
    /// (Column `extension_version.manifest_version`.)
    pub manifest_version: String,
    pub runtime: String,
    pub main_entry: String,
    pub endpoints: Vec<EndpointRow>,
    pub ui: Option<UiRow>,
    pub capabilities: Vec<String>,
    pub deprecated: bool,
    pub deprecation_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub bundle: BundleRow,
}

/// An `extension_bundle` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRow {
    pub id: Uuid,
    pub version_id: Uuid,
    /// `sha256:<hex>`.
    pub content_hash: String,
    /// Standard base64 Ed25519 signature over the Annex signing statement.
    pub signature: String,
    pub signing_key_id: String,
    pub size_bytes: u64,
    pub created_at: DateTime<Utc>,
}

/// Everything a publish writes, already validated (manifest parsed from the
/// bundle, signature verified). `version` may be a wildcard `X.Y.*`, which the
/// store resolves inside the publishing transaction to `X.Y.(max stable patch + 1)`
/// (starting at `.0`; pre-releases ignored).
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub publisher: String,
    pub name: String,
    pub version: VersionSpec,
    pub runtime: String,
    pub main_entry: String,
    pub endpoints: Vec<EndpointRow>,
    pub ui: Option<UiRow>,
    pub capabilities: Vec<String>,
    pub content_hash: String,
    pub signature: String,
    pub signing_key_id: String,
    pub size_bytes: u64,
}

/// A version as the manifest states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    Exact(String),
    /// `major.minor.*`.
    Wildcard {
        major: u64,
        minor: u64,
    },
}

impl VersionSpec {
    /// The manifest's `version` as written (stored as `manifest_version`).
    pub fn as_written(&self) -> String {
        match self {
            VersionSpec::Exact(v) => v.clone(),
            VersionSpec::Wildcard { major, minor } => format!("{major}.{minor}.*"),
        }
    }
}

/// Resolves `major.minor.*` against the versions an extension already has:
/// `major.minor.(highest stable patch + 1)`, or `major.minor.0` when there is
/// none. Pre-releases (`1.2.4-beta`) are ignored; build metadata (`1.2.3+b1`)
/// counts as stable. Both stores call this inside their publishing critical
/// section, so concurrent wildcard publishes get distinct patches.
pub fn resolve_wildcard<'a>(
    major: u64,
    minor: u64,
    existing: impl IntoIterator<Item = &'a str>,
) -> String {
    let next = existing
        .into_iter()
        .filter_map(|v| stable_patch(v, major, minor))
        .max()
        .map_or(0, |patch| patch.saturating_add(1));
    format!("{major}.{minor}.{next}")
}

/// The patch of `version` when it is a stable `major.minor.patch[+build]`.
fn stable_patch(version: &str, major: u64, minor: u64) -> Option<u64> {
    let core = version
        .split_once('+')
        .map_or(version, |(core, _build)| core);
    let mut parts = core.split('.');
    let numeric = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (ma, mi, pa) = (
        numeric(parts.next()?)?,
        numeric(parts.next()?)?,
        numeric(parts.next()?)?,
    );
    (parts.next().is_none() && ma == major && mi == minor).then_some(pa)
}

/// A publisher key row (the trust bundle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub key_id: String,
    pub publisher: String,
    /// Raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    pub not_before: DateTime<Utc>,
    pub not_after: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// `tenant_extension_install.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallStatus {
    Enabled,
    Disabled,
    Pending,
}

impl InstallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallStatus::Enabled => "enabled",
            InstallStatus::Disabled => "disabled",
            InstallStatus::Pending => "pending",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
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

/// An install with everything a resolve needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallView {
    pub install: InstallRow,
    pub extension: ExtensionRow,
    pub version: VersionRow,
    pub secrets: Option<SecretsRow>,
}

/// How a request names an extension: an install id, a registry id (both UUIDs)
/// or a slug. A UUID is tried as an install id first, then as a registry id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionSelector {
    Id(Uuid),
    Slug(String),
}

impl ExtensionSelector {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        Some(match Uuid::parse_str(s) {
            Ok(id) => ExtensionSelector::Id(id),
            Err(_) => ExtensionSelector::Slug(s.to_lowercase()),
        })
    }
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

/// Registry, trust and install state.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- registry ----

    /// Writes registry (get-or-create by publisher+name), version, bundle and
    /// endpoint rows in one transaction. Exactly one of several concurrent
    /// publishes of one (extension, version) succeeds; the others get
    /// [`StoreError::VersionExists`].
    async fn publish_version(&self, new: NewVersion) -> StoreResult<(ExtensionRow, VersionRow)>;
    /// Ordered by publisher, name.
    async fn list_extensions(&self) -> StoreResult<Vec<ExtensionRow>>;
    /// By registry id or slug (a UUID here is a registry id only).
    async fn get_extension(
        &self,
        selector: &ExtensionSelector,
    ) -> StoreResult<Option<ExtensionRow>>;
    /// Newest first (by created_at, then version id).
    async fn list_versions(&self, registry_id: Uuid) -> StoreResult<Vec<VersionRow>>;
    async fn get_version(
        &self,
        registry_id: Uuid,
        version: &str,
    ) -> StoreResult<Option<VersionRow>>;
    async fn get_version_by_id(&self, version_id: Uuid) -> StoreResult<Option<VersionRow>>;
    /// Marks a version deprecated; NotFound when absent.
    async fn deprecate_version(
        &self,
        registry_id: Uuid,
        version: &str,
        reason: &str,
    ) -> StoreResult<VersionRow>;
    /// The version that owns the newest bundle with this content hash.
    async fn version_by_content_hash(&self, content_hash: &str) -> StoreResult<Option<VersionRow>>;

    // ---- bundle bytes ----

    /// Stores bundle bytes by content hash; idempotent.
    async fn put_blob(&self, content_hash: &str, bytes: Bytes) -> StoreResult<()>;
    async fn get_blob(&self, content_hash: &str) -> StoreResult<Option<Bytes>>;
    /// Deletes the bytes unless a bundle row references the hash; returns whether
    /// deleted. One statement: a publish still in flight is not seen, so a
    /// collector should only pass hashes that were put well before.
    async fn delete_unreferenced_blob(&self, content_hash: &str) -> StoreResult<bool>;

    // ---- trust ----

    /// Stores the key as given except `created_at`, which the store sets;
    /// AlreadyExists when the key id exists.
    async fn add_key(&self, key: KeyRow) -> StoreResult<KeyRow>;
    /// All keys (or one publisher's), ordered by publisher, key id; plus the
    /// trust revision, read in the same snapshot, which increases whenever the
    /// key set changes (every add, every revoke that revokes).
    async fn list_keys(&self, publisher: Option<&str>) -> StoreResult<(Vec<KeyRow>, u64)>;
    /// Sets `revoked_at` (idempotent: an already revoked key keeps its time and
    /// the revision does not move); NotFound when absent.
    async fn revoke_key(&self, key_id: &str) -> StoreResult<KeyRow>;

    // ---- installs ----

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
    /// Deletes the install with its config, secrets, schedules and storage
    /// rows; false when absent.
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

    /// True when the store can serve requests (for `/ready`).
    async fn ping(&self) -> StoreResult<()>;

    // ---- API keys ----
    /// AlreadyExists on a duplicate id.
    async fn create_api_key(&self, row: ApiKeyRow) -> StoreResult<ApiKeyRow>;
    /// The tenant's keys (revoked included), oldest first.
    async fn list_api_keys(&self, tenant_id: &str) -> StoreResult<Vec<ApiKeyRow>>;
    async fn find_api_key(&self, id: Uuid) -> StoreResult<Option<ApiKeyRow>>;
    /// Sets revoked_at; false when the tenant has no such key.
    async fn revoke_api_key(&self, tenant_id: &str, id: Uuid) -> StoreResult<bool>;

    // ---- execution log ----
    async fn record_executions(&self, rows: Vec<ExecutionRow>) -> StoreResult<()>;
    /// Newest first, at most `limit`.
    async fn list_executions(
        &self,
        tenant_id: &str,
        registry_id: Uuid,
        limit: u32,
    ) -> StoreResult<Vec<ExecutionRow>>;

    // ---- workers ----
    async fn upsert_worker(&self, row: WorkerRow) -> StoreResult<()>;
    /// Workers seen at or after `since`, by id.
    async fn list_workers(&self, since: DateTime<Utc>) -> StoreResult<Vec<WorkerRow>>;
    /// Content hashes of the versions active installs run, sorted, each once
    /// (what placement keeps warm).
    async fn active_content_hashes(&self) -> StoreResult<Vec<String>>;

    // ---- KV storage (spec §9); expired rows of the scope are deleted first, lazily, by every call ----
    async fn storage_get(
        &self,
        scope: &StorageScope,
        namespace: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StorageRow>>;
    /// Insert or update; revision starts at 1 and increments on every write.
    /// Errors: RevisionMismatch, QuotaExceeded (namespaces, keys per namespace,
    /// bytes per install; held under concurrent first writes).
    async fn storage_put(
        &self,
        scope: &StorageScope,
        put: StoragePut,
        quota: StorageQuota,
        now: DateTime<Utc>,
    ) -> StoreResult<StorageRow>;
    /// False when absent; RevisionMismatch when `if_revision` differs.
    async fn storage_delete(
        &self,
        scope: &StorageScope,
        namespace: &str,
        key: &str,
        if_revision: Option<u64>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Keys > `after_key` (if any) that start with `prefix` (literal: `%`/`_` are not wildcards), ordered by key, at most `limit`.
    async fn storage_list(
        &self,
        scope: &StorageScope,
        namespace: &str,
        after_key: Option<&str>,
        prefix: Option<&str>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StorageRow>>;

    // ---- schedules (spec §11.2); every call but the claim is scoped to (tenant, install) ----
    /// Inserts a schedule. QuotaExceeded when the install has `max_per_install`
    /// already (held under concurrent creates); AlreadyExists when the name is
    /// taken in the install; NotFound when the install is absent.
    async fn create_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        fields: ScheduleFields,
        max_per_install: u64,
    ) -> StoreResult<ScheduleRow>;
    /// Oldest first (created_at, then id).
    async fn list_schedules(
        &self,
        tenant_id: &str,
        install_id: Uuid,
    ) -> StoreResult<Vec<ScheduleRow>>;
    async fn get_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<ScheduleRow>>;
    /// Replaces the schedule's fields. NotFound when the install has no such
    /// schedule; AlreadyExists when the name is taken by another of its schedules.
    async fn update_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
        fields: ScheduleFields,
    ) -> StoreResult<ScheduleRow>;
    /// False when the install has no such schedule.
    async fn delete_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
    ) -> StoreResult<bool>;
    /// Applies an upgrade's remap in one transaction (a disabled schedule
    /// loses its next run); entries for other installs' schedules are ignored.
    async fn remap_schedules(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        remaps: Vec<ScheduleRemap>,
    ) -> StoreResult<()>;
    /// Claims up to `limit` enabled schedules of active installs that are due
    /// (`next_run_at <= now`), earliest first, across all tenants. Each claimed
    /// row's `next_run_at` moves to `now + lease`, so other claimers (other
    /// replicas) skip it, and a claimer that dies before recording the run
    /// leaves it to be claimed again after the lease. The returned rows carry
    /// the due time they were claimed at.
    async fn claim_due_schedules(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleRow>>;
    /// Records a run's outcome and the next occurrence (kept `None` when the
    /// schedule was disabled meanwhile); false when the schedule is gone.
    async fn record_schedule_run(&self, id: Uuid, run: ScheduleRun) -> StoreResult<bool>;

    // ---- execution quotas and usage ----
    /// Sets (insert or replace) the tenant's quota, or with `install_id` the
    /// quota of one of its installs; NotFound when the tenant has no such
    /// install. A per-install quota goes with its install.
    async fn set_quota(
        &self,
        tenant_id: &str,
        install_id: Option<Uuid>,
        limits: QuotaLimits,
    ) -> StoreResult<QuotaRow>;
    /// One tenant's quotas (or every tenant's), by tenant, the tenant-wide
    /// quota first, then by install id.
    async fn list_quotas(&self, tenant_id: Option<&str>) -> StoreResult<Vec<QuotaRow>>;
    /// False when no such quota is set.
    async fn delete_quota(&self, tenant_id: &str, install_id: Option<Uuid>) -> StoreResult<bool>;
    /// Records that `edge_id` follows routes through `replica_id`, seen at `now`.
    async fn touch_route_watcher(
        &self,
        edge_id: &str,
        replica_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Forgets `edge_id` if `replica_id` still holds it (its stream ended).
    async fn remove_route_watcher(&self, edge_id: &str, replica_id: &str) -> StoreResult<()>;
    /// Edges seen at or after `since`, across every replica.
    async fn count_route_watchers(&self, since: DateTime<Utc>) -> StoreResult<u32>;
    /// Adds each row's figures into its (tenant, registry, window) row,
    /// creating it when absent. Rows with equal keys in one call add up.
    async fn add_usage(&self, rows: Vec<UsageRow>) -> StoreResult<()>;
    /// The tenant's windows (of one extension, or all) with
    /// `since <= window_start < until`, oldest first, then by registry id.
    async fn list_usage(
        &self,
        tenant_id: &str,
        registry_id: Option<Uuid>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<UsageRow>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_takes_the_next_stable_patch() {
        let check = |existing: &[&str], expected: &str| {
            assert_eq!(
                resolve_wildcard(1, 2, existing.iter().copied()),
                expected,
                "{existing:?}"
            );
        };
        check(&[], "1.2.0");
        check(&["1.2.0", "1.2.3", "1.2.4-beta"], "1.2.4");
        check(&["1.2.3+build.7"], "1.2.4");
        check(
            &["1.3.9", "2.2.5", "1.2", "1.2.x", "1.2.3.4", "v1.2.7"],
            "1.2.0",
        );
        check(&["1.2.9", "1.2.10"], "1.2.11");
    }
}
