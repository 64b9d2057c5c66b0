//! The loopback rule: the harness sends traffic only to 127.0.0.0/8, `::1` or
//! `localhost`. Every target URL passes through [`resolve`] before a single
//! byte is sent, and a name that is not literally `localhost` is refused even
//! if it happens to resolve to a loopback address (a DNS answer can change
//! between the check and the connect; the literal cannot).

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error(
        "refusing target `{url}`: host `{host}` is not loopback (annex-loadtest only sends to \
         127.0.0.0/8, ::1 or localhost)"
    )]
    NotLoopback { url: String, host: String },
    #[error("target `{url}` is not a URL with a host: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("resolving `{host}`: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
}

/// Scheme, host and port of a target URL, after the loopback check.
#[derive(Debug, Clone)]
pub struct Checked {
    pub uri: http::Uri,
    /// Where to connect: a loopback socket address.
    pub addr: SocketAddr,
}

/// Checks `url` against the loopback rule and resolves it to a loopback
/// socket address. `default_port` applies when the URL names none.
pub async fn resolve(url: &str, default_port: u16) -> Result<Checked, LoopbackError> {
    let bad = |reason: &str| LoopbackError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?.to_owned();
    let port = uri.port_u16().unwrap_or(default_port);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = match classify(bare) {
        Host::LoopbackIp(ip) => SocketAddr::new(ip, port),
        Host::Localhost => {
            let mut addrs =
                tokio::net::lookup_host(("localhost", port))
                    .await
                    .map_err(|source| LoopbackError::Resolve {
                        host: host.clone(),
                        source,
                    })?;
            // A hosts file could map `localhost` elsewhere; use only a loopback answer.
            addrs
                .find(|a| a.ip().is_loopback())
                .ok_or_else(|| LoopbackError::NotLoopback {
                    url: url.to_owned(),
                    host: host.clone(),
                })?
        }
        Host::Other => {
            return Err(LoopbackError::NotLoopback {
                url: url.to_owned(),
                host,
            });
        }
    };
    Ok(Checked { uri, addr })
}

enum Host {
    LoopbackIp(IpAddr),
    Localhost,
    Other,
}

fn classify(host: &str) -> Host {
    if host.eq_ignore_ascii_case("localhost") {
        return Host::Localhost;
    }
    match host.parse::<IpAddr>() {
        // `is_loopback` is 127.0.0.0/8 for IPv4 and exactly ::1 for IPv6.
        Ok(ip) if ip.is_loopback() => Host::LoopbackIp(ip),
        _ => Host::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, allowed: bool) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let got = rt.block_on(resolve(url, 80));
        match (allowed, got) {
            (true, Ok(c)) => assert!(c.addr.ip().is_loopback(), "{url}"),
            (false, Err(LoopbackError::NotLoopback { .. })) => {}
            (_, other) => panic!("{url}: expected allowed={allowed}, got {other:?}"),
        }
    }

    #[test]
    fn only_loopback_targets_pass() {
        check("http://127.0.0.1:8080/hello", true);
        check("http://127.5.6.7/", true);
        check("http://[::1]:9000/", true);
        check("http://localhost:8080/", true);
        check("http://LOCALHOST/", true);
        check("http://10.0.0.1/", false);
        check("http://192.168.1.1:8080/", false);
        check("http://[::2]/", false);
        check("http://example.com/", false);
        check("http://localhost.example.com/", false);
        check("http://0.0.0.0:8080/", false);
        check("http://[::ffff:127.0.0.1]/", false);
    }
}
