//! `/api/ext-debug/stream` (docs/design/alga-compatibility.md, "Limits and
//! egress"): server-sent events of one extension's logs
//! (guest logging, stderr lines, execution failures) relayed from the control
//! plane's `HostServices.WatchLogs`. Always the caller's own tenant (Alga let
//! a `tenantId` parameter select any tenant; docs/design/differences.md
//! closes that), and the
//! caller needs `extension:read`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use annex_proto::pb;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use tokio_stream::StreamExt as _;

use crate::error::ApiError;
use crate::gateway;
use crate::installs::ResolveError;
use crate::state::EdgeState;

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DebugQuery {
    extension_id: Option<String>,
    tenant_id: Option<String>,
    install_id: Option<String>,
    request_id: Option<String>,
}

pub(crate) async fn handle(
    State(state): State<Arc<EdgeState>>,
    Query(q): Query<DebugQuery>,
    headers: HeaderMap,
) -> Response {
    match open(&state, q, &headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn open(state: &EdgeState, q: DebugQuery, headers: &HeaderMap) -> Result<Response, ApiError> {
    let principal = gateway::authenticate(state, headers).await?;
    if !principal.permissions.read {
        return Err(ApiError::FORBIDDEN);
    }
    if q.tenant_id
        .as_deref()
        .is_some_and(|t| !t.is_empty() && t != principal.tenant)
    {
        return Err(ApiError::TENANT_MISMATCH);
    }
    let Some(extension) = q.extension_id.filter(|e| !e.trim().is_empty()) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "extension_id_required",
        ));
    };
    // Accept an install id or slug too; a disabled install still has logs
    // worth reading, so an unresolvable id is passed through as given.
    let registry_id = match state.installs.resolve(&principal.tenant, &extension).await {
        Ok(i) => i.registry_id.clone(),
        Err(ResolveError::NotFound) => extension,
        Err(_) => return Err(ApiError::POLICY_UNAVAILABLE),
    };
    let stream = state
        .host
        .clone()
        .watch_logs(pb::WatchLogsRequest {
            tenant_id: principal.tenant.clone(),
            extension_id: registry_id,
            install_id: q.install_id.unwrap_or_default(),
            request_id: q.request_id.unwrap_or_default(),
        })
        .await
        .map_err(|s| {
            tracing::warn!(code = ?s.code(), message = s.message(), "opening the log stream failed");
            ApiError::POLICY_UNAVAILABLE
        })?
        .into_inner();
    let events = stream.map_while(|item| match item {
        Ok(e) => Some(Ok::<Event, Infallible>(
            Event::default().data(event_json(&e).to_string()),
        )),
        Err(s) => {
            tracing::debug!(code = ?s.code(), "log stream ended");
            None
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Alga's SSE event shape.
pub(crate) fn event_json(e: &pb::LogEvent) -> serde_json::Value {
    serde_json::json!({
        "ts": e.ts_ms,
        "level": e.level,
        "stream": e.stream,
        "tenantId": e.tenant_id,
        "extensionId": e.extension_id,
        "installId": e.install_id,
        "requestId": e.request_id,
        "versionId": e.version_id,
        "contentHash": e.content_hash,
        "message": e.message,
        "truncated": e.truncated,
    })
}
