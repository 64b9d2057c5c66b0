//! Extension KV storage on Postgres (`ext_storage_records`). Reads skip
//! expired rows; writes delete the scope's expired rows first (Alga deletes
//! them lazily on every call), so quotas never count them. A write holds a
//! transaction-scoped advisory lock per install, so the quotas hold under
//! concurrent first writes.
//!
//! Puts are committed in groups: the puts of one install that arrive while
//! its previous transaction runs wait for the next one, which applies them in
//! arrival order, each with its own checks, and commits once. A put is
//! answered only after that commit, so an acknowledged write is as durable as
//! before; what the group saves is the lock, the expiry sweep and the commit
//! (and its WAL flush) per put, which serialised one install's writes. The
//! quota and revision checks read the install's usage and the rows the group
//! names once per transaction, so a put costs one statement, its upsert.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

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

/// Deletes the scope's expired rows (before every write).
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

/// What the quota and revision checks of a transaction's puts need of the
/// install's rows: read once, after the lock and the expiry sweep, and kept
/// current as the puts apply, instead of two queries per put.
struct Usage {
    /// Namespace → (keys, bytes).
    namespaces: HashMap<String, (i64, i64)>,
    /// (namespace, key) → (revision, size) of the rows the puts name that
    /// exist.
    rows: HashMap<(String, String), (u64, i64)>,
}

impl Usage {
    async fn load(
        tx: &(impl Cached + Sync),
        scope: &StorageScope,
        puts: &[&StoragePut],
    ) -> StoreResult<Usage> {
        let per_namespace = tx
            .query_c(
                "SELECT namespace, COUNT(*)::bigint AS keys, \
                 COALESCE(SUM(value_size_bytes + metadata_size_bytes), 0)::bigint AS bytes \
                 FROM ext_storage_records WHERE tenant_id = $1 AND extension_install_id = $2 \
                 GROUP BY namespace",
                &[&scope.tenant_id, &scope.install_id],
            )
            .await
            .map_err(pg_error)?;
        let mut namespaces = HashMap::with_capacity(per_namespace.len());
        for row in &per_namespace {
            namespaces.insert(
                col::<String>(row, "namespace")?,
                (col::<i64>(row, "keys")?, col::<i64>(row, "bytes")?),
            );
        }
        let names: Vec<&str> = puts.iter().map(|p| p.namespace.as_str()).collect();
        let keys: Vec<&str> = puts.iter().map(|p| p.key.as_str()).collect();
        let existing = tx
            .query_c(
                "SELECT r.namespace, r.key, r.revision, r.value_size_bytes + r.metadata_size_bytes AS size \
                 FROM ext_storage_records r \
                 WHERE r.tenant_id = $1 AND r.extension_install_id = $2 \
                 AND (r.namespace, r.key) IN (SELECT n, k FROM unnest($3::text[], $4::text[]) AS w(n, k))",
                &[&scope.tenant_id, &scope.install_id, &names, &keys],
            )
            .await
            .map_err(pg_error)?;
        let mut rows = HashMap::with_capacity(existing.len());
        for row in &existing {
            rows.insert(
                (col::<String>(row, "namespace")?, col::<String>(row, "key")?),
                (
                    to_u64(col::<i64>(row, "revision")?, "revision")?,
                    i64::from(col::<i32>(row, "size")?),
                ),
            );
        }
        Ok(Usage { namespaces, rows })
    }
}

/// One put inside a transaction that holds the scope's lock, checked
/// against `usage` (revision, quotas), then the upsert; `usage` follows it.
async fn put_locked(
    tx: &(impl Cached + Sync),
    scope: &StorageScope,
    usage: &mut Usage,
    put: &StoragePut,
    quota: StorageQuota,
    now: DateTime<Utc>,
) -> StoreResult<StorageRow> {
    let slot = (put.namespace.clone(), put.key.clone());
    let (old_revision, old_size) = match usage.rows.get(&slot) {
        Some(&(revision, size)) => (Some(revision), size),
        None => (None, 0),
    };
    match (old_revision, put.if_revision) {
        (Some(current), Some(want)) if current != want => {
            return Err(StoreError::RevisionMismatch);
        }
        (None, Some(_)) => return Err(StoreError::RevisionMismatch),
        _ => {}
    }
    let (keys, _) = usage
        .namespaces
        .get(&put.namespace)
        .copied()
        .unwrap_or((0, 0));
    let has_namespace = keys > 0;
    let namespaces = usage.namespaces.values().filter(|(k, _)| *k > 0).count();
    let namespaces = i64::try_from(namespaces).unwrap_or(i64::MAX);
    let bytes: i64 = usage.namespaces.values().map(|(_, b)| *b).sum();
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
    let stored_size = i64::from(value_size.saturating_add(metadata_size));
    usage.rows.insert(slot, (row.revision, stored_size));
    let entry = usage
        .namespaces
        .entry(put.namespace.clone())
        .or_insert((0, 0));
    if old_revision.is_none() {
        entry.0 += 1;
    }
    entry.1 += stored_size - old_size;
    Ok(row)
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
        let row = client
            .query_opt_c(
                &format!(
                    "SELECT {STORAGE_COLUMNS} FROM ext_storage_records \
                     WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3 AND key = $4 \
                     AND (ttl_expires_at IS NULL OR ttl_expires_at > $5)"
                ),
                &[&scope.tenant_id, &scope.install_id, &namespace, &key, &now],
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
        let (reply, answer) = oneshot::channel();
        let key = (scope.tenant_id.clone(), scope.install_id);
        let start = {
            let mut queues = self.puts.0.lock();
            let queue = queues.entry(key.clone()).or_default();
            if queue.waiting.len() >= MAX_WAITING_PUTS {
                return Err(StoreError::Unavailable(format!(
                    "more than {MAX_WAITING_PUTS} storage writes of this install are waiting"
                )));
            }
            queue.waiting.push(Pending {
                put,
                quota,
                now,
                reply,
            });
            !std::mem::replace(&mut queue.committing, true)
        };
        if start {
            // Its own task: a caller that goes away must not strand the
            // puts queued behind its own.
            tokio::spawn(self.clone().commit_puts(key));
        }
        answer.await.map_err(|_| {
            StoreError::Internal("a storage write's transaction ended without an answer".into())
        })?
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
        let mut usage = Usage::load(&tx, scope, &puts.iter().collect::<Vec<_>>()).await?;
        let mut rows = Vec::with_capacity(puts.len());
        for put in puts {
            // An error drops the transaction: none of the puts stays.
            rows.push(put_locked(&tx, scope, &mut usage, &put, quota, now).await?);
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
        // `starts_with` keeps `%` and `_` in the prefix literal.
        let rows = client
            .query_c(
                &format!(
                    "SELECT {STORAGE_COLUMNS} FROM ext_storage_records \
                     WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3 \
                     AND ($4::text IS NULL OR key COLLATE \"C\" > $4) AND ($5::text IS NULL OR starts_with(key, $5)) \
                     AND (ttl_expires_at IS NULL OR ttl_expires_at > $7) \
                     ORDER BY key COLLATE \"C\" LIMIT $6"
                ),
                &[&scope.tenant_id, &scope.install_id, &namespace, &after_key, &prefix, &i64::from(limit), &now],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(storage_from_row).collect()
    }
}

/// The most puts of one install waiting for its next transaction; beyond
/// it a put is refused as unavailable (retry later) rather than queued
/// without bound.
const MAX_WAITING_PUTS: usize = 256;

/// The most puts one transaction applies.
const MAX_GROUP_PUTS: usize = 64;

/// Storage puts waiting per install, and whether a transaction for that
/// install is running.
#[derive(Default)]
pub(super) struct PutQueues(Mutex<HashMap<(String, Uuid), PutQueue>>);

#[derive(Default)]
struct PutQueue {
    waiting: Vec<Pending>,
    committing: bool,
}

struct Pending {
    put: StoragePut,
    quota: StorageQuota,
    now: DateTime<Utc>,
    reply: oneshot::Sender<StoreResult<StorageRow>>,
}

/// Ends an install's committing run however it ends (a panic included):
/// the install's queue is forgotten and whoever still waits in it is
/// answered with an error rather than left waiting for a transaction that
/// will not come.
struct CommitRun {
    queues: Arc<PutQueues>,
    key: (String, Uuid),
    /// Set once the run removed its queue itself, under the lock.
    done: bool,
}

impl Drop for CommitRun {
    fn drop(&mut self) {
        if !self.done {
            // Dropping the replies answers their callers with an error.
            self.queues.0.lock().remove(&self.key);
        }
    }
}

impl PgStore {
    /// Applies an install's waiting puts, a group per transaction, until
    /// none waits.
    async fn commit_puts(self, key: (String, Uuid)) {
        let mut run = CommitRun {
            queues: Arc::clone(&self.puts),
            key,
            done: false,
        };
        let scope = StorageScope {
            tenant_id: run.key.0.clone(),
            install_id: run.key.1,
        };
        let queues = Arc::clone(&run.queues);
        loop {
            let group: Vec<Pending> = {
                let mut queues = queues.0.lock();
                match queues.get_mut(&run.key) {
                    Some(queue) if !queue.waiting.is_empty() => {
                        let n = queue.waiting.len().min(MAX_GROUP_PUTS);
                        queue.waiting.drain(..n).collect()
                    }
                    _ => {
                        // Under the lock: a put arriving from now on finds
                        // no run and starts one.
                        queues.remove(&run.key);
                        run.done = true;
                        return;
                    }
                }
            };
            self.commit_group(&scope, group).await;
        }
    }

    /// One transaction for `group`: every put checked and applied in order;
    /// a put refused by its own checks (revision, quota) is answered with
    /// that refusal and the others still apply. Should the database refuse
    /// a statement (which ends the transaction), the group is applied again
    /// one put per transaction, so one bad put cannot fail the others.
    async fn commit_group(&self, scope: &StorageScope, group: Vec<Pending>) {
        let inputs: Vec<_> = group.iter().map(|p| (&p.put, p.quota, p.now)).collect();
        match self.put_group(scope, inputs).await {
            Ok(results) => {
                for (pending, result) in group.into_iter().zip(results) {
                    let _ = pending.reply.send(result);
                }
            }
            Err(GroupError::Statement(_)) if group.len() > 1 => {
                for pending in group {
                    let result = self
                        .put_group(scope, vec![(&pending.put, pending.quota, pending.now)])
                        .await
                        .map_err(GroupError::into_store_error)
                        .and_then(|mut results| {
                            results.pop().unwrap_or_else(|| {
                                Err(StoreError::Internal("a storage put went unanswered".into()))
                            })
                        });
                    let _ = pending.reply.send(result);
                }
            }
            Err(error) => {
                let error = error.into_store_error();
                for pending in group {
                    let _ = pending.reply.send(Err(error.clone()));
                }
            }
        }
    }

    async fn put_group(
        &self,
        scope: &StorageScope,
        puts: Vec<(&StoragePut, StorageQuota, DateTime<Utc>)>,
    ) -> Result<Vec<StoreResult<StorageRow>>, GroupError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        lock_scope(&tx, scope).await?;
        // The group commits after its latest put arrived: rows expired by
        // then are gone for every put of it.
        if let Some(latest) = puts.iter().map(|(_, _, now)| *now).max() {
            expire(&tx, scope, latest).await?;
        }
        let mut usage = Usage::load(
            &tx,
            scope,
            &puts.iter().map(|(p, _, _)| *p).collect::<Vec<_>>(),
        )
        .await?;
        let mut results = Vec::with_capacity(puts.len());
        for (put, quota, now) in puts {
            match put_locked(&tx, scope, &mut usage, put, quota, now).await {
                Ok(row) => results.push(Ok(row)),
                // Refused before any statement could fail: the
                // transaction goes on.
                Err(e @ (StoreError::RevisionMismatch | StoreError::QuotaExceeded(_))) => {
                    results.push(Err(e));
                }
                Err(e) => return Err(GroupError::Statement(e)),
            }
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(results)
    }
}

/// Why a group's transaction did not commit.
enum GroupError {
    /// A put's statement failed: the transaction is over, but the other
    /// puts of the group are not at fault.
    Statement(StoreError),
    /// The transaction itself failed (connection, lock, commit): every put
    /// of the group gets this error.
    Store(StoreError),
}

impl From<StoreError> for GroupError {
    fn from(error: StoreError) -> GroupError {
        GroupError::Store(error)
    }
}

impl GroupError {
    fn into_store_error(self) -> StoreError {
        match self {
            GroupError::Statement(error) | GroupError::Store(error) => error,
        }
    }
}
