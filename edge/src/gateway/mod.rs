//! The access pipeline `/api/ext` and `/api/ext-proxy` share, in Alga's
//! order (docs/design/alga-compatibility.md, "Gateway"): authentication,
//! tenant match, routable method, active install, declared endpoint,
//! client/RBAC check, rate limit, the tenant's fleet-wide quota, and the
//! audit slot. Each step can stop the request with Alga's exact answer for
//! it. Denials after the install is known are audited as `policy_denied`.
//! The frame around each call ([`frame`]) and the execution and its answer
//! ([`execution`]) live beside it; the routes only assemble them.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use annex_ops::quota::QuotaPermit;
use annex_proto::pb;
use http::HeaderMap;

use crate::audit::{AuditSlot, clean};
use crate::auth::{AuthError, Principal, PrincipalKind, UserType};
use crate::clients::ClientKey;
use crate::endpoints;
use crate::error::ApiError;
use crate::installs::{Install, ResolveError};
use crate::state::EdgeState;

mod execution;
mod frame;

pub(crate) use execution::{Execution, dispatch, execute_request, traceparent};
#[cfg(feature = "fuzzing")]
pub(crate) use execution::{guest_response, guest_status};
pub(crate) use frame::{framed, raw_tail, read_body};

/// The client's `x-request-id` when it is sane, else a new UUID.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| crate::identifiers::is_request_id(id))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// What a route hands the pipeline about the request it serves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Incoming<'a> {
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub headers: &'a HeaderMap,
    pub request_id: &'a str,
    pub client: ClientKey,
}

/// Who is calling, and do the tenant headers agree (the pipeline's first
/// steps).
pub(crate) async fn authenticate(
    state: &EdgeState,
    incoming: &Incoming<'_>,
) -> Result<Principal, ApiError> {
    let headers = incoming.headers;
    let principal = state
        .auth
        .authenticate(headers, incoming.client)
        .await
        .map_err(|e| match e {
            AuthError::NoSession => ApiError::UNAUTHORIZED,
            AuthError::BadTenant => ApiError::INVALID_SESSION,
            AuthError::NoUser | AuthError::MalformedClaim => ApiError::UNAUTHENTICATED,
            AuthError::Unavailable => ApiError::POLICY_UNAVAILABLE,
            AuthError::Limited(retry_after) => ApiError::rate_limited(retry_after),
        })?;
    for name in ["x-alga-tenant", "x-tenant-id"] {
        if let Some(v) = headers.get(name)
            && v.to_str().ok().map(str::trim) != Some(principal.tenant.as_str())
        {
            return Err(ApiError::TENANT_MISMATCH);
        }
    }
    Ok(principal)
}

/// The request path of a route's raw tail ([`endpoints::request_path`]):
/// 404 `endpoint_not_found` for a malformed escape (as Alga), 400
/// `invalid_path` for a control character, before anything is dispatched
/// or written down.
pub(crate) fn decoded_path(raw_tail: &str) -> Result<String, ApiError> {
    endpoints::request_path(raw_tail).map_err(|e| match e {
        endpoints::PathError::Malformed => ApiError::ENDPOINT_NOT_FOUND,
        endpoints::PathError::ControlCharacter => ApiError::INVALID_PATH,
    })
}

/// The `index`th segment of the request path after `prefix`,
/// percent-decoded (empty when absent or not UTF-8). Read from the URI
/// rather than through axum's path extractors, whose refusal of a segment
/// that is not UTF-8 would be a text body instead of the route's answer.
pub(crate) fn path_segment(uri: &http::Uri, prefix: &str, index: usize) -> String {
    uri.path()
        .strip_prefix(prefix)
        .and_then(|rest| rest.split('/').nth(index))
        .and_then(crate::endpoints::percent_decode)
        .unwrap_or_default()
}

/// What the pipeline knows about an admitted (or late-denied) request, and
/// how its audit row is written.
#[derive(Debug)]
pub(crate) struct AuditCtx {
    pub request_id: String,
    pub tenant: String,
    pub registry_id: String,
    pub version_id: String,
    pub method: String,
    pub path: String,
    pub endpoint_template: String,
    pub principal_kind: &'static str,
    pub user_id: String,
    started_ms: i64,
    started: Instant,
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl AuditCtx {
    /// `status`: ok | error | timeout | policy_denied | upstream_error.
    pub(crate) fn row(&self, status: &str, error: &str, http_status: u16) -> pb::ExecutionRecord {
        let duration_ms = self.started.elapsed().as_millis() as u64;
        // Every string is cleaned: one the database refuses would otherwise
        // be refused with its whole batch (see `crate::audit`).
        pb::ExecutionRecord {
            // Time-ordered ids keep the log's primary-key index appending at
            // its right edge instead of touching a random page per row.
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: clean(&self.tenant),
            registry_id: clean(&self.registry_id),
            version_id: clean(&self.version_id),
            request_id: clean(&self.request_id),
            started_at_ms: self.started_ms,
            finished_at_ms: unix_ms(),
            status: clean(status),
            metrics_json: serde_json::json!({
                "method": clean(&self.method),
                "path": clean(&self.path),
                "endpoint_template": clean(&self.endpoint_template),
                "principal_kind": self.principal_kind,
                "user_id": clean(&self.user_id),
                "http_status": http_status,
                "duration_ms": duration_ms,
            })
            .to_string(),
            error: clean(error),
        }
    }
}

/// An admitted request: it may be dispatched, and its audit slot is held.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub install: Arc<Install>,
    pub audit: AuditCtx,
    pub slot: AuditSlot,
    /// During a rollout: where the call's outcome is counted, and its arm.
    pub rollout: Option<(crate::metrics::RolloutMetrics, crate::rollout::Arm)>,
    /// The tenant's quota slot, held until the request is finished and
    /// released when this value is dropped.
    pub _quota: QuotaPermit,
}

impl Admitted {
    /// Writes the request's audit row.
    pub(crate) fn finish(self, status: &str, error: &str, http_status: u16) {
        if let Some((metrics, arm)) = &self.rollout {
            let failed = crate::rollout::is_failure(status, error, http_status);
            metrics.record(arm, failed, self.audit.started.elapsed());
        }
        self.slot.record(self.audit.row(status, error, http_status));
    }
}

/// The request as the access check sees it.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub extension: &'a str,
    /// The effective method (after any ext-proxy override), upper-case.
    pub method: &'a str,
    pub path: &'a str,
    pub request_id: &'a str,
    /// The caller's `x-annex-rollout-key`, if it sent one.
    pub rollout_key: Option<&'a str>,
}

/// The access check (Alga's `assertAccess`) and the audit reservation.
pub(crate) async fn admit(
    state: &EdgeState,
    principal: &Principal,
    call: &Call<'_>,
) -> Result<Admitted, ApiError> {
    if !endpoints::is_routable(call.method) {
        return Err(ApiError::ENDPOINT_NOT_FOUND);
    }
    // A name no extension can have is not looked up (nor cached).
    if !crate::identifiers::is_extension(call.extension) {
        return Err(ApiError::EXTENSION_NOT_AVAILABLE);
    }
    let install = state
        .installs
        .resolve(&principal.tenant, call.extension)
        .await
        .map_err(|e| match e {
            ResolveError::NotFound => ApiError::EXTENSION_NOT_AVAILABLE,
            ResolveError::Unavailable => ApiError::POLICY_UNAVAILABLE,
            ResolveError::Limited(retry_after) => ApiError::rate_limited(retry_after),
            ResolveError::Incomplete(what) => {
                tracing::error!(
                    request_id = call.request_id,
                    what,
                    "install resolution incomplete"
                );
                ApiError::bad_gateway(call.request_id)
            }
        })?;
    // During a rollout: the version this caller sticks to.
    let (install, arm) = install.pick(call.rollout_key.unwrap_or(&principal.audit_id()));
    let endpoint = endpoints::find(&install.endpoints, call.method, call.path);
    let audit = AuditCtx {
        request_id: call.request_id.to_owned(),
        tenant: principal.tenant.clone(),
        registry_id: install.registry_id.clone(),
        version_id: install.version_id.clone(),
        method: call.method.to_owned(),
        path: call.path.to_owned(),
        endpoint_template: endpoint.map(|e| e.path.clone()).unwrap_or_default(),
        principal_kind: principal.kind_name(),
        user_id: principal.audit_id(),
        started_ms: unix_ms(),
        started: Instant::now(),
    };
    let deny = |err: ApiError| {
        if let Some(slot) = state.audit.reserve() {
            slot.record(audit.row("policy_denied", "", err.status.as_u16()));
        }
        err
    };
    if endpoint.is_none() {
        return Err(deny(ApiError::ENDPOINT_NOT_FOUND));
    }
    if !allowed(principal, &install, call.method) {
        return Err(deny(ApiError::FORBIDDEN));
    }
    if let Err(retry_after) = state.limiter.take(&install.install_id) {
        return Err(deny(ApiError::rate_limited(retry_after)));
    }
    let quota = crate::quota::admit(&state.routes.quotas, &principal.tenant, &install.install_id)
        .map_err(|e| {
        state.metrics.quota_refusals.inc();
        deny(e)
    })?;
    let Some(slot) = state.audit.reserve() else {
        state.metrics.audit_full.inc();
        tracing::warn!(request_id = call.request_id, "audit buffer full; refusing");
        return Err(ApiError::POLICY_UNAVAILABLE);
    };
    Ok(Admitted {
        install,
        audit,
        slot,
        rollout: arm.map(|arm| (state.metrics.rollout.clone(), arm)),
        _quota: quota,
    })
}

/// Client users need the extension's client-portal opt-in and a client id;
/// everyone else needs `extension:read` for GET/HEAD, `extension:write`
/// otherwise.
fn allowed(principal: &Principal, install: &Install, method: &str) -> bool {
    if let PrincipalKind::User(u) = &principal.kind
        && u.user_type == UserType::Client
    {
        return install.client_portal_label.is_some() && u.client_id.is_some();
    }
    if matches!(method, "GET" | "HEAD") {
        principal.permissions.read
    } else {
        principal.permissions.write
    }
}

/// The query map, last value winning for a repeated key (as Alga's
/// `Object.fromEntries`).
pub(crate) fn query_map(uri: &http::Uri) -> std::collections::HashMap<String, String> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0.into_iter().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", http::HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", http::HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
        let long = "a".repeat(crate::identifiers::MAX_REQUEST_ID + 1);
        h.insert(
            "x-request-id",
            http::HeaderValue::from_str(&long).expect("v"),
        );
        assert_eq!(request_id(&h).len(), 36);
    }
}
