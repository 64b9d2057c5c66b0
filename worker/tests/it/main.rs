//! Worker integration tests: real Wasmtime, real guest components built
//! from `examples/`, real gRPC on `127.0.0.1:0`. One test binary (modules
//! below) so the worker links once.

mod bundles;
mod containment;
mod egress;
mod fleet;
mod host_services;
mod hostile;
mod interfaces;
mod js;
mod mtls;
mod support;
mod trust;
