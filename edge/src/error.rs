//! The gateway's error answers: exactly Alga's `{"error":"<code>"}` bodies
//! with their statuses (docs/design/alga-compatibility.md, "Gateway"), plus `requestId` on
//! gateway failures. Detail
//! goes to the log with the request id, never into the body.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};

/// One refusal or failure the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    /// Set for `bad_gateway` / `gateway_timeout`, which carry the request id.
    pub request_id: Option<String>,
    /// Seconds, for 429 and `component_compiling`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) const fn new(status: StatusCode, code: &'static str) -> ApiError {
        ApiError {
            status,
            code,
            request_id: None,
            retry_after: None,
        }
    }

    /// 401 `Unauthorized`: no session at all.
    pub(crate) const UNAUTHORIZED: ApiError =
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized");
    pub(crate) const INVALID_SESSION: ApiError =
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_session");
    pub(crate) const UNAUTHENTICATED: ApiError =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated");
    pub(crate) const TENANT_MISMATCH: ApiError =
        ApiError::new(StatusCode::FORBIDDEN, "tenant_mismatch");
    pub(crate) const FORBIDDEN: ApiError = ApiError::new(StatusCode::FORBIDDEN, "forbidden");
    pub(crate) const ENDPOINT_NOT_FOUND: ApiError =
        ApiError::new(StatusCode::NOT_FOUND, "endpoint_not_found");
    pub(crate) const EXTENSION_NOT_AVAILABLE: ApiError =
        ApiError::new(StatusCode::NOT_FOUND, "extension_not_available");
    pub(crate) const PAYLOAD_TOO_LARGE: ApiError =
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    pub(crate) const POLICY_UNAVAILABLE: ApiError =
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "access_policy_unavailable");
    /// A decoded request path holding a control character (Annex).
    pub(crate) const INVALID_PATH: ApiError =
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_path");
    /// A cookie-authenticated call from an origin outside the allowlist (Annex).
    pub(crate) const ORIGIN_NOT_ALLOWED: ApiError =
        ApiError::new(StatusCode::FORBIDDEN, "origin_not_allowed");
    /// A cookie-authenticated write whose body a cross-site form could have
    /// sent (Annex).
    pub(crate) const CONTENT_TYPE_NOT_ALLOWED: ApiError =
        ApiError::new(StatusCode::FORBIDDEN, "content_type_not_allowed");
    /// A handler that panicked: a bug in the edge, answered instead of a
    /// dropped connection (Annex).
    pub(crate) const INTERNAL_ERROR: ApiError =
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error");
    /// A request body that did not arrive within the deadline (Annex).
    pub(crate) const REQUEST_TIMEOUT: ApiError =
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout");
    /// A debug stream or poll without `extensionId`.
    pub(crate) const EXTENSION_ID_REQUIRED: ApiError =
        ApiError::new(StatusCode::BAD_REQUEST, "extension_id_required");
    /// A debug stream's `extensionId` that no extension can have.
    pub(crate) const INVALID_EXTENSION_ID: ApiError =
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_extension_id");
    /// A debug poll whose body is not the JSON it takes.
    pub(crate) const INVALID_JSON: ApiError =
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json");
    /// A debug stream's `installId` that no install can have.
    pub(crate) const INVALID_INSTALL_ID: ApiError =
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_install_id");
    /// A debug stream's `requestId` that no request can have.
    pub(crate) const INVALID_REQUEST_ID: ApiError =
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_id");
    /// A debug stream's `Last-Event-ID` or a poll's `lastId` that is not an
    /// event id.
    pub(crate) const INVALID_LAST_ID: ApiError =
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_last_id");
    /// An `x-annex-rollout-key` that is empty, longer than 256 bytes or not
    /// visible ASCII (Annex).
    pub(crate) const INVALID_ROLLOUT_KEY: ApiError =
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_rollout_key");

    pub(crate) fn rate_limited(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        }
    }

    /// Over a tenant's or user's cap of open debug streams (Annex).
    pub(crate) fn too_many_streams() -> ApiError {
        ApiError {
            retry_after: Some(5),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_streams")
        }
    }

    /// 503 while the worker compiles the extension's component (Annex's
    /// answer; Alga's gateway waits for its runner instead).
    pub(crate) fn component_compiling(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "component_compiling")
        }
    }

    /// A refusal for the call's idempotency key (Annex): the key was used
    /// with another request (422 `idempotency_key_reused`), a call with it
    /// is still running (409 `idempotency_in_progress`, `Retry-After`), its
    /// answer was not kept (409 `idempotency_response_not_kept`), or the
    /// records are unreachable (503 `idempotency_unavailable`,
    /// `Retry-After`). Nothing ran for this request.
    pub(crate) fn idempotency(code: annex_proto::ErrorCode, retry_after: Option<u64>) -> ApiError {
        use annex_proto::ErrorCode as C;
        let (status, name) = match code {
            C::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            C::IdempotencyInProgress => (StatusCode::CONFLICT, "idempotency_in_progress"),
            C::IdempotencyResponseNotKept => {
                (StatusCode::CONFLICT, "idempotency_response_not_kept")
            }
            _ => (StatusCode::SERVICE_UNAVAILABLE, "idempotency_unavailable"),
        };
        let retry_after = match code {
            C::IdempotencyInProgress | C::IdempotencyUnavailable => {
                Some(retry_after.unwrap_or(1).max(1))
            }
            _ => None,
        };
        ApiError {
            retry_after,
            ..ApiError::new(status, name)
        }
    }

    pub(crate) fn bad_gateway(request_id: &str) -> ApiError {
        ApiError {
            request_id: Some(request_id.to_owned()),
            ..ApiError::new(StatusCode::BAD_GATEWAY, "bad_gateway")
        }
    }

    pub(crate) fn gateway_timeout(request_id: &str) -> ApiError {
        ApiError {
            request_id: Some(request_id.to_owned()),
            ..ApiError::new(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout")
        }
    }

    pub(crate) fn body(&self) -> serde_json::Value {
        match &self.request_id {
            Some(id) => serde_json::json!({"error": self.code, "requestId": id}),
            None => serde_json::json!({"error": self.code}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        resp
    }
}
