//! The server side of mTLS for tonic: [`incoming`] accepts TCP connections
//! on a bound listener and completes each TLS handshake with the
//! configuration current at that moment, yielding the streams tonic serves
//! (`Server::serve_with_incoming*`). tonic reads the peer's certificates
//! from these streams, so [`authenticate`](super::authenticate) sees the
//! client's role as with tonic's own TLS.
//!
//! Handshakes run concurrently and never hold up accepting; one that fails
//! or takes longer than [`HANDSHAKE_TIMEOUT`] drops its connection only.
//! Dropping the stream closes the listener (tonic drops it when shutdown
//! begins, so new connections are refused at once).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FuturesUnordered, Stream, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use super::Tls;

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Handshake = Pin<Box<dyn Future<Output = Option<TlsStream<TcpStream>>> + Send>>;

/// TLS connections accepted on a listener; see [`incoming`].
pub struct TlsIncoming {
    listener: TcpListener,
    tls: Tls,
    handshakes: FuturesUnordered<Handshake>,
}

impl std::fmt::Debug for TlsIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIncoming")
            .field("listener", &self.listener.local_addr().ok())
            .field("handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

/// Accepts on `listener` (with `TCP_NODELAY`: a response split over two
/// writes must not wait for the peer's delayed ACK) and hands out
/// connections whose TLS handshake, with the configuration current when it
/// began, completed.
pub fn incoming(listener: TcpListener, tls: Tls) -> TlsIncoming {
    TlsIncoming {
        listener,
        tls,
        handshakes: FuturesUnordered::new(),
    }
}

fn handshake(tls: &Tls, tcp: TcpStream, peer: std::net::SocketAddr) -> Handshake {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
    Box::pin(async move {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(error)) => {
                tracing::info!(%peer, %error, "TLS handshake refused");
                None
            }
            Err(_) => {
                tracing::info!(%peer, "TLS handshake timed out");
                None
            }
        }
    })
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsStream<TcpStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, peer))) => {
                    let _ = tcp.set_nodelay(true);
                    this.handshakes.push(handshake(&this.tls, tcp, peer));
                }
                // tonic logs the error and polls again.
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => break,
            }
        }
        loop {
            match this.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(stream))) => return Poll::Ready(Some(Ok(stream))),
                Poll::Ready(Some(None)) => continue,
                // No handshake in progress: the listener's waker is set.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}
