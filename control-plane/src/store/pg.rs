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

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use serde_json::{Value, json};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;
use tokio_postgres::{IsolationLevel, NoTls, Row};
use uuid::Uuid;

use super::{
    BundleRow, ExtensionRow, ExtensionSelector, InstallRow, InstallStatus, InstallView, KeyRow,
    NewInstall, NewVersion, SecretsRow, Store, StoreError, StoreResult, UiRow, VersionRow,
    VersionSpec, resolve_wildcard,
};

/// How to reach Postgres.
#[derive(Debug, Clone)]
pub struct PgStoreConfig {
    /// `postgres://user[:password]@host:port/database`; never logged.
    pub url: String,
    /// Pool size. Each in-flight store call holds one connection.
    pub max_connections: usize,
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

// ---- SQL fragments ----

/// Columns of a version joined with its extension and current bundle
/// (aliases `r`, `v`, `b`), decoded by [`version_from_row`].
macro_rules! version_columns {
    () => {
        "r.id AS r_id, r.publisher AS r_publisher, r.name AS r_name, r.created_at AS r_created_at, \
         v.id AS v_id, v.version AS v_version, \
         COALESCE(v.manifest_version, v.version) AS v_manifest_version, v.runtime AS v_runtime, v.main_entry AS v_main_entry, \
         v.api_endpoints AS v_api_endpoints, v.ui AS v_ui, v.capabilities AS v_capabilities, \
         v.deprecated AS v_deprecated, v.deprecation_reason AS v_deprecation_reason, v.created_at AS v_created_at, \
         b.id AS b_id, b.content_hash AS b_content_hash, b.signature AS b_signature, \
         b.signing_key_id AS b_signing_key_id, b.size_bytes AS b_size_bytes, b.created_at AS b_created_at"
    };
}

/// The current bundle of version `v`: the newest (spec §7).
macro_rules! current_bundle_join {
    () => {
        " JOIN LATERAL (SELECT * FROM extension_bundle cb WHERE cb.version_id = v.id \
           ORDER BY cb.created_at DESC, cb.content_hash DESC LIMIT 1) b ON true "
    };
}

macro_rules! select_versions {
    ($where:literal) => {
        concat!(
            "SELECT ",
            version_columns!(),
            " FROM extension_version v JOIN extension_registry r ON r.id = v.registry_id",
            current_bundle_join!(),
            $where
        )
    };
}

/// Columns of an install with its config row (aliases `i`, `c`), decoded by
/// [`install_from_row`]. Alga reads the config row first, then the install row.
macro_rules! install_columns {
    () => {
        "i.id AS i_id, i.tenant_id AS i_tenant_id, i.registry_id AS i_registry_id, i.version_id AS i_version_id, \
         i.granted_caps AS i_granted_caps, i.is_enabled AS i_is_enabled, i.status AS i_status, \
         i.egress_allowlist AS i_egress_allowlist, COALESCE(c.config, i.config) AS i_config, \
         COALESCE(c.version, '') AS i_config_version, i.created_at AS i_created_at, i.updated_at AS i_updated_at"
    };
}

const SELECT_INSTALL: &str = concat!(
    "SELECT ",
    install_columns!(),
    " FROM tenant_extension_install i \
     LEFT JOIN tenant_extension_install_config c ON c.install_id = i.id \
     WHERE i.id = $1"
);

macro_rules! select_install_views {
    ($where:literal) => {
        concat!(
            "SELECT ",
            install_columns!(),
            ", ",
            version_columns!(),
            ", s.ciphertext AS s_ciphertext, s.algorithm AS s_algorithm, s.transit_key AS s_transit_key, \
             s.transit_mount AS s_transit_mount, s.version AS s_version, s.expires_at AS s_expires_at \
             FROM tenant_extension_install i \
             JOIN extension_registry r ON r.id = i.registry_id \
             JOIN extension_version v ON v.id = i.version_id",
            current_bundle_join!(),
            "LEFT JOIN tenant_extension_install_config c ON c.install_id = i.id \
             LEFT JOIN tenant_extension_install_secrets s ON s.install_id = i.id ",
            $where
        )
    };
}

const KEY_COLUMNS: &str =
    "key_id, publisher, public_key, not_before, not_after, revoked_at, created_at";

#[async_trait]
impl Store for PgStore {
    async fn publish_version(&self, new: NewVersion) -> StoreResult<(ExtensionRow, VersionRow)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;

        // Get or create; the DO UPDATE also locks an existing row.
        let row = tx
            .query_one(
                "INSERT INTO extension_registry (id, publisher, name) VALUES ($1, $2, $3) \
                 ON CONFLICT (publisher, name) DO UPDATE SET updated_at = now() \
                 RETURNING id AS r_id, publisher AS r_publisher, name AS r_name, created_at AS r_created_at",
                &[&Uuid::new_v4(), &new.publisher, &new.name],
            )
            .await
            .map_err(pg_error)?;
        let extension = extension_from_row(&row)?;
        // Explicit, so the serialisation below does not depend on the upsert's locking.
        tx.execute(
            "SELECT 1 FROM extension_registry WHERE id = $1 FOR UPDATE",
            &[&extension.id],
        )
        .await
        .map_err(pg_error)?;

        // Each statement below sees every publish committed before the lock was granted.
        let version = match &new.version {
            VersionSpec::Exact(v) => v.clone(),
            VersionSpec::Wildcard { major, minor } => {
                let rows = tx
                    .query(
                        "SELECT version FROM extension_version WHERE registry_id = $1",
                        &[&extension.id],
                    )
                    .await
                    .map_err(pg_error)?;
                let taken = rows
                    .iter()
                    .map(|r| col::<String>(r, "version"))
                    .collect::<StoreResult<Vec<_>>>()?;
                resolve_wildcard(*major, *minor, taken.iter().map(String::as_str))
            }
        };
        let exists = tx
            .query_opt(
                "SELECT 1 FROM extension_version WHERE registry_id = $1 AND version = $2",
                &[&extension.id, &version],
            )
            .await
            .map_err(pg_error)?;
        if exists.is_some() {
            return Err(StoreError::VersionExists { version });
        }

        let version_id = Uuid::new_v4();
        let endpoints = serde_json::to_value(&new.endpoints)
            .map_err(|e| StoreError::Internal(format!("encode endpoints: {e}")))?;
        // clock_timestamp, not now(): "newest first" must follow the order in
        // which publishes took the lock, not the order their transactions began.
        tx.execute(
            "INSERT INTO extension_version \
             (id, registry_id, version, manifest_version, runtime, main_entry, api_endpoints, ui, capabilities, \
              created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, clock_timestamp())",
            &[
                &version_id,
                &extension.id,
                &version,
                &new.version.as_written(),
                &new.runtime,
                &new.main_entry,
                &endpoints,
                &new.ui.as_ref().map(ui_to_json),
                &strings_to_json(&new.capabilities),
            ],
        )
        .await
        .map_err(|e| match e.code() {
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::VersionExists { version: version.clone() },
            _ => pg_error(e),
        })?;
        tx.execute(
            "INSERT INTO extension_bundle (id, version_id, content_hash, signature, signing_key_id, size_bytes, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp())",
            &[
                &Uuid::new_v4(),
                &version_id,
                &new.content_hash,
                &new.signature,
                &new.signing_key_id,
                &to_i64(new.size_bytes, "bundle size")?,
            ],
        )
        .await
        .map_err(pg_error)?;
        let (methods, paths, handlers): (Vec<&str>, Vec<&str>, Vec<&str>) = new
            .endpoints
            .iter()
            .map(|e| (e.method.as_str(), e.path.as_str(), e.handler.as_str()))
            .collect();
        tx.execute(
            "INSERT INTO extension_api_endpoint (version_id, method, path, handler) \
             SELECT $1, m, p, h FROM unnest($2::text[], $3::text[], $4::text[]) AS t(m, p, h) \
             ON CONFLICT (version_id, method, path) DO NOTHING",
            &[&version_id, &methods, &paths, &handlers],
        )
        .await
        .map_err(pg_error)?;

        let row = tx
            .query_one(select_versions!("WHERE v.id = $1"), &[&version_id])
            .await
            .map_err(pg_error)?;
        let version = version_from_row(&row)?;
        tx.commit().await.map_err(pg_error)?;
        Ok((extension, version))
    }

    async fn list_extensions(&self) -> StoreResult<Vec<ExtensionRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id AS r_id, publisher AS r_publisher, name AS r_name, created_at AS r_created_at \
                 FROM extension_registry ORDER BY publisher COLLATE \"C\", name COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(extension_from_row).collect()
    }

    async fn get_extension(
        &self,
        selector: &ExtensionSelector,
    ) -> StoreResult<Option<ExtensionRow>> {
        let client = self.client().await?;
        let row = match selector {
            ExtensionSelector::Id(id) => {
                client
                    .query_opt(
                        "SELECT id AS r_id, publisher AS r_publisher, name AS r_name, created_at AS r_created_at \
                         FROM extension_registry WHERE id = $1",
                        &[id],
                    )
                    .await
            }
            // Slugs of distinct extensions can collide ("a.b"+"c", "a"+"b.c"): the oldest wins.
            ExtensionSelector::Slug(slug) => {
                client
                    .query_opt(
                        "SELECT id AS r_id, publisher AS r_publisher, name AS r_name, created_at AS r_created_at \
                         FROM extension_registry WHERE lower(publisher || '.' || name) = $1 \
                         ORDER BY created_at, id LIMIT 1",
                        &[&slug.to_lowercase()],
                    )
                    .await
            }
        }
        .map_err(pg_error)?;
        row.as_ref().map(extension_from_row).transpose()
    }

    async fn list_versions(&self, registry_id: Uuid) -> StoreResult<Vec<VersionRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                select_versions!("WHERE v.registry_id = $1 ORDER BY v.created_at DESC, v.id DESC"),
                &[&registry_id],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(version_from_row).collect()
    }

    async fn get_version(
        &self,
        registry_id: Uuid,
        version: &str,
    ) -> StoreResult<Option<VersionRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                select_versions!("WHERE v.registry_id = $1 AND v.version = $2"),
                &[&registry_id, &version],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn get_version_by_id(&self, version_id: Uuid) -> StoreResult<Option<VersionRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(select_versions!("WHERE v.id = $1"), &[&version_id])
            .await
            .map_err(pg_error)?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn deprecate_version(
        &self,
        registry_id: Uuid,
        version: &str,
        reason: &str,
    ) -> StoreResult<VersionRow> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                concat!(
                    "WITH d AS (UPDATE extension_version SET deprecated = true, deprecation_reason = $3 \
                     WHERE registry_id = $1 AND version = $2 RETURNING *) ",
                    "SELECT ",
                    version_columns!(),
                    " FROM d v JOIN extension_registry r ON r.id = v.registry_id",
                    current_bundle_join!()
                ),
                &[&registry_id, &version, &reason],
            )
            .await
            .map_err(pg_error)?;
        match row {
            Some(row) => version_from_row(&row),
            None => Err(StoreError::NotFound(format!("version {version}"))),
        }
    }

    async fn version_by_content_hash(&self, content_hash: &str) -> StoreResult<Option<VersionRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                concat!(
                    "SELECT ",
                    version_columns!(),
                    " FROM extension_bundle hb \
                     JOIN extension_version v ON v.id = hb.version_id \
                     JOIN extension_registry r ON r.id = v.registry_id",
                    current_bundle_join!(),
                    "WHERE hb.content_hash = $1 ORDER BY hb.created_at DESC, hb.id DESC LIMIT 1"
                ),
                &[&content_hash],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn put_blob(&self, content_hash: &str, bytes: Bytes) -> StoreResult<()> {
        let client = self.client().await?;
        let size = to_i64(bytes.len() as u64, "blob size")?;
        client
            .execute(
                "INSERT INTO bundle_blobs (content_hash, bytes, size) VALUES ($1, $2, $3) \
                 ON CONFLICT (content_hash) DO NOTHING",
                &[&content_hash, &&bytes[..], &size],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn get_blob(&self, content_hash: &str) -> StoreResult<Option<Bytes>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT bytes FROM bundle_blobs WHERE content_hash = $1",
                &[&content_hash],
            )
            .await
            .map_err(pg_error)?;
        row.map(|r| col::<Vec<u8>>(&r, "bytes").map(Bytes::from))
            .transpose()
    }

    async fn delete_unreferenced_blob(&self, content_hash: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                "DELETE FROM bundle_blobs WHERE content_hash = $1 \
                 AND NOT EXISTS (SELECT 1 FROM extension_bundle WHERE content_hash = $1)",
                &[&content_hash],
            )
            .await
            .map_err(pg_error)?;
        Ok(deleted > 0)
    }

    async fn add_key(&self, key: KeyRow) -> StoreResult<KeyRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO publisher_keys (key_id, publisher, public_key, not_before, not_after, revoked_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING {KEY_COLUMNS}"
                ),
                &[&key.key_id, &key.publisher, &key.public_key, &key.not_before, &key.not_after, &key.revoked_at],
            )
            .await
            .map_err(|e| match e.code() {
                Some(code) if *code == SqlState::UNIQUE_VIOLATION => {
                    StoreError::AlreadyExists(format!("key {}", key.key_id))
                }
                _ => pg_error(e),
            })?;
        bump_trust_revision(&tx).await?;
        let key = key_from_row(&row)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(key)
    }

    async fn list_keys(&self, publisher: Option<&str>) -> StoreResult<(Vec<KeyRow>, u64)> {
        let mut client = self.client().await?;
        // One snapshot for the keys and the revision that describes them.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_error)?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM publisher_keys WHERE $1::varchar IS NULL OR publisher = $1 \
                     ORDER BY publisher COLLATE \"C\", key_id COLLATE \"C\""
                ),
                &[&publisher],
            )
            .await
            .map_err(pg_error)?;
        let keys = rows
            .iter()
            .map(key_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let revision = tx
            .query_opt("SELECT revision FROM trust_revision", &[])
            .await
            .map_err(pg_error)?;
        let revision = match revision {
            Some(row) => to_u64(col::<i64>(&row, "revision")?, "trust revision")?,
            None => 0,
        };
        tx.commit().await.map_err(pg_error)?;
        Ok((keys, revision))
    }

    async fn revoke_key(&self, key_id: &str) -> StoreResult<KeyRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let revoked = tx
            .query_opt(
                &format!(
                    "UPDATE publisher_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL \
                     RETURNING {KEY_COLUMNS}"
                ),
                &[&key_id],
            )
            .await
            .map_err(pg_error)?;
        let row = match revoked {
            Some(row) => {
                bump_trust_revision(&tx).await?;
                row
            }
            None => tx
                .query_opt(
                    &format!("SELECT {KEY_COLUMNS} FROM publisher_keys WHERE key_id = $1"),
                    &[&key_id],
                )
                .await
                .map_err(pg_error)?
                .ok_or_else(|| StoreError::NotFound(format!("key {key_id}")))?,
        };
        let key = key_from_row(&row)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(key)
    }

    async fn upsert_install(&self, new: NewInstall) -> StoreResult<InstallRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let caps = strings_to_json(&new.granted_caps);
        let config = config_to_json(&new.config);
        let row = tx
            .query_opt(
                "INSERT INTO tenant_extension_install \
                 (id, tenant_id, registry_id, version_id, granted_caps, config, is_enabled, status, egress_allowlist) \
                 SELECT $1::uuid, $2::varchar, v.registry_id, v.id, $5::jsonb, $6::jsonb, true, 'enabled', $7::jsonb \
                 FROM extension_version v WHERE v.id = $4::uuid AND v.registry_id = $3::uuid \
                 ON CONFLICT (tenant_id, registry_id) DO UPDATE SET \
                 version_id = EXCLUDED.version_id, granted_caps = EXCLUDED.granted_caps, config = EXCLUDED.config, \
                 is_enabled = true, status = 'enabled', egress_allowlist = EXCLUDED.egress_allowlist, \
                 updated_at = now() \
                 RETURNING id",
                &[
                    &Uuid::new_v4(),
                    &new.tenant_id,
                    &new.registry_id,
                    &new.version_id,
                    &caps,
                    &config,
                    &strings_to_json(&new.egress_allowlist),
                ],
            )
            .await
            .map_err(pg_error)?
            .ok_or_else(|| StoreError::NotFound(format!("version {} of extension {}", new.version_id, new.registry_id)))?;
        let install_id: Uuid = col(&row, "id")?;
        tx.execute(
            "INSERT INTO tenant_extension_install_config (install_id, tenant_id, config, providers, version) \
             VALUES ($1, $2, $3, $4, gen_random_uuid()::text) \
             ON CONFLICT (install_id) DO UPDATE SET config = EXCLUDED.config, providers = EXCLUDED.providers, \
             version = EXCLUDED.version, updated_at = now()",
            &[&install_id, &new.tenant_id, &config, &caps],
        )
        .await
        .map_err(pg_error)?;
        let install = select_install(&tx, install_id).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(install)
    }

    async fn set_install_version(
        &self,
        install_id: Uuid,
        version_id: Uuid,
        granted_caps: Vec<String>,
    ) -> StoreResult<InstallRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let caps = strings_to_json(&granted_caps);
        let updated = tx
            .execute(
                "UPDATE tenant_extension_install i SET version_id = $2, granted_caps = $3, updated_at = now() \
                 WHERE i.id = $1 \
                 AND EXISTS (SELECT 1 FROM extension_version v WHERE v.id = $2 AND v.registry_id = i.registry_id)",
                &[&install_id, &version_id, &caps],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 {
            // Tell which of the two is missing.
            select_install(&tx, install_id).await?;
            return Err(StoreError::NotFound(format!(
                "version {version_id} of the installed extension"
            )));
        }
        // Providers follow the grants; the config and its version do not change.
        tx.execute(
            "UPDATE tenant_extension_install_config SET providers = $2, updated_at = now() WHERE install_id = $1",
            &[&install_id, &caps],
        )
        .await
        .map_err(pg_error)?;
        let install = select_install(&tx, install_id).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(install)
    }

    async fn set_install_enabled(
        &self,
        install_id: Uuid,
        enabled: bool,
    ) -> StoreResult<InstallRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let status = if enabled {
            InstallStatus::Enabled
        } else {
            InstallStatus::Disabled
        };
        tx.execute(
            "UPDATE tenant_extension_install SET is_enabled = $2, status = $3, updated_at = now() WHERE id = $1",
            &[&install_id, &enabled, &status.as_str()],
        )
        .await
        .map_err(pg_error)?;
        let install = select_install(&tx, install_id).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(install)
    }

    async fn delete_install(&self, install_id: Uuid) -> StoreResult<bool> {
        let client = self.client().await?;
        // Config, secrets, schedules and storage rows go with it (ON DELETE CASCADE).
        let deleted = client
            .execute(
                "DELETE FROM tenant_extension_install WHERE id = $1",
                &[&install_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(deleted > 0)
    }

    async fn find_install(
        &self,
        tenant_id: &str,
        selector: &ExtensionSelector,
    ) -> StoreResult<Option<InstallView>> {
        let client = self.client().await?;
        let row =
            match selector {
                // An install id wins over a registry id.
                ExtensionSelector::Id(id) => {
                    client
                        .query_opt(
                            select_install_views!(
                                "WHERE i.tenant_id = $1 AND (i.id = $2 OR i.registry_id = $2) \
                             ORDER BY (i.id = $2) DESC LIMIT 1"
                            ),
                            &[&tenant_id, id],
                        )
                        .await
                }
                ExtensionSelector::Slug(slug) => client
                    .query_opt(
                        select_install_views!(
                            "WHERE i.tenant_id = $1 AND lower(r.publisher || '.' || r.name) = $2 \
                             ORDER BY r.created_at, r.id LIMIT 1"
                        ),
                        &[&tenant_id, &slug.to_lowercase()],
                    )
                    .await,
            }
            .map_err(pg_error)?;
        row.as_ref().map(install_view_from_row).transpose()
    }

    async fn list_installs(&self, tenant_id: &str) -> StoreResult<Vec<InstallView>> {
        let client = self.client().await?;
        let rows = client
            .query(
                select_install_views!(
                    "WHERE i.tenant_id = $1 ORDER BY r.publisher COLLATE \"C\", r.name COLLATE \"C\""
                ),
                &[&tenant_id],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(install_view_from_row).collect()
    }

    async fn set_install_config(
        &self,
        install_id: Uuid,
        config: BTreeMap<String, String>,
    ) -> StoreResult<InstallRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let config = config_to_json(&config);
        tx.execute(
            "UPDATE tenant_extension_install SET config = $2, updated_at = now() WHERE id = $1",
            &[&install_id, &config],
        )
        .await
        .map_err(pg_error)?;
        // A missing config row (an install written by Alga) is created with the grants as providers.
        tx.execute(
            "INSERT INTO tenant_extension_install_config (install_id, tenant_id, config, providers, version) \
             SELECT i.id, i.tenant_id, $2::jsonb, i.granted_caps, gen_random_uuid()::text \
             FROM tenant_extension_install i WHERE i.id = $1::uuid \
             ON CONFLICT (install_id) DO UPDATE SET config = EXCLUDED.config, version = EXCLUDED.version, \
             updated_at = now()",
            &[&install_id, &config],
        )
        .await
        .map_err(pg_error)?;
        let install = select_install(&tx, install_id).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(install)
    }

    async fn set_install_secrets(
        &self,
        install_id: Uuid,
        secrets: Option<SecretsRow>,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        let touched = match secrets {
            Some(s) => {
                client
                    .execute(
                        "INSERT INTO tenant_extension_install_secrets \
                         (install_id, tenant_id, ciphertext, algorithm, transit_key, transit_mount, version, expires_at) \
                         SELECT i.id, i.tenant_id, $2::text, $3::varchar, $4::varchar, $5::varchar, $6::varchar, \
                         $7::timestamptz FROM tenant_extension_install i WHERE i.id = $1::uuid \
                         ON CONFLICT (install_id) DO UPDATE SET ciphertext = EXCLUDED.ciphertext, \
                         algorithm = EXCLUDED.algorithm, transit_key = EXCLUDED.transit_key, \
                         transit_mount = EXCLUDED.transit_mount, version = EXCLUDED.version, \
                         expires_at = EXCLUDED.expires_at, updated_at = now()",
                        &[&install_id, &s.ciphertext, &s.algorithm, &s.key_path, &s.mount, &s.version, &s.expires_at],
                    )
                    .await
            }
            None => {
                client
                    .execute(
                        "WITH d AS (DELETE FROM tenant_extension_install_secrets WHERE install_id = $1) \
                         SELECT 1 FROM tenant_extension_install WHERE id = $1",
                        &[&install_id],
                    )
                    .await
            }
        }
        .map_err(pg_error)?;
        if touched == 0 {
            return Err(StoreError::NotFound(format!("install {install_id}")));
        }
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.execute("SELECT 1", &[]).await.map_err(pg_error)?;
        Ok(())
    }
}

async fn bump_trust_revision(tx: &impl GenericClient) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO trust_revision (singleton, revision) VALUES (true, 1) \
         ON CONFLICT (singleton) DO UPDATE SET revision = trust_revision.revision + 1, updated_at = now()",
        &[],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// The install row; NotFound when absent.
async fn select_install(client: &impl GenericClient, install_id: Uuid) -> StoreResult<InstallRow> {
    let row = client
        .query_opt(SELECT_INSTALL, &[&install_id])
        .await
        .map_err(pg_error)?;
    match row {
        Some(row) => install_from_row(&row),
        None => Err(StoreError::NotFound(format!("install {install_id}"))),
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

// ---- row decoding ----

fn col<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> StoreResult<T> {
    row.try_get(name)
        .map_err(|e| StoreError::Internal(format!("decode column {name}: {e}")))
}

fn to_i64(value: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(value)
        .map_err(|_| StoreError::Internal(format!("{what} {value} is out of range")))
}

fn to_u64(value: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Internal(format!("{what} {value} is negative")))
}

fn extension_from_row(row: &Row) -> StoreResult<ExtensionRow> {
    Ok(ExtensionRow {
        id: col(row, "r_id")?,
        publisher: col(row, "r_publisher")?,
        name: col(row, "r_name")?,
        created_at: col(row, "r_created_at")?,
    })
}

fn version_from_row(row: &Row) -> StoreResult<VersionRow> {
    let id: Uuid = col(row, "v_id")?;
    let endpoints: Value = col(row, "v_api_endpoints")?;
    let endpoints = serde_json::from_value(endpoints)
        .map_err(|e| StoreError::Internal(format!("decode endpoints of version {id}: {e}")))?;
    let size_bytes: Option<i64> = col(row, "b_size_bytes")?;
    Ok(VersionRow {
        id,
        registry_id: col(row, "r_id")?,
        publisher: col(row, "r_publisher")?,
        name: col(row, "r_name")?,
        version: col(row, "v_version")?,
        manifest_version: col(row, "v_manifest_version")?,
        runtime: col(row, "v_runtime")?,
        main_entry: col(row, "v_main_entry")?,
        endpoints,
        ui: col::<Option<Value>>(row, "v_ui")?
            .as_ref()
            .and_then(ui_from_json),
        capabilities: strings_from_json(col(row, "v_capabilities")?),
        deprecated: col(row, "v_deprecated")?,
        deprecation_reason: col(row, "v_deprecation_reason")?,
        created_at: col(row, "v_created_at")?,
        bundle: BundleRow {
            id: col(row, "b_id")?,
            version_id: id,
            content_hash: col(row, "b_content_hash")?,
            // Null in rows Alga wrote (it stores no signature).
            signature: col::<Option<String>>(row, "b_signature")?.unwrap_or_default(),
            signing_key_id: col::<Option<String>>(row, "b_signing_key_id")?.unwrap_or_default(),
            size_bytes: to_u64(size_bytes.unwrap_or(0), "bundle size")?,
            created_at: col(row, "b_created_at")?,
        },
    })
}

fn install_from_row(row: &Row) -> StoreResult<InstallRow> {
    let id: Uuid = col(row, "i_id")?;
    let status: String = col(row, "i_status")?;
    let status = InstallStatus::parse(&status).ok_or_else(|| {
        StoreError::Internal(format!("install {id} has unknown status {status:?}"))
    })?;
    Ok(InstallRow {
        id,
        tenant_id: col(row, "i_tenant_id")?,
        registry_id: col(row, "i_registry_id")?,
        version_id: col(row, "i_version_id")?,
        granted_caps: strings_from_json(col(row, "i_granted_caps")?),
        enabled: col(row, "i_is_enabled")?,
        status,
        egress_allowlist: strings_from_json(col(row, "i_egress_allowlist")?),
        config: config_from_json(col(row, "i_config")?),
        config_version: col(row, "i_config_version")?,
        created_at: col(row, "i_created_at")?,
        updated_at: col(row, "i_updated_at")?,
    })
}

fn install_view_from_row(row: &Row) -> StoreResult<InstallView> {
    let ciphertext: Option<String> = col(row, "s_ciphertext")?;
    let secrets = match ciphertext {
        None => None,
        Some(ciphertext) => Some(SecretsRow {
            ciphertext,
            algorithm: col(row, "s_algorithm")?,
            key_path: col(row, "s_transit_key")?,
            mount: col(row, "s_transit_mount")?,
            version: col::<Option<String>>(row, "s_version")?.unwrap_or_default(),
            expires_at: col::<Option<DateTime<Utc>>>(row, "s_expires_at")?,
        }),
    };
    Ok(InstallView {
        install: install_from_row(row)?,
        extension: extension_from_row(row)?,
        version: version_from_row(row)?,
        secrets,
    })
}

fn key_from_row(row: &Row) -> StoreResult<KeyRow> {
    Ok(KeyRow {
        key_id: col(row, "key_id")?,
        publisher: col(row, "publisher")?,
        public_key: col(row, "public_key")?,
        not_before: col(row, "not_before")?,
        not_after: col(row, "not_after")?,
        revoked_at: col(row, "revoked_at")?,
        created_at: col(row, "created_at")?,
    })
}

// ---- JSON columns ----

fn strings_to_json(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

/// The string entries of a JSON array; anything else is dropped.
fn strings_from_json(value: Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn config_to_json(config: &BTreeMap<String, String>) -> Value {
    Value::Object(
        config
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// A config object as strings, coerced as Alga does for rows it wrote: null
/// becomes `""`, other non-strings their JSON text.
fn config_from_json(value: Value) -> BTreeMap<String, String> {
    let Value::Object(map) = value else {
        return BTreeMap::new();
    };
    map.into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k, v)
        })
        .collect()
}

/// Alga's stored `ui`: `{type:'iframe', entry, hooks?: {appMenu?: {label}, clientPortalMenu?: {label}}}`.
fn ui_to_json(ui: &UiRow) -> Value {
    let mut hooks = serde_json::Map::new();
    if let Some(label) = &ui.app_menu_label {
        hooks.insert("appMenu".to_owned(), json!({ "label": label }));
    }
    if let Some(label) = &ui.client_portal_menu_label {
        hooks.insert("clientPortalMenu".to_owned(), json!({ "label": label }));
    }
    let mut value = json!({ "type": "iframe", "entry": ui.entry });
    if !hooks.is_empty() {
        value["hooks"] = Value::Object(hooks);
    }
    value
}

fn ui_from_json(value: &Value) -> Option<UiRow> {
    let entry = value.get("entry")?.as_str()?.to_owned();
    let label = |hook: &str| {
        value
            .get("hooks")?
            .get(hook)?
            .get("label")?
            .as_str()
            .map(str::to_owned)
    };
    Some(UiRow {
        entry,
        app_menu_label: label("appMenu"),
        client_portal_menu_label: label("clientPortalMenu"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ui_round_trips_through_alga_shape() {
        let ui = UiRow {
            entry: "ui/index.html".into(),
            app_menu_label: Some("Menu".into()),
            client_portal_menu_label: None,
        };
        let stored = ui_to_json(&ui);
        assert_eq!(
            stored,
            json!({"type": "iframe", "entry": "ui/index.html", "hooks": {"appMenu": {"label": "Menu"}}})
        );
        assert_eq!(ui_from_json(&stored), Some(ui));
        assert_eq!(ui_from_json(&json!({"type": "iframe"})), None);
    }

    #[test]
    fn config_written_by_alga_is_coerced_to_strings() {
        let config = config_from_json(json!({"a": "x", "b": 3, "c": null, "d": {"e": true}}));
        let expected: BTreeMap<String, String> =
            [("a", "x"), ("b", "3"), ("c", ""), ("d", r#"{"e":true}"#)]
                .map(|(k, v)| (k.into(), v.into()))
                .into();
        assert_eq!(config, expected);
        assert!(config_from_json(json!([1])).is_empty());
    }
}
