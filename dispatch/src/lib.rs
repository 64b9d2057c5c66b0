//! Choosing workers for a content hash from the routing table and sending
//! one execution with the retry rule: the part of dispatch the edge (its
//! hot path) and the control plane (`Dispatch.Execute`, the scheduler)
//! share, so both try workers in the same order and retry under the same
//! rule.
//!
//! `ranking` orders the workers of a [`RoutingTable`] for a hash;
//! [`Workers`] holds the channels, the passive health check and the
//! rotation, and sends with [`Workers::execute`]; [`execute_request`] is
//! the one builder of the message a worker runs. A worker in the same
//! process is reached through its service directly ([`Transport`]). Nothing here computes
//! placement (the control plane's fleet module does) or knows where the
//! table comes from.

#![warn(unreachable_pub)]

mod ranking;
mod request;
mod transport;
mod workers;

pub use ranking::{RoutingTable, WorkerTarget, rendezvous};
pub use request::{Installed, Invocation, Trigger, execute_request};
pub use transport::Transport;
pub use workers::{ConnectError, ExecuteError, Executed, WorkerTls, Workers};
