//! Alga's runner HTTP API on a worker, driven the way Alga's gateway and
//! scheduler drive its runner (docs/design/alga-compatibility.md, "Runner
//! API"): real Wasmtime and the guests from `examples/`, over HTTP on
//! `127.0.0.1:0`; only Alga's bundle store and host application are stubs
//! (`stubs`).

mod bundles;
mod contract;
mod host_calls;
mod replay;
mod stubs;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use annex_bundle::{ContentHash, TrustBundle};
use annex_worker::runner_api::testing::TestRunnerApi;
use annex_worker::testing::pack_guest;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::tmp_dir;
pub use stubs::{BundleStore, HostApp};

pub const TENANT: &str = "tenant-a";
pub const EXTENSION: &str = "0b3c2f4e-ext-1";
pub const TOKEN: &str = "test-runner-service-token-0123456789";
pub const HOST_TOKEN: &str = "host-app-token";

/// The service token file (written once per test process).
fn token_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tmp_dir("runner-api");
        std::fs::create_dir_all(&dir).expect("token dir");
        let path = dir.join("service-token");
        std::fs::write(&path, format!("{TOKEN}\n")).expect("token file");
        path
    })
}

/// A guest's bundle bytes and content hash (packed once).
pub fn bundle(guest: &str) -> (Vec<u8>, ContentHash) {
    static PACKED: OnceLock<parking_lot::Mutex<std::collections::HashMap<String, Vec<u8>>>> =
        OnceLock::new();
    let packed = PACKED.get_or_init(Default::default);
    let bytes = packed
        .lock()
        .entry(guest.to_string())
        .or_insert_with(|| pack_guest(guest))
        .clone();
    let hash = ContentHash::of(&bytes);
    (bytes, hash)
}

/// A runner API with a stub bundle store and host application.
pub struct Fixture {
    pub api: TestRunnerApi,
    pub store: Arc<BundleStore>,
    pub host: Arc<HostApp>,
    client: reqwest::Client,
}

/// How a fixture is started.
#[derive(Default)]
pub struct Options {
    /// Flags beyond the ones every fixture sets.
    pub flags: Vec<String>,
    /// Trust keys: signatures are then required.
    pub trust: Option<Arc<TrustBundle>>,
    /// No bundle store configured.
    pub no_bundle_store: bool,
    /// A fresh worker without a disk cache (else a shared one, so the
    /// guests compile once per test run).
    pub fresh_cache: bool,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::with(Options::default()).await
    }

    pub async fn with(options: Options) -> Fixture {
        let (store, store_url) = BundleStore::start().await;
        let (host, host_url) = HostApp::start(HOST_TOKEN).await;
        let mut flags = vec![
            format!("--runner-api-token-file={}", token_file().display()),
            format!("--registry-base-url={host_url}/api"),
            format!("--runner-service-token={HOST_TOKEN}"),
            format!("--ui-proxy-base-url={host_url}"),
        ];
        if !options.no_bundle_store {
            flags.push(format!("--bundle-store-base={store_url}"));
        }
        flags.extend(options.flags);
        let cache = (!options.fresh_cache).then(|| tmp_dir("runner-api-cache"));
        let api = TestRunnerApi::start(&flags, options.trust, cache).await;
        Fixture {
            api,
            store,
            host,
            client: reqwest::Client::new(),
        }
    }

    /// Puts a guest's bundle in the store under the test tenant and
    /// extension; returns its hex digest.
    pub fn publish(&self, guest: &str) -> String {
        let (bytes, hash) = bundle(guest);
        self.store.put(
            &BundleStore::key(TENANT, EXTENSION, hash.hex()),
            bytes,
            None,
        );
        hash.hex().to_string()
    }

    /// `POST /v1/execute` with the token and routing headers.
    pub async fn execute(&self, body: &Value) -> (StatusCode, Value) {
        self.execute_with(body, &[]).await
    }

    /// Like [`Fixture::execute`], with extra headers.
    pub async fn execute_with(
        &self,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self
            .request("/v1/execute")
            .header("x-alga-tenant", TENANT)
            .header("x-alga-extension", EXTENSION)
            .json(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("runner API answers");
        let status = response.status();
        let text = response.text().await.expect("a body");
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, json)
    }

    /// A request to `path` with the service token.
    pub fn request(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.api.url("http", path))
            .header("x-runner-service-token", TOKEN)
    }

    /// A request to `path` without any header set.
    pub fn bare(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.api.url("http", path))
    }
}

/// JSON request bodies (the workspace's reqwest is built without its
/// `json` feature).
pub trait JsonRequest {
    fn json(self, body: &Value) -> Self;
}

impl JsonRequest for reqwest::RequestBuilder {
    fn json(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }
}

/// JSON answers, read as text and parsed.
pub trait JsonResponse {
    fn json(self) -> impl Future<Output = Result<Value, String>> + Send;
}

impl JsonResponse for reqwest::Response {
    async fn json(self) -> Result<Value, String> {
        let text = self.text().await.map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
    }
}

/// The envelope Alga's gateway sends for `method path` of bundle `hex`.
pub fn envelope(hex: &str, method: &str, path: &str) -> Value {
    json!({
        "context": {
            "request_id": "req-1",
            "tenant_id": TENANT,
            "extension_id": EXTENSION,
            "install_id": "install-1",
            "content_hash": format!("sha256:{hex}"),
            "version_id": "version-1",
            "config": {}
        },
        "http": {"method": method, "path": path, "query": {}, "headers": {}},
        "limits": {"timeout_ms": 10000}
    })
}

/// The guest's body of a successful answer, as JSON.
pub fn guest_json(answer: &Value) -> Value {
    use base64::Engine as _;
    let b64 = answer["body_b64"]
        .as_str()
        .unwrap_or_else(|| panic!("no body: {answer}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("body_b64 is base64");
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("guest body not JSON ({e}): {answer}"))
}

/// Base64 of `text`.
pub fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
