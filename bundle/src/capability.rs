//! Capabilities: the one list of `cap:*` names the manifest, the control
//! plane and the worker agree on ([`Capability`]), the defaults every
//! install gets, and the rule that turns a manifest's declared list into
//! the granted set (docs/design/alga-compatibility.md, "Capabilities").
//!
//! Names are normalised (trimmed, ASCII lower-cased) before they are
//! compared. An unknown name is an error wherever it appears (pack,
//! publish, install), naming the capability, where Alga drops it silently
//! (docs/design/differences.md). This module does not enforce anything at
//! call time: host functions check the granted set.

use std::fmt;
use std::str::FromStr;

/// One capability a host function may check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    ContextRead,
    SecretsGet,
    HttpFetch,
    StorageKv,
    LogEmit,
    UiProxy,
    UserRead,
    SchedulerManage,
    InvoiceManualCreate,
    ClientRead,
    ServiceRead,
}

impl Capability {
    /// Every capability, in Alga's order.
    pub const ALL: [Capability; 11] = [
        Capability::ContextRead,
        Capability::SecretsGet,
        Capability::HttpFetch,
        Capability::StorageKv,
        Capability::LogEmit,
        Capability::UiProxy,
        Capability::UserRead,
        Capability::SchedulerManage,
        Capability::InvoiceManualCreate,
        Capability::ClientRead,
        Capability::ServiceRead,
    ];

    /// Always granted, whatever the manifest declares (Alga's runner adds
    /// these to every request).
    pub const DEFAULTS: [Capability; 3] = [
        Capability::ContextRead,
        Capability::LogEmit,
        Capability::UserRead,
    ];

    /// The wire name, e.g. `cap:http.fetch`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Capability::ContextRead => "cap:context.read",
            Capability::SecretsGet => "cap:secrets.get",
            Capability::HttpFetch => "cap:http.fetch",
            Capability::StorageKv => "cap:storage.kv",
            Capability::LogEmit => "cap:log.emit",
            Capability::UiProxy => "cap:ui.proxy",
            Capability::UserRead => "cap:user.read",
            Capability::SchedulerManage => "cap:scheduler.manage",
            Capability::InvoiceManualCreate => "cap:invoice.manual.create",
            Capability::ClientRead => "cap:client.read",
            Capability::ServiceRead => "cap:service.read",
        }
    }

    /// Parses a name after trimming and ASCII lower-casing it.
    pub fn parse(name: &str) -> Result<Capability, UnknownCapability> {
        let normalised = name.trim().to_ascii_lowercase();
        Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == normalised)
            .ok_or_else(|| UnknownCapability(name.trim().to_owned()))
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Capability {
    type Err = UnknownCapability;

    fn from_str(s: &str) -> Result<Capability, UnknownCapability> {
        Capability::parse(s)
    }
}

/// A capability name that is not in [`Capability::ALL`] (as written, trimmed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability '{0}'")]
pub struct UnknownCapability(pub String);

/// The capabilities an install receives: `declared` plus
/// [`Capability::DEFAULTS`] as wire names, sorted and deduplicated. The
/// first unknown name is an error.
pub fn granted<S: AsRef<str>>(declared: &[S]) -> Result<Vec<String>, UnknownCapability> {
    let mut out = declared
        .iter()
        .map(|c| Capability::parse(c.as_ref()))
        .chain(Capability::DEFAULTS.into_iter().map(Ok))
        .map(|c| c.map(|c| c.as_str().to_owned()))
        .collect::<Result<Vec<String>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for cap in Capability::ALL {
            assert_eq!(Capability::parse(cap.as_str()), Ok(cap));
            assert_eq!(cap.to_string().parse::<Capability>(), Ok(cap));
        }
        let mut names: Vec<&str> = Capability::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Capability::ALL.len());
    }

    #[test]
    fn names_are_trimmed_and_ascii_lower_cased() {
        assert_eq!(
            Capability::parse("  CAP:Http.Fetch \n"),
            Ok(Capability::HttpFetch)
        );
        assert_eq!(
            Capability::parse(" Cap:Storage.KV"),
            Ok(Capability::StorageKv)
        );
        // Only ASCII folds: the Kelvin sign is not a `k`.
        assert!(Capability::parse("cap:storage.\u{212A}v").is_err());
    }

    #[test]
    fn unknown_and_unprefixed_names_are_named_in_the_error() {
        for bad in ["http.fetch", "cap:debug.logs", ""] {
            let err = Capability::parse(bad).expect_err(bad);
            assert_eq!(err, UnknownCapability(bad.to_owned()));
        }
        assert_eq!(
            Capability::parse(" cap:Nope ")
                .expect_err("unknown")
                .to_string(),
            "unknown capability 'cap:Nope'"
        );
    }

    #[test]
    fn granted_is_declared_plus_defaults() {
        let none: [&str; 0] = [];
        assert_eq!(
            granted(&none),
            Ok(vec![
                "cap:context.read".to_owned(),
                "cap:log.emit".to_owned(),
                "cap:user.read".to_owned()
            ])
        );
        assert_eq!(
            granted(&[
                "cap:scheduler.manage",
                " CAP:LOG.EMIT ",
                "cap:scheduler.manage",
                "Cap:Http.Fetch",
            ]),
            Ok(vec![
                "cap:context.read".to_owned(),
                "cap:http.fetch".to_owned(),
                "cap:log.emit".to_owned(),
                "cap:scheduler.manage".to_owned(),
                "cap:user.read".to_owned(),
            ])
        );
        let owned = vec!["cap:secrets.get".to_string()];
        assert!(
            granted(&owned)
                .expect("known")
                .contains(&"cap:secrets.get".to_string())
        );
    }

    #[test]
    fn granted_refuses_an_unknown_name() {
        assert_eq!(
            granted(&["cap:http.fetch", "cap:nope", "storage.kv"]),
            Err(UnknownCapability("cap:nope".into()))
        );
        assert!(granted(&Capability::ALL.map(Capability::as_str)).is_ok());
    }
}
