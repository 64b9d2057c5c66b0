//! The trust bundle: which keys may sign for which publisher, and when
//! (docs/design/alga-compatibility.md, "Bundles and signing").
//!
//! This module owns the verdict on a bundle signature given a set of publisher keys with validity
//! windows and revocation. The control plane applies it at publish and install and the worker
//! again before it compiles, so all three reach the same answer from the same data. It must not
//! fetch, store or refresh trust bundles, and it never reads the clock: callers pass `now_ms`.

use serde::{Deserialize, Serialize};

use crate::hash::ContentHash;
use crate::signing::{self, PublicKey};

/// One publisher key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    /// Usually [`PublicKey::key_id`]; any unique label works.
    pub key_id: String,
    /// The publisher this key may sign for, compared exactly (see [`TrustBundle::verify`]).
    pub publisher: String,
    pub public_key: PublicKey,
    /// Unix milliseconds from which the key is valid (inclusive).
    pub not_before_ms: i64,
    /// Unix milliseconds at which the key stops being valid (exclusive); `None` = no expiry.
    pub not_after_ms: Option<i64>,
    pub revoked: bool,
}

impl TrustedKey {
    /// A key valid from the epoch, without expiry, identified by its own key id.
    pub fn new(publisher: impl Into<String>, public_key: PublicKey) -> TrustedKey {
        TrustedKey {
            key_id: public_key.key_id(),
            publisher: publisher.into(),
            public_key,
            not_before_ms: 0,
            not_after_ms: None,
            revoked: false,
        }
    }

    fn in_window(&self, now_ms: i64) -> bool {
        self.not_before_ms <= now_ms && self.not_after_ms.is_none_or(|end| now_ms < end)
    }
}

/// Why a bundle signature is not trusted. Variants are ordered from "nothing to check" to "checked
/// and wrong"; each says what the operator or publisher has to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("bundle is not signed")]
    SignatureMissing,
    #[error("no trusted key for this publisher")]
    UntrustedPublisher,
    #[error("signature does not verify with any trusted key of this publisher")]
    SignatureInvalid,
    #[error("bundle is signed only by revoked key {key_id}")]
    KeyRevoked { key_id: String },
    #[error("bundle is signed only by key {key_id}, which is outside its validity window")]
    KeyExpired { key_id: String },
}

/// All trusted publisher keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundle {
    pub keys: Vec<TrustedKey>,
}

impl TrustBundle {
    /// Decides whether `signature_b64` over the bundle statement is trusted at `now_ms`, and
    /// returns the id of the key that verified it.
    ///
    /// - An empty (or blank) signature is [`TrustError::SignatureMissing`].
    /// - Only keys whose `publisher` equals `publisher` exactly are considered. Exact, because
    ///   the registry identity `(publisher, name)` is case-sensitive: "Acme" and "acme" are
    ///   different registry entries, and a key for one must not vouch for the other. None →
    ///   [`TrustError::UntrustedPublisher`].
    /// - With `key_id`, only that key of the publisher is considered; an id the publisher does
    ///   not have is also [`TrustError::UntrustedPublisher`].
    /// - Usable keys (not revoked, inside their window) are tried first; the first that verifies
    ///   wins. Otherwise a revoked key that verifies gives [`TrustError::KeyRevoked`], then an
    ///   out-of-window key that verifies gives [`TrustError::KeyExpired`] (also before
    ///   `not_before_ms`). Nothing verifies (or the signature is not 64 bytes of base64) →
    ///   [`TrustError::SignatureInvalid`].
    #[allow(clippy::too_many_arguments)] // The shared API signature; see `signing::statement`.
    pub fn verify(
        &self,
        hash: &ContentHash,
        publisher: &str,
        name: &str,
        version: &str,
        signature_b64: &str,
        key_id: Option<&str>,
        now_ms: i64,
    ) -> Result<String, TrustError> {
        if signature_b64.trim().is_empty() {
            return Err(TrustError::SignatureMissing);
        }
        let candidates: Vec<&TrustedKey> = self
            .keys
            .iter()
            .filter(|k| k.publisher == publisher)
            .filter(|k| key_id.is_none_or(|id| k.key_id == id))
            .collect();
        if candidates.is_empty() {
            return Err(TrustError::UntrustedPublisher);
        }
        let signature =
            signing::parse_signature(signature_b64).map_err(|_| TrustError::SignatureInvalid)?;
        let statement = signing::statement(hash, publisher, name, version);
        let verifies = |k: &&&TrustedKey| {
            signing::verify_parsed(&k.public_key, &statement, &signature).is_ok()
        };

        let usable = |k: &&&TrustedKey| !k.revoked && k.in_window(now_ms);
        if let Some(k) = candidates.iter().filter(usable).find(verifies) {
            return Ok(k.key_id.clone());
        }
        if let Some(k) = candidates.iter().filter(|k| k.revoked).find(verifies) {
            return Err(TrustError::KeyRevoked {
                key_id: k.key_id.clone(),
            });
        }
        if let Some(k) = candidates
            .iter()
            .filter(|k| !k.in_window(now_ms))
            .find(verifies)
        {
            return Err(TrustError::KeyExpired {
                key_id: k.key_id.clone(),
            });
        }
        Err(TrustError::SignatureInvalid)
    }

    /// The keys that may sign for `publisher` (exact match), usable or not.
    pub fn keys_for<'a>(&'a self, publisher: &'a str) -> impl Iterator<Item = &'a TrustedKey> + 'a {
        self.keys.iter().filter(move |k| k.publisher == publisher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{KeyPair, sign_bundle};

    const NOW: i64 = 1_700_000_000_000;

    struct Fixture {
        hash: ContentHash,
        alice: KeyPair,
        alice_old: KeyPair,
        bob: KeyPair,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                hash: ContentHash::of(b"bundle"),
                alice: KeyPair::from_seed(&[1; 32]),
                alice_old: KeyPair::from_seed(&[2; 32]),
                bob: KeyPair::from_seed(&[3; 32]),
            }
        }

        fn sign(&self, key: &KeyPair) -> String {
            sign_bundle(key, &self.hash, "Alice", "com.alice.x", "1.0.0")
        }

        /// Runs `verify` for Alice's bundle against `keys`.
        fn check(
            &self,
            keys: Vec<TrustedKey>,
            sig: &str,
            key_id: Option<&str>,
        ) -> Result<String, TrustError> {
            TrustBundle { keys }.verify(
                &self.hash,
                "Alice",
                "com.alice.x",
                "1.0.0",
                sig,
                key_id,
                NOW,
            )
        }
    }

    fn key(publisher: &str, pair: &KeyPair) -> TrustedKey {
        TrustedKey::new(publisher, pair.public_key())
    }

    #[test]
    fn valid_signature_returns_the_key_id() {
        let f = Fixture::new();
        let alice = key("Alice", &f.alice);
        let id = alice.key_id.clone();
        let keys = vec![key("Bob", &f.bob), key("Alice", &f.alice_old), alice];
        assert_eq!(
            f.check(keys.clone(), &f.sign(&f.alice), None),
            Ok(id.clone())
        );
        assert_eq!(f.check(keys, &f.sign(&f.alice), Some(&id)), Ok(id));
    }

    #[test]
    fn missing_signature() {
        let f = Fixture::new();
        for sig in ["", "  "] {
            assert_eq!(
                f.check(vec![key("Alice", &f.alice)], sig, None),
                Err(TrustError::SignatureMissing)
            );
        }
        // Checked before the publisher, so an unsigned bundle always says "unsigned".
        assert_eq!(f.check(vec![], "", None), Err(TrustError::SignatureMissing));
    }

    #[test]
    fn untrusted_publisher() {
        let f = Fixture::new();
        let sig = f.sign(&f.alice);
        assert_eq!(
            f.check(vec![], &sig, None),
            Err(TrustError::UntrustedPublisher)
        );
        // Bob's key, even holding the very key that signed, does not vouch for Alice.
        assert_eq!(
            f.check(vec![key("Bob", &f.alice)], &sig, None),
            Err(TrustError::UntrustedPublisher)
        );
        // Publisher names are compared exactly.
        assert_eq!(
            f.check(vec![key("alice", &f.alice)], &sig, None),
            Err(TrustError::UntrustedPublisher)
        );
        // An explicit key id the publisher does not hold.
        let bob_id = f.bob.public_key().key_id();
        assert_eq!(
            f.check(
                vec![key("Alice", &f.alice), key("Bob", &f.bob)],
                &sig,
                Some(&bob_id)
            ),
            Err(TrustError::UntrustedPublisher)
        );
    }

    #[test]
    fn invalid_signature() {
        let f = Fixture::new();
        let keys = vec![key("Alice", &f.alice)];
        assert_eq!(
            f.check(keys.clone(), &f.sign(&f.bob), None),
            Err(TrustError::SignatureInvalid)
        );
        assert_eq!(
            f.check(keys.clone(), "bm9wZQ==", None),
            Err(TrustError::SignatureInvalid)
        );
        // Signed for another name: the statement binds it.
        let other = sign_bundle(&f.alice, &f.hash, "Alice", "com.alice.y", "1.0.0");
        assert_eq!(
            f.check(keys.clone(), &other, None),
            Err(TrustError::SignatureInvalid)
        );
        // A key id that names a different key of the publisher than the one that signed.
        let old = key("Alice", &f.alice_old);
        let old_id = old.key_id.clone();
        assert_eq!(
            f.check(vec![keys[0].clone(), old], &f.sign(&f.alice), Some(&old_id)),
            Err(TrustError::SignatureInvalid)
        );
    }

    #[test]
    fn revoked_key() {
        let f = Fixture::new();
        let mut revoked = key("Alice", &f.alice);
        revoked.revoked = true;
        let id = revoked.key_id.clone();
        let sig = f.sign(&f.alice);
        assert_eq!(
            f.check(
                vec![revoked.clone(), key("Alice", &f.alice_old)],
                &sig,
                None
            ),
            Err(TrustError::KeyRevoked { key_id: id.clone() })
        );
        // Revoked and expired reports the revocation.
        revoked.not_after_ms = Some(NOW - 1);
        assert_eq!(
            f.check(vec![revoked], &sig, None),
            Err(TrustError::KeyRevoked { key_id: id })
        );
    }

    #[test]
    fn key_outside_its_window() {
        let f = Fixture::new();
        let sig = f.sign(&f.alice);
        let mut expired = key("Alice", &f.alice);
        expired.not_after_ms = Some(NOW);
        let id = expired.key_id.clone();
        assert_eq!(
            f.check(vec![expired.clone()], &sig, None),
            Err(TrustError::KeyExpired { key_id: id.clone() })
        );
        let mut early = key("Alice", &f.alice);
        early.not_before_ms = NOW + 1;
        assert_eq!(
            f.check(vec![early], &sig, None),
            Err(TrustError::KeyExpired { key_id: id.clone() })
        );
        // The window bounds: not_before inclusive, not_after exclusive.
        let mut edge = key("Alice", &f.alice);
        edge.not_before_ms = NOW;
        edge.not_after_ms = Some(NOW + 1);
        assert_eq!(f.check(vec![edge], &sig, None), Ok(id.clone()));
        // A rotated key: the same signing key listed twice, once expired and once current.
        let current = key("Alice", &f.alice);
        assert_eq!(f.check(vec![expired, current], &sig, None), Ok(id));
    }

    #[test]
    fn serde_round_trip() {
        let f = Fixture::new();
        let mut k = key("Alice", &f.alice);
        k.not_after_ms = Some(NOW);
        let bundle = TrustBundle { keys: vec![k] };
        let json = serde_json::to_string(&bundle).expect("serialise");
        let back: TrustBundle = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, bundle);
        assert_eq!(bundle.keys_for("Alice").count(), 1);
        assert_eq!(bundle.keys_for("alice").count(), 0);
    }
}
