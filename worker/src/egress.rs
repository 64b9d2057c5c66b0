//! Outbound HTTP for guests (`alga:extension/http.fetch`, and `wasi:http`
//! through the same [`EgressClient::connect`]): one policy and one client.
//! Deny by default: a destination must be allowed by the install's
//! allowlist (sent in the `ExecuteRequest`, already bounded by the platform
//! list), on a port its entry allows (`policy`); the name is resolved once
//! and the first address the policy permits is the one connected to (no
//! second lookup between check and connect). Private addresses need an
//! IP-literal or `private:` entry, link-local and metadata addresses are
//! never reached (`address`), nor the platform's own listeners
//! ([`DenyList`]). Redirects are returned to the guest, never followed.
//! Time and response size are capped.
//!
//! The client speaks HTTP/1.1 through hyper, and TLS through rustls with
//! the webpki roots.

pub(crate) mod address;
pub(crate) mod policy;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use address::Class;
pub(crate) use policy::{Allowlist, DenyList};
use policy::{Reach, normalise_host};

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
    /// The platform's own listeners, never reachable from a guest.
    pub deny: DenyList,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            timeout: Duration::from_secs(30),
            max_response_bytes: 16 * 1024 * 1024,
            deny: DenyList::default(),
        }
    }
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

    /// Checks `host` and `port` against `allowlist`, resolves the host
    /// once, picks the first address the policy permits, and connects (with
    /// TLS for `https`) to that address.
    pub(crate) async fn connect(
        &self,
        allowlist: &Allowlist,
        host: &str,
        port: u16,
        https: bool,
    ) -> Result<Box<dyn Io>, EgressError> {
        let reach = allowlist
            .permits(host, port)
            .ok_or_else(|| EgressError::NotAllowed(format!("{host} port {port}")))?;
        let target = self.resolve(host, port, reach).await?;
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

    /// Resolves `host` once and picks the first address `reach` and the
    /// platform's listeners permit.
    async fn resolve(
        &self,
        host: &str,
        port: u16,
        reach: Reach,
    ) -> Result<SocketAddr, EgressError> {
        let bare = normalise_host(host);
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare.as_str(), port))
                .await
                .map_err(|e| EgressError::Transport(format!("cannot resolve {bare}: {e}")))?
                .collect(),
        };
        for addr in addrs {
            let allowed = match address::classify(addr.ip()) {
                Class::Public => true,
                Class::Private => reach == Reach::Private,
                Class::Forbidden => false,
            };
            if allowed && !self.config.deny.matches(addr).await {
                return Ok(addr);
            }
        }
        Err(EgressError::NotAllowed(format!(
            "{bare} resolves to no permitted address"
        )))
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
