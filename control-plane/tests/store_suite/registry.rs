//! Registry cases: publish, versions, wildcards, deprecation, lookup by
//! content hash.

use super::*;

store_cases!(
    publish_then_get_by_id_and_slug,
    extensions_list_by_publisher_then_name,
    duplicate_version_is_rejected_without_writing,
    concurrent_publishes_of_one_version_have_one_winner,
    wildcard_takes_the_next_stable_patch,
    concurrent_wildcard_publishes_get_distinct_patches,
    versions_list_newest_first,
    deprecate_marks_the_version,
    version_by_content_hash_finds_the_newest_owner,
);

async fn publish_then_get_by_id_and_slug(store: DynStore) {
    let new = new_version("Acme", "Alpha", exact("1.0.0"));
    let (ext, version) = store.publish_version(new.clone()).await.expect("publish");

    assert_eq!(
        (
            ext.publisher.as_str(),
            ext.name.as_str(),
            ext.slug().as_str()
        ),
        ("Acme", "Alpha", "acme.alpha")
    );
    assert_eq!(version.registry_id, ext.id);
    assert_eq!(
        (version.publisher.as_str(), version.name.as_str()),
        ("Acme", "Alpha")
    );
    assert_eq!(
        (version.version.as_str(), version.manifest_version.as_str()),
        ("1.0.0", "1.0.0")
    );
    assert_eq!(version.runtime, new.runtime);
    assert_eq!(version.main_entry, new.main_entry);
    assert_eq!(version.endpoints, new.endpoints);
    assert_eq!(version.ui, new.ui);
    assert_eq!(version.capabilities, new.capabilities);
    assert!(!version.deprecated);
    assert_eq!(version.deprecation_reason, None);
    assert_eq!(version.bundle.version_id, version.id);
    assert_eq!(version.bundle.content_hash, new.content_hash);
    assert_eq!(version.bundle.signature, new.signature);
    assert_eq!(version.bundle.signing_key_id, new.signing_key_id);
    assert_eq!(version.bundle.size_bytes, 4096);

    let by_id = store
        .get_extension(&ExtensionSelector::Id(ext.id))
        .await
        .expect("get");
    assert_eq!(by_id.as_ref(), Some(&ext));
    for s in ["acme.alpha", "ACME.Alpha", " acme.ALPHA "] {
        assert_eq!(
            store.get_extension(&slug(s)).await.expect("get").as_ref(),
            Some(&ext),
            "{s}"
        );
    }
    assert_eq!(
        store
            .get_extension(&ExtensionSelector::Slug("Acme.Alpha".into()))
            .await
            .expect("get"),
        Some(ext.clone())
    );
    assert_eq!(
        store.get_extension(&slug("acme.beta")).await.expect("get"),
        None
    );
    assert_eq!(
        store
            .get_extension(&ExtensionSelector::Id(Uuid::new_v4()))
            .await
            .expect("get"),
        None
    );
    // A version id is not a registry id.
    assert_eq!(
        store
            .get_extension(&ExtensionSelector::Id(version.id))
            .await
            .expect("get"),
        None
    );

    assert_eq!(
        store
            .get_version(ext.id, "1.0.0")
            .await
            .expect("get")
            .as_ref(),
        Some(&version)
    );
    assert_eq!(
        store
            .get_version_by_id(version.id)
            .await
            .expect("get")
            .as_ref(),
        Some(&version)
    );
    assert_eq!(store.get_version(ext.id, "1.0.1").await.expect("get"), None);
    assert_eq!(
        store.get_version_by_id(Uuid::new_v4()).await.expect("get"),
        None
    );

    // A second version reuses the registry row.
    let (again, v2) = publish(&store, "Acme", "Alpha", "1.1.0").await;
    assert_eq!(again, ext);
    assert_ne!(v2.id, version.id);
    assert_eq!(store.list_extensions().await.expect("list"), vec![ext]);
}

async fn extensions_list_by_publisher_then_name(store: DynStore) {
    for (publisher, name) in [("zeta", "a"), ("acme", "b"), ("acme", "a"), ("Acme", "z")] {
        publish(&store, publisher, name, "1.0.0").await;
    }
    let listed: Vec<(String, String)> = store
        .list_extensions()
        .await
        .expect("list")
        .into_iter()
        .map(|e| (e.publisher, e.name))
        .collect();
    // Byte order, as `COLLATE "C"`: upper case sorts first.
    let expected = [("Acme", "z"), ("acme", "a"), ("acme", "b"), ("zeta", "a")];
    assert_eq!(listed, expected.map(|(p, n)| (p.to_owned(), n.to_owned())));
}

async fn duplicate_version_is_rejected_without_writing(store: DynStore) {
    let first = new_version("acme", "alpha", exact("1.0.0"));
    put_blob(store.as_ref(), &first.content_hash, b"first bundle").await;
    let (ext, published) = store.publish_version(first.clone()).await.expect("publish");

    let second = new_version("acme", "alpha", exact("1.0.0"));
    let err = store
        .publish_version(second.clone())
        .await
        .expect_err("duplicate");
    assert!(
        matches!(&err, StoreError::VersionExists { version } if version == "1.0.0"),
        "{err:?}"
    );

    assert_eq!(
        store.list_versions(ext.id).await.expect("list"),
        vec![published.clone()]
    );
    assert_eq!(
        store
            .version_by_content_hash(&second.content_hash)
            .await
            .expect("by hash"),
        None
    );
    assert_eq!(
        store
            .version_by_content_hash(&first.content_hash)
            .await
            .expect("by hash"),
        Some(published)
    );
    let blob = read_blob(store.as_ref(), &first.content_hash).await;
    assert_eq!(blob, Some(Bytes::from_static(b"first bundle")));
    assert_eq!(store.list_extensions().await.expect("list").len(), 1);
}

async fn concurrent_publishes_of_one_version_have_one_winner(store: DynStore) {
    // The extension does not exist yet: the registry row is raced for as well.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .publish_version(new_version("acme", "race", exact("2.0.0")))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok((_, version)) => winners.push(version),
            Err(StoreError::VersionExists { version }) => assert_eq!(version, "2.0.0"),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one publish wins");
    let extensions = store.list_extensions().await.expect("list");
    assert_eq!(extensions.len(), 1);
    assert_eq!(
        store.list_versions(extensions[0].id).await.expect("list"),
        winners
    );
}

async fn wildcard_takes_the_next_stable_patch(store: DynStore) {
    let (ext, first) = store
        .publish_version(new_version("acme", "wild", wildcard(1, 2)))
        .await
        .expect("publish");
    assert_eq!(
        (first.version.as_str(), first.manifest_version.as_str()),
        ("1.2.0", "1.2.*")
    );

    publish(&store, "acme", "wild", "1.2.3").await;
    publish(&store, "acme", "wild", "1.2.4-beta").await;
    publish(&store, "acme", "wild", "1.3.7").await;
    let (_, next) = store
        .publish_version(new_version("acme", "wild", wildcard(1, 2)))
        .await
        .expect("publish");
    assert_eq!(
        (next.version.as_str(), next.manifest_version.as_str()),
        ("1.2.4", "1.2.*")
    );
    assert_eq!(
        store.get_version(ext.id, "1.2.4").await.expect("get"),
        Some(next)
    );

    let (_, other_minor) = store
        .publish_version(new_version("acme", "wild", wildcard(2, 0)))
        .await
        .expect("publish");
    assert_eq!(other_minor.version, "2.0.0");
}

async fn concurrent_wildcard_publishes_get_distinct_patches(store: DynStore) {
    publish(&store, "acme", "wild", "3.1.0").await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .publish_version(new_version("acme", "wild", wildcard(3, 1)))
                    .await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.expect("task").expect("publish").1.version);
    }
    versions.sort_by_key(|v| v.rsplit('.').next().and_then(|p| p.parse::<u32>().ok()));
    let expected: Vec<String> = (1..=8).map(|p| format!("3.1.{p}")).collect();
    assert_eq!(versions, expected);
}

async fn versions_list_newest_first(store: DynStore) {
    let (ext, _) = publish(&store, "acme", "alpha", "1.0.0").await;
    publish(&store, "acme", "alpha", "1.1.0").await;
    publish(&store, "acme", "alpha", "0.9.0").await;
    publish(&store, "acme", "other", "5.0.0").await;

    let listed = store.list_versions(ext.id).await.expect("list");
    assert_eq!(versions_of(&listed), ["0.9.0", "1.1.0", "1.0.0"]);
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].created_at >= w[1].created_at)
    );
    assert_eq!(
        store.list_versions(Uuid::new_v4()).await.expect("list"),
        vec![]
    );
}

async fn deprecate_marks_the_version(store: DynStore) {
    let (ext, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let (_, v2) = publish(&store, "acme", "alpha", "1.1.0").await;

    let deprecated = store
        .deprecate_version(ext.id, "1.0.0", "security fix in 1.1.0")
        .await
        .expect("deprecate");
    assert_eq!(
        deprecated,
        VersionRow {
            deprecated: true,
            deprecation_reason: Some("security fix in 1.1.0".into()),
            ..v1
        }
    );
    assert_eq!(
        store.get_version(ext.id, "1.0.0").await.expect("get"),
        Some(deprecated.clone())
    );
    assert_eq!(
        store.get_version(ext.id, "1.1.0").await.expect("get"),
        Some(v2)
    );

    let again = store
        .deprecate_version(ext.id, "1.0.0", "superseded")
        .await
        .expect("deprecate again");
    assert_eq!(again.deprecation_reason.as_deref(), Some("superseded"));

    let missing = store
        .deprecate_version(ext.id, "9.9.9", "x")
        .await
        .expect_err("absent");
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
    let other = store
        .deprecate_version(Uuid::new_v4(), "1.0.0", "x")
        .await
        .expect_err("absent");
    assert!(matches!(other, StoreError::NotFound(_)), "{other:?}");
}

async fn version_by_content_hash_finds_the_newest_owner(store: DynStore) {
    let (_, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let (_, v2) = publish(&store, "acme", "alpha", "1.1.0").await;
    assert_eq!(
        store
            .version_by_content_hash(&v1.bundle.content_hash)
            .await
            .expect("get"),
        Some(v1)
    );
    assert_eq!(
        store
            .version_by_content_hash(&v2.bundle.content_hash)
            .await
            .expect("get"),
        Some(v2)
    );
    assert_eq!(
        store
            .version_by_content_hash(&content_hash())
            .await
            .expect("get"),
        None
    );

    // The same bytes published twice under a wildcard: the newest version owns them.
    let same = new_version("acme", "beta", wildcard(1, 0));
    store.publish_version(same.clone()).await.expect("publish");
    let (_, newest) = store.publish_version(same.clone()).await.expect("publish");
    assert_eq!(newest.version, "1.0.1");
    assert_eq!(
        store
            .version_by_content_hash(&same.content_hash)
            .await
            .expect("get"),
        Some(newest)
    );
}
