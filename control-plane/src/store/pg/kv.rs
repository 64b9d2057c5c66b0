//! Extension KV storage on Postgres (`ext_storage_records`). Expired rows of
//! the scope are deleted at the start of every call; a put holds a
//! transaction-scoped advisory lock per install, so the quotas hold under
//! concurrent first writes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::cached::Cached;
use super::rows::{col, to_i64, to_u64};
use super::{PgStore, pg_error};
use crate::store::{
    KvStore, StoragePut, StorageQuota, StorageRow, StorageSchema, StorageScope, StoreError,
    StoreResult,
};

const STORAGE_COLUMNS: &str =
    "namespace, key, value, metadata, revision, ttl_expires_at, created_at, updated_at";

fn storage_from_row(row: &Row) -> StoreResult<StorageRow> {
    Ok(StorageRow {
        namespace: col(row, "namespace")?,
        key: col(row, "key")?,
        value: col(row, "value")?,
        metadata: col(row, "metadata")?,
        revision: to_u64(col::<i64>(row, "revision")?, "revision")?,
        ttl_expires_at: col(row, "ttl_expires_at")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

/// Deletes the scope's expired rows (Alga deletes lazily on every operation).
async fn expire(
    client: &(impl Cached + Sync),
    scope: &StorageScope,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    client
        .execute_c(
            "DELETE FROM ext_storage_records WHERE tenant_id = $1 AND extension_install_id = $2 \
             AND ttl_expires_at IS NOT NULL AND ttl_expires_at <= $3",
            &[&scope.tenant_id, &scope.install_id, &now],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// One writer per install at a time, so quota checks hold under concurrent
/// first writes (a transaction-scoped advisory lock).
async fn lock_scope(tx: &(impl Cached + Sync), scope: &StorageScope) -> StoreResult<()> {
    let lock = format!("ext-storage:{}:{}", scope.tenant_id, scope.install_id);
    tx.execute_c(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&lock],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

fn schema_from_row(row: &Row) -> StoreResult<StorageSchema> {
    Ok(StorageSchema {
        namespace: col(row, "namespace")?,
        version: u32::try_from(col::<i32>(row, "schema_version")?)
            .map_err(|_| StoreError::Internal("negative schema version".into()))?,
        document: col(row, "schema_document")?,
        created_at: col(row, "created_at")?,
    })
}

/// One put inside a transaction that holds the scope's lock: revision and
/// quota checks, then the upsert.
async fn put_locked(
    tx: &(impl Cached + Sync),
    scope: &StorageScope,
    put: StoragePut,
    quota: StorageQuota,
    now: DateTime<Utc>,
) -> StoreResult<StorageRow> {
    let existing = tx
            .query_opt_c(
                "SELECT revision, value_size_bytes + metadata_size_bytes AS size FROM ext_storage_records \
                 WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3 AND key = $4",
                &[&scope.tenant_id, &scope.install_id, &put.namespace, &put.key],
            )
            .await
            .map_err(pg_error)?;
    let (old_revision, old_size) = match &existing {
        Some(row) => (
            Some(to_u64(col::<i64>(row, "revision")?, "revision")?),
            i64::from(col::<i32>(row, "size")?),
        ),
        None => (None, 0),
    };
    match (old_revision, put.if_revision) {
        (Some(current), Some(want)) if current != want => {
            return Err(StoreError::RevisionMismatch);
        }
        (None, Some(_)) => return Err(StoreError::RevisionMismatch),
        _ => {}
    }
    let usage = tx
        .query_one_c(
            "SELECT COALESCE(SUM(value_size_bytes + metadata_size_bytes), 0)::bigint AS bytes, \
                 COUNT(DISTINCT namespace)::bigint AS namespaces, \
                 COUNT(*) FILTER (WHERE namespace = $3)::bigint AS keys, \
                 BOOL_OR(namespace = $3) AS has_namespace \
                 FROM ext_storage_records WHERE tenant_id = $1 AND extension_install_id = $2",
            &[&scope.tenant_id, &scope.install_id, &put.namespace],
        )
        .await
        .map_err(pg_error)?;
    let bytes: i64 = col(&usage, "bytes")?;
    let namespaces: i64 = col(&usage, "namespaces")?;
    let keys: i64 = col(&usage, "keys")?;
    let has_namespace = col::<Option<bool>>(&usage, "has_namespace")?.unwrap_or(false);
    if old_revision.is_none() {
        if !has_namespace && namespaces >= to_i64(quota.max_namespaces, "quota")? {
            return Err(StoreError::QuotaExceeded(format!(
                "at most {} namespaces per install",
                quota.max_namespaces
            )));
        }
        if keys >= to_i64(quota.max_keys_per_namespace, "quota")? {
            return Err(StoreError::QuotaExceeded(format!(
                "at most {} keys per namespace",
                quota.max_keys_per_namespace
            )));
        }
    }
    let new_size = to_i64(put.size_bytes, "size")?;
    if bytes - old_size + new_size > to_i64(quota.max_bytes, "quota")? {
        return Err(StoreError::QuotaExceeded(format!(
            "at most {} bytes per install",
            quota.max_bytes
        )));
    }
    let metadata_size = i32::try_from(put.metadata.to_string().len()).unwrap_or(i32::MAX);
    let value_size = i32::try_from(new_size)
        .unwrap_or(i32::MAX)
        .saturating_sub(metadata_size);
    let row = tx
            .query_one_c(
                &format!(
                    "INSERT INTO ext_storage_records (tenant_id, extension_install_id, namespace, key, revision, value, \
                     metadata, value_size_bytes, metadata_size_bytes, ttl_expires_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $10, $10) \
                     ON CONFLICT (tenant_id, extension_install_id, namespace, key) DO UPDATE SET \
                     revision = ext_storage_records.revision + 1, value = EXCLUDED.value, metadata = EXCLUDED.metadata, \
                     value_size_bytes = EXCLUDED.value_size_bytes, metadata_size_bytes = EXCLUDED.metadata_size_bytes, \
                     ttl_expires_at = EXCLUDED.ttl_expires_at, updated_at = EXCLUDED.updated_at \
                     RETURNING {STORAGE_COLUMNS}"
                ),
                &[
                    &scope.tenant_id,
                    &scope.install_id,
                    &put.namespace,
                    &put.key,
                    &put.value,
                    &put.metadata,
                    &value_size,
                    &metadata_size,
                    &put.ttl_expires_at,
                    &now,
                ],
            )
            .await
            .map_err(|e| match e.code() {
                // The install was deleted meanwhile.
                Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => StoreError::NotFound("install".into()),
                _ => pg_error(e),
            })?;
    storage_from_row(&row)
}

#[async_trait]
impl KvStore for PgStore {
    async fn storage_get(
        &self,
        scope: &StorageScope,
        namespace: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StorageRow>> {
        let client = self.client().await?;
        expire(&client, scope, now).await?;
        let row = client
            .query_opt_c(
                &format!(
                    "SELECT {STORAGE_COLUMNS} FROM ext_storage_records \
                     WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3 AND key = $4"
                ),
                &[&scope.tenant_id, &scope.install_id, &namespace, &key],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(storage_from_row).transpose()
    }

    async fn storage_put(
        &self,
        scope: &StorageScope,
        put: StoragePut,
        quota: StorageQuota,
        now: DateTime<Utc>,
    ) -> StoreResult<StorageRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        lock_scope(&tx, scope).await?;
        expire(&tx, scope, now).await?;
        let row = put_locked(&tx, scope, put, quota, now).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(row)
    }

    async fn storage_put_many(
        &self,
        scope: &StorageScope,
        puts: Vec<StoragePut>,
        quota: StorageQuota,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StorageRow>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        lock_scope(&tx, scope).await?;
        expire(&tx, scope, now).await?;
        let mut rows = Vec::with_capacity(puts.len());
        for put in puts {
            // An error drops the transaction: none of the puts stays.
            rows.push(put_locked(&tx, scope, put, quota, now).await?);
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(rows)
    }

    async fn storage_schema(
        &self,
        scope: &StorageScope,
        namespace: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<StorageSchema>> {
        let client = self.client().await?;
        let version = version.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
        let row = client
            .query_opt_c(
                "SELECT namespace, schema_version, schema_document, created_at FROM ext_storage_schemas \
                 WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3 \
                 AND status = 'active' AND ($4::int IS NULL OR schema_version = $4) \
                 ORDER BY schema_version DESC LIMIT 1",
                &[&scope.tenant_id, &scope.install_id, &namespace, &version],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(schema_from_row).transpose()
    }

    async fn add_storage_schema(
        &self,
        scope: &StorageScope,
        namespace: &str,
        document: serde_json::Value,
    ) -> StoreResult<StorageSchema> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        lock_scope(&tx, scope).await?;
        let row = tx
            .query_one_c(
                "INSERT INTO ext_storage_schemas (tenant_id, extension_install_id, namespace, schema_version, schema_document) \
                 SELECT $1::text, $2::uuid, $3::text, COALESCE(MAX(schema_version), 0) + 1, $4::jsonb \
                 FROM ext_storage_schemas \
                 WHERE tenant_id = $1::text AND extension_install_id = $2::uuid AND namespace = $3::text \
                 RETURNING namespace, schema_version, schema_document, created_at",
                &[&scope.tenant_id, &scope.install_id, &namespace, &document],
            )
            .await
            .map_err(|e| match e.code() {
                Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => StoreError::NotFound("install".into()),
                _ => pg_error(e),
            })?;
        let schema = schema_from_row(&row)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(schema)
    }

    async fn list_storage_schemas(&self, scope: &StorageScope) -> StoreResult<Vec<StorageSchema>> {
        let client = self.client().await?;
        let rows = client
            .query_c(
                "SELECT namespace, schema_version, schema_document, created_at FROM ext_storage_schemas \
                 WHERE tenant_id = $1 AND extension_install_id = $2 AND status = 'active' \
                 ORDER BY namespace COLLATE \"C\", schema_version",
                &[&scope.tenant_id, &scope.install_id],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(schema_from_row).collect()
    }

    async fn storage_delete(
        &self,
        scope: &StorageScope,
        namespace: &str,
        key: &str,
        if_revision: Option<u64>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        expire(&client, scope, now).await?;
        let deleted = client
            .query_opt_c(
                "DELETE FROM ext_storage_records WHERE tenant_id = $1 AND extension_install_id = $2 \
                 AND namespace = $3 AND key = $4 AND ($5::bigint IS NULL OR revision = $5) RETURNING revision",
                &[
                    &scope.tenant_id,
                    &scope.install_id,
                    &namespace,
                    &key,
                    &if_revision.map(|r| to_i64(r, "revision")).transpose()?,
                ],
            )
            .await
            .map_err(pg_error)?;
        if deleted.is_some() {
            return Ok(true);
        }
        if if_revision.is_some() {
            // Absent, or present with another revision?
            let exists = client
                .query_opt_c(
                    "SELECT 1 FROM ext_storage_records WHERE tenant_id = $1 AND extension_install_id = $2 \
                     AND namespace = $3 AND key = $4",
                    &[&scope.tenant_id, &scope.install_id, &namespace, &key],
                )
                .await
                .map_err(pg_error)?;
            if exists.is_some() {
                return Err(StoreError::RevisionMismatch);
            }
        }
        Ok(false)
    }

    async fn storage_list(
        &self,
        scope: &StorageScope,
        namespace: &str,
        after_key: Option<&str>,
        prefix: Option<&str>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StorageRow>> {
        let client = self.client().await?;
        expire(&client, scope, now).await?;
        // `starts_with` keeps `%` and `_` in the prefix literal.
        let rows = client
            .query_c(
                &format!(
                    "SELECT {STORAGE_COLUMNS} FROM ext_storage_records \
                     WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3 \
                     AND ($4::text IS NULL OR key COLLATE \"C\" > $4) AND ($5::text IS NULL OR starts_with(key, $5)) \
                     ORDER BY key COLLATE \"C\" LIMIT $6"
                ),
                &[&scope.tenant_id, &scope.install_id, &namespace, &after_key, &prefix, &i64::from(limit)],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(storage_from_row).collect()
    }
}
