//! From an admitted request to the client's answer: the execution a worker
//! runs (built by `annex_dispatch`'s one builder), sending it, and mapping
//! the worker's outcome to the response and the audit row
//! (docs/design/alga-compatibility.md, "Gateway", with Annex's 504 on
//! timeout). It must not rank workers or retry: `annex_dispatch` does.

use annex_dispatch::{ExecuteError, Installed, Invocation, Trigger};
use annex_proto::pb;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};

use super::Admitted;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::headers::{self, ResponsePolicy};
use crate::state::EdgeState;

/// The `user` an execution carries for a principal (none for API keys).
/// Only `/api/ext-proxy` passes on the session's additional fields, as
/// Alga's gateway sends none on `/api/ext`.
fn user_pb(principal: &Principal, trigger: Trigger) -> Option<pb::User> {
    let u = principal.user()?;
    let additional_fields = match trigger {
        Trigger::Proxy => u.additional_fields.iter().cloned().collect(),
        _ => Default::default(),
    };
    Some(pb::User {
        user_id: u.user_id.clone(),
        user_email: u.email.clone(),
        user_name: u.name.clone(),
        user_type: u.user_type.as_str().to_owned(),
        client_name: u.client_name.clone(),
        client_id: u.client_id.clone(),
        additional_fields,
    })
}

/// The caller's W3C `traceparent` when well formed
/// (`00-<32 hex>-<16 hex>-<2 hex>`), carried on to the worker.
pub(crate) fn traceparent(headers: &HeaderMap) -> String {
    let Some(v) = headers.get("traceparent").and_then(|v| v.to_str().ok()) else {
        return String::new();
    };
    let parts: Vec<&str> = v.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2);
    if valid {
        v.trim().to_owned()
    } else {
        String::new()
    }
}

/// What a route adds to an execution besides the install and the caller.
#[derive(Debug)]
pub(crate) struct Execution {
    /// `Http` (`/api/ext`) or `Proxy` (`/api/ext-proxy`).
    pub trigger: Trigger,
    pub http: pb::HttpRequest,
    pub idempotency_key: String,
    pub traceparent: String,
}

/// The [`pb::ExecuteRequest`] for an admitted request.
pub(crate) fn execute_request(
    state: &EdgeState,
    principal: &Principal,
    admitted: &Admitted,
    e: Execution,
) -> pb::ExecuteRequest {
    let i = &admitted.install;
    annex_dispatch::execute_request(
        Installed {
            tenant_id: i.tenant.clone(),
            extension_id: i.registry_id.clone(),
            install_id: i.install_id.clone(),
            version_id: i.version_id.clone(),
            content_hash: i.content_hash.clone(),
            config: i.config.clone(),
            providers: i.providers.clone(),
            secrets_version: i.secrets_version.clone(),
            execution_grant: i.execution_grant.clone(),
            egress_allowlist: i.egress_allowlist.clone(),
            capture: i.capture.as_ref().map(|c| c.to_pb()),
        },
        Invocation {
            request_id: admitted.audit.request_id.clone(),
            trigger: e.trigger,
            schedule_id: String::new(),
            http: e.http,
            user: user_pb(principal, e.trigger),
            limits: Some(pb::Limits {
                timeout_ms: u32::try_from(state.policy.timeout.as_millis()).unwrap_or(u32::MAX),
                ..Default::default()
            }),
            idempotency_key: e.idempotency_key,
            traceparent: e.traceparent,
        },
    )
}

/// Sends the execution and maps the worker's answer to the client's response
/// and the audit row (Alga's mapping, with Annex's 504 on timeout).
pub(crate) async fn dispatch(
    state: &EdgeState,
    admitted: Admitted,
    req: pb::ExecuteRequest,
    policy: ResponsePolicy,
) -> Response {
    let request_id = admitted.audit.request_id.clone();
    let outcome = match state.routes.execute(req).await {
        Ok(executed) => {
            if executed.retried {
                state.metrics.worker_retries.inc();
            }
            executed.response
        }
        Err(ExecuteError::Compiling { retry_after }) => {
            let secs = retry_after.as_secs().max(1);
            tracing::info!(request_id = %request_id, retry_after_secs = secs, "component compiling; the client retries");
            admitted.finish("error", "component_compiling", 503);
            return ApiError::component_compiling(secs).into_response();
        }
        Err(ExecuteError::Idempotency { error, retry_after }) => {
            let answer = ApiError::idempotency(error.code, retry_after.map(|d| d.as_secs()));
            tracing::info!(request_id = %request_id, code = answer.code, "refused for its idempotency key");
            admitted.finish("error", answer.code, answer.status.as_u16());
            return answer.into_response();
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
    let Some(status) = guest_status(outcome.status, policy) else {
        tracing::warn!(request_id = %request_id, status = outcome.status, "guest answered an invalid status");
        admitted.finish("error", "invalid_response", 502);
        return ApiError::bad_gateway(&request_id).into_response();
    };
    // Guest data never panics the edge: an answer whose headers are over
    // the caps is a malformed answer, like an invalid status.
    let worker = outcome.worker_id.clone();
    let replayed = outcome.replayed;
    let response = match guest_response(status, outcome, policy) {
        Ok(mut r) => {
            if replayed {
                // The stored answer of an earlier call with the same key.
                r.headers_mut().insert(
                    "x-idempotent-replay",
                    http::HeaderValue::from_static("true"),
                );
            }
            r
        }
        Err(e) => {
            state.metrics.guest_answers_refused.inc();
            tracing::warn!(request_id = %request_id, worker = %worker, error = %e, "guest answered headers over the caps");
            admitted.finish("error", "invalid_response", 502);
            return ApiError::bad_gateway(&request_id).into_response();
        }
    };
    if status.as_u16() >= 400 {
        admitted.finish("upstream_error", "extension_error_status", status.as_u16());
    } else {
        admitted.finish("ok", "", status.as_u16());
    }
    response
}

/// The client's status for a guest's answer: 200–599 (an unset status is
/// 200 on `/api/ext-proxy`); `None` for anything else.
pub(crate) fn guest_status(status: u32, policy: ResponsePolicy) -> Option<StatusCode> {
    let status = if status == 0 && policy == ResponsePolicy::Proxy {
        200
    } else {
        status
    };
    u16::try_from(status)
        .ok()
        .filter(|s| (200..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
}

/// The client's response for a guest's `Ok` answer with a valid status:
/// its body (none for 204 and 304) and its headers through `policy`; an
/// error when the headers are over the caps (the caller answers 502).
pub(crate) fn guest_response(
    status: StatusCode,
    outcome: pb::ExecuteResponse,
    policy: ResponsePolicy,
) -> Result<Response, headers::RelayError> {
    let relayed = headers::relay(&outcome.headers, policy)?;
    let body = if matches!(status.as_u16(), 204 | 304) {
        Body::empty()
    } else {
        Body::from(outcome.body.unwrap_or_default())
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = relayed;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_travel() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = HeaderMap::new();
        h.insert("traceparent", http::HeaderValue::from_static(ok));
        assert_eq!(traceparent(&h), ok);
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-01",
            "garbage",
        ] {
            h.insert("traceparent", http::HeaderValue::from_static(bad));
            assert_eq!(traceparent(&h), "", "{bad}");
        }
        assert_eq!(traceparent(&HeaderMap::new()), "");
    }
}
