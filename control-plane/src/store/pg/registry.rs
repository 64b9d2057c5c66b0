//! Extensions, versions, bundles and endpoint rows on Postgres. A publish is
//! one transaction holding the registry row's lock, so versions of one
//! extension are written one at a time.

use async_trait::async_trait;
use tokio_postgres::IsolationLevel;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::rows::{col, extension_from_row, strings_to_json, to_i64, ui_to_json, version_from_row};
use super::{PgStore, pg_error};
use crate::store::{
    ExtensionRow, ExtensionSelector, NewVersion, RegistryStore, StoreError, StoreResult,
    VersionRow, VersionSpec, resolve_wildcard,
};

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

#[async_trait]
impl RegistryStore for PgStore {
    async fn publish_version(&self, new: NewVersion) -> StoreResult<(ExtensionRow, VersionRow)> {
        let mut client = self.client().await?;
        // Explicitly READ COMMITTED (whatever the database's default): after waiting
        // for the registry row's lock, each statement sees the publish that held it.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(pg_error)?;

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
}
