//! The Annex edge: Alga's public extension HTTP contracts (`/api/ext`,
//! `/api/ext-proxy`, `/ext-ui`, the debug stream and the iframe bridge
//! scripts), authenticated, policed and dispatched straight to a worker.
//!
//! Code map: `auth` turns credentials into a principal; `gateway` is the
//! ordered access pipeline (docs/design/alga-compatibility.md, "Gateway")
//! shared by `ext_api` and `ext_proxy`, with the frame around each call and
//! the mapping of the worker's answer; `installs` resolves and caches
//! installs; `endpoints` matches declared endpoints; `ratelimit` and `audit`
//! are the per-install token bucket and the batched audit trail; `quota`
//! enforces this edge's share of the fleet-wide tenant and install quotas;
//! `routing` holds the control plane's routing snapshot and sends one
//! execution to a worker (ranking and the retry rule are `annex_dispatch`'s);
//! `headers` holds the allowlists; `ext_ui` and `ui_store` serve UI files;
//! `debug_stream` relays logs; `bridge` serves the postMessage scripts;
//! `server` wires it together. The public surface is what a process needs
//! to run an edge: [`Config`], [`Settings`] and its parts, [`Listeners`],
//! [`run`], and [`jwt`] for minting test sessions.
//!
//! Invariants: the caller's credentials never travel past `auth`; every
//! dispatched execution holds an audit slot first (no slot: 503); errors
//! carry only a code (and the request id), detail goes to the log; the edge
//! keeps no state a replica could not rebuild from the control plane.

#![warn(unreachable_pub)]

mod audit;
mod auth;
mod bridge;
mod config;
mod cors;
mod debug_stream;
mod endpoints;
mod error;
mod ext_api;
mod ext_proxy;
mod ext_ui;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod gateway;
mod headers;
mod installs;
mod metrics;
mod quota;
mod ratelimit;
mod routing;
mod server;
mod state;
mod ui_store;

pub use audit::AuditSettings;
pub use auth::jwt::{self, JwtVerifier};
pub use config::{Config, Policy, Settings};
pub use ext_ui::UiPolicy;
pub use ratelimit::RateSettings;
pub use server::{Listeners, run};
pub use ui_store::UiStoreSettings;
