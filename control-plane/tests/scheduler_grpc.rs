//! The scheduler's host API over real mTLS (docs/design/alga-compatibility.md,
//! "Host APIs"), called as a worker with the execution grant the edge gets
//! from Installs.Resolve: create, list,
//! get, update, delete and get-endpoints; every validation failure with its
//! field error; the quota and the mutation rate limit; isolation between
//! installs; the capability check; the upgrade remap and uninstall.

mod support;

use annex_bundle::signing::KeyPair;
use annex_control_plane::{Limits, SchedulerLimits};
use annex_ops::Role;
use annex_proto::{ErrorCode, pb};
use annex_testkit::ControlPlane;
use pb::host_services_client::HostServicesClient;
use serde_json::json;
use support::{EMPTY_COMPONENT, code, sign, tar_zst};
use tonic::transport::Channel;

const PUB: &str = "acme";

type Host = HostServicesClient<Channel>;

/// A bundle of `name`@`version` declaring `endpoints` and `capabilities`.
fn bundle(name: &str, version: &str, endpoints: &[(&str, &str)], capabilities: &[&str]) -> Vec<u8> {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|(method, path)| json!({"method": method, "path": path, "handler": "dist/main"}))
        .collect();
    let manifest = json!({
        "name": name,
        "publisher": PUB,
        "version": version,
        "runtime": "wasm-js@1",
        "capabilities": capabilities,
        "api": {"endpoints": endpoints},
    });
    tar_zst(&[
        (
            "manifest.json",
            &serde_json::to_vec(&manifest).expect("json"),
        ),
        ("dist/main.wasm", EMPTY_COMPONENT),
    ])
}

const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/status"),
    ("POST", "/sync"),
    ("GET", "/items/:id"),
    ("DELETE", "/items"),
];
const SCHEDULER: &[&str] = &["cap:scheduler.manage"];

struct Fixture {
    server: ControlPlane,
    key: KeyPair,
    host: Host,
}

impl Fixture {
    /// A control plane whose rate limit stays out of the way unless given.
    async fn start(limits: SchedulerLimits) -> Fixture {
        let server = support::start_with(Limits {
            scheduler: limits,
            ..Limits::default()
        })
        .await;
        let key = KeyPair::generate();
        server.trust_key(PUB, &key).await;
        let host = HostServicesClient::new(server.channel(Role::Worker).await);
        Fixture { server, key, host }
    }

    async fn roomy() -> Fixture {
        Self::start(SchedulerLimits {
            mutations_per_window: 10_000,
            ..SchedulerLimits::default()
        })
        .await
    }

    async fn publish(&self, name: &str, version: &str, endpoints: &[(&str, &str)], caps: &[&str]) {
        let bytes = bundle(name, version, endpoints, caps);
        self.server
            .publish(&bytes, &sign(&self.key, &bytes, PUB, name, version))
            .await
            .expect("publish");
    }

    /// Installs `name` for `tenant` and returns the edge's execution grant.
    async fn install(&self, tenant: &str, name: &str, version: &str) -> String {
        self.server
            .installs(Role::Operator)
            .await
            .install(pb::InstallRequest {
                tenant_id: tenant.into(),
                extension: format!("{PUB}.{name}"),
                version: version.into(),
                ..Default::default()
            })
            .await
            .expect("install");
        self.grant(tenant, name).await
    }

    async fn grant(&self, tenant: &str, name: &str) -> String {
        self.server
            .installs(Role::Edge)
            .await
            .resolve(pb::ResolveRequest {
                tenant_id: tenant.into(),
                extension: format!("{PUB}.{name}"),
            })
            .await
            .expect("resolve")
            .into_inner()
            .execution_grant
    }

    async fn install_id(&self, tenant: &str, name: &str) -> uuid::Uuid {
        let resolved = self
            .server
            .installs(Role::Edge)
            .await
            .resolve(pb::ResolveRequest {
                tenant_id: tenant.into(),
                extension: format!("{PUB}.{name}"),
            })
            .await
            .expect("resolve")
            .into_inner();
        let id = resolved.install.expect("install").install_id;
        uuid::Uuid::parse_str(&id).expect("uuid")
    }

    /// A published, installed extension with the scheduler capability.
    async fn app(&self, tenant: &str) -> String {
        self.publish("app", "1.0.0", ENDPOINTS, SCHEDULER).await;
        self.install(tenant, "app", "1.0.0").await
    }

    async fn create(&self, request: pb::CreateScheduleRequest) -> pb::ScheduleMutationResult {
        self.host
            .clone()
            .create_schedule(request)
            .await
            .expect("create call")
            .into_inner()
    }

    async fn created(&self, request: pb::CreateScheduleRequest) -> String {
        let result = self.create(request).await;
        assert!(result.success, "{result:?}");
        result.schedule_id.expect("schedule id")
    }

    async fn update(&self, request: pb::UpdateScheduleRequest) -> pb::ScheduleMutationResult {
        self.host
            .clone()
            .update_schedule(request)
            .await
            .expect("update call")
            .into_inner()
    }

    async fn delete(&self, grant: &str, id: &str) -> pb::ScheduleMutationResult {
        self.host
            .clone()
            .delete_schedule(pb::DeleteScheduleRequest {
                grant: grant.into(),
                schedule_id: id.into(),
            })
            .await
            .expect("delete call")
            .into_inner()
    }

    async fn list(&self, grant: &str) -> Vec<pb::ScheduleInfo> {
        self.host
            .clone()
            .list_schedules(pb::ListSchedulesRequest {
                grant: grant.into(),
            })
            .await
            .expect("list")
            .into_inner()
            .schedules
    }

    async fn get(&self, grant: &str, id: &str) -> Option<pb::ScheduleInfo> {
        self.host
            .clone()
            .get_schedule(pb::GetScheduleRequest {
                grant: grant.into(),
                schedule_id: id.into(),
            })
            .await
            .expect("get")
            .into_inner()
            .schedule
    }
}

fn every_10_min(grant: &str, endpoint: &str) -> pb::CreateScheduleRequest {
    pb::CreateScheduleRequest {
        grant: grant.into(),
        endpoint: endpoint.into(),
        cron: "*/10 * * * *".into(),
        ..Default::default()
    }
}

fn failed(error: &str, field: Option<&str>) -> pb::ScheduleMutationResult {
    pb::ScheduleMutationResult {
        success: false,
        schedule_id: None,
        error: Some(error.into()),
        field_errors: field.map(|f| json!({ f: error }).to_string()),
    }
}

#[tokio::test]
async fn schedules_are_created_listed_read_updated_and_deleted() {
    let f = Fixture::roomy().await;
    let grant = f.app("tenant-a").await;

    let nightly = f
        .created(pb::CreateScheduleRequest {
            grant: grant.clone(),
            endpoint: "POST /sync".into(),
            cron: " 0 2 * * * ".into(),
            timezone: Some("Europe/Berlin".into()),
            enabled: Some(true),
            name: Some(" nightly ".into()),
            payload_json: Some(r#"{"full": true}"#.into()),
        })
        .await;
    let status = f.created(every_10_min(&grant, "/status")).await;

    let listed = f.list(&grant).await;
    let ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [nightly.as_str(), status.as_str()], "oldest first");
    let first = &listed[0];
    assert_eq!(
        (first.endpoint_method.as_str(), first.endpoint_path.as_str()),
        ("POST", "/sync")
    );
    assert_eq!(first.name.as_deref(), Some("nightly"));
    assert_eq!(
        (first.cron.as_str(), first.timezone.as_str()),
        ("0 2 * * *", "Europe/Berlin")
    );
    assert!(first.enabled);
    assert_eq!(first.payload_json.as_deref(), Some(r#"{"full":true}"#));
    assert_eq!(
        (
            first.last_run_at.as_deref(),
            first.last_run_status.as_deref()
        ),
        (None, None)
    );
    let created_at = first.created_at.as_deref().expect("created_at");
    assert!(
        created_at.ends_with('Z') && created_at.len() == 24,
        "{created_at}"
    );
    let second = &listed[1];
    assert_eq!(
        (second.endpoint_method.as_str(), second.timezone.as_str()),
        ("GET", "UTC")
    );
    assert_eq!(
        (second.name.as_deref(), second.payload_json.as_deref()),
        (None, None)
    );
    assert_eq!(f.get(&grant, &nightly).await.as_ref(), Some(first));

    // The store keeps when each enabled schedule runs next.
    let install_id = f.install_id("tenant-a", "app").await;
    let next_run = |id: &str| {
        let store = f.server.store.clone();
        let id = uuid::Uuid::parse_str(id).expect("uuid");
        async move {
            let row = store
                .get_schedule("tenant-a", install_id, id)
                .await
                .expect("get");
            row.expect("stored").fields.next_run_at
        }
    };
    let next = next_run(&nightly)
        .await
        .expect("an enabled schedule has a next run");
    assert!(next > chrono::Utc::now());
    assert_eq!(next.format("%M").to_string(), "00");

    let updated = f
        .update(pb::UpdateScheduleRequest {
            grant: grant.clone(),
            schedule_id: nightly.clone(),
            cron: Some("30 3 * * 1-5".into()),
            enabled: Some(false),
            name: Some(String::new()),
            payload_json: Some("null".into()),
            endpoint: Some("GET /status".into()),
            // Empty keeps the zone.
            timezone: Some(String::new()),
        })
        .await;
    assert_eq!(
        updated,
        pb::ScheduleMutationResult {
            success: true,
            ..Default::default()
        }
    );
    let after = f.get(&grant, &nightly).await.expect("still there");
    assert_eq!(
        (after.cron.as_str(), after.timezone.as_str()),
        ("30 3 * * 1-5", "Europe/Berlin")
    );
    assert_eq!(
        (after.endpoint_method.as_str(), after.endpoint_path.as_str()),
        ("GET", "/status")
    );
    assert!(!after.enabled);
    assert_eq!(
        next_run(&nightly).await,
        None,
        "a disabled schedule does not run"
    );
    assert_eq!((after.name, after.payload_json), (None, None));
    assert_eq!(after.created_at.as_deref(), Some(created_at));

    let deleted = f.delete(&grant, &nightly).await;
    assert!(deleted.success && deleted.error.is_none(), "{deleted:?}");
    assert_eq!(f.get(&grant, &nightly).await, None);
    assert_eq!(
        f.delete(&grant, &nightly).await,
        failed("Schedule not found", None)
    );
    let left: Vec<String> = f.list(&grant).await.into_iter().map(|s| s.id).collect();
    assert_eq!(left, [status]);

    // Endpoints of the installed version, by path, with what can be scheduled.
    let endpoints = f
        .host
        .clone()
        .get_endpoints(pb::GetEndpointsRequest {
            grant: grant.clone(),
        })
        .await
        .expect("endpoints")
        .into_inner()
        .endpoints;
    let seen: Vec<(&str, &str, bool)> = endpoints
        .iter()
        .map(|e| (e.method.as_str(), e.path.as_str(), e.schedulable))
        .collect();
    assert_eq!(
        seen,
        [
            ("DELETE", "/items", false),
            ("GET", "/items/:id", false),
            ("GET", "/status", true),
            ("POST", "/sync", true),
        ]
    );
    assert!(
        endpoints
            .iter()
            .all(|e| uuid::Uuid::parse_str(&e.id).is_ok() && e.handler == "dist/main")
    );
}

#[tokio::test]
async fn each_invalid_input_is_reported_with_its_field() {
    let f = Fixture::roomy().await;
    let grant = f.app("tenant-a").await;
    let create = |change: fn(&mut pb::CreateScheduleRequest)| {
        let mut request = every_10_min(&grant, "/status");
        change(&mut request);
        f.create(request)
    };
    let not_schedulable = "Endpoint not found or not schedulable";
    type Change = fn(&mut pb::CreateScheduleRequest);
    let cases: Vec<(Change, &str, &str)> = vec![
        (
            |r| r.endpoint = "/missing".into(),
            not_schedulable,
            "endpoint",
        ),
        (
            |r| r.endpoint = "GET /items/:id".into(),
            not_schedulable,
            "endpoint",
        ),
        (
            |r| r.endpoint = "DELETE /items".into(),
            not_schedulable,
            "endpoint",
        ),
        (
            |r| r.endpoint = "POST /status".into(),
            not_schedulable,
            "endpoint",
        ),
        (
            |r| r.cron = "* * * *".into(),
            "Invalid cron expression (expected 5 fields: m h dom mon dow)",
            "cron",
        ),
        (
            |r| r.cron = "0 9 * * MON".into(),
            "Invalid cron expression (unsupported characters)",
            "cron",
        ),
        (
            |r| r.cron = "0 9 1 * 1".into(),
            "Cron cannot set both day-of-month and day-of-week",
            "cron",
        ),
        (
            |r| r.cron = "*/4 * * * *".into(),
            "Cron too frequent (minimum interval is 5 minutes)",
            "cron",
        ),
        (
            |r| r.cron = format!("0 0 * * {}", "1,".repeat(70)),
            "Cron expression too long",
            "cron",
        ),
        (
            |r| r.cron = "61 * * * *".into(),
            "Invalid cron expression (value out of range)",
            "cron",
        ),
        (
            |r| r.timezone = Some("Mars/Olympus".into()),
            "Invalid timezone",
            "timezone",
        ),
        (
            |r| r.timezone = Some("A".repeat(65)),
            "Timezone too long",
            "timezone",
        ),
        (
            |r| r.payload_json = Some("{nope".into()),
            "Payload must be valid JSON object or array",
            "payload",
        ),
        (
            |r| r.payload_json = Some("42".into()),
            "Payload must be a JSON object or array",
            "payload",
        ),
        (
            |r| r.payload_json = Some(format!("[\"{}\"]", "x".repeat(100_000))),
            "Payload too large",
            "payload",
        ),
        (|r| r.name = Some("n".repeat(129)), "Name too long", "name"),
    ];
    for (change, error, field) in cases {
        let mut request = every_10_min(&grant, "/status");
        change(&mut request);
        let shown = format!(
            "{:?}",
            (
                &request.endpoint,
                &request.cron,
                &request.timezone,
                &request.name
            )
        );
        assert_eq!(
            f.create(request).await,
            failed(error, Some(field)),
            "{shown}"
        );
    }
    assert!(
        f.list(&grant).await.is_empty(),
        "nothing refused was stored"
    );

    // Names are unique per install.
    let named = |name: &str| pb::CreateScheduleRequest {
        name: Some(name.into()),
        ..every_10_min(&grant, "/status")
    };
    let first = f.created(named("nightly")).await;
    let second = f.created(named("hourly")).await;
    let taken = "Schedule name already in use for this extension";
    assert_eq!(
        create(|r| r.name = Some("nightly".into())).await,
        failed(taken, Some("name"))
    );
    let rename = f
        .update(pb::UpdateScheduleRequest {
            grant: grant.clone(),
            schedule_id: second.clone(),
            name: Some("nightly".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(rename, failed(taken, Some("name")));

    // Updates validate the same way, and name the schedule id.
    let update = |id: &str, change: fn(&mut pb::UpdateScheduleRequest)| {
        let mut request = pb::UpdateScheduleRequest {
            grant: grant.clone(),
            schedule_id: id.into(),
            ..Default::default()
        };
        change(&mut request);
        f.update(request)
    };
    assert_eq!(
        update(&first, |r| r.cron = Some("* * * * *".into())).await,
        failed(
            "Cron too frequent (minimum interval is 5 minutes)",
            Some("cron")
        )
    );
    assert_eq!(
        update(&first, |r| r.endpoint = Some("/items/:id".into())).await,
        failed(not_schedulable, Some("endpoint"))
    );
    assert_eq!(
        update(&first, |r| r.timezone = Some("Nowhere".into())).await,
        failed("Invalid timezone", Some("timezone"))
    );
    assert_eq!(
        update(&first, |r| r.payload_json = Some("\"text\"".into())).await,
        failed("Payload must be a JSON object or array", Some("payload"))
    );
    assert_eq!(
        update("nope", |_| {}).await,
        failed("Invalid scheduleId", Some("scheduleId"))
    );
    let absent = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        update(&absent, |_| {}).await,
        failed("Schedule not found", None)
    );
    assert_eq!(
        f.delete(&grant, "nope").await,
        failed("Invalid scheduleId", None)
    );
    assert_eq!(f.get(&grant, "nope").await, None);
    let kept = f.get(&grant, &first).await.expect("unchanged");
    assert_eq!(
        (kept.cron.as_str(), kept.name.as_deref()),
        ("*/10 * * * *", Some("nightly"))
    );
}

#[tokio::test]
async fn an_install_has_at_most_50_schedules() {
    let f = Fixture::roomy().await;
    let grant = f.app("tenant-a").await;
    for _ in 0..50 {
        f.created(every_10_min(&grant, "/status")).await;
    }
    let refused = f.create(every_10_min(&grant, "/status")).await;
    assert_eq!(
        refused,
        failed("Too many schedules (max 50 per extension install)", None)
    );
    assert_eq!(f.list(&grant).await.len(), 50);
    // Another install has its own quota.
    let other = f.install("tenant-b", "app", "1.0.0").await;
    f.created(every_10_min(&other, "/status")).await;
}

#[tokio::test]
async fn mutations_are_rate_limited_per_install() {
    let f = Fixture::start(SchedulerLimits::default()).await;
    let grant = f.app("tenant-a").await;
    let other = f.install("tenant-b", "app", "1.0.0").await;
    for _ in 0..10 {
        f.created(every_10_min(&grant, "/status")).await;
    }
    let status = f
        .host
        .clone()
        .create_schedule(every_10_min(&grant, "/status"))
        .await
        .expect_err("the 11th mutation in a minute");
    assert_eq!(code(&status), ErrorCode::RateLimited);
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    // Reads are not limited, and other installs have their own budget.
    assert_eq!(f.list(&grant).await.len(), 10);
    f.created(every_10_min(&other, "/status")).await;
}

#[tokio::test]
async fn a_grant_reaches_only_its_own_installs_schedules() {
    let f = Fixture::roomy().await;
    let a = f.app("tenant-a").await;
    let b = f.install("tenant-b", "app", "1.0.0").await;
    f.publish("other", "1.0.0", ENDPOINTS, SCHEDULER).await;
    let a_other = f.install("tenant-a", "other", "1.0.0").await;
    let mine = f
        .created(pb::CreateScheduleRequest {
            name: Some("mine".into()),
            ..every_10_min(&a, "/status")
        })
        .await;

    for grant in [&b, &a_other] {
        assert!(f.list(grant).await.is_empty());
        assert_eq!(f.get(grant, &mine).await, None);
        let update = f
            .update(pb::UpdateScheduleRequest {
                grant: grant.clone(),
                schedule_id: mine.clone(),
                enabled: Some(false),
                ..Default::default()
            })
            .await;
        assert_eq!(update, failed("Schedule not found", None));
        assert_eq!(
            f.delete(grant, &mine).await,
            failed("Schedule not found", None)
        );
        // The same name is free in another install.
        f.created(pb::CreateScheduleRequest {
            name: Some("mine".into()),
            ..every_10_min(grant, "/status")
        })
        .await;
    }
    let still = f.get(&a, &mine).await.expect("untouched");
    assert!(still.enabled);
    assert_eq!(f.list(&a).await.len(), 1);
}

#[tokio::test]
async fn a_grant_without_the_capability_is_denied() {
    let f = Fixture::roomy().await;
    f.publish("plain", "1.0.0", ENDPOINTS, &["cap:storage.kv"])
        .await;
    let grant = f.install("tenant-a", "plain", "1.0.0").await;
    let mut host = f.host.clone();
    let id = uuid::Uuid::new_v4().to_string();
    let calls: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "list",
            host.list_schedules(pb::ListSchedulesRequest {
                grant: grant.clone(),
            })
            .await
            .map(drop),
        ),
        (
            "get",
            host.get_schedule(pb::GetScheduleRequest {
                grant: grant.clone(),
                schedule_id: id.clone(),
            })
            .await
            .map(drop),
        ),
        (
            "create",
            host.create_schedule(every_10_min(&grant, "/status"))
                .await
                .map(drop),
        ),
        (
            "update",
            host.update_schedule(pb::UpdateScheduleRequest {
                grant: grant.clone(),
                schedule_id: id.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            "delete",
            host.delete_schedule(pb::DeleteScheduleRequest {
                grant: grant.clone(),
                schedule_id: id.clone(),
            })
            .await
            .map(drop),
        ),
        (
            "endpoints",
            host.get_endpoints(pb::GetEndpointsRequest {
                grant: grant.clone(),
            })
            .await
            .map(drop),
        ),
    ];
    for (call, result) in calls {
        let status = result.expect_err(call);
        assert_eq!(code(&status), ErrorCode::PermissionDenied, "{call}");
    }
    // A forged grant is refused outright; so is a caller that is not a worker.
    let status = host
        .list_schedules(pb::ListSchedulesRequest {
            grant: "v1.forged.grant".into(),
        })
        .await
        .expect_err("forged");
    assert_eq!(code(&status), ErrorCode::GrantInvalid);
    let mut edge = HostServicesClient::new(f.server.channel(Role::Edge).await);
    let status = edge
        .list_schedules(pb::ListSchedulesRequest {
            grant: grant.clone(),
        })
        .await
        .expect_err("edge role");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn upgrades_remap_schedules_and_uninstall_removes_them() {
    let f = Fixture::roomy().await;
    let grant = f.app("tenant-a").await;
    let status = f.created(every_10_min(&grant, "GET /status")).await;
    let sync = f.created(every_10_min(&grant, "POST /sync")).await;
    // 2.0.0 drops POST /sync; 1.1.0 keeps both.
    f.publish(
        "app",
        "1.1.0",
        &[("GET", "status"), ("POST", "/sync")],
        SCHEDULER,
    )
    .await;
    f.publish("app", "2.0.0", &[("GET", "/status")], SCHEDULER)
        .await;
    let mut ops = f.server.installs(Role::Operator).await;
    let upgrade = |version: &str, disable: bool| pb::UpgradeRequest {
        tenant_id: "tenant-a".into(),
        extension: "acme.app".into(),
        version: version.into(),
        disable_missing_schedules: disable,
    };

    ops.upgrade(upgrade("1.1.0", false))
        .await
        .expect("every endpoint remains");
    let refused = ops
        .upgrade(upgrade("2.0.0", false))
        .await
        .expect_err("POST /sync is gone");
    assert_eq!(code(&refused), ErrorCode::ScheduleRemapFailed);
    assert!(
        refused.message().contains(&sync) && refused.message().contains("POST /sync"),
        "{}",
        refused.message()
    );
    assert!(
        !refused.message().contains(&status),
        "{}",
        refused.message()
    );
    let grant = f.grant("tenant-a", "app").await;
    assert!(
        f.list(&grant).await.iter().all(|s| s.enabled),
        "a refused upgrade changes nothing"
    );

    let info = ops
        .upgrade(upgrade("2.0.0", true))
        .await
        .expect("disable the missing")
        .into_inner();
    assert_eq!(info.version, "2.0.0");
    let grant = f.grant("tenant-a", "app").await;
    let after = f.list(&grant).await;
    let by_id = |id: &str| after.iter().find(|s| s.id == id).expect("kept");
    assert!(by_id(&status).enabled && by_id(&status).last_error.is_none());
    let disabled = by_id(&sync);
    assert!(!disabled.enabled);
    assert!(
        disabled
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("POST /sync")),
        "{disabled:?}"
    );

    ops.uninstall(pb::InstallRef {
        tenant_id: "tenant-a".into(),
        extension: "acme.app".into(),
    })
    .await
    .expect("uninstall");
    let install_id = uuid::Uuid::parse_str(&info.install_id).expect("uuid");
    let left = f
        .server
        .store
        .list_schedules("tenant-a", install_id)
        .await
        .expect("list");
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn rollouts_follow_the_schedule_rules_of_an_upgrade() {
    let f = Fixture::roomy().await;
    let grant = f.app("tenant-a").await;
    let sync = f.created(every_10_min(&grant, "POST /sync")).await;
    // 2.0.0 drops POST /sync.
    f.publish("app", "2.0.0", &[("GET", "/status")], SCHEDULER)
        .await;
    let mut ops = f.server.installs(Role::Operator).await;
    let start = |disable: bool| pb::StartRolloutRequest {
        install: Some(pb::InstallRef {
            tenant_id: "tenant-a".into(),
            extension: "acme.app".into(),
        }),
        versions: vec!["2.0.0".into()],
        policy: Some(pb::RolloutPolicy {
            steps: vec![pb::RolloutStep {
                weights: vec![1000],
                hold_secs: 3600,
            }],
            max_error_rate: 0.05,
            max_p99_ms: 0,
            min_calls: 20,
        }),
        disable_missing_schedules: disable,
    };
    // Refused at start, as the upgrade would be refused at promotion.
    let refused = ops
        .start_rollout(start(false))
        .await
        .expect_err("POST /sync is gone in 2.0.0");
    assert_eq!(code(&refused), ErrorCode::ScheduleRemapFailed);
    assert!(refused.message().contains(&sync), "{}", refused.message());

    // Allowed to disable it: schedules keep running on 1.0.0 during the
    // rollout and are remapped at promotion.
    ops.start_rollout(start(true)).await.expect("start");
    let grant = f.grant("tenant-a", "app").await;
    assert!(f.list(&grant).await.iter().all(|s| s.enabled));
    ops.promote_rollout(pb::PromoteRolloutRequest {
        install: start(true).install,
        version: "2.0.0".into(),
    })
    .await
    .expect("promote");
    let grant = f.grant("tenant-a", "app").await;
    let after = f.list(&grant).await;
    let disabled = after.iter().find(|s| s.id == sync).expect("kept");
    assert!(!disabled.enabled, "{disabled:?}");
}
