//! Shared fixtures: one publisher (fixed key, bundles and the compiled
//! cache kept under the cargo target dir so reruns skip recompiling), and
//! helpers to start a worker around a stub backend.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use annex_bundle::KeyPair;
use annex_worker::testing::{Publisher, StubBackend, TestWorker, test_settings};

pub fn tmp_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// The publisher whose key the test workers trust.
pub fn publisher() -> &'static Publisher {
    static P: OnceLock<Publisher> = OnceLock::new();
    P.get_or_init(|| Publisher::at(&tmp_dir("worker-bundles"), KeyPair::from_seed(&[7; 32])))
}

/// A worker with the shared disk cache and `backend`.
pub async fn worker_with(backend: Arc<StubBackend>) -> TestWorker {
    TestWorker::start(
        test_settings(Some(tmp_dir("worker-cache"))),
        publisher(),
        Some(backend),
    )
    .await
}

pub async fn worker() -> (TestWorker, Arc<StubBackend>) {
    let backend = Arc::new(StubBackend::default());
    (worker_with(backend.clone()).await, backend)
}

/// Polls `f` until it returns `Some`, failing after `limit`.
pub async fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls the async `f` until it returns `Some`, failing after `limit`.
pub async fn eventually_async<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
