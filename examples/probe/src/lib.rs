//! A guest that calls one host interface per path and reports what it got as
//! JSON, for the worker's interface tests. Built against world `runner-v2`
//! (every Alga interface plus Annex's `config` and `storage-v2`). Results are `{"ok": ...}` or
//! `{"err": "<enum case>"}`; record-returning functions report the record.
//! The status is 200, or `status_on_err=N` from the query when the result is
//! an `err`. `/storage/put` first waits `sleep_ms` milliseconds when the
//! query has it (a write still in flight, for tests of repeated calls).

wit_bindgen::generate!({
    path: "../wit",
    world: "runner-v2",
});

use alga::extension::types::{
    ClientsListInput, CreateManualInvoiceInput, CreateScheduleInput, HttpHeader, HttpRequest,
    ManualInvoiceItemInput, ScheduleInfo, ServicesListInput, StorageEntry, UpdateScheduleInput,
};
use alga::extension::storage_v2::{PutOptions, StorageFailure};
use alga::extension::{
    clients, config, context, http, invoicing, logging, scheduler, secrets, services, storage,
    storage_v2, ui_proxy, user, user_v2,
};
use serde_json::{Value, json};

struct Probe;

impl Guest for Probe {
    fn handler(request: ExecuteRequest) -> ExecuteResponse {
        let url = request.http.url.clone();
        let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let q = Query::parse(query);
        let body = request.http.body.clone().unwrap_or_default();
        let result = match path {
            "/context" => context_json(),
            "/log" => {
                let msg = q.get("msg").unwrap_or("probe");
                logging::log_info(&format!("info: {msg}"));
                logging::log_warn(&format!("warn: {msg}"));
                logging::log_error(&format!("error: {msg}"));
                json!({"logged": true})
            }
            "/user" => match user::get_user() {
                Ok(u) => json!({"ok": {
                    "tenantId": u.tenant_id, "clientName": u.client_name, "userId": u.user_id,
                    "userEmail": u.user_email, "userName": u.user_name, "userType": u.user_type,
                }}),
                Err(e) => json!({"err": e.name()}),
            },
            "/user-v2" => match user_v2::get_user() {
                Ok(u) => json!({"ok": {
                    "tenantId": u.tenant_id, "clientName": u.client_name, "userId": u.user_id,
                    "userEmail": u.user_email, "userName": u.user_name, "userType": u.user_type,
                    "clientId": u.client_id, "additionalFields": u.additional_fields,
                }}),
                Err(e) => json!({"err": e.name()}),
            },
            "/secrets/get" => match secrets::get(q.get("key").unwrap_or("")) {
                Ok(v) => json!({"ok": v}),
                Err(e) => json!({"err": e.name()}),
            },
            "/secrets/list" => {
                let mut keys = secrets::list_keys();
                keys.sort();
                json!({"keys": keys})
            }
            "/fetch" => fetch(&body),
            "/mix" => mix(q.get("url").unwrap_or("")),
            "/wasi-http" => wasi_http(&body),
            "/config/get" => json!({"value": config::get(q.get("key").unwrap_or(""))}),
            "/config/list" => json!({"entries": config::list()}),
            "/storage/get" => {
                match storage::get(q.get("ns").unwrap_or(""), q.get("key").unwrap_or("")) {
                    Ok(e) => json!({"ok": entry_json(e)}),
                    Err(e) => json!({"err": e.name()}),
                }
            }
            "/storage/put" => {
                if let Some(ms) = q.get("sleep_ms").and_then(|m| m.parse::<u64>().ok()) {
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                let entry = StorageEntry {
                    namespace: q.get("ns").unwrap_or("").to_string(),
                    key: q.get("key").unwrap_or("").to_string(),
                    value: body.clone(),
                    revision: q.get("rev").and_then(|r| r.parse().ok()),
                };
                match storage::put(&entry) {
                    Ok(e) => json!({"ok": entry_json(e)}),
                    Err(e) => json!({"err": e.name()}),
                }
            }
            "/storage/delete" => {
                match storage::delete(q.get("ns").unwrap_or(""), q.get("key").unwrap_or("")) {
                    Ok(()) => json!({"ok": null}),
                    Err(e) => json!({"err": e.name()}),
                }
            }
            "/storage/list" => {
                match storage::list_entries(q.get("ns").unwrap_or(""), q.get("cursor")) {
                    Ok(list) => json!({"ok": list.into_iter().map(entry_json).collect::<Vec<_>>()}),
                    Err(e) => json!({"err": e.name()}),
                }
            }
            "/storage/put-with" => {
                let entry = StorageEntry {
                    namespace: q.get("ns").unwrap_or("").to_string(),
                    key: q.get("key").unwrap_or("").to_string(),
                    value: body.clone(),
                    revision: q.get("rev").and_then(|r| r.parse().ok()),
                };
                match storage_v2::put_with(&entry, put_options(&q)) {
                    Ok(e) => json!({"ok": entry_json(e)}),
                    Err(f) => failure_json(f),
                }
            }
            // Body: [{"key": "...", "value": "<text>", "rev": n?}, ...]
            "/storage/bulk-put" => {
                let items: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
                let entries: Vec<StorageEntry> = items
                    .iter()
                    .map(|i| StorageEntry {
                        namespace: String::new(),
                        key: i["key"].as_str().unwrap_or("").to_string(),
                        value: i["value"].as_str().unwrap_or("").as_bytes().to_vec(),
                        revision: i["rev"].as_u64(),
                    })
                    .collect();
                match storage_v2::bulk_put(q.get("ns").unwrap_or(""), &entries, put_options(&q)) {
                    Ok(list) => json!({"ok": list.into_iter().map(entry_json).collect::<Vec<_>>()}),
                    Err(f) => failure_json(f),
                }
            }
            "/scheduler/list" => match scheduler::list_schedules() {
                Ok(list) => json!({"ok": list.into_iter().map(schedule_json).collect::<Vec<_>>()}),
                Err(e) => json!({"err": e.name()}),
            },
            "/scheduler/get" => match scheduler::get_schedule(q.get("id").unwrap_or("")) {
                Ok(s) => json!({"ok": s.map(schedule_json)}),
                Err(e) => json!({"err": e.name()}),
            },
            "/scheduler/create" => {
                let r = scheduler::create_schedule(&CreateScheduleInput {
                    endpoint: q.get("endpoint").unwrap_or("/hello").to_string(),
                    cron: q.get("cron").unwrap_or("0 * * * *").to_string(),
                    timezone: q.get("tz").map(str::to_string),
                    enabled: None,
                    name: q.get("name").map(str::to_string),
                    payload: q.get("payload").map(str::to_string),
                });
                json!({"success": r.success, "scheduleId": r.schedule_id, "error": r.error, "fieldErrors": r.field_errors})
            }
            "/scheduler/update" => {
                let r = scheduler::update_schedule(
                    q.get("id").unwrap_or(""),
                    &UpdateScheduleInput {
                        endpoint: None,
                        cron: q.get("cron").map(str::to_string),
                        timezone: None,
                        enabled: q.get("enabled").map(|v| v == "true"),
                        name: None,
                        payload: q.get("payload").map(str::to_string),
                    },
                );
                json!({"success": r.success, "error": r.error, "fieldErrors": r.field_errors})
            }
            "/scheduler/delete" => {
                let r = scheduler::delete_schedule(q.get("id").unwrap_or(""));
                json!({"success": r.success, "error": r.error})
            }
            "/scheduler/endpoints" => match scheduler::get_endpoints() {
                Ok(list) => json!({"ok": list.into_iter().map(|e| json!({
                    "id": e.id, "method": e.method, "path": e.path, "handler": e.handler, "schedulable": e.schedulable,
                })).collect::<Vec<_>>()}),
                Err(e) => json!({"err": e.name()}),
            },
            "/invoicing" => {
                let r = invoicing::create_manual_invoice(&CreateManualInvoiceInput {
                    client_id: q.get("client").unwrap_or("").to_string(),
                    items: vec![ManualInvoiceItemInput {
                        service_id: q.get("service").unwrap_or("").to_string(),
                        quantity: 1.0,
                        description: "probe item".to_string(),
                        rate: 100.0,
                        is_discount: None,
                        discount_type: None,
                        applies_to_item_id: None,
                        applies_to_service_id: None,
                    }],
                    invoice_date: None,
                    due_date: None,
                    po_number: None,
                });
                json!({
                    "success": r.success, "invoiceId": r.invoice_id, "invoiceNumber": r.invoice_number,
                    "status": r.status, "subtotal": r.subtotal, "tax": r.tax, "total": r.total,
                    "error": r.error, "fieldErrors": r.field_errors,
                })
            }
            "/clients/list" => match clients::list_clients(&ClientsListInput {
                search: q.get("search").map(str::to_string),
                include_inactive: None,
                page: q.get("page").and_then(|p| p.parse().ok()),
                page_size: q.get("page-size").and_then(|p| p.parse().ok()),
            }) {
                Ok(r) => json!({"ok": {
                    "items": r.items.into_iter().map(|c| json!({"clientId": c.client_id, "clientName": c.client_name})).collect::<Vec<_>>(),
                    "totalCount": r.total_count, "page": r.page, "pageSize": r.page_size,
                }}),
                Err(e) => json!({"err": e.name()}),
            },
            "/clients/get" => match clients::get_client(q.get("id").unwrap_or("")) {
                Ok(c) => {
                    json!({"ok": c.map(|c| json!({"clientId": c.client_id, "clientName": c.client_name}))})
                }
                Err(e) => json!({"err": e.name()}),
            },
            "/services/list" => match services::list_services(&ServicesListInput {
                search: q.get("search").map(str::to_string),
                item_kind: None,
                is_active: None,
                billing_method: None,
                page: q.get("page").and_then(|p| p.parse().ok()),
                page_size: q.get("page-size").and_then(|p| p.parse().ok()),
            }) {
                Ok(r) => json!({"ok": {
                    "items": r.items.into_iter().map(|s| json!({"serviceId": s.service_id, "serviceName": s.service_name})).collect::<Vec<_>>(),
                    "totalCount": r.total_count, "page": r.page, "pageSize": r.page_size,
                }}),
                Err(e) => json!({"err": e.name()}),
            },
            "/services/get" => match services::get_service(q.get("id").unwrap_or("")) {
                Ok(s) => {
                    json!({"ok": s.map(|s| json!({"serviceId": s.service_id, "serviceName": s.service_name}))})
                }
                Err(e) => json!({"err": e.name()}),
            },
            "/ui-proxy" => {
                let payload = if request.http.body.is_some() {
                    Some(body.as_slice())
                } else {
                    None
                };
                match ui_proxy::call_route(q.get("route").unwrap_or(""), payload) {
                    Ok(bytes) => json!({"ok": String::from_utf8_lossy(&bytes)}),
                    Err(e) => json!({"err": e.name()}),
                }
            }
            _ => json!({"err": "unknown probe path", "path": path}),
        };
        let status = match q.get("status_on_err").and_then(|s| s.parse().ok()) {
            Some(status) if result.get("err").is_some() => status,
            _ => 200,
        };
        ExecuteResponse {
            status,
            headers: vec![HttpHeader {
                name: "content-type".to_string(),
                value: "application/json".to_string(),
            }],
            body: Some(result.to_string().into_bytes()),
        }
    }
}

fn context_json() -> Value {
    let c = context::get_context();
    json!({
        "requestId": c.request_id, "tenantId": c.tenant_id, "extensionId": c.extension_id,
        "installId": c.install_id, "versionId": c.version_id,
    })
}

/// The storage key `/mix` reads and writes. Tests of replay patch this
/// literal in the built component to make a bundle that reads another key.
const MIX_KEY: &str = "mix-key-a";

/// `GET /mix?url=U`: what a capture records, in a fixed order: the secret
/// `api_key`, the stored value of [`MIX_KEY`], a put of the current time
/// under it, a fetch of `U`, then the clocks and both random sources.
fn mix(url: &str) -> Value {
    // The secret's length and byte sum, not its value: what the guest
    // answers is recorded as it is.
    let secret = match secrets::get("api_key") {
        Ok(v) => json!({"len": v.len(), "sum": v.bytes().map(u64::from).sum::<u64>()}),
        Err(e) => json!({"err": e.name()}),
    };
    let stored = match storage::get("replay", MIX_KEY) {
        Ok(e) => json!(String::from_utf8_lossy(&e.value)),
        Err(e) => json!({"err": e.name()}),
    };
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let written = storage::put(&StorageEntry {
        namespace: "replay".to_string(),
        key: MIX_KEY.to_string(),
        value: wall.to_string().into_bytes(),
        revision: None,
    })
    .map(|e| json!(e.revision))
    .unwrap_or_else(|e| json!({"err": e.name()}));
    let fetched = match http::fetch(&HttpRequest {
        method: "GET".to_string(),
        url: url.to_string(),
        headers: Vec::new(),
        body: None,
    }) {
        Ok(r) => json!({"status": r.status, "body": r.body.map(|b| String::from_utf8_lossy(&b).into_owned())}),
        Err(e) => json!({"err": e.name()}),
    };
    let started = std::time::Instant::now();
    let secure = wasip2::random::random::get_random_bytes(8);
    let insecure = wasip2::random::insecure::get_insecure_random_bytes(8);
    let (seed_a, seed_b) = wasip2::random::insecure_seed::insecure_seed();
    json!({
        "key": MIX_KEY, "secret": secret, "stored": stored, "written": written,
        "fetched": fetched, "wall_ns": wall,
        "monotonic_ns": started.elapsed().as_nanos() as u64,
        "random": secure, "insecure": insecure, "seed": [seed_a, seed_b],
    })
}

/// `POST /fetch` with `{"method", "url", "headers": [[name, value]], "body"?: text}`.
fn fetch(body: &[u8]) -> Value {
    let spec: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return json!({"err": format!("bad probe input: {e}")}),
    };
    let headers = spec["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter_map(|h| {
                    Some(HttpHeader {
                        name: h.get(0)?.as_str()?.to_string(),
                        value: h.get(1)?.as_str()?.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let request = HttpRequest {
        method: spec["method"].as_str().unwrap_or("GET").to_string(),
        url: spec["url"].as_str().unwrap_or("").to_string(),
        headers,
        body: spec["body"].as_str().map(|b| b.as_bytes().to_vec()),
    };
    match http::fetch(&request) {
        Ok(r) => json!({"ok": {
            "status": r.status,
            "headers": r.headers.into_iter().map(|h| (h.name, h.value)).collect::<Vec<_>>(),
            "body": r.body.map(|b| String::from_utf8_lossy(&b).into_owned()),
        }}),
        Err(e) => json!({"err": e.name()}),
    }
}

/// `POST /wasi-http` with `{"scheme": "http"|"https", "authority", "path"}`:
/// a GET through `wasi:http/outgoing-handler` (the host routes it through
/// the same egress policy as `http.fetch`).
fn wasi_http(body: &[u8]) -> Value {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, OutgoingRequest, Scheme};

    let spec: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return json!({"err": format!("bad probe input: {e}")}),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if spec["scheme"] == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(spec["authority"].as_str());
    let _ = request.set_path_with_query(spec["path"].as_str());
    let pending = match outgoing_handler::handle(request, None) {
        Ok(p) => p,
        Err(e) => return json!({"err": format!("{e:?}")}),
    };
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return json!({"err": format!("{e:?}")}),
        _ => return json!({"err": "no response"}),
    };
    let status = response.status();
    let mut text = Vec::new();
    if let Ok(incoming) = response.consume()
        && let Ok(stream) = incoming.stream()
    {
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            text.extend_from_slice(&chunk);
        }
    }
    json!({"ok": {"status": status, "body": String::from_utf8_lossy(&text)}})
}

/// `storage-v2` options from the query: `ttl=<secs>`, `json=1`, `schema=<version>`.
fn put_options(q: &Query) -> PutOptions {
    PutOptions {
        ttl_seconds: q.get("ttl").and_then(|t| t.parse().ok()),
        json: q.get("json") == Some("1"),
        schema_version: q.get("schema").and_then(|v| v.parse().ok()),
    }
}

fn failure_json(f: StorageFailure) -> Value {
    json!({"err": f.kind.name(), "message": f.message})
}

fn entry_json(e: StorageEntry) -> Value {
    json!({
        "namespace": e.namespace, "key": e.key,
        "value": String::from_utf8_lossy(&e.value), "revision": e.revision,
    })
}

fn schedule_json(s: ScheduleInfo) -> Value {
    json!({
        "id": s.id, "endpointPath": s.endpoint_path, "endpointMethod": s.endpoint_method,
        "name": s.name, "cron": s.cron, "timezone": s.timezone, "enabled": s.enabled,
        "payload": s.payload,
    })
}

/// The decoded query pairs of the request URL.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Query {
        Query(
            query
                .split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Form-urlencoded decoding (`+` is a space, `%XX` a byte).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

export!(Probe);
