//! The host-backed interfaces (storage, secrets, scheduler, invoicing,
//! clients, services, ui-proxy) through the worker's real gRPC
//! `HostServices` client against an in-process fake control plane, so the
//! worker's side of each mapping (requests sent, statuses to guest errors)
//! is checked end to end. The control plane's own semantics are tested
//! against the real `HostServices` in the control plane's suite.

use std::collections::BTreeMap;
use std::sync::Arc;

use annex_proto::pb::host_services_server::{HostServices, HostServicesServer};
use annex_proto::pb::{self};
use annex_proto::{AnnexError, ErrorCode};
use annex_worker::backend::GrpcHostBackend;
use annex_worker::testing::{Call, TestWorker, json, test_settings};
use parking_lot::Mutex;
use serde_json::json;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::support::{publisher, tmp_dir};

const GRANT: &str = "grant-for-install-1";

/// (namespace, key) → (value, revision).
type Records = BTreeMap<(String, String), (Vec<u8>, u64)>;

#[derive(Default)]
struct FakeControlPlane {
    storage: Mutex<Records>,
    host_api_bodies: Mutex<Vec<(String, String)>>,
    ui_calls: Mutex<Vec<pb::UiProxyRequest>>,
}

fn check(grant: &str) -> Result<(), Status> {
    if grant == GRANT {
        Ok(())
    } else {
        Err(AnnexError::new(ErrorCode::GrantInvalid, "bad grant").into())
    }
}

fn record(ns: &str, key: &str, value: &[u8], revision: u64) -> pb::StorageRecord {
    pb::StorageRecord {
        namespace: ns.into(),
        key: key.into(),
        value: value.to_vec(),
        revision,
        ..Default::default()
    }
}

fn schedule() -> pb::ScheduleInfo {
    pb::ScheduleInfo {
        id: "s-1".into(),
        endpoint_path: "/hello".into(),
        endpoint_method: "GET".into(),
        name: Some("hourly".into()),
        cron: "0 * * * *".into(),
        timezone: "UTC".into(),
        enabled: true,
        payload_json: Some("{\"a\":1}".into()),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl HostServices for FakeControlPlane {
    async fn storage_get(
        &self,
        r: Request<pb::StorageGetRequest>,
    ) -> Result<Response<pb::StorageGetResponse>, Status> {
        let r = r.into_inner();
        check(&r.grant)?;
        match self
            .storage
            .lock()
            .get(&(r.namespace.clone(), r.key.clone()))
        {
            Some((v, rev)) => Ok(Response::new(pb::StorageGetResponse {
                record: Some(record(&r.namespace, &r.key, v, *rev)),
            })),
            None => Err(AnnexError::new(ErrorCode::NotFound, "no such key").into()),
        }
    }
    async fn storage_put(
        &self,
        r: Request<pb::StoragePutRequest>,
    ) -> Result<Response<pb::StorageRecord>, Status> {
        let r = r.into_inner();
        check(&r.grant)?;
        let mut s = self.storage.lock();
        let k = (r.namespace.clone(), r.key.clone());
        let current = s.get(&k).map(|(_, rev)| *rev);
        if let Some(want) = r.if_revision
            && current != Some(want)
        {
            return Err(AnnexError::new(ErrorCode::RevisionMismatch, "revision mismatch").into());
        }
        let rev = current.unwrap_or(0) + 1;
        s.insert(k, (r.value.clone(), rev));
        Ok(Response::new(record(&r.namespace, &r.key, &r.value, rev)))
    }
    async fn storage_delete(
        &self,
        r: Request<pb::StorageDeleteRequest>,
    ) -> Result<Response<pb::StorageDeleteResponse>, Status> {
        let r = r.into_inner();
        check(&r.grant)?;
        let deleted = self.storage.lock().remove(&(r.namespace, r.key)).is_some();
        Ok(Response::new(pb::StorageDeleteResponse { deleted }))
    }
    async fn storage_list(
        &self,
        r: Request<pb::StorageListRequest>,
    ) -> Result<Response<pb::StorageListResponse>, Status> {
        let r = r.into_inner();
        check(&r.grant)?;
        let records = self
            .storage
            .lock()
            .iter()
            .filter(|((ns, key), _)| *ns == r.namespace && key.as_str() > r.cursor.as_str())
            .map(|((ns, key), (v, rev))| record(ns, key, v, *rev))
            .collect();
        Ok(Response::new(pb::StorageListResponse {
            records,
            next_cursor: String::new(),
        }))
    }
    async fn get_secrets(
        &self,
        r: Request<pb::GetSecretsRequest>,
    ) -> Result<Response<pb::GetSecretsResponse>, Status> {
        check(&r.into_inner().grant)?;
        Ok(Response::new(pb::GetSecretsResponse {
            values: [("api_key".to_string(), "k-123".to_string())].into(),
            version: "v1".into(),
        }))
    }
    async fn list_schedules(
        &self,
        r: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        check(&r.into_inner().grant)?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: vec![schedule()],
        }))
    }
    async fn get_schedule(
        &self,
        r: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::GetScheduleResponse>, Status> {
        let r = r.into_inner();
        check(&r.grant)?;
        Ok(Response::new(pb::GetScheduleResponse {
            schedule: (r.schedule_id == "s-1").then(schedule),
        }))
    }
    async fn create_schedule(
        &self,
        r: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::ScheduleMutationResult>, Status> {
        let r = r.into_inner();
        check(&r.grant)?;
        if r.cron == "* * * * *" {
            return Err(AnnexError::new(ErrorCode::InvalidArgument, "cron too frequent").into());
        }
        Ok(Response::new(pb::ScheduleMutationResult {
            success: true,
            schedule_id: Some("s-2".into()),
            ..Default::default()
        }))
    }
    async fn update_schedule(
        &self,
        r: Request<pb::UpdateScheduleRequest>,
    ) -> Result<Response<pb::ScheduleMutationResult>, Status> {
        check(&r.into_inner().grant)?;
        Ok(Response::new(pb::ScheduleMutationResult {
            success: true,
            ..Default::default()
        }))
    }
    async fn delete_schedule(
        &self,
        r: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::ScheduleMutationResult>, Status> {
        let r = r.into_inner();
        check(&r.grant)?;
        if r.schedule_id != "s-1" {
            return Err(AnnexError::new(ErrorCode::NotFound, "no such schedule").into());
        }
        Ok(Response::new(pb::ScheduleMutationResult {
            success: true,
            ..Default::default()
        }))
    }
    async fn get_endpoints(
        &self,
        r: Request<pb::GetEndpointsRequest>,
    ) -> Result<Response<pb::GetEndpointsResponse>, Status> {
        check(&r.into_inner().grant)?;
        Ok(Response::new(pb::GetEndpointsResponse {
            endpoints: vec![pb::EndpointInfo {
                id: "e-1".into(),
                method: "GET".into(),
                path: "/hello".into(),
                handler: "dist/main".into(),
                schedulable: true,
            }],
        }))
    }
    async fn call_host_api(
        &self,
        r: Request<pb::HostApiRequest>,
    ) -> Result<Response<pb::HostApiResponse>, Status> {
        let r = r.into_inner();
        check(&r.grant)?;
        self.host_api_bodies
            .lock()
            .push((r.api.clone(), r.body_json.clone()));
        let body: serde_json::Value = serde_json::from_str(&r.body_json)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (status, answer) = match (r.api.as_str(), body["operation"].as_str()) {
            ("invoicing", _) if body["clientId"] == "unknown" => {
                (400, json!({"success": false, "error": "Client not found"}))
            }
            ("invoicing", _) => (
                201,
                json!({"success": true, "invoice": {"invoiceId": "inv-1", "invoiceNumber": "INV-0001", "status": "draft", "subtotal": 100.0, "tax": 8.0, "total": 108.0}}),
            ),
            ("clients", Some("list")) => (
                200,
                json!({"items": [{"clientId": "c-1", "clientName": "Acme", "isInactive": false}], "totalCount": 1, "page": 1, "pageSize": 25}),
            ),
            ("clients", Some("get")) => (200, json!({"item": null})),
            ("services", Some("list")) => (403, json!({"error": "NOT_ALLOWED"})),
            _ => (500, json!({})),
        };
        Ok(Response::new(pb::HostApiResponse {
            status,
            body: answer.to_string().into_bytes(),
        }))
    }
    async fn call_ui_proxy(
        &self,
        r: Request<pb::UiProxyRequest>,
    ) -> Result<Response<pb::HostApiResponse>, Status> {
        let r = r.into_inner();
        check(&r.grant)?;
        self.ui_calls.lock().push(r.clone());
        Ok(Response::new(match r.route.as_str() {
            "/proxy/ping" => pb::HostApiResponse {
                status: 200,
                body: r.payload.unwrap_or_else(|| b"pong".to_vec()),
            },
            _ => pb::HostApiResponse {
                status: 404,
                body: Vec::new(),
            },
        }))
    }
    async fn publish_logs(&self, _: Request<pb::LogBatch>) -> Result<Response<pb::Empty>, Status> {
        Ok(Response::new(pb::Empty {}))
    }
    async fn record_capture(
        &self,
        _: Request<pb::RecordCaptureRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        Err(Status::unimplemented("not faked"))
    }
    async fn idempotency_claim(
        &self,
        _: Request<pb::IdempotencyClaimRequest>,
    ) -> Result<Response<pb::IdempotencyClaimResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }
    async fn idempotency_renew(
        &self,
        _: Request<pb::IdempotencyLeaseRequest>,
    ) -> Result<Response<pb::IdempotencyOwnership>, Status> {
        Err(Status::unimplemented("not faked"))
    }
    async fn idempotency_complete(
        &self,
        _: Request<pb::IdempotencyCompleteRequest>,
    ) -> Result<Response<pb::IdempotencyOwnership>, Status> {
        Err(Status::unimplemented("not faked"))
    }
    async fn idempotency_release(
        &self,
        _: Request<pb::IdempotencyLeaseRequest>,
    ) -> Result<Response<pb::IdempotencyOwnership>, Status> {
        Err(Status::unimplemented("not faked"))
    }
    type WatchLogsStream = tokio_stream::Empty<Result<pb::LogEvent, Status>>;
    async fn watch_logs(
        &self,
        _: Request<pb::WatchLogsRequest>,
    ) -> Result<Response<Self::WatchLogsStream>, Status> {
        Ok(Response::new(tokio_stream::empty()))
    }
    async fn storage_bulk_put(
        &self,
        _: Request<pb::StorageBulkPutRequest>,
    ) -> Result<Response<pb::StorageBulkPutResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
    async fn list_logs(
        &self,
        _: Request<pb::ListLogsRequest>,
    ) -> Result<Response<pb::LogPage>, Status> {
        Ok(Response::new(pb::LogPage::default()))
    }
}

/// A worker whose host services are the fake control plane.
async fn setup() -> (TestWorker, Arc<FakeControlPlane>) {
    let fake = Arc::new(FakeControlPlane::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = HostServicesServer::from_arc(fake.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect_lazy();
    let w = TestWorker::start(
        test_settings(Some(tmp_dir("worker-cache"))),
        publisher(),
        Some(Arc::new(GrpcHostBackend::new(channel))),
    )
    .await;
    (w, fake)
}

const ALL_CAPS: [&str; 7] = [
    "cap:storage.kv",
    "cap:secrets.get",
    "cap:scheduler.manage",
    "cap:invoice.manual.create",
    "cap:client.read",
    "cap:service.read",
    "cap:ui.proxy",
];

fn call(path: &str) -> Call {
    let hash = publisher().publish("probe");
    let mut c = Call::new(&hash, "GET", path).caps(&ALL_CAPS);
    c.request.execution_grant = GRANT.into();
    c
}

#[tokio::test]
async fn storage_round_trip_with_revisions_and_alga_error_mapping() {
    let (w, _) = setup().await;
    let put = |rev: Option<&str>, value: &str| {
        let mut c = call("/storage/put")
            .query("ns", "prefs")
            .query("key", "theme")
            .body(value.as_bytes().to_vec());
        if let Some(r) = rev {
            c = c.query("rev", r);
        }
        c.build()
    };
    let r = json(&w.execute(put(None, "dark")).await);
    assert_eq!(
        r,
        json!({"ok": {"namespace": "prefs", "key": "theme", "value": "dark", "revision": 1}})
    );
    let r = json(&w.execute(put(Some("1"), "light")).await);
    assert_eq!(r["ok"]["revision"], json!(2));
    let r = json(&w.execute(put(Some("1"), "stale")).await);
    assert_eq!(r, json!({"err": "conflict"}));
    let r = json(
        &w.execute(
            call("/storage/get")
                .query("ns", "prefs")
                .query("key", "theme")
                .build(),
        )
        .await,
    );
    assert_eq!(
        r,
        json!({"ok": {"namespace": "prefs", "key": "theme", "value": "light", "revision": 2}})
    );
    let r = json(
        &w.execute(call("/storage/list").query("ns", "prefs").build())
            .await,
    );
    assert_eq!(r["ok"].as_array().map(Vec::len), Some(1));
    let r = json(
        &w.execute(
            call("/storage/delete")
                .query("ns", "prefs")
                .query("key", "theme")
                .build(),
        )
        .await,
    );
    assert_eq!(r, json!({"ok": null}));
    // Nothing left to delete: Alga reports a conflict.
    let r = json(
        &w.execute(
            call("/storage/delete")
                .query("ns", "prefs")
                .query("key", "theme")
                .build(),
        )
        .await,
    );
    assert_eq!(r, json!({"err": "conflict"}));
    let r = json(
        &w.execute(
            call("/storage/get")
                .query("ns", "prefs")
                .query("key", "theme")
                .build(),
        )
        .await,
    );
    assert_eq!(r, json!({"err": "missing"}));
    // A grant the control plane refuses: denied.
    let mut c = call("/storage/get")
        .query("ns", "prefs")
        .query("key", "theme");
    c.request.execution_grant = "forged".into();
    assert_eq!(json(&w.execute(c.build()).await), json!({"err": "denied"}));
}

#[tokio::test]
async fn secrets_come_from_host_services() {
    let (w, _) = setup().await;
    let r = json(
        &w.execute(
            call("/secrets/get")
                .secrets_version("v1")
                .query("key", "api_key")
                .build(),
        )
        .await,
    );
    assert_eq!(r, json!({"ok": "k-123"}));
}

#[tokio::test]
async fn scheduler_calls_map_results_and_errors() {
    let (w, _) = setup().await;
    let r = json(&w.execute(call("/scheduler/list").build()).await);
    assert_eq!(r["ok"][0]["id"], json!("s-1"));
    assert_eq!(r["ok"][0]["payload"], json!("{\"a\":1}"));
    let r = json(
        &w.execute(call("/scheduler/get").query("id", "nope").build())
            .await,
    );
    assert_eq!(r, json!({"ok": null}));
    let r = json(
        &w.execute(
            call("/scheduler/create")
                .query("payload", "{\"x\":1}")
                .build(),
        )
        .await,
    );
    assert_eq!(
        r,
        json!({"success": true, "scheduleId": "s-2", "error": null, "fieldErrors": null})
    );
    // The server's validation failure loses its details, as in Alga.
    let r = json(
        &w.execute(call("/scheduler/create").query("cron", "* * * * *").build())
            .await,
    );
    assert_eq!(r["error"], json!("ValidationFailed"));
    let r = json(
        &w.execute(
            call("/scheduler/update")
                .query("id", "s-1")
                .query("payload", "{oops")
                .build(),
        )
        .await,
    );
    assert_eq!(
        r["error"],
        json!("Payload must be valid JSON object or array")
    );
    let r = json(
        &w.execute(call("/scheduler/delete").query("id", "s-9").build())
            .await,
    );
    assert_eq!(r, json!({"success": false, "error": "NotFound"}));
    let r = json(&w.execute(call("/scheduler/endpoints").build()).await);
    assert_eq!(r["ok"][0]["schedulable"], json!(true));
}

#[tokio::test]
async fn invoicing_sends_alga_bodies_and_flattens_the_answer() {
    let (w, fake) = setup().await;
    let r = json(
        &w.execute(
            call("/invoicing")
                .query("client", "c-1")
                .query("service", "s-1")
                .build(),
        )
        .await,
    );
    assert_eq!(r["success"], json!(true));
    assert_eq!(r["invoiceNumber"], json!("INV-0001"));
    assert_eq!(r["total"], json!(108.0));
    let (api, body) = fake
        .host_api_bodies
        .lock()
        .last()
        .cloned()
        .expect("a relayed call");
    assert_eq!(api, "invoicing");
    let body: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(body["operation"], json!("createManualInvoice"));
    assert_eq!(
        body["items"][0],
        json!({"serviceId": "s-1", "quantity": 1.0, "description": "probe item", "rate": 100.0})
    );
    let r = json(
        &w.execute(call("/invoicing").query("client", "unknown").build())
            .await,
    );
    assert_eq!(r["success"], json!(false));
    assert_eq!(
        r["error"],
        json!("http 400: {\"error\":\"Client not found\",\"success\":false}")
    );
}

#[tokio::test]
async fn clients_and_services_map_pages_and_statuses() {
    let (w, fake) = setup().await;
    let mut c = call("/clients/list");
    c.request.user = Some(pb::User {
        user_id: "u-1".into(),
        user_type: "internal".into(),
        ..Default::default()
    });
    let r = json(&w.execute(c.build()).await);
    assert_eq!(
        r["ok"]["items"],
        json!([{"clientId": "c-1", "clientName": "Acme"}])
    );
    let (_, body) = fake
        .host_api_bodies
        .lock()
        .last()
        .cloned()
        .expect("a relayed call");
    let body: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(
        body,
        json!({"operation": "list", "input": {"page": 1, "pageSize": 25}, "user": {"userId": "u-1", "userType": "internal"}})
    );
    let r = json(
        &w.execute(call("/clients/get").query("id", "c-404").build())
            .await,
    );
    assert_eq!(r, json!({"ok": null}));
    let r = json(&w.execute(call("/services/list").build()).await);
    assert_eq!(r, json!({"err": "not-allowed"}));
    let r = json(
        &w.execute(call("/services/list").query("page-size", "101").build())
            .await,
    );
    assert_eq!(r, json!({"err": "invalid-input"}));
}

#[tokio::test]
async fn ui_proxy_forwards_and_maps_missing_routes() {
    let (w, fake) = setup().await;
    let r = json(
        &w.execute(
            call("/ui-proxy")
                .query("route", "/proxy/ping")
                .body(b"{\"hi\":1}".to_vec())
                .build(),
        )
        .await,
    );
    assert_eq!(r, json!({"ok": "{\"hi\":1}"}));
    let sent = fake
        .ui_calls
        .lock()
        .last()
        .cloned()
        .expect("a ui-proxy call");
    assert_eq!(sent.request_id, "req-1");
    assert_eq!(sent.payload.as_deref(), Some(&b"{\"hi\":1}"[..]));
    let r = json(
        &w.execute(call("/ui-proxy").query("route", "/missing").build())
            .await,
    );
    assert_eq!(r, json!({"err": "route-not-found"}));
    let r = json(
        &w.execute(call("/ui-proxy").query("route", "/a/../b").build())
            .await,
    );
    assert_eq!(r, json!({"err": "bad-request"}));
}

#[tokio::test]
async fn ui_proxy_routes_that_move_up_once_decoded_never_leave_the_worker() {
    let (w, fake) = setup().await;
    // Each of these becomes `..` (or a path separator) once a URL parser
    // or the host application decodes it.
    for route in [
        "/%2e%2e/admin",
        "/%2E%2E/%2E%2E/api/internal",
        "/a/.%2e/b",
        "/a/%252e%252e/b",
        "/a%2f..%2fb",
        "\\..\\admin",
        "/a/..\\b",
        "/a/%00/b",
    ] {
        let r = json(
            &w.execute(call("/ui-proxy").query("route", route).build())
                .await,
        );
        assert_eq!(r, json!({"err": "bad-request"}), "{route}");
    }
    assert!(
        fake.ui_calls.lock().is_empty(),
        "refused routes reached the control plane: {:?}",
        fake.ui_calls.lock()
    );
    // Encoded characters that are not traversal still go through.
    let r = json(
        &w.execute(
            call("/ui-proxy")
                .query("route", "/proxy/a%20b?x=..")
                .build(),
        )
        .await,
    );
    assert_eq!(r, json!({"err": "route-not-found"}));
}
