//! Process plumbing shared by the Annex binaries: the mTLS configuration,
//! reloaded when its files change, and peer roles ([`tls`]), the balanced,
//! failing-over client of the control plane's replicas ([`upstream`]) and
//! the name resolution it and worker connections use ([`resolve`]), dev
//! certificates ([`devcerts`]), the plaintext admin
//! listener with `/live`, `/ready` and `/metrics` ([`admin`]), execution
//! quota enforcement ([`quota`]), the inputs every service's `run` takes
//! ([`serve`]), the start of every binary's `main` ([`process`]), logging
//! and OTLP span export ([`telemetry`]), W3C trace context across processes
//! ([`trace_context`]), the reconnect delay policy ([`backoff`]), the
//! path-traversal check of the ui-proxy relays ([`paths`]) and the
//! shutdown signal ([`shutdown`]).
//!
//! Library code here never binds ports on its own or installs signal handlers
//! except through the functions binaries call explicitly.

#![warn(unreachable_pub)]

pub mod admin;
pub mod backoff;
pub mod devcerts;
pub mod in_process;
pub mod paths;
pub mod process;
pub mod quota;
pub mod resolve;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace_context;
pub mod upstream;

pub use tls::{Peer, Role};
