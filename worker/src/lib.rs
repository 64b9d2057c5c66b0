//! The Annex worker: runs extension components (Alga's `alga:extension`
//! ABI) on Wasmtime, one fresh instance per request, behind the `Worker`
//! gRPC service.
//!
//! Code map: [`engine`] fixes the Wasmtime configuration (pool, epochs,
//! fuel); [`cache`] holds compiled components by component digest (memory
//! LRU + disk, single flight) and verified bundles' records, and compiles
//! through its bounded queue; [`bundles`] fetches bundles and verifies them
//! against the trust keys [`trust`] keeps (refreshed in the background,
//! never on the request path) before anything is compiled; `loader`
//! combines the two, runs each load as its own task and re-checks trust on
//! every load; `host` is the linker and every host interface (WASI 0.2,
//! `wasi:http`, the twelve `alga:extension` interfaces and `config`), gated
//! by `capabilities`, for Alga's runner world and `wasi:http/proxy`
//! components alike; `egress` is the outbound HTTP policy
//! shared by `http.fetch` and `wasi:http`; [`backend`] is the control
//! plane's `HostServices` as the host interfaces see it; [`admission`] is
//! the per-tenant fair queue; [`execute`] runs one request (decode, admit,
//! load, run on the guest runtime, answer with an `outcome`); [`grpc`] is
//! the `Worker` service; [`fleet`] registers, heartbeats (with `usage`,
//! whose CPU time `cputime` measures) and holds the drain state; [`server`]
//! assembles a worker and runs a whole worker process from [`settings`],
//! which validates the binary's [`config`]; [`metrics`] counts plain
//! values; [`runner_api`] serves Alga's runner HTTP API (`/v1/execute`)
//! with Alga's bundle store and host application as its sources; `testing`
//! (feature) builds guests and starts test workers.
//!
//! Only what the binary, `annex dev`, the edge's and the end-to-end tests
//! and this crate's integration tests use is public; everything else is
//! `pub(crate)` (enforced by `unreachable_pub`).
//!
//! Guest data is bounded before it leaves the worker: response status,
//! headers and body (`execute`), log lines (`logs`), host-call payloads
//! (`backend`) and outbound destinations (`egress`); every call to the
//! control plane has a deadline.
//!
//! Invariants: nothing is compiled before its bytes and signature verified;
//! compilation never runs on the async runtime, goes through the bounded
//! compile queue and runs once per component digest at a time; every store
//! has an epoch deadline; guests see no config, providers or limits except
//! through the interfaces.

#![warn(unreachable_pub)]

pub mod admission;
pub mod backend;
mod bindings;
pub mod bundles;
pub mod cache;
mod capabilities;
pub mod capture;
pub mod config;
mod cputime;
mod egress;
pub mod engine;
pub mod execute;
pub mod fleet;
pub mod grpc;
mod host;
mod loader;
mod logs;
pub mod metrics;
mod outcome;
pub mod runner_api;
pub mod server;
pub mod settings;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trust;
mod usage;
