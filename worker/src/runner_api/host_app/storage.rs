//! `alga:extension/storage` against Alga's storage API
//! (docs/design/alga-compatibility.md, "Storage"): the operation bodies
//! Alga's runner sends and the records it reads back. Values are written
//! as base64 with metadata `{"encoding":"base64-bytes"}` and read with
//! Alga's decoding rules, so rows other writers made read the same. A
//! guest's cursor that is not Alga's `base64url({"key": …})` is taken as
//! the last key it received and wrapped into that form (Annex's working
//! cursor; docs/design/differences.md, "Storage listing has a working
//! cursor"). Statuses travel as [`HostError`]s for the interface to map.
//! Annex's `storage-v2` maps onto the same API's `ttlSeconds`,
//! `schemaVersion`, JSON values and `bulkPut`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::{json_ok, malformed};
use crate::backend::{HostApiResponse, HostError, StorageItem, StorageOptions, StorageRecord};

pub(super) fn get(namespace: &str, key: &str) -> Value {
    json!({"operation": "get", "namespace": namespace, "key": key})
}

pub(super) fn put(namespace: &str, key: &str, value: &[u8], if_revision: Option<u64>) -> Value {
    let mut body = json!({
        "operation": "put",
        "namespace": namespace,
        "key": key,
        "value": STANDARD.encode(value),
        "metadata": {"encoding": "base64-bytes"},
    });
    if let Some(rev) = if_revision {
        body["ifRevision"] = json!(rev);
    }
    body
}

/// A put's fields with `storage-v2` options: a JSON value is sent as that
/// JSON (without the base64 metadata), a TTL as `ttlSeconds`, a schema
/// version as `schemaVersion`, as Alga's storage service takes them.
fn put_fields(
    key: &str,
    value: &[u8],
    if_revision: Option<u64>,
    o: StorageOptions,
) -> Result<Value, HostError> {
    let mut item = json!({"key": key});
    if o.json {
        item["value"] = serde_json::from_slice(value).map_err(|e| HostError {
            status: 400,
            message: format!("the value is not JSON: {e}"),
        })?;
    } else {
        item["value"] = json!(STANDARD.encode(value));
        item["metadata"] = json!({"encoding": "base64-bytes"});
    }
    if let Some(rev) = if_revision {
        item["ifRevision"] = json!(rev);
    }
    if let Some(ttl) = o.ttl_seconds {
        item["ttlSeconds"] = json!(ttl);
    }
    if let Some(v) = o.schema_version {
        item["schemaVersion"] = json!(v);
    }
    Ok(item)
}

pub(super) fn put_with(
    namespace: &str,
    item: &StorageItem,
    o: StorageOptions,
) -> Result<Value, HostError> {
    let mut body = put_fields(&item.key, &item.value, item.if_revision, o)?;
    body["operation"] = json!("put");
    body["namespace"] = json!(namespace);
    Ok(body)
}

/// `bulkPut`: `{namespace, items: [put-like]}`.
pub(super) fn bulk_put(
    namespace: &str,
    items: &[StorageItem],
    o: StorageOptions,
) -> Result<Value, HostError> {
    let items = items
        .iter()
        .map(|i| put_fields(&i.key, &i.value, i.if_revision, o))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"operation": "bulkPut", "namespace": namespace, "items": items}))
}

/// `{namespace, items: [{key, revision, ttlExpiresAt}]}`, in the items' order.
pub(super) fn read_bulk_put(
    r: &HostApiResponse,
    namespace: &str,
    items: Vec<StorageItem>,
) -> Result<Vec<StorageRecord>, HostError> {
    let v = json_ok(r, "storage")?;
    let answered = v
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("storage"))?;
    if answered.len() != items.len() {
        return Err(malformed("storage"));
    }
    items
        .into_iter()
        .zip(answered)
        .map(|(item, a)| {
            Ok(StorageRecord {
                namespace: namespace.to_string(),
                key: item.key,
                value: item.value,
                revision: revision(a)?,
            })
        })
        .collect()
}

pub(super) fn delete(namespace: &str, key: &str) -> Value {
    json!({"operation": "delete", "namespace": namespace, "key": key})
}

pub(super) fn list(namespace: &str, cursor: Option<&str>) -> Value {
    let mut body = json!({
        "operation": "list",
        "namespace": namespace,
        "includeValues": true,
        "includeMetadata": true,
    });
    if let Some(c) = cursor.filter(|c| !c.is_empty()) {
        body["cursor"] = json!(alga_cursor(c));
    }
    body
}

/// `cursor` as Alga's service reads it: kept when it already is one,
/// else the key the next page starts after.
fn alga_cursor(cursor: &str) -> String {
    let is_alga = URL_SAFE_NO_PAD
        .decode(cursor.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v.get("key").is_some_and(Value::is_string));
    if is_alga {
        cursor.to_string()
    } else {
        URL_SAFE_NO_PAD.encode(json!({"key": cursor}).to_string())
    }
}

/// 404 is an absent key.
pub(super) fn read_get(r: &HostApiResponse) -> Result<Option<StorageRecord>, HostError> {
    if r.status == 404 {
        return Ok(None);
    }
    record(&json_ok(r, "storage")?).map(Some)
}

/// The stored revision; the entry is what the guest sent.
pub(super) fn read_put(
    r: &HostApiResponse,
    namespace: &str,
    key: &str,
    value: Vec<u8>,
) -> Result<StorageRecord, HostError> {
    let v = json_ok(r, "storage")?;
    Ok(StorageRecord {
        namespace: namespace.to_string(),
        key: key.to_string(),
        value,
        revision: revision(&v)?,
    })
}

/// `{success}`: false (nothing deleted) is the interface's conflict.
pub(super) fn read_delete(r: &HostApiResponse) -> Result<bool, HostError> {
    let v = json_ok(r, "storage")?;
    v.get("success")
        .and_then(Value::as_bool)
        .ok_or_else(|| malformed("storage"))
}

/// `{items: [...]}`; `nextCursor` is the guest's to forge or to take from
/// the last key.
pub(super) fn read_list(r: &HostApiResponse) -> Result<Vec<StorageRecord>, HostError> {
    let v = json_ok(r, "storage")?;
    v.get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("storage"))?
        .iter()
        .map(record)
        .collect()
}

fn record(v: &Value) -> Result<StorageRecord, HostError> {
    let text = |field: &str| {
        v.get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| malformed("storage"))
    };
    Ok(StorageRecord {
        namespace: text("namespace")?,
        key: text("key")?,
        value: decode(v.get("value").unwrap_or(&Value::Null), v.get("metadata")),
        revision: revision(v)?,
    })
}

fn revision(v: &Value) -> Result<u64, HostError> {
    let r = v.get("revision").ok_or_else(|| malformed("storage"))?;
    r.as_u64()
        .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| malformed("storage"))
}

/// Alga's runner's value decoding: base64 when the metadata says so; else
/// an object's `_bytes_b64`; else a string, base64-decoded when it decodes
/// and as UTF-8 otherwise; else the value's JSON text.
fn decode(value: &Value, metadata: Option<&Value>) -> Vec<u8> {
    let encoding = metadata
        .and_then(|m| m.get("encoding"))
        .and_then(Value::as_str);
    if encoding == Some("base64-bytes")
        && let Some(bytes) = value.as_str().and_then(|s| STANDARD.decode(s).ok())
    {
        return bytes;
    }
    if let Some(bytes) = value
        .get("_bytes_b64")
        .and_then(Value::as_str)
        .and_then(|s| STANDARD.decode(s).ok())
    {
        return bytes;
    }
    match value {
        Value::String(s) => STANDARD.decode(s).unwrap_or_else(|_| s.as_bytes().to_vec()),
        other => other.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_as_algas_runner_decodes_them() {
        let meta = json!({"encoding": "base64-bytes"});
        assert_eq!(decode(&json!("aGk="), Some(&meta)), b"hi");
        assert_eq!(decode(&json!({"_bytes_b64": "aGk="}), None), b"hi");
        assert_eq!(decode(&json!("aGk="), None), b"hi");
        assert_eq!(decode(&json!("not base64!"), None), b"not base64!");
        assert_eq!(decode(&json!({"a": 1}), None), br#"{"a":1}"#);
    }

    #[test]
    fn a_last_key_becomes_algas_cursor_and_algas_cursor_is_kept() {
        let wrapped = alga_cursor("k-10");
        let decoded = URL_SAFE_NO_PAD.decode(&wrapped).expect("base64url");
        assert_eq!(decoded, br#"{"key":"k-10"}"#);
        assert_eq!(alga_cursor(&wrapped), wrapped);
    }

    #[test]
    fn puts_send_bytes_as_base64_with_the_revision_check() {
        let body = put("ns", "k", b"hi", Some(3));
        assert_eq!(body["value"], "aGk=");
        assert_eq!(body["metadata"]["encoding"], "base64-bytes");
        assert_eq!(body["ifRevision"], 3);
        assert!(put("ns", "k", b"", None).get("ifRevision").is_none());
    }
}
