//! Capability strings (`cap:*`) and the per-request capability set.
//!
//! The set is the union of the request's providers and the defaults Alga's
//! runner always adds. An unknown capability fails the whole request, so
//! parsing reports every unknown name at once (both as in Alga:
//! docs/design/alga-compatibility.md, "Capabilities").

use std::fmt;

/// One known capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum Capability {
    ContextRead = 1 << 0,
    SecretsGet = 1 << 1,
    HttpFetch = 1 << 2,
    StorageKv = 1 << 3,
    LogEmit = 1 << 4,
    UiProxy = 1 << 5,
    UserRead = 1 << 6,
    SchedulerManage = 1 << 7,
    InvoiceManualCreate = 1 << 8,
    ClientRead = 1 << 9,
    ServiceRead = 1 << 10,
}

impl Capability {
    /// Every known capability with its wire name.
    pub(crate) const ALL: [(Capability, &'static str); 11] = [
        (Capability::ContextRead, "cap:context.read"),
        (Capability::SecretsGet, "cap:secrets.get"),
        (Capability::HttpFetch, "cap:http.fetch"),
        (Capability::StorageKv, "cap:storage.kv"),
        (Capability::LogEmit, "cap:log.emit"),
        (Capability::UiProxy, "cap:ui.proxy"),
        (Capability::UserRead, "cap:user.read"),
        (Capability::SchedulerManage, "cap:scheduler.manage"),
        (Capability::InvoiceManualCreate, "cap:invoice.manual.create"),
        (Capability::ClientRead, "cap:client.read"),
        (Capability::ServiceRead, "cap:service.read"),
    ];

    /// Granted to every request whatever the providers say, as Alga's runner
    /// does.
    pub(crate) const DEFAULTS: [Capability; 3] = [
        Capability::ContextRead,
        Capability::LogEmit,
        Capability::UserRead,
    ];

    /// Parses a capability after trimming and lower-casing (Alga compares
    /// normalised names).
    pub(crate) fn parse(name: &str) -> Option<Capability> {
        let normalised = name.trim().to_ascii_lowercase();
        Capability::ALL
            .iter()
            .find(|(_, n)| *n == normalised)
            .map(|(c, _)| *c)
    }
}

/// The capabilities one execution holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capabilities(u16);

impl Capabilities {
    /// Only the defaults.
    pub(crate) fn defaults() -> Capabilities {
        Capabilities(
            Capability::DEFAULTS
                .iter()
                .fold(0, |acc, c| acc | *c as u16),
        )
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
                Some(c) => set.0 |= c as u16,
                None => unknown.push(p.as_ref().trim().to_string()),
            }
        }
        if unknown.is_empty() {
            Ok(set)
        } else {
            Err(UnknownCapabilities(unknown))
        }
    }

    pub(crate) fn has(self, capability: Capability) -> bool {
        self.0 & capability as u16 != 0
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(
                Capability::ALL
                    .iter()
                    .filter(|(c, _)| self.has(*c))
                    .map(|(_, n)| n),
            )
            .finish()
    }
}

/// Capabilities in a request that are not known; displayed as Alga's error
/// string `unknown_capabilities: a, b`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown_capabilities: {}", .0.join(", "))]
pub(crate) struct UnknownCapabilities(pub Vec<String>);

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
        for (cap, name) in Capability::ALL {
            assert_eq!(Capability::parse(name), Some(cap));
            assert_eq!(
                Capability::ALL.iter().filter(|(c, _)| *c == cap).count(),
                1,
                "{name} is listed once"
            );
        }
    }
}
