//! Manifest v2 parsing and validation (`annex_bundle::Manifest::parse`) on
//! arbitrary bytes: it answers or refuses, never panics, and what it accepts
//! holds up: every capability is a known one, the version resolves, and
//! parsing is deterministic.
#![no_main]

use annex_bundle::{Manifest, VersionSpec, capability};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::parse(data) else {
        return;
    };
    assert!(!m.main_entry().is_empty());
    let granted = capability::granted(&m.capabilities)
        .unwrap_or_else(|e| panic!("accepted an unknown capability: {e}"));
    assert!(granted.len() >= capability::Capability::DEFAULTS.len());
    match &m.version {
        VersionSpec::Exact(v) => {
            assert_eq!(m.version_string(), Some(v.as_str()));
        }
        VersionSpec::Wildcard { major, minor } => {
            let prefix = format!("{major}.{minor}.");
            let next = m
                .version
                .resolve(&[format!("{prefix}7"), format!("{prefix}x")]);
            assert_eq!(next, format!("{prefix}8"));
        }
    }
    for e in &m.endpoints {
        assert!(!e.method.is_empty() && !e.path.is_empty(), "{e:?}");
    }
    assert_eq!(Manifest::parse(data).ok(), Some(m));
});
