//! End-to-end harness: the real `annex-control-plane`, `annex-worker` and
//! `annex-edge` binaries as child processes, with a throwaway PostgreSQL
//! cluster, a generated dev PKI (mTLS between all of them) and free ports,
//! driven through the edge's public HTTP routes.
//!
//! The binaries are taken from the target directory this test was built in;
//! `cargo test --workspace --all-targets` (scripts/test.sh) builds them
//! first. Without them, or without PostgreSQL binaries, the harness fails
//! with a message saying what is missing.

pub mod kube;
pub mod netns;
pub mod stack;
pub mod webdriver;

/// The test kit's raw HTTP client, under the name these tests have used.
pub use annex_testkit::http;
pub use annex_testkit::http::{Resp, get, send};
pub use stack::{FleetOptions, Member, Stack, StackOptions};
