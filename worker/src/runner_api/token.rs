//! The service token the runner API requires (Alga's runner ignores the
//! `x-runner-service-token` its callers send; docs/design/differences.md,
//! "The runner API requires its service token"). Read once from a file;
//! blank tokens, short ones and the well-known defaults Alga's own server
//! refuses in production are refused at start. A presented token is
//! compared in constant time (over SHA-256 digests, so neither content nor
//! length shows in the timing). Nothing here logs a token.

use std::path::Path;

use sha2::{Digest, Sha256};

/// The header callers put the token in (Alga's ext-proxy sends it there).
pub(crate) const HEADER: &str = "x-runner-service-token";

/// Defaults found in Alga's sample configuration; never accepted.
const KNOWN_DEFAULTS: [&str; 4] = ["local-runner-key", "changeme", "change-me", "secret"];

/// Shorter tokens are refused: a token is a shared secret, not a password.
const MIN_LEN: usize = 16;

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the runner API token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the runner API token file {0} holds a well-known default token")]
    Default(String),
    #[error("the runner API token in {0} is shorter than {MIN_LEN} characters")]
    Short(String),
}

/// The expected token, kept as its digest.
pub(crate) struct ServiceToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceToken(..)")
    }
}

impl ServiceToken {
    /// Reads the token (surrounding whitespace trimmed) from `path`.
    pub(crate) fn load(path: &Path) -> Result<ServiceToken, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ServiceToken::new(text.trim()).map_err(|e| match e {
            TokenCheck::Default => TokenError::Default(path.display().to_string()),
            TokenCheck::Short => TokenError::Short(path.display().to_string()),
        })
    }

    fn new(token: &str) -> Result<ServiceToken, TokenCheck> {
        if KNOWN_DEFAULTS.iter().any(|d| d.eq_ignore_ascii_case(token)) {
            return Err(TokenCheck::Default);
        }
        if token.chars().count() < MIN_LEN {
            return Err(TokenCheck::Short);
        }
        Ok(ServiceToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `presented` (the header's value, if any) is the token.
    pub(crate) fn accepts(&self, presented: Option<&[u8]>) -> bool {
        let Some(presented) = presented else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let diff = digest
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

#[derive(Debug, PartialEq, Eq)]
enum TokenCheck {
    Default,
    Short,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_short_tokens_are_refused() {
        for d in ["local-runner-key", "changeme", "Change-Me", "secret"] {
            assert_eq!(ServiceToken::new(d).err(), Some(TokenCheck::Default));
        }
        assert_eq!(ServiceToken::new("short").err(), Some(TokenCheck::Short));
    }

    #[test]
    fn only_the_exact_token_is_accepted() {
        let t = ServiceToken::new("0123456789abcdef-token").expect("valid");
        assert!(t.accepts(Some(b"0123456789abcdef-token")));
        assert!(!t.accepts(Some(b"0123456789abcdef-token ")));
        assert!(!t.accepts(Some(b"0123456789abcdef")));
        assert!(!t.accepts(Some(b"")));
        assert!(!t.accepts(None));
    }
}
