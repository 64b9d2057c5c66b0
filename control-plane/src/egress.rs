//! Validation of egress entries: an install's `--egress` list must parse and
//! fit inside the platform list (`--egress-allowlist`). The grammar is the
//! worker's, which enforces it (docs/operators.md, "Egress"):
//! `host[:port]`, `*.suffix[:port]`, an IP literal (`10.0.0.5[:port]`,
//! `[fd00::5][:port]`) or `private:host[:port]`; without a port an entry
//! means 443 and 80. Values only: nothing here resolves a name.

use std::net::IpAddr;

/// One install or platform entry, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EgressEntry {
    private: bool,
    /// A name, `*.suffix`, or an IP address in its canonical text.
    host: String,
    port: Option<u16>,
}

impl EgressEntry {
    /// Parses an entry; `Err` says why it is not one.
    pub(crate) fn parse(s: &str) -> Result<EgressEntry, String> {
        let text = s.trim().to_ascii_lowercase();
        let (private, rest) = match text.strip_prefix("private:") {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let (host, port) = split_host_port(rest).ok_or_else(|| format!("{s:?} has a bad port"))?;
        let host = host.trim_end_matches('.');
        let host = if let Ok(ip) = host.parse::<IpAddr>() {
            ip.to_string()
        } else {
            let name = host.strip_prefix("*.").unwrap_or(host);
            let wildcard = name.len() != host.len();
            if !valid_name(name) || (wildcard && private) {
                return Err(format!("{s:?} is not a host name, address or pattern"));
            }
            host.to_owned()
        };
        Ok(EgressEntry {
            private,
            host,
            port,
        })
    }

    fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }

    /// The entry as stored: `private:` when marked, IPv6 in brackets when a
    /// port follows.
    pub(crate) fn to_text(&self) -> String {
        let prefix = if self.private { "private:" } else { "" };
        match (self.port, self.host.contains(':')) {
            (Some(p), true) => format!("{prefix}[{}]:{p}", self.host),
            (Some(p), false) => format!("{prefix}{}:{p}", self.host),
            (None, _) => format!("{prefix}{}", self.host),
        }
    }
}

/// Whether platform entry `platform` admits install entry `entry`: `*`
/// admits everything; otherwise the host must be covered (`*.example.com`
/// covers its subdomains and narrower patterns, anything else exactly),
/// the ports must agree (no port on either side means 443 and 80), and an
/// entry that reaches private addresses (`private:` or an IP literal) needs
/// a platform entry that does too.
pub(crate) fn covers(platform: &str, entry: &EgressEntry) -> bool {
    if platform.trim() == "*" {
        return true;
    }
    let Ok(p) = EgressEntry::parse(platform) else {
        return false;
    };
    if p.port != entry.port {
        return false;
    }
    if (entry.private || entry.is_ip()) && !(p.private || p.is_ip()) {
        return false;
    }
    host_covers(&p.host, &entry.host)
}

fn host_covers(pattern: &str, host: &str) -> bool {
    if pattern == host {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_prefix("*.")
            .unwrap_or(host)
            .ends_with(&format!(".{suffix}")),
        None => false,
    }
}

fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(port(after.strip_prefix(':')?)?))),
        };
    }
    match s.matches(':').count() {
        0 => Some((s, None)),
        1 => {
            let (host, p) = s.split_once(':')?;
            Some((host, Some(port(p)?)))
        }
        _ => Some((s, None)),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: &str) -> EgressEntry {
        EgressEntry::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn entries_parse_and_print_back() {
        for (input, stored) in [
            ("API.example.com", "api.example.com"),
            ("*.example.com:8443", "*.example.com:8443"),
            ("private:DB.internal:5432", "private:db.internal:5432"),
            ("10.0.0.5", "10.0.0.5"),
            ("[FD00::5]:8443", "[fd00::5]:8443"),
            ("::1", "::1"),
        ] {
            assert_eq!(entry(input).to_text(), stored, "{input}");
        }
        for bad in ["a b", "host:0", "private:*.x.internal", "*.", "[::1"] {
            assert!(EgressEntry::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn platform_entries_bound_install_entries() {
        assert!(covers("*", &entry("private:db.internal:5432")));
        assert!(covers("api.example.com", &entry("api.example.com")));
        assert!(covers("*.example.com", &entry("api.example.com")));
        assert!(covers("*.example.com", &entry("*.eu.example.com")));
        assert!(!covers("*.example.com", &entry("example.com")));
        assert!(!covers("*.example.com", &entry("evil-example.com")));
        assert!(!covers("api.example.com", &entry("*.example.com")));
        // Ports must agree.
        assert!(!covers("api.example.com", &entry("api.example.com:8443")));
        assert!(covers("*.example.com:8443", &entry("api.example.com:8443")));
        // Private reach needs a platform entry with private reach.
        assert!(!covers(
            "db.internal:5432",
            &entry("private:db.internal:5432")
        ));
        assert!(covers(
            "private:db.internal:5432",
            &entry("private:db.internal:5432")
        ));
        assert!(!covers("*.example.com", &entry("10.0.0.5")));
        assert!(covers("10.0.0.5", &entry("10.0.0.5")));
    }
}
