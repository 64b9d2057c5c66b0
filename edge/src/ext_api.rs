//! `/api/ext/{extensionId}/{*path}` (§3): preflight, the shared access
//! pipeline, body cap, dispatch to a worker and the response mapping, with
//! Annex's deliberate differences (allowlisted extension headers, 504 on
//! timeout).

use std::sync::Arc;
use std::time::Instant;

use annex_proto::pb;
use axum::body::Body;
use axum::extract::{RawPathParams, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use tracing::Instrument as _;

use crate::cors::Cors;
use crate::endpoints;
use crate::error::ApiError;
use crate::execute::{self, ExecuteError};
use crate::gateway::{self, Admitted, Call};
use crate::headers::{self, ResponsePolicy};
use crate::state::EdgeState;

pub async fn handle(
    State(state): State<Arc<EdgeState>>,
    params: RawPathParams,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = gateway::request_id(&headers);
    let extension = crate::gateway::path_param(&params, 0);
    let call = serve(
        &state,
        &extension,
        &method,
        &uri,
        &headers,
        body,
        &request_id,
    );
    framed(
        &state,
        "ext",
        &state.ext_cors,
        &method,
        &headers,
        &request_id,
        call,
    )
    .await
}

/// The frame both extension routes share: a CORS preflight or the call, the
/// route's CORS headers, `x-request-id` and the request's metrics.
pub async fn framed<E: IntoResponse>(
    state: &EdgeState,
    route: &'static str,
    cors: &Cors,
    method: &Method,
    headers: &HeaderMap,
    request_id: &str,
    call: impl Future<Output = Result<Response, E>>,
) -> Response {
    let started = Instant::now();
    let mut resp = if Cors::is_preflight(method) {
        cors.preflight(headers).into_response()
    } else {
        let span = request_span(route, method, headers, request_id);
        let mut r = call
            .instrument(span.clone())
            .await
            .unwrap_or_else(IntoResponse::into_response);
        span.record("http.response.status_code", r.status().as_u16());
        if r.status().is_server_error() {
            span.record("otel.status_code", "error");
        }
        cors.decorate(headers, r.headers_mut());
        r
    };
    finish(state, route, request_id, &mut resp, started);
    resp
}

/// The server span of one extension call while spans are exported
/// (`annex_ops::trace_context`): it continues the caller's `traceparent`,
/// and the worker and control-plane calls made for the request are its
/// children.
fn request_span(
    route: &'static str,
    method: &Method,
    headers: &HeaderMap,
    request_id: &str,
) -> tracing::Span {
    let span = annex_ops::span!(
        "edge.request",
        otel.name = if route == "ext" {
            "/api/ext"
        } else {
            "/api/ext-proxy"
        },
        otel.kind = "server",
        http.request.method = method.as_str(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        request_id,
    );
    annex_ops::trace_context::continue_http(&span, headers);
    span
}

/// Sets `x-request-id` and records the request's metrics.
pub fn finish(
    state: &EdgeState,
    route: &'static str,
    request_id: &str,
    resp: &mut Response,
    started: Instant,
) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    state.metrics.observe(
        route,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
}

/// The tail after `/api/ext/{extensionId}`, still percent-encoded.
pub fn raw_tail<'a>(uri: &'a Uri, prefix: &str) -> &'a str {
    let path = uri.path();
    let rest = path.strip_prefix(prefix).unwrap_or("");
    // Skip the extension id segment.
    match rest.split_once('/') {
        Some((_, tail)) => tail,
        None => "",
    }
}

async fn serve(
    state: &EdgeState,
    extension: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    request_id: &str,
) -> Result<Response, ApiError> {
    let principal = gateway::authenticate(state, headers).await?;
    let path =
        endpoints::request_path(raw_tail(uri, "/api/ext/")).ok_or(ApiError::ENDPOINT_NOT_FOUND)?;
    let call = Call {
        extension,
        method: method.as_str(),
        path: &path,
        request_id,
    };
    let admitted = gateway::admit(state, &principal, &call).await?;
    let body = if matches!(*method, Method::GET | Method::HEAD) {
        None
    } else {
        match read_body(body, headers, state.policy.max_body_bytes).await {
            Ok(b) => Some(b.to_vec()),
            Err(e) => {
                admitted.finish("policy_denied", "", e.status.as_u16());
                return Err(e);
            }
        }
    };
    let mut fwd = headers::forward(headers, headers::EXT_REQUEST);
    fwd.insert("x-request-id".into(), request_id.to_owned());
    fwd.insert("x-alga-tenant".into(), admitted.install.tenant.clone());
    fwd.insert(
        "x-alga-extension".into(),
        admitted.install.registry_id.clone(),
    );
    let idempotency_key = if matches!(*method, Method::GET | Method::HEAD) {
        String::new()
    } else {
        headers
            .get("x-idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.trim().is_empty())
            .map(|k| k.trim().to_owned())
            .unwrap_or_else(|| request_id.to_owned())
    };
    let http = pb::HttpRequest {
        method: method.as_str().to_owned(),
        path,
        query: gateway::query_map(uri),
        headers: fwd,
        body,
    };
    let req = gateway::execute_request(
        state,
        &principal,
        &admitted,
        gateway::Execution {
            trigger: "http",
            http,
            idempotency_key,
            traceparent: gateway::traceparent(headers),
        },
    );
    Ok(dispatch(state, admitted, req, ResponsePolicy::Ext).await)
}

/// Reads a request body of at most `limit` bytes; more is 413.
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PAYLOAD_TOO_LARGE);
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // Over the limit, or the client went away mid-body; either way it is not served.
        tracing::debug!(error = %e, "reading the request body failed");
        ApiError::PAYLOAD_TOO_LARGE
    })
}

/// Sends the execution and maps the worker's answer to the client's response
/// and the audit row (§3.1 step 10 with Annex's 504).
pub async fn dispatch(
    state: &EdgeState,
    admitted: Admitted,
    req: pb::ExecuteRequest,
    policy: ResponsePolicy,
) -> Response {
    let request_id = admitted.audit.request_id.clone();
    let result = execute::execute(&state.routes, req, state.policy.timeout).await;
    let outcome = match result {
        Ok((resp, retried)) => {
            if retried {
                state.metrics.worker_retries.inc();
            }
            resp
        }
        Err(ExecuteError::Timeout) => {
            tracing::warn!(request_id = %request_id, "execution timed out");
            admitted.finish("timeout", "timeout", 504);
            return ApiError::gateway_timeout(&request_id).into_response();
        }
        Err(e) => {
            tracing::warn!(request_id = %request_id, error = %e, "execution failed");
            admitted.finish("error", "runner_transport_error", 502);
            return ApiError::bad_gateway(&request_id).into_response();
        }
    };
    match pb::Outcome::try_from(outcome.outcome).unwrap_or(pb::Outcome::Unspecified) {
        pb::Outcome::Ok => {}
        pb::Outcome::Timeout => {
            tracing::warn!(request_id = %request_id, worker = %outcome.worker_id, "guest timed out");
            admitted.finish("timeout", "timeout", 504);
            return ApiError::gateway_timeout(&request_id).into_response();
        }
        other => {
            tracing::warn!(request_id = %request_id, worker = %outcome.worker_id, outcome = ?other, error = %outcome.error, "execution did not complete");
            admitted.finish("error", "runner_error", 502);
            return ApiError::bad_gateway(&request_id).into_response();
        }
    }
    let status = if outcome.status == 0 && policy == ResponsePolicy::Proxy {
        200
    } else {
        outcome.status
    };
    let Some(status) = u16::try_from(status)
        .ok()
        .filter(|s| (200..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
    else {
        tracing::warn!(request_id = %request_id, status = outcome.status, "guest answered an invalid status");
        admitted.finish("error", "invalid_response", 502);
        return ApiError::bad_gateway(&request_id).into_response();
    };
    if status.as_u16() >= 400 {
        admitted.finish("upstream_error", "extension_error_status", status.as_u16());
    } else {
        admitted.finish("ok", "", status.as_u16());
    }
    let body = if matches!(status.as_u16(), 204 | 304) {
        Body::empty()
    } else {
        Body::from(outcome.body.unwrap_or_default())
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers::relay(&outcome.headers, policy);
    resp
}
