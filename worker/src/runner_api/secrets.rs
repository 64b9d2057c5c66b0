//! Opening Alga's secret envelope (docs/design/alga-compatibility.md,
//! "Secrets"): before the guest runs, whether or not it reads a secret, as
//! Alga's runner does. `inline/base64` (and any other non-Vault algorithm)
//! is base64 of a JSON object of strings; blank ciphertext is an empty map.
//! Vault transit is refused: Annex holds no Vault token (Alga's error,
//! `secret_decrypt_failed`). Nothing here logs a value.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::envelope::SecretEnvelope;

/// Why an envelope did not open (the caller answers `secret_decrypt_failed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SecretsError {
    #[error("Vault transit envelopes are not supported by Annex")]
    Vault,
    #[error("the ciphertext is not base64")]
    Base64,
    #[error("the plaintext is not a JSON object of strings")]
    NotAMap,
}

/// The secrets an envelope holds.
pub(crate) fn open(envelope: &SecretEnvelope) -> Result<BTreeMap<String, String>, SecretsError> {
    let algorithm = envelope
        .algorithm
        .as_deref()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if algorithm.starts_with("vault-transit") {
        return Err(SecretsError::Vault);
    }
    let ciphertext = envelope.ciphertext_b64.trim();
    if ciphertext.is_empty() {
        return Ok(BTreeMap::new());
    }
    let plaintext = STANDARD
        .decode(ciphertext)
        .map_err(|_| SecretsError::Base64)?;
    serde_json::from_slice(&plaintext).map_err(|_| SecretsError::NotAMap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(algorithm: &str, plaintext: &str) -> SecretEnvelope {
        SecretEnvelope {
            ciphertext_b64: STANDARD.encode(plaintext),
            algorithm: Some(algorithm.to_string()),
            version: Some("v1".into()),
        }
    }

    #[test]
    fn inline_envelopes_open_to_their_map() {
        let map = open(&envelope("inline/base64", r#"{"api_key":"k","b":"2"}"#)).expect("opens");
        assert_eq!(map.get("api_key").map(String::as_str), Some("k"));
        assert_eq!(map.len(), 2);
        let blank = SecretEnvelope {
            ciphertext_b64: "  ".into(),
            algorithm: None,
            version: None,
        };
        assert_eq!(open(&blank), Ok(BTreeMap::new()));
    }

    #[test]
    fn vault_and_malformed_envelopes_are_refused() {
        assert_eq!(
            open(&envelope(" Vault-Transit:v1", "{}")),
            Err(SecretsError::Vault)
        );
        assert_eq!(
            open(&envelope("inline/base64", r#"{"n":1}"#)),
            Err(SecretsError::NotAMap)
        );
        let junk = SecretEnvelope {
            ciphertext_b64: "@@".into(),
            algorithm: None,
            version: None,
        };
        assert_eq!(open(&junk), Err(SecretsError::Base64));
    }
}
