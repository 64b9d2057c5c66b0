//! Rollouts over real mTLS: start (with the checks an upgrade makes), the
//! route a resolution carries (each version with its weight and its own
//! grant), one active rollout per install, abort and promotion by hand,
//! the history, and the roles allowed.

mod support;

use annex_bundle::signing::KeyPair;
use annex_ops::Role;
use annex_proto::{ErrorCode, pb};
use annex_testkit::ControlPlane;
use support::{code, sign, tar_zst};

const PUB: &str = "acme";
const TENANT: &str = "tenant-r";

/// A bundle of `version` asking for `caps`.
fn bundle(version: &str, caps: &[&str]) -> Vec<u8> {
    let manifest = serde_json::to_vec(&serde_json::json!({
        "name": "roll", "publisher": PUB, "version": version,
        "runtime": "wasm-rust@1", "capabilities": caps,
        "api": {"endpoints": [{"method": "GET", "path": "/who", "handler": "dist/main"}]}
    }))
    .expect("json");
    tar_zst(&[
        ("manifest.json", &manifest),
        ("dist/main.wasm", support::EMPTY_COMPONENT),
    ])
}

async fn publish(server: &ControlPlane, key: &KeyPair, version: &str, caps: &[&str]) {
    let bytes = bundle(version, caps);
    server
        .publish(&bytes, &sign(key, &bytes, PUB, "roll", version))
        .await
        .expect("publish");
}

fn iref() -> pb::InstallRef {
    pb::InstallRef {
        tenant_id: TENANT.into(),
        extension: "acme.roll".into(),
    }
}

fn start_request(versions: &[&str], steps: &[(u32, u64)]) -> pb::StartRolloutRequest {
    pb::StartRolloutRequest {
        install: Some(iref()),
        versions: versions.iter().map(|v| (*v).to_owned()).collect(),
        policy: Some(pb::RolloutPolicy {
            steps: steps
                .iter()
                .map(|(w, hold)| pb::RolloutStep {
                    weights: vec![*w],
                    hold_secs: *hold,
                })
                .collect(),
            max_error_rate: 0.05,
            max_p99_ms: 0,
            min_calls: 20,
        }),
        disable_missing_schedules: false,
    }
}

async fn resolve(server: &ControlPlane) -> pb::ResolvedInstall {
    server
        .installs(Role::Edge)
        .await
        .resolve(pb::ResolveRequest {
            tenant_id: TENANT.into(),
            extension: "acme.roll".into(),
        })
        .await
        .expect("resolve")
        .into_inner()
}

#[tokio::test]
async fn rollouts_start_route_abort_and_promote() {
    let server = support::start().await;
    let key = KeyPair::generate();
    server.trust_key(PUB, &key).await;
    publish(&server, &key, "1.0.0", &["cap:storage.kv"]).await;
    // 1.1.0 asks for a grant 1.0.0 does not have.
    publish(
        &server,
        &key,
        "1.1.0",
        &["cap:storage.kv", "cap:secrets.get"],
    )
    .await;
    let mut ops = server.installs(Role::Operator).await;
    ops.install(pb::InstallRequest {
        tenant_id: TENANT.into(),
        extension: "acme.roll".into(),
        version: "1.0.0".into(),
        ..Default::default()
    })
    .await
    .expect("install");

    // Nothing to read yet.
    let none = ops.get_rollout(iref()).await.expect_err("no rollout");
    assert_eq!(code(&none), ErrorCode::RolloutNotFound);
    // Refusals: the install's own version, an unknown one, a bad policy,
    // weights for the wrong number of canaries.
    for (req, want) in [
        (
            start_request(&["1.0.0"], &[(1000, 60)]),
            ErrorCode::InvalidArgument,
        ),
        (
            start_request(&["9.9.9"], &[(1000, 60)]),
            ErrorCode::VersionNotFound,
        ),
        (
            start_request(&["1.1.0"], &[(10_001, 60)]),
            ErrorCode::InvalidArgument,
        ),
        (start_request(&["1.1.0"], &[]), ErrorCode::InvalidArgument),
        (
            pb::StartRolloutRequest {
                policy: None,
                ..start_request(&["1.1.0"], &[(1000, 60)])
            },
            ErrorCode::InvalidArgument,
        ),
    ] {
        let e = ops.start_rollout(req).await.expect_err("refused");
        assert_eq!(code(&e), want, "{e:?}");
    }
    // The edge may resolve but not start rollouts.
    let e = server
        .installs(Role::Edge)
        .await
        .start_rollout(start_request(&["1.1.0"], &[(1000, 60)]))
        .await
        .expect_err("edge refused");
    assert_eq!(code(&e), ErrorCode::PermissionDenied);

    let r = ops
        .start_rollout(start_request(&["1.1.0"], &[(1000, 3600), (10_000, 3600)]))
        .await
        .expect("start")
        .into_inner();
    assert_eq!(r.state, "active");
    assert_eq!(r.step, 0);
    let versions: Vec<(&str, u32, bool)> = r
        .versions
        .iter()
        .map(|v| (v.version.as_str(), v.weight, v.stable))
        .collect();
    assert_eq!(versions, [("1.0.0", 9000, true), ("1.1.0", 1000, false)]);
    assert!(
        r.versions[1]
            .granted_caps
            .contains(&"cap:secrets.get".to_owned())
    );
    assert!(
        !r.versions[0]
            .granted_caps
            .contains(&"cap:secrets.get".to_owned())
    );
    assert_eq!(r.history.len(), 1);
    assert_eq!(r.history[0].action, "start");
    assert!(
        r.history[0].actor.starts_with("operator:"),
        "{:?}",
        r.history
    );
    let again = ops
        .start_rollout(start_request(&["1.1.0"], &[(1000, 60)]))
        .await
        .expect_err("one active rollout");
    assert_eq!(code(&again), ErrorCode::RolloutActive);

    // The resolution carries both versions: the canary first, each with
    // its own content hash, grants and execution grant.
    let resolved = resolve(&server).await;
    let route = resolved.rollout.expect("a rollout route");
    assert_eq!(route.rollout_id, r.rollout_id);
    let arms: Vec<(u32, String)> = route
        .arms
        .iter()
        .map(|a| (a.weight, a.install.clone().expect("info").version))
        .collect();
    assert_eq!(arms, [(1000, "1.1.0".into()), (9000, "1.0.0".into())]);
    let canary = route.arms[0].install.clone().expect("info");
    let stable = route.arms[1].install.clone().expect("info");
    assert_ne!(canary.content_hash, stable.content_hash);
    assert!(canary.granted_caps.contains(&"cap:secrets.get".to_owned()));
    assert!(!stable.granted_caps.contains(&"cap:secrets.get".to_owned()));
    assert_ne!(route.arms[0].execution_grant, route.arms[1].execution_grant);
    assert!(!route.arms[0].endpoints.is_empty());
    // Host services honour each grant's own capabilities: the canary's calls
    // may read secrets, the stable version's may not.
    let mut host =
        pb::host_services_client::HostServicesClient::new(server.channel(Role::Worker).await);
    host.get_secrets(pb::GetSecretsRequest {
        grant: route.arms[0].execution_grant.clone(),
    })
    .await
    .expect("the canary's grant has cap:secrets.get");
    let denied = host
        .get_secrets(pb::GetSecretsRequest {
            grant: route.arms[1].execution_grant.clone(),
        })
        .await
        .expect_err("the stable version's grant lacks it");
    assert_eq!(code(&denied), ErrorCode::PermissionDenied);
    // The install itself is still on 1.0.0.
    assert_eq!(resolved.install.expect("info").version, "1.0.0");

    // Abort: every call back on 1.0.0, the reason kept.
    let aborted = ops
        .abort_rollout(pb::AbortRolloutRequest {
            install: Some(iref()),
            reason: "saw errors in the logs".into(),
        })
        .await
        .expect("abort")
        .into_inner();
    assert_eq!(aborted.state, "aborted");
    assert_eq!(aborted.reason, "saw errors in the logs");
    assert_eq!(aborted.versions[1].weight, 0);
    assert!(resolve(&server).await.rollout.is_none());
    let e = ops
        .abort_rollout(pb::AbortRolloutRequest {
            install: Some(iref()),
            reason: String::new(),
        })
        .await
        .expect_err("nothing to abort");
    assert_eq!(code(&e), ErrorCode::RolloutNotFound);
    let read = ops.get_rollout(iref()).await.expect("get").into_inner();
    assert_eq!(read.rollout_id, aborted.rollout_id);
    assert_eq!(
        read.history
            .iter()
            .map(|e| e.action.as_str())
            .collect::<Vec<_>>(),
        ["start", "abort"]
    );

    // A second rollout, promoted by hand: the install moves to 1.1.0 (as
    // an upgrade, with 1.1.0's grants).
    ops.start_rollout(start_request(&["1.1.0"], &[(500, 3600)]))
        .await
        .expect("start again");
    let promoted = ops
        .promote_rollout(pb::PromoteRolloutRequest {
            install: Some(iref()),
            version: String::new(),
        })
        .await
        .expect("promote")
        .into_inner();
    assert_eq!(promoted.state, "promoted");
    assert_eq!(promoted.versions[1].weight, 10_000);
    let info = ops.get_install(iref()).await.expect("get").into_inner();
    assert_eq!(info.version, "1.1.0");
    assert!(info.granted_caps.contains(&"cap:secrets.get".to_owned()));
    let resolved = resolve(&server).await;
    assert!(resolved.rollout.is_none());
    assert_eq!(resolved.install.expect("info").version, "1.1.0");
}
