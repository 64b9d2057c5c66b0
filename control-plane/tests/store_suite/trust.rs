//! Trust cases: publisher keys and the trust revision.

use super::*;

store_cases!(keys_add_list_revoke_and_revision,);

async fn keys_add_list_revoke_and_revision(store: DynStore) {
    let (keys, mut revision) = store.list_keys(None).await.expect("list");
    assert!(keys.is_empty());

    let mut added = Vec::new();
    for (key_id, publisher) in [("k1", "acme"), ("k2", "beta"), ("k0", "acme")] {
        let row = store.add_key(key(key_id, publisher)).await.expect("add");
        assert_eq!(
            row,
            KeyRow {
                created_at: row.created_at,
                ..key(key_id, publisher)
            }
        );
        assert!(
            row.created_at > at(1_700_000_000),
            "created_at is set by the store"
        );
        let (_, now) = store.list_keys(None).await.expect("list");
        assert!(now > revision, "add moves the revision");
        revision = now;
        added.push(row);
    }
    let ids = |keys: &[KeyRow]| keys.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>();
    let (all, _) = store.list_keys(None).await.expect("list");
    assert_eq!(ids(&all), ["k0", "k1", "k2"]);
    assert_eq!(all[1], added[0]);
    let (acme, _) = store.list_keys(Some("acme")).await.expect("list");
    assert_eq!(ids(&acme), ["k0", "k1"]);
    assert!(
        store
            .list_keys(Some("nobody"))
            .await
            .expect("list")
            .0
            .is_empty()
    );

    let dup = store
        .add_key(key("k1", "other"))
        .await
        .expect_err("duplicate");
    assert!(matches!(dup, StoreError::AlreadyExists(_)), "{dup:?}");
    assert_eq!(
        store.list_keys(None).await.expect("list").1,
        revision,
        "a refused add changes nothing"
    );

    let revoked = store.revoke_key("k1").await.expect("revoke");
    let revoked_at = revoked.revoked_at.expect("revoked_at set");
    let (_, after_revoke) = store.list_keys(None).await.expect("list");
    assert!(after_revoke > revision);
    let again = store.revoke_key("k1").await.expect("revoke again");
    assert_eq!(
        again.revoked_at,
        Some(revoked_at),
        "idempotent: keeps the first time"
    );
    assert_eq!(store.list_keys(None).await.expect("list").1, after_revoke);
    let (acme, _) = store.list_keys(Some("acme")).await.expect("list");
    assert_eq!(acme[1].revoked_at, Some(revoked_at));
    assert_eq!(acme[0].revoked_at, None);

    let missing = store.revoke_key("nope").await.expect_err("absent");
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
}
