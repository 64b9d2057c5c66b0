//! Host names to socket addresses for Annex's own outbound gRPC connections
//! (to the control plane's replicas and to workers): IP literals as they
//! are; names from the hosts file `ANNEX_HOSTS_FILE` names, when it is set
//! and lists them; otherwise the system resolver, every address it returns.
//!
//! The hosts file (hosts(5) format: `address name...` per line, `#`
//! comments) stands in for a cluster's DNS where there is none: the
//! Kubernetes tests run the production manifests on loopback with one, and
//! a machine without the names in its DNS can pin them. It is read at every
//! lookup, so lines added while a process runs apply to its next
//! connection. This module only resolves: it must not connect or cache.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The environment variable naming the hosts file.
pub const HOSTS_FILE_ENV: &str = "ANNEX_HOSTS_FILE";

fn hosts_file() -> Option<&'static PathBuf> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| {
        std::env::var_os(HOSTS_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .as_ref()
}

/// The addresses `text` (hosts(5) format) lists for `host`, in file order.
pub fn parse_hosts(text: &str, host: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let addr: IpAddr = fields.next()?.parse().ok()?;
            fields
                .any(|name| name.eq_ignore_ascii_case(host))
                .then_some(addr)
        })
        .collect()
}

/// Every address of `host:port`, without duplicates, in the order found.
pub async fn lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let host = host.trim_matches(['[', ']']);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if let Some(file) = hosts_file() {
        match tokio::fs::read_to_string(file).await {
            Ok(text) => {
                let listed = parse_hosts(&text, host);
                if !listed.is_empty() {
                    return Ok(dedup(
                        listed.into_iter().map(|ip| SocketAddr::new(ip, port)),
                    ));
                }
            }
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "reading the hosts file");
            }
        }
    }
    let found = tokio::net::lookup_host((host, port)).await?;
    let addrs = dedup(found);
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address"),
        ));
    }
    Ok(addrs)
}

fn dedup(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_file_lists_every_address_of_a_name() {
        let text = "# cluster DNS stand-in\n\
                    127.1.2.1 annex-control-plane-headless.annex.svc\n\
                    127.1.2.2 annex-control-plane-headless.annex.svc other # two names\n\
                    bogus line\n\
                    127.1.2.3 w-1.annex-worker.annex.svc\n";
        let ips = |h| parse_hosts(text, h);
        assert_eq!(
            ips("annex-control-plane-headless.annex.svc"),
            [
                "127.1.2.1".parse::<IpAddr>().expect("ip"),
                "127.1.2.2".parse().expect("ip")
            ]
        );
        assert_eq!(ips("OTHER").len(), 1);
        assert!(ips("missing").is_empty());
    }

    #[tokio::test]
    async fn literals_resolve_to_themselves() {
        assert_eq!(
            lookup("[::1]", 7443).await.expect("v6"),
            ["[::1]:7443".parse().expect("addr")]
        );
        assert_eq!(
            lookup("127.0.0.1", 1).await.expect("v4"),
            ["127.0.0.1:1".parse().expect("addr")]
        );
    }
}
