//! One Annex deployment as child processes: PostgreSQL, one or more control
//! planes, one or more workers and an edge, with mTLS between them from a
//! dev PKI, plus the extensions the tests call, published signed and
//! installed for [`TENANT`]. Fleet tests kill (`SIGKILL`), stop (`SIGTERM`)
//! and restart single processes.
//!
//! This module holds the deployment's shape ([`StackOptions`],
//! [`FleetOptions`]) and [`Stack::start_with`], which brings it up. Its
//! submodules hold the rest: `process` starts, stops and restarts the child
//! processes, `publish` packs, signs and installs bundles, `inspect` is what
//! tests read off a running stack (session tokens, logs, Postgres rows,
//! worker stats).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use annex_bundle::signing::KeyPair;
use annex_devpg::{LocalPostgres, LocalPostgresOptions};
use annex_ops::Role;
use annex_proto::pb;
use annex_testkit::assert_eventually;
use tonic::transport::{Channel, Endpoint};

use crate::http::try_send;

mod inspect;
mod process;
mod publish;

pub use process::{EdgeProc, Member, Proc, bin};
pub use publish::{UI_APP, UI_INDEX, publish_and_install};

use process::{env, free_addr, spawn_as, spawn_edge_in, tls_env, wait_ready};
use publish::pack;

pub const TENANT: &str = "tenant-e2e";
pub const OTHER_TENANT: &str = "tenant-other";
pub const PUBLISHER: &str = "Annex E2E";
pub const AUDIENCE: &str = "annex";
/// How long a process may take to become ready (a cold debug build on a
/// loaded machine, Wasmtime compiling the first component).
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// An extension published and installed for [`TENANT`].
#[derive(Debug, Clone)]
pub struct Installed {
    pub registry_id: String,
    pub install_id: String,
    pub content_hash: String,
    pub slug: String,
}

/// Edge settings a test overrides, as `ANNEX_EDGE_*` variables, and the
/// shape of the fleet.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    pub edge_env: Vec<(String, String)>,
    /// Variables every process gets (control plane, worker, first edge),
    /// e.g. `OTEL_*`.
    pub process_env: Vec<(String, String)>,
    pub fleet: FleetOptions,
}

/// How many control planes and workers run, and extra settings for them.
/// Worker `i` heartbeats to control plane `i % control_planes`; the edge
/// follows the first control plane.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub control_planes: usize,
    pub workers: usize,
    /// Extra `ANNEX_CONTROL_PLANE_*` settings for every control plane.
    pub control_plane_env: Vec<(String, String)>,
    /// Extra `ANNEX_WORKER_*` settings for every worker.
    pub worker_env: Vec<(String, String)>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            control_planes: 1,
            workers: 1,
            control_plane_env: Vec::new(),
            worker_env: Vec::new(),
        }
    }
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub pki: PathBuf,
    pub pg: LocalPostgres,
    /// The first control plane's gRPC address.
    pub cp_addr: SocketAddr,
    /// The first worker's gRPC address.
    pub worker_addr: SocketAddr,
    pub edge: EdgeProc,
    pub jwt_secret_file: PathBuf,
    pub hello: Installed,
    pub misbehave: Installed,
    /// Publishes further bundles (see [`Stack::publish_and_install`]).
    pub publisher_key: KeyPair,
    pub control_planes: Vec<Member>,
    pub workers: Vec<Member>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("edge", &self.edge.http)
            .finish_non_exhaustive()
    }
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(StackOptions::default()).await
    }

    pub async fn start_with(opts: StackOptions) -> Stack {
        annex_ops::tls::install_crypto_provider();
        // Build the guests before any process starts (slow the first time).
        let hello = std::fs::read(annex_worker::testing::guest("hello"))
            .unwrap_or_else(|e| panic!("hello: {e}"));
        let misbehave = std::fs::read(annex_worker::testing::guest("misbehave"))
            .unwrap_or_else(|e| panic!("misbehave: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let pki = dir.path().join("pki");
        annex_ops::devcerts::ensure_dir(&pki).unwrap_or_else(|e| panic!("dev PKI: {e}"));
        let pg = LocalPostgres::start(&dir.path().join("pg"), LocalPostgresOptions::default())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is required for the end-to-end tests: {e}"));
        let kek = dir.path().join("kek");
        std::fs::write(&kek, hex::encode([7u8; 32])).unwrap_or_else(|e| panic!("kek: {e}"));
        let jwt_secret_file = dir.path().join("jwt.secret");
        std::fs::write(
            &jwt_secret_file,
            "e2e-secret-e2e-secret-e2e-secret-e2e-secret",
        )
        .unwrap_or_else(|e| panic!("secret: {e}"));

        let fleet = &opts.fleet;
        let mut control_planes = Vec::new();
        for i in 0..fleet.control_planes.max(1) {
            let (grpc, admin) = (free_addr(), free_addr());
            let mut cp_env = env(&[
                ("ANNEX_CONTROL_PLANE_GRPC_LISTEN", grpc.to_string()),
                ("ANNEX_CONTROL_PLANE_ADMIN_LISTEN", admin.to_string()),
                ("ANNEX_CONTROL_PLANE_DATABASE_URL", pg.url()),
                ("ANNEX_CONTROL_PLANE_KEK_FILE", kek.display().to_string()),
                ("ANNEX_LOG_FORMAT", "text".into()),
            ]);
            cp_env.extend(tls_env("ANNEX_CONTROL_PLANE", &pki, Role::ControlPlane));
            cp_env.extend(opts.process_env.iter().cloned());
            cp_env.extend(fleet.control_plane_env.iter().cloned());
            let name = if i == 0 {
                "annex-control-plane".to_owned()
            } else {
                format!("annex-control-plane-{}", i + 1)
            };
            let mut member = Member {
                grpc,
                admin,
                id: String::new(),
                proc: spawn_as("annex-control-plane", &name, dir.path(), &cp_env),
                bin: "annex-control-plane",
                env: cp_env,
            };
            wait_ready(&mut member.proc, admin).await;
            control_planes.push(member);
        }
        let cp_addr = control_planes[0].grpc;

        let mut workers = Vec::new();
        for i in 0..fleet.workers.max(1) {
            let (grpc, admin) = (free_addr(), free_addr());
            let (id, name) = if i == 0 {
                ("e2e-worker".to_owned(), "annex-worker".to_owned())
            } else {
                (
                    format!("e2e-worker-{}", i + 1),
                    format!("annex-worker-{}", i + 1),
                )
            };
            let cp = control_planes[i % control_planes.len()].grpc;
            let mut worker_env = env(&[
                ("ANNEX_WORKER_GRPC_LISTEN", grpc.to_string()),
                ("ANNEX_WORKER_ADMIN_LISTEN", admin.to_string()),
                ("ANNEX_WORKER_ID", id.clone()),
                ("ANNEX_WORKER_CONTROL_PLANE_URL", format!("https://{cp}")),
                ("ANNEX_WORKER_CONTROL_PLANE_NAME", "localhost".into()),
                ("ANNEX_WORKER_ADVERTISE_ADDRESS", grpc.to_string()),
                (
                    "ANNEX_WORKER_CACHE_DIR",
                    dir.path()
                        .join(format!("{name}-cache"))
                        .display()
                        .to_string(),
                ),
                ("ANNEX_WORKER_POOL_INSTANCES", "32".into()),
                ("ANNEX_LOG_FORMAT", "text".into()),
            ]);
            worker_env.extend(tls_env("ANNEX_WORKER", &pki, Role::Worker));
            worker_env.extend(opts.process_env.iter().cloned());
            for (k, v) in &fleet.worker_env {
                worker_env.retain(|(key, _)| key != k);
                worker_env.push((k.clone(), v.clone()));
            }
            let mut member = Member {
                grpc,
                admin,
                id,
                proc: spawn_as("annex-worker", &name, dir.path(), &worker_env),
                bin: "annex-worker",
                env: worker_env,
            };
            wait_ready(&mut member.proc, admin).await;
            workers.push(member);
        }
        let worker_addr = workers[0].grpc;

        let operator = channel(&pki, cp_addr, Role::Operator).await;
        let key = KeyPair::generate();
        pb::trust_client::TrustClient::new(operator.clone())
            .add_key(pb::AddKeyRequest {
                publisher: PUBLISHER.into(),
                public_key: key.public_key().to_pem(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("trusting the publisher key: {e}"));
        let hello_manifest = serde_json::json!({
            "name": "com.annex.e2e.hello", "publisher": PUBLISHER, "version": "1.0.0",
            "runtime": "wasm-rust@1", "capabilities": [],
            "ui": {"type": "iframe", "entry": "ui/index.html", "hooks": {"appMenu": {"label": "Hello"}}},
            "api": {"endpoints": [
                {"method": "GET", "path": "/hello", "handler": "dist/main"},
                {"method": "POST", "path": "/echo", "handler": "dist/main"},
                {"method": "DELETE", "path": "/echo", "handler": "dist/main"}
            ]}
        });
        let hello_bundle = pack(
            dir.path(),
            &hello_manifest,
            &hello,
            &[
                ("index.html", UI_INDEX.as_bytes()),
                ("app.js", UI_APP.as_bytes()),
            ],
        );
        let misbehave_manifest = serde_json::json!({
            "name": "com.annex.e2e.misbehave", "publisher": PUBLISHER, "version": "1.0.0",
            "runtime": "wasm-rust@1", "capabilities": [],
            "api": {"endpoints": [
                {"method": "GET", "path": "/loop", "handler": "dist/main"},
                {"method": "GET", "path": "/panic", "handler": "dist/main"}
            ]}
        });
        let misbehave_bundle = pack(dir.path(), &misbehave_manifest, &misbehave, &[]);
        let hello = publish_and_install(&operator, &key, &hello_manifest, &hello_bundle).await;
        let misbehave =
            publish_and_install(&operator, &key, &misbehave_manifest, &misbehave_bundle).await;

        let edge_env: Vec<_> = opts.process_env.into_iter().chain(opts.edge_env).collect();
        let edge = spawn_edge_in(
            dir.path(),
            &pki,
            cp_addr,
            &jwt_secret_file,
            "edge",
            &edge_env,
        )
        .await;
        let stack = Stack {
            dir,
            pki,
            pg,
            cp_addr,
            worker_addr,
            edge,
            jwt_secret_file,
            hello,
            misbehave,
            publisher_key: key,
            control_planes,
            workers,
        };
        // The worker registers itself; wait until the edge routes to it and
        // the first component is compiled.
        let auth = stack.bearer(&serde_json::json!({}));
        let path = format!("/api/ext/{}/hello", stack.hello.registry_id);
        assert_eventually!(
            READY_DEADLINE,
            async || {
                try_send(
                    stack.edge.http,
                    "GET",
                    &path,
                    &[("authorization", &auth)],
                    b"",
                )
                .await
                .is_ok_and(|r| r.status == 200)
            },
            "the edge to reach the worker:\n{}",
            stack.logs()
        );
        stack
    }

    /// A channel to the control plane presenting `role`.
    pub async fn channel(&self, role: Role) -> Channel {
        channel(&self.pki, self.cp_addr, role).await
    }
}

async fn channel(pki: &Path, addr: SocketAddr, role: Role) -> Channel {
    let material = annex_ops::devcerts::role_files(pki, role)
        .load()
        .unwrap_or_else(|e| panic!("certificates: {e}"));
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap_or_else(|e| panic!("url: {e}"))
        .tls_config(material.client_config("localhost"))
        .unwrap_or_else(|e| panic!("tls: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to the control plane: {e}"))
}
