//! One client for every replica of the control plane. [`Upstream`] takes
//! several `https://host:port` URLs, or one name that resolves to several
//! addresses (a Kubernetes headless Service), and is a tonic channel
//! (`FooClient<Upstream>`) that spreads calls over the replicas in turn and
//! fails over: a call that never reached the replica it was sent to (the
//! connection could not be set up, or the server refused the stream before
//! processing it) is sent to the next one, so a replica going away fails no
//! call that did not start there. A call already being processed when its
//! replica died fails, as it must (it may have had effects).
//! [`Upstream::stream_channel`] is the one connection long-lived streams
//! (routes, heartbeats) use; their owners reconnect with backoff and the
//! reconnect lands on a replica that is up.
//!
//! TLS comes from [`Tls`] per connection, checked against the configured
//! server name whatever address is dialled. This module knows nothing of the
//! services called over it.

mod replay;
mod replicas;

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::transport::Channel;

use crate::in_process;
use crate::tls::{DialError, Role, Tls};
use replay::{Captured, MAX_REPLAY_BYTES};
use replicas::{Replicas, Target, Timing};
pub use replicas::{Resolver, system_resolver};

type BoxError = Box<dyn StdError + Send + Sync>;

/// A control-plane URL or setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("no control-plane URL given")]
    NoUrls,
    #[error("invalid control-plane URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// Parses `https://host[:port]` URLs (port 443 when omitted).
pub fn parse_urls<S: AsRef<str>>(urls: &[S]) -> Result<Vec<http::Uri>, UpstreamError> {
    let mut out = Vec::new();
    for url in urls
        .iter()
        .map(|u| u.as_ref().trim())
        .filter(|u| !u.is_empty())
    {
        let bad = |reason: &str| UpstreamError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the scheme must be https"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        out.push(uri);
    }
    if out.is_empty() {
        return Err(UpstreamError::NoUrls);
    }
    Ok(out)
}

/// Where the replicas are and how to reach them.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `https://host:port` of each replica, or of a name resolving to all.
    pub urls: Vec<http::Uri>,
    /// Checked against every replica's certificate; `None`: each URL's host.
    pub server_name: Option<String>,
    /// Limit on setting up one connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (also while idle), so a replica that
    /// vanished without closing its connections is noticed.
    pub keepalive: Duration,
    /// How long a ping may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
}

impl UpstreamSettings {
    /// `urls` with the timings every Annex process uses.
    pub fn new(urls: Vec<http::Uri>, server_name: Option<String>) -> UpstreamSettings {
        UpstreamSettings {
            urls,
            server_name,
            connect_timeout: Duration::from_secs(3),
            keepalive: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

#[derive(Clone)]
enum Inner {
    Replicas(Arc<Replicas>),
    /// One fixed channel (in-process wiring, tests): no spreading, no retry.
    Fixed(Channel),
}

/// A control plane in this process, preferred while it is registered.
#[derive(Clone)]
struct Local {
    endpoints: in_process::Endpoints,
    address: String,
    caller: Role,
}

/// A balanced, failing-over channel to the control plane's replicas.
#[derive(Clone)]
pub struct Upstream {
    inner: Inner,
    local: Option<Local>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Replicas(r) => f
                .debug_struct("Upstream")
                .field("targets", &r.targets)
                .field("replicas", &r.addresses())
                .finish(),
            Inner::Fixed(_) => f.debug_struct("Upstream").finish_non_exhaustive(),
        }
    }
}

impl From<Channel> for Upstream {
    fn from(channel: Channel) -> Upstream {
        Upstream {
            inner: Inner::Fixed(channel),
            local: None,
        }
    }
}

impl Upstream {
    /// Starts resolving `settings.urls` (again every 30 s, and soon after a
    /// replica could not be reached) with the system resolver. Needs a
    /// Tokio runtime; connects lazily.
    pub fn new(settings: UpstreamSettings, tls: Tls) -> Result<Upstream, UpstreamError> {
        Upstream::with_resolver(settings, tls, system_resolver())
    }

    /// [`Upstream::new`] with another resolver (tests).
    pub fn with_resolver(
        settings: UpstreamSettings,
        tls: Tls,
        resolver: Resolver,
    ) -> Result<Upstream, UpstreamError> {
        if settings.urls.is_empty() {
            return Err(UpstreamError::NoUrls);
        }
        let targets = settings
            .urls
            .iter()
            .map(|uri| target(uri, settings.server_name.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        let timing = Timing {
            connect_timeout: settings.connect_timeout,
            keepalive: settings.keepalive,
            keepalive_timeout: settings.keepalive_timeout,
        };
        let replicas = Arc::new(Replicas::new(targets, tls, timing, resolver));
        tokio::spawn(replicas::resolve_loop(
            Arc::downgrade(&replicas),
            replicas.wake.clone(),
        ));
        Ok(Upstream {
            inner: Inner::Replicas(replicas),
            local: None,
        })
    }

    /// Calls through this client go to the control plane registered in
    /// `endpoints` under `address` (same process), as a peer with the
    /// `caller` role, whenever one is; otherwise, and always for
    /// [`Upstream::stream_channel`], over the network as before.
    pub fn prefer_in_process(
        mut self,
        endpoints: in_process::Endpoints,
        address: &str,
        caller: Role,
    ) -> Upstream {
        self.local = Some(Local {
            endpoints,
            address: address.to_owned(),
            caller,
        });
        self
    }

    /// The channel for long-lived streams: one replica at a time; after it
    /// breaks, the next connect goes to a replica that is up.
    pub fn stream_channel(&self) -> Channel {
        match &self.inner {
            Inner::Fixed(channel) => channel.clone(),
            Inner::Replicas(r) => replicas::stream_channel(r).unwrap_or_else(|error| {
                // The authority was validated when the targets were built.
                tracing::error!(%error, "building the stream channel");
                Channel::from_static("http://control-plane").connect_lazy()
            }),
        }
    }

    /// The replica addresses known now (empty for a fixed channel).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        match &self.inner {
            Inner::Replicas(r) => r.addresses(),
            Inner::Fixed(_) => Vec::new(),
        }
    }
}

fn target(uri: &http::Uri, server_name: Option<&str>) -> Result<Target, UpstreamError> {
    let bad = |reason: &str| UpstreamError::Url {
        url: uri.to_string(),
        reason: reason.to_owned(),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    let host = authority.host().trim_matches(['[', ']']).to_owned();
    let port = authority.port_u16().unwrap_or(443);
    let name = server_name.unwrap_or(&host);
    let name =
        crate::tls::server_name(name).map_err(|_| UpstreamError::ServerName(name.to_owned()))?;
    Ok(Target {
        authority: format!("{}:{port}", authority.host()),
        host,
        port,
        name,
    })
}

/// Whether `err` shows the request never reached a server that could have
/// acted on it: the connection could not be set up, hyper dropped the
/// request before sending it, or the server refused the stream (HTTP/2
/// `REFUSED_STREAM`, or a GOAWAY below the stream's id).
fn never_sent(err: &(dyn StdError + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<DialError>() {
            return true;
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && (h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote()))
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether `err` comes from the connection itself failing (an I/O error),
/// rather than from the server's answer.
fn connection_lost(err: &(dyn StdError + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

impl Replicas {
    /// Sends `req` to the replicas in turn until one takes it; see the
    /// module documentation for when a call moves on.
    async fn send(&self, req: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        let (parts, body) = req.into_parts();
        let mut body = Captured::capture(body, MAX_REPLAY_BYTES)?;
        self.ensure_resolved().await;
        let mut order = self.order();
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last: Option<BoxError> = None;
        let mut resolved_again = false;
        loop {
            let Some(replica) = order.pop_front() else {
                // Every replica known was unreachable: the name may list
                // others by now (a replacement pod). Resolve once more.
                if resolved_again || !body.replayable() {
                    break;
                }
                resolved_again = true;
                self.refresh().await;
                order = self.order();
                order.retain(|r| !tried.contains(&r.addr));
                continue;
            };
            tried.push(replica.addr);
            let Some(attempt) = body.attempt() else {
                break;
            };
            match call(&replica.channel, request(&parts, attempt)).await {
                Ok(response) => {
                    replica.mark_up();
                    return Ok(response);
                }
                Err(error) => {
                    if !never_sent(&*error) {
                        // It may have been processed: not sent again. A
                        // broken connection still sends the next calls
                        // elsewhere first.
                        if connection_lost(&*error) {
                            replica.mark_down();
                            self.wake.notify_one();
                        }
                        return Err(error);
                    }
                    replica.mark_down();
                    self.wake.notify_one();
                    tracing::debug!(replica = %replica.addr, %error, "call never reached the replica; trying the next");
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            Box::new(DialError::new(
                self.targets
                    .first()
                    .map_or("control plane", |t| t.authority.as_str()),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no control plane address resolved",
                ),
            ))
        }))
    }
}

/// A copy of the request `parts` describe, carrying `body`.
fn request(parts: &http::request::Parts, body: Body) -> http::Request<Body> {
    let mut request = http::Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    request
}

/// One attempt on one replica's channel.
async fn call(
    channel: &Channel,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, BoxError> {
    let mut channel = channel.clone();
    futures::future::poll_fn(|cx| tower::Service::poll_ready(&mut channel, cx)).await?;
    Ok(tower::Service::call(&mut channel, request).await?)
}

impl tower::Service<http::Request<Body>> for Upstream {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.inner {
            Inner::Replicas(_) => Poll::Ready(Ok(())),
            Inner::Fixed(channel) => tower::Service::poll_ready(channel, cx).map_err(Into::into),
        }
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if let Some(mut service) = self
            .local
            .as_ref()
            .and_then(|l| l.endpoints.get(&l.address, l.caller))
        {
            return Box::pin(async move {
                futures::future::poll_fn(|cx| tower::Service::poll_ready(&mut service, cx))
                    .await
                    .map_err(|never| match never {})?;
                tower::Service::call(&mut service, req)
                    .await
                    .map_err(|never| match never {})
            });
        }
        match &mut self.inner {
            Inner::Replicas(r) => {
                let r = r.clone();
                Box::pin(async move { r.send(req).await })
            }
            Inner::Fixed(channel) => {
                let call = tower::Service::call(channel, req);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
        }
    }
}

#[cfg(test)]
mod tests;
