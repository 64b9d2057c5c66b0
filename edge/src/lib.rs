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
//! `headers` holds the allowlists and the mapping of guest answers; `csrf`
//! guards cookie sessions against cross-site requests; `identifiers`
//! refuses names nothing can have before any lookup; `clients` identifies
//! callers for per-client lookup budgets; `byte_lru` bounds the caches by
//! bytes; `ext_ui` and `ui_store` serve UI files (`ui_hosts`: per-extension
//! UI origins); `debug_stream` relays logs under per-tenant and per-user
//! caps; `bridge` serves the postMessage scripts; `listener` accepts
//! connections under a cap with header-read and idle timeouts; `openapi`
//! describes the routes as an OpenAPI 3.1 document; `server` wires it
//! together. The public surface is what a process needs
//! to run an edge: [`Config`], [`Settings`] and its parts, [`Listeners`],
//! [`run`], and [`jwt`] for minting test sessions.
//!
//! Invariants: the caller's credentials never travel past `auth`; every
//! dispatched execution holds an audit slot first (no slot: 503), and no
//! single audit row can block the trail; errors carry only a code (and the
//! request id), detail goes to the log; guest data never panics the edge;
//! every cache and per-client table is bounded; the edge keeps no state a
//! replica could not rebuild from the control plane.

#![warn(unreachable_pub)]

mod audit;
mod auth;
mod bridge;
mod byte_lru;
mod clients;
mod config;
mod cors;
mod csrf;
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
mod identifiers;
mod installs;
mod listener;
mod metrics;
mod openapi;
mod quota;
mod ratelimit;
mod rollout;
mod routing;
mod server;
mod state;
mod ui_hosts;
mod ui_store;

pub use audit::AuditSettings;
pub use auth::SessionArgs;
pub use auth::jwt::{self, JwksSettings, JwtKey, JwtVerifier};
pub use clients::LookupSettings;
pub use config::{Config, Policy, Settings};
pub use debug_stream::StreamSettings;
pub use ext_ui::UiPolicy;
pub use listener::ConnectionSettings;
pub use ratelimit::RateSettings;
pub use server::{Listeners, run};
pub use ui_hosts::UiHostPattern;
pub use ui_store::UiStoreSettings;
