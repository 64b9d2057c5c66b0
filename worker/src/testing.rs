//! Test support (feature `testing`): builds the guest components in
//! `examples/` on demand, packs and signs them as bundles, and starts a
//! worker on `127.0.0.1:0` with a real tonic client.
//!
//! `examples/build.sh` runs once per test process; it is quick when every
//! guest is up to date. A missing tool (cargo target, npm) fails the test:
//! guests are never silently skipped, in CI or anywhere else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use annex_bundle::{ContentHash, KeyPair, TrustBundle, TrustedKey};
use annex_proto::pb;
use annex_proto::pb::worker_client::WorkerClient;
use tonic::transport::Channel;

use crate::backend::{HostBackend, HostError, NoHostBackend};
use crate::bundles::{DirBundleSource, SignatureRecord, StaticTrust};
use crate::engine::PoolConfig;
use crate::execute::Executor;
use crate::metrics::Metrics;
use crate::server::{self, Sources};
use crate::settings::ExecutorSettings;

/// `examples/` in this repository.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The built component of guest `name` (`hello`, `probe`, `misbehave`,
/// `js-echo`, and the `wasi:http/proxy` guests `wasi-http-hello` and
/// `js-http`), building every guest first if this process has not yet.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let script = examples_dir().join("build.sh");
        let output = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}):\n{}{}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(e) = built {
        panic!("building the guest components failed: {e}");
    }
    let path = examples_dir().join(name).join("dist/main.wasm");
    assert!(path.is_file(), "guest {name} has no {}", path.display());
    path
}

/// Packs guest `name` (its `manifest.json` and built component) as a
/// `bundle.tar.zst`.
pub fn pack_guest(name: &str) -> Vec<u8> {
    let component = std::fs::read(guest(name)).unwrap_or_else(|e| panic!("read guest {name}: {e}"));
    let manifest = std::fs::read(examples_dir().join(name).join("manifest.json"))
        .unwrap_or_else(|e| panic!("read manifest of {name}: {e}"));
    pack(&manifest, &component)
}

/// Packs a manifest and component bytes as a bundle.
pub fn pack(manifest: &[u8], component: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::create_dir_all(dir.path().join("dist")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::write(dir.path().join("manifest.json"), manifest)
        .unwrap_or_else(|e| panic!("write: {e}"));
    std::fs::write(dir.path().join("dist/main.wasm"), component)
        .unwrap_or_else(|e| panic!("write: {e}"));
    annex_bundle::archive::pack_dir(dir.path()).unwrap_or_else(|e| panic!("pack: {e}"))
}

/// `component` with a custom section `annex-variant` holding `tag` appended:
/// the same code under another digest (Wasmtime compiles it in full, as
/// any other component).
pub fn variant(component: &[u8], tag: &str) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"annex-variant";
    let mut contents = Vec::new();
    leb128(name.len(), &mut contents);
    contents.extend_from_slice(name);
    contents.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section
    leb128(contents.len(), &mut out);
    out.extend_from_slice(&contents);
    out
}

/// The publisher every test bundle is signed by.
pub(crate) const PUBLISHER: &str = "annex";

/// A signing key, a trust bundle holding it, and a bundle directory.
pub struct Publisher {
    pub(crate) key: KeyPair,
    pub trust: Arc<TrustBundle>,
    pub bundles: DirBundleSource,
    _dir: Option<tempfile::TempDir>,
    published: parking_lot::Mutex<HashMap<String, ContentHash>>,
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher::new()
    }
}

impl Publisher {
    /// A fresh key and a temporary bundle directory.
    pub fn new() -> Publisher {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut p = Publisher::at(dir.path(), KeyPair::generate());
        p._dir = Some(dir);
        p
    }

    /// `key` and a bundle directory at `dir` (kept). With a fixed key, the
    /// same bundles get the same signatures across runs, so a disk cache in
    /// a kept directory is reused.
    pub fn at(dir: &Path, key: KeyPair) -> Publisher {
        let trust = Arc::new(TrustBundle {
            keys: vec![TrustedKey::new(PUBLISHER, key.public_key())],
        });
        Publisher {
            key,
            trust,
            bundles: DirBundleSource::new(dir),
            _dir: None,
            published: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Signs `bytes` as (`PUBLISHER`, `name`, 0.1.0) with this key.
    pub fn sign(&self, bytes: &[u8], name: &str) -> SignatureRecord {
        let hash = ContentHash::of(bytes);
        SignatureRecord {
            publisher: PUBLISHER.to_string(),
            name: name.to_string(),
            version: "0.1.0".to_string(),
            signature: annex_bundle::signing::sign_bundle(
                &self.key, &hash, PUBLISHER, name, "0.1.0",
            ),
            key_id: String::new(),
        }
    }

    /// Stores `bytes` with `signature` in the bundle directory.
    pub fn store(&self, bytes: &[u8], signature: &SignatureRecord) -> ContentHash {
        self.bundles
            .store(bytes, signature)
            .unwrap_or_else(|e| panic!("store bundle: {e}"))
    }

    /// Packs, signs and stores guest `name` once; returns its content hash.
    pub fn publish(&self, name: &str) -> ContentHash {
        if let Some(h) = self.published.lock().get(name) {
            return h.clone();
        }
        let bytes = pack_guest(name);
        let hash = self.store(&bytes, &self.sign(&bytes, name));
        self.published.lock().insert(name.to_string(), hash.clone());
        hash
    }
}

/// Settings for tests: a small pool (tests run in parallel, each with its
/// own engine) and the given cache directory.
pub fn test_settings(cache_dir: Option<PathBuf>) -> ExecutorSettings {
    let pool = PoolConfig {
        total_component_instances: 32,
        total_core_instances: 32 * 8,
        total_memories: 64,
        total_tables: 64,
        total_stacks: 32,
        ..PoolConfig::default()
    };
    let mut settings = ExecutorSettings {
        worker_id: "test-worker".to_string(),
        cache_dir,
        ..ExecutorSettings::default()
    };
    settings.engine.pool = pool;
    // Tests call a component right after publishing it, as a call after a
    // finished prewarm would: the first call waits for its compile. Tests
    // of the compile wait itself set a short one.
    settings.compile.wait = std::time::Duration::from_secs(300);
    settings
}

/// Keeps guests of workers built from `settings` from `entry`
/// (`host[:port]`), as `--egress-deny` does.
pub fn deny_egress(settings: &mut ExecutorSettings, entry: &str) {
    settings
        .egress
        .deny
        .add(entry)
        .unwrap_or_else(|e| panic!("deny entry {entry}: {e}"));
}

/// Host services for tests: secrets from a map, guest logs recorded (or,
/// with `logs_hang`, taken and never answered, like a hung control plane),
/// every other call unavailable (the control plane's real `HostServices` is
/// tested against the control plane).
#[derive(Default)]
pub struct StubBackend {
    pub secrets: std::collections::BTreeMap<String, String>,
    pub logs: parking_lot::Mutex<Vec<pb::LogEvent>>,
    /// Log publishes never return.
    pub logs_hang: bool,
    /// Log publishes received, waiting now, and the most that were
    /// waiting at once.
    pub log_calls: std::sync::atomic::AtomicUsize,
    pub log_in_flight: std::sync::atomic::AtomicUsize,
    pub log_peak: std::sync::atomic::AtomicUsize,
    /// Captures the worker shipped (docs/design/replay.md).
    pub captures: parking_lot::Mutex<Vec<pb::RecordCaptureRequest>>,
}

/// Counts a log publish out when it ends (or is dropped).
struct Leaving<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl StubBackend {
    /// Recorded log events whose message contains `needle`.
    pub fn logs_containing(&self, needle: &str) -> Vec<pb::LogEvent> {
        self.logs
            .lock()
            .iter()
            .filter(|e| e.message.contains(needle))
            .cloned()
            .collect()
    }
}

#[async_trait::async_trait]
impl HostBackend for StubBackend {
    async fn storage_get(
        &self,
        g: &str,
        n: &str,
        k: &str,
    ) -> Result<Option<crate::backend::StorageRecord>, HostError> {
        NoHostBackend.storage_get(g, n, k).await
    }
    async fn storage_put(
        &self,
        g: &str,
        n: &str,
        k: &str,
        v: Vec<u8>,
        r: Option<u64>,
    ) -> Result<crate::backend::StorageRecord, HostError> {
        NoHostBackend.storage_put(g, n, k, v, r).await
    }
    async fn storage_delete(&self, g: &str, n: &str, k: &str) -> Result<bool, HostError> {
        NoHostBackend.storage_delete(g, n, k).await
    }
    async fn storage_list(
        &self,
        g: &str,
        n: &str,
        c: Option<&str>,
    ) -> Result<Vec<crate::backend::StorageRecord>, HostError> {
        NoHostBackend.storage_list(g, n, c).await
    }
    async fn get_secrets(
        &self,
        _: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, HostError> {
        Ok(self.secrets.clone())
    }
    async fn list_schedules(&self, g: &str) -> Result<Vec<pb::ScheduleInfo>, HostError> {
        NoHostBackend.list_schedules(g).await
    }
    async fn get_schedule(&self, g: &str, id: &str) -> Result<Option<pb::ScheduleInfo>, HostError> {
        NoHostBackend.get_schedule(g, id).await
    }
    async fn create_schedule(
        &self,
        r: pb::CreateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        NoHostBackend.create_schedule(r).await
    }
    async fn update_schedule(
        &self,
        r: pb::UpdateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        NoHostBackend.update_schedule(r).await
    }
    async fn delete_schedule(
        &self,
        g: &str,
        id: &str,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        NoHostBackend.delete_schedule(g, id).await
    }
    async fn get_endpoints(&self, g: &str) -> Result<Vec<pb::EndpointInfo>, HostError> {
        NoHostBackend.get_endpoints(g).await
    }
    async fn call_host_api(
        &self,
        g: &str,
        a: crate::backend::HostApi,
        b: String,
    ) -> Result<crate::backend::HostApiResponse, HostError> {
        NoHostBackend.call_host_api(g, a, b).await
    }
    async fn call_ui_proxy(
        &self,
        g: &str,
        c: crate::backend::UiProxyCall,
    ) -> Result<crate::backend::HostApiResponse, HostError> {
        NoHostBackend.call_ui_proxy(g, c).await
    }
    async fn publish_logs(&self, events: Vec<pb::LogEvent>) -> Result<(), HostError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.log_calls.fetch_add(1, SeqCst);
        let now = self.log_in_flight.fetch_add(1, SeqCst) + 1;
        self.log_peak.fetch_max(now, SeqCst);
        let _leaving = Leaving(&self.log_in_flight);
        if self.logs_hang {
            std::future::pending::<()>().await;
        }
        self.logs.lock().extend(events);
        Ok(())
    }
    async fn record_capture(&self, capture: pb::RecordCaptureRequest) -> Result<(), HostError> {
        self.captures.lock().push(capture);
        Ok(())
    }
}

/// Trust keys a test can replace (e.g. to revoke a key).
#[derive(Debug)]
pub struct SwappableTrust(pub parking_lot::Mutex<Arc<TrustBundle>>);

#[async_trait::async_trait]
impl crate::bundles::TrustSource for SwappableTrust {
    async fn trust(&self) -> Result<Arc<TrustBundle>, crate::bundles::BundleError> {
        Ok(self.0.lock().clone())
    }
}

/// A worker serving on `127.0.0.1:0`, with a connected client.
pub struct TestWorker {
    pub executor: Arc<Executor>,
    pub client: WorkerClient<Channel>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestWorker {
    /// Starts a worker over `publisher`'s bundles and trust, with `backend`
    /// as its host services (or none).
    pub async fn start(
        settings: ExecutorSettings,
        publisher: &Publisher,
        backend: Option<Arc<dyn HostBackend>>,
    ) -> TestWorker {
        let sources = Sources {
            backend: backend.unwrap_or_else(|| Arc::new(NoHostBackend)),
            bundles: Arc::new(publisher.bundles.clone()),
            trust: Arc::new(StaticTrust(publisher.trust.clone())),
        };
        TestWorker::start_with(settings, sources).await
    }

    /// Starts a worker over explicit sources.
    pub async fn start_with(settings: ExecutorSettings, sources: Sources) -> TestWorker {
        let executor = server::build(&settings, sources, Metrics::unregistered())
            .unwrap_or_else(|e| panic!("build worker: {e:#}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let exec = executor.clone();
        let server = tokio::spawn(async move {
            let _ = server::serve_plaintext(exec, listener, async {
                let _ = rx.await;
            })
            .await;
        });
        let client = WorkerClient::connect(format!("http://{addr}"))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"))
            .max_decoding_message_size(crate::grpc::MAX_MESSAGE_BYTES);
        TestWorker {
            executor,
            client,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Sends one execution.
    pub async fn execute(&self, request: pb::ExecuteRequest) -> pb::ExecuteResponse {
        self.client
            .clone()
            .execute(request)
            .await
            .unwrap_or_else(|s| panic!("Execute failed: {s:?}"))
            .into_inner()
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

/// A request builder with sensible test defaults.
#[derive(Debug, Clone)]
pub struct Call {
    pub request: pb::ExecuteRequest,
}

impl Call {
    pub fn new(hash: &ContentHash, method: &str, path: &str) -> Call {
        Call {
            request: pb::ExecuteRequest {
                context: Some(pb::ExecContext {
                    request_id: "req-1".into(),
                    tenant_id: "tenant-a".into(),
                    extension_id: "ext-1".into(),
                    install_id: "install-1".into(),
                    version_id: "version-1".into(),
                    content_hash: hash.to_string(),
                    ..Default::default()
                }),
                http: Some(pb::HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    ..Default::default()
                }),
                limits: Some(pb::Limits {
                    timeout_ms: 10_000,
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    fn ctx(&mut self) -> &mut pb::ExecContext {
        self.request.context.get_or_insert_with(Default::default)
    }

    fn http(&mut self) -> &mut pb::HttpRequest {
        self.request.http.get_or_insert_with(Default::default)
    }

    pub fn tenant(mut self, tenant: &str) -> Call {
        self.ctx().tenant_id = tenant.into();
        self
    }

    pub fn no_install(mut self) -> Call {
        self.ctx().install_id.clear();
        self
    }

    pub fn query(mut self, k: &str, v: &str) -> Call {
        self.http().query.insert(k.into(), v.into());
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Call {
        self.http().headers.insert(k.into(), v.into());
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Call {
        self.http().body = Some(body.into());
        self
    }

    pub fn config(mut self, k: &str, v: &str) -> Call {
        self.ctx().config.insert(k.into(), v.into());
        self
    }

    pub fn caps(mut self, caps: &[&str]) -> Call {
        self.request.providers = caps.iter().map(|c| c.to_string()).collect();
        self
    }

    pub fn allow(mut self, hosts: &[&str]) -> Call {
        self.request.egress_allowlist = hosts.iter().map(|c| c.to_string()).collect();
        self
    }

    pub fn user(mut self, user: pb::User) -> Call {
        self.request.user = Some(user);
        self
    }

    pub fn secrets_version(mut self, v: &str) -> Call {
        self.request.secrets_version = v.into();
        self
    }

    pub fn timeout_ms(mut self, ms: u32) -> Call {
        self.request
            .limits
            .get_or_insert_with(Default::default)
            .timeout_ms = ms;
        self
    }

    pub fn memory_mb(mut self, mb: u32) -> Call {
        self.request
            .limits
            .get_or_insert_with(Default::default)
            .memory_mb = mb;
        self
    }

    pub fn max_response_bytes(mut self, n: u64) -> Call {
        self.request
            .limits
            .get_or_insert_with(Default::default)
            .max_response_bytes = n;
        self
    }

    pub fn build(self) -> pb::ExecuteRequest {
        self.request
    }
}

/// The response body as JSON (panics with the response when it is not).
pub fn json(response: &pb::ExecuteResponse) -> serde_json::Value {
    let body = response.body.as_deref().unwrap_or_default();
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {response:?}"))
}
