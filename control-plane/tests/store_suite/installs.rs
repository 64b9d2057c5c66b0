//! Install cases: upsert, lookup, tenancy, config, secrets, delete.

use super::*;

store_cases!(
    reinstall_keeps_id_and_secrets_and_resets_config,
    install_needs_a_version_of_its_extension,
    find_install_by_install_id_registry_id_or_slug,
    find_install_never_returns_another_tenants_install,
    disabled_install_is_found_but_inactive,
    set_install_version_keeps_config,
    set_install_config_writes_a_new_config_version,
    secrets_set_replace_and_delete,
    delete_install_removes_config_and_secrets,
    installs_list_by_publisher_then_name,
);

async fn reinstall_keeps_id_and_secrets_and_resets_config(store: DynStore) {
    let (ext, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let (_, v2) = publish(&store, "acme", "alpha", "2.0.0").await;

    let first = install(&store, "t1", &v1).await;
    assert_eq!(
        (
            first.tenant_id.as_str(),
            first.registry_id,
            first.version_id
        ),
        ("t1", ext.id, v1.id)
    );
    assert_eq!(first.granted_caps, v1.capabilities);
    assert_eq!(first.config, config(&[("region", "eu")]));
    assert_eq!(first.egress_allowlist, ["api.example.com"]);
    assert!(first.enabled && first.status == InstallStatus::Enabled && first.is_active());
    assert!(!first.config_version.is_empty());

    store
        .set_install_secrets(first.id, Some(secrets("c1", "s1")))
        .await
        .expect("secrets");
    store
        .set_install_enabled(first.id, false)
        .await
        .expect("disable");

    let again = store
        .upsert_install(NewInstall {
            version_id: v2.id,
            granted_caps: vec!["cap:log.emit".into()],
            config: BTreeMap::new(),
            egress_allowlist: vec![],
            ..new_install("t1", &v1)
        })
        .await
        .expect("reinstall");
    assert_eq!(again.id, first.id);
    assert_eq!(again.created_at, first.created_at);
    assert_eq!(again.version_id, v2.id);
    assert_eq!(again.granted_caps, ["cap:log.emit"]);
    assert!(again.config.is_empty(), "config is reset");
    assert_ne!(again.config_version, first.config_version);
    assert!(again.egress_allowlist.is_empty());
    assert!(again.is_active(), "a reinstall enables");

    let view = store
        .find_install("t1", &ExtensionSelector::Id(first.id))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(view.install, again);
    assert_eq!(view.version, v2);
    assert_eq!(view.secrets, Some(secrets("c1", "s1")), "secrets are kept");
}

async fn install_needs_a_version_of_its_extension(store: DynStore) {
    let (_, alpha) = publish(&store, "acme", "alpha", "1.0.0").await;
    let (_, beta) = publish(&store, "acme", "beta", "1.0.0").await;

    let crossed = NewInstall {
        version_id: beta.id,
        ..new_install("t1", &alpha)
    };
    let err = store
        .upsert_install(crossed)
        .await
        .expect_err("foreign version");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let unknown = NewInstall {
        version_id: Uuid::new_v4(),
        ..new_install("t1", &alpha)
    };
    let err = store
        .upsert_install(unknown)
        .await
        .expect_err("unknown version");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert!(store.list_installs("t1").await.expect("list").is_empty());
}

async fn find_install_by_install_id_registry_id_or_slug(store: DynStore) {
    let (ext, v1) = publish(&store, "Acme", "Alpha", "1.0.0").await;
    let mine = install(&store, "t1", &v1).await;
    store
        .set_install_secrets(mine.id, Some(secrets("c", "s")))
        .await
        .expect("secrets");

    for selector in [
        ExtensionSelector::Id(mine.id),
        ExtensionSelector::Id(ext.id),
        slug("acme.alpha"),
        slug("ACME.ALPHA"),
        slug(&mine.id.to_string()),
    ] {
        let view = store
            .find_install("t1", &selector)
            .await
            .expect("find")
            .expect("found");
        assert_eq!(view.install, mine, "{selector:?}");
        assert_eq!(view.extension, ext);
        assert_eq!(view.version, v1);
        assert_eq!(view.secrets, Some(secrets("c", "s")));
    }
    assert!(
        store
            .find_install("t1", &slug("acme.beta"))
            .await
            .expect("find")
            .is_none()
    );
    assert!(
        store
            .find_install("t1", &ExtensionSelector::Id(v1.id))
            .await
            .expect("find")
            .is_none()
    );
    assert!(
        store
            .find_install("t1", &ExtensionSelector::Id(Uuid::new_v4()))
            .await
            .expect("find")
            .is_none()
    );
}

async fn find_install_never_returns_another_tenants_install(store: DynStore) {
    let (alpha, a1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let (beta, b1) = publish(&store, "acme", "beta", "1.0.0").await;
    let mine = install(&store, "t1", &a1).await;
    let theirs = install(&store, "t2", &a1).await;
    let their_beta = install(&store, "t2", &b1).await;
    assert_ne!(mine.id, theirs.id);

    let find = |tenant: &'static str, selector: ExtensionSelector| {
        let store = store.clone();
        async move {
            store
                .find_install(tenant, &selector)
                .await
                .expect("find")
                .map(|v| v.install.id)
        }
    };
    assert_eq!(find("t1", ExtensionSelector::Id(theirs.id)).await, None);
    assert_eq!(find("t1", ExtensionSelector::Id(their_beta.id)).await, None);
    assert_eq!(find("t1", ExtensionSelector::Id(beta.id)).await, None);
    assert_eq!(find("t1", slug("acme.beta")).await, None);
    assert_eq!(
        find("t1", ExtensionSelector::Id(alpha.id)).await,
        Some(mine.id)
    );
    assert_eq!(
        find("t2", ExtensionSelector::Id(alpha.id)).await,
        Some(theirs.id)
    );
    assert_eq!(find("t2", ExtensionSelector::Id(mine.id)).await, None);
    assert_eq!(find("t3", slug("acme.alpha")).await, None);
}

async fn disabled_install_is_found_but_inactive(store: DynStore) {
    let (_, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let row = install(&store, "t1", &v1).await;

    let disabled = store
        .set_install_enabled(row.id, false)
        .await
        .expect("disable");
    assert!(
        !disabled.enabled && disabled.status == InstallStatus::Disabled && !disabled.is_active()
    );
    assert_eq!(disabled.config_version, row.config_version);
    let view = store
        .find_install("t1", &slug("acme.alpha"))
        .await
        .expect("find")
        .expect("still found");
    assert_eq!(view.install, disabled);
    assert_eq!(store.list_installs("t1").await.expect("list").len(), 1);

    let enabled = store
        .set_install_enabled(row.id, true)
        .await
        .expect("enable");
    assert!(enabled.enabled && enabled.status == InstallStatus::Enabled && enabled.is_active());

    let err = store
        .set_install_enabled(Uuid::new_v4(), true)
        .await
        .expect_err("absent");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

async fn set_install_version_keeps_config(store: DynStore) {
    let (_, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let (_, v2) = publish(&store, "acme", "alpha", "1.1.0").await;
    let (_, other) = publish(&store, "acme", "beta", "1.1.0").await;
    let row = install(&store, "t1", &v1).await;

    let moved = store
        .set_install_version(row.id, v2.id, vec!["cap:a".into(), "cap:b".into()])
        .await
        .expect("move");
    assert_eq!(moved.id, row.id);
    assert_eq!(moved.version_id, v2.id);
    assert_eq!(moved.granted_caps, ["cap:a", "cap:b"]);
    assert_eq!(
        (&moved.config, &moved.config_version),
        (&row.config, &row.config_version)
    );
    let view = store
        .find_install("t1", &ExtensionSelector::Id(row.id))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(view.version, v2);

    let err = store
        .set_install_version(row.id, other.id, vec![])
        .await
        .expect_err("foreign version");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let err = store
        .set_install_version(Uuid::new_v4(), v2.id, vec![])
        .await
        .expect_err("absent install");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let unchanged = store
        .find_install("t1", &ExtensionSelector::Id(row.id))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(unchanged.install, moved);
}

async fn set_install_config_writes_a_new_config_version(store: DynStore) {
    let (_, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let row = install(&store, "t1", &v1).await;

    let first = store
        .set_install_config(row.id, config(&[("a", "1"), ("b", "two")]))
        .await
        .expect("config");
    assert_eq!(first.config, config(&[("a", "1"), ("b", "two")]));
    assert_ne!(first.config_version, row.config_version);
    let second = store
        .set_install_config(row.id, config(&[("a", "1"), ("b", "two")]))
        .await
        .expect("config");
    assert_ne!(
        second.config_version, first.config_version,
        "every write is a new version"
    );

    let view = store
        .find_install("t1", &ExtensionSelector::Id(row.id))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(view.install, second);
    let cleared = store
        .set_install_config(row.id, BTreeMap::new())
        .await
        .expect("clear");
    assert!(cleared.config.is_empty());

    let err = store
        .set_install_config(Uuid::new_v4(), BTreeMap::new())
        .await
        .expect_err("absent");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

async fn secrets_set_replace_and_delete(store: DynStore) {
    let (_, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let row = install(&store, "t1", &v1).await;
    let find_secrets = || {
        let store = store.clone();
        async move {
            let view = store
                .find_install("t1", &ExtensionSelector::Id(row.id))
                .await
                .expect("find");
            view.expect("found").secrets
        }
    };
    assert_eq!(find_secrets().await, None);

    store
        .set_install_secrets(row.id, Some(secrets("c1", "s1")))
        .await
        .expect("set");
    assert_eq!(find_secrets().await, Some(secrets("c1", "s1")));
    let alga = SecretsRow {
        ciphertext: "eyJrIjoidiJ9".into(),
        algorithm: "inline/base64".into(),
        key_path: None,
        mount: None,
        version: "s2".into(),
        expires_at: None,
    };
    store
        .set_install_secrets(row.id, Some(alga.clone()))
        .await
        .expect("replace");
    assert_eq!(find_secrets().await, Some(alga));

    store
        .set_install_secrets(row.id, None)
        .await
        .expect("delete");
    assert_eq!(find_secrets().await, None);
    store
        .set_install_secrets(row.id, None)
        .await
        .expect("delete again");

    for value in [Some(secrets("c", "s")), None] {
        let err = store
            .set_install_secrets(Uuid::new_v4(), value)
            .await
            .expect_err("absent install");
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    }
}

async fn delete_install_removes_config_and_secrets(store: DynStore) {
    let (_, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let row = install(&store, "t1", &v1).await;
    store
        .set_install_config(row.id, config(&[("k", "v")]))
        .await
        .expect("config");
    store
        .set_install_secrets(row.id, Some(secrets("c", "s")))
        .await
        .expect("secrets");
    let other = install(&store, "t2", &v1).await;

    assert!(store.delete_install(row.id).await.expect("delete"));
    assert!(
        store
            .find_install("t1", &ExtensionSelector::Id(row.id))
            .await
            .expect("find")
            .is_none()
    );
    assert!(store.list_installs("t1").await.expect("list").is_empty());
    assert!(!store.delete_install(row.id).await.expect("delete again"));
    let err = store
        .set_install_secrets(row.id, None)
        .await
        .expect_err("gone");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(
        store.list_installs("t2").await.expect("list")[0].install,
        other,
        "other tenants untouched"
    );

    let fresh = install(&store, "t1", &v1).await;
    assert_ne!(fresh.id, row.id);
    let view = store
        .find_install("t1", &ExtensionSelector::Id(fresh.id))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(view.secrets, None);
    assert_eq!(view.install.config, config(&[("region", "eu")]));
}

async fn installs_list_by_publisher_then_name(store: DynStore) {
    for (publisher, name) in [("zeta", "a"), ("acme", "b"), ("acme", "a")] {
        let (_, version) = publish(&store, publisher, name, "1.0.0").await;
        install(&store, "t1", &version).await;
    }
    let (_, elsewhere) = publish(&store, "acme", "c", "1.0.0").await;
    install(&store, "t2", &elsewhere).await;

    let listed = store.list_installs("t1").await.expect("list");
    let names: Vec<String> = listed.iter().map(|v| v.extension.slug()).collect();
    assert_eq!(names, ["acme.a", "acme.b", "zeta.a"]);
    assert!(
        listed
            .iter()
            .all(|v| v.install.tenant_id == "t1" && v.version.registry_id == v.extension.id)
    );
    assert!(
        store
            .list_installs("nobody")
            .await
            .expect("list")
            .is_empty()
    );
}
