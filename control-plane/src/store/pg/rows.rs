//! Decoding rows and JSON columns into store types, next to the column lists
//! (`version_columns!`, `install_columns!`) whose aliases the decoders read.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;
use uuid::Uuid;

use crate::store::{
    BundleRow, ExtensionRow, InstallRow, InstallStatus, InstallView, KeyRow, SecretsRow,
    StoreError, StoreResult, UiRow, VersionRow,
};

// ---- column lists ----

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

/// The current bundle of version `v`: the newest one
/// (docs/design/alga-compatibility.md, "Data model").
macro_rules! current_bundle_join {
    () => {
        " JOIN LATERAL (SELECT * FROM extension_bundle cb WHERE cb.version_id = v.id \
           ORDER BY cb.created_at DESC, cb.content_hash DESC LIMIT 1) b ON true "
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

// ---- row decoding ----

pub(super) fn col<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> StoreResult<T> {
    row.try_get(name)
        .map_err(|e| StoreError::Internal(format!("decode column {name}: {e}")))
}

pub(super) fn to_i64(value: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(value)
        .map_err(|_| StoreError::Internal(format!("{what} {value} is out of range")))
}

pub(super) fn to_u64(value: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Internal(format!("{what} {value} is negative")))
}

pub(super) fn extension_from_row(row: &Row) -> StoreResult<ExtensionRow> {
    Ok(ExtensionRow {
        id: col(row, "r_id")?,
        publisher: col(row, "r_publisher")?,
        name: col(row, "r_name")?,
        created_at: col(row, "r_created_at")?,
    })
}

pub(super) fn version_from_row(row: &Row) -> StoreResult<VersionRow> {
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

pub(super) fn install_from_row(row: &Row) -> StoreResult<InstallRow> {
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

pub(super) fn install_view_from_row(row: &Row) -> StoreResult<InstallView> {
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

pub(super) fn key_from_row(row: &Row) -> StoreResult<KeyRow> {
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

pub(super) fn strings_to_json(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

/// The string entries of a JSON array; anything else is dropped.
pub(super) fn strings_from_json(value: Value) -> Vec<String> {
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

pub(super) fn config_to_json(config: &BTreeMap<String, String>) -> Value {
    Value::Object(
        config
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// A config object as strings, coerced as Alga does for rows it wrote: null
/// becomes `""`, other non-strings their JSON text.
pub(super) fn config_from_json(value: Value) -> BTreeMap<String, String> {
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
pub(super) fn ui_to_json(ui: &UiRow) -> Value {
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

pub(super) fn ui_from_json(value: &Value) -> Option<UiRow> {
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
