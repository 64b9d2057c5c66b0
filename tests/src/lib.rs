//! End-to-end harness: the real `annex-control-plane`, `annex-worker` and
//! `annex-edge` binaries as child processes, with a throwaway PostgreSQL
//! cluster, a generated dev PKI (mTLS between all of them) and free ports,
//! driven through the edge's public HTTP routes.
//!
//! The binaries are taken from the target directory this test was built in;
//! `cargo test --workspace --all-targets` (scripts/test.sh) builds them
//! first. Without them, or without PostgreSQL binaries, the harness fails
//! with a message saying what is missing.

pub mod http;
pub mod kube;
pub mod netns;
pub mod stack;
pub mod webdriver;

pub use http::{Resp, get, send};
pub use stack::{FleetOptions, Member, Stack, StackOptions};

/// Polls `check` until it returns true or `ms` milliseconds pass.
pub async fn eventually_ms<F, Fut>(ms: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
