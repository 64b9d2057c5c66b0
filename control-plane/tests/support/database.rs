//! The store behind a component test (temporary: MemoryStore until the shared Postgres harness lands here).

use std::sync::Arc;

use annex_control_plane::store::{MemoryStore, Store};

pub async fn store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}
