//! JSON schemas of storage namespaces (`ext_storage_schemas`): an operator
//! adds versions of a namespace's schema; every put into that namespace must
//! match its newest version, or the version the put names. Documents are
//! compiled once per (install, namespace, version) and kept in a bounded
//! cache (a version never changes once written). References outside the
//! document are refused at compile time: nothing is fetched.

use std::collections::HashMap;
use std::sync::Arc;

use annex_proto::{AnnexError, ErrorCode};
use jsonschema::Validator;
use parking_lot::Mutex;
use serde_json::Value;

use crate::store::StorageScope;

/// Compiled schemas kept at most; the cache starts over beyond.
const MAX_COMPILED: usize = 1024;
/// A schema document's largest size as JSON text.
pub(crate) const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Validation errors named in one refusal at most.
const MAX_REPORTED: usize = 3;

type CacheKey = (String, uuid::Uuid, String, u32);

/// Compiled validators by (tenant, install, namespace, version).
#[derive(Default)]
pub(crate) struct Compiled {
    validators: Mutex<HashMap<CacheKey, Arc<Validator>>>,
}

impl Compiled {
    /// Checks `value` against `document` (version `version` of the
    /// namespace's schema): `LIMIT_EXCEEDED`-free, an `INVALID_ARGUMENT`
    /// naming the first few mismatches when it does not match.
    pub(crate) fn check(
        &self,
        scope: &StorageScope,
        namespace: &str,
        version: u32,
        document: &Value,
        value: &Value,
    ) -> Result<(), AnnexError> {
        let key = (
            scope.tenant_id.clone(),
            scope.install_id,
            namespace.to_owned(),
            version,
        );
        let cached = self.validators.lock().get(&key).cloned();
        let validator = match cached {
            Some(v) => v,
            None => {
                let v = Arc::new(compile(document)?);
                let mut validators = self.validators.lock();
                if validators.len() >= MAX_COMPILED {
                    validators.clear();
                }
                validators.insert(key, v.clone());
                v
            }
        };
        let errors: Vec<String> = validator
            .iter_errors(value)
            .take(MAX_REPORTED)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_owned() } else { at };
                format!("{at}: {e}")
            })
            .collect();
        if errors.is_empty() {
            return Ok(());
        }
        Err(AnnexError::new(
            ErrorCode::InvalidArgument,
            format!(
                "the value does not match schema version {version} of namespace {namespace}: {}",
                errors.join("; ")
            ),
        ))
    }
}

/// Compiles a schema document; one that does not compile, or refers outside
/// itself, is invalid.
pub(crate) fn compile(document: &Value) -> Result<Validator, AnnexError> {
    jsonschema::options()
        .build(document)
        .map_err(|e| AnnexError::invalid(format!("not a usable JSON schema: {e}")))
}

/// Parses and checks a schema an operator adds.
pub(crate) fn parse(text: &str) -> Result<Value, AnnexError> {
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(AnnexError::new(
            ErrorCode::LimitExceeded,
            format!("a schema is at most {MAX_SCHEMA_BYTES} bytes"),
        ));
    }
    let document: Value = serde_json::from_str(text)
        .map_err(|e| AnnexError::invalid(format!("the schema is not JSON: {e}")))?;
    compile(&document)?;
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> StorageScope {
        StorageScope {
            tenant_id: "t1".into(),
            install_id: uuid::Uuid::nil(),
        }
    }

    #[test]
    fn values_are_checked_and_mismatches_named() {
        let compiled = Compiled::default();
        let schema = json!({"type": "object", "required": ["id"],
            "properties": {"id": {"type": "integer"}}});
        compiled
            .check(&scope(), "orders", 1, &schema, &json!({"id": 7}))
            .unwrap_or_else(|e| panic!("matches: {e}"));
        let err = compiled
            .check(&scope(), "orders", 1, &schema, &json!({"id": "seven"}))
            .expect_err("a string id");
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.contains("/id"), "{}", err.message);
    }

    #[test]
    fn schemas_that_do_not_compile_or_reach_outside_are_refused() {
        assert!(parse("{").is_err());
        assert!(parse(r#"{"type": 12}"#).is_err());
        assert!(parse(r#"{"$ref": "https://example.com/schema.json"}"#).is_err());
        assert!(parse(r#"{"type": "string", "maxLength": 10}"#).is_ok());
    }
}
