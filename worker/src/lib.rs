//! The Annex worker: runs extension components (Alga's `alga:extension`
//! ABI) on Wasmtime, one fresh instance per request, behind the `Worker`
//! gRPC service.
//!
//! Code map: [`engine`] fixes the Wasmtime configuration (pool, epochs,
//! fuel); [`cache`] holds compiled components (memory LRU + disk, single
//! flight); [`bundles`] fetches bundles and trust keys and verifies both
//! before anything is compiled; [`host`] is the linker and every host
//! interface (WASI 0.2, `wasi:http`, the twelve `alga:extension` interfaces
//! and `config`), gated by [`capabilities`]; [`egress`] is the outbound HTTP
//! policy shared by `http.fetch` and `wasi:http`; [`backend`] is the control
//! plane's `HostServices` as the host interfaces see it; [`admission`] is
//! the per-tenant fair queue; [`execute`] runs one request on the guest
//! runtime and maps outcomes; [`grpc`] is the `Worker` service; [`fleet`]
//! registers and heartbeats (with [`usage`], whose CPU time [`cputime`]
//! measures); [`server`] assembles a worker
//! and serves it; [`config`] is the binary's flags; `testing` (feature)
//! builds guests and starts test workers.
//!
//! Invariants: nothing is compiled before its bytes and signature verified;
//! compilation never runs on the async runtime and runs once per content
//! hash at a time; every store has an epoch deadline; guests see no config,
//! providers or limits except through the interfaces.

pub mod admission;
pub mod backend;
pub mod bindings;
pub mod bundles;
pub mod cache;
pub mod capabilities;
pub mod config;
pub mod cputime;
pub mod egress;
pub mod engine;
pub mod execute;
pub mod fleet;
pub mod grpc;
pub mod host;
pub mod logs;
pub mod metrics;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
pub mod usage;
