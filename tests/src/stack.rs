//! One Annex deployment as child processes: PostgreSQL, one or more control
//! planes, one or more workers and an edge, with mTLS between them from a
//! dev PKI, plus the extensions the tests call, published signed and
//! installed for [`TENANT`]. Fleet tests kill (`SIGKILL`), stop (`SIGTERM`)
//! and restart single processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use annex_bundle::ContentHash;
use annex_bundle::signing::KeyPair;
use annex_devpg::{LocalPostgres, LocalPostgresOptions};
use annex_ops::Role;
use annex_proto::pb;
use annex_testkit::assert_eventually;
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

use crate::http::{get, try_send};

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

/// A running child process and where its log goes.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// `kill -9`, then reaps the process.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Sends SIGTERM (the process drains and exits on its own).
    pub fn terminate(&self) {
        let pid = self
            .child
            .id()
            .unwrap_or_else(|| panic!("{} already exited", self.name));
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill -TERM {pid}: {e}"));
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for {}: {e}", self.name),
            Err(_) => panic!(
                "{} did not exit within {limit:?}:\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }
}

/// A control-plane or worker process, with what it takes to start it again
/// on the same ports.
#[derive(Debug)]
pub struct Member {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    /// The worker id (empty for control planes).
    pub id: String,
    pub proc: Proc,
    bin: &'static str,
    env: Vec<(String, String)>,
}

impl Proc {
    /// The process's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text.get(start..).unwrap_or_default().to_owned()
    }
}

/// An edge process.
#[derive(Debug)]
pub struct EdgeProc {
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub proc: Proc,
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

/// A workspace binary: from `ANNEX_E2E_BIN_DIR` when set (e.g. a release
/// build for measurements), else from the target directory this test was
/// built in (next to `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("ANNEX_E2E_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current exe: {e}"));
            exe.parent()
                .and_then(|deps| deps.parent())
                .unwrap_or_else(|| panic!("no target directory above {}", exe.display()))
                .to_owned()
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --bins`, or scripts/test.sh)",
        path.display()
    );
    path
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr().unwrap_or_else(|e| panic!("addr: {e}"))
}

/// Starts binary `bin_name` logging to `<dir>/<name>.log` (appended to, so
/// a restarted process keeps its earlier output).
fn spawn_as(bin_name: &str, name: &str, dir: &Path, env: &[(String, String)]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap_or_else(|e| panic!("log file: {e}"));
    let err = file.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
    let mut cmd = Command::new(bin(bin_name));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Proc {
        name: name.to_owned(),
        child,
        log,
    }
}

/// Waits for `/ready` on an admin listener, failing with the process's log
/// (at once if the process exits).
async fn wait_ready(proc: &mut Proc, admin: SocketAddr) {
    assert_eventually!(
        READY_DEADLINE,
        async || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("{} exited ({status}):\n{}", proc.name, proc.log_tail());
            }
            try_send(admin, "GET", "/ready", &[], b"")
                .await
                .is_ok_and(|r| r.status == 200)
        },
        "{} to report ready:\n{}",
        proc.name,
        proc.log_tail()
    );
}

fn tls_env(prefix: &str, pki: &Path, role: Role) -> Vec<(String, String)> {
    let files = annex_ops::devcerts::role_files(pki, role);
    vec![
        (format!("{prefix}_TLS_CA"), files.ca.display().to_string()),
        (
            format!("{prefix}_TLS_CERT"),
            files.cert.display().to_string(),
        ),
        (format!("{prefix}_TLS_KEY"), files.key.display().to_string()),
    ]
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// The UI the Chromium test drives: a button that calls `GET /hello`
/// through the bridge and shows the answer.
pub const UI_INDEX: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>hello ui</title></head>
<body>
<button id="call">Call handler</button>
<pre id="out">idle</pre>
<script src="/ext-bridge/sdk.js"></script>
<script src="app.js"></script>
</body></html>
"#;

pub const UI_APP: &str = r#"var bridge = AnnexSdk.createBridge();
var out = document.getElementById('out');
document.getElementById('call').addEventListener('click', function () {
  out.textContent = 'calling';
  AnnexSdk.callHandlerJson(bridge, '/hello').then(function (r) {
    out.textContent = 'answer: ' + r.message + ' for ' + r.tenantId;
  }).catch(function (e) {
    out.textContent = 'error: ' + e.message;
  });
});
bridge.ready();
out.textContent = 'ready';
"#;

fn pack(
    dir: &Path,
    manifest: &serde_json::Value,
    component: &[u8],
    ui: &[(&str, &[u8])],
) -> Vec<u8> {
    let root = dir.join(format!(
        "bundle-{}",
        manifest["name"].as_str().unwrap_or("x")
    ));
    let write = |rel: &str, data: &[u8]| {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        std::fs::write(path, data).unwrap_or_else(|e| panic!("write {rel}: {e}"));
    };
    write("manifest.json", manifest.to_string().as_bytes());
    write("dist/main.wasm", component);
    for (rel, data) in ui {
        write(&format!("ui/{rel}"), data);
    }
    annex_bundle::archive::pack_dir(&root).unwrap_or_else(|e| panic!("pack: {e}"))
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

    /// Starts another edge on this deployment with extra `ANNEX_EDGE_*` settings.
    pub async fn spawn_edge(&self, name: &'static str, extra: &[(String, String)]) -> EdgeProc {
        spawn_edge_in(
            self.dir.path(),
            &self.pki,
            self.cp_addr,
            &self.jwt_secret_file,
            name,
            extra,
        )
        .await
    }

    /// A channel to the control plane presenting `role`.
    pub async fn channel(&self, role: Role) -> Channel {
        channel(&self.pki, self.cp_addr, role).await
    }

    /// A session token for [`TENANT`] with `overrides` applied (`null` removes a claim).
    pub fn token(&self, overrides: &serde_json::Value) -> String {
        let secret = std::fs::read(&self.jwt_secret_file).unwrap_or_else(|e| panic!("secret: {e}"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let mut claims = serde_json::json!({
            "sub": "user-e2e", "tenant": TENANT, "email": "e2e@example.test", "name": "E2E User",
            "user_type": "internal", "permissions": ["extension:read", "extension:write"],
            "aud": AUDIENCE, "iat": now, "exp": now + 600,
        });
        if let (Some(c), Some(o)) = (claims.as_object_mut(), overrides.as_object()) {
            for (k, v) in o {
                if v.is_null() {
                    c.remove(k);
                } else {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        annex_edge::jwt::sign(
            &annex_edge::jwt::SigningKey::Hs256(secret.trim_ascii().to_vec()),
            &claims,
        )
    }

    pub fn bearer(&self, overrides: &serde_json::Value) -> String {
        format!("Bearer {}", self.token(overrides))
    }

    /// The tails of every process's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let members = self.control_planes.iter().chain(&self.workers);
        for p in members
            .map(|m| &m.proc)
            .chain(std::iter::once(&self.edge.proc))
        {
            out.push_str(&format!("--- {} ---\n{}\n", p.name, p.log_tail()));
        }
        out
    }

    /// A one-connection store on this deployment's Postgres, for checks.
    async fn pg_store(&self) -> annex_control_plane::store::PgStore {
        use annex_control_plane::store::{PgStore, PgStoreConfig};
        PgStore::connect(PgStoreConfig {
            url: self.pg.url(),
            max_connections: 1,
        })
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
    }

    /// Audit rows of `registry_id` for [`TENANT`], read from Postgres.
    pub async fn audit_rows(
        &self,
        registry_id: &str,
    ) -> Vec<annex_control_plane::store::ExecutionRow> {
        use annex_control_plane::store::ExecutionLogStore as _;
        let id = registry_id.parse().unwrap_or_else(|e| panic!("uuid: {e}"));
        self.pg_store()
            .await
            .list_executions(TENANT, id, 1000)
            .await
            .unwrap_or_else(|e| panic!("list: {e}"))
    }

    /// Starts control plane or worker `m` again on its ports (after a
    /// kill or stop) and waits until it is ready.
    pub async fn restart(m: &mut Member, dir: &Path) {
        if let Ok(None) = m.proc.child.try_wait() {
            panic!("{} is still running", m.proc.name);
        }
        let name = m.proc.name.clone();
        m.proc = spawn_as(m.bin, &name, dir, &m.env);
        wait_ready(&mut m.proc, m.admin).await;
    }

    /// Publishes a signed bundle of `component` under `manifest` and installs
    /// it for [`TENANT`].
    pub async fn publish_and_install(
        &self,
        manifest: &serde_json::Value,
        component: &[u8],
    ) -> Installed {
        let bundle = pack(self.dir.path(), manifest, component, &[]);
        let operator = self.channel(Role::Operator).await;
        publish_and_install(&operator, &self.publisher_key, manifest, &bundle).await
    }

    /// `Worker.Stats` of worker `i`, asked over mTLS as the control plane.
    pub async fn worker_stats(&self, i: usize) -> pb::WorkerStats {
        let material = annex_ops::devcerts::role_files(&self.pki, Role::ControlPlane)
            .load()
            .unwrap_or_else(|e| panic!("certificates: {e}"));
        let channel = Endpoint::from_shared(format!("https://{}", self.workers[i].grpc))
            .unwrap_or_else(|e| panic!("url: {e}"))
            .tls_config(material.client_config("localhost"))
            .unwrap_or_else(|e| panic!("tls: {e}"))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to worker {i}: {e}"));
        pb::worker_client::WorkerClient::new(channel)
            .stats(pb::Empty {})
            .await
            .unwrap_or_else(|e| panic!("stats of worker {i}: {e}"))
            .into_inner()
    }

    /// Executions in flight across the workers (`Worker.Stats`).
    pub async fn in_flight(&self) -> u32 {
        let mut sum = 0;
        for i in 0..self.workers.len() {
            sum += self.worker_stats(i).await.in_flight;
        }
        sum
    }

    /// Waits until every worker has heartbeated `n` more times: each
    /// heartbeat a control plane takes refreshes the worker's `last_seen`.
    pub async fn heartbeats(&self, n: usize) {
        use annex_control_plane::store::FleetStore as _;
        for _ in 0..n {
            let after = chrono::Utc::now();
            assert_eventually!(
                Duration::from_secs(30),
                async || {
                    let rows = self
                        .pg_store()
                        .await
                        .list_workers(chrono::DateTime::UNIX_EPOCH)
                        .await
                        .unwrap_or_else(|e| panic!("workers: {e}"));
                    self.workers.iter().all(|w| {
                        rows.iter()
                            .any(|row| row.id == w.id && row.last_seen > after)
                    })
                },
                "a heartbeat from every worker after {after}\n{}",
                self.logs()
            );
        }
    }

    /// Whether the edge's admin listener reports ready.
    pub async fn edge_ready(&self) -> bool {
        get(self.edge.admin, "/ready", &[]).await.status == 200
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

async fn spawn_edge_in(
    dir: &Path,
    pki: &Path,
    cp_addr: SocketAddr,
    secret: &Path,
    name: &'static str,
    extra: &[(String, String)],
) -> EdgeProc {
    let (http, admin) = (free_addr(), free_addr());
    let ui_dir = dir.join(format!("{name}-ui"));
    let mut vars = env(&[
        ("ANNEX_EDGE_HTTP_LISTEN", http.to_string()),
        ("ANNEX_EDGE_ADMIN_LISTEN", admin.to_string()),
        ("ANNEX_EDGE_CONTROL_PLANE", format!("https://{cp_addr}")),
        ("ANNEX_EDGE_CONTROL_PLANE_SERVER_NAME", "localhost".into()),
        ("ANNEX_EDGE_ID", name.into()),
        (
            "ANNEX_EDGE_JWT_HS256_SECRET_FILE",
            secret.display().to_string(),
        ),
        ("ANNEX_EDGE_SESSION_COOKIE", "annex_session".into()),
        ("ANNEX_EDGE_UI_CACHE_DIR", ui_dir.display().to_string()),
        ("ANNEX_EDGE_MAX_BODY_BYTES", "65536".into()),
        ("ANNEX_EDGE_TIMEOUT_MS", "2000".into()),
        ("ANNEX_EDGE_RATE_CAPACITY", "100000".into()),
        ("ANNEX_EDGE_RATE_REFILL_PER_SEC", "100000".into()),
        ("ANNEX_LOG_FORMAT", "text".into()),
    ]);
    vars.extend(tls_env("ANNEX_EDGE", pki, Role::Edge));
    // Later entries win: a test's settings override the defaults above.
    for (k, v) in extra {
        vars.retain(|(key, _)| key != k);
        vars.push((k.clone(), v.clone()));
    }
    // Each edge gets its own log file name.
    let mut proc = spawn_named(name, dir, &vars);
    wait_ready(&mut proc, admin).await;
    EdgeProc { http, admin, proc }
}

/// An edge process logging to `<dir>/<name>.log`, so each edge's output
/// stays apart (the first is named `edge`).
fn spawn_named(name: &'static str, dir: &Path, vars: &[(String, String)]) -> Proc {
    spawn_as("annex-edge", name, dir, vars)
}

/// Publishes `bytes` signed with `key` (which the control plane must trust
/// for [`PUBLISHER`]) and installs it for [`TENANT`].
pub async fn publish_and_install(
    operator: &Channel,
    key: &KeyPair,
    manifest: &serde_json::Value,
    bytes: &[u8],
) -> Installed {
    let name = manifest["name"].as_str().unwrap_or_default();
    let version = manifest["version"].as_str().unwrap_or_default();
    let signature =
        annex_bundle::signing::sign_bundle(key, &ContentHash::of(bytes), PUBLISHER, name, version);
    let mut parts = vec![pb::PublishRequest {
        part: Some(pb::publish_request::Part::Header(pb::PublishHeader {
            signature,
            ..Default::default()
        })),
    }];
    parts.extend(bytes.chunks(64 * 1024).map(|c| pb::PublishRequest {
        part: Some(pb::publish_request::Part::Chunk(c.to_vec())),
    }));
    pb::registry_client::RegistryClient::new(operator.clone())
        .publish(futures::stream::iter(parts))
        .await
        .unwrap_or_else(|e| panic!("publishing {name}: {e}"));
    let slug = format!("{PUBLISHER}.{name}").to_lowercase();
    let info = pb::installs_client::InstallsClient::new(operator.clone())
        .install(pb::InstallRequest {
            tenant_id: TENANT.into(),
            extension: slug.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("installing {name}: {e}"))
        .into_inner();
    Installed {
        registry_id: info.registry_id,
        install_id: info.install_id,
        content_hash: info.content_hash,
        slug: slug.replace(' ', "%20"),
    }
}

impl Stack {
    /// Installs an already published extension (registry id or slug) for another tenant.
    pub async fn install_for(&self, tenant: &str, extension: &str) -> Installed {
        let info = pb::installs_client::InstallsClient::new(self.channel(Role::Operator).await)
            .install(pb::InstallRequest {
                tenant_id: tenant.into(),
                extension: extension.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("installing {extension} for {tenant}: {e}"))
            .into_inner();
        Installed {
            registry_id: info.registry_id,
            install_id: info.install_id,
            content_hash: info.content_hash,
            slug: format!("{}.{}", info.publisher, info.name)
                .to_lowercase()
                .replace(' ', "%20"),
        }
    }

    /// The `extension_quota_usage` windows of `tenant`'s `registry_id`, read from Postgres.
    pub async fn usage_windows(
        &self,
        tenant: &str,
        registry_id: &str,
    ) -> Vec<annex_control_plane::store::UsageRow> {
        use annex_control_plane::store::QuotaStore as _;
        let id = registry_id.parse().unwrap_or_else(|e| panic!("uuid: {e}"));
        self.pg_store()
            .await
            .list_usage(tenant, Some(id), None, None)
            .await
            .unwrap_or_else(|e| panic!("usage: {e}"))
    }
}
