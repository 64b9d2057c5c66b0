//! Stubs of the targets for the harness's own tests: the harness's HTTP
//! calibration stub (the edge's URL shapes), and tonic `Worker` and `Dispatch`
//! servers over mTLS with dev certificates. They answer instantly and count what they saw; they
//! measure nothing about Annex. Plus [`loadtest`], which runs the real binary.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annex_loadtest::stub::Seen;
use annex_proto::pb;
use tokio_stream::wrappers::TcpListenerStream;

/// Starts the calibration stub (`annex_loadtest::stub`) on 127.0.0.1:0.
pub async fn http_stub() -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    tokio::spawn(annex_loadtest::stub::serve(
        listener,
        seen.clone(),
        std::future::pending(),
    ));
    (addr, seen)
}

/// Answers every Execute with 200 when the context carries the expected
/// tenant and a request id, 403 otherwise (so a wrong shape shows as errors).
pub struct WorkerStub {
    pub executed: Arc<AtomicU64>,
    pub tenant: String,
}

#[tonic::async_trait]
impl pb::worker_server::Worker for WorkerStub {
    async fn execute(
        &self,
        request: tonic::Request<pb::ExecuteRequest>,
    ) -> Result<tonic::Response<pb::ExecuteResponse>, tonic::Status> {
        self.executed.fetch_add(1, Ordering::Relaxed);
        let r = request.into_inner();
        let ctx = r.context.unwrap_or_default();
        let ok = ctx.tenant_id == self.tenant && !ctx.request_id.is_empty();
        Ok(tonic::Response::new(pb::ExecuteResponse {
            status: if ok { 200 } else { 403 },
            body: r.http.and_then(|h| h.body),
            outcome: pb::Outcome::Ok as i32,
            ..Default::default()
        }))
    }
    async fn prewarm(
        &self,
        _: tonic::Request<pb::PrewarmRequest>,
    ) -> Result<tonic::Response<pb::PrewarmResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn drain(
        &self,
        _: tonic::Request<pb::Empty>,
    ) -> Result<tonic::Response<pb::Empty>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn stats(
        &self,
        _: tonic::Request<pb::Empty>,
    ) -> Result<tonic::Response<pb::WorkerStats>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
}

/// Execute answers 200; a request without an extension fails with Annex's
/// error-code metadata, the way the control plane reports one.
pub struct DispatchStub {
    pub executed: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl pb::dispatch_server::Dispatch for DispatchStub {
    async fn execute(
        &self,
        request: tonic::Request<pb::DispatchExecuteRequest>,
    ) -> Result<tonic::Response<pb::ExecuteResponse>, tonic::Status> {
        self.executed.fetch_add(1, Ordering::Relaxed);
        if request.get_ref().extension.is_empty() {
            let mut status = tonic::Status::not_found("no such install");
            status.metadata_mut().insert(
                "annex-error-code",
                "INSTALL_NOT_FOUND".parse().expect("ascii"),
            );
            return Err(status);
        }
        Ok(tonic::Response::new(pb::ExecuteResponse {
            status: 200,
            outcome: pb::Outcome::Ok as i32,
            ..Default::default()
        }))
    }
    type WatchRoutesStream = tokio_stream::Empty<Result<pb::RoutingUpdate, tonic::Status>>;
    async fn watch_routes(
        &self,
        _: tonic::Request<pb::WatchRoutesRequest>,
    ) -> Result<tonic::Response<Self::WatchRoutesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn record_executions(
        &self,
        _: tonic::Request<pb::ExecutionRecords>,
    ) -> Result<tonic::Response<pb::Empty>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn authenticate_api_key(
        &self,
        _: tonic::Request<pb::AuthenticateApiKeyRequest>,
    ) -> Result<tonic::Response<pb::ApiKeyPrincipal>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
}

/// Serves both stubs on 127.0.0.1:0 over mTLS with the worker certificate
/// from the dev PKI in `pki` (written there first).
pub async fn grpc_stub(pki: &Path, tenant: &str) -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    annex_ops::devcerts::ensure_dir(pki).expect("dev PKI");
    let material = annex_ops::devcerts::role_files(pki, annex_ops::Role::Worker)
        .load()
        .expect("worker cert");
    let worker_calls = Arc::new(AtomicU64::new(0));
    let dispatch_calls = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tonic::transport::Server::builder()
        .tls_config(material.server_config())
        .expect("tls")
        .add_service(pb::worker_server::WorkerServer::new(WorkerStub {
            executed: worker_calls.clone(),
            tenant: tenant.to_owned(),
        }))
        .add_service(pb::dispatch_server::DispatchServer::new(DispatchStub {
            executed: dispatch_calls.clone(),
        }));
    tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    (addr, worker_calls, dispatch_calls)
}

/// What a run of the binary printed and whether it succeeded.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub async fn loadtest(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_annex-loadtest"))
        .args(args)
        .env_remove("ANNEX_LOADTEST_BASE_URL")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run annex-loadtest");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the binary with `--json` and returns the parsed report.
pub async fn loadtest_json(dir: &Path, args: &[&str]) -> (Run, serde_json::Value) {
    let json = dir.join(format!(
        "report-{}.json",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut all: Vec<&str> = args.to_vec();
    let json_arg = json.to_str().expect("utf-8 path").to_owned();
    all.extend(["--json", &json_arg]);
    let run = loadtest(&all).await;
    assert!(
        run.ok,
        "annex-loadtest {args:?} failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    let text = std::fs::read_to_string(&json).expect("JSON report written");
    let value = serde_json::from_str(&text).expect("JSON report parses");
    (run, value)
}

static NEXT: AtomicU64 = AtomicU64::new(0);
