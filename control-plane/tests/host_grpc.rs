//! Host services over real mTLS: a worker presenting an execution grant
//! reaches exactly its install's storage and secrets, log events reach the
//! tenant's watchers, workers join the routing snapshot (bundles are placed
//! and prewarmed on one worker, spilling when it is busy), and API keys and
//! audit rows work for edges.

mod support;

use std::sync::Arc;

use annex_bundle::signing::KeyPair;
use annex_ops::Role;
use annex_proto::{ErrorCode, pb};
use annex_testkit::ControlPlane;
use support::{code, sign};
use tonic::transport::Channel;

const PUB: &str = "acme";

/// A server with `acme.app` installed for `tenants`, each with the given
/// capabilities declared by the version; returns the grants by tenant.
async fn installed(caps: &[&str], tenants: &[&str]) -> (ControlPlane, Vec<pb::ResolvedInstall>) {
    let server = support::start().await;
    let key = KeyPair::generate();
    server.trust_key(PUB, &key).await;
    let manifest = serde_json::json!({
        "name": "app", "publisher": PUB, "version": "1.0.0", "runtime": "wasm-js@1",
        "capabilities": caps,
        "api": {"endpoints": [{"method": "GET", "path": "/status", "handler": "h"}]}
    });
    let bytes = support::tar_zst(&[
        (
            "manifest.json",
            &serde_json::to_vec(&manifest).expect("json"),
        ),
        ("dist/main.wasm", support::EMPTY_COMPONENT),
    ]);
    server
        .publish(&bytes, &sign(&key, &bytes, PUB, "app", "1.0.0"))
        .await
        .expect("publish");
    let mut resolved = Vec::new();
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
        resolved.push(
            server
                .installs(Role::Edge)
                .await
                .resolve(pb::ResolveRequest {
                    tenant_id: tenant.to_string(),
                    extension: "acme.app".into(),
                })
                .await
                .expect("resolve")
                .into_inner(),
        );
    }
    (server, resolved)
}

async fn host(server: &ControlPlane) -> pb::host_services_client::HostServicesClient<Channel> {
    pb::host_services_client::HostServicesClient::new(server.channel(Role::Worker).await)
}

fn put(
    grant: &str,
    ns: &str,
    key: &str,
    value: &[u8],
    if_revision: Option<u64>,
) -> pb::StoragePutRequest {
    pb::StoragePutRequest {
        grant: grant.into(),
        namespace: ns.into(),
        key: key.into(),
        value: value.to_vec(),
        if_revision,
        ..Default::default()
    }
}

#[tokio::test]
async fn storage_is_scoped_to_the_grants_install_with_revisions_and_a_working_cursor() {
    let (server, resolved) = installed(&["cap:storage.kv"], &["tenant-a", "tenant-b"]).await;
    let (a, b) = (&resolved[0].execution_grant, &resolved[1].execution_grant);
    assert!(!a.is_empty());
    let mut host = host(&server).await;

    let first = host
        .storage_put(put(a, "ns", "k1", b"one", None))
        .await
        .expect("put")
        .into_inner();
    assert_eq!(first.revision, 1);
    let second = host
        .storage_put(put(a, "ns", "k1", b"two", Some(1)))
        .await
        .expect("cas")
        .into_inner();
    assert_eq!(second.revision, 2);
    let stale = host
        .storage_put(put(a, "ns", "k1", b"three", Some(1)))
        .await
        .expect_err("stale revision");
    assert_eq!(code(&stale), ErrorCode::RevisionMismatch);
    let got = host
        .storage_get(pb::StorageGetRequest {
            grant: a.clone(),
            namespace: "ns".into(),
            key: "k1".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(got.value, b"two");
    assert_eq!(got.metadata_json, r#"{"encoding":"base64-bytes"}"#);

    // Tenant B's grant sees nothing of tenant A's.
    let miss = host
        .storage_get(pb::StorageGetRequest {
            grant: b.clone(),
            namespace: "ns".into(),
            key: "k1".into(),
        })
        .await
        .expect_err("another install's key");
    assert_eq!(code(&miss), ErrorCode::NotFound);

    // Pages of 2 over 5 keys, following the returned cursor.
    for i in 2..=5 {
        host.storage_put(put(a, "ns", &format!("k{i}"), b"v", None))
            .await
            .expect("put");
    }
    let mut keys = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = host
            .storage_list(pb::StorageListRequest {
                grant: a.clone(),
                namespace: "ns".into(),
                cursor: cursor.clone(),
                limit: 2,
                key_prefix: String::new(),
            })
            .await
            .expect("list")
            .into_inner();
        keys.extend(page.records.iter().map(|r| r.key.clone()));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(keys, ["k1", "k2", "k3", "k4", "k5"]);

    let deleted = host
        .storage_delete(pb::StorageDeleteRequest {
            grant: a.clone(),
            namespace: "ns".into(),
            key: "k1".into(),
            if_revision: None,
        })
        .await
        .expect("delete")
        .into_inner();
    assert!(deleted.deleted);

    // Tampered or foreign grants are refused.
    let mut forged = a.clone();
    forged.pop();
    let status = host
        .storage_put(put(&forged, "ns", "x", b"v", None))
        .await
        .expect_err("forged grant");
    assert_eq!(code(&status), ErrorCode::GrantInvalid);
    // An edge certificate cannot call host services as a worker.
    let mut edge =
        pb::host_services_client::HostServicesClient::new(server.channel(Role::Edge).await);
    let status = edge
        .storage_put(put(a, "ns", "x", b"v", None))
        .await
        .expect_err("edge role");
    assert_eq!(code(&status), ErrorCode::PermissionDenied);
}

#[tokio::test]
async fn grants_carry_only_the_installs_capabilities() {
    let (server, resolved) = installed(&[], &["t"]).await;
    let grant = &resolved[0].execution_grant;
    let mut host = host(&server).await;
    let status = host
        .storage_put(put(grant, "ns", "k", b"v", None))
        .await
        .expect_err("no cap:storage.kv");
    assert_eq!(code(&status), ErrorCode::PermissionDenied);
    let status = host
        .get_secrets(pb::GetSecretsRequest {
            grant: grant.clone(),
        })
        .await
        .expect_err("no cap:secrets.get");
    assert_eq!(code(&status), ErrorCode::PermissionDenied);
}

#[tokio::test]
async fn secrets_reach_the_worker_opened_and_disabled_installs_lose_access() {
    let (server, resolved) = installed(&["cap:secrets.get", "cap:storage.kv"], &["t"]).await;
    let grant = resolved[0].execution_grant.clone();
    let mut ops = server.installs(Role::Operator).await;
    ops.set_secrets(pb::SetSecretsRequest {
        install: Some(pb::InstallRef {
            tenant_id: "t".into(),
            extension: "acme.app".into(),
        }),
        secrets: [("api_key".to_string(), "k-1".to_string())].into(),
        clear: false,
        expires_at: None,
    })
    .await
    .expect("set secrets");
    let mut host = host(&server).await;
    let secrets = host
        .get_secrets(pb::GetSecretsRequest {
            grant: grant.clone(),
        })
        .await
        .expect("secrets")
        .into_inner();
    assert_eq!(
        secrets.values.get("api_key").map(String::as_str),
        Some("k-1")
    );
    assert!(!secrets.version.is_empty());

    ops.disable(pb::InstallRef {
        tenant_id: "t".into(),
        extension: "acme.app".into(),
    })
    .await
    .expect("disable");
    let status = host
        .get_secrets(pb::GetSecretsRequest {
            grant: grant.clone(),
        })
        .await
        .expect_err("disabled");
    assert_eq!(code(&status), ErrorCode::InstallNotFound);
    let status = host
        .storage_put(put(&grant, "ns", "k", b"v", None))
        .await
        .expect_err("disabled");
    assert_eq!(code(&status), ErrorCode::GrantInvalid);
}

/// Two replicas over one database: a disable made through one reaches the
/// other's host-call checks within the bound its answers are kept for (1 s),
/// though the other had just answered for the install.
#[tokio::test]
async fn a_disable_through_another_replica_stops_host_calls_within_a_second() {
    let (server, resolved) = installed(&["cap:storage.kv"], &["t"]).await;
    let grant = resolved[0].execution_grant.clone();
    let other = ControlPlane::start_with(annex_testkit::ControlPlaneOptions {
        store: annex_testkit::StoreChoice::Given(server.store.clone()),
        ..Default::default()
    })
    .await;
    let mut there = host(&other).await;
    there
        .storage_put(put(&grant, "ns", "k", b"v", None))
        .await
        .expect("the other replica answers for the active install");

    server
        .installs(Role::Operator)
        .await
        .disable(pb::InstallRef {
            tenant_id: "t".into(),
            extension: "acme.app".into(),
        })
        .await
        .expect("disable");
    let status = host(&server)
        .await
        .storage_put(put(&grant, "ns", "k", b"v", None))
        .await
        .expect_err("refused at once where the change was made");
    assert_eq!(code(&status), ErrorCode::GrantInvalid);
    let refused = annex_testkit::assert_eventually!(
        std::time::Duration::from_secs(3),
        async || {
            match there
                .clone()
                .storage_put(put(&grant, "ns", "k", b"v", None))
                .await
            {
                Err(status) => Some(code(&status)),
                Ok(_) => None,
            }
        },
        "the other replica to refuse the disabled install"
    );
    assert_eq!(refused, ErrorCode::GrantInvalid);
}

#[tokio::test]
async fn secrets_past_their_expiry_read_as_absent() {
    let (server, resolved) = installed(&["cap:secrets.get"], &["t"]).await;
    let grant = resolved[0].execution_grant.clone();
    let install = pb::InstallRef {
        tenant_id: "t".into(),
        extension: "acme.app".into(),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let mut ops = server.installs(Role::Operator).await;
    let set = |expires_ms: i64| pb::SetSecretsRequest {
        install: Some(install.clone()),
        secrets: [("api_key".to_string(), "k-1".to_string())].into(),
        clear: true,
        expires_at: Some(pb::Timestamp {
            unix_ms: expires_ms,
        }),
    };
    // Not expired yet: the worker gets the value.
    ops.set_secrets(set(now_ms + 3_600_000))
        .await
        .expect("set secrets");
    let mut host = host(&server).await;
    let get = pb::GetSecretsRequest {
        grant: grant.clone(),
    };
    let secrets = host.get_secrets(get.clone()).await.expect("secrets");
    assert_eq!(secrets.into_inner().values.len(), 1);
    // Expired a minute ago: the worker gets nothing (the guest sees
    // `missing`), the operator sees the keys marked expired.
    ops.set_secrets(set(now_ms - 60_000))
        .await
        .expect("set secrets");
    let secrets = host.get_secrets(get).await.expect("secrets").into_inner();
    assert!(secrets.values.is_empty(), "{:?}", secrets.values.keys());
    let keys = server
        .installs(Role::Operator)
        .await
        .list_secret_keys(install)
        .await
        .expect("keys")
        .into_inner();
    assert_eq!(keys.keys, ["api_key"]);
    assert!(keys.expired);
    assert_eq!(keys.expires_at.map(|t| t.unix_ms), Some(now_ms - 60_000));
}

#[tokio::test]
async fn log_events_reach_only_their_tenants_watchers() {
    let (server, resolved) = installed(&[], &["t1"]).await;
    let ext = resolved[0]
        .install
        .as_ref()
        .expect("install")
        .registry_id
        .clone();
    let mut watcher =
        pb::host_services_client::HostServicesClient::new(server.channel(Role::Edge).await)
            .watch_logs(pb::WatchLogsRequest {
                tenant_id: "t1".into(),
                extension_id: ext.clone(),
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();
    let event = |tenant: &str, message: &str| pb::LogEvent {
        tenant_id: tenant.into(),
        extension_id: ext.clone(),
        level: "info".into(),
        stream: "log".into(),
        message: message.into(),
        ..Default::default()
    };
    let mut host = host(&server).await;
    // The watch is registered once the call returns; publish after it.
    host.publish_logs(pb::LogBatch {
        events: vec![event("t2", "other tenant"), event("t1", "hello")],
    })
    .await
    .expect("publish");
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), watcher.message())
        .await
        .expect("an event within the deadline")
        .expect("stream")
        .expect("event");
    assert_eq!(got.message, "hello");
    assert_eq!(got.tenant_id, "t1");
}

#[tokio::test]
async fn registered_workers_appear_in_the_routing_snapshot_until_they_drain() {
    let server = support::start().await;
    let mut fleet = pb::fleet_client::FleetClient::new(server.channel(Role::Worker).await);
    fleet
        .register(pb::RegisterWorkerRequest {
            worker_id: "w1".into(),
            address: "127.0.0.1:7001".into(),
            capacity: 8,
            engine_hash: "e".into(),
        })
        .await
        .expect("register");
    let mut routes = pb::dispatch_client::DispatchClient::new(server.channel(Role::Edge).await)
        .watch_routes(pb::WatchRoutesRequest {
            edge_id: "edge-1".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let snapshot = |u: pb::RoutingUpdate| match u.update {
        Some(pb::routing_update::Update::Snapshot(s)) => Some(s),
        _ => None,
    };
    let first = loop {
        let update = routes.message().await.expect("stream").expect("update");
        if let Some(s) = snapshot(update) {
            break s;
        }
    };
    assert_eq!(first.workers.len(), 1);
    assert_eq!(first.workers[0].address, "127.0.0.1:7001");

    // The worker says it is draining: it leaves the snapshot.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let _commands = fleet
        .heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("heartbeat stream");
    tx.send(pb::WorkerHeartbeat {
        worker_id: "w1".into(),
        capacity: 8,
        draining: true,
        ..Default::default()
    })
    .await
    .expect("send");
    let drained = loop {
        let update = tokio::time::timeout(std::time::Duration::from_secs(10), routes.message())
            .await
            .expect("a new snapshot within the deadline")
            .expect("stream")
            .expect("update");
        if let Some(s) = snapshot(update) {
            break s;
        }
    };
    assert!(drained.workers.is_empty());

    // An edge cannot register as a worker.
    let status = pb::fleet_client::FleetClient::new(server.channel(Role::Edge).await)
        .register(pb::RegisterWorkerRequest {
            worker_id: "x".into(),
            address: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .expect_err("edge role");
    assert_eq!(code(&status), ErrorCode::PermissionDenied);
}

#[tokio::test]
async fn api_keys_authenticate_until_revoked_and_audit_rows_are_stored() {
    let (server, resolved) = installed(&[], &["t"]).await;
    let install = resolved[0].install.clone().expect("install");
    let mut ops = server.installs(Role::Operator).await;
    let created = ops
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id: "t".into(),
            name: "ci".into(),
            permissions: vec!["extension:read".into()],
        })
        .await
        .expect("create")
        .into_inner();
    assert!(created.secret.starts_with("annex_"));
    let mut dispatch = pb::dispatch_client::DispatchClient::new(server.channel(Role::Edge).await);
    let principal = dispatch
        .authenticate_api_key(pb::AuthenticateApiKeyRequest {
            secret: created.secret.clone(),
        })
        .await
        .expect("authenticate")
        .into_inner();
    assert_eq!(principal.tenant_id, "t");
    assert_eq!(principal.permissions, ["extension:read"]);
    let mut wrong = created.secret.clone();
    wrong.push('x');
    let status = dispatch
        .authenticate_api_key(pb::AuthenticateApiKeyRequest { secret: wrong })
        .await
        .expect_err("wrong secret");
    assert_eq!(code(&status), ErrorCode::Unauthenticated);
    let key_id = created.key.expect("key").id;
    ops.revoke_api_key(pb::RevokeApiKeyRequest {
        tenant_id: "t".into(),
        id: key_id,
    })
    .await
    .expect("revoke");
    let status = dispatch
        .authenticate_api_key(pb::AuthenticateApiKeyRequest {
            secret: created.secret,
        })
        .await
        .expect_err("revoked");
    assert_eq!(code(&status), ErrorCode::Unauthenticated);

    let now = chrono::Utc::now().timestamp_millis();
    dispatch
        .record_executions(pb::ExecutionRecords {
            records: vec![pb::ExecutionRecord {
                tenant_id: "t".into(),
                registry_id: install.registry_id.clone(),
                version_id: install.version_id.clone(),
                request_id: "r-1".into(),
                started_at_ms: now,
                finished_at_ms: now + 3,
                status: "ok".into(),
                metrics_json: r#"{"method":"GET","path":"/status","http_status":200}"#.into(),
                ..Default::default()
            }],
        })
        .await
        .expect("record");
    let rows = server
        .store
        .list_executions("t", install.registry_id.parse().expect("uuid"), 10)
        .await
        .expect("list");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].request_id.as_deref(), Some("r-1"));
    assert_eq!(rows[0].metrics["http_status"], 200);
}

#[tokio::test]
async fn installing_asks_connected_workers_to_prewarm_the_bundle() {
    let server = support::start().await;
    let key = KeyPair::generate();
    server.trust_key(PUB, &key).await;
    let bytes = support::valid_bundle(PUB, "warm", "1.0.0");
    let version = server
        .publish(&bytes, &sign(&key, &bytes, PUB, "warm", "1.0.0"))
        .await
        .expect("publish")
        .version
        .expect("version");
    let mut fleet = pb::fleet_client::FleetClient::new(server.channel(Role::Worker).await);
    fleet
        .register(pb::RegisterWorkerRequest {
            worker_id: "w1".into(),
            address: "127.0.0.1:7001".into(),
            capacity: 8,
            engine_hash: "e".into(),
        })
        .await
        .expect("register");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WorkerHeartbeat {
        worker_id: "w1".into(),
        capacity: 8,
        ..Default::default()
    })
    .await
    .expect("send");
    let mut commands = fleet
        .heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("heartbeat stream")
        .into_inner();
    server
        .installs(Role::Operator)
        .await
        .install(pb::InstallRequest {
            tenant_id: "t".into(),
            extension: "acme.warm".into(),
            ..Default::default()
        })
        .await
        .expect("install");
    let command = tokio::time::timeout(std::time::Duration::from_secs(10), commands.message())
        .await
        .expect("a command within the deadline")
        .expect("stream")
        .expect("command");
    assert_eq!(
        command.command,
        Some(pb::fleet_command::Command::PrewarmContentHash(
            version.content_hash
        ))
    );
    drop(tx);
}

/// A worker's registration and heartbeat stream, as a worker holds them:
/// a heartbeat every 300 ms with the current `in_flight`.
struct FakeWorker {
    in_flight: Arc<std::sync::atomic::AtomicU32>,
    commands: tonic::Streaming<pb::FleetCommand>,
}

async fn join_fleet(server: &ControlPlane, id: &str) -> FakeWorker {
    let mut fleet = pb::fleet_client::FleetClient::new(server.channel(Role::Worker).await);
    fleet
        .register(pb::RegisterWorkerRequest {
            worker_id: id.into(),
            address: format!("127.0.0.1:{}", 7000 + id.len()),
            capacity: 10,
            engine_hash: "e".into(),
        })
        .await
        .expect("register");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WorkerHeartbeat {
        worker_id: id.into(),
        capacity: 10,
        ..Default::default()
    })
    .await
    .expect("send");
    let commands = fleet
        .heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("heartbeat stream")
        .into_inner();
    let in_flight = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let load = in_flight.clone();
    let id = id.to_owned();
    tokio::spawn(async move {
        // The worker's heartbeat cadence (the stimulus, not a wait): the
        // first beat was sent above, the next ones every 300 ms.
        let period = std::time::Duration::from_millis(300);
        let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            beats.tick().await;
            let hb = pb::WorkerHeartbeat {
                worker_id: id.clone(),
                capacity: 10,
                in_flight: load.load(std::sync::atomic::Ordering::SeqCst),
                ..Default::default()
            };
            if tx.send(hb).await.is_err() {
                return;
            }
        }
    });
    FakeWorker {
        in_flight,
        commands,
    }
}

/// The next snapshot on `routes` that satisfies `want`.
async fn snapshot_where(
    routes: &mut tonic::Streaming<pb::RoutingUpdate>,
    want: impl Fn(&pb::RoutingSnapshot) -> bool,
) -> pb::RoutingSnapshot {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let update = routes.message().await.expect("stream").expect("update");
            if let Some(pb::routing_update::Update::Snapshot(s)) = update.update
                && want(&s)
            {
                return s;
            }
        }
    })
    .await
    .expect("a matching snapshot within the deadline")
}

#[tokio::test]
async fn a_bundle_is_placed_on_one_worker_prewarmed_there_and_spills_when_it_is_busy() {
    let server = support::start().await;
    let key = KeyPair::generate();
    server.trust_key(PUB, &key).await;
    let bytes = support::valid_bundle(PUB, "placed", "1.0.0");
    let hash = server
        .publish(&bytes, &sign(&key, &bytes, PUB, "placed", "1.0.0"))
        .await
        .expect("publish")
        .version
        .expect("version")
        .content_hash;
    let mut workers = Vec::new();
    for id in ["w-a", "w-bb", "w-ccc"] {
        workers.push((id, join_fleet(&server, id).await));
    }
    let mut routes = pb::dispatch_client::DispatchClient::new(server.channel(Role::Edge).await)
        .watch_routes(pb::WatchRoutesRequest {
            edge_id: "edge-1".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    snapshot_where(&mut routes, |s| s.workers.len() == 3).await;

    server
        .installs(Role::Operator)
        .await
        .install(pb::InstallRequest {
            tenant_id: "t".into(),
            extension: "acme.placed".into(),
            ..Default::default()
        })
        .await
        .expect("install");
    let placed = snapshot_where(&mut routes, |s| {
        s.placements.iter().any(|p| p.content_hash == hash)
    })
    .await;
    let ids = &placed
        .placements
        .iter()
        .find(|p| p.content_hash == hash)
        .expect("placement")
        .worker_ids;
    assert_eq!(ids.len(), 1, "one worker while it has room: {ids:?}");
    let first = ids[0].clone();
    let prewarm = Some(pb::fleet_command::Command::PrewarmContentHash(hash.clone()));

    // Only the placed worker is asked to compile it.
    for (id, w) in &mut workers {
        let next = tokio::time::timeout(
            std::time::Duration::from_millis(if *id == first { 10_000 } else { 1_500 }),
            w.commands.message(),
        )
        .await;
        if *id == first {
            let cmd = next.expect("prewarm").expect("stream").expect("command");
            assert_eq!(cmd.command, prewarm);
        } else {
            assert!(next.is_err(), "{id} got a command: {next:?}");
        }
    }

    // The placed worker at 80 % of its capacity: the next ranked worker is
    // placed too, and asked to compile it.
    workers
        .iter()
        .find(|(id, _)| *id == first)
        .expect("placed worker")
        .1
        .in_flight
        .store(8, std::sync::atomic::Ordering::SeqCst);
    let spilled = snapshot_where(&mut routes, |s| {
        s.placements
            .iter()
            .any(|p| p.content_hash == hash && p.worker_ids.len() == 2)
    })
    .await;
    let ids = spilled
        .placements
        .iter()
        .find(|p| p.content_hash == hash)
        .expect("placement")
        .worker_ids
        .clone();
    assert_eq!(ids[0], first, "the preferred worker stays first");
    let second = &ids[1];
    let (_, w) = workers
        .iter_mut()
        .find(|(id, _)| id == second)
        .expect("second worker");
    let cmd = tokio::time::timeout(std::time::Duration::from_secs(10), w.commands.message())
        .await
        .expect("prewarm on spill")
        .expect("stream")
        .expect("command");
    assert_eq!(cmd.command, prewarm);
}

fn claim(grant: &str, key: &str, body: &str, token: &str) -> pb::IdempotencyClaimRequest {
    use sha2::Digest as _;
    pb::IdempotencyClaimRequest {
        grant: grant.into(),
        key: key.into(),
        request_hash: format!("sha256:{}", hex::encode(sha2::Sha256::digest(body))),
        claim_token: token.into(),
        lease_ms: 10_000,
    }
}

fn lease(grant: &str, key: &str, token: &str) -> pb::IdempotencyLeaseRequest {
    pb::IdempotencyLeaseRequest {
        grant: grant.into(),
        key: key.into(),
        claim_token: token.into(),
        lease_ms: 10_000,
    }
}

#[tokio::test]
async fn idempotency_records_are_the_grants_installs_and_workers_only() {
    use pb::idempotency_claim_response::State;
    let (server, resolved) = installed(&[], &["tenant-a", "tenant-b"]).await;
    let (a, b) = (&resolved[0].execution_grant, &resolved[1].execution_grant);
    let mut host = host(&server).await;
    let (t1, t2) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );

    let first = host
        .idempotency_claim(claim(a, "k", "r", &t1))
        .await
        .expect("claim");
    assert_eq!(first.into_inner().state(), State::Claimed);
    let busy = host
        .idempotency_claim(claim(a, "k", "r", &t2))
        .await
        .expect("claim")
        .into_inner();
    assert_eq!(busy.state(), State::InProgress);
    assert!(busy.lease_expires_at.is_some());
    assert_eq!(
        host.idempotency_claim(claim(a, "k", "other", &t2))
            .await
            .expect("claim")
            .into_inner()
            .state(),
        State::Conflict
    );
    // Tenant B's grant names another install: the same key is its own record.
    assert_eq!(
        host.idempotency_claim(claim(b, "k", "r", &t2))
            .await
            .expect("claim")
            .into_inner()
            .state(),
        State::Claimed
    );
    assert!(
        !host
            .idempotency_renew(lease(a, "k", &t2))
            .await
            .expect("renew")
            .into_inner()
            .owned,
        "only the claimant renews"
    );
    assert!(
        host.idempotency_renew(lease(a, "k", &t1))
            .await
            .expect("renew")
            .into_inner()
            .owned
    );
    let response = pb::IdempotentResponse {
        status: 201,
        headers: [("content-type".to_owned(), "text/plain".to_owned())].into(),
        body: Some(b"made".to_vec()),
        not_kept: false,
    };
    let complete = |token: &str, response: pb::IdempotentResponse| pb::IdempotencyCompleteRequest {
        grant: a.clone(),
        key: "k".into(),
        claim_token: token.into(),
        response: Some(response),
    };
    let too_big = pb::IdempotentResponse {
        body: Some(vec![0; annex_proto::domain::MAX_IDEMPOTENT_BODY_BYTES + 1]),
        ..response.clone()
    };
    let refused = host
        .idempotency_complete(complete(&t1, too_big))
        .await
        .expect_err("over the bound");
    assert_eq!(code(&refused), ErrorCode::LimitExceeded);
    assert!(
        !host
            .idempotency_complete(complete(&t2, response.clone()))
            .await
            .expect("complete")
            .into_inner()
            .owned
    );
    assert!(
        host.idempotency_complete(complete(&t1, response.clone()))
            .await
            .expect("complete")
            .into_inner()
            .owned
    );
    let replay = host
        .idempotency_claim(claim(a, "k", "r", &t2))
        .await
        .expect("claim")
        .into_inner();
    assert_eq!(replay.state(), State::Completed);
    assert_eq!(replay.response, Some(response));
    // A key longer than the column is kept by its digest, not refused.
    let long = "k".repeat(1_000);
    assert_eq!(
        host.idempotency_claim(claim(a, &long, "r", &t1))
            .await
            .expect("claim")
            .into_inner()
            .state(),
        State::Claimed
    );
    assert!(
        host.idempotency_release(lease(a, &long, &t1))
            .await
            .expect("release")
            .into_inner()
            .owned
    );

    // Malformed input, a forged grant and other roles are refused.
    let mut bad = claim(a, "k2", "r", "not-a-uuid");
    assert_eq!(
        code(
            &host
                .idempotency_claim(bad.clone())
                .await
                .expect_err("token")
        ),
        ErrorCode::InvalidArgument
    );
    bad.claim_token = t1.clone();
    bad.request_hash = "md5:abc".into();
    assert_eq!(
        code(&host.idempotency_claim(bad).await.expect_err("hash")),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(
            &host
                .idempotency_claim(claim("v1.forged.tag", "k", "r", &t1))
                .await
                .expect_err("forged")
        ),
        ErrorCode::GrantInvalid
    );
    for role in [Role::Edge, Role::Operator] {
        let mut other =
            pb::host_services_client::HostServicesClient::new(server.channel(role).await);
        let denied = other
            .idempotency_claim(claim(a, "k", "r", &t1))
            .await
            .expect_err("workers only");
        assert_eq!(code(&denied), ErrorCode::PermissionDenied, "{role:?}");
    }

    // A disabled install claims nothing.
    server
        .installs(Role::Operator)
        .await
        .disable(pb::InstallRef {
            tenant_id: "tenant-a".into(),
            extension: "acme.app".into(),
        })
        .await
        .expect("disable");
    let inactive = host
        .idempotency_claim(claim(a, "k3", "r", &t1))
        .await
        .expect_err("inactive install");
    assert_eq!(code(&inactive), ErrorCode::GrantInvalid);
}
