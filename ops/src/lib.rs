//! Process plumbing shared by the Annex binaries: the mTLS configuration and
//! peer roles ([`tls`]), dev certificates ([`devcerts`]), the plaintext admin
//! listener with `/live`, `/ready` and `/metrics` ([`admin`]), execution quota
//! enforcement ([`quota`]), the inputs every service's `run` takes ([`serve`]), logging and OTLP span export ([`telemetry`]), W3C
//! trace context across processes ([`trace_context`]) and the shutdown signal
//! ([`shutdown`]).
//!
//! Library code here never binds ports on its own or installs signal handlers
//! except through the functions binaries call explicitly.

pub mod admin;
pub mod devcerts;
pub mod quota;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace_context;

pub use tls::{Peer, Role};
