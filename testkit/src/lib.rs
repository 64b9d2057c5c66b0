//! What every Annex crate's tests share, and nothing one crate's tests use
//! alone: [`eventually`] and [`assert_eventually!`] (wait for a condition
//! with a deadline, never a fixed sleep), [`http`] (a raw HTTP/1.1 client
//! that sends paths as written), [`pki`] (dev certificates written where a
//! process reads them), [`postgres`] (a throwaway database per test), and
//! the services started in-process on `127.0.0.1:0` over mTLS, each only
//! through its own `run(settings, Io, shutdown)`:
//! [`ControlPlane`] (in-memory store or Postgres), [`Worker`] and [`Edge`].
//! Fixtures of one crate (its bundles, fakes, the `annex` binary runner) stay
//! in that crate's `tests/support`.
//!
//! It is only ever a dev-dependency of the service crates (and a dependency
//! of the test-only `annex-e2e` crate). That makes a cycle, e.g.
//! annex-control-plane's integration tests → annex-testkit →
//! annex-control-plane's library, which cargo allows for dev-dependencies:
//! integration tests link the same library build the kit does. A crate's
//! own `#[cfg(test)]` unit tests are a separate build of that crate, so they
//! must not use the kit with that crate's types; none do.
//!
//! Must not: be a normal dependency of a service, start a service any other
//! way than through its `run`, bind anything but loopback, write outside a
//! temporary directory it owns, or assert on timings.

pub mod control_plane;
pub mod edge;
mod eventually;
pub mod http;
pub mod pki;
pub mod postgres;
mod running;
pub mod worker;

pub use control_plane::{ControlPlane, ControlPlaneOptions, Installed, StoreChoice};
pub use edge::{Edge, EdgeOptions};
pub use eventually::{Ready, TimedOut, eventually};
pub use worker::{Worker, WorkerOptions};
