//! In-process gRPC endpoints: when two parts of Annex run in one process
//! (`annex dev` runs the control plane, a worker and the edge together), the
//! caller may hand its requests straight to the callee's tonic service
//! instead of sending them through TCP, TLS and HTTP/2 to itself.
//!
//! A part that serves a gRPC service registers it here under the address it
//! advertises; a caller that finds the address it was about to dial takes the
//! service instead. Nothing crosses a network this way, so nothing weakens
//! mTLS between hosts: a registration exists only inside the process that
//! made it. The callee still sees the caller's role (a [`Peer`] in the
//! request's extensions, as the TLS interceptor would have put there), which
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
    /// Serves `service` in-process under `address`, every request arriving
    /// as from a peer with `caller` role. The registration lasts until the
    /// returned guard is dropped (the server stops).
    pub fn register<S>(&self, address: &str, caller: Role, service: S) -> Registration
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let peer = Peer {
            role: caller,
            name: "in-process".to_owned(),
        };
        let service =
            tower::ServiceExt::map_request(service, move |mut req: http::Request<Body>| {
                req.extensions_mut().insert(peer.clone());
                req
            });
        self.0
            .write()
            .insert(address.to_owned(), BoxCloneSyncService::new(service));
        Registration {
            endpoints: self.clone(),
            address: address.to_owned(),
        }
    }

    /// The service registered under `address`, if any.
    pub fn get(&self, address: &str) -> Option<Service> {
        self.0.read().get(address).cloned()
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
