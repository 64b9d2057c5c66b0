//! Captures over real mTLS (docs/design/replay.md): an operator starts a
//! policy and the install's resolution carries it; a worker records
//! captures only for an install with a policy, within its size cap, with
//! the secrets sealed; operators read them per tenant (another tenant's id
//! is not found), secrets only when revealed, every read recorded; other
//! roles are refused.

mod support;

use annex_bundle::signing::KeyPair;
use annex_ops::Role;
use annex_proto::{ErrorCode, pb};
use annex_testkit::ControlPlane;
use support::{code, sign, valid_bundle};
use tonic::transport::Channel;

const PUB: &str = "acme";

async fn server_with_installs(tenants: &[&str]) -> ControlPlane {
    let server = support::start().await;
    let key = KeyPair::generate();
    server.trust_key(PUB, &key).await;
    let bytes = valid_bundle(PUB, "app", "1.0.0");
    server
        .publish(&bytes, &sign(&key, &bytes, PUB, "app", "1.0.0"))
        .await
        .expect("publish");
    for tenant in tenants {
        server
            .installs(Role::Operator)
            .await
            .install(pb::InstallRequest {
                tenant_id: tenant.to_string(),
                extension: "acme.app".into(),
                ..Default::default()
            })
            .await
            .expect("install");
    }
    server
}

async fn captures(
    server: &ControlPlane,
    role: Role,
) -> pb::captures_client::CapturesClient<Channel> {
    pb::captures_client::CapturesClient::new(server.channel(role).await)
}

async fn resolve(server: &ControlPlane, tenant: &str) -> pb::ResolvedInstall {
    server
        .installs(Role::Edge)
        .await
        .resolve(pb::ResolveRequest {
            tenant_id: tenant.into(),
            extension: "acme.app".into(),
        })
        .await
        .expect("resolve")
        .into_inner()
}

fn install(tenant: &str) -> Option<pb::CaptureInstallRef> {
    Some(pb::CaptureInstallRef {
        tenant_id: tenant.into(),
        extension: "acme.app".into(),
    })
}

fn capture(grant: &str, tape: &[u8]) -> pb::RecordCaptureRequest {
    pb::RecordCaptureRequest {
        grant: grant.into(),
        request_id: "r-1".into(),
        reason: "sampled".into(),
        outcome: "ok".into(),
        status: 200,
        method: "GET".into(),
        path: "/status".into(),
        content_hash: "sha256:00".into(),
        tape: tape.to_vec(),
        secrets: [("api_key".to_string(), "top-secret".to_string())].into(),
    }
}

#[tokio::test]
async fn captures_are_recorded_sealed_and_read_per_tenant() {
    let server = server_with_installs(&["tenant-a", "tenant-b"]).await;
    let mut ops = captures(&server, Role::Operator).await;
    let mut host =
        pb::host_services_client::HostServicesClient::new(server.channel(Role::Worker).await);

    // No policy: resolutions carry none, and a worker cannot record.
    let before = resolve(&server, "tenant-a").await;
    assert_eq!(before.capture, None);
    let refused = host
        .record_capture(capture(&before.execution_grant, b"{}"))
        .await
        .expect_err("no policy");
    assert_eq!(code(&refused), ErrorCode::NotFound);

    let bad = ops
        .start_capture(pb::StartCaptureRequest {
            install: install("tenant-a"),
            ..Default::default()
        })
        .await
        .expect_err("neither a sample nor failures");
    assert_eq!(code(&bad), ErrorCode::InvalidArgument);
    let policy = ops
        .start_capture(pb::StartCaptureRequest {
            install: install("tenant-a"),
            sample_ppm: 10_000,
            max_bytes: 1024,
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner();
    assert_eq!(policy.retention_hours, 72);
    let after = resolve(&server, "tenant-a").await;
    let settings = after
        .capture
        .clone()
        .expect("the resolution carries the policy");
    assert_eq!((settings.sample_ppm, settings.max_bytes), (10_000, 1024));
    assert!(!settings.config_version.is_empty());
    assert_eq!(resolve(&server, "tenant-b").await.capture, None);

    // A tape over the cap, or not JSON, is refused.
    let big = format!("\"{}\"", "x".repeat(200 * 1024));
    let too_big = host
        .record_capture(capture(&after.execution_grant, big.as_bytes()))
        .await
        .expect_err("over the cap");
    assert_eq!(code(&too_big), ErrorCode::PayloadTooLarge);
    let not_json = host
        .record_capture(capture(&after.execution_grant, b"{"))
        .await
        .expect_err("not JSON");
    assert_eq!(code(&not_json), ErrorCode::InvalidArgument);
    host.record_capture(capture(&after.execution_grant, br#"{"version":1}"#))
        .await
        .expect("record");

    let listed = ops
        .list_captures(pb::ListCapturesRequest {
            tenant_id: "tenant-a".into(),
            extension: "acme.app".into(),
            limit: 0,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.captures.len(), 1);
    assert!(listed.policy.is_some());
    let summary = &listed.captures[0];
    assert_eq!(summary.secret_keys, ["api_key"]);
    let id = summary.capture_id.clone();

    let read = |tenant: &str, reveal: bool| pb::GetCaptureRequest {
        tenant_id: tenant.into(),
        capture_id: id.clone(),
        reveal_secrets: reveal,
    };
    let plain = ops
        .get_capture(read("tenant-a", false))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(plain.tape, br#"{"version":1}"#);
    assert!(plain.secrets.is_empty(), "secrets only when revealed");
    let revealed = ops
        .get_capture(read("tenant-a", true))
        .await
        .expect("reveal")
        .into_inner();
    assert_eq!(
        revealed.secrets.get("api_key").map(String::as_str),
        Some("top-secret")
    );

    // Tenant B: nothing listed, the id not found.
    let other = ops
        .list_captures(pb::ListCapturesRequest {
            tenant_id: "tenant-b".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(other.captures.is_empty());
    let hidden = ops
        .get_capture(read("tenant-b", true))
        .await
        .expect_err("other tenant");
    assert_eq!(code(&hidden), ErrorCode::NotFound);

    // Edges and workers cannot read captures.
    for role in [Role::Edge, Role::Worker] {
        let denied = captures(&server, role)
            .await
            .get_capture(read("tenant-a", true))
            .await
            .expect_err("not an operator");
        assert!(
            matches!(
                code(&denied),
                ErrorCode::PermissionDenied | ErrorCode::Unauthenticated
            ),
            "{role:?}: {denied:?}"
        );
    }

    // Stopping drops the policy from the resolution.
    ops.stop_capture(install("tenant-a").expect("ref"))
        .await
        .expect("stop");
    assert_eq!(resolve(&server, "tenant-a").await.capture, None);
    let gone = ops
        .stop_capture(install("tenant-a").expect("ref"))
        .await
        .expect_err("no policy");
    assert_eq!(code(&gone), ErrorCode::NotFound);
}
