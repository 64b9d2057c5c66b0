//! API keys on Postgres (`api_keys`, Alga's table): the secret's SHA-256 is
//! stored as `sha256:<hex>` in `key_hash`, permissions as the `scopes` array.

use async_trait::async_trait;
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::cached::Cached;
use super::rows::col;
use super::{PgStore, pg_error};
use crate::store::{ApiKeyRow, ApiKeyStore, StoreError, StoreResult};

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

#[async_trait]
impl ApiKeyStore for PgStore {
    async fn create_api_key(&self, key: ApiKeyRow) -> StoreResult<ApiKeyRow> {
        let client = self.client().await?;
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

    async fn list_api_keys(&self, tenant_id: &str) -> StoreResult<Vec<ApiKeyRow>> {
        let client = self.client().await?;
        let rows = client
            .query_c(
                &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"),
                &[&tenant_id],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn find_api_key(&self, id: Uuid) -> StoreResult<Option<ApiKeyRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt_c(
                &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn revoke_api_key(&self, tenant_id: &str, id: Uuid) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute_c(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 AND tenant_id = $2",
                &[&id, &tenant_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }
}
