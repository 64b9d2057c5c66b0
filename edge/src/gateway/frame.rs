//! The frame both extension routes share around their call: a CORS
//! preflight or the call itself, the route's CORS headers, `x-request-id`,
//! the server span and the request's metrics; and reading the capped
//! request body. It must not decide access (the pipeline in
//! [`super`] does) or talk to workers.

use std::time::Instant;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri};
use tracing::Instrument as _;

use crate::cors::Cors;
use crate::error::ApiError;
use crate::state::EdgeState;

/// The frame both extension routes share: a CORS preflight or the call, the
/// route's CORS headers, `x-request-id` and the request's metrics.
pub(crate) async fn framed<E: IntoResponse>(
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

/// Sets `x-request-id` and the headers every API answer carries
/// (`nosniff`, the API content security policy), and records the request's
/// metrics.
fn finish(
    state: &EdgeState,
    route: &'static str,
    request_id: &str,
    resp: &mut Response,
    started: Instant,
) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    crate::headers::harden(resp.headers_mut());
    state.metrics.observe(
        route,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
}

/// The tail after `/api/ext/{extensionId}`, still percent-encoded.
pub(crate) fn raw_tail<'a>(uri: &'a Uri, prefix: &str) -> &'a str {
    let path = uri.path();
    let rest = path.strip_prefix(prefix).unwrap_or("");
    // Skip the extension id segment.
    match rest.split_once('/') {
        Some((_, tail)) => tail,
        None => "",
    }
}

/// Reads a request body of at most `limit` bytes within `deadline`; more is
/// 413, later is 408.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PAYLOAD_TOO_LARGE);
    }
    // A body trickled in a byte at a time would hold the request (and its
    // audit slot) open for as long as the client likes.
    let read = tokio::time::timeout(deadline, axum::body::to_bytes(body, limit));
    match read.await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            // Over the limit, or the client went away mid-body; either way it is not served.
            tracing::debug!(error = %e, "reading the request body failed");
            Err(ApiError::PAYLOAD_TOO_LARGE)
        }
        Err(_) => {
            tracing::info!("the request body did not arrive in time");
            Err(ApiError::REQUEST_TIMEOUT)
        }
    }
}
