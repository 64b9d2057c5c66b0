//! Outbound HTTP for guests (`alga:extension/http.fetch`): one policy and one
//! client. Deny by default: a host must match the install's allowlist (sent
//! in the `ExecuteRequest`, already bounded by the platform list). Loopback,
//! private, link-local and other non-public addresses are refused unless the
//! host is allowed by an exact (non-wildcard) entry. Redirects are returned
//! to the guest, never followed. Time and response size are capped.
//!
//! The client connects to the address it checked itself (no second DNS
//! lookup between check and connect), speaks HTTP/1.1 through hyper, and TLS
//! through rustls with the webpki roots.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What a guest asked to send.
#[derive(Debug, Clone)]
pub(crate) struct OutboundRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// What came back.
#[derive(Debug, Clone)]
pub(crate) struct OutboundResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Failures in the guest's vocabulary (`http-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EgressError {
    #[error("invalid url or method: {0}")]
    InvalidUrl(String),
    #[error("destination not allowed: {0}")]
    NotAllowed(String),
    #[error("transport: {0}")]
    Transport(String),
}

/// Limits of the outbound client.
#[derive(Debug, Clone)]
pub(crate) struct EgressConfig {
    /// Per-request cap (Alga's client uses 30 s). The execution's own
    /// deadline still applies on top of it.
    pub timeout: Duration,
    /// Largest response body returned to a guest; larger ones fail with
    /// `transport`. Alga has no cap; 16 MiB keeps one guest from filling the
    /// worker's memory.
    pub max_response_bytes: usize,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            timeout: Duration::from_secs(30),
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

/// One allowlist entry: `host`, or `*.suffix` for any subdomain of `suffix`.
/// Matching is on the host only, case-insensitive; ports are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Subdomains(String),
}

/// How a host matched the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostMatch {
    /// Named exactly: non-public addresses are allowed for it.
    Exact,
    /// Matched a `*.` entry: only public addresses.
    Wildcard,
}

/// The hosts one install may reach. Empty: nothing (deny by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Allowlist(Vec<Pattern>);

impl Allowlist {
    pub(crate) fn new<I, S>(entries: I) -> Allowlist
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Allowlist(
            entries
                .into_iter()
                .filter_map(|e| {
                    let e = normalise_host(e.as_ref());
                    if e.is_empty() {
                        None
                    } else if let Some(suffix) = e.strip_prefix("*.") {
                        Some(Pattern::Subdomains(suffix.to_string()))
                    } else {
                        Some(Pattern::Exact(e))
                    }
                })
                .collect(),
        )
    }

    pub(crate) fn matches(&self, host: &str) -> Option<HostMatch> {
        let host = normalise_host(host);
        let mut best = None;
        for p in &self.0 {
            match p {
                Pattern::Exact(h) if *h == host => return Some(HostMatch::Exact),
                Pattern::Subdomains(s)
                    if host.len() > s.len()
                        && host.ends_with(s.as_str())
                        && host.as_bytes()[host.len() - s.len() - 1] == b'.' =>
                {
                    best = Some(HostMatch::Wildcard);
                }
                _ => {}
            }
        }
        best
    }
}

fn normalise_host(h: &str) -> String {
    h.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Whether an address is on the public internet. Everything else (loopback,
/// private, link-local, CGNAT, multicast, unspecified, documentation,
/// benchmarking, unique-local) needs an exact allowlist entry.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let seg0 = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg0 == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::from_bits(1)) // ::1 spelled otherwise
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240)
}

/// A connected stream, plain or TLS.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The outbound HTTP client shared by every execution on the worker.
pub(crate) struct EgressClient {
    config: EgressConfig,
    tls: tokio_rustls::TlsConnector,
}

impl EgressClient {
    pub(crate) fn new(config: EgressConfig) -> EgressClient {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|e| panic!("ring supports the default TLS versions: {e}"));
        EgressClient {
            config,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        }
    }

    /// Checks `request` against `allowlist` and sends it.
    pub(crate) async fn fetch(
        &self,
        allowlist: &Allowlist,
        request: OutboundRequest,
    ) -> Result<OutboundResponse, EgressError> {
        let url =
            url::Url::parse(&request.url).map_err(|e| EgressError::InvalidUrl(e.to_string()))?;
        let method = http::Method::from_bytes(request.method.as_bytes())
            .map_err(|e| EgressError::InvalidUrl(e.to_string()))?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(EgressError::InvalidUrl(format!(
                    "unsupported scheme {other}"
                )));
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| EgressError::InvalidUrl("no host".into()))?
            .to_string();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| EgressError::InvalidUrl("no port".into()))?;
        tokio::time::timeout(self.config.timeout, async {
            let io = self.connect(allowlist, &host, port, https).await?;
            self.send(io, &url, &host, method, request).await
        })
        .await
        .map_err(|_| EgressError::Transport("timed out".into()))?
    }

    pub(crate) fn config(&self) -> &EgressConfig {
        &self.config
    }

    /// Checks `host` against `allowlist`, resolves it, refuses non-public
    /// addresses unless the host is named exactly, and connects (with TLS
    /// for `https`) to the address it checked.
    pub(crate) async fn connect(
        &self,
        allowlist: &Allowlist,
        host: &str,
        port: u16,
        https: bool,
    ) -> Result<Box<dyn Io>, EgressError> {
        let how = allowlist
            .matches(host)
            .ok_or_else(|| EgressError::NotAllowed(host.to_string()))?;
        let target = self.resolve(host, port, how).await?;
        let tcp = TcpStream::connect(target)
            .await
            .map_err(|e| EgressError::Transport(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        if !https {
            return Ok(Box::new(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(normalise_host(host))
            .map_err(|e| EgressError::InvalidUrl(e.to_string()))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| EgressError::Transport(format!("tls: {e}")))?;
        Ok(Box::new(tls))
    }

    /// Resolves `host` and picks the first permitted address.
    async fn resolve(
        &self,
        host: &str,
        port: u16,
        how: HostMatch,
    ) -> Result<SocketAddr, EgressError> {
        let bare = normalise_host(host);
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare.as_str(), port))
                .await
                .map_err(|e| EgressError::Transport(format!("cannot resolve {bare}: {e}")))?
                .collect(),
        };
        addrs
            .into_iter()
            .find(|a| how == HostMatch::Exact || is_public(a.ip()))
            .ok_or_else(|| {
                EgressError::NotAllowed(format!("{bare} resolves to no permitted address"))
            })
    }

    async fn send(
        &self,
        io: Box<dyn Io>,
        url: &url::Url,
        host: &str,
        method: http::Method,
        request: OutboundRequest,
    ) -> Result<OutboundResponse, EgressError> {
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let mut builder = http::Request::builder().method(method).uri(path);
        let mut has_host = false;
        for (name, value) in &request.headers {
            has_host |= name.eq_ignore_ascii_case("host");
            builder = builder.header(name.as_str(), value.as_str());
        }
        if !has_host {
            let authority = match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            };
            builder = builder.header(http::header::HOST, authority);
        }
        let body = Full::new(Bytes::from(request.body.unwrap_or_default()));
        let req = builder
            .body(body)
            .map_err(|e| EgressError::Transport(format!("invalid request: {e}")))?;
        self.exchange(TokioIo::new(io), req).await
    }

    async fn exchange<IO>(
        &self,
        io: IO,
        request: http::Request<Full<Bytes>>,
    ) -> Result<OutboundResponse, EgressError>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| EgressError::Transport(format!("handshake: {e}")))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| EgressError::Transport(e.to_string()));
        let result = match response {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = response
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let limited = Limited::new(response.into_body(), self.config.max_response_bytes);
                match limited.collect().await {
                    Ok(body) => Ok(OutboundResponse {
                        status,
                        headers,
                        body: body.to_bytes().to_vec(),
                    }),
                    Err(e) => Err(EgressError::Transport(format!("response body: {e}"))),
                }
            }
            Err(e) => Err(e),
        };
        driver.abort();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_allowlist_allows_nothing() {
        assert_eq!(Allowlist::default().matches("example.com"), None);
    }

    #[test]
    fn exact_and_subdomain_entries_match_case_insensitively() {
        let list = Allowlist::new(["API.example.com", "*.example.org", "127.0.0.1", "[::1]"]);
        assert_eq!(list.matches("api.example.com"), Some(HostMatch::Exact));
        assert_eq!(list.matches("Api.Example.Com."), Some(HostMatch::Exact));
        assert_eq!(list.matches("other.example.com"), None);
        assert_eq!(list.matches("a.b.example.org"), Some(HostMatch::Wildcard));
        assert_eq!(list.matches("example.org"), None);
        assert_eq!(list.matches("badexample.org"), None);
        assert_eq!(list.matches("127.0.0.1"), Some(HostMatch::Exact));
        assert_eq!(list.matches("[::1]"), Some(HostMatch::Exact));
    }

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().expect("ip literal");
            assert!(!is_public(ip), "{ip} must not count as public");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            let ip: IpAddr = ip.parse().expect("ip literal");
            assert!(is_public(ip), "{ip} is public");
        }
    }
}
