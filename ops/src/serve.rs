//! What every Annex service needs from the process that runs it, in one
//! shape: its TLS identity, its bound listeners and its admin state. Each
//! service's `run` is `run(settings, Io<Listeners>, shutdown)`: the binary
//! (or `annex dev`, or a test) parses configuration into the service's
//! `Settings`, binds the listeners and chooses the shutdown future; the
//! service binds nothing and installs no signal handler.

use crate::admin::AdminState;
use crate::tls::TlsMaterial;

/// The process-side inputs of a service: `L` is the service's own
/// `Listeners` struct (each service binds a different set of sockets).
#[derive(Debug)]
pub struct Io<L> {
    /// The service's mTLS identity: its certificate, key and the CA it trusts.
    pub tls: TlsMaterial,
    /// Sockets already bound by the caller.
    pub listeners: L,
    /// Readiness and the metrics registry, served on the admin listener.
    pub admin: AdminState,
}
