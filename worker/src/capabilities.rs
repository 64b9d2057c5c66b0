//! Capability strings (`cap:*`) and the per-request capability set.
//!
//! The set is the union of the request's providers and the defaults Alga's
//! runner always adds, and an unknown capability fails the whole request, so
//! parsing reports every unknown name at once
//! (docs/design/alga-compatibility.md, "Capabilities").

use std::fmt;

/// One known capability: the list lives in `annex_bundle::capability`.
pub(crate) use annex_bundle::capability::Capability;

/// `capability`'s bit in a [`Capabilities`] set.
fn bit(capability: Capability) -> u16 {
    1 << capability as u16
}

/// The capabilities one execution holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capabilities(u16);

impl Capabilities {
    /// Only the defaults.
    pub(crate) fn defaults() -> Capabilities {
        Capabilities(Capability::DEFAULTS.iter().fold(0, |acc, c| acc | bit(*c)))
    }

    /// The defaults plus `providers`; every unknown name is reported.
    pub(crate) fn from_providers<I, S>(providers: I) -> Result<Capabilities, UnknownCapabilities>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = Capabilities::defaults();
        let mut unknown = Vec::new();
        for p in providers {
            match Capability::parse(p.as_ref()) {
                Ok(c) => set.0 |= bit(c),
                Err(_) => unknown.push(p.as_ref().trim().to_string()),
            }
        }
        if unknown.is_empty() {
            Ok(set)
        } else {
            Err(UnknownCapabilities(unknown))
        }
    }

    pub(crate) fn has(self, capability: Capability) -> bool {
        self.0 & bit(capability) != 0
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(
                Capability::ALL
                    .into_iter()
                    .filter(|c| self.has(*c))
                    .map(Capability::as_str),
            )
            .finish()
    }
}

/// Capabilities in a request that are not known; displayed as Alga's error
/// string `unknown_capabilities: a, b`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown_capabilities: {}", .0.join(", "))]
pub(crate) struct UnknownCapabilities(pub(crate) Vec<String>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_always_granted() {
        let caps = Capabilities::from_providers(Vec::<String>::new()).expect("no providers");
        assert!(caps.has(Capability::ContextRead));
        assert!(caps.has(Capability::LogEmit));
        assert!(caps.has(Capability::UserRead));
        assert!(!caps.has(Capability::SecretsGet));
        assert!(!caps.has(Capability::HttpFetch));
    }

    #[test]
    fn names_are_trimmed_and_lower_cased() {
        let caps = Capabilities::from_providers([" CAP:Http.Fetch ", "cap:storage.kv"])
            .expect("known names");
        assert!(caps.has(Capability::HttpFetch));
        assert!(caps.has(Capability::StorageKv));
    }

    #[test]
    fn every_unknown_name_is_reported_in_alga_form() {
        let err = Capabilities::from_providers(["cap:http.fetch", "cap:nope", "fs.write"])
            .expect_err("unknown names");
        assert_eq!(err.to_string(), "unknown_capabilities: cap:nope, fs.write");
    }

    #[test]
    fn every_known_name_round_trips() {
        for cap in Capability::ALL {
            assert_eq!(Capability::parse(cap.as_str()), Ok(cap));
            assert!(
                Capabilities::from_providers([cap.as_str()])
                    .expect("known")
                    .has(cap)
            );
        }
    }
}
