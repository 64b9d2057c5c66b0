//! The control plane over real mTLS: who may call what, publishing signed
//! bundles, and every kind of bad upload failing with its stable code while
//! leaving nothing behind.

mod support;

use std::time::Duration;

use annex_bundle::hash::ContentHash;
use annex_bundle::signing::KeyPair;
use annex_control_plane::Limits;
use annex_control_plane::store::ExtensionSelector;
use annex_ops::Role;
use annex_proto::{ErrorCode, pb};
use annex_testkit::http::get;
use annex_testkit::{ControlPlane, assert_eventually};
use support::{code, sign, tar_zst, valid_bundle};

const PUB: &str = "acme";

async fn server_with_key() -> (ControlPlane, KeyPair) {
    let server = support::start().await;
    let key = KeyPair::generate();
    server.trust_key(PUB, &key).await;
    (server, key)
}

/// Asserts the registry holds no extension named `name` and no bytes for `bytes`.
async fn assert_nothing_stored(server: &ControlPlane, name: &str, bytes: &[u8]) {
    let slug = format!("{PUB}.{name}");
    let ext = server
        .store
        .get_extension(&ExtensionSelector::Slug(slug.clone()))
        .await
        .expect("store");
    if let Some(ext) = ext {
        let versions = server.store.list_versions(ext.id).await.expect("store");
        assert!(
            versions.is_empty(),
            "{slug} has versions after a failed publish"
        );
    }
    let hash = ContentHash::of(bytes).to_string();
    assert!(
        server
            .blobs
            .blob_size(&hash)
            .await
            .expect("store")
            .is_none(),
        "bytes of a failed publish were kept"
    );
    assert!(
        server
            .store
            .version_by_content_hash(&hash)
            .await
            .expect("store")
            .is_none()
    );
}

#[tokio::test]
async fn operator_publishes_and_every_role_can_fetch_the_bundle() {
    let (server, key) = server_with_key().await;
    let bytes = valid_bundle(PUB, "hello", "1.0.0");
    let published = server
        .publish(&bytes, &sign(&key, &bytes, PUB, "hello", "1.0.0"))
        .await
        .expect("publish");
    let ext = published.extension.expect("extension");
    let version = published.version.expect("version");
    assert_eq!(ext.slug, "acme.hello");
    assert_eq!(version.version, "1.0.0");
    assert_eq!(version.content_hash, ContentHash::of(&bytes).to_string());
    assert_eq!(version.signing_key_id, key.public_key().key_id());
    // Endpoints are normalised as at Alga's publish.
    let endpoints: Vec<_> = version
        .endpoints
        .iter()
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    assert_eq!(endpoints, ["GET /hello", "POST /echo"]);
    assert_eq!(version.ui.expect("ui").entry, "ui/index.html");

    for role in [Role::Operator, Role::Edge, Role::Worker, Role::ControlPlane] {
        let mut client = server.registry(role).await;
        let mut stream = client
            .fetch_bundle(pb::FetchBundleRequest {
                content_hash: version.content_hash.clone(),
            })
            .await
            .expect("fetch")
            .into_inner();
        let mut info = None;
        let mut got = Vec::new();
        while let Some(msg) = stream.message().await.expect("stream") {
            match msg.part {
                Some(pb::fetch_bundle_response::Part::Info(i)) => info = Some(i),
                Some(pb::fetch_bundle_response::Part::Chunk(c)) => got.extend_from_slice(&c),
                None => {}
            }
        }
        assert_eq!(got, bytes, "{role} got the exact bytes");
        let info = info.expect("info first");
        assert_eq!(
            (
                info.publisher.as_str(),
                info.name.as_str(),
                info.version.as_str()
            ),
            (PUB, "hello", "1.0.0")
        );
        assert!(!info.signature.is_empty());
    }

    let mut reader = server.registry(Role::Edge).await;
    let listed = reader
        .list_versions(pb::ListVersionsRequest {
            extension: "ACME.hello".into(),
        })
        .await
        .expect("list by slug, case-insensitively")
        .into_inner();
    assert_eq!(listed.versions.len(), 1);
    let by_id = reader
        .get_extension(pb::GetExtensionRequest {
            extension: ext.id.clone(),
        })
        .await
        .expect("get by registry id")
        .into_inner();
    assert_eq!(by_id.slug, "acme.hello");
}

#[tokio::test]
async fn roles_are_checked_per_service_and_method() {
    let (server, _key) = server_with_key().await;
    let status = server
        .installs(Role::Worker)
        .await
        .list_installs(pb::ListInstallsRequest {
            tenant_id: "t1".into(),
        })
        .await
        .expect_err("a worker certificate cannot call Installs");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(code(&status), ErrorCode::PermissionDenied);

    let bytes = valid_bundle(PUB, "x", "1.0.0");
    let mut edge = server.registry(Role::Edge).await;
    let status = edge
        .publish(futures::stream::iter(vec![pb::PublishRequest {
            part: Some(pb::publish_request::Part::Chunk(bytes)),
        }]))
        .await
        .expect_err("an edge certificate cannot publish");
    assert_eq!(code(&status), ErrorCode::PermissionDenied);

    let status = server
        .trust(Role::Worker)
        .await
        .revoke_key(pb::RevokeKeyRequest { key_id: "k".into() })
        .await
        .expect_err("a worker cannot revoke keys");
    assert_eq!(code(&status), ErrorCode::PermissionDenied);
    // ...but every role can read the trust bundle.
    let keys = server
        .trust(Role::Worker)
        .await
        .list_keys(pb::ListKeysRequest::default())
        .await
        .expect("list keys")
        .into_inner();
    assert_eq!(keys.keys.len(), 1);
}

#[tokio::test]
async fn clients_without_a_certificate_of_our_ca_cannot_connect() {
    let (server, _key) = server_with_key().await;
    match server.channel_without_certificate().await {
        Err(_) => {}
        Ok(channel) => {
            let err = pb::registry_client::RegistryClient::new(channel)
                .list_extensions(pb::ListExtensionsRequest {})
                .await
                .expect_err("no client certificate");
            assert_ne!(err.code(), tonic::Code::Ok);
        }
    }
    let foreign = annex_ops::devcerts::DevCa::generate().expect("ca");
    let mut material = foreign.issue(Role::Operator, "intruder").expect("cert");
    // Trust the real server, present a certificate it did not sign.
    material.ca_pem = server.ca.ca_pem().as_bytes().to_vec();
    match server.channel_with(&material).await {
        Err(_) => {}
        Ok(channel) => {
            let err = pb::registry_client::RegistryClient::new(channel)
                .list_extensions(pb::ListExtensionsRequest {})
                .await
                .expect_err("foreign certificate");
            assert_ne!(err.code(), tonic::Code::Ok);
        }
    }
}

/// One bad upload: what to send, and the code it must fail with.
struct BadUpload {
    what: &'static str,
    name: &'static str,
    bytes: Vec<u8>,
    signature: String,
    code: ErrorCode,
}

async fn check_bad_upload(server: &ControlPlane, case: BadUpload) {
    let status = server
        .publish(&case.bytes, &case.signature)
        .await
        .expect_err(case.what);
    assert_eq!(code(&status), case.code, "{}: {status:?}", case.what);
    assert_nothing_stored(server, case.name, &case.bytes).await;
}

#[tokio::test]
async fn bad_uploads_fail_with_their_code_and_store_nothing() {
    let (server, key) = server_with_key().await;
    let other_key = KeyPair::generate();

    let good = valid_bundle(PUB, "tampered", "1.0.0");
    let signature = sign(&key, &good, PUB, "tampered", "1.0.0");
    // Same identity, one UI file changed after signing.
    let tampered = tar_zst(&[
        (
            "manifest.json",
            &support::manifest(PUB, "tampered", "1.0.0"),
        ),
        ("dist/main.wasm", support::EMPTY_COMPONENT),
        ("ui/index.html", b"<html>injected</html>"),
    ]);
    let mut corrupt = good.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;

    let unknown_field = {
        let mut m: serde_json::Value =
            serde_json::from_slice(&support::manifest(PUB, "unknown", "1.0.0")).expect("json");
        m["entry"] = serde_json::json!("dist/main.wasm");
        tar_zst(&[
            ("manifest.json", &serde_json::to_vec(&m).expect("json")),
            ("dist/main.wasm", support::EMPTY_COMPONENT),
        ])
    };
    let traversal = tar_zst(&[
        (
            "manifest.json",
            &support::manifest(PUB, "traversal", "1.0.0"),
        ),
        ("dist/main.wasm", support::EMPTY_COMPONENT),
        ("ui/../../etc/passwd", b"x"),
    ]);
    let bomb = support::bomb_bundle(PUB, "bomb", 64 * 1024 * 1024);
    let core_module = tar_zst(&[
        ("manifest.json", &support::manifest(PUB, "core", "1.0.0")),
        (
            "dist/main.wasm",
            &[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
        ),
    ]);
    let no_manifest = tar_zst(&[("dist/main.wasm", support::EMPTY_COMPONENT)]);
    let garbage = b"this is not a zstd stream".to_vec();
    let wrong_identity = valid_bundle(PUB, "identity", "1.0.0");

    let cases = vec![
        BadUpload {
            what: "tampered bytes",
            name: "tampered",
            bytes: tampered,
            signature,
            code: ErrorCode::SignatureInvalid,
        },
        BadUpload {
            what: "signature by an untrusted key",
            name: "tampered",
            signature: sign(&other_key, &good, PUB, "tampered", "1.0.0"),
            bytes: good.clone(),
            code: ErrorCode::SignatureInvalid,
        },
        BadUpload {
            what: "missing signature",
            name: "tampered",
            bytes: good.clone(),
            signature: String::new(),
            code: ErrorCode::SignatureMissing,
        },
        BadUpload {
            what: "signature bound to another version",
            name: "identity",
            signature: sign(&key, &wrong_identity, PUB, "identity", "9.9.9"),
            bytes: wrong_identity,
            code: ErrorCode::SignatureInvalid,
        },
        BadUpload {
            what: "unknown manifest field",
            name: "unknown",
            signature: sign(&key, &unknown_field, PUB, "unknown", "1.0.0"),
            bytes: unknown_field,
            code: ErrorCode::InvalidManifest,
        },
        BadUpload {
            what: "traversal entry",
            name: "traversal",
            signature: sign(&key, &traversal, PUB, "traversal", "1.0.0"),
            bytes: traversal,
            code: ErrorCode::InvalidBundle,
        },
        BadUpload {
            what: "decompression bomb",
            name: "bomb",
            signature: sign(&key, &bomb, PUB, "bomb", "1.0.0"),
            bytes: bomb,
            code: ErrorCode::BundleTooLarge,
        },
        BadUpload {
            what: "core module instead of a component",
            name: "core",
            signature: sign(&key, &core_module, PUB, "core", "1.0.0"),
            bytes: core_module,
            code: ErrorCode::InvalidBundle,
        },
        BadUpload {
            what: "no manifest",
            name: "none",
            signature: "x".into(),
            bytes: no_manifest,
            code: ErrorCode::ManifestNotFound,
        },
        BadUpload {
            what: "corrupted archive",
            name: "tampered",
            signature: "x".into(),
            bytes: corrupt,
            code: ErrorCode::InvalidBundle,
        },
        BadUpload {
            what: "not an archive",
            name: "none",
            signature: "x".into(),
            bytes: garbage,
            code: ErrorCode::InvalidBundle,
        },
    ];
    for case in cases {
        check_bad_upload(&server, case).await;
    }
}

#[tokio::test]
async fn revoked_and_expired_keys_are_refused_at_publish() {
    let (server, key) = server_with_key().await;
    let expired_key = KeyPair::generate();
    server
        .trust(Role::Operator)
        .await
        .add_key(pb::AddKeyRequest {
            publisher: PUB.into(),
            public_key: expired_key.public_key().to_base64(),
            key_id: "expired".into(),
            not_before: Some(pb::Timestamp { unix_ms: 1_000 }),
            not_after: Some(pb::Timestamp { unix_ms: 2_000 }),
        })
        .await
        .expect("add expired key");
    let bytes = valid_bundle(PUB, "exp", "1.0.0");
    check_bad_upload(
        &server,
        BadUpload {
            what: "expired key",
            name: "exp",
            signature: sign(&expired_key, &bytes, PUB, "exp", "1.0.0"),
            bytes,
            code: ErrorCode::KeyExpired,
        },
    )
    .await;

    server
        .trust(Role::Operator)
        .await
        .revoke_key(pb::RevokeKeyRequest {
            key_id: key.public_key().key_id(),
        })
        .await
        .expect("revoke");
    let bytes = valid_bundle(PUB, "rev", "1.0.0");
    check_bad_upload(
        &server,
        BadUpload {
            what: "revoked key",
            name: "rev",
            signature: sign(&key, &bytes, PUB, "rev", "1.0.0"),
            bytes,
            code: ErrorCode::KeyRevoked,
        },
    )
    .await;
}

#[tokio::test]
async fn oversize_uploads_are_refused_while_streaming() {
    let server = support::start_with(Limits {
        max_bundle_bytes: 64 * 1024,
        ..Limits::default()
    })
    .await;
    let key = KeyPair::generate();
    server.trust_key(PUB, &key).await;
    let mut bytes = valid_bundle(PUB, "big", "1.0.0");
    bytes.extend(std::iter::repeat_n(7u8, 128 * 1024));
    let status = server
        .publish(&bytes, &sign(&key, &bytes, PUB, "big", "1.0.0"))
        .await
        .expect_err("too big");
    assert_eq!(code(&status), ErrorCode::BundleTooLarge);
    assert_nothing_stored(&server, "big", &bytes).await;
}

#[tokio::test]
async fn versions_are_immutable_even_under_concurrent_publishes() {
    let (server, key) = server_with_key().await;
    let first = valid_bundle(PUB, "imm", "1.0.0");
    server
        .publish(&first, &sign(&key, &first, PUB, "imm", "1.0.0"))
        .await
        .expect("first");

    // Same version, different bytes: refused, and the new bytes are not kept.
    let second = tar_zst(&[
        ("manifest.json", &support::manifest(PUB, "imm", "1.0.0")),
        ("dist/main.wasm", support::EMPTY_COMPONENT),
    ]);
    let status = server
        .publish(&second, &sign(&key, &second, PUB, "imm", "1.0.0"))
        .await
        .expect_err("duplicate");
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    assert_eq!(code(&status), ErrorCode::ExtensionVersionAlreadyExists);
    assert!(
        server
            .blobs
            .blob_size(&ContentHash::of(&second).to_string())
            .await
            .expect("store")
            .is_none()
    );
    // Same bytes again: refused too, and the first version's bytes survive.
    let status = server
        .publish(&first, &sign(&key, &first, PUB, "imm", "1.0.0"))
        .await
        .expect_err("duplicate");
    assert_eq!(code(&status), ErrorCode::ExtensionVersionAlreadyExists);
    assert!(
        server
            .blobs
            .blob_size(&ContentHash::of(&first).to_string())
            .await
            .expect("store")
            .is_some()
    );

    // Eight concurrent publishes of one new version: exactly one winner.
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let bytes = tar_zst(&[
            ("manifest.json", &support::manifest(PUB, "imm", "2.0.0")),
            ("dist/main.wasm", support::EMPTY_COMPONENT),
            ("ui/n.txt", &[i]),
        ]);
        let sig = sign(&key, &bytes, PUB, "imm", "2.0.0");
        let channel = server.channel(Role::Operator).await;
        tasks.push(tokio::spawn(async move {
            let parts = vec![
                pb::PublishRequest {
                    part: Some(pb::publish_request::Part::Header(pb::PublishHeader {
                        signature: sig,
                        ..Default::default()
                    })),
                },
                pb::PublishRequest {
                    part: Some(pb::publish_request::Part::Chunk(bytes)),
                },
            ];
            pb::registry_client::RegistryClient::new(channel)
                .publish(futures::stream::iter(parts))
                .await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        match task.await.expect("join") {
            Ok(_) => winners += 1,
            Err(status) => assert_eq!(code(&status), ErrorCode::ExtensionVersionAlreadyExists),
        }
    }
    assert_eq!(winners, 1);
    let ext = server
        .store
        .get_extension(&ExtensionSelector::Slug("acme.imm".into()))
        .await
        .expect("store")
        .expect("ext");
    assert_eq!(
        server
            .store
            .list_versions(ext.id)
            .await
            .expect("store")
            .len(),
        2
    );
}

#[tokio::test]
async fn wildcard_versions_resolve_at_publish() {
    let (server, key) = server_with_key().await;
    let mut got = Vec::new();
    for i in 0..3u8 {
        let bytes = tar_zst(&[
            ("manifest.json", &support::manifest(PUB, "wild", "1.4.*")),
            ("dist/main.wasm", support::EMPTY_COMPONENT),
            ("ui/n.txt", &[i]),
        ]);
        let v = server
            .publish(&bytes, &sign(&key, &bytes, PUB, "wild", "1.4.*"))
            .await
            .expect("publish")
            .version
            .expect("version");
        got.push(v.version);
    }
    assert_eq!(got, ["1.4.0", "1.4.1", "1.4.2"]);
}

#[tokio::test]
async fn admin_listener_reports_liveness_readiness_and_metrics() {
    let (server, key) = server_with_key().await;
    assert_eq!(get(server.admin_addr, "/live", &[]).await.status, 200);
    let addr = server.admin_addr;
    assert_eventually!(
        Duration::from_secs(10),
        async || get(addr, "/ready", &[]).await.status == 200,
        "the control plane to report ready"
    );
    let bytes = valid_bundle(PUB, "metered", "1.0.0");
    server
        .publish(&bytes, &sign(&key, &bytes, PUB, "metered", "1.0.0"))
        .await
        .expect("publish");
    let _ = server.publish(&bytes, "").await.expect_err("unsigned");
    let metrics = get(server.admin_addr, "/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    let body = metrics.text();
    assert!(
        body.contains("annex_control_plane_publishes_total{result=\"ok\"} 1"),
        "{body}"
    );
    assert!(body.contains("result=\"SIGNATURE_MISSING\""), "{body}");
    assert!(
        !body.contains("acme"),
        "metrics must not carry extension names"
    );
}
