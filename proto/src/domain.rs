//! Validated domain values that services convert incoming protobuf into on
//! receipt, so nothing past a gRPC module handles an unchecked string.

use crate::error::{AnnexError, ErrorCode};

/// A tenant id: 1–128 printable ASCII characters without spaces or `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(s: &str) -> Result<TenantId, AnnexError> {
        let s = s.trim();
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\');
        if ok {
            Ok(TenantId(s.to_owned()))
        } else {
            Err(AnnexError::invalid(
                "tenant_id must be 1-128 printable characters without spaces or slashes",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A required non-empty string field, trimmed.
pub fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, AnnexError> {
    let v = value.trim();
    if v.is_empty() {
        Err(AnnexError::invalid(format!("{field} is required")))
    } else {
        Ok(v)
    }
}

/// A config or secret map: at most 256 entries, keys 1–256 characters, values
/// at most 64 KiB.
pub fn string_map(
    field: &str,
    map: std::collections::HashMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>, AnnexError> {
    const MAX_ENTRIES: usize = 256;
    const MAX_KEY: usize = 256;
    const MAX_VALUE: usize = 64 * 1024;
    if map.len() > MAX_ENTRIES {
        return Err(AnnexError::new(
            ErrorCode::LimitExceeded,
            format!("{field}: at most {MAX_ENTRIES} entries"),
        ));
    }
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in map {
        if k.trim().is_empty() || k.len() > MAX_KEY {
            return Err(AnnexError::invalid(format!(
                "{field}: keys must be 1-{MAX_KEY} characters"
            )));
        }
        if v.len() > MAX_VALUE {
            return Err(AnnexError::new(
                ErrorCode::LimitExceeded,
                format!("{field}.{k}: values are at most {MAX_VALUE} bytes"),
            ));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// Largest guest response body an idempotency record keeps for replay
/// (docs/design/idempotency.md). A larger answer is recorded as kept
/// without its response (`IdempotentResponse.not_kept`): a repeat of the
/// call is refused rather than run again.
pub const MAX_IDEMPOTENT_BODY_BYTES: usize = 1024 * 1024;

/// Converts a protobuf timestamp (unix ms) to a `SystemTime`-free i64, rejecting negatives.
pub fn unix_ms(ts: Option<&crate::pb::Timestamp>) -> Option<i64> {
    ts.map(|t| t.unix_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_checked() {
        assert_eq!(TenantId::parse(" acme ").expect("ok").as_str(), "acme");
        for bad in ["", "a b", "a/b", &"x".repeat(129)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn maps_are_bounded() {
        let mut m = std::collections::HashMap::new();
        m.insert(String::new(), "v".into());
        assert!(string_map("config", m).is_err());
        let mut m = std::collections::HashMap::new();
        m.insert("k".into(), "x".repeat(64 * 1024 + 1));
        assert_eq!(
            string_map("config", m).expect_err("too big").code,
            ErrorCode::LimitExceeded
        );
    }
}
