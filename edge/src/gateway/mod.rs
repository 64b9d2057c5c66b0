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

use crate::audit::AuditSlot;
use crate::auth::{AuthError, Principal, PrincipalKind, UserType};
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

/// Longest client-supplied request id accepted; longer ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// The client's `x-request-id` when it is sane, else a new UUID.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| {
            !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Who is calling, and do the tenant headers agree (the pipeline's first
/// steps).
pub(crate) async fn authenticate(
    state: &EdgeState,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let principal = state
        .auth
        .authenticate(headers)
        .await
        .map_err(|e| match e {
            AuthError::NoSession => ApiError::UNAUTHORIZED,
            AuthError::BlankTenant => ApiError::INVALID_SESSION,
            AuthError::NoUser => ApiError::UNAUTHENTICATED,
            AuthError::Unavailable => ApiError::POLICY_UNAVAILABLE,
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

/// The `index`th path parameter, percent-decoded (empty when absent or not UTF-8).
pub(crate) fn path_param(params: &axum::extract::RawPathParams, index: usize) -> String {
    params
        .iter()
        .nth(index)
        .and_then(|(_, v)| crate::endpoints::percent_decode(v))
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
        pb::ExecutionRecord {
            // Time-ordered ids keep the log's primary-key index appending at
            // its right edge instead of touching a random page per row.
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: self.tenant.clone(),
            registry_id: self.registry_id.clone(),
            version_id: self.version_id.clone(),
            request_id: self.request_id.clone(),
            started_at_ms: self.started_ms,
            finished_at_ms: unix_ms(),
            status: status.to_owned(),
            metrics_json: serde_json::json!({
                "method": self.method,
                "path": self.path,
                "endpoint_template": self.endpoint_template,
                "principal_kind": self.principal_kind,
                "user_id": self.user_id,
                "http_status": http_status,
                "duration_ms": duration_ms,
            })
            .to_string(),
            error: error.to_owned(),
        }
    }
}

/// An admitted request: it may be dispatched, and its audit slot is held.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub install: Arc<Install>,
    pub audit: AuditCtx,
    pub slot: AuditSlot,
    /// The tenant's quota slot, held until the request is finished and
    /// released when this value is dropped.
    pub _quota: QuotaPermit,
}

impl Admitted {
    /// Writes the request's audit row.
    pub(crate) fn finish(self, status: &str, error: &str, http_status: u16) {
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
    let install = state
        .installs
        .resolve(&principal.tenant, call.extension)
        .await
        .map_err(|e| match e {
            ResolveError::NotFound => ApiError::EXTENSION_NOT_AVAILABLE,
            ResolveError::Unavailable => ApiError::POLICY_UNAVAILABLE,
            ResolveError::Incomplete(what) => {
                tracing::error!(
                    request_id = call.request_id,
                    what,
                    "install resolution incomplete"
                );
                ApiError::bad_gateway(call.request_id)
            }
        })?;
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
        let long = "a".repeat(MAX_REQUEST_ID + 1);
        h.insert(
            "x-request-id",
            http::HeaderValue::from_str(&long).expect("v"),
        );
        assert_eq!(request_id(&h).len(), 36);
    }
}
