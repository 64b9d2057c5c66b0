//! In-process gRPC endpoints: when two parts of Annex run in one process
//! (`annex dev` runs the control plane, a worker and the edge together), the
//! caller may hand its requests straight to the callee's tonic service
//! instead of sending them through TCP, TLS and HTTP/2 to itself.
//!
//! A part that serves gRPC registers its services here under the address it
//! listens on or advertises; a caller that finds the address it was about to
//! dial takes the service instead. Nothing crosses a network this way, so
//! nothing weakens mTLS between hosts: a registration exists only inside the
//! process that made it. The caller names its own role, as its certificate
//! would have: the callee finds a [`Peer`] in the request's extensions,
//! which the TLS interceptor admits like a verified certificate and which
//! only in-process code can set.
//!
//! The messages are still encoded and decoded by tonic on both sides
//! (message size limits, status codes and cancellation behave as over the
//! network); only the transport is gone.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use parking_lot::RwLock;
use tonic::body::Body;
use tower::util::BoxCloneSyncService;

use crate::tls::{Peer, Role};

/// A gRPC service reachable in this process.
pub type Service = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// The in-process endpoints of one process, by advertised address.
#[derive(Clone, Default)]
pub struct Endpoints(Arc<RwLock<HashMap<String, Service>>>);

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addresses: Vec<String> = self.0.read().keys().cloned().collect();
        f.debug_tuple("Endpoints").field(&addresses).finish()
    }
}

impl Endpoints {
    /// Serves `service` in-process under `address` until the returned
    /// guard is dropped (the server stops).
    pub fn register<S, B>(&self, address: &str, service: S) -> Registration
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let service =
            tower::ServiceExt::map_response(service, |r: http::Response<B>| r.map(Body::new));
        self.0
            .write()
            .insert(address.to_owned(), BoxCloneSyncService::new(service));
        Registration {
            endpoints: self.clone(),
            address: address.to_owned(),
        }
    }

    /// The service registered under `address`, if any, as called by a peer
    /// with the `caller` role.
    pub fn get(&self, address: &str, caller: Role) -> Option<Service> {
        let service = self.0.read().get(address).cloned()?;
        let peer = Peer {
            role: caller,
            name: "in-process".to_owned(),
        };
        Some(BoxCloneSyncService::new(tower::ServiceExt::map_request(
            service,
            move |mut req: http::Request<Body>| {
                req.extensions_mut().insert(peer.clone());
                req
            },
        )))
    }
}

/// Keeps an in-process endpoint registered; dropping it removes it.
#[must_use = "the endpoint is removed when the registration is dropped"]
pub struct Registration {
    endpoints: Endpoints,
    address: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.endpoints.0.write().remove(&self.address);
    }
}
