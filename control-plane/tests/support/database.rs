//! The store behind a component test: a fresh Postgres database from the
//! store suite's harness (`DATABASE_URL`, or a throwaway cluster from the
//! system binaries). Without Postgres the harness fails under `CI=true`;
//! elsewhere it prints a notice and the test runs on the in-memory store.

use std::sync::Arc;

use annex_control_plane::store::{MemoryStore, Store};

#[path = "../store_suite/pg_harness.rs"]
#[allow(dead_code)]
mod pg_harness;

pub async fn store() -> Arc<dyn Store> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match pg_harness::TestDatabase::create(&format!("component_{n}")).await {
        Some(db) => Arc::new(db.connect().await),
        None => Arc::new(MemoryStore::new()),
    }
}
