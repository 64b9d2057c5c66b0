//! The replicas behind an upstream: the configured `https://host:port`
//! targets resolved to addresses (every address of a name, so one headless
//! Service name fans out to all its pods), each address with its own lazily
//! connected channel and a passive health mark. Names are resolved again
//! every [`REFRESH`] and soon after a replica could not be reached; a
//! lookup that fails keeps the addresses it found before.
//!
//! [`Failover`] is the connector of the one channel long-lived streams use:
//! each (re)connect takes the replica it used last if it is up, else the
//! next one that accepts. This module orders and connects; the retry rule
//! for calls is the parent module's.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use parking_lot::{Mutex, RwLock};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint};

use crate::tls::{DialError, Tls};

/// How often names are resolved again when nothing fails.
pub(super) const REFRESH: Duration = Duration::from_secs(30);
/// Fewest time between two resolutions prompted by failures.
const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);
/// How long a replica that could not be reached is tried last: long enough
/// not to pay a connect timeout per call, short enough that a restarted one
/// is used again soon.
pub(super) const DOWN_FOR: Duration = Duration::from_secs(5);

/// Resolves `host`, `port` to addresses (the system's or a test's).
pub type Resolver =
    Arc<dyn Fn(String, u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// The default [`Resolver`]: [`crate::resolve::lookup`].
pub fn system_resolver() -> Resolver {
    Arc::new(|host, port| Box::pin(async move { crate::resolve::lookup(&host, port).await }))
}

/// One configured URL.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    /// `host:port` as written (the `:authority` of requests).
    pub(super) authority: String,
    /// Checked against the server's certificate.
    pub(super) name: ServerName<'static>,
}

/// Connection settings shared by every replica.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) connect_timeout: Duration,
    pub(super) keepalive: Duration,
    pub(super) keepalive_timeout: Duration,
}

/// One address of a target.
pub(super) struct Replica {
    pub(super) addr: SocketAddr,
    pub(super) target: usize,
    pub(super) channel: Channel,
    down_until: Mutex<Option<Instant>>,
}

impl Replica {
    fn is_down(&self, now: Instant) -> Option<Instant> {
        (*self.down_until.lock()).filter(|until| *until > now)
    }

    pub(super) fn mark_down(&self) {
        let mut until = self.down_until.lock();
        if until.is_none_or(|u| u <= Instant::now()) {
            tracing::info!(replica = %self.addr, "control plane replica unreachable; trying others first");
        }
        *until = Some(Instant::now() + DOWN_FOR);
    }

    pub(super) fn mark_up(&self) {
        *self.down_until.lock() = None;
    }
}

/// Dials one fixed address (the connector of a replica's channel).
#[derive(Clone)]
struct Pinned {
    tls: Tls,
    addr: SocketAddr,
    name: ServerName<'static>,
    timeout: Duration,
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream>, DialError>> + Send>>;
type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

impl tower::Service<http::Uri> for Pinned {
    type Response = TokioIo<TlsStream>;
    type Error = DialError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Connecting {
        let me = self.clone();
        Box::pin(async move {
            crate::tls::dial(&me.tls, me.addr, &me.name, me.timeout)
                .await
                .map(TokioIo::new)
        })
    }
}

/// The shared state of an upstream.
pub(super) struct Replicas {
    pub(super) targets: Vec<Target>,
    tls: Tls,
    timing: Timing,
    resolver: Resolver,
    list: RwLock<Vec<Arc<Replica>>>,
    refreshing: tokio::sync::Mutex<()>,
    /// Wakes the resolution loop early.
    pub(super) wake: Arc<Notify>,
    turn: AtomicUsize,
    /// Where the stream channel connected last (an index into `list`'s
    /// order at the time; only a starting point).
    stream_turn: AtomicUsize,
}

impl Replicas {
    pub(super) fn new(
        targets: Vec<Target>,
        tls: Tls,
        timing: Timing,
        resolver: Resolver,
    ) -> Replicas {
        // Processes start at different replicas, so their streams spread.
        let seed = std::process::id() as usize
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() as usize);
        Replicas {
            targets,
            tls,
            timing,
            resolver,
            list: RwLock::new(Vec::new()),
            refreshing: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            turn: AtomicUsize::new(seed),
            stream_turn: AtomicUsize::new(seed),
        }
    }

    /// The addresses known now.
    pub(super) fn addresses(&self) -> Vec<SocketAddr> {
        self.list.read().iter().map(|r| r.addr).collect()
    }

    fn channel(&self, target: usize, addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
        let t = &self.targets[target];
        let connector = Pinned {
            tls: self.tls.clone(),
            addr,
            name: t.name.clone(),
            timeout: self.timing.connect_timeout,
        };
        Ok(Endpoint::from_shared(format!("http://{}", t.authority))?
            .http2_keep_alive_interval(self.timing.keepalive)
            .keep_alive_timeout(self.timing.keepalive_timeout)
            .keep_alive_while_idle(true)
            .connect_with_connector_lazy(connector))
    }

    /// Resolves every target again and replaces the replica list, keeping
    /// the channels of addresses that stay.
    pub(super) async fn refresh(&self) {
        let _one_at_a_time = self.refreshing.lock().await;
        let before = self.list.read().clone();
        let mut found: Vec<(usize, SocketAddr)> = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            match (self.resolver)(t.host.clone(), t.port).await {
                Ok(addrs) => found.extend(addrs.into_iter().map(|a| (i, a))),
                Err(error) => {
                    tracing::warn!(host = %t.host, %error, "resolving the control plane; keeping its known addresses");
                    found.extend(before.iter().filter(|r| r.target == i).map(|r| (i, r.addr)));
                }
            }
        }
        let mut next: Vec<Arc<Replica>> = Vec::new();
        for (target, addr) in found {
            if next.iter().any(|r| r.addr == addr) {
                continue;
            }
            if let Some(kept) = before.iter().find(|r| r.addr == addr) {
                next.push(kept.clone());
                continue;
            }
            match self.channel(target, addr) {
                Ok(channel) => next.push(Arc::new(Replica {
                    addr,
                    target,
                    channel,
                    down_until: Mutex::new(None),
                })),
                Err(error) => tracing::warn!(%addr, %error, "control plane address unusable"),
            }
        }
        let old: Vec<SocketAddr> = before.iter().map(|r| r.addr).collect();
        let new: Vec<SocketAddr> = next.iter().map(|r| r.addr).collect();
        if old != new {
            tracing::info!(replicas = ?new, "control plane replicas");
        }
        *self.list.write() = next;
    }

    /// Replicas for a call: every one, starting at the next turn, those
    /// marked down last (soonest back first).
    pub(super) fn order(&self) -> VecDeque<Arc<Replica>> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        self.ordered(turn).into()
    }

    fn ordered(&self, start: usize) -> Vec<Arc<Replica>> {
        let mut list = self.list.read().clone();
        if list.is_empty() {
            return list;
        }
        let at = start % list.len();
        list.rotate_left(at);
        let now = Instant::now();
        // Stable: up ones keep the rotation, down ones follow by expiry.
        list.sort_by_key(|r| r.is_down(now));
        list
    }

    /// Resolves now if nothing is known yet (the first call after start).
    pub(super) async fn ensure_resolved(&self) {
        if self.list.read().is_empty() {
            self.refresh().await;
        }
    }

    /// Connects the stream channel: the replica used last if it is up,
    /// else the next that accepts.
    async fn connect_stream(self: Arc<Self>) -> Result<TokioIo<TlsStream>, DialError> {
        self.ensure_resolved().await;
        let mut last = DialError::new(
            self.targets
                .first()
                .map_or_else(String::new, |t| t.authority.clone()),
            io::Error::new(io::ErrorKind::NotFound, "no control plane address resolved"),
        );
        let start = self.stream_turn.load(Ordering::Relaxed);
        let first = self.ordered(start);
        let tried: Vec<SocketAddr> = first.iter().map(|r| r.addr).collect();
        match self.first_to_accept(first, &mut last).await {
            Some(stream) => return Ok(stream),
            // Every replica known was unreachable: resolve once more (a
            // replacement may be listed by now) and try the new ones.
            None => self.refresh().await,
        }
        let mut fresh = self.ordered(start);
        fresh.retain(|r| !tried.contains(&r.addr));
        self.first_to_accept(fresh, &mut last).await.ok_or(last)
    }

    /// The first of `order` that accepts a connection; the others are
    /// marked down and `last` keeps the latest error.
    async fn first_to_accept(
        &self,
        order: Vec<Arc<Replica>>,
        last: &mut DialError,
    ) -> Option<TokioIo<TlsStream>> {
        for replica in order {
            let t = &self.targets[replica.target];
            match crate::tls::dial(
                &self.tls,
                replica.addr,
                &t.name,
                self.timing.connect_timeout,
            )
            .await
            {
                Ok(stream) => {
                    replica.mark_up();
                    let index = self.list.read().iter().position(|r| r.addr == replica.addr);
                    if let Some(i) = index {
                        self.stream_turn.store(i, Ordering::Relaxed);
                    }
                    tracing::info!(replica = %replica.addr, "stream connected to control plane replica");
                    return Some(TokioIo::new(stream));
                }
                Err(e) => {
                    replica.mark_down();
                    self.wake.notify_one();
                    *last = e;
                }
            }
        }
        None
    }
}

/// Re-resolves every [`REFRESH`], or soon after `wake`, while the replicas
/// are in use.
pub(super) async fn resolve_loop(replicas: std::sync::Weak<Replicas>, wake: Arc<Notify>) {
    loop {
        match replicas.upgrade() {
            Some(r) => r.refresh().await,
            None => return,
        }
        tokio::time::sleep(MIN_REFRESH_GAP).await;
        tokio::select! {
            () = tokio::time::sleep(REFRESH - MIN_REFRESH_GAP) => {}
            () = wake.notified() => {}
        }
    }
}

/// The connector of the stream channel (see [`Replicas::connect_stream`]).
#[derive(Clone)]
pub(super) struct Failover(pub(super) Arc<Replicas>);

impl tower::Service<http::Uri> for Failover {
    type Response = TokioIo<TlsStream>;
    type Error = DialError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Connecting {
        Box::pin(self.0.clone().connect_stream())
    }
}

/// The channel long-lived streams use: one connection at a time, to one
/// replica, moved by [`Failover`] when it breaks.
pub(super) fn stream_channel(replicas: &Arc<Replicas>) -> Result<Channel, tonic::transport::Error> {
    let authority = replicas
        .targets
        .first()
        .map_or_else(|| "control-plane".to_owned(), |t| t.authority.clone());
    Ok(Endpoint::from_shared(format!("http://{authority}"))?
        .http2_keep_alive_interval(replicas.timing.keepalive)
        .keep_alive_timeout(replicas.timing.keepalive_timeout)
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(Failover(replicas.clone())))
}
