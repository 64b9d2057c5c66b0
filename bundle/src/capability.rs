//! Capability names: the known `cap:*` set, the defaults every install gets, and the rule that
//! turns a manifest's declared list into the granted set (spec §1.3, §6, §7).
//!
//! This module owns the one list of capability names the control plane and the worker must agree
//! on. It does not enforce anything: host functions check the granted set at call time. Publish
//! does not check names at all; install silently drops unknown or unprefixed names, as Alga does.

/// Every capability a host function may check, in spec order.
pub const KNOWN: [&str; 11] = [
    "cap:context.read",
    "cap:secrets.get",
    "cap:http.fetch",
    "cap:storage.kv",
    "cap:log.emit",
    "cap:ui.proxy",
    "cap:user.read",
    "cap:scheduler.manage",
    "cap:invoice.manual.create",
    "cap:client.read",
    "cap:service.read",
];

/// Always granted, whatever the manifest declares (Alga's runner adds these to every request).
pub const DEFAULTS: [&str; 3] = ["cap:context.read", "cap:log.emit", "cap:user.read"];

/// Trims and lower-cases a capability name.
pub fn normalize(cap: &str) -> String {
    cap.trim().to_lowercase()
}

/// Whether `cap`, once normalised, is a known capability.
pub fn is_known(cap: &str) -> bool {
    KNOWN.contains(&normalize(cap).as_str())
}

/// The capabilities an install receives: the known names among `declared` (normalised) plus
/// [`DEFAULTS`], sorted and deduplicated. Unknown or unprefixed names are dropped silently.
pub fn granted<S: AsRef<str>>(declared: &[S]) -> Vec<String> {
    let mut out: Vec<String> = declared
        .iter()
        .map(|c| normalize(c.as_ref()))
        .filter(|c| KNOWN.contains(&c.as_str()))
        .chain(DEFAULTS.iter().map(|c| (*c).to_owned()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The normalised names in `providers` that are not known (sorted, deduplicated), for warnings
/// and for rejecting an operator-supplied provider list.
pub fn unknown<S: AsRef<str>>(providers: &[S]) -> Vec<String> {
    let mut out: Vec<String> = providers
        .iter()
        .map(|c| normalize(c.as_ref()))
        .filter(|c| !KNOWN.contains(&c.as_str()))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_by_trimming_and_lowercasing() {
        assert_eq!(normalize("  CAP:Http.Fetch \n"), "cap:http.fetch");
        assert!(is_known(" Cap:Storage.KV"));
        assert!(!is_known("http.fetch"));
        assert!(!is_known("cap:debug.logs"));
        assert!(KNOWN.iter().all(|c| is_known(c)));
        assert!(DEFAULTS.iter().all(|c| is_known(c)));
    }

    #[test]
    fn granted_is_known_declared_plus_defaults() {
        let none: [&str; 0] = [];
        assert_eq!(
            granted(&none),
            vec!["cap:context.read", "cap:log.emit", "cap:user.read"]
        );
        assert_eq!(
            granted(&[
                "cap:scheduler.manage",
                " CAP:LOG.EMIT ",
                "http.fetch",
                "cap:nope",
                "",
                "cap:scheduler.manage",
                "Cap:Http.Fetch",
            ]),
            vec![
                "cap:context.read",
                "cap:http.fetch",
                "cap:log.emit",
                "cap:scheduler.manage",
                "cap:user.read",
            ]
        );
        let owned = vec!["cap:secrets.get".to_string()];
        assert!(granted(&owned).contains(&"cap:secrets.get".to_string()));
    }

    #[test]
    fn unknown_lists_rejected_names() {
        assert_eq!(
            unknown(&["cap:http.fetch", "storage.kv", " Cap:Nope", "cap:nope"]),
            vec!["cap:nope", "storage.kv"]
        );
        assert!(unknown(&KNOWN).is_empty());
    }
}
