//! Runtime rows on Postgres: API keys, the execution log, worker membership
//! and extension KV storage with its quotas.

use super::cached::Cached;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::rows::{col, to_i64, to_u64};
use super::{PgStore, pg_error};
use crate::store::{
    ApiKeyRow, ExecutionRow, StoragePut, StorageQuota, StorageRow, StorageScope, StoreError,
    StoreResult, WorkerRow,
};

// ---- API keys ----

const API_KEY_COLUMNS: &str = "id, tenant_id, name, scopes, key_hash, created_at, revoked_at";

fn api_key_from_row(row: &Row) -> StoreResult<ApiKeyRow> {
    let hash: String = col(row, "key_hash")?;
    let scopes: Value = col(row, "scopes")?;
    Ok(ApiKeyRow {
        id: col(row, "id")?,
        tenant_id: col::<Option<String>>(row, "tenant_id")?.unwrap_or_default(),
        name: col(row, "name")?,
        permissions: serde_json::from_value(scopes)
            .map_err(|e| StoreError::Internal(format!("decode scopes: {e}")))?,
        secret_sha256: hex::decode(hash.strip_prefix("sha256:").unwrap_or(&hash))
            .map_err(|e| StoreError::Internal(format!("decode key_hash: {e}")))?,
        created_at: col(row, "created_at")?,
        revoked_at: col(row, "revoked_at")?,
    })
}

pub(super) async fn create_api_key(store: &PgStore, key: ApiKeyRow) -> StoreResult<ApiKeyRow> {
    let client = store.client().await?;
    let hash = format!("sha256:{}", hex::encode(&key.secret_sha256));
    let prefix: String = format!("annex_{}", &key.id.simple().to_string()[..8]);
    let scopes = serde_json::json!(key.permissions);
    let row = client
        .query_one_c(
            &format!(
                "INSERT INTO api_keys (id, key_hash, key_prefix, tenant_id, name, scopes, created_at, revoked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {API_KEY_COLUMNS}"
            ),
            &[&key.id, &hash, &prefix, &key.tenant_id, &key.name, &scopes, &key.created_at, &key.revoked_at],
        )
        .await
        .map_err(|e| match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::AlreadyExists(format!("api key {}", key.id)),
            _ => pg_error(e),
        })?;
    api_key_from_row(&row)
}

pub(super) async fn list_api_keys(store: &PgStore, tenant_id: &str) -> StoreResult<Vec<ApiKeyRow>> {
    let client = store.client().await?;
    let rows = client
        .query_c(
            &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"),
            &[&tenant_id],
        )
        .await
        .map_err(pg_error)?;
    rows.iter().map(api_key_from_row).collect()
}

pub(super) async fn find_api_key(store: &PgStore, id: Uuid) -> StoreResult<Option<ApiKeyRow>> {
    let client = store.client().await?;
    let row = client
        .query_opt_c(
            &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(pg_error)?;
    row.as_ref().map(api_key_from_row).transpose()
}

pub(super) async fn revoke_api_key(
    store: &PgStore,
    tenant_id: &str,
    id: Uuid,
) -> StoreResult<bool> {
    let client = store.client().await?;
    let n = client
        .execute_c(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 AND tenant_id = $2",
            &[&id, &tenant_id],
        )
        .await
        .map_err(pg_error)?;
    Ok(n > 0)
}

// ---- execution log ----

pub(super) async fn record_executions(store: &PgStore, rows: Vec<ExecutionRow>) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // One statement per batch: edges ship hundreds of rows at a time, and a
    // round trip per row caps how many audited requests a second the fleet serves.
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let tenants: Vec<&str> = rows.iter().map(|r| r.tenant_id.as_str()).collect();
    let registries: Vec<Uuid> = rows.iter().map(|r| r.registry_id).collect();
    let versions: Vec<Uuid> = rows.iter().map(|r| r.version_id).collect();
    let requests: Vec<Option<&str>> = rows.iter().map(|r| r.request_id.as_deref()).collect();
    let started: Vec<DateTime<Utc>> = rows.iter().map(|r| r.started_at).collect();
    let finished: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.finished_at).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    let metrics: Vec<&Value> = rows.iter().map(|r| &r.metrics).collect();
    let errors: Vec<Option<&str>> = rows.iter().map(|r| r.error.as_deref()).collect();
    let mut client = store.client().await?;
    // Audit rows do not wait for their WAL flush: a Postgres crash may lose
    // the last few hundred milliseconds of them (never a row another
    // transaction depends on), and the batch no longer holds the pipeline
    // for an fsync.
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(pg_error)?;
    tx
        .execute_c(
            "INSERT INTO extension_execution_log \
             (id, tenant_id, registry_id, version_id, request_id, started_at, finished_at, status, metrics, error) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], \
             $6::timestamptz[], $7::timestamptz[], $8::text[], $9::jsonb[], $10::text[]) \
             ON CONFLICT (id) DO NOTHING",
            &[
                &ids,
                &tenants,
                &registries,
                &versions,
                &requests,
                &started,
                &finished,
                &statuses,
                &metrics,
                &errors,
            ],
        )
        .await
        .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(())
}

pub(super) async fn list_executions(
    store: &PgStore,
    tenant_id: &str,
    registry_id: Uuid,
    limit: u32,
) -> StoreResult<Vec<ExecutionRow>> {
    let client = store.client().await?;
    let rows = client
        .query_c(
            "SELECT id, tenant_id, registry_id, version_id, request_id, started_at, finished_at, status, \
             COALESCE(metrics, '{}'::jsonb) AS metrics, error \
             FROM extension_execution_log WHERE tenant_id = $1 AND registry_id = $2 \
             ORDER BY started_at DESC, id DESC LIMIT $3",
            &[&tenant_id, &registry_id, &i64::from(limit)],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|row| {
            Ok(ExecutionRow {
                id: col(row, "id")?,
                tenant_id: col(row, "tenant_id")?,
                registry_id: col(row, "registry_id")?,
                version_id: col(row, "version_id")?,
                request_id: col(row, "request_id")?,
                started_at: col(row, "started_at")?,
                finished_at: col(row, "finished_at")?,
                status: col(row, "status")?,
                metrics: col(row, "metrics")?,
                error: col(row, "error")?,
            })
        })
        .collect()
}

// ---- workers ----

pub(super) async fn upsert_worker(store: &PgStore, w: WorkerRow) -> StoreResult<()> {
    let client = store.client().await?;
    let hashes = serde_json::json!(w.cached_hashes);
    let capacity = i32::try_from(w.capacity).unwrap_or(i32::MAX);
    let in_flight = i32::try_from(w.in_flight).unwrap_or(i32::MAX);
    client
        .execute_c(
            "INSERT INTO workers (id, address, capacity, in_flight, draining, cached_hashes, last_heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, capacity = EXCLUDED.capacity, \
             in_flight = EXCLUDED.in_flight, draining = EXCLUDED.draining, \
             cached_hashes = EXCLUDED.cached_hashes, last_heartbeat_at = EXCLUDED.last_heartbeat_at",
            &[&w.id, &w.address, &capacity, &in_flight, &w.draining, &hashes, &w.last_seen],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}

pub(super) async fn active_content_hashes(store: &PgStore) -> StoreResult<Vec<String>> {
    let client = store.client().await?;
    let rows = client
        .query_c(
            "SELECT DISTINCT b.content_hash FROM tenant_extension_install i \
             JOIN extension_bundle b ON b.version_id = i.version_id \
             WHERE i.is_enabled AND i.status = 'enabled' ORDER BY b.content_hash",
            &[],
        )
        .await
        .map_err(pg_error)?;
    rows.iter().map(|row| col(row, "content_hash")).collect()
}

pub(super) async fn list_workers(
    store: &PgStore,
    since: DateTime<Utc>,
) -> StoreResult<Vec<WorkerRow>> {
    let client = store.client().await?;
    let rows = client
        .query_c(
            "SELECT id, address, capacity, in_flight, draining, cached_hashes, last_heartbeat_at \
             FROM workers WHERE last_heartbeat_at >= $1 ORDER BY id",
            &[&since],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|row| {
            let hashes: Value = col(row, "cached_hashes")?;
            Ok(WorkerRow {
                id: col(row, "id")?,
                address: col(row, "address")?,
                capacity: u32::try_from(col::<i32>(row, "capacity")?).unwrap_or(0),
                in_flight: u32::try_from(col::<i32>(row, "in_flight")?).unwrap_or(0),
                draining: col(row, "draining")?,
                cached_hashes: serde_json::from_value(hashes).unwrap_or_default(),
                last_seen: col(row, "last_heartbeat_at")?,
            })
        })
        .collect()
}

// ---- KV storage ----

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

pub(super) async fn storage_get(
    store: &PgStore,
    scope: &StorageScope,
    namespace: &str,
    key: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<StorageRow>> {
    let client = store.client().await?;
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

pub(super) async fn storage_put(
    store: &PgStore,
    scope: &StorageScope,
    put: StoragePut,
    quota: StorageQuota,
    now: DateTime<Utc>,
) -> StoreResult<StorageRow> {
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(pg_error)?;
    // One writer per install at a time, so quota checks hold under concurrent first writes.
    let lock = format!("ext-storage:{}:{}", scope.tenant_id, scope.install_id);
    tx.execute_c(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&lock],
    )
    .await
    .map_err(pg_error)?;
    expire(&tx, scope, now).await?;
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
        (Some(current), Some(want)) if current != want => return Err(StoreError::RevisionMismatch),
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
    let row = storage_from_row(&row)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(row)
}

pub(super) async fn storage_delete(
    store: &PgStore,
    scope: &StorageScope,
    namespace: &str,
    key: &str,
    if_revision: Option<u64>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let client = store.client().await?;
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

pub(super) async fn storage_list(
    store: &PgStore,
    scope: &StorageScope,
    namespace: &str,
    after_key: Option<&str>,
    prefix: Option<&str>,
    limit: u32,
    now: DateTime<Utc>,
) -> StoreResult<Vec<StorageRow>> {
    let client = store.client().await?;
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
