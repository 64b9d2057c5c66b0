//! Test support for the edge's component tests: a real control plane
//! in-process over mTLS (in-memory store), scripted workers registered with
//! it, a published and installed extension, the edge itself on 127.0.0.1:0,
//! session tokens, and a small HTTP/1.1 client.

#![allow(dead_code)]

pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use annex_bundle::ContentHash;
use annex_bundle::signing::KeyPair;
use annex_control_plane::store::{MemoryStore, Store, StoreError, WorkerRow};
use annex_control_plane::{HostAppConfig, Limits, Listeners, Sealer};
use annex_edge::jwt::{self, SigningKey};
use annex_edge::{
    AuditSettings, JwtVerifier, Policy, RateSettings, Settings, UiPolicy, UiStoreSettings,
};
use annex_ops::Role;
use annex_ops::devcerts::DevCa;
use annex_ops::serve::Io;
use annex_proto::pb;
use http::HeaderMap;
use tonic::transport::{Channel, Endpoint};

pub use worker::ScriptedWorker;

pub const TENANT: &str = "tenant-a";
pub const OTHER_TENANT: &str = "tenant-b";
pub const PUBLISHER: &str = "acme";
pub const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-edge-tests";
pub const ORIGIN: &str = "https://app.example.com";
pub const UI_MAX_FILE: u64 = 2048;

/// A control plane on 127.0.0.1:0 over mTLS with the in-memory store.
pub struct Cp {
    pub addr: SocketAddr,
    pub ca: DevCa,
    pub store: Arc<dyn Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Cp {
    pub async fn start() -> Cp {
        annex_ops::tls::install_crypto_provider();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let settings = annex_control_plane::Settings {
            store: store.clone(),
            sealer: Sealer::from_bytes(&[42u8; 32]).expect("kek"),
            limits: Limits::default(),
            host_app: HostAppConfig::new(),
        };
        let ca = DevCa::generate().expect("ca");
        let tls = ca.issue(Role::ControlPlane, "control-plane").expect("cert");
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = grpc.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let io = Io {
            tls,
            listeners: Listeners { grpc, admin },
            admin: annex_ops::admin::AdminState::new(),
        };
        let task = tokio::spawn(annex_control_plane::run(settings, io, async move {
            let _ = stopped.await;
        }));
        Cp {
            addr,
            ca,
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn channel(&self, role: Role) -> Channel {
        let m = self.ca.issue(role, &format!("test-{role}")).expect("cert");
        Endpoint::from_shared(format!("https://{}", self.addr))
            .expect("url")
            .tls_config(m.client_config("localhost"))
            .expect("tls")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn installs(&self) -> pb::installs_client::InstallsClient<Channel> {
        pb::installs_client::InstallsClient::new(self.channel(Role::Operator).await)
    }

    /// Keeps `worker` in the routing snapshot (heartbeats every 500 ms).
    pub fn keep_registered(&self, worker: &ScriptedWorker) -> tokio::task::JoinHandle<()> {
        self.keep_registered_at(&worker.id, worker.addr)
    }

    /// Keeps a worker `id` at `address` in the routing snapshot: its row in
    /// the store is refreshed every 500 ms, as its heartbeats would.
    pub fn keep_registered_at(&self, id: &str, address: SocketAddr) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let (id, address) = (id.to_owned(), address.to_string());
        tokio::spawn(async move {
            loop {
                let row = WorkerRow {
                    id: id.clone(),
                    address: address.clone(),
                    capacity: 64,
                    in_flight: 0,
                    draining: false,
                    cached_hashes: vec![],
                    last_seen: chrono::Utc::now(),
                };
                let _ = store.upsert_worker(row).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    /// Workers the routing snapshot holds: seen in the last 3 s and not draining.
    pub async fn live_workers(&self) -> Result<Vec<WorkerRow>, StoreError> {
        let since = chrono::Utc::now() - chrono::Duration::seconds(3);
        let mut workers = self.store.list_workers(since).await?;
        workers.retain(|w| !w.draining);
        Ok(workers)
    }

    /// Publishes guest log events as a worker does (`HostServices.PublishLogs`).
    pub async fn publish_logs(&self, events: Vec<pb::LogEvent>) {
        pb::host_services_client::HostServicesClient::new(self.channel(Role::Worker).await)
            .publish_logs(pb::LogBatch { events })
            .await
            .expect("publish logs");
    }

    /// Stops serving (the edge keeps its last snapshot).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Cp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An extension published and installed for [`TENANT`].
#[derive(Debug, Clone)]
pub struct Installed {
    pub name: String,
    pub slug: String,
    pub registry_id: String,
    pub install_id: String,
    pub content_hash: String,
}

pub fn manifest(name: &str, client_portal: bool) -> serde_json::Value {
    let mut hooks = serde_json::json!({"appMenu": {"label": "Demo"}});
    if client_portal {
        hooks["clientPortalMenu"] = serde_json::json!({"label": "Portal"});
    }
    serde_json::json!({
        "name": name,
        "publisher": PUBLISHER,
        "version": "1.0.0",
        "runtime": "wasm-js@1",
        "capabilities": ["cap:storage.kv"],
        "ui": {"type": "iframe", "entry": "ui/index.html", "hooks": hooks},
        "api": {"endpoints": [
            {"method": "GET", "path": "/hello", "handler": "dist/main"},
            {"method": "POST", "path": "/echo", "handler": "dist/main"},
            {"method": "GET", "path": "/items/:id", "handler": "dist/main"},
            {"method": "DELETE", "path": "/items/:id", "handler": "dist/main"},
            {"method": "PUT", "path": "/items/:id", "handler": "dist/main"},
            {"method": "GET", "path": "/headers", "handler": "dist/main"},
            {"method": "GET", "path": "/slow", "handler": "dist/main"},
            {"method": "GET", "path": "/trap", "handler": "dist/main"},
            {"method": "GET", "path": "/guest-timeout", "handler": "dist/main"},
            {"method": "GET", "path": "/teapot", "handler": "dist/main"}
        ]}
    })
}

pub const INDEX_HTML: &[u8] = b"<!doctype html><html><body>ui</body></html>";
pub const APP_JS: &[u8] = b"console.log('app');";

/// The smallest valid WebAssembly component: the preamble alone.
const EMPTY_COMPONENT: &[u8] = &[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

pub fn bundle(manifest: &serde_json::Value) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = |p: &str, data: &[u8]| {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, data).expect("write");
    };
    w("manifest.json", manifest.to_string().as_bytes());
    w("dist/main.wasm", EMPTY_COMPONENT);
    w("ui/index.html", INDEX_HTML);
    w("ui/assets/app.js", APP_JS);
    w("ui/big.json", &vec![b' '; (UI_MAX_FILE + 1) as usize]);
    annex_bundle::archive::pack_dir(dir.path()).expect("pack")
}

impl Cp {
    /// Publishes `name` (signed) and installs it for `tenant`.
    pub async fn install(&self, name: &str, tenant: &str, client_portal: bool) -> Installed {
        let key = KeyPair::generate();
        let trust = pb::trust_client::TrustClient::new(self.channel(Role::Operator).await);
        let _ = trust
            .clone()
            .add_key(pb::AddKeyRequest {
                publisher: PUBLISHER.into(),
                public_key: key.public_key().to_pem(),
                ..Default::default()
            })
            .await
            .expect("add key");
        let bytes = bundle(&manifest(name, client_portal));
        let hash = ContentHash::of(&bytes);
        let signature = annex_bundle::signing::sign_bundle(&key, &hash, PUBLISHER, name, "1.0.0");
        let mut parts = vec![pb::PublishRequest {
            part: Some(pb::publish_request::Part::Header(pb::PublishHeader {
                signature,
                ..Default::default()
            })),
        }];
        for chunk in bytes.chunks(64 * 1024) {
            parts.push(pb::PublishRequest {
                part: Some(pb::publish_request::Part::Chunk(chunk.to_vec())),
            });
        }
        let published =
            pb::registry_client::RegistryClient::new(self.channel(Role::Operator).await)
                .publish(futures::stream::iter(parts))
                .await
                .expect("publish")
                .into_inner();
        let _ = published;
        let slug = format!("{PUBLISHER}.{name}").to_lowercase();
        let info = self
            .installs()
            .await
            .install(pb::InstallRequest {
                tenant_id: tenant.into(),
                extension: slug.clone(),
                ..Default::default()
            })
            .await
            .expect("install")
            .into_inner();
        Installed {
            name: name.into(),
            slug,
            registry_id: info.registry_id,
            install_id: info.install_id,
            content_hash: info.content_hash,
        }
    }
}

/// Edge knobs a test may change.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    pub rate: RateSettings,
    pub max_body_bytes: usize,
    pub timeout: Duration,
    pub audit_buffer: usize,
    pub audit_batch: usize,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions {
            rate: RateSettings {
                capacity: 1000,
                refill_per_sec: 1000.0,
            },
            max_body_bytes: 64 * 1024,
            timeout: Duration::from_secs(1),
            audit_buffer: 1024,
            audit_batch: 64,
        }
    }
}

pub struct Edge {
    pub http: SocketAddr,
    pub admin: SocketAddr,
    _ui_dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Edge {
    pub async fn start(cp: &Cp, opts: EdgeOptions) -> Edge {
        let ui_dir = tempfile::tempdir().expect("tempdir");
        let settings = Settings {
            edge_id: "edge-test".into(),
            control_plane_urls: vec![format!("https://{}", cp.addr).parse().expect("url")],
            control_plane_server_name: "localhost".into(),
            worker_server_name: None,
            jwt: JwtVerifier {
                keys: vec![SigningKey::Hs256(HS_SECRET.to_vec()).verifying()],
                audience: "annex".into(),
                leeway_secs: 0,
            },
            session_cookie: Some("annex_session".into()),
            allowed_origins: vec![ORIGIN.into()],
            proxy_allowed_origins: vec![ORIGIN.into()],
            rate: opts.rate,
            policy: Policy {
                max_body_bytes: opts.max_body_bytes,
                timeout: opts.timeout,
            },
            install_cache_ttl: Duration::from_secs(30),
            api_key_cache_ttl: Duration::from_secs(30),
            audit: AuditSettings {
                buffer: opts.audit_buffer,
                batch: opts.audit_batch,
                in_flight: 2,
                flush_interval: Duration::from_millis(50),
            },
            ui_store: UiStoreSettings {
                root: ui_dir.path().to_owned(),
                max_bytes: 64 * 1024 * 1024,
            },
            ui_policy: UiPolicy::new(None, None, Some(UI_MAX_FILE)),
        };
        let tls = cp.ca.issue(Role::Edge, "edge").expect("cert");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (http_addr, admin_addr) = (
            http.local_addr().expect("addr"),
            admin.local_addr().expect("addr"),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(annex_edge::run(
            settings,
            annex_ops::serve::Io {
                tls,
                listeners: annex_edge::Listeners { http, admin },
                admin: annex_ops::admin::AdminState::new(),
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let edge = Edge {
            http: http_addr,
            admin: admin_addr,
            _ui_dir: ui_dir,
            stop: Some(stop),
            task: Some(task),
        };
        assert!(
            eventually(10, || async {
                get(edge.admin, "/ready", &[]).await.status == 200
            })
            .await,
            "the edge never became ready"
        );
        edge
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        send(self.http, method, path, headers, body).await
    }

    /// Stops the edge and waits for it to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("edge task"),
            None => Ok(()),
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A session token for [`TENANT`] with `overrides` applied (a `null`
/// removes a claim).
pub fn token(overrides: serde_json::Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut claims = serde_json::json!({
        "sub": "user-1", "tenant": TENANT, "email": "ann@example.com", "name": "Ann Example",
        "user_type": "internal", "permissions": ["extension:read", "extension:write"],
        "aud": "annex", "exp": now + 300,
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
    jwt::sign(&SigningKey::Hs256(HS_SECRET.to_vec()), &claims)
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection; `path` is sent as written.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
            body,
        )))
        .expect("request");
    let resp = sender.send_request(req).await.expect("send");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes().to_vec();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    send(addr, "GET", path, headers, b"").await
}

/// Polls `check` until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_ms(secs * 1000, check).await
}

pub async fn eventually_ms<F, Fut>(ms: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A control plane, one scripted worker, an installed extension and an edge.
pub struct World {
    pub cp: Cp,
    pub worker: ScriptedWorker,
    pub ext: Installed,
    pub edge: Edge,
    _heartbeat: tokio::task::JoinHandle<()>,
}

impl World {
    pub async fn start() -> World {
        World::start_with(EdgeOptions::default()).await
    }

    pub async fn start_with(opts: EdgeOptions) -> World {
        let cp = Cp::start().await;
        let worker = ScriptedWorker::start(&cp.ca, "worker-1").await;
        let heartbeat = cp.keep_registered(&worker);
        let ext = cp.install("hello", TENANT, false).await;
        // The first snapshot must hold the worker before the edge is ready.
        assert!(
            eventually(5, || async {
                cp.live_workers().await.is_ok_and(|w| !w.is_empty())
            })
            .await,
            "worker never registered"
        );
        let edge = Edge::start(&cp, opts).await;
        World {
            cp,
            worker,
            ext,
            edge,
            _heartbeat: heartbeat,
        }
    }

    /// `/api/ext/{registry id}{path}` with a full-permission session.
    pub async fn call(&self, method: &str, path: &str) -> Resp {
        let auth = bearer(&token(serde_json::json!({})));
        self.edge
            .send(
                method,
                &format!("/api/ext/{}{path}", self.ext.registry_id),
                &[("authorization", &auth)],
                b"",
            )
            .await
    }

    /// Audit rows of the installed extension, newest first.
    pub async fn audit_rows(&self) -> Vec<annex_control_plane::store::ExecutionRow> {
        let id = uuid::Uuid::parse_str(&self.ext.registry_id).expect("uuid");
        self.cp
            .store
            .list_executions(TENANT, id, 1000)
            .await
            .expect("list")
    }
}
