//! Stand-ins for the two things of Alga's a runner talks to: a static
//! bundle store serving files in Alga's layout (counting what it serves),
//! and Alga's host application (the storage API with Alga's revision
//! semantics, a scheduler answer, the clients API and a UI-proxy route),
//! both on `127.0.0.1:0`. They record what they were sent so tests can
//! see what left the worker.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde_json::{Value, json};

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a stub");
    let addr = listener.local_addr().expect("stub address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// A static bundle store: files by path, and how often each was served.
#[derive(Default)]
pub struct BundleStore {
    files: Mutex<HashMap<String, Bytes>>,
    served: Mutex<HashMap<String, usize>>,
}

impl BundleStore {
    /// Serves it; returns the base URL (`http://127.0.0.1:<port>/alga-ext`).
    pub async fn start() -> (Arc<BundleStore>, String) {
        let store = Arc::new(BundleStore::default());
        let router = Router::new()
            .fallback(get(file).head(|| async { StatusCode::OK }))
            .with_state(store.clone());
        let addr = serve(router).await;
        (store, format!("http://{addr}/alga-ext"))
    }

    /// The archive's path under the base, in Alga's layout.
    pub fn key(tenant: &str, extension: &str, hex: &str) -> String {
        format!("/alga-ext/tenants/{tenant}/extensions/{extension}/sha256/{hex}/bundle.tar.zst")
    }

    /// Puts `bytes` at `key` (and `signature` as JSON at `key.sig`).
    pub fn put(&self, key: &str, bytes: Vec<u8>, signature: Option<Value>) {
        let mut files = self.files.lock();
        files.insert(key.to_string(), Bytes::from(bytes));
        if let Some(sig) = signature {
            files.insert(format!("{key}.sig"), Bytes::from(sig.to_string()));
        }
    }

    /// How often `key` was served.
    pub fn served(&self, key: &str) -> usize {
        self.served.lock().get(key).copied().unwrap_or(0)
    }
}

async fn file(State(store): State<Arc<BundleStore>>, uri: Uri) -> Response {
    let path = uri.path().to_string();
    let found = store.files.lock().get(&path).cloned();
    match found {
        Some(bytes) => {
            *store.served.lock().entry(path).or_default() += 1;
            bytes.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// One stored storage record.
#[derive(Clone)]
struct Record {
    value: Value,
    metadata: Value,
    revision: u64,
}

/// Alga's host application, as far as the tests reach it.
#[derive(Default)]
pub struct HostApp {
    /// `x-runner-auth` it accepts.
    pub token: String,
    records: Mutex<BTreeMap<(String, String, String), Record>>,
    /// Storage operations received, in order (`"put ns/key"`, …).
    pub storage_calls: Mutex<Vec<String>>,
    /// Headers of the last UI-proxy call.
    pub ui_proxy_headers: Mutex<Option<HeaderMap>>,
    /// Bodies received by the clients API.
    pub clients_calls: Mutex<Vec<Value>>,
}

impl HostApp {
    /// Serves it; returns the base URL.
    pub async fn start(token: &str) -> (Arc<HostApp>, String) {
        let app = Arc::new(HostApp {
            token: token.to_string(),
            ..HostApp::default()
        });
        let router = Router::new()
            .route("/api/internal/ext-storage/install/{install}", post(storage))
            .route(
                "/api/internal/ext-scheduler/install/{install}",
                post(scheduler),
            )
            .route("/api/internal/ext-clients/install/{install}", post(clients))
            .route("/{extension}/proxy/ping", get(ui_proxy))
            .with_state(app.clone());
        let addr = serve(router).await;
        (app, format!("http://{addr}"))
    }

    /// Storage operations received so far.
    pub fn storage_ops(&self) -> Vec<String> {
        self.storage_calls.lock().clone()
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        headers
            .get("x-runner-auth")
            .is_some_and(|v| v.as_bytes() == self.token.as_bytes())
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Alga's storage API: revisions from 1, `ifRevision` checks, keys ascending.
async fn storage(
    State(app): State<Arc<HostApp>>,
    Path(install): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !app.authorised(&headers) {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "Unauthorized", "code": "UNAUTHORIZED"}),
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "Validation error"}),
        );
    };
    let text = |f: &str| body[f].as_str().unwrap_or_default().to_string();
    let (op, ns, key) = (text("operation"), text("namespace"), text("key"));
    app.storage_calls.lock().push(format!("{op} {ns}/{key}"));
    let mut records = app.records.lock();
    let id = (install, ns.clone(), key.clone());
    match op.as_str() {
        "put" => {
            let current = records.get(&id).map(|r| r.revision);
            if let Some(want) = body["ifRevision"].as_u64()
                && current != Some(want)
            {
                return answer(StatusCode::CONFLICT, json!({"code": "REVISION_MISMATCH"}));
            }
            let revision = current.unwrap_or(0) + 1;
            records.insert(
                id,
                Record {
                    value: body["value"].clone(),
                    metadata: body["metadata"].clone(),
                    revision,
                },
            );
            answer(
                StatusCode::OK,
                json!({"namespace": ns, "key": key, "revision": revision}),
            )
        }
        "get" => match records.get(&id) {
            Some(r) => answer(
                StatusCode::OK,
                json!({"namespace": ns, "key": key, "revision": r.revision, "value": r.value, "metadata": r.metadata}),
            ),
            None => answer(StatusCode::NOT_FOUND, json!({"code": "NOT_FOUND"})),
        },
        "delete" => answer(
            StatusCode::OK,
            json!({"success": records.remove(&id).is_some()}),
        ),
        "list" => {
            let items: Vec<Value> = records
                .iter()
                .filter(|((i, n, _), _)| *i == id.0 && *n == ns)
                .map(|((_, n, k), r)| {
                    json!({"namespace": n, "key": k, "revision": r.revision, "value": r.value, "metadata": r.metadata})
                })
                .collect();
            answer(StatusCode::OK, json!({"items": items, "nextCursor": null}))
        }
        _ => answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "Validation error"}),
        ),
    }
}

/// One schedule for `list`; `create` refuses with Alga's 400 record.
async fn scheduler(State(app): State<Arc<HostApp>>, headers: HeaderMap, body: Bytes) -> Response {
    if !app.authorised(&headers) {
        return answer(StatusCode::UNAUTHORIZED, json!({"error": "Unauthorized"}));
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    match body["operation"].as_str() {
        Some("list") => answer(
            StatusCode::OK,
            json!({"schedules": [{"id": "s1", "endpointPath": "/hello", "endpointMethod": "GET",
                   "cron": "0 * * * *", "timezone": "UTC", "enabled": true, "payload": null}]}),
        ),
        Some("create") => answer(
            StatusCode::BAD_REQUEST,
            json!({"success": false, "error": "Invalid cron expression",
                   "fieldErrors": {"cron": "Minimum interval is 5 minutes"}}),
        ),
        _ => answer(StatusCode::BAD_REQUEST, json!({"error": "unsupported"})),
    }
}

async fn clients(State(app): State<Arc<HostApp>>, headers: HeaderMap, body: Bytes) -> Response {
    if !app.authorised(&headers) {
        return answer(StatusCode::UNAUTHORIZED, json!({"error": "Unauthorized"}));
    }
    app.clients_calls
        .lock()
        .push(serde_json::from_slice(&body).unwrap_or_default());
    answer(
        StatusCode::OK,
        json!({"items": [{"clientId": "c1", "clientName": "Acme", "isInactive": false}],
               "totalCount": 1, "page": 1, "pageSize": 25}),
    )
}

async fn ui_proxy(State(app): State<Arc<HostApp>>, headers: HeaderMap) -> Response {
    *app.ui_proxy_headers.lock() = Some(headers);
    (StatusCode::OK, "pong").into_response()
}
