//! API key cases: create, list, find and revoke, per tenant.

use annex_control_plane::store::ApiKeyRow;

use super::*;

store_cases!(api_keys_create_list_find_and_revoke_per_tenant,);

fn api_key(tenant: &str, name: &str, created: i64) -> ApiKeyRow {
    ApiKeyRow {
        id: Uuid::new_v4(),
        tenant_id: tenant.to_owned(),
        name: name.to_owned(),
        permissions: vec!["extension:read".into(), "extension:write".into()],
        secret_sha256: Uuid::new_v4().as_bytes().repeat(2),
        created_at: at(created),
        revoked_at: None,
    }
}

async fn api_keys_create_list_find_and_revoke_per_tenant(store: DynStore) {
    let newer = store
        .create_api_key(api_key("t1", "ci", NOW + 10))
        .await
        .expect("create");
    let older = store
        .create_api_key(api_key("t1", "ops", NOW))
        .await
        .expect("create");
    let theirs = store
        .create_api_key(api_key("t2", "ci", NOW))
        .await
        .expect("create");
    assert_eq!(newer.permissions, ["extension:read", "extension:write"]);

    let err = store
        .create_api_key(ApiKeyRow {
            secret_sha256: vec![9; 32],
            ..older.clone()
        })
        .await
        .expect_err("duplicate id");
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");

    let listed = store.list_api_keys("t1").await.expect("list");
    assert_eq!(
        listed,
        [older.clone(), newer.clone()],
        "oldest first, own tenant only"
    );
    assert_eq!(
        store.find_api_key(theirs.id).await.expect("find"),
        Some(theirs.clone())
    );
    assert_eq!(
        store.find_api_key(Uuid::new_v4()).await.expect("find"),
        None
    );

    // Revoking is scoped to the tenant.
    assert!(!store.revoke_api_key("t1", theirs.id).await.expect("revoke"));
    let untouched = store
        .find_api_key(theirs.id)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(untouched.revoked_at, None);
    assert!(
        !store
            .revoke_api_key("t1", Uuid::new_v4())
            .await
            .expect("revoke")
    );

    assert!(store.revoke_api_key("t1", older.id).await.expect("revoke"));
    let revoked = store
        .find_api_key(older.id)
        .await
        .expect("find")
        .expect("found");
    let when = revoked.revoked_at.expect("revoked_at set");
    // Idempotent: the first revocation time stays.
    assert!(store.revoke_api_key("t1", older.id).await.expect("revoke"));
    let again = store
        .find_api_key(older.id)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(again.revoked_at, Some(when));
    let listed = store.list_api_keys("t1").await.expect("list");
    assert_eq!(listed.len(), 2, "revoked keys stay listed");
}
