//! The error answers each route gives, as OpenAPI responses built from the
//! [`ApiError`] values its code answers with: one response per status,
//! whose body schema lists exactly the codes of that status
//! (docs/design/alga-compatibility.md, "Gateway"), plus `requestId` where
//! the code carries it and `Retry-After` where it is sent.

use std::collections::BTreeMap;

use annex_proto::ErrorCode;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, RefOr, Response, ResponseBuilder};

use crate::error::ApiError;

/// One refusal a route can answer, and when.
pub(crate) struct Refusal {
    pub error: ApiError,
    pub when: &'static str,
}

fn r(error: ApiError, when: &'static str) -> Refusal {
    Refusal { error, when }
}

/// What authentication answers (`gateway::authenticate`), every
/// authenticated route's first step.
fn authentication() -> Vec<Refusal> {
    vec![
        r(ApiError::UNAUTHORIZED, "no valid session or API key"),
        r(
            ApiError::INVALID_SESSION,
            "a session without a tenant, or whose tenant claim is not exactly a tenant id",
        ),
        r(
            ApiError::UNAUTHENTICATED,
            "a session without user id or user type, or with malformed identity claims",
        ),
        r(
            ApiError::rate_limited(1),
            "this client asked about too many unknown API keys",
        ),
        r(
            ApiError::POLICY_UNAVAILABLE,
            "the control plane cannot be asked about an API key",
        ),
        r(
            ApiError::TENANT_MISMATCH,
            "`x-alga-tenant` or `x-tenant-id` differs from the session's tenant",
        ),
        r(
            ApiError::ORIGIN_NOT_ALLOWED,
            "a cookie session from an origin outside the allowlist",
        ),
    ]
}

/// A cookie session's write whose body a form could send (`crate::csrf`).
fn cross_site_write() -> Refusal {
    r(
        ApiError::CONTENT_TYPE_NOT_ALLOWED,
        "a cookie session writing a body that is not JSON or `application/octet-stream`",
    )
}

/// A handler that panicked (`server::catch_panics`), on every route.
fn panicked() -> Refusal {
    r(ApiError::INTERNAL_ERROR, "a bug in the edge (logged)")
}

/// The shared access pipeline and dispatch of `/api/ext` and
/// `/api/ext-proxy` (`gateway::admit`, `gateway::dispatch`).
fn pipeline() -> Vec<Refusal> {
    let mut v = authentication();
    v.extend([
        cross_site_write(),
        r(
            ApiError::INVALID_PATH,
            "the decoded path holds a control character",
        ),
        r(
            ApiError::INVALID_ROLLOUT_KEY,
            "`x-annex-rollout-key` is empty, over 256 bytes or not visible ASCII",
        ),
        r(
            ApiError::ENDPOINT_NOT_FOUND,
            "a method the route does not take, a malformed escape in the path, or a method \
             and path the install's `api.endpoints` do not declare",
        ),
        r(
            ApiError::EXTENSION_NOT_AVAILABLE,
            "no active install of the extension in the caller's tenant",
        ),
        r(
            ApiError::FORBIDDEN,
            "the caller lacks `extension:read` (GET, HEAD) or `extension:write`, or is a client \
             user the extension does not admit",
        ),
        r(
            ApiError::rate_limited(1),
            "the install's token bucket or this edge's share of a fleet quota is spent",
        ),
        r(
            ApiError::POLICY_UNAVAILABLE,
            "the control plane cannot be asked, or the audit buffer is full",
        ),
        r(
            ApiError::PAYLOAD_TOO_LARGE,
            "the body is over `ANNEX_EDGE_MAX_BODY_BYTES`",
        ),
        r(
            ApiError::REQUEST_TIMEOUT,
            "the body did not arrive within `ANNEX_EDGE_TIMEOUT_MS`",
        ),
        r(
            ApiError::component_compiling(1),
            "the worker is still compiling the extension's component",
        ),
        r(
            ApiError::bad_gateway(""),
            "the worker failed, the guest trapped, or answered a status outside 200–599 or \
             headers over the caps",
        ),
        r(
            ApiError::gateway_timeout(""),
            "no answer within `ANNEX_EDGE_TIMEOUT_MS`",
        ),
        panicked(),
    ]);
    v
}

/// `/api/ext`: the pipeline and the refusals for an idempotency key.
pub(crate) fn gateway() -> Vec<Refusal> {
    let mut v = pipeline();
    v.extend([
        r(
            ApiError::idempotency(ErrorCode::IdempotencyKeyReused, None),
            "the `x-idempotency-key` was used with another request",
        ),
        r(
            ApiError::idempotency(ErrorCode::IdempotencyInProgress, None),
            "a call with the key is still running",
        ),
        r(
            ApiError::idempotency(ErrorCode::IdempotencyResponseNotKept, None),
            "the call with the key ran, and its answer was too large to keep",
        ),
        r(
            ApiError::idempotency(ErrorCode::IdempotencyUnavailable, None),
            "the idempotency records cannot be reached (a keyed write is not run)",
        ),
    ]);
    v
}

/// `/api/ext-proxy`: the pipeline (its calls carry no idempotency key).
pub(crate) fn proxy() -> Vec<Refusal> {
    pipeline()
}

/// What both debug-stream forms answer (`debug_stream::authorize`).
fn debug() -> Vec<Refusal> {
    let mut v = authentication();
    v.extend([
        r(ApiError::FORBIDDEN, "the caller lacks `extension:read`"),
        r(
            ApiError::TENANT_MISMATCH,
            "`tenantId` is not the caller's tenant",
        ),
        r(ApiError::EXTENSION_ID_REQUIRED, "no `extensionId`"),
        r(
            ApiError::INVALID_EXTENSION_ID,
            "an `extensionId` no extension can have",
        ),
        r(
            ApiError::INVALID_INSTALL_ID,
            "an `installId` no install can have (control characters, over 256 bytes)",
        ),
        r(
            ApiError::INVALID_REQUEST_ID,
            "a `requestId` no request can have (not 1–128 visible ASCII characters)",
        ),
        r(
            ApiError::INVALID_LAST_ID,
            "`Last-Event-ID` or `lastId` is not an event id (a decimal up to 2^63−1)",
        ),
        r(
            ApiError::POLICY_UNAVAILABLE,
            "the control plane cannot be asked",
        ),
        panicked(),
    ]);
    v
}

/// `GET /api/ext-debug/stream`.
pub(crate) fn debug_stream() -> Vec<Refusal> {
    let mut v = debug();
    v.push(r(
        ApiError::too_many_streams(),
        "the tenant or the user holds as many open streams as allowed",
    ));
    v
}

/// `POST /api/ext-debug/stream`.
pub(crate) fn debug_poll() -> Vec<Refusal> {
    let mut v = debug();
    v.extend([
        cross_site_write(),
        r(
            ApiError::INVALID_JSON,
            "the body is not `{\"lastId\"}` JSON",
        ),
        r(ApiError::PAYLOAD_TOO_LARGE, "the body is over 4 KiB"),
    ]);
    v
}

/// One response per status of `refusals`, keyed by the status.
pub(crate) fn responses(refusals: &[Refusal]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<&Refusal>> = BTreeMap::new();
    for refusal in refusals {
        by_status
            .entry(refusal.error.status.as_u16())
            .or_default()
            .push(refusal);
    }
    by_status
        .into_iter()
        .map(|(status, refusals)| (status.to_string(), RefOr::T(response(&refusals))))
        .collect()
}

/// Whether an error body carries `requestId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestId {
    Absent,
    Optional,
    Required,
}

/// The schema of `{"error": <one of codes>}`, with `requestId` as told.
pub(crate) fn body_schema(codes: Vec<&str>, request_id: RequestId) -> ObjectBuilder {
    let mut error = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "error",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes)),
        )
        .required("error")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    if request_id != RequestId::Absent {
        error = error.property(
            "requestId",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("The request's id, as in `x-request-id`")),
        );
    }
    if request_id == RequestId::Required {
        error = error.required("requestId");
    }
    error
}

/// The response of one status: `{"error": <one of its codes>}`, with
/// `requestId` when the codes carry it.
fn response(refusals: &[&Refusal]) -> Response {
    let mut codes: Vec<&str> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    for refusal in refusals {
        let code = refusal.error.code;
        if !codes.contains(&code) {
            codes.push(code);
        }
        lines.push(format!("`{code}`: {}", refusal.when));
    }
    let request_id = if refusals.iter().all(|r| r.error.request_id.is_some()) {
        RequestId::Required
    } else if refusals.iter().any(|r| r.error.request_id.is_some()) {
        RequestId::Optional
    } else {
        RequestId::Absent
    };
    let error = body_schema(codes, request_id);
    let mut response = ResponseBuilder::new()
        .description(lines.join("; "))
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(error)).build(),
        );
    if refusals.iter().any(|r| r.error.retry_after.is_some()) {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                )
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    response.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_lists_its_codes_once() {
        let responses = responses(&gateway());
        let body = serde_json::to_value(&responses).expect("json");
        let codes =
            &body["503"]["content"]["application/json"]["schema"]["properties"]["error"]["enum"];
        assert_eq!(
            codes,
            &serde_json::json!([
                "access_policy_unavailable",
                "component_compiling",
                "idempotency_unavailable"
            ])
        );
        let bad_gateway = &body["502"]["content"]["application/json"]["schema"];
        assert_eq!(
            bad_gateway["required"],
            serde_json::json!(["error", "requestId"])
        );
        assert!(body["429"]["headers"]["Retry-After"].is_object());
        assert!(body["401"]["headers"].is_null());
    }
}
