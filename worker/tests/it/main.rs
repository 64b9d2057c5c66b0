//! Worker integration tests: real Wasmtime, real guest components built
//! from `examples/`, real gRPC on `127.0.0.1:0`. One test binary (modules
//! below) so the worker links once.

mod bundles;
mod capture;
mod compile;
mod containment;
mod egress;
mod fleet;
mod host_services;
mod hostile;
mod in_process;
mod interfaces;
mod js;
mod mtls;
mod runner_api;
mod support;
mod tiering;
mod trust;
mod wasi_http;
