//! The client side of mTLS: [`dial`] opens one TLS connection to an address
//! with the configuration current at that moment, checking the server's
//! certificate against a name given separately from the address (so a
//! client that connects to each of a DNS name's addresses still verifies
//! the name). [`TlsConnector`] is the tonic connector for one `host:port`,
//! resolved at every connect (`crate::resolve`), for
//! `Endpoint::connect_with_connector_lazy`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Tls, TlsError};

/// A connection that could not be set up: TCP or the TLS handshake failed,
/// or it took too long. Whatever was to be sent on it was not.
#[derive(Debug, thiserror::Error)]
#[error("connecting to {target}: {source}")]
pub struct DialError {
    target: String,
    #[source]
    source: io::Error,
}

impl DialError {
    pub(crate) fn new(target: impl std::fmt::Display, source: io::Error) -> DialError {
        DialError {
            target: target.to_string(),
            source,
        }
    }
}

/// The server name certificates are checked against, from a host name or
/// an IP literal (brackets of an IPv6 literal removed).
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.trim_matches(['[', ']']).to_owned())
        .map_err(|_| TlsError::ServerName(name.to_owned()))
}

/// Connects to `addr` and completes a TLS handshake as a client, checking
/// the server's certificate against `name`, within `timeout`.
pub async fn dial(
    tls: &Tls,
    addr: SocketAddr,
    name: &ServerName<'static>,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, DialError> {
    let connector = tokio_rustls::TlsConnector::from(tls.client_config());
    let attempt = async {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        connector.connect(name.clone(), tcp).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(DialError::new(addr, e)),
        Err(_) => Err(DialError::new(
            addr,
            io::Error::new(io::ErrorKind::TimedOut, "timed out"),
        )),
    }
}

/// A tonic connector for `host:port` over mTLS: each connect resolves the
/// host and tries its addresses in turn, each within the timeout.
#[derive(Clone)]
pub struct TlsConnector {
    tls: Tls,
    host: String,
    port: u16,
    name: ServerName<'static>,
    timeout: Duration,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Dials `host:port`, checking certificates against `name`.
    pub fn new(
        tls: Tls,
        host: &str,
        port: u16,
        name: &str,
        timeout: Duration,
    ) -> Result<TlsConnector, TlsError> {
        Ok(TlsConnector {
            tls,
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            name: server_name(name)?,
            timeout,
        })
    }

    async fn connect(self) -> Result<TokioIo<TlsStream<TcpStream>>, DialError> {
        let target = format!("{}:{}", self.host, self.port);
        let addrs = crate::resolve::lookup(&self.host, self.port)
            .await
            .map_err(|e| DialError::new(&target, e))?;
        let mut last = DialError::new(
            &target,
            io::Error::new(io::ErrorKind::NotFound, "no address"),
        );
        for addr in addrs {
            match dial(&self.tls, addr, &self.name, self.timeout).await {
                Ok(stream) => return Ok(TokioIo::new(stream)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    /// The URI is tonic's endpoint; the address dialled is this connector's.
    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        Box::pin(self.clone().connect())
    }
}
