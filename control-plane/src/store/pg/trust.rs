//! Publisher keys (`publisher_keys`) and the trust revision on Postgres:
//! every change to the key set bumps the revision in the same transaction.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::IsolationLevel;
use tokio_postgres::error::SqlState;

use super::rows::{col, key_from_row, to_u64};
use super::{PgStore, pg_error};
use crate::store::{KeyRow, StoreError, StoreResult, TrustStore};

const KEY_COLUMNS: &str =
    "key_id, publisher, public_key, not_before, not_after, revoked_at, created_at";

#[async_trait]
impl TrustStore for PgStore {
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
