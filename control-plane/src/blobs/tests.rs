//! The collector's rules on a real directory store: referenced blobs stay,
//! unreferenced ones go only once older than the grace period, and so do
//! staging and spool leftovers.

use std::sync::Arc;
use std::time::Duration;

use super::{BlobLimits, Collected, Collector};
use crate::metrics::Metrics;
use crate::store::{BlobStore, FsBlobStore, MemoryStore, NewVersion, RegistryStore, VersionSpec};

fn hash(n: u8) -> String {
    format!("sha256:{}", hex::encode([n; 32]))
}

async fn put(blobs: &dyn BlobStore, hash: &str, bytes: &[u8]) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), bytes).expect("write");
    blobs.put_blob_file(hash, file.path()).await.expect("put");
}

#[tokio::test]
async fn orphans_older_than_the_grace_period_are_collected() {
    let root = tempfile::tempdir().expect("tempdir");
    let spool = tempfile::tempdir().expect("tempdir");
    let blobs: Arc<dyn BlobStore> =
        Arc::new(FsBlobStore::open(root.path().join("blobs")).expect("open"));
    let store = Arc::new(MemoryStore::new());
    let (referenced, orphan) = (hash(1), hash(2));
    put(blobs.as_ref(), &referenced, b"referenced").await;
    put(blobs.as_ref(), &orphan, b"orphan").await;
    store
        .publish_version(NewVersion {
            publisher: "acme".into(),
            name: "kept".into(),
            version: VersionSpec::Exact("1.0.0".into()),
            runtime: "wasm-js@1".into(),
            main_entry: "dist/main.wasm".into(),
            endpoints: vec![],
            ui: None,
            capabilities: vec![],
            content_hash: referenced.clone(),
            signature: "sig".into(),
            signing_key_id: "key".into(),
            size_bytes: 10,
        })
        .await
        .expect("publish");
    let staging = root.path().join("blobs/staging/interrupted.part");
    std::fs::write(&staging, b"half").expect("staging leftover");
    let spooled = spool
        .path()
        .join(format!("{}crashed.part", super::spool::SPOOL_PREFIX));
    std::fs::write(&spooled, b"half").expect("spool leftover");
    let unrelated = spool.path().join("someone-elses-file");
    std::fs::write(&unrelated, b"keep").expect("unrelated file");

    let collector = |grace: Duration| {
        Collector::new(
            blobs.clone(),
            store.clone(),
            BlobLimits {
                spool_dir: Some(spool.path().to_owned()),
                orphan_grace: grace,
                collect_every: Duration::from_secs(60),
            },
            Arc::new(Metrics::default()),
        )
    };
    // Within the grace period nothing goes.
    let young = collector(Duration::from_secs(3600))
        .collect()
        .await
        .expect("collect");
    assert_eq!(young, Collected::default());
    assert!(blobs.blob_size(&orphan).await.expect("size").is_some());
    assert!(staging.exists() && spooled.exists());

    let all = collector(Duration::ZERO).collect().await.expect("collect");
    assert_eq!(
        all,
        Collected {
            blobs: 1,
            staging: 2
        }
    );
    assert_eq!(blobs.blob_size(&orphan).await.expect("size"), None);
    assert_eq!(blobs.blob_size(&referenced).await.expect("size"), Some(10));
    assert!(!staging.exists() && !spooled.exists());
    assert!(unrelated.exists(), "only spool files are the collector's");
}
