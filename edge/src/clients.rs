//! Who a request comes from, for per-client budgets, and the budget of
//! lookups a client may cause: each install resolution or API-key check
//! that misses the edge's caches on behalf of an unverified caller (an
//! `/ext-ui` tenant, an `x-api-key`) takes a token from the client's bucket,
//! so one client cannot turn a stream of made-up names into a stream of
//! control-plane calls and cache entries. Cache hits cost nothing.
//!
//! The client is the connection's peer address, or, behind a proxy the
//! operator names (`ANNEX_EDGE_CLIENT_IP_HEADER`), the address that proxy
//! appended last to that header. IPv6 clients count per /64. This module
//! must not decide what a refusal answers (the routes do).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use annex_ops::quota::TokenBucket;
use axum::extract::FromRequestParts;
use http::HeaderName;
use http::request::Parts;
use lru::LruCache;
use parking_lot::Mutex;

use crate::state::EdgeState;

/// The peer address of a connection, set on each request by the listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub SocketAddr);

/// One client for budgeting: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey(IpAddr);

impl ClientKey {
    pub(crate) fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    ClientKey(IpAddr::V6(Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
            v4 => ClientKey(v4),
        }
    }

    /// Requests with no known peer (in-process callers) share one key.
    const UNKNOWN: ClientKey = ClientKey(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
}

/// How many lookups a client may cause: a burst, then a steady rate.
#[derive(Debug, Clone, Copy)]
pub struct LookupSettings {
    pub burst: u32,
    pub per_sec: f64,
}

impl Default for LookupSettings {
    fn default() -> Self {
        // Generous: a page load costs one lookup per (tenant, extension) the
        // edge has not cached, shared by every user of the edge.
        LookupSettings {
            burst: 200,
            per_sec: 20.0,
        }
    }
}

/// Clients whose buckets are remembered; the least recently seen are
/// forgotten first (a forgotten client starts again with a full bucket).
const MAX_CLIENTS: usize = 65_536;

/// Client identification and the per-client lookup budget.
pub(crate) struct Clients {
    /// A header a trusted proxy appends the client's address to.
    pub ip_header: Option<HeaderName>,
    settings: LookupSettings,
    buckets: Mutex<LruCache<ClientKey, TokenBucket>>,
    refusals: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("ip_header", &self.ip_header)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Clients {
    pub(crate) fn new(
        ip_header: Option<HeaderName>,
        settings: LookupSettings,
        refusals: prometheus_client::metrics::counter::Counter,
    ) -> Clients {
        let cap = NonZeroUsize::new(MAX_CLIENTS).unwrap_or(NonZeroUsize::MIN);
        Clients {
            ip_header,
            settings,
            buckets: Mutex::new(LruCache::new(cap)),
            refusals,
        }
    }

    /// The client of a request.
    pub(crate) fn key(&self, parts: &Parts) -> ClientKey {
        let forwarded = self.ip_header.as_ref().and_then(|name| {
            let last = parts.headers.get_all(name).iter().next_back()?;
            let addr = last.to_str().ok()?.rsplit(',').next()?.trim();
            addr.parse::<IpAddr>()
                .ok()
                .or_else(|| addr.parse::<SocketAddr>().ok().map(|s| s.ip()))
        });
        let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
        forwarded
            .or(peer)
            .map(ClientKey::of)
            .unwrap_or(ClientKey::UNKNOWN)
    }

    /// Takes one lookup from `client`'s bucket, or says after how many whole
    /// seconds (at least 1) one will be available.
    pub(crate) fn take_lookup(&self, client: ClientKey) -> Result<(), u64> {
        let cap = f64::from(self.settings.burst.max(1));
        let rate = self.settings.per_sec;
        let now = Instant::now();
        let result = self
            .buckets
            .lock()
            .get_or_insert_mut(client, || TokenBucket::full(cap, now))
            .take(cap, rate, now);
        if result.is_err() {
            self.refusals.inc();
            tracing::debug!(client = ?client, "lookup budget spent");
        }
        result
    }
}

/// The extractor routes take: the request's [`ClientKey`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client(pub ClientKey);

impl FromRequestParts<Arc<EdgeState>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<EdgeState>,
    ) -> Result<Client, Self::Rejection> {
        Ok(Client(state.clients.key(parts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)], peer: Option<&str>) -> Parts {
        let mut req = http::Request::builder().uri("/");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (mut parts, ()) = req.body(()).expect("request").into_parts();
        if let Some(p) = peer {
            parts
                .extensions
                .insert(PeerAddr(p.parse().expect("socket address")));
        }
        parts
    }

    fn clients(header: Option<&'static str>) -> Clients {
        Clients::new(
            header.map(HeaderName::from_static),
            LookupSettings {
                burst: 2,
                per_sec: 0.001,
            },
            Default::default(),
        )
    }

    #[test]
    fn the_client_is_the_peer_or_what_the_trusted_proxy_appended() {
        let direct = clients(None);
        let p = parts(&[("x-forwarded-for", "203.0.113.9")], Some("10.0.0.1:5000"));
        assert_eq!(
            direct.key(&p),
            ClientKey::of("10.0.0.1".parse().expect("ip"))
        );
        let proxied = clients(Some("x-forwarded-for"));
        let p = parts(
            &[("x-forwarded-for", "198.51.100.1, 203.0.113.9")],
            Some("10.0.0.1:5000"),
        );
        assert_eq!(
            proxied.key(&p),
            ClientKey::of("203.0.113.9".parse().expect("ip"))
        );
        // An unparsable header falls back to the peer.
        let p = parts(&[("x-forwarded-for", "garbage")], Some("10.0.0.1:5000"));
        assert_eq!(
            proxied.key(&p),
            ClientKey::of("10.0.0.1".parse().expect("ip"))
        );
        // IPv6 counts per /64.
        assert_eq!(
            ClientKey::of("2001:db8:1:2:aaaa::1".parse().expect("ip")),
            ClientKey::of("2001:db8:1:2:bbbb::9".parse().expect("ip"))
        );
        assert_ne!(
            ClientKey::of("2001:db8:1:2::1".parse().expect("ip")),
            ClientKey::of("2001:db8:1:3::1".parse().expect("ip"))
        );
    }

    #[test]
    fn each_client_has_its_own_budget() {
        let c = clients(None);
        let a = ClientKey::of("192.0.2.1".parse().expect("ip"));
        let b = ClientKey::of("192.0.2.2".parse().expect("ip"));
        assert!(c.take_lookup(a).is_ok());
        assert!(c.take_lookup(a).is_ok());
        assert!(c.take_lookup(a).is_err());
        assert!(c.take_lookup(b).is_ok());
        assert_eq!(c.refusals.get(), 1);
    }
}
