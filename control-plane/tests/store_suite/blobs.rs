//! Blob cases: bundle bytes are idempotent, streamed back whole, listed, and
//! kept while a bundle row references them (these stores hold the rows
//! beside the bytes, so the check is in the delete itself). The filesystem
//! and S3 stores run their own conformance cases in `tests/blob_stores.rs`.

use super::*;

store_cases!(
    blobs_are_idempotent_and_kept_while_referenced,
    large_blobs_stream_back_in_bounded_chunks,
);

async fn blobs_are_idempotent_and_kept_while_referenced(store: DynStore) {
    let loose = content_hash();
    put_blob(store.as_ref(), &loose, b"one").await;
    put_blob(store.as_ref(), &loose, b"two").await;
    assert_eq!(
        read_blob(store.as_ref(), &loose).await,
        Some(Bytes::from_static(b"one")),
        "first write wins"
    );
    assert_eq!(store.blob_size(&loose).await.expect("size"), Some(3));
    assert_eq!(read_blob(store.as_ref(), &content_hash()).await, None);
    assert_eq!(store.blob_size(&content_hash()).await.expect("size"), None);

    let new = new_version("acme", "alpha", exact("1.0.0"));
    let bytes = Bytes::from([0u8, 1, 2, 255].repeat(1024));
    put_blob(store.as_ref(), &new.content_hash, &bytes).await;
    store.publish_version(new.clone()).await.expect("publish");

    let mut listed: Vec<(String, u64)> = store
        .list_blobs()
        .await
        .expect("list")
        .into_iter()
        .map(|b| (b.content_hash, b.size))
        .collect();
    listed.sort();
    let mut want = vec![(loose.clone(), 3), (new.content_hash.clone(), 4096)];
    want.sort();
    assert_eq!(listed, want);

    for delete in [true, false] {
        let deleted = if delete {
            store.delete_blob(&new.content_hash).await
        } else {
            store.delete_unreferenced_blob(&new.content_hash).await
        };
        assert!(!deleted.expect("delete"), "referenced");
    }
    assert_eq!(
        read_blob(store.as_ref(), &new.content_hash).await,
        Some(bytes)
    );

    assert!(
        store
            .delete_unreferenced_blob(&loose)
            .await
            .expect("delete")
    );
    assert_eq!(read_blob(store.as_ref(), &loose).await, None);
    assert!(
        !store
            .delete_unreferenced_blob(&loose)
            .await
            .expect("delete"),
        "already gone"
    );
    assert!(
        !store.delete_blob(&content_hash()).await.expect("delete"),
        "never stored"
    );
}

async fn large_blobs_stream_back_in_bounded_chunks(store: DynStore) {
    let hash = content_hash();
    let bytes: Vec<u8> = (0..(3 * annex_control_plane::store::READ_CHUNK + 17))
        .map(|i| (i % 251) as u8)
        .collect();
    put_blob(store.as_ref(), &hash, &bytes).await;
    let mut read = store.get_blob(&hash).await.expect("get").expect("stored");
    assert_eq!(read.size, bytes.len() as u64);
    let mut got = Vec::new();
    use futures::StreamExt as _;
    while let Some(chunk) = read.chunks.next().await {
        let chunk = chunk.expect("chunk");
        assert!(chunk.len() <= annex_control_plane::store::READ_CHUNK);
        got.extend_from_slice(&chunk);
    }
    assert!(got == bytes, "streamed bytes differ");
}
