//! The same cases for the filesystem store and the S3 store (on moto):
//! commit, streamed read, size, listing, idempotent commit, delete, and
//! that neither can see bundle rows (so `delete_unreferenced_blob` leaves
//! the bytes to the collector).

use std::sync::Arc;

use annex_control_plane::store::{BlobStore, FsBlobStore};

use super::moto::Moto;
use super::{put_blob, random, read_blob};

async fn conformance(store: Arc<dyn BlobStore>) {
    let small = b"a small bundle".to_vec();
    // Larger than one multipart part (8 MiB) and than one read chunk.
    let large = random(19 * 1024 * 1024 + 3);
    let (small_hash, large_hash) = (
        put_blob(store.as_ref(), &small).await,
        put_blob(store.as_ref(), &large).await,
    );
    assert_eq!(
        read_blob(store.as_ref(), &small_hash).await,
        Some(small.clone())
    );
    assert!(read_blob(store.as_ref(), &large_hash).await == Some(large.clone()));
    assert_eq!(
        store.blob_size(&large_hash).await.expect("size"),
        Some(large.len() as u64)
    );

    // Idempotent: committing the same hash again keeps the bytes.
    assert_eq!(put_blob(store.as_ref(), &small).await, small_hash);
    assert_eq!(
        read_blob(store.as_ref(), &small_hash).await,
        Some(small.clone())
    );

    let unknown = format!("sha256:{}", "ab".repeat(32));
    assert_eq!(read_blob(store.as_ref(), &unknown).await, None);
    assert_eq!(store.blob_size(&unknown).await.expect("size"), None);
    assert!(store.get_blob("sha256:../../etc/passwd").await.is_err());

    let mut listed: Vec<(String, u64)> = store
        .list_blobs()
        .await
        .expect("list")
        .into_iter()
        .map(|b| (b.content_hash, b.size))
        .collect();
    listed.sort();
    let mut want = vec![
        (small_hash.clone(), small.len() as u64),
        (large_hash.clone(), large.len() as u64),
    ];
    want.sort();
    assert_eq!(listed, want);

    // This store cannot see bundle rows: only the collector deletes.
    assert!(
        !store
            .delete_unreferenced_blob(&small_hash)
            .await
            .expect("delete_unreferenced")
    );
    assert!(store.blob_size(&small_hash).await.expect("size").is_some());

    assert!(store.delete_blob(&small_hash).await.expect("delete"));
    assert!(
        !store.delete_blob(&small_hash).await.expect("delete"),
        "gone"
    );
    assert_eq!(read_blob(store.as_ref(), &small_hash).await, None);
    assert_eq!(store.list_blobs().await.expect("list").len(), 1);
}

#[tokio::test]
async fn filesystem_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsBlobStore::open(dir.path().join("blobs")).expect("open");
    conformance(Arc::new(store.clone())).await;
    // Nothing is left in staging after commits.
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs/staging"))
            .expect("staging")
            .count(),
        0
    );
    assert_eq!(
        store.describe(),
        format!("fs:{}", dir.path().join("blobs").display())
    );
}

#[tokio::test]
async fn s3_store_conforms() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.bucket("conformance").await;
    let store = moto.store("conformance");
    assert_eq!(store.describe(), "s3://conformance/annex");
    conformance(Arc::new(store)).await;
}
