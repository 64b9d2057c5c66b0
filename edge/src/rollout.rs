//! Splitting an install's calls during a rollout (docs/design/rollouts.md).
//!
//! The resolution the edge caches carries every version of the install
//! with its weight and its own execution grant ([`Split`]). The edge picks
//! one locally, with no call to anyone: the sticky key (the
//! `x-annex-rollout-key` header, else the caller's user or API-key id) is
//! hashed with the install and rollout ids into one of
//! [`BUCKETS`]; the canaries own the lowest buckets in their order, the
//! install's version the rest. The same key lands in the same bucket on
//! every edge, after a restart and while the control plane is down, and a
//! canary whose weight grows keeps the users it had.
//!
//! It must not keep per-user state: the hash is the whole decision.

use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::error::ApiError;
use crate::installs::Install;

/// Weights are parts of this many buckets (the control plane's unit too).
pub(crate) const BUCKETS: u32 = 10_000;
/// The header a caller names its own sticky key in.
pub(crate) const KEY_HEADER: &str = "x-annex-rollout-key";
/// Longest sticky key a caller may choose.
const MAX_KEY_BYTES: usize = 256;

/// The versions of an install with an active rollout, in bucket order: the
/// canaries, then the install's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split {
    pub rollout_id: String,
    /// (weight, the install as that version runs it).
    pub arms: Vec<(u32, Arc<Install>)>,
}

/// Which version of a split a call went to, for the metrics: `stable` or
/// `canary-<n>` (its place among the canaries), never a name.
pub(crate) type Arm = &'static str;

const CANARY_ARMS: [Arm; 3] = ["canary-1", "canary-2", "canary-3"];

/// The bucket of `key` in rollout `rollout_id` of `install_id`.
pub(crate) fn bucket(install_id: &str, rollout_id: &str, key: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(install_id.as_bytes());
    h.update([0]);
    h.update(rollout_id.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 2^64 is not a multiple of 10,000; the skew is below 1e-15.
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u32
}

impl Split {
    /// The version `key`'s calls go to, and its arm name.
    pub(crate) fn pick(&self, install_id: &str, key: &str) -> Option<(Arc<Install>, Arm)> {
        let b = bucket(install_id, &self.rollout_id, key);
        let last = self.arms.len().checked_sub(1)?;
        let mut upto = 0u32;
        for (i, (weight, arm)) in self.arms.iter().enumerate() {
            upto = upto.saturating_add(*weight);
            if b < upto || i == last {
                let name = if i == last {
                    "stable"
                } else {
                    CANARY_ARMS.get(i).copied().unwrap_or("canary")
                };
                return Some((arm.clone(), name));
            }
        }
        None
    }
}

/// Whether a call's outcome counts against its version, as the control
/// plane's evaluator counts it: a 5xx, a trap, a timeout, out of memory;
/// not a refusal while compiling or a policy denial.
pub(crate) fn is_failure(status: &str, error: &str, http_status: u16) -> bool {
    if status == "policy_denied" || error == "component_compiling" {
        return false;
    }
    status == "timeout" || http_status >= 500
}

/// The caller's chosen sticky key, if any: 1 to 256 visible ASCII bytes.
pub(crate) fn chosen_key(headers: &http::HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(KEY_HEADER) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_KEY_BYTES
        || !bytes.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::INVALID_ROLLOUT_KEY);
    }
    // Visible ASCII is UTF-8.
    Ok(std::str::from_utf8(bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(version: &str) -> Arc<Install> {
        Arc::new(Install {
            version_id: version.into(),
            ..Install::for_tests("i1")
        })
    }

    fn split(canary: u32) -> Split {
        Split {
            rollout_id: "r1".into(),
            arms: vec![(canary, arm("canary")), (BUCKETS - canary, arm("stable"))],
        }
    }

    #[test]
    fn a_key_always_lands_on_the_same_version() {
        let s = split(1000);
        for i in 0..100 {
            let key = format!("user-{i}");
            let first = s.pick("i1", &key).expect("an arm").0.version_id.clone();
            for _ in 0..3 {
                assert_eq!(s.pick("i1", &key).expect("an arm").0.version_id, first);
            }
        }
    }

    #[test]
    fn the_split_follows_the_weights_and_a_growing_canary_keeps_its_users() {
        let (ten, fifty) = (split(1000), split(5000));
        let mut canary = 0;
        for i in 0..20_000 {
            let key = format!("user-{i}");
            let (v, name) = ten.pick("i1", &key).expect("an arm");
            if v.version_id == "canary" {
                canary += 1;
                assert_eq!(name, "canary-1");
                assert_eq!(
                    fifty.pick("i1", &key).expect("an arm").0.version_id,
                    "canary"
                );
            } else {
                assert_eq!(name, "stable");
            }
        }
        // 10 % ± 1 point over 20,000 keys.
        assert!((1800..=2200).contains(&canary), "{canary}");
        // Weight 0: nobody.
        let zero = split(0);
        assert!(
            (0..1000).all(|i| zero.pick("i1", &format!("u{i}")).expect("an arm").1 == "stable")
        );
    }

    #[test]
    fn chosen_keys_are_bounded() {
        let mut h = http::HeaderMap::new();
        assert_eq!(chosen_key(&h), Ok(None));
        h.insert(KEY_HEADER, "account-42".parse().expect("a header value"));
        assert_eq!(chosen_key(&h), Ok(Some("account-42")));
        h.insert(KEY_HEADER, "x".repeat(257).parse().expect("a header value"));
        assert_eq!(chosen_key(&h), Err(ApiError::INVALID_ROLLOUT_KEY));
        h.insert(KEY_HEADER, "a b".parse().expect("a header value"));
        assert_eq!(chosen_key(&h), Err(ApiError::INVALID_ROLLOUT_KEY));
    }
}
