//! KV storage cases (docs/design/alga-compatibility.md, "Storage"):
//! revisions, compare-and-swap, TTL, listing, quotas (also under
//! concurrency), scoping, and the cascade on uninstall.

use annex_control_plane::store::{StoragePut, StorageQuota, StorageRow, StorageScope};
use serde_json::json;

use super::*;

store_cases!(
    storage_revisions_start_at_one_and_compare_and_swap,
    storage_ttl_expires_lazily,
    storage_list_orders_by_key_after_key_and_literal_prefix,
    storage_quotas_count_namespaces_keys_and_bytes,
    storage_namespace_quota_holds_under_concurrent_first_writes,
    concurrent_compare_and_swaps_of_one_key_let_exactly_one_win,
    storage_is_scoped_to_tenant_and_install,
    deleting_an_install_removes_its_storage,
    storage_put_many_applies_every_put_or_none,
    storage_schemas_are_versioned_per_namespace,
);

// ---- fixtures ----

fn scope_of(install: &InstallRow) -> StorageScope {
    StorageScope {
        tenant_id: install.tenant_id.clone(),
        install_id: install.id,
    }
}

/// A put of `value` (a JSON string) with no TTL or revision check.
fn put(namespace: &str, key: &str, value: &str) -> StoragePut {
    let value = json!(value);
    let metadata = json!({"encoding": "base64-bytes"});
    StoragePut {
        namespace: namespace.to_owned(),
        key: key.to_owned(),
        size_bytes: (value.to_string().len() + metadata.to_string().len()) as u64,
        value,
        metadata,
        ttl_expires_at: None,
        if_revision: None,
    }
}

fn sized(namespace: &str, key: &str, size_bytes: u64) -> StoragePut {
    StoragePut {
        size_bytes,
        ..put(namespace, key, "v")
    }
}

fn if_revision(put: StoragePut, revision: u64) -> StoragePut {
    StoragePut {
        if_revision: Some(revision),
        ..put
    }
}

/// An installed extension to hang storage on.
async fn installed(store: &DynStore, tenant: &str, name: &str) -> InstallRow {
    let (_, version) = publish(store, "acme", name, "1.0.0").await;
    install(store, tenant, &version).await
}

async fn put_ok(store: &DynStore, scope: &StorageScope, p: StoragePut, secs: i64) -> StorageRow {
    store
        .storage_put(scope, p, StorageQuota::default(), at(secs))
        .await
        .expect("put")
}

fn keys(rows: &[StorageRow]) -> Vec<&str> {
    rows.iter().map(|r| r.key.as_str()).collect()
}

fn is_quota(err: &StoreError) -> bool {
    matches!(err, StoreError::QuotaExceeded(_))
}

// ---- cases ----

async fn storage_revisions_start_at_one_and_compare_and_swap(store: DynStore) {
    let a = scope_of(&installed(&store, "t1", "alpha").await);

    let first = put_ok(&store, &a, put("ns", "k", "one"), NOW).await;
    assert_eq!((first.revision, first.value.clone()), (1, json!("one")));
    assert_eq!((first.created_at, first.updated_at), (at(NOW), at(NOW)));
    assert_eq!(first.metadata, json!({"encoding": "base64-bytes"}));

    let second = put_ok(&store, &a, put("ns", "k", "two"), NOW + 5).await;
    assert_eq!(second.revision, 2);
    assert_eq!(
        (second.created_at, second.updated_at),
        (at(NOW), at(NOW + 5))
    );
    let read = store
        .storage_get(&a, "ns", "k", at(NOW + 6))
        .await
        .expect("get");
    assert_eq!(read, Some(second));

    // The stored revision must match; a missing record with a revision is a mismatch too.
    let third = put_ok(&store, &a, if_revision(put("ns", "k", "three"), 2), NOW + 7).await;
    assert_eq!(third.revision, 3);
    for (key, revision) in [("k", 2), ("k", 4), ("absent", 0), ("absent", 1)] {
        let err = store
            .storage_put(
                &a,
                if_revision(put("ns", key, "x"), revision),
                StorageQuota::default(),
                at(NOW + 8),
            )
            .await
            .expect_err("revision mismatch");
        assert!(
            matches!(err, StoreError::RevisionMismatch),
            "{key} @{revision}: {err:?}"
        );
    }
    let kept = store
        .storage_get(&a, "ns", "k", at(NOW + 8))
        .await
        .expect("get");
    assert_eq!(
        kept.map(|r| (r.revision, r.value)),
        Some((3, json!("three")))
    );
    assert_eq!(
        store
            .storage_get(&a, "ns", "absent", at(NOW + 8))
            .await
            .expect("get"),
        None
    );

    // Delete: a mismatched revision refuses, the right one deletes, absent is false.
    let err = store
        .storage_delete(&a, "ns", "k", Some(2), at(NOW + 9))
        .await
        .expect_err("mismatch");
    assert!(matches!(err, StoreError::RevisionMismatch), "{err:?}");
    assert!(
        store
            .storage_delete(&a, "ns", "k", Some(3), at(NOW + 9))
            .await
            .expect("delete")
    );
    assert!(
        !store
            .storage_delete(&a, "ns", "k", None, at(NOW + 9))
            .await
            .expect("delete")
    );
    assert!(
        !store
            .storage_delete(&a, "ns", "k", Some(3), at(NOW + 9))
            .await
            .expect("delete")
    );

    // A key written again after its delete starts over at revision 1.
    let again = put_ok(&store, &a, put("ns", "k", "four"), NOW + 10).await;
    assert_eq!((again.revision, again.created_at), (1, at(NOW + 10)));
}

async fn storage_ttl_expires_lazily(store: DynStore) {
    let a = scope_of(&installed(&store, "t1", "alpha").await);
    let ttl = StoragePut {
        ttl_expires_at: Some(at(NOW + 60)),
        ..put("cache", "token", "abc")
    };
    let row = put_ok(&store, &a, ttl, NOW).await;
    assert_eq!(row.ttl_expires_at, Some(at(NOW + 60)));
    put_ok(&store, &a, put("cache", "keep", "forever"), NOW).await;

    let before = store
        .storage_get(&a, "cache", "token", at(NOW + 59))
        .await
        .expect("get");
    assert!(before.is_some(), "not yet expired");
    let after = store
        .storage_get(&a, "cache", "token", at(NOW + 60))
        .await
        .expect("get");
    assert_eq!(after, None, "expired at ttl_expires_at");
    let listed = store
        .storage_list(&a, "cache", None, None, 100, at(NOW + 61))
        .await
        .expect("list");
    assert_eq!(keys(&listed), ["keep"]);

    // The expired row is gone, not hidden: a revision check finds nothing,
    // and a namespace held only by expired rows no longer counts.
    let expiring = StoragePut {
        ttl_expires_at: Some(at(NOW + 60)),
        ..put("brief", "x", "1")
    };
    put_ok(&store, &a, expiring, NOW).await;
    let one_namespace_more = StorageQuota {
        max_namespaces: 2,
        ..StorageQuota::default()
    };
    let err = store
        .storage_put(&a, put("third", "x", "1"), one_namespace_more, at(NOW + 1))
        .await
        .expect_err("three namespaces");
    assert!(is_quota(&err), "{err:?}");
    store
        .storage_put(&a, put("third", "x", "1"), one_namespace_more, at(NOW + 60))
        .await
        .expect("the expired namespace no longer counts");
    let err = store
        .storage_put(
            &a,
            if_revision(put("brief", "x", "2"), 1),
            StorageQuota::default(),
            at(NOW + 61),
        )
        .await
        .expect_err("expired rows are deleted");
    assert!(matches!(err, StoreError::RevisionMismatch), "{err:?}");
}

async fn storage_list_orders_by_key_after_key_and_literal_prefix(store: DynStore) {
    let a = scope_of(&installed(&store, "t1", "alpha").await);
    for key in ["c", "ab", "a_b", "a%c", "a%", "a", "b", "aXb"] {
        put_ok(&store, &a, put("ns", key, key), NOW).await;
    }
    put_ok(&store, &a, put("other", "a", "elsewhere"), NOW).await;
    let list = |after: Option<&'static str>, prefix: Option<&'static str>, limit: u32| {
        let store = store.clone();
        let a = a.clone();
        async move {
            let rows = store
                .storage_list(&a, "ns", after, prefix, limit, at(NOW))
                .await
                .expect("list");
            rows.iter().map(|r| r.key.clone()).collect::<Vec<_>>()
        }
    };
    // Byte order, as Postgres's COLLATE "C": '%' < 'X' < '_' < 'a'.
    assert_eq!(
        list(None, None, 100).await,
        ["a", "a%", "a%c", "aXb", "a_b", "ab", "b", "c"]
    );
    assert_eq!(list(None, None, 3).await, ["a", "a%", "a%c"]);
    assert_eq!(list(Some("a%c"), None, 3).await, ["aXb", "a_b", "ab"]);
    assert_eq!(list(Some("c"), None, 10).await, Vec::<String>::new());
    // `%` and `_` in a prefix are literal, not LIKE wildcards.
    assert_eq!(list(None, Some("a%"), 100).await, ["a%", "a%c"]);
    assert_eq!(list(None, Some("a_"), 100).await, ["a_b"]);
    assert_eq!(list(Some("a%"), Some("a%"), 100).await, ["a%c"]);
    assert_eq!(list(None, Some("zz"), 100).await, Vec::<String>::new());
    let other = store
        .storage_list(&a, "absent", None, None, 100, at(NOW))
        .await
        .expect("list");
    assert!(other.is_empty());
}

async fn storage_quotas_count_namespaces_keys_and_bytes(store: DynStore) {
    let a = scope_of(&installed(&store, "t1", "alpha").await);
    let quota = StorageQuota {
        max_namespaces: 2,
        max_keys_per_namespace: 2,
        max_bytes: 100,
    };
    let try_put = |p: StoragePut| {
        let store = store.clone();
        let a = a.clone();
        async move { store.storage_put(&a, p, quota, at(NOW)).await }
    };
    try_put(sized("n1", "k1", 30)).await.expect("first");
    try_put(sized("n1", "k2", 30)).await.expect("second key");
    let err = try_put(sized("n1", "k3", 1)).await.expect_err("third key");
    assert!(is_quota(&err), "{err:?}");
    // Overwriting an existing key adds no key.
    try_put(sized("n1", "k2", 30)).await.expect("overwrite");
    try_put(sized("n2", "k1", 30))
        .await
        .expect("second namespace");
    let err = try_put(sized("n3", "k1", 1))
        .await
        .expect_err("third namespace");
    assert!(is_quota(&err), "{err:?}");

    // Bytes: 90 used; an overwrite counts the difference, a new row its size.
    let err = try_put(sized("n2", "k2", 11)).await.expect_err("101 bytes");
    assert!(is_quota(&err), "{err:?}");
    try_put(sized("n2", "k2", 10))
        .await
        .expect("exactly 100 bytes");
    try_put(sized("n1", "k1", 20)).await.expect("shrink");
    let err = try_put(sized("n1", "k1", 31))
        .await
        .expect_err("grow past the limit");
    assert!(is_quota(&err), "{err:?}");

    // Nothing refused was written.
    let n1 = store
        .storage_list(&a, "n1", None, None, 10, at(NOW))
        .await
        .expect("list");
    assert_eq!(keys(&n1), ["k1", "k2"]);
    assert_eq!(n1[0].revision, 2);
    let n3 = store
        .storage_list(&a, "n3", None, None, 10, at(NOW))
        .await
        .expect("list");
    assert!(n3.is_empty());
}

async fn storage_namespace_quota_holds_under_concurrent_first_writes(store: DynStore) {
    let a = scope_of(&installed(&store, "t1", "alpha").await);
    let puts: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            let a = a.clone();
            tokio::spawn(async move {
                store
                    .storage_put(
                        &a,
                        put(&format!("ns{i:02}"), "k", "v"),
                        StorageQuota::default(),
                        at(NOW),
                    )
                    .await
            })
        })
        .collect();
    let (mut written, mut refused) = (0, 0);
    for p in puts {
        match p.await.expect("task") {
            Ok(_) => written += 1,
            Err(e) if is_quota(&e) => refused += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((written, refused), (32, 8));
}

/// Puts of one install that wait for the same transaction (Postgres commits
/// them as a group) still see each other in order: of many swaps from the
/// same revision, one wins and the rest find the revision it wrote.
async fn concurrent_compare_and_swaps_of_one_key_let_exactly_one_win(store: DynStore) {
    let a = scope_of(&installed(&store, "t1", "alpha").await);
    put_ok(&store, &a, put("ns", "k", "v0"), NOW).await;
    let swaps: Vec<_> = (0..24)
        .map(|i| {
            let store = store.clone();
            let a = a.clone();
            tokio::spawn(async move {
                store
                    .storage_put(
                        &a,
                        if_revision(put("ns", "k", &format!("v{i}")), 1),
                        StorageQuota::default(),
                        at(NOW),
                    )
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut mismatches = 0;
    for swap in swaps {
        match swap.await.expect("task") {
            Ok(row) => winners.push(row),
            Err(StoreError::RevisionMismatch) => mismatches += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((winners.len(), mismatches), (1, 23));
    assert_eq!(winners[0].revision, 2);
    let stored = store
        .storage_get(&a, "ns", "k", at(NOW))
        .await
        .expect("get")
        .expect("row");
    assert_eq!(
        (stored.revision, &stored.value),
        (2, &winners[0].value),
        "the winner's value is the one stored"
    );
}

async fn storage_is_scoped_to_tenant_and_install(store: DynStore) {
    let a_install = installed(&store, "t1", "alpha").await;
    let a = scope_of(&a_install);
    let b = scope_of(&installed(&store, "t1", "beta").await);
    let (_, alpha) = publish(&store, "acme", "alpha", "1.0.1").await;
    let other_tenant = scope_of(&install(&store, "t2", &alpha).await);
    // A's install id under another tenant's name reaches nothing either.
    let forged = StorageScope {
        tenant_id: "t2".into(),
        install_id: a.install_id,
    };

    put_ok(&store, &a, put("ns", "k", "mine"), NOW).await;
    put_ok(&store, &a, put("ns", "k", "mine again"), NOW).await;
    for scope in [&b, &other_tenant, &forged] {
        let got = store
            .storage_get(scope, "ns", "k", at(NOW))
            .await
            .expect("get");
        assert_eq!(got, None, "{scope:?}");
        let listed = store
            .storage_list(scope, "ns", None, None, 10, at(NOW))
            .await
            .expect("list");
        assert!(listed.is_empty(), "{scope:?}");
        assert!(
            !store
                .storage_delete(scope, "ns", "k", None, at(NOW))
                .await
                .expect("delete")
        );
    }
    // The same key elsewhere is its own record.
    let theirs = put_ok(&store, &b, put("ns", "k", "theirs"), NOW).await;
    assert_eq!(theirs.revision, 1);
    let mine = store
        .storage_get(&a, "ns", "k", at(NOW))
        .await
        .expect("get");
    assert_eq!(
        mine.map(|r| (r.revision, r.value)),
        Some((2, json!("mine again")))
    );
}

async fn deleting_an_install_removes_its_storage(store: DynStore) {
    let install_row = installed(&store, "t1", "alpha").await;
    let a = scope_of(&install_row);
    let b = scope_of(&installed(&store, "t1", "beta").await);
    put_ok(&store, &a, put("ns", "k", "v"), NOW).await;
    put_ok(&store, &b, put("ns", "k", "v"), NOW).await;

    assert!(store.delete_install(install_row.id).await.expect("delete"));
    assert_eq!(
        store
            .storage_get(&a, "ns", "k", at(NOW))
            .await
            .expect("get"),
        None
    );
    let err = store
        .storage_put(&a, put("ns", "k", "v"), StorageQuota::default(), at(NOW))
        .await
        .expect_err("the install is gone");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert!(
        store
            .storage_get(&b, "ns", "k", at(NOW))
            .await
            .expect("get")
            .is_some()
    );
}

async fn storage_put_many_applies_every_put_or_none(store: DynStore) {
    let inst = installed(&store, "t1", "bulk").await;
    let scope = scope_of(&inst);
    put_ok(&store, &scope, put("ns", "a", "old"), NOW).await;
    let rows = store
        .storage_put_many(
            &scope,
            vec![
                if_revision(put("ns", "a", "new"), 1),
                put("ns", "b", "first"),
            ],
            StorageQuota::default(),
            at(NOW + 1),
        )
        .await
        .expect("bulk");
    assert_eq!(keys(&rows), ["a", "b"]);
    assert_eq!((rows[0].revision, rows[1].revision), (2, 1));

    // The second put's revision check fails: the first put does not stay.
    let err = store
        .storage_put_many(
            &scope,
            vec![
                put("ns", "c", "never"),
                if_revision(put("ns", "a", "stale"), 1),
            ],
            StorageQuota::default(),
            at(NOW + 2),
        )
        .await
        .expect_err("a stale revision");
    assert!(matches!(err, StoreError::RevisionMismatch), "{err:?}");
    let get = |key: &'static str| {
        let (store, scope) = (store.clone(), scope.clone());
        async move {
            store
                .storage_get(&scope, "ns", key, at(NOW + 3))
                .await
                .expect("get")
        }
    };
    assert!(
        get("c").await.is_none(),
        "nothing of a failed bulk put stays"
    );
    assert_eq!(get("a").await.map(|r| r.value), Some(json!("new")));

    // A quota breach half-way is the same.
    let quota = StorageQuota {
        max_keys_per_namespace: 3,
        ..StorageQuota::default()
    };
    let err = store
        .storage_put_many(
            &scope,
            vec![put("ns", "d", "fits"), put("ns", "e", "does not")],
            quota,
            at(NOW + 4),
        )
        .await
        .expect_err("over the key quota");
    assert!(is_quota(&err), "{err:?}");
    assert!(get("d").await.is_none());
}

async fn storage_schemas_are_versioned_per_namespace(store: DynStore) {
    let inst = installed(&store, "t1", "schemas").await;
    let scope = scope_of(&inst);
    assert!(
        store
            .storage_schema(&scope, "orders", None)
            .await
            .expect("none yet")
            .is_none()
    );
    let v1 = store
        .add_storage_schema(&scope, "orders", json!({"type": "object"}))
        .await
        .expect("v1");
    let v2 = store
        .add_storage_schema(
            &scope,
            "orders",
            json!({"type": "object", "required": ["id"]}),
        )
        .await
        .expect("v2");
    let other = store
        .add_storage_schema(&scope, "notes", json!({"type": "string"}))
        .await
        .expect("other namespace");
    assert_eq!((v1.version, v2.version, other.version), (1, 2, 1));
    let newest = store
        .storage_schema(&scope, "orders", None)
        .await
        .expect("newest");
    assert_eq!(
        newest.map(|s| s.document),
        Some(json!({"type": "object", "required": ["id"]}))
    );
    let first = store
        .storage_schema(&scope, "orders", Some(1))
        .await
        .expect("by version");
    assert_eq!(first.map(|s| s.document), Some(json!({"type": "object"})));
    assert!(
        store
            .storage_schema(&scope, "orders", Some(9))
            .await
            .expect("absent version")
            .is_none()
    );
    let all = store.list_storage_schemas(&scope).await.expect("list");
    let listed: Vec<_> = all
        .iter()
        .map(|s| (s.namespace.as_str(), s.version))
        .collect();
    assert_eq!(listed, [("notes", 1), ("orders", 1), ("orders", 2)]);
    // Another install sees none of them.
    let elsewhere = installed(&store, "t1", "elsewhere").await;
    assert!(
        store
            .list_storage_schemas(&scope_of(&elsewhere))
            .await
            .expect("other install")
            .is_empty()
    );
}
