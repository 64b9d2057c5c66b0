//! The Annex edge: Alga's public extension HTTP contracts (`/api/ext`,
//! `/api/ext-proxy`, `/ext-ui`, the debug stream and the iframe bridge
//! scripts), authenticated, policed and dispatched straight to a worker.
//!
//! Code map: [`auth`] turns credentials into a principal; [`gateway`] is the
//! ordered access pipeline of spec §3.1 shared by [`ext_api`] and
//! [`ext_proxy`]; [`installs`] resolves and caches installs; [`endpoints`]
//! matches declared endpoints; [`ratelimit`] and [`audit`] are the per-install
//! token bucket and the batched audit trail; [`quota`] enforces this edge's
//! share of the fleet-wide tenant and install quotas; [`routing`] holds the control
//! plane's routing snapshot and [`execute`] sends one execution to a worker;
//! [`headers`] holds the allowlists; [`ext_ui`] and [`ui_store`] serve UI
//! files; [`debug_stream`] relays logs; [`bridge`] serves the postMessage
//! scripts; [`server`] wires it together.
//!
//! Invariants: the caller's credentials never travel past [`auth`]; every
//! dispatched execution holds an audit slot first (no slot: 503); errors
//! carry only a code (and the request id), detail goes to the log; the edge
//! keeps no state a replica could not rebuild from the control plane.

pub mod audit;
pub mod auth;
pub mod bridge;
pub mod config;
pub mod cors;
pub mod debug_stream;
pub mod endpoints;
pub mod error;
pub mod execute;
pub mod ext_api;
pub mod ext_proxy;
pub mod ext_ui;
pub mod gateway;
pub mod headers;
pub mod installs;
pub mod metrics;
pub mod quota;
pub mod ratelimit;
pub mod routing;
pub mod server;
pub mod state;
pub mod ui_store;

pub use config::{Config, Settings};
pub use server::{Listeners, router, run};
