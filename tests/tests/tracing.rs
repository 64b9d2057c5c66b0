//! Tracing across processes: the real edge, control plane and worker export
//! their spans over OTLP (http/protobuf) to a receiver in this test, and one
//! request's spans from all three share a trace id, continuing the caller's
//! `traceparent` when it sends one. Spans still queued when a process stops
//! on SIGTERM are flushed before it exits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annex_bundle::signing::KeyPair;
use annex_e2e::stack::{PUBLISHER, publish_and_install};
use annex_e2e::{Stack, StackOptions, send};
use annex_ops::Role;
use annex_proto::pb;
use annex_testkit::assert_eventually;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message as _;
use serde_json::json;

/// How long exported spans may take to arrive (batches leave every 100 ms).
const ARRIVAL: Duration = Duration::from_secs(30);

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP trace receiver on loopback keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Exported>>>,
}

fn string_attrs(attrs: &[KeyValue]) -> HashMap<String, String> {
    attrs
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => s.clone(),
                any_value::Value::IntValue(i) => i.to_string(),
                any_value::Value::BoolValue(b) => b.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let r = receiver.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let r = r.clone();
                async move {
                    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                        return (http::StatusCode::BAD_REQUEST, Vec::new());
                    };
                    r.keep(request);
                    (
                        http::StatusCode::OK,
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (receiver, addr)
    }

    /// The same receiver as an OTLP/gRPC `TraceService`.
    async fn start_grpc() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        (receiver, addr)
    }

    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        for rs in request.resource_spans {
            let resource = string_attrs(
                rs.resource
                    .as_ref()
                    .map(|r| r.attributes.as_slice())
                    .unwrap_or_default(),
            );
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Exported {
                    service: service.clone(),
                    name: span.name.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    attributes: string_attrs(&span.attributes),
                });
            }
        }
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn trace(&self, trace_id: &str) -> Vec<Exported> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// The edge's server span of the request with `request_id`.
    fn edge_span(&self, request_id: &str) -> Option<Exported> {
        self.spans().into_iter().find(|s| {
            s.service == "annex-edge"
                && s.attributes.get("request_id").map(String::as_str) == Some(request_id)
        })
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn otel_env(receiver: SocketAddr, delay_ms: u64) -> Vec<(String, String)> {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{receiver}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", delay_ms.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The `probe` guest with only storage granted, published and installed.
async fn install_probe(s: &Stack) -> String {
    let probe = std::fs::read(annex_worker::testing::guest("probe"))
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let operator = s.channel(Role::Operator).await;
    let key = KeyPair::generate();
    pb::trust_client::TrustClient::new(operator.clone())
        .add_key(pb::AddKeyRequest {
            publisher: PUBLISHER.into(),
            public_key: key.public_key().to_pem(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("trusting the publisher key: {e}"));
    let manifest = json!({
        "name": "com.annex.e2e.probe", "publisher": PUBLISHER, "version": "1.0.0",
        "runtime": "wasm-rust@1", "capabilities": ["cap:storage.kv"],
        "api": {"endpoints": [
            {"method": "POST", "path": "/storage/put", "handler": "dist/main"},
            {"method": "GET", "path": "/storage/get", "handler": "dist/main"}
        ]}
    });
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::create_dir_all(dir.path().join("dist")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::write(dir.path().join("manifest.json"), manifest.to_string())
        .unwrap_or_else(|e| panic!("manifest: {e}"));
    std::fs::write(dir.path().join("dist/main.wasm"), &probe)
        .unwrap_or_else(|e| panic!("component: {e}"));
    let bytes = annex_bundle::archive::pack_dir(dir.path()).unwrap_or_else(|e| panic!("pack: {e}"));
    publish_and_install(&operator, &key, &manifest, &bytes)
        .await
        .registry_id
}

fn by_name<'a>(spans: &'a [Exported], service: &str, name: &str) -> &'a Exported {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name)
        .unwrap_or_else(|| panic!("no {service} span {name:?} in {spans:#?}"))
}

#[tokio::test]
async fn one_request_is_one_trace_across_edge_worker_and_control_plane() {
    let (receiver, otlp) = Receiver::start().await;
    let s = Stack::start_with(StackOptions {
        process_env: otel_env(otlp, 100),
        ..StackOptions::default()
    })
    .await;
    let probe = install_probe(&s).await;
    let auth = s.bearer(&json!({}));
    // The worker learns of the new publisher key from the fleet stream.
    let warm = format!("/api/ext/{probe}/storage/get?ns=notes&key=none");
    assert_eventually!(
        ARRIVAL,
        async || {
            send(s.edge.http, "GET", &warm, &[("authorization", &auth)], b"")
                .await
                .status
                == 200
        },
        "the probe to answer:\n{}",
        s.logs()
    );

    // The caller's trace is continued: every span of the request carries its
    // trace id, and the edge's span is the child of the caller's.
    let caller_trace = "5a1e0c3b9d2f4e6a8b7c1d0e2f3a4b5c";
    let caller_span = "1f2e3d4c5b6a7980";
    let traceparent = format!("00-{caller_trace}-{caller_span}-01");
    let r = send(
        s.edge.http,
        "POST",
        &format!("/api/ext/{probe}/storage/put?ns=notes&key=k1"),
        &[
            ("authorization", &auth),
            ("x-request-id", "traced-caller"),
            ("traceparent", &traceparent),
        ],
        b"first",
    )
    .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.logs());
    assert_eq!(r.json()["ok"]["value"], "first", "{}", r.text());

    let complete = |trace: String, host_call: &'static str| {
        let receiver = receiver.clone();
        async move {
            // A parent span ends after its children, so it can arrive in a
            // later export batch: wait for every span the test reads.
            let spans = receiver.trace(&trace);
            [
                ("annex-edge", "/api/ext"),
                ("annex-worker", "annex.v1.Worker/Execute"),
                ("annex-worker", "worker.run"),
                ("annex-worker", "worker.compile"),
                ("annex-control-plane", host_call),
            ]
            .iter()
            .all(|(svc, name)| spans.iter().any(|s| s.service == *svc && s.name == *name))
        }
    };
    assert_eventually!(
        ARRIVAL,
        || complete(caller_trace.to_owned(), "annex.v1.HostServices/StoragePut"),
        "spans of the caller's trace from all three services: {:#?}\n{}",
        receiver.spans(),
        s.logs()
    );
    let spans = receiver.trace(caller_trace);
    let edge = by_name(&spans, "annex-edge", "/api/ext");
    assert_eq!(edge.parent, caller_span);
    assert_eq!(
        edge.attributes
            .get("http.response.status_code")
            .map(String::as_str),
        Some("200")
    );
    let execute = by_name(&spans, "annex-worker", "annex.v1.Worker/Execute");
    assert_eq!(
        execute.parent, edge.span_id,
        "the worker continues the edge's span"
    );
    assert_eq!(
        execute.attributes.get("request_id").map(String::as_str),
        Some("traced-caller")
    );
    let run = by_name(&spans, "annex-worker", "worker.run");
    assert_eq!(run.parent, execute.span_id);
    let compile = by_name(&spans, "annex-worker", "worker.compile");
    assert_eq!(compile.parent, execute.span_id);
    let put = by_name(
        &spans,
        "annex-control-plane",
        "annex.v1.HostServices/StoragePut",
    );
    assert_eq!(
        put.parent, run.span_id,
        "the guest's storage call is a child of its run"
    );

    // Without a caller's trace the edge starts one, and the worker's and
    // the control plane's spans join it.
    let r = send(
        s.edge.http,
        "GET",
        &format!("/api/ext/{probe}/storage/get?ns=notes&key=k1"),
        &[("authorization", &auth), ("x-request-id", "traced-fresh")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ok"]["value"], "first", "{}", r.text());
    assert_eventually!(
        ARRIVAL,
        async || receiver.edge_span("traced-fresh").is_some(),
        "the edge's span: {:#?}",
        receiver.spans()
    );
    let fresh = receiver
        .edge_span("traced-fresh")
        .map(|e| e.trace_id)
        .unwrap_or_default();
    assert_ne!(fresh, caller_trace);
    assert_eventually!(
        ARRIVAL,
        || complete(fresh.clone(), "annex.v1.HostServices/StorageGet"),
        "the new trace's spans from all three services: {:#?}",
        receiver.trace(&fresh)
    );
    let spans = receiver.trace(&fresh);
    by_name(
        &spans,
        "annex-control-plane",
        "annex.v1.HostServices/StorageGet",
    );
    assert!(
        spans
            .iter()
            .all(|s| s.name != "annex.v1.HostServices/StoragePut"),
        "the first request's spans stay in their own trace"
    );
}

#[tokio::test]
async fn spans_queued_at_sigterm_are_flushed_before_the_edge_exits() {
    let (receiver, otlp) = Receiver::start().await;
    let s = Stack::start().await;
    // Batches would leave only after ten minutes: what arrives was flushed
    // by the shutdown path.
    let mut edge = s.spawn_edge("edge-traced", &otel_env(otlp, 600_000)).await;
    let auth = s.bearer(&json!({}));
    let r = send(
        edge.http,
        "GET",
        &format!("/api/ext/{}/hello", s.hello.registry_id),
        &[
            ("authorization", &auth),
            ("x-request-id", "flushed-at-exit"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(receiver.edge_span("flushed-at-exit").is_none());

    let pid = edge
        .proc
        .child
        .id()
        .unwrap_or_else(|| panic!("edge has no pid"));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(killed.success());
    let exited = tokio::time::timeout(Duration::from_secs(30), edge.proc.child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the edge did not exit on SIGTERM:\n{}",
                edge.proc.log_tail()
            )
        })
        .unwrap_or_else(|e| panic!("wait: {e}"));
    assert!(exited.success(), "{exited}\n{}", edge.proc.log_tail());
    let span = receiver.edge_span("flushed-at-exit").unwrap_or_else(|| {
        panic!(
            "the request's span was not flushed at exit: {:#?}\n{}",
            receiver.spans(),
            edge.proc.log_tail()
        )
    });
    assert_eq!(span.name, "/api/ext");
    assert_eq!(
        span.attributes
            .get("http.response.status_code")
            .map(String::as_str),
        Some("200")
    );
}

#[tokio::test]
async fn a_grpc_collector_receives_the_same_trace() {
    let (receiver, otlp) = Receiver::start_grpc().await;
    let mut env = otel_env(otlp, 100);
    env.retain(|(k, _)| k != "OTEL_EXPORTER_OTLP_PROTOCOL");
    env.push(("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()));
    let s = Stack::start_with(StackOptions {
        process_env: env,
        ..StackOptions::default()
    })
    .await;
    let caller_trace = "0123456789abcdef0123456789abcdef";
    let traceparent = format!("00-{caller_trace}-0123456789abcdef-01");
    let r = send(
        s.edge.http,
        "GET",
        &format!("/api/ext/{}/hello", s.hello.registry_id),
        &[
            ("authorization", &s.bearer(&json!({}))),
            ("traceparent", &traceparent),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eventually!(
        ARRIVAL,
        async || {
            // The Execute span can arrive in a later export batch than its
            // children: wait for the very spans the test reads.
            let spans = receiver.trace(caller_trace);
            [
                ("annex-edge", "/api/ext"),
                ("annex-worker", "annex.v1.Worker/Execute"),
            ]
            .iter()
            .all(|(svc, name)| spans.iter().any(|s| s.service == *svc && s.name == *name))
        },
        "spans over gRPC: {:#?}\n{}",
        receiver.spans(),
        s.logs()
    );
    let spans = receiver.trace(caller_trace);
    let edge = by_name(&spans, "annex-edge", "/api/ext");
    let execute = by_name(&spans, "annex-worker", "annex.v1.Worker/Execute");
    assert_eq!(execute.parent, edge.span_id);
}
