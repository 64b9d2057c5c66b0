//! Installs on Postgres with their config row and sealed secrets. The install
//! row's `config` and the `tenant_extension_install_config` row are written in
//! the same transaction, and every config change gets a new version.

use std::collections::BTreeMap;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::cached::Cached;
use super::rows::{col, config_to_json, install_from_row, install_view_from_row, strings_to_json};
use super::{PgStore, pg_error};
use crate::store::{
    ExtensionSelector, InstallRow, InstallStatus, InstallStore, InstallView, NewInstall,
    SecretsRow, StoreError, StoreResult,
};

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

#[async_trait]
impl InstallStore for PgStore {
    async fn upsert_install(&self, new: NewInstall) -> StoreResult<InstallRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let caps = strings_to_json(&new.granted_caps);
        let config = config_to_json(&new.config);
        let row = tx
            .query_opt_c(
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
        tx.execute_c(
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
            .execute_c(
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
        tx.execute_c(
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
        tx.execute_c(
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
            .execute_c(
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
                        .query_opt_c(
                            select_install_views!(
                                "WHERE i.tenant_id = $1 AND (i.id = $2 OR i.registry_id = $2) \
                             ORDER BY (i.id = $2) DESC LIMIT 1"
                            ),
                            &[&tenant_id, id],
                        )
                        .await
                }
                ExtensionSelector::Slug(slug) => client
                    .query_opt_c(
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
            .query_c(
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
        tx.execute_c(
            "UPDATE tenant_extension_install SET config = $2, updated_at = now() WHERE id = $1",
            &[&install_id, &config],
        )
        .await
        .map_err(pg_error)?;
        // A missing config row (an install written by Alga) is created with the grants as providers.
        tx.execute_c(
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
                    .execute_c(
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
                    .execute_c(
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
