//! A scripted `Worker` service over real mTLS for the edge's component
//! tests: it answers by request path (`/slow` never), records what it
//! received, and can be told to refuse calls as unavailable (before the
//! guest runs) or to fail them as a connection that broke mid-call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annex_ops::Role;
use annex_ops::devcerts::DevCa;
use annex_proto::pb;
use parking_lot::Mutex;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
pub struct Script {
    pub calls: Arc<Mutex<Vec<pb::ExecuteRequest>>>,
    /// Refuse every call with UNAVAILABLE (a draining worker).
    pub unavailable: Arc<AtomicBool>,
    /// Fail every call (after recording it) as a connection that broke
    /// mid-call: a status without Annex's error code.
    pub broken: Arc<AtomicBool>,
}

pub struct ScriptedWorker {
    pub id: String,
    pub addr: std::net::SocketAddr,
    pub script: Script,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ScriptedWorker {
    pub async fn start(ca: &DevCa, id: &str) -> ScriptedWorker {
        let tls = ca.issue(Role::Worker, id).expect("worker cert");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let script = Script::default();
        let svc = pb::worker_server::WorkerServer::new(Svc {
            id: id.to_owned(),
            script: script.clone(),
        })
        .max_decoding_message_size(32 * 1024 * 1024);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = Server::builder()
                .tls_config(tls.server_config())
                .expect("tls")
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    svc,
                    annex_ops::tls::authenticate(&[Role::Edge, Role::ControlPlane]),
                ))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                    let _ = stopped.await;
                })
                .await;
        });
        ScriptedWorker {
            id: id.to_owned(),
            addr,
            script,
            stop: Some(stop),
        }
    }

    pub fn calls(&self) -> Vec<pb::ExecuteRequest> {
        self.script.calls.lock().clone()
    }
}

impl Drop for ScriptedWorker {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

struct Svc {
    id: String,
    script: Script,
}

fn ok(status: u32, headers: &[(&str, &str)], body: Vec<u8>, worker: &str) -> pb::ExecuteResponse {
    pb::ExecuteResponse {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body: Some(body),
        outcome: pb::Outcome::Ok as i32,
        worker_id: worker.to_owned(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl pb::worker_server::Worker for Svc {
    async fn execute(
        &self,
        req: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        if self.script.unavailable.load(Ordering::SeqCst) {
            return Err(Status::unavailable("draining"));
        }
        let r = req.into_inner();
        self.script.calls.lock().push(r.clone());
        if self.script.broken.load(Ordering::SeqCst) {
            return Err(Status::unknown("connection reset by peer"));
        }
        let http = r.http.clone().unwrap_or_default();
        let idempotency = |code, retry_after: Option<u64>| {
            let mut status = Status::from(annex_proto::AnnexError::new(code, "refused"));
            if let Some(secs) = retry_after {
                annex_proto::error::set_retry_after(&mut status, Duration::from_secs(secs));
            }
            Err(status)
        };
        let resp = match http.path.as_str() {
            "/items/reused" => {
                return idempotency(annex_proto::ErrorCode::IdempotencyKeyReused, None);
            }
            "/items/busy" => {
                return idempotency(annex_proto::ErrorCode::IdempotencyInProgress, Some(4));
            }
            "/items/records-down" => {
                return idempotency(annex_proto::ErrorCode::IdempotencyUnavailable, Some(2));
            }
            "/items/replayed" => pb::ExecuteResponse {
                replayed: true,
                ..ok(
                    201,
                    &[("content-type", "text/plain")],
                    b"stored".to_vec(),
                    &self.id,
                )
            },
            "/compiling" => {
                let mut status = Status::from(annex_proto::AnnexError::new(
                    annex_proto::ErrorCode::ComponentCompiling,
                    "the component is compiling",
                ));
                annex_proto::error::set_retry_after(&mut status, Duration::from_secs(3));
                return Err(status);
            }
            // A worker that never answers: the edge's deadline must end the call.
            "/slow" => std::future::pending::<pb::ExecuteResponse>().await,
            "/trap" => pb::ExecuteResponse {
                outcome: pb::Outcome::Trap as i32,
                error: "execute_failed: secret internal detail".into(),
                ..Default::default()
            },
            "/guest-timeout" => pb::ExecuteResponse {
                outcome: pb::Outcome::Timeout as i32,
                ..Default::default()
            },
            // A hostile guest: more headers than any map should hold. (Under
            // `/items/:id` so the manifest, and with it the bundle's hash and
            // its placement, stays what the other tests expect.)
            "/items/many-headers" => pb::ExecuteResponse {
                headers: (0..33_000)
                    .map(|i| (format!("x-ext-h{i}"), "v".to_owned()))
                    .collect(),
                ..ok(200, &[], b"flood".to_vec(), &self.id)
            },
            // A page on the edge's origin, cached publicly if the edge let it.
            "/items/html" => ok(
                200,
                &[
                    ("content-type", "text/html"),
                    ("cache-control", "public, max-age=3600"),
                ],
                b"<script>fetch('/api/ext-proxy/other/secrets')</script>".to_vec(),
                &self.id,
            ),
            "/teapot" => ok(
                418,
                &[("content-type", "text/plain")],
                b"short and stout".to_vec(),
                &self.id,
            ),
            "/headers" => ok(
                201,
                &[
                    ("Content-Type", "text/plain"),
                    ("x-ext-foo", "bar"),
                    ("x-ext-request-id", "guest-1"),
                    ("set-cookie", "session=stolen"),
                    ("location", "https://evil.example"),
                    ("cache-control", "public, max-age=60, immutable"),
                    ("etag", "\"v1\""),
                ],
                b"hello".to_vec(),
                &self.id,
            ),
            _ => {
                let ctx = r.context.clone().unwrap_or_default();
                let body = serde_json::json!({
                    "worker": self.id,
                    "method": http.method,
                    "path": http.path,
                    "query": http.query,
                    "headers": http.headers,
                    "body": http.body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
                    "tenant": ctx.tenant_id,
                    "extension": ctx.extension_id,
                    "install": ctx.install_id,
                    "trigger": ctx.trigger,
                    "user": r.user.as_ref().map(|u| serde_json::json!({
                        "id": u.user_id, "email": u.user_email, "name": u.user_name,
                        "type": u.user_type, "client_id": u.client_id,
                        "additional_fields": u.additional_fields,
                    })),
                    "idempotency_key": r.idempotency_key,
                    "timeout_ms": r.limits.as_ref().map(|l| l.timeout_ms),
                    "has_grant": !r.execution_grant.is_empty(),
                });
                ok(
                    200,
                    &[("content-type", "application/json")],
                    body.to_string().into_bytes(),
                    &self.id,
                )
            }
        };
        Ok(Response::new(resp))
    }

    async fn prewarm(
        &self,
        _: Request<pb::PrewarmRequest>,
    ) -> Result<Response<pb::PrewarmResponse>, Status> {
        Ok(Response::new(pb::PrewarmResponse::default()))
    }

    async fn drain(&self, _: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        self.script.unavailable.store(true, Ordering::SeqCst);
        Ok(Response::new(pb::Empty {}))
    }

    async fn stats(&self, _: Request<pb::Empty>) -> Result<Response<pb::WorkerStats>, Status> {
        Ok(Response::new(pb::WorkerStats {
            worker_id: self.id.clone(),
            ..Default::default()
        }))
    }
}
