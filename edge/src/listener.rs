//! The public listener: accepts connections up to a cap (over it a new
//! connection is closed at once and counted), serves HTTP/1.1 and HTTP/2 on
//! each with a deadline for the first request's head, a header-read timeout
//! for every later one, an idle timeout, and a graceful drain at shutdown
//! bounded in time. Each request learns its peer address ([`PeerAddr`]).
//! It must not know the routes (it serves whatever router it is given).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::clients::PeerAddr;

/// Limits on client connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSettings {
    /// Open connections at once; over it new ones are closed at once.
    pub max_connections: usize,
    /// How long a request's head may take to arrive (the first one counted
    /// from the connection's start).
    pub header_read_timeout: Duration,
    /// How long a connection may go without a byte either way.
    pub idle_timeout: Duration,
    /// How long in-flight requests may take to finish at shutdown.
    pub drain: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            // Far above what an ingress keeps open to one edge; it bounds
            // what a flood of idle connections can hold (memory, file
            // descriptors).
            max_connections: 8192,
            // A browser or proxy sends a request head in one write.
            header_read_timeout: Duration::from_secs(10),
            // Above the execution deadline (30 s) and the debug stream's
            // keep-alive (15 s), so only a truly silent connection closes.
            idle_timeout: Duration::from_secs(75),
            drain: Duration::from_secs(31),
        }
    }
}

/// What the listener counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionMetrics {
    pub open: Gauge,
    pub refused: Counter,
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish for at most `settings.drain`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ConnectionSettings,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, usually: wait rather than spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    metrics.refused.inc();
                    tracing::debug!(%peer, "connection refused: at the connection cap");
                    drop(tcp);
                    continue;
                };
                let conn = Connection {
                    router: router.clone(),
                    settings,
                    peer,
                    open: metrics.open.clone(),
                };
                let stop = stop_rx.clone();
                connections.spawn(async move {
                    conn.serve(tcp, stop).await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(settings.drain, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still busy after the drain; closing them"
        );
        connections.shutdown().await;
    }
}

struct Connection {
    router: Router,
    settings: ConnectionSettings,
    peer: SocketAddr,
    open: Gauge,
}

impl Connection {
    async fn serve(self, tcp: TcpStream, mut stop: watch::Receiver<bool>) {
        self.open.inc();
        // Without TCP_NODELAY a response written in two pieces (headers,
        // then a body over a few KiB) waits for the client's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let activity = Activity::new();
        let io = Watched {
            inner: tcp,
            activity: activity.clone(),
        };
        let (router, peer) = (self.router, self.peer);
        let started = activity.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            started.request_started();
            req.extensions_mut().insert(PeerAddr(peer));
            router.clone().oneshot(req.map(Body::new))
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.settings.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
        let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
        let mut watchdog = pin!(activity.expired(self.settings));
        let mut stopping = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                why = &mut watchdog => {
                    tracing::debug!(%peer, why, "closing a connection");
                    break;
                }
                _ = stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
        self.open.dec();
    }
}

/// When a connection last moved a byte, and whether a request has started.
#[derive(Clone)]
struct Activity {
    base: Instant,
    /// Milliseconds after `base` of the last byte read or written.
    last_ms: Arc<AtomicU64>,
    any_request: Arc<AtomicBool>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_ms: Arc::default(),
            any_request: Arc::default(),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.any_request.store(true, Ordering::Relaxed);
    }

    /// Resolves when the connection should be closed, with the reason:
    /// no request head within the header timeout of the start, or no byte
    /// either way for the idle timeout.
    async fn expired(self, settings: ConnectionSettings) -> &'static str {
        let first_head = self.base + settings.header_read_timeout;
        loop {
            let last = self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let idle_at = last + settings.idle_timeout;
            let waiting_for_first = !self.any_request.load(Ordering::Relaxed);
            let next = if waiting_for_first {
                first_head.min(idle_at)
            } else {
                idle_at
            };
            tokio::time::sleep_until(next).await;
            let now = Instant::now();
            if !self.any_request.load(Ordering::Relaxed) && now >= first_head {
                return "no request head in time";
            }
            let last = self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if now >= last + settings.idle_timeout {
                return "idle";
            }
        }
    }
}

/// A TCP stream that notes each byte moved in its [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Activity,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
