//! Installs over real mTLS: install, resolve by install id / registry id /
//! slug, grants, config, sealed secrets, enable/disable, upgrade, uninstall,
//! and the trust re-check at install.

mod support;

use annex_bundle::signing::KeyPair;
use annex_ops::Role;
use annex_proto::{ErrorCode, pb};
use support::{TestServer, code, sign, valid_bundle};

const PUB: &str = "acme";

async fn published(server: &TestServer, key: &KeyPair, name: &str, version: &str) -> pb::Version {
    let bytes = valid_bundle(PUB, name, version);
    server
        .publish(&bytes, &sign(key, &bytes, PUB, name, version))
        .await
        .expect("publish")
        .version
        .expect("version")
}

fn iref(tenant: &str, extension: &str) -> pb::InstallRef {
    pb::InstallRef {
        tenant_id: tenant.into(),
        extension: extension.into(),
    }
}

#[tokio::test]
async fn install_resolve_config_secrets_and_lifecycle() {
    let server = TestServer::start().await;
    let key = KeyPair::generate();
    server.trust_key(PUB, &key).await;
    let v1 = published(&server, &key, "app", "1.0.0").await;
    let v2 = published(&server, &key, "app", "1.1.0").await;
    let mut ops = server.installs(Role::Operator).await;

    let info = ops
        .install(pb::InstallRequest {
            tenant_id: "tenant-a".into(),
            extension: "acme.app".into(),
            version: "1.0.0".into(),
            config: [("region".to_string(), "eu".to_string())].into(),
            egress_allowlist: vec!["API.example.com".into()],
        })
        .await
        .expect("install")
        .into_inner();
    assert_eq!(info.version, "1.0.0");
    assert_eq!(info.content_hash, v1.content_hash);
    assert!(info.enabled);
    // The declared names, normalised, plus the defaults.
    assert_eq!(
        info.granted_caps,
        [
            "cap:context.read",
            "cap:http.fetch",
            "cap:log.emit",
            "cap:storage.kv",
            "cap:user.read"
        ]
    );
    assert_eq!(info.egress_allowlist, ["api.example.com"]);

    // The edge resolves by install id, registry id and slug; never for another tenant.
    let mut edge = server.installs(Role::Edge).await;
    for sel in [
        info.install_id.as_str(),
        info.registry_id.as_str(),
        "acme.app",
    ] {
        let r = edge
            .resolve(pb::ResolveRequest {
                tenant_id: "tenant-a".into(),
                extension: sel.into(),
            })
            .await
            .expect("resolve")
            .into_inner();
        assert_eq!(
            r.install.as_ref().expect("install").install_id,
            info.install_id
        );
        assert_eq!(r.config.get("region").map(String::as_str), Some("eu"));
        assert_eq!(r.endpoints.len(), 2);
        assert!(r.secret_envelope.is_none());
    }
    let status = edge
        .resolve(pb::ResolveRequest {
            tenant_id: "tenant-b".into(),
            extension: info.install_id.clone(),
        })
        .await
        .expect_err("another tenant's install");
    assert_eq!(code(&status), ErrorCode::InstallNotFound);

    // Config: replaced whole, with a new version.
    let before = ops
        .get_config(iref("tenant-a", "acme.app"))
        .await
        .expect("config")
        .into_inner();
    let after = ops
        .set_config(pb::SetConfigRequest {
            install: Some(iref("tenant-a", "acme.app")),
            config: [("mode".to_string(), "fast".to_string())].into(),
        })
        .await
        .expect("set config")
        .into_inner();
    assert_ne!(before.version, after.version);
    assert_eq!(after.config.len(), 1);

    // Secrets merge, ignore empty values, and are sealed at rest.
    let set = |values: &[(&str, &str)], clear: bool| pb::SetSecretsRequest {
        install: Some(iref("tenant-a", "acme.app")),
        secrets: values
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        clear,
        expires_at: None,
    };
    let m1 = ops
        .set_secrets(set(&[("api_key", "k-123"), ("b", "2")], false))
        .await
        .expect("secrets")
        .into_inner();
    let m2 = ops
        .set_secrets(set(&[("c", "3"), ("b", "")], false))
        .await
        .expect("merge")
        .into_inner();
    assert!(m1.has_envelope && m2.has_envelope);
    assert_ne!(m1.secrets_version, m2.secrets_version);
    let keys = ops
        .list_secret_keys(iref("tenant-a", "acme.app"))
        .await
        .expect("keys")
        .into_inner();
    assert_eq!(keys.keys, ["api_key", "b", "c"]);
    let resolved = edge
        .resolve(pb::ResolveRequest {
            tenant_id: "tenant-a".into(),
            extension: "acme.app".into(),
        })
        .await
        .expect("resolve")
        .into_inner();
    let envelope = resolved.secret_envelope.expect("envelope");
    assert_eq!(envelope.algorithm, "annex-aead:v1");
    assert!(!envelope.ciphertext_b64.contains("k-123"));
    let status = edge
        .list_secret_keys(iref("tenant-a", "acme.app"))
        .await
        .expect_err("edge cannot list secret keys");
    assert_eq!(code(&status), ErrorCode::PermissionDenied);

    // Disable: the install stops resolving; enable brings it back.
    ops.disable(iref("tenant-a", "acme.app"))
        .await
        .expect("disable");
    let status = edge
        .resolve(pb::ResolveRequest {
            tenant_id: "tenant-a".into(),
            extension: "acme.app".into(),
        })
        .await
        .expect_err("disabled");
    assert_eq!(code(&status), ErrorCode::InstallNotFound);
    ops.enable(iref("tenant-a", "acme.app"))
        .await
        .expect("enable");

    // Upgrade keeps the install id, secrets and config.
    let up = ops
        .upgrade(pb::UpgradeRequest {
            tenant_id: "tenant-a".into(),
            extension: "acme.app".into(),
            version: "1.1.0".into(),
            disable_missing_schedules: false,
        })
        .await
        .expect("upgrade")
        .into_inner();
    assert_eq!(up.install_id, info.install_id);
    assert_eq!(up.content_hash, v2.content_hash);
    assert_eq!(up.secrets_version, m2.secrets_version);

    // Re-install resets config but keeps secrets (Alga's rule).
    let again = ops
        .install(pb::InstallRequest {
            tenant_id: "tenant-a".into(),
            extension: "acme.app".into(),
            ..Default::default()
        })
        .await
        .expect("re-install newest")
        .into_inner();
    assert_eq!(again.install_id, info.install_id);
    assert_eq!(again.version, "1.1.0");
    assert_eq!(again.secrets_version, m2.secrets_version);
    let cfg = ops
        .get_config(iref("tenant-a", "acme.app"))
        .await
        .expect("config")
        .into_inner();
    assert!(cfg.config.is_empty());

    let listed = ops
        .list_installs(pb::ListInstallsRequest {
            tenant_id: "tenant-a".into(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.installs.len(), 1);

    ops.uninstall(iref("tenant-a", "acme.app"))
        .await
        .expect("uninstall");
    let status = ops
        .get_install(iref("tenant-a", "acme.app"))
        .await
        .expect_err("gone");
    assert_eq!(code(&status), ErrorCode::InstallNotFound);
}

#[tokio::test]
async fn bad_install_requests_get_precise_codes() {
    let server = TestServer::start().await;
    let key = KeyPair::generate();
    server.trust_key(PUB, &key).await;
    published(&server, &key, "app", "1.0.0").await;
    let mut ops = server.installs(Role::Operator).await;
    let install = |tenant: &str, ext: &str, version: &str, egress: &[&str]| pb::InstallRequest {
        tenant_id: tenant.into(),
        extension: ext.into(),
        version: version.into(),
        config: Default::default(),
        egress_allowlist: egress.iter().map(|s| s.to_string()).collect(),
    };
    let cases = [
        (
            install("t", "acme.nope", "", &[]),
            ErrorCode::ExtensionNotFound,
        ),
        (
            install("t", "acme.app", "9.9.9", &[]),
            ErrorCode::VersionNotFound,
        ),
        (install("", "acme.app", "", &[]), ErrorCode::InvalidArgument),
        (
            install("t", "acme.app", "", &["evil.test"]),
            ErrorCode::PermissionDenied,
        ),
        (
            install("t", "acme.app", "", &["bad host!"]),
            ErrorCode::InvalidArgument,
        ),
        // Ports and private reach need a platform entry that grants them.
        (
            install("t", "acme.app", "", &["api.partner.test:8443"]),
            ErrorCode::PermissionDenied,
        ),
        (
            install("t", "acme.app", "", &["private:api.partner.test"]),
            ErrorCode::PermissionDenied,
        ),
        (
            install("t", "acme.app", "", &["10.0.0.5:5432"]),
            ErrorCode::PermissionDenied,
        ),
        (
            install("t", "acme.app", "", &["private:*.example.com"]),
            ErrorCode::InvalidArgument,
        ),
    ];
    for (req, want) in cases {
        let status = ops.install(req.clone()).await.expect_err("bad install");
        assert_eq!(code(&status), want, "{req:?}");
    }
    let listed = ops
        .list_installs(pb::ListInstallsRequest {
            tenant_id: "t".into(),
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.installs.is_empty(), "a refused install left a row");
}

#[tokio::test]
async fn a_revoked_key_blocks_new_installs_and_deprecation_blocks_explicit_ones() {
    let server = TestServer::start().await;
    let key = KeyPair::generate();
    let added = server.trust_key(PUB, &key).await;
    published(&server, &key, "app", "1.0.0").await;
    published(&server, &key, "app", "2.0.0").await;

    server
        .registry(Role::Operator)
        .await
        .deprecate(pb::DeprecateRequest {
            extension: "acme.app".into(),
            version: "2.0.0".into(),
            reason: "broken".into(),
        })
        .await
        .expect("deprecate");
    let mut ops = server.installs(Role::Operator).await;
    let status = ops
        .install(pb::InstallRequest {
            tenant_id: "t".into(),
            extension: "acme.app".into(),
            version: "2.0.0".into(),
            ..Default::default()
        })
        .await
        .expect_err("deprecated");
    assert_eq!(code(&status), ErrorCode::VersionDeprecated);
    // Without a version the newest non-deprecated one is installed.
    let info = ops
        .install(pb::InstallRequest {
            tenant_id: "t".into(),
            extension: "acme.app".into(),
            ..Default::default()
        })
        .await
        .expect("install newest usable")
        .into_inner();
    assert_eq!(info.version, "1.0.0");

    server
        .trust(Role::Operator)
        .await
        .revoke_key(pb::RevokeKeyRequest {
            key_id: added.key_id,
        })
        .await
        .expect("revoke");
    let status = ops
        .install(pb::InstallRequest {
            tenant_id: "t2".into(),
            extension: "acme.app".into(),
            version: "1.0.0".into(),
            ..Default::default()
        })
        .await
        .expect_err("revoked key");
    assert_eq!(code(&status), ErrorCode::KeyRevoked);
    let listed = ops
        .list_installs(pb::ListInstallsRequest {
            tenant_id: "t2".into(),
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.installs.is_empty());
}
