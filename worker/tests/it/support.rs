//! Shared fixtures: one publisher (fixed key, bundles and the compiled
//! cache kept under the cargo target dir so reruns skip recompiling), and
//! helpers to start a worker around a stub backend.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

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
