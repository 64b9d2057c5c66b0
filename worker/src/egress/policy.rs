//! Which destinations one install may reach: its allowlist entries, and the
//! platform's own listeners no guest may reach whatever its list says.
//!
//! Entry syntax (the install's `--egress` list, bounded by the control
//! plane's platform list):
//!
//! | entry | host | ports | addresses |
//! | --- | --- | --- | --- |
//! | `api.example.com` | that name | 443 and 80 | public only |
//! | `api.example.com:8443` | that name | 8443 | public only |
//! | `*.example.com[:port]` | any strict subdomain | as above | public only |
//! | `10.0.0.5[:port]`, `[fd00::5][:port]` | that address | as above | that address, private or not |
//! | `private:db.internal[:port]` | that name | as above | public or private |
//!
//! Link-local and metadata addresses are refused whatever the entry (see
//! `address`). Matching is case-insensitive; IPv6 brackets and a trailing
//! dot are ignored. An entry that does not parse allows nothing. Pure
//! logic except [`DenyList::matches`], which resolves the names of
//! platform listeners it is given.

use std::net::{IpAddr, SocketAddr};

/// The ports an entry without a port allows.
pub(crate) const DEFAULT_PORTS: [u16; 2] = [443, 80];

/// The host part of an allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Name(String),
    /// `*.suffix`: strict subdomains of `suffix`.
    Subdomains(String),
    Ip(IpAddr),
}

/// One parsed allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    host: HostPattern,
    port: Option<u16>,
    /// `private:`: the name may resolve to non-public addresses.
    private: bool,
}

/// Which addresses a matched destination may resolve to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Reach {
    /// Public addresses only (names and wildcards).
    Public,
    /// Public and private ones (IP literals and `private:` names).
    Private,
}

/// Lower-case, without IPv6 brackets or a trailing dot.
pub(crate) fn normalise_host(h: &str) -> String {
    h.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Splits `host[:port]`, `[v6][:port]` or a bare IPv6 address.
pub(crate) fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let s = s.trim();
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port {p:?}"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed bracket in {s:?}"))?;
        return match after {
            "" => Ok((host.to_owned(), None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host.to_owned(), Some(port(p)?))),
                None => Err(format!("unexpected text after ] in {s:?}")),
            },
        };
    }
    match s.matches(':').count() {
        0 => Ok((s.to_owned(), None)),
        1 => {
            let (host, p) = s.split_once(':').unwrap_or((s, ""));
            Ok((host.to_owned(), Some(port(p)?)))
        }
        // Several colons without brackets: a bare IPv6 address.
        _ => Ok((s.to_owned(), None)),
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

impl Entry {
    /// Parses one entry (see the module documentation).
    pub(crate) fn parse(s: &str) -> Result<Entry, String> {
        let text = s.trim().to_ascii_lowercase();
        let (private, rest) = match text.strip_prefix("private:") {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let (host, port) = split_host_port(rest)?;
        let host = normalise_host(&host);
        let pattern = if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Ip(ip)
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if private {
                return Err(format!("{s:?}: private: needs one exact name"));
            }
            if !valid_name(suffix) {
                return Err(format!("{s:?} is not a host pattern"));
            }
            HostPattern::Subdomains(suffix.to_owned())
        } else if valid_name(&host) {
            HostPattern::Name(host)
        } else {
            return Err(format!("{s:?} is not a host name, address or pattern"));
        };
        Ok(Entry {
            host: pattern,
            port,
            private,
        })
    }

    /// How `host` (normalised) on `port` may be reached through this entry.
    fn reach(&self, host: &str, ip: Option<IpAddr>, port: u16) -> Option<Reach> {
        let port_ok = self
            .port
            .map_or(DEFAULT_PORTS.contains(&port), |p| p == port);
        if !port_ok {
            return None;
        }
        match (&self.host, ip) {
            (HostPattern::Ip(allowed), Some(ip)) if *allowed == ip => Some(Reach::Private),
            (HostPattern::Name(name), None) if name == host => Some(if self.private {
                Reach::Private
            } else {
                Reach::Public
            }),
            (HostPattern::Subdomains(suffix), None)
                if host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.' =>
            {
                Some(Reach::Public)
            }
            _ => None,
        }
    }
}

/// The destinations one install may reach. Empty: nothing (deny by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Allowlist(Vec<Entry>);

impl Allowlist {
    /// The entries that parse; the others allow nothing.
    pub(crate) fn new<I, S>(entries: I) -> Allowlist
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Allowlist(
            entries
                .into_iter()
                .filter_map(|e| {
                    let e = e.as_ref();
                    match Entry::parse(e) {
                        Ok(entry) => Some(entry),
                        Err(_) if e.trim().is_empty() => None,
                        Err(error) => {
                            tracing::debug!(%error, "ignoring an egress entry that does not parse");
                            None
                        }
                    }
                })
                .collect(),
        )
    }

    /// How `host` on `port` may be reached: the widest reach of the entries
    /// that match, or `None` when none does.
    pub(crate) fn permits(&self, host: &str, port: u16) -> Option<Reach> {
        let host = normalise_host(host);
        let ip = host.parse::<IpAddr>().ok();
        self.0.iter().filter_map(|e| e.reach(&host, ip, port)).max()
    }
}

/// The host of a platform listener.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DenyHost {
    Ip(IpAddr),
    Name(String),
    /// A listener on an unspecified address: every loopback and private
    /// address may be this machine.
    AnyLocal,
}

/// A platform listener (`host[:port]`; without a port, every port).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DenyRule {
    host: DenyHost,
    port: Option<u16>,
}

/// The platform's own listeners: never reachable from a guest, whatever
/// its allowlist says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DenyList(Vec<DenyRule>);

impl DenyList {
    /// A listener bound at `addr` (an unspecified IP means every local one).
    pub(crate) fn listener(&mut self, addr: SocketAddr) {
        let host = if addr.ip().is_unspecified() {
            DenyHost::AnyLocal
        } else {
            DenyHost::Ip(crate::egress::address::canonical(addr.ip()))
        };
        self.0.push(DenyRule {
            host,
            port: Some(addr.port()),
        });
    }

    /// A listener given as `host[:port]` (a name, an address or `[v6]`).
    pub(crate) fn add(&mut self, entry: &str) -> Result<(), String> {
        let (host, port) = split_host_port(entry)?;
        let host = normalise_host(&host);
        let host = match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => DenyHost::AnyLocal,
            Ok(ip) => DenyHost::Ip(crate::egress::address::canonical(ip)),
            Err(_) if valid_name(&host) => DenyHost::Name(host),
            Err(_) => return Err(format!("{entry:?} is not a host name or address")),
        };
        self.0.push(DenyRule { host, port });
        Ok(())
    }

    /// Whether `addr` is one of the listeners. Names are resolved now, and
    /// only for rules whose port matches.
    pub(crate) async fn matches(&self, addr: SocketAddr) -> bool {
        let ip = crate::egress::address::canonical(addr.ip());
        for rule in &self.0 {
            if rule.port.is_some_and(|p| p != addr.port()) {
                continue;
            }
            let hit = match &rule.host {
                DenyHost::Ip(listener) => *listener == ip,
                DenyHost::AnyLocal => {
                    crate::egress::address::classify(ip) != crate::egress::address::Class::Public
                }
                DenyHost::Name(name) => match tokio::net::lookup_host((name.as_str(), 0)).await {
                    Ok(found) => found
                        .map(|a| crate::egress::address::canonical(a.ip()))
                        .any(|a| a == ip),
                    // A listener name that does not resolve now cannot be
                    // told apart from the destination: refuse.
                    Err(_) => true,
                },
            };
            if hit {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_allows_nothing() {
        assert_eq!(Allowlist::default().permits("example.com", 443), None);
    }

    #[test]
    fn names_and_wildcards_reach_public_addresses_on_443_and_80() {
        let list = Allowlist::new(["API.example.com", "*.example.org", "pay.example.net:8443"]);
        assert_eq!(list.permits("api.example.com", 443), Some(Reach::Public));
        assert_eq!(list.permits("Api.Example.Com.", 80), Some(Reach::Public));
        assert_eq!(list.permits("api.example.com", 8080), None);
        assert_eq!(list.permits("other.example.com", 443), None);
        assert_eq!(list.permits("a.b.example.org", 443), Some(Reach::Public));
        assert_eq!(list.permits("example.org", 443), None);
        assert_eq!(list.permits("badexample.org", 443), None);
        assert_eq!(list.permits("pay.example.net", 8443), Some(Reach::Public));
        assert_eq!(list.permits("pay.example.net", 443), None);
    }

    #[test]
    fn only_literals_and_private_entries_reach_private_addresses() {
        let list = Allowlist::new([
            "localhost",
            "127.0.0.1:9000",
            "[::1]",
            "private:db.internal:5432",
        ]);
        assert_eq!(list.permits("localhost", 443), Some(Reach::Public));
        assert_eq!(list.permits("127.0.0.1", 9000), Some(Reach::Private));
        assert_eq!(list.permits("127.0.0.1", 9001), None);
        assert_eq!(list.permits("[::1]", 443), Some(Reach::Private));
        assert_eq!(list.permits("db.internal", 5432), Some(Reach::Private));
        assert_eq!(list.permits("db.internal", 443), None);
    }

    #[test]
    fn malformed_entries_allow_nothing() {
        for bad in [
            "private:*.corp.internal",
            "host:0",
            "host:99999",
            "a b",
            "[::1",
            "*.",
            "",
        ] {
            assert!(Entry::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Allowlist::new(["host:abc"]).permits("host", 443), None);
    }

    #[tokio::test]
    async fn platform_listeners_are_denied() {
        let mut deny = DenyList::default();
        deny.listener("127.0.0.1:7444".parse().expect("addr"));
        deny.listener("0.0.0.0:9091".parse().expect("addr"));
        deny.add("10.0.0.9:7443").expect("entry");
        deny.add("localhost:9090").expect("entry");
        let hit = |s: &str| {
            let deny = deny.clone();
            let addr: SocketAddr = s.parse().expect("addr");
            async move { deny.matches(addr).await }
        };
        assert!(hit("127.0.0.1:7444").await);
        assert!(!hit("127.0.0.1:7445").await);
        assert!(hit("[::ffff:127.0.0.1]:7444").await);
        assert!(hit("10.20.30.40:9091").await);
        assert!(!hit("93.184.216.34:9091").await);
        assert!(hit("10.0.0.9:7443").await);
        assert!(hit("127.0.0.1:9090").await);
        assert!(!hit("10.0.0.8:7443").await);
    }
}
