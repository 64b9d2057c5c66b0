//! [`PgStore`]: the [`Store`] on Postgres (deadpool-postgres over tokio-postgres),
//! the system of record. All of Annex's SQL text lives here and in `migrations/`.
//!
//! Invariants kept here rather than by callers:
//! - a publish is one transaction holding the registry row's lock, so versions
//!   of one extension are written one at a time (exact duplicates lose with
//!   `VersionExists`, wildcards resolve to distinct patches);
//! - the install row's `config` and the `tenant_extension_install_config` row are
//!   written in the same transaction, and every config change gets a new version;
//! - orderings use `COLLATE "C"` so they match [`super::MemoryStore`] whatever the
//!   database's default collation is.
//!
//! Layout: this file owns the pool, migrations and error mapping; `registry`,
//! `trust`, `installs`, `runtime` and `schedules` hold each area's SQL; `rows`
//! decodes rows and JSON columns.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::{
    ExtensionRow, ExtensionSelector, InstallRow, InstallView, KeyRow, NewInstall, NewVersion,
    SecretsRow, Store, StoreError, StoreResult, VersionRow,
};
use rows::col;

/// How to reach Postgres.
#[derive(Clone)]
pub struct PgStoreConfig {
    /// `postgres://user[:password]@host:port/database`; never logged.
    pub url: String,
    /// Pool size. Each in-flight store call holds one connection.
    pub max_connections: usize,
}

/// Shows the URL without its password.
impl std::fmt::Debug for PgStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStoreConfig")
            .field("url", &redact_password(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// `scheme://user:***@host/...` for a URL with a password; other forms are
/// hidden entirely, since key=value strings may carry `password=` anywhere.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<connection string>".to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// The Postgres store. Cloning shares the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

/// The migrations in the order they apply; each applies once per database.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_registry",
        include_str!("../../../migrations/0001_registry.sql"),
    ),
    (
        "0002_trust",
        include_str!("../../../migrations/0002_trust.sql"),
    ),
    (
        "0003_installs",
        include_str!("../../../migrations/0003_installs.sql"),
    ),
    (
        "0004_runtime",
        include_str!("../../../migrations/0004_runtime.sql"),
    ),
    (
        "0005_runtime_ids",
        include_str!("../../../migrations/0005_runtime_ids.sql"),
    ),
    (
        "0006_schedule_endpoints",
        include_str!("../../../migrations/0006_schedule_endpoints.sql"),
    ),
    (
        "0007_quotas",
        include_str!("../../../migrations/0007_quotas.sql"),
    ),
];

/// Advisory lock key held while migrating ("annexmig" in ASCII), so replicas
/// starting together apply each migration once.
const MIGRATION_LOCK: i64 = 0x616e_6e65_786d_6967;

/// How long a call waits for a pooled connection, and for a new one, before
/// answering `Unavailable`: long enough to ride out a burst, short enough that
/// `/ready` reports an unreachable database within a probe period.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

impl PgStore {
    /// Connects, checks the database answers, and applies pending migrations.
    pub async fn connect(config: PgStoreConfig) -> StoreResult<PgStore> {
        let pg_config: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| StoreError::Internal(format!("parse the database url: {e}")))?;
        let manager = Manager::from_config(
            pg_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Internal(format!("build the connection pool: {e}")))?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // Taken before anything else, so even `CREATE TABLE IF NOT EXISTS` of the
        // bookkeeping table cannot race with another replica.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg_error)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    varchar PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(pg_error)?;
        let applied = tx
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(pg_error)?;
        let applied = applied
            .iter()
            .map(|r| col::<String>(r, "version"))
            .collect::<StoreResult<HashSet<_>>>()?;
        for (version, sql) in MIGRATIONS {
            if applied.contains(*version) {
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(|e| StoreError::Internal(format!("apply migration {version}: {e}")))?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(pg_error)?;
            tracing::info!(migration = version, "migration applied");
        }
        tx.commit().await.map_err(pg_error)
    }
}

// Column lists and their decoders; its macros are used by the modules below.
#[macro_use]
mod rows;

mod cached;
mod installs;
mod quota;
mod registry;
mod runtime;
mod schedules;
mod trust;

#[async_trait]
impl Store for PgStore {
    async fn publish_version(&self, new: NewVersion) -> StoreResult<(ExtensionRow, VersionRow)> {
        registry::publish_version(self, new).await
    }

    async fn list_extensions(&self) -> StoreResult<Vec<ExtensionRow>> {
        registry::list_extensions(self).await
    }

    async fn get_extension(
        &self,
        selector: &ExtensionSelector,
    ) -> StoreResult<Option<ExtensionRow>> {
        registry::get_extension(self, selector).await
    }

    async fn list_versions(&self, registry_id: Uuid) -> StoreResult<Vec<VersionRow>> {
        registry::list_versions(self, registry_id).await
    }

    async fn get_version(
        &self,
        registry_id: Uuid,
        version: &str,
    ) -> StoreResult<Option<VersionRow>> {
        registry::get_version(self, registry_id, version).await
    }

    async fn get_version_by_id(&self, version_id: Uuid) -> StoreResult<Option<VersionRow>> {
        registry::get_version_by_id(self, version_id).await
    }

    async fn deprecate_version(
        &self,
        registry_id: Uuid,
        version: &str,
        reason: &str,
    ) -> StoreResult<VersionRow> {
        registry::deprecate_version(self, registry_id, version, reason).await
    }

    async fn version_by_content_hash(&self, content_hash: &str) -> StoreResult<Option<VersionRow>> {
        registry::version_by_content_hash(self, content_hash).await
    }

    async fn put_blob(&self, content_hash: &str, bytes: Bytes) -> StoreResult<()> {
        registry::put_blob(self, content_hash, bytes).await
    }

    async fn get_blob(&self, content_hash: &str) -> StoreResult<Option<Bytes>> {
        registry::get_blob(self, content_hash).await
    }

    async fn delete_unreferenced_blob(&self, content_hash: &str) -> StoreResult<bool> {
        registry::delete_unreferenced_blob(self, content_hash).await
    }

    async fn add_key(&self, key: KeyRow) -> StoreResult<KeyRow> {
        trust::add_key(self, key).await
    }

    async fn list_keys(&self, publisher: Option<&str>) -> StoreResult<(Vec<KeyRow>, u64)> {
        trust::list_keys(self, publisher).await
    }

    async fn revoke_key(&self, key_id: &str) -> StoreResult<KeyRow> {
        trust::revoke_key(self, key_id).await
    }

    async fn upsert_install(&self, new: NewInstall) -> StoreResult<InstallRow> {
        installs::upsert_install(self, new).await
    }

    async fn set_install_version(
        &self,
        install_id: Uuid,
        version_id: Uuid,
        granted_caps: Vec<String>,
    ) -> StoreResult<InstallRow> {
        installs::set_install_version(self, install_id, version_id, granted_caps).await
    }

    async fn set_install_enabled(
        &self,
        install_id: Uuid,
        enabled: bool,
    ) -> StoreResult<InstallRow> {
        installs::set_install_enabled(self, install_id, enabled).await
    }

    async fn delete_install(&self, install_id: Uuid) -> StoreResult<bool> {
        installs::delete_install(self, install_id).await
    }

    async fn find_install(
        &self,
        tenant_id: &str,
        selector: &ExtensionSelector,
    ) -> StoreResult<Option<InstallView>> {
        installs::find_install(self, tenant_id, selector).await
    }

    async fn list_installs(&self, tenant_id: &str) -> StoreResult<Vec<InstallView>> {
        installs::list_installs(self, tenant_id).await
    }

    async fn set_install_config(
        &self,
        install_id: Uuid,
        config: BTreeMap<String, String>,
    ) -> StoreResult<InstallRow> {
        installs::set_install_config(self, install_id, config).await
    }

    async fn set_install_secrets(
        &self,
        install_id: Uuid,
        secrets: Option<SecretsRow>,
    ) -> StoreResult<()> {
        installs::set_install_secrets(self, install_id, secrets).await
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.execute("SELECT 1", &[]).await.map_err(pg_error)?;
        Ok(())
    }

    async fn create_api_key(&self, row: super::ApiKeyRow) -> StoreResult<super::ApiKeyRow> {
        runtime::create_api_key(self, row).await
    }

    async fn list_api_keys(&self, tenant_id: &str) -> StoreResult<Vec<super::ApiKeyRow>> {
        runtime::list_api_keys(self, tenant_id).await
    }

    async fn find_api_key(&self, id: Uuid) -> StoreResult<Option<super::ApiKeyRow>> {
        runtime::find_api_key(self, id).await
    }

    async fn revoke_api_key(&self, tenant_id: &str, id: Uuid) -> StoreResult<bool> {
        runtime::revoke_api_key(self, tenant_id, id).await
    }

    async fn record_executions(&self, rows: Vec<super::ExecutionRow>) -> StoreResult<()> {
        runtime::record_executions(self, rows).await
    }

    async fn list_executions(
        &self,
        tenant_id: &str,
        registry_id: Uuid,
        limit: u32,
    ) -> StoreResult<Vec<super::ExecutionRow>> {
        runtime::list_executions(self, tenant_id, registry_id, limit).await
    }

    async fn upsert_worker(&self, row: super::WorkerRow) -> StoreResult<()> {
        runtime::upsert_worker(self, row).await
    }

    async fn list_workers(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<super::WorkerRow>> {
        runtime::list_workers(self, since).await
    }

    async fn active_content_hashes(&self) -> StoreResult<Vec<String>> {
        runtime::active_content_hashes(self).await
    }

    async fn storage_get(
        &self,
        scope: &super::StorageScope,
        namespace: &str,
        key: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Option<super::StorageRow>> {
        runtime::storage_get(self, scope, namespace, key, now).await
    }

    async fn storage_put(
        &self,
        scope: &super::StorageScope,
        put: super::StoragePut,
        quota: super::StorageQuota,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<super::StorageRow> {
        runtime::storage_put(self, scope, put, quota, now).await
    }

    async fn storage_delete(
        &self,
        scope: &super::StorageScope,
        namespace: &str,
        key: &str,
        if_revision: Option<u64>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool> {
        runtime::storage_delete(self, scope, namespace, key, if_revision, now).await
    }

    async fn storage_list(
        &self,
        scope: &super::StorageScope,
        namespace: &str,
        after_key: Option<&str>,
        prefix: Option<&str>,
        limit: u32,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<super::StorageRow>> {
        runtime::storage_list(self, scope, namespace, after_key, prefix, limit, now).await
    }

    async fn create_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        fields: super::ScheduleFields,
        max_per_install: u64,
    ) -> StoreResult<super::ScheduleRow> {
        schedules::create_schedule(self, tenant_id, install_id, fields, max_per_install).await
    }

    async fn list_schedules(
        &self,
        tenant_id: &str,
        install_id: Uuid,
    ) -> StoreResult<Vec<super::ScheduleRow>> {
        schedules::list_schedules(self, tenant_id, install_id).await
    }

    async fn get_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<super::ScheduleRow>> {
        schedules::get_schedule(self, tenant_id, install_id, id).await
    }

    async fn update_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
        fields: super::ScheduleFields,
    ) -> StoreResult<super::ScheduleRow> {
        schedules::update_schedule(self, tenant_id, install_id, id, fields).await
    }

    async fn delete_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
    ) -> StoreResult<bool> {
        schedules::delete_schedule(self, tenant_id, install_id, id).await
    }

    async fn remap_schedules(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        remaps: Vec<super::ScheduleRemap>,
    ) -> StoreResult<()> {
        schedules::remap_schedules(self, tenant_id, install_id, remaps).await
    }

    async fn claim_due_schedules(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        lease: chrono::Duration,
        limit: u32,
    ) -> StoreResult<Vec<super::ScheduleRow>> {
        schedules::claim_due_schedules(self, now, lease, limit).await
    }

    async fn record_schedule_run(&self, id: Uuid, run: super::ScheduleRun) -> StoreResult<bool> {
        schedules::record_schedule_run(self, id, run).await
    }

    async fn set_quota(
        &self,
        tenant_id: &str,
        install_id: Option<Uuid>,
        limits: super::QuotaLimits,
    ) -> StoreResult<super::QuotaRow> {
        quota::set_quota(self, tenant_id, install_id, limits).await
    }

    async fn list_quotas(&self, tenant_id: Option<&str>) -> StoreResult<Vec<super::QuotaRow>> {
        quota::list_quotas(self, tenant_id).await
    }

    async fn delete_quota(&self, tenant_id: &str, install_id: Option<Uuid>) -> StoreResult<bool> {
        quota::delete_quota(self, tenant_id, install_id).await
    }

    async fn touch_route_watcher(
        &self,
        edge_id: &str,
        replica_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        quota::touch_route_watcher(self, edge_id, replica_id, now).await
    }

    async fn remove_route_watcher(&self, edge_id: &str, replica_id: &str) -> StoreResult<()> {
        quota::remove_route_watcher(self, edge_id, replica_id).await
    }

    async fn count_route_watchers(&self, since: DateTime<Utc>) -> StoreResult<u32> {
        quota::count_route_watchers(self, since).await
    }

    async fn add_usage(&self, rows: Vec<super::UsageRow>) -> StoreResult<()> {
        quota::add_usage(self, rows).await
    }

    async fn list_usage(
        &self,
        tenant_id: &str,
        registry_id: Option<Uuid>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<super::UsageRow>> {
        quota::list_usage(self, tenant_id, registry_id, since, until).await
    }
}

// ---- errors ----

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            return StoreError::AlreadyExists(db.constraint().unwrap_or("row").to_owned());
        }
        if *code == SqlState::FOREIGN_KEY_VIOLATION {
            return StoreError::NotFound(db.constraint().unwrap_or("referenced row").to_owned());
        }
        // Class 08 (connection exception), 53 (insufficient resources), 57P0x (shutting down).
        let class = code.code();
        if class.starts_with("08") || class.starts_with("53") || class.starts_with("57P0") {
            return StoreError::Unavailable(db.message().to_owned());
        }
        return StoreError::Internal(format!("{}: {}", code.code(), db.message()));
    }
    // No server error: the connection broke or could not be made.
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Internal(e.to_string())
    }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Timeout(t) => {
            StoreError::Unavailable(format!("no database connection ({t:?} timed out)"))
        }
        PoolError::Closed => StoreError::Unavailable("the connection pool is closed".to_owned()),
        other => StoreError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_password() {
        let config = PgStoreConfig {
            url: "postgres://annex:s3cret@db:5432/annex?sslmode=disable".into(),
            max_connections: 4,
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://annex:***@db:5432/annex?sslmode=disable"),
            "{shown}"
        );
        assert_eq!(
            redact_password("postgres://annex@db/annex"),
            "postgres://annex@db/annex"
        );
        assert_eq!(redact_password("host=db password=x"), "<connection string>");
    }
}
