//! Blob cases: bundle bytes are idempotent and kept while a bundle row
//! references them.

use super::*;

store_cases!(blobs_are_idempotent_and_kept_while_referenced,);

async fn blobs_are_idempotent_and_kept_while_referenced(store: DynStore) {
    let loose = content_hash();
    store
        .put_blob(&loose, Bytes::from_static(b"one"))
        .await
        .expect("put");
    store
        .put_blob(&loose, Bytes::from_static(b"two"))
        .await
        .expect("put again");
    assert_eq!(
        store.get_blob(&loose).await.expect("get"),
        Some(Bytes::from_static(b"one")),
        "first write wins"
    );
    assert_eq!(store.get_blob(&content_hash()).await.expect("get"), None);

    let new = new_version("acme", "alpha", exact("1.0.0"));
    let bytes = Bytes::from([0u8, 1, 2, 255].repeat(1024));
    store
        .put_blob(&new.content_hash, bytes.clone())
        .await
        .expect("put");
    store.publish_version(new.clone()).await.expect("publish");

    assert!(
        !store
            .delete_unreferenced_blob(&new.content_hash)
            .await
            .expect("delete"),
        "referenced"
    );
    assert_eq!(
        store.get_blob(&new.content_hash).await.expect("get"),
        Some(bytes)
    );

    assert!(
        store
            .delete_unreferenced_blob(&loose)
            .await
            .expect("delete")
    );
    assert_eq!(store.get_blob(&loose).await.expect("get"), None);
    assert!(
        !store
            .delete_unreferenced_blob(&loose)
            .await
            .expect("delete"),
        "already gone"
    );
    assert!(
        !store
            .delete_unreferenced_blob(&content_hash())
            .await
            .expect("delete"),
        "never stored"
    );
}
