//! Extension KV storage as guests see it through `alga:extension/storage`
//! (docs/design/alga-compatibility.md, "Storage"): data scoped to (tenant,
//! install), revisions with compare-and-swap, TTLs, Alga's limits and
//! quotas, and listing by key with a cursor that works (the last key
//! returned, or Alga's base64url cursor).
//!
//! Values are stored the way Alga's runner writes them, a base64 string with
//! metadata `{"encoding":"base64-bytes"}`, and read back with Alga's decoding
//! rules, so rows written by other writers decode the same way. A put may
//! say its value is JSON (Annex's `storage-v2`): it is then stored as that
//! JSON with metadata `{"encoding":"json"}`. A namespace with a schema
//! ([`schema`]) takes only values that match it. Bulk puts apply up to 20
//! puts of one namespace as one transaction.
//!
//! [`Storage`] holds compiled schemas and, for [`NEWEST_SCHEMA_TTL`], which
//! schema is a namespace's newest (most puts name none, so without it every
//! put queried for one); the scope of every call comes from its verified
//! execution grant, never from the request.

mod schema;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annex_bundle::capability::Capability;
use annex_proto::{AnnexError, ErrorCode};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::grant::VerifiedGrant;
use crate::installs::Installs;
use crate::store::{StoragePut, StorageQuota, StorageRow, StorageSchema, StorageScope, Store};

const MAX_NAMESPACE: usize = 128;
const MAX_KEY: usize = 256;
const MAX_VALUE_BYTES: usize = 64 * 1024;
const MIN_TTL_SECS: u64 = 60;
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;
const DEFAULT_LIST_LIMIT: u32 = 25;
const MAX_LIST_LIMIT: u32 = 100;
/// Items of one bulk put, and their values' JSON size in all.
const MAX_BULK_ITEMS: usize = 20;
const MAX_BULK_BYTES: usize = 512 * 1024;

/// A record with its value decoded to bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub(crate) namespace: String,
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) metadata: Value,
    pub(crate) revision: u64,
    pub(crate) ttl_expires_at: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

/// A guest's put.
#[derive(Debug, Clone, Default)]
pub(crate) struct PutRequest {
    pub(crate) namespace: String,
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) if_revision: Option<u64>,
    pub(crate) options: PutOptions,
}

/// What a put may ask for beyond Alga's (`storage-v2`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PutOptions {
    pub(crate) ttl_seconds: Option<u64>,
    /// The value is JSON text, stored as JSON.
    pub(crate) json: bool,
    /// Check against this schema version instead of the newest.
    pub(crate) schema_version: Option<u32>,
}

/// A guest's bulk put: several keys of one namespace, one set of options.
#[derive(Debug, Clone, Default)]
pub(crate) struct BulkPutRequest {
    pub(crate) namespace: String,
    /// (key, value, if_revision), applied in order.
    pub(crate) items: Vec<(String, Vec<u8>, Option<u64>)>,
    pub(crate) options: PutOptions,
}

/// A guest's list.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListRequest {
    pub(crate) namespace: String,
    pub(crate) cursor: Option<String>,
    pub(crate) limit: Option<u32>,
    pub(crate) key_prefix: Option<String>,
}

/// The KV host API.
pub(crate) struct Storage {
    store: Arc<dyn Store>,
    installs: Arc<Installs>,
    schemas: schema::Compiled,
    newest: NewestSchemas,
}

/// How long the answer to "which schema is this namespace's newest (or has
/// it none)" is used: a schema added through this replica applies to the
/// next put at once, one added through another replica within this time.
pub(crate) const NEWEST_SCHEMA_TTL: Duration = Duration::from_secs(1);

/// Entries kept at most; when full, the cache starts over.
const MAX_NEWEST_SCHEMAS: usize = 4096;

type NamespaceKey = (String, Uuid, String);

/// Newest schema per (tenant, install, namespace). A schema added through
/// this replica bumps the generation and empties the cache; a lookup that
/// read before that stores nothing.
#[derive(Default)]
struct NewestSchemas {
    entries: Mutex<HashMap<NamespaceKey, (Instant, Option<StorageSchema>)>>,
    generation: AtomicU64,
}

impl NewestSchemas {
    fn get(&self, key: &NamespaceKey) -> Option<Option<StorageSchema>> {
        let entries = self.entries.lock();
        let (at, schema) = entries.get(key)?;
        (at.elapsed() < NEWEST_SCHEMA_TTL).then(|| schema.clone())
    }

    fn put(&self, key: NamespaceKey, generation: u64, schema: Option<StorageSchema>) {
        let mut entries = self.entries.lock();
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if entries.len() >= MAX_NEWEST_SCHEMAS {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), schema));
    }

    fn changed(&self) {
        let mut entries = self.entries.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }
}

impl Storage {
    pub(crate) fn new(store: Arc<dyn Store>, installs: Arc<Installs>) -> Storage {
        Storage {
            store,
            installs,
            schemas: schema::Compiled::default(),
            newest: NewestSchemas::default(),
        }
    }

    /// The grant's data: it must carry `cap:storage.kv` and its install must
    /// still be active.
    async fn scope(&self, grant: &VerifiedGrant) -> Result<StorageScope, AnnexError> {
        grant.require(Capability::StorageKv)?;
        // Alga: the install must be enabled, else the call is unauthorised.
        if self.installs.granted_install(grant).await?.is_none() {
            return Err(AnnexError::new(
                ErrorCode::GrantInvalid,
                "the install is not active",
            ));
        }
        Ok(StorageScope {
            tenant_id: grant.tenant().to_owned(),
            install_id: grant.install(),
        })
    }

    pub(crate) async fn get(
        &self,
        grant: &VerifiedGrant,
        namespace: &str,
        key: &str,
    ) -> Result<Record, AnnexError> {
        let scope = self.scope(grant).await?;
        check_namespace(namespace)?;
        check_key(key)?;
        let row = self
            .store
            .storage_get(&scope, namespace, key, Utc::now())
            .await
            .map_err(AnnexError::from)?
            .ok_or_else(|| AnnexError::new(ErrorCode::NotFound, "no such key"))?;
        Ok(decode(row))
    }

    pub(crate) async fn put(
        &self,
        grant: &VerifiedGrant,
        put: PutRequest,
    ) -> Result<Record, AnnexError> {
        let scope = self.scope(grant).await?;
        check_namespace(&put.namespace)?;
        let now = Utc::now();
        let schema = self
            .schema_of(&scope, &put.namespace, put.options.schema_version)
            .await?;
        let row = self.prepare(
            &scope,
            schema.as_ref(),
            &put.namespace,
            put.key,
            &put.value,
            put.if_revision,
            put.options,
            now,
        )?;
        let row = self
            .store
            .storage_put(&scope, row, StorageQuota::default(), now)
            .await
            .map_err(AnnexError::from)?;
        Ok(decode(row))
    }

    /// Up to [`MAX_BULK_ITEMS`] puts into one namespace, every one checked
    /// first, then applied as one transaction: all or none.
    pub(crate) async fn bulk_put(
        &self,
        grant: &VerifiedGrant,
        bulk: BulkPutRequest,
    ) -> Result<Vec<Record>, AnnexError> {
        let scope = self.scope(grant).await?;
        check_namespace(&bulk.namespace)?;
        if bulk.items.is_empty() || bulk.items.len() > MAX_BULK_ITEMS {
            return Err(AnnexError::new(
                ErrorCode::LimitExceeded,
                format!("a bulk put holds 1 to {MAX_BULK_ITEMS} items"),
            ));
        }
        let now = Utc::now();
        let schema = self
            .schema_of(&scope, &bulk.namespace, bulk.options.schema_version)
            .await?;
        let mut puts = Vec::with_capacity(bulk.items.len());
        let mut total = 0usize;
        for (key, value, if_revision) in bulk.items {
            let put = self.prepare(
                &scope,
                schema.as_ref(),
                &bulk.namespace,
                key,
                &value,
                if_revision,
                bulk.options,
                now,
            )?;
            total += usize::try_from(put.size_bytes).unwrap_or(usize::MAX);
            if total > MAX_BULK_BYTES {
                return Err(AnnexError::new(
                    ErrorCode::LimitExceeded,
                    format!("a bulk put holds at most {MAX_BULK_BYTES} bytes of JSON"),
                ));
            }
            puts.push(put);
        }
        let rows = self
            .store
            .storage_put_many(&scope, puts, StorageQuota::default(), now)
            .await
            .map_err(AnnexError::from)?;
        Ok(rows.into_iter().map(decode).collect())
    }

    /// The schema a put into `namespace` must match: `version`, or the
    /// newest; none when the namespace has none. Naming a version that does
    /// not exist is invalid.
    async fn schema_of(
        &self,
        scope: &StorageScope,
        namespace: &str,
        version: Option<u32>,
    ) -> Result<Option<StorageSchema>, AnnexError> {
        let key = (
            scope.tenant_id.clone(),
            scope.install_id,
            namespace.to_owned(),
        );
        if version.is_none()
            && let Some(newest) = self.newest.get(&key)
        {
            return Ok(newest);
        }
        let generation = self.newest.generation.load(Ordering::SeqCst);
        let schema = self
            .store
            .storage_schema(scope, namespace, version)
            .await
            .map_err(AnnexError::from)?;
        if version.is_none() {
            self.newest.put(key, generation, schema.clone());
        }
        match (version, &schema) {
            (Some(v), None) => Err(AnnexError::invalid(format!(
                "namespace {namespace} has no schema version {v}"
            ))),
            _ => Ok(schema),
        }
    }

    /// One put as stored: key and size limits, the value encoded (base64
    /// bytes, or JSON when asked), checked against `schema`, the TTL's
    /// expiry.
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        scope: &StorageScope,
        schema: Option<&StorageSchema>,
        namespace: &str,
        key: String,
        bytes: &[u8],
        if_revision: Option<u64>,
        options: PutOptions,
        now: DateTime<Utc>,
    ) -> Result<StoragePut, AnnexError> {
        check_key(&key)?;
        let (value, metadata) = if options.json {
            let value: Value = serde_json::from_slice(bytes)
                .map_err(|e| AnnexError::invalid(format!("the value is not JSON: {e}")))?;
            (value, json!({"encoding": "json"}))
        } else {
            (
                Value::String(B64.encode(bytes)),
                json!({"encoding": "base64-bytes"}),
            )
        };
        let value_len = value.to_string().len();
        if value_len > MAX_VALUE_BYTES {
            return Err(AnnexError::new(
                ErrorCode::LimitExceeded,
                format!("values are limited to {MAX_VALUE_BYTES} bytes of JSON"),
            ));
        }
        if let Some(schema) = schema {
            self.schemas
                .check(scope, namespace, schema.version, &schema.document, &value)?;
        }
        let ttl_expires_at = match options.ttl_seconds {
            None => None,
            Some(s) if (MIN_TTL_SECS..=MAX_TTL_SECS).contains(&s) => {
                Some(now + chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX)))
            }
            Some(_) => {
                return Err(AnnexError::new(
                    ErrorCode::LimitExceeded,
                    format!("ttlSeconds must be between {MIN_TTL_SECS} and {MAX_TTL_SECS}"),
                ));
            }
        };
        let size_bytes = (value_len + metadata.to_string().len()) as u64;
        Ok(StoragePut {
            namespace: namespace.to_owned(),
            key,
            value,
            metadata,
            size_bytes,
            ttl_expires_at,
            if_revision,
        })
    }

    /// Adds the next version of `namespace`'s schema for an install.
    pub(crate) async fn add_schema(
        &self,
        scope: &StorageScope,
        namespace: &str,
        schema_json: &str,
    ) -> Result<StorageSchema, AnnexError> {
        check_namespace(namespace)?;
        let document = schema::parse(schema_json)?;
        let added = self
            .store
            .add_storage_schema(scope, namespace, document)
            .await
            .map_err(AnnexError::from);
        // Also after a failure: the add may have committed before its
        // answer was lost.
        self.newest.changed();
        added
    }

    /// Every schema version of an install.
    pub(crate) async fn schemas(
        &self,
        scope: &StorageScope,
    ) -> Result<Vec<StorageSchema>, AnnexError> {
        self.store
            .list_storage_schemas(scope)
            .await
            .map_err(AnnexError::from)
    }

    pub(crate) async fn delete(
        &self,
        grant: &VerifiedGrant,
        namespace: &str,
        key: &str,
        if_revision: Option<u64>,
    ) -> Result<bool, AnnexError> {
        let scope = self.scope(grant).await?;
        check_namespace(namespace)?;
        check_key(key)?;
        self.store
            .storage_delete(&scope, namespace, key, if_revision, Utc::now())
            .await
            .map_err(AnnexError::from)
    }

    /// A page of records and the cursor for the next page (the last key
    /// returned), if there is one.
    pub(crate) async fn list(
        &self,
        grant: &VerifiedGrant,
        req: ListRequest,
    ) -> Result<(Vec<Record>, Option<String>), AnnexError> {
        let scope = self.scope(grant).await?;
        check_namespace(&req.namespace)?;
        let limit = match req.limit {
            None | Some(0) => DEFAULT_LIST_LIMIT,
            Some(n) if n <= MAX_LIST_LIMIT => n,
            Some(_) => {
                return Err(AnnexError::new(
                    ErrorCode::LimitExceeded,
                    format!("limit is at most {MAX_LIST_LIMIT}"),
                ));
            }
        };
        let prefix = req.key_prefix.filter(|p| !p.is_empty());
        if prefix.as_ref().is_some_and(|p| p.len() > MAX_KEY) {
            return Err(AnnexError::invalid("keyPrefix is at most 256 characters"));
        }
        let after = req
            .cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(parse_cursor)
            .transpose()?;
        let mut rows = self
            .store
            .storage_list(
                &scope,
                &req.namespace,
                after.as_deref(),
                prefix.as_deref(),
                limit + 1,
                Utc::now(),
            )
            .await
            .map_err(AnnexError::from)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if more {
            rows.last().map(|r| r.key.clone())
        } else {
            None
        };
        Ok((rows.into_iter().map(decode).collect(), next))
    }
}

/// A cursor is the last key returned, or Alga's `base64url({"key": k})`
/// (which continues after `k`, as Alga's service does).
fn parse_cursor(cursor: &str) -> Result<String, AnnexError> {
    if let Ok(raw) = B64URL.decode(cursor.trim_end_matches('='))
        && let Ok(v) = serde_json::from_slice::<Value>(&raw)
        && let Some(k) = v.get("key").and_then(Value::as_str)
    {
        return Ok(k.to_owned());
    }
    if cursor.len() > MAX_KEY || cursor.contains('/') {
        return Err(AnnexError::invalid("malformed cursor"));
    }
    Ok(cursor.to_owned())
}

fn check_namespace(ns: &str) -> Result<(), AnnexError> {
    if ns.is_empty() || ns.len() > MAX_NAMESPACE {
        return Err(AnnexError::invalid("namespace must be 1-128 characters"));
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), AnnexError> {
    if key.is_empty() || key.len() > MAX_KEY || key.contains('/') {
        return Err(AnnexError::invalid(
            "key must be 1-256 characters without '/'",
        ));
    }
    Ok(())
}

/// Alga's value decoding (and Annex's JSON values first): `metadata.encoding == "base64-bytes"` → base64;
/// an object with `_bytes_b64` → that; a string → base64 if it decodes, else
/// its UTF-8; anything else → its JSON text.
fn decode_value(value: &Value, metadata: &Value) -> Vec<u8> {
    // Annex's JSON values (`storage-v2`) read back as their JSON text.
    if metadata.get("encoding").and_then(Value::as_str) == Some("json") {
        return value.to_string().into_bytes();
    }
    if metadata.get("encoding").and_then(Value::as_str) == Some("base64-bytes")
        && let Some(bytes) = value.as_str().and_then(|s| B64.decode(s).ok())
    {
        return bytes;
    }
    if let Some(bytes) = value
        .get("_bytes_b64")
        .and_then(Value::as_str)
        .and_then(|s| B64.decode(s).ok())
    {
        return bytes;
    }
    match value {
        Value::String(s) => B64.decode(s).unwrap_or_else(|_| s.as_bytes().to_vec()),
        other => other.to_string().into_bytes(),
    }
}

fn decode(row: StorageRow) -> Record {
    Record {
        value: decode_value(&row.value, &row.metadata),
        namespace: row.namespace,
        key: row.key,
        metadata: row.metadata,
        revision: row.revision,
        ttl_expires_at: row.ttl_expires_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newest_schema_read_before_a_schema_is_added_is_never_kept() {
        let newest = NewestSchemas::default();
        let key = ("t".to_owned(), Uuid::nil(), "ns".to_owned());
        // Kept: the namespace has no schema.
        newest.put(key.clone(), newest.generation.load(Ordering::SeqCst), None);
        assert_eq!(newest.get(&key), Some(None));
        // A lookup starts, a schema is added through this replica, the
        // lookup's (older) answer arrives: it is not stored, so the next
        // put reads again and finds the schema.
        let before = newest.generation.load(Ordering::SeqCst);
        newest.changed();
        assert_eq!(newest.get(&key), None, "the add empties the cache");
        newest.put(key.clone(), before, None);
        assert_eq!(newest.get(&key), None, "a stale answer was stored");
    }

    #[test]
    fn values_decode_by_algas_rules() {
        let b64 = json!({"encoding": "base64-bytes"});
        assert_eq!(decode_value(&json!("aGk="), &b64), b"hi");
        assert_eq!(
            decode_value(&json!({"_bytes_b64": "aGk="}), &json!({})),
            b"hi"
        );
        assert_eq!(decode_value(&json!("aGk="), &json!({})), b"hi");
        assert_eq!(
            decode_value(&json!("plain text!"), &json!({})),
            b"plain text!"
        );
        assert_eq!(decode_value(&json!({"a": 1}), &json!(null)), br#"{"a":1}"#);
    }

    #[test]
    fn cursors_are_last_keys_or_algas_base64url() {
        let alga = B64URL.encode(br#"{"key":"k-5"}"#);
        assert_eq!(parse_cursor(&alga).expect("alga"), "k-5");
        assert_eq!(parse_cursor("k-7").expect("plain"), "k-7");
        assert!(parse_cursor("a/b").is_err());
    }
}
