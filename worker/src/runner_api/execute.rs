//! One `POST /v1/execute`, in the order of Alga's runner
//! (docs/design/alga-compatibility.md, "Runner API"): the service token
//! (Annex's; before the body is read), the routing headers, idempotent
//! replay, the bundle store, then the executor (admission, bundle fetch and
//! verify, unknown capabilities, secret envelope, body, guest). Once the
//! JSON decoded, every answer is HTTP 200 with the outcome in the envelope.
//!
//! Annex's additions to Alga's table: a missing or wrong token answers
//! HTTP 401; routing headers that differ from the context are refused
//! (`routing_mismatch`); a worker that is draining or full answers status
//! 503 `worker_unavailable` without running the guest.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Json, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tracing::Instrument as _;

use super::bundle_store::StoreObject;
use super::envelope::{self, Answer, ExecuteBody};
use super::host_app::ExecutionHost;
use super::replay::{Claim, Scope};
use super::{RunnerApi, secrets, token};
use crate::bundles;
use crate::execute::{Prepared, Refusal};
use crate::loader::LoadPlan;

/// Longest a duplicate waits for the call it repeats (the executor's
/// ceiling on a time limit).
const MAX_DUPLICATE_WAIT: Duration = Duration::from_secs(300);
/// Alga's gateway sends 30 s; a request without a time limit gets it.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Refuses calls without the service token, before their body is read.
pub(super) async fn require_token(
    State(api): State<Arc<RunnerApi>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(token::HEADER)
        .map(HeaderValue::as_bytes);
    if api.token.accepts(presented) {
        return next.run(request).await;
    }
    let route = if request.uri().path() == "/warmup" {
        "warmup"
    } else {
        "execute"
    };
    api.metrics.call(route, "unauthorized");
    tracing::warn!(route, "runner API call without a valid service token");
    respond(
        StatusCode::UNAUTHORIZED,
        json(&Answer::error(401, "unauthorized")),
        false,
    )
}

/// A routing header's value, if present, UTF-8 and not blank.
pub(super) fn routing_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub(super) async fn handle(
    State(api): State<Arc<RunnerApi>>,
    headers: HeaderMap,
    Json(body): Json<ExecuteBody>,
) -> Response {
    let span = annex_ops::span!(
        "runner_api.execute",
        tenant = %body.context.tenant_id,
        extension = %body.context.extension_id,
        request_id = %body.context.request_id.as_deref().unwrap_or_default()
    );
    api.call(&headers, body).instrument(span).await
}

impl RunnerApi {
    async fn call(&self, headers: &HeaderMap, body: ExecuteBody) -> Response {
        if let Err(answer) = routing(headers, &body) {
            self.metrics.call("execute", "refused");
            return reply(json(&answer), false);
        }
        let running = match self.claim(headers, &body).await {
            Claim::Replay(stored) => {
                self.metrics.call("execute", "replayed");
                tracing::info!("idempotent replay");
                return reply(stored, true);
            }
            Claim::Run(running) => running,
        };
        self.metrics.call("execute", "answered");
        let answer = self.run(headers, body).await;
        tracing::info!(
            status = answer.status,
            error = answer.error.as_deref(),
            "runner API answer"
        );
        let bytes = json(&answer);
        // Alga keeps answers the guest gave, whatever their status.
        if let Some(running) = running
            && answer.error.is_none()
        {
            running.store(bytes.clone());
        }
        reply(bytes, false)
    }

    /// The replay claim for the call's key; no key, no claim.
    async fn claim(&self, headers: &HeaderMap, body: &ExecuteBody) -> Claim {
        let Some(key) = routing_header(headers, "x-idempotency-key") else {
            return Claim::Run(None);
        };
        let c = &body.context;
        let scope = Scope {
            tenant: c.tenant_id.clone(),
            extension: c.extension_id.clone(),
            install: c.install_id.clone().unwrap_or_default(),
            key: key.to_string(),
        };
        let wait = body
            .limits
            .as_ref()
            .and_then(|l| l.timeout_ms)
            .map_or(DEFAULT_WAIT, Duration::from_millis)
            .min(MAX_DUPLICATE_WAIT);
        self.replays.claim(scope, wait).await
    }

    /// Everything after replay: the bundle store, the request, the executor.
    async fn run(&self, headers: &HeaderMap, body: ExecuteBody) -> Answer {
        let Some(store) = &self.bundle_store else {
            return Answer::error(500, "engine_init_failed: BUNDLE_STORE_BASE is not set");
        };
        let hash = match bundles::parse_hash(&body.context.content_hash) {
            Ok(h) => h,
            Err(e) => return Answer::error(502, format!("bundle_fetch_failed: {e}")),
        };
        let opened = body.secret_envelope.as_ref().map(secrets::open);
        let guest_body = envelope::body(body.http.body_b64.as_deref());
        let mut request = body.to_pb(hash.to_string());
        // Alga's order: the envelope, then the body.
        let refusal = match (&opened, &guest_body) {
            (Some(Err(e)), _) => {
                tracing::warn!(error = %e, "secret envelope did not open");
                Some(refusal(500, "secret_decrypt_failed".to_string()))
            }
            (_, Err(e)) => Some(refusal(
                500,
                format!("execute_failed: invalid body base64: {e}"),
            )),
            _ => None,
        };
        if let (Some(http), Ok(b)) = (request.http.as_mut(), guest_body) {
            http.body = b;
        }
        if let Some(envelope) = &body.secret_envelope {
            // Non-empty: the secrets interface then asks the backend.
            request.secrets_version = envelope
                .version
                .clone()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "envelope".to_string());
        }
        request.egress_allowlist = self.egress_allowlist.clone();
        request.idempotency_key = routing_header(headers, "x-idempotency-key")
            .unwrap_or_default()
            .to_string();
        let c = body.context;
        let backend = Arc::new(ExecutionHost {
            app: self.host_app.clone(),
            tenant: c.tenant_id.clone(),
            extension: c.extension_id.clone(),
            install: c.install_id,
            version: c.version_id,
            secrets: opened.and_then(Result::ok).unwrap_or_default(),
        });
        let plan = LoadPlan {
            bundles: Arc::new(StoreObject {
                store: store.clone(),
                tenant: c.tenant_id,
                extension: c.extension_id,
                signed: self.trust.is_some(),
            }),
            trust: self.trust.clone(),
        };
        let prepared = Prepared {
            request,
            plan,
            backend,
            refusal,
            taping: crate::capture::Taping::Off,
        };
        match self.executor.execute_prepared(prepared).await {
            Ok(response) => Answer::from_response(response),
            Err(not_started) => Answer::error(503, format!("worker_unavailable: {not_started}")),
        }
    }

    /// `/warmup` with routing headers: the bundle fetched, verified and
    /// compiled; `Err` with the HTTP status and Alga-style error string.
    pub(super) async fn warm(
        &self,
        tenant: &str,
        extension: &str,
        content_hash: &str,
    ) -> Result<&'static str, (StatusCode, String)> {
        let Some(store) = &self.bundle_store else {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "engine_init_failed: BUNDLE_STORE_BASE is not set".into(),
            ));
        };
        let failed = |e: &dyn std::fmt::Display| {
            (StatusCode::BAD_GATEWAY, format!("bundle_fetch_failed: {e}"))
        };
        let hash = bundles::parse_hash(content_hash).map_err(|e| failed(&e))?;
        let plan = LoadPlan {
            bundles: Arc::new(StoreObject {
                store: store.clone(),
                tenant: tenant.to_string(),
                extension: extension.to_string(),
                signed: self.trust.is_some(),
            }),
            trust: self.trust.clone(),
        };
        let source = self
            .executor
            .prewarm_with(&hash, &plan)
            .await
            .map_err(|e| failed(&e))?;
        Ok(source.as_str())
    }
}

fn refusal(status: u32, error: String) -> Refusal {
    Refusal { status, error }
}

/// Alga's routing headers, which must also name the context's tenant and
/// extension (they pick the bundle; the context is what the guest sees).
fn routing(headers: &HeaderMap, body: &ExecuteBody) -> Result<(), Answer> {
    let (Some(tenant), Some(extension)) = (
        routing_header(headers, "x-alga-tenant"),
        routing_header(headers, "x-alga-extension"),
    ) else {
        return Err(Answer::error(400, "missing_routing_headers"));
    };
    if tenant != body.context.tenant_id || extension != body.context.extension_id {
        return Err(Answer::error(
            400,
            "routing_mismatch: x-alga-tenant and x-alga-extension must equal context.tenant_id and context.extension_id",
        ));
    }
    Ok(())
}

fn json(answer: &Answer) -> Bytes {
    // Serialising strings, numbers and maps of strings cannot fail.
    Bytes::from(serde_json::to_vec(answer).unwrap_or_default())
}

/// HTTP 200 with the envelope; a replay says so in `x-idempotent-replay`.
fn reply(body: Bytes, replayed: bool) -> Response {
    respond(StatusCode::OK, body, replayed)
}

fn respond(status: StatusCode, body: Bytes, replayed: bool) -> Response {
    let mut response = (status, Body::from(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if replayed {
        headers.insert("x-idempotent-replay", HeaderValue::from_static("true"));
    }
    response
}
