//! Quotas and usage over real mTLS: `Installs.SetQuota/ListQuotas/DeleteQuota`
//! (operator only, validated), the shares in the routing snapshot split
//! across watching edges and replicas and following changes, the control
//! plane's own dispatch under the quota, and heartbeat usage read back with
//! `Installs.GetUsage`.

mod support;

use std::time::Duration;

use annex_bundle::signing::KeyPair;
use annex_ops::Role;
use annex_proto::{ErrorCode, pb};
use annex_testkit::{ControlPlane, assert_eventually};
use support::{code, sign, valid_bundle};

const PUB: &str = "acme";

/// A server with `acme.app` installed for each tenant; returns the install ids.
async fn installed(tenants: &[&str]) -> (ControlPlane, Vec<pb::InstallInfo>) {
    let server = support::start().await;
    let key = KeyPair::generate();
    server.trust_key(PUB, &key).await;
    let bytes = valid_bundle(PUB, "app", "1.0.0");
    server
        .publish(&bytes, &sign(&key, &bytes, PUB, "app", "1.0.0"))
        .await
        .expect("publish");
    let mut ops = server.installs(Role::Operator).await;
    let mut infos = Vec::new();
    for t in tenants {
        infos.push(
            ops.install(pb::InstallRequest {
                tenant_id: (*t).into(),
                extension: "acme.app".into(),
                ..Default::default()
            })
            .await
            .expect("install")
            .into_inner(),
        );
    }
    (server, infos)
}

fn set(tenant: &str, extension: &str, conc: u32, rps: u32) -> pb::SetQuotaRequest {
    pb::SetQuotaRequest {
        quota: Some(pb::QuotaRef {
            tenant_id: tenant.into(),
            extension: extension.into(),
        }),
        max_concurrency: conc,
        requests_per_second: rps,
    }
}

#[tokio::test]
async fn operators_set_list_and_remove_quotas_with_clear_errors() {
    let (server, infos) = installed(&["tenant-a"]).await;
    let mut ops = server.installs(Role::Operator).await;
    let tenant_wide = ops
        .set_quota(set("tenant-a", "", 4, 0))
        .await
        .expect("tenant quota")
        .into_inner();
    assert_eq!(tenant_wide.install_id, "");
    assert_eq!(tenant_wide.max_concurrency, 4);
    // An install is named by slug, registry id or install id.
    let per_install = ops
        .set_quota(set("tenant-a", "acme.app", 1, 10))
        .await
        .expect("install quota")
        .into_inner();
    assert_eq!(per_install.install_id, infos[0].install_id);
    let again = ops
        .set_quota(set("tenant-a", &infos[0].install_id, 2, 10))
        .await
        .expect("replace by install id")
        .into_inner();
    assert_eq!(again.max_concurrency, 2);

    for (req, expected, needle) in [
        (
            set("tenant-a", "", 0, 0),
            ErrorCode::InvalidArgument,
            "above 0",
        ),
        (
            set("tenant-a", "", 1_000_001, 0),
            ErrorCode::InvalidArgument,
            "max_concurrency",
        ),
        (
            set("tenant-a", "", 0, 2_000_000),
            ErrorCode::InvalidArgument,
            "requests_per_second",
        ),
        (
            set("tenant-a", "acme.nope", 1, 0),
            ErrorCode::InstallNotFound,
            "acme.nope",
        ),
        (
            set("tenant-b", "acme.app", 1, 0),
            ErrorCode::InstallNotFound,
            "tenant-b",
        ),
        (set("", "", 1, 0), ErrorCode::InvalidArgument, "tenant"),
    ] {
        let err = ops.set_quota(req).await.expect_err("refused");
        assert_eq!(code(&err), expected, "{}", err.message());
        assert!(err.message().contains(needle), "{}", err.message());
    }

    let list = ops
        .list_quotas(pb::ListQuotasRequest {
            tenant_id: "tenant-a".into(),
        })
        .await
        .expect("list")
        .into_inner()
        .quotas;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].install_id, "", "tenant-wide first");
    assert_eq!(list[1].max_concurrency, 2);

    // Edges and workers may not touch quotas.
    for role in [Role::Edge, Role::Worker] {
        let mut other = pb::installs_client::InstallsClient::new(server.channel(role).await);
        let err = other
            .set_quota(set("tenant-a", "", 100, 0))
            .await
            .expect_err("not an operator");
        assert_eq!(code(&err), ErrorCode::PermissionDenied, "{role}");
    }

    ops.delete_quota(pb::QuotaRef {
        tenant_id: "tenant-a".into(),
        extension: "acme.app".into(),
    })
    .await
    .expect("remove");
    let err = ops
        .delete_quota(pb::QuotaRef {
            tenant_id: "tenant-a".into(),
            extension: "acme.app".into(),
        })
        .await
        .expect_err("already gone");
    assert_eq!(code(&err), ErrorCode::NotFound);
    let left = ops
        .list_quotas(pb::ListQuotasRequest::default())
        .await
        .expect("list all")
        .into_inner()
        .quotas;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].max_concurrency, 4);
}

type Routes = tonic::Streaming<pb::RoutingUpdate>;

async fn watch(server: &ControlPlane, edge: &str) -> Routes {
    watch_as(server, Role::Edge, edge).await
}

async fn watch_as(server: &ControlPlane, role: Role, edge: &str) -> Routes {
    pb::dispatch_client::DispatchClient::new(server.channel(role).await)
        .watch_routes(pb::WatchRoutesRequest {
            edge_id: edge.into(),
        })
        .await
        .expect("watch")
        .into_inner()
}

/// Reads snapshots until one's quotas for `tenant` satisfy `want`.
async fn snapshot_until(
    routes: &mut Routes,
    want: impl Fn(&[pb::TenantQuota]) -> bool,
) -> pb::RoutingSnapshot {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let update = routes.message().await.expect("stream").expect("update");
            if let Some(pb::routing_update::Update::Snapshot(s)) = update.update
                && want(&s.quotas)
            {
                return s;
            }
        }
    })
    .await
    .expect("a matching snapshot within the deadline")
}

fn tenant_share(quotas: &[pb::TenantQuota], tenant: &str) -> Option<(u32, u32)> {
    quotas
        .iter()
        .find(|q| q.tenant_id == tenant && q.install_id.is_empty())
        .map(|q| (q.max_concurrency, q.requests_per_second))
}

#[tokio::test]
async fn snapshot_shares_split_across_edges_and_follow_quota_changes() {
    let (server, infos) = installed(&["t1"]).await;
    let mut ops = server.installs(Role::Operator).await;
    ops.set_quota(set("t1", "", 5, 9)).await.expect("set");
    ops.set_quota(set("t1", "acme.app", 0, 3))
        .await
        .expect("install");

    // An operator's tool following routes enforces nothing and does not count.
    let mut tool = watch_as(&server, Role::Operator, "tool").await;
    // One edge and this replica: each gets ceil(limit / 2).
    let mut e1 = watch(&server, "edge-1").await;
    let first = snapshot_until(&mut e1, |q| tenant_share(q, "t1") == Some((3, 5))).await;
    snapshot_until(&mut tool, |q| tenant_share(q, "t1") == Some((3, 5))).await;
    let install = first
        .quotas
        .iter()
        .find(|q| q.install_id == infos[0].install_id)
        .expect("the install's quota travels too");
    assert_eq!(
        (install.max_concurrency, install.requests_per_second),
        (0, 2)
    );

    // A second edge (same id: each stream counts): ceil(limit / 3).
    let mut e2 = watch(&server, "edge-1").await;
    let split = snapshot_until(&mut e1, |q| tenant_share(q, "t1") == Some((2, 3))).await;
    assert_ne!(
        split.version, first.version,
        "the version follows the shares"
    );
    snapshot_until(&mut e2, |q| tenant_share(q, "t1") == Some((2, 3))).await;

    // Raising the quota reaches both edges without reconnecting.
    ops.set_quota(set("t1", "", 30, 0)).await.expect("raise");
    snapshot_until(&mut e1, |q| tenant_share(q, "t1") == Some((10, 0))).await;
    snapshot_until(&mut e2, |q| tenant_share(q, "t1") == Some((10, 0))).await;

    // The second edge leaves: the first gets its part back.
    drop(e2);
    snapshot_until(&mut e1, |q| tenant_share(q, "t1") == Some((15, 0))).await;

    // Removed: no quota in the snapshot.
    ops.delete_quota(pb::QuotaRef {
        tenant_id: "t1".into(),
        extension: String::new(),
    })
    .await
    .expect("remove");
    snapshot_until(&mut e1, |q| tenant_share(q, "t1").is_none()).await;
}

#[tokio::test]
async fn dispatch_execute_respects_the_replicas_share() {
    let (server, _) = installed(&["t1", "t2"]).await;
    let mut ops = server.installs(Role::Operator).await;
    // One request per second across the fleet; this replica is the only participant.
    ops.set_quota(set("t1", "", 0, 1)).await.expect("set");
    let mut dispatch = pb::dispatch_client::DispatchClient::new(server.channel(Role::Edge).await);
    let call = |tenant: &str| pb::DispatchExecuteRequest {
        tenant_id: tenant.into(),
        extension: "acme.app".into(),
        http: Some(pb::HttpRequest {
            method: "GET".into(),
            path: "/".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // The first call is admitted (and finds no worker: there is none here).
    let first = dispatch.execute(call("t1")).await.expect_err("no worker");
    assert_eq!(code(&first), ErrorCode::Unavailable, "{}", first.message());
    let limited = dispatch.execute(call("t1")).await.expect_err("over quota");
    assert_eq!(code(&limited), ErrorCode::RateLimited);
    assert!(
        limited.message().contains("retry after"),
        "{}",
        limited.message()
    );
    // Another tenant is not affected.
    let other = dispatch.execute(call("t2")).await.expect_err("no worker");
    assert_eq!(code(&other), ErrorCode::Unavailable);
}

#[tokio::test]
async fn heartbeat_usage_adds_into_windows_read_back_by_get_usage() {
    let (server, infos) = installed(&["t1"]).await;
    let registry = infos[0].registry_id.clone();
    let mut fleet = pb::fleet_client::FleetClient::new(server.channel(Role::Worker).await);
    fleet
        .register(pb::RegisterWorkerRequest {
            worker_id: "w1".into(),
            address: "127.0.0.1:7001".into(),
            capacity: 4,
            engine_hash: "e".into(),
        })
        .await
        .expect("register");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let _commands = fleet
        .heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("heartbeat stream");
    let window = 1_750_000_020_000i64 - 1_750_000_020_000i64.rem_euclid(60_000);
    let usage = |n: u64, cpu: u64, window: i64| pb::ExecutionUsage {
        tenant_id: "t1".into(),
        registry_id: registry.clone(),
        invocations: n,
        cpu_us: cpu,
        memory_byte_ms: 100 * n,
        egress_bytes: 7 * n,
        fuel: 0,
        window_start_ms: window,
    };
    for beat in [
        vec![usage(2, 900, window)],
        vec![
            usage(3, 1_100, window),
            usage(1, 50, window + 60_000),
            // Malformed: dropped, the rest of the heartbeat still counts.
            pb::ExecutionUsage {
                registry_id: "not-a-uuid".into(),
                ..usage(100, 100, window)
            },
        ],
    ] {
        tx.send(pb::WorkerHeartbeat {
            worker_id: "w1".into(),
            capacity: 4,
            usage: beat,
            ..Default::default()
        })
        .await
        .expect("send");
    }
    let mut ops = server.installs(Role::Operator).await;
    let read = |extension: &str, since: Option<i64>| pb::GetUsageRequest {
        tenant_id: "t1".into(),
        extension: extension.into(),
        since: since.map(|unix_ms| pb::Timestamp { unix_ms }),
        until: None,
    };
    let windows = assert_eventually!(
        Duration::from_secs(5),
        async || {
            let windows = ops
                .get_usage(read("acme.app", None))
                .await
                .expect("usage")
                .into_inner()
                .windows;
            (windows.iter().map(|w| w.invocations).sum::<u64>() == 6).then_some(windows)
        },
        "usage windows adding up to the six heartbeat invocations"
    );
    assert_eq!(windows.len(), 2, "{windows:?}");
    assert_eq!(windows[0].window_start_ms, window);
    assert_eq!(windows[0].invocations, 5);
    assert_eq!(windows[0].cpu_us, 2_000);
    assert_eq!(windows[0].egress_bytes, 35);
    assert_eq!(windows[1].invocations, 1);
    // By registry id, from the second window on.
    let later = ops
        .get_usage(read(&registry, Some(window + 1)))
        .await
        .expect("since")
        .into_inner()
        .windows;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].cpu_us, 50);
    let err = ops
        .get_usage(read("acme.unknown", None))
        .await
        .expect_err("no such extension");
    assert_eq!(code(&err), ErrorCode::ExtensionNotFound);
    // Workers cannot read usage back.
    let err = pb::installs_client::InstallsClient::new(server.channel(Role::Worker).await)
        .get_usage(read("", None))
        .await
        .expect_err("worker role");
    assert_eq!(code(&err), ErrorCode::PermissionDenied);
}
