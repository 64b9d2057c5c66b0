//! `/api/ext-debug/stream` (docs/design/alga-compatibility.md, "Limits and
//! egress"): server-sent events of one extension's logs
//! (guest logging, stderr lines, execution failures) relayed from the control
//! plane's `HostServices.WatchLogs`: the recent tail first (200 by default),
//! then new events, each with its id as the SSE event id so a reconnecting
//! client resumes with `Last-Event-ID`. `POST` is the polling form
//! (`{"lastId"}` → `{"events", "lastId"}`, from `HostServices.ListLogs`). Always the caller's own tenant (Alga let
//! a `tenantId` parameter select any tenant; docs/design/differences.md
//! closes that), and the
//! caller needs `extension:read`. Open streams are capped per tenant and per
//! user ([`StreamCaps`]; 429 `too_many_streams` beyond), and a cookie
//! session's stream must come from an allowed origin (`crate::csrf`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use annex_proto::pb;
use axum::body::Body;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, Uri};
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use tokio_stream::StreamExt as _;

use crate::clients::Client;
use crate::csrf;
use crate::error::ApiError;
use crate::gateway::{self, Incoming};
use crate::installs::ResolveError;
use crate::state::EdgeState;

/// Whose logs: the stream's and the poll's query (for a repeated name the
/// last value wins, as everywhere on the edge).
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub(crate) struct DebugQuery {
    /// The extension: its registry id, install id or slug (required).
    extension_id: Option<String>,
    /// Alga's tenant selector: when given and not empty, it must be the
    /// caller's own tenant (else 403 `tenant_mismatch`).
    tenant_id: Option<String>,
    /// Only the events of this install.
    install_id: Option<String>,
    /// Only the events of this request.
    request_id: Option<String>,
}

impl DebugQuery {
    fn from_uri(uri: &Uri) -> DebugQuery {
        let mut q = gateway::query_map(uri);
        DebugQuery {
            extension_id: q.remove("extensionId"),
            tenant_id: q.remove("tenantId"),
            install_id: q.remove("installId"),
            request_id: q.remove("requestId"),
        }
    }
}

/// Server-sent events of the caller's tenant's logs of one extension.
#[utoipa::path(
    get,
    path = "/api/ext-debug/stream",
    operation_id = "debug_stream",
    tag = "debug",
    params(
        DebugQuery,
        ("Last-Event-ID" = Option<String>, Header,
            description = "Resume after this event id (decimal, at most 20 digits)"),
    ),
    security(("session" = []), ("session_cookie" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "An endless stream: the recent tail, then new events; \
            each event's `id` is its log id and its `data` a `LogEvent` as JSON; a comment \
            every 15 s keeps the connection open", content_type = "text/event-stream", body = String),
        crate::openapi::DebugStreamErrors,
    ),
)]
pub(crate) async fn handle(
    State(state): State<Arc<EdgeState>>,
    Client(client): Client,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let q = DebugQuery::from_uri(&uri);
    let request_id = gateway::request_id(&headers);
    let incoming = Incoming {
        method: &method,
        uri: &uri,
        headers: &headers,
        request_id: &request_id,
        client,
    };
    match open(&state, q, &incoming).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The debug stream's polling form.
///
/// `POST` with the stream's query and `{"lastId": …}` answers
/// `{"events": […], "lastId": …}`: the events after `lastId`, or without it
/// the recent tail, and the id to send next time.
#[utoipa::path(
    post,
    path = "/api/ext-debug/stream",
    operation_id = "debug_poll",
    tag = "debug",
    params(DebugQuery),
    request_body(content = Option<PollBody>, content_type = "application/json",
        description = "At most 4 KiB; an empty body is `{}`"),
    security(("session" = []), ("session_cookie" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The events after `lastId` (at most 100), or without it \
            the recent tail, and the id to send next time", body = PollAnswer),
        crate::openapi::DebugPollErrors,
    ),
)]
pub(crate) async fn poll(
    State(state): State<Arc<EdgeState>>,
    Client(client): Client,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let q = DebugQuery::from_uri(&uri);
    let request_id = gateway::request_id(&headers);
    let incoming = Incoming {
        method: &method,
        uri: &uri,
        headers: &headers,
        request_id: &request_id,
        client,
    };
    match page(&state, q, &incoming, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Whose logs a caller may read: the checks both forms share.
struct Watch {
    tenant: String,
    user: String,
    /// Registry id.
    extension: String,
    /// Only this install's events (empty: any).
    install: String,
    /// Only this request's events (empty: any).
    request: String,
}

async fn authorize(
    state: &EdgeState,
    q: &DebugQuery,
    incoming: &Incoming<'_>,
) -> Result<Watch, ApiError> {
    let principal = gateway::authenticate(state, incoming).await?;
    csrf::check(
        &principal,
        &state.ext_cors,
        incoming.method,
        incoming.headers,
    )?;
    if !principal.permissions.read {
        return Err(ApiError::FORBIDDEN);
    }
    if q.tenant_id
        .as_deref()
        .is_some_and(|t| !t.is_empty() && t != principal.tenant)
    {
        return Err(ApiError::TENANT_MISMATCH);
    }
    let Some(extension) = q.extension_id.clone().filter(|e| !e.trim().is_empty()) else {
        return Err(ApiError::EXTENSION_ID_REQUIRED);
    };
    if !crate::identifiers::is_extension(&extension) {
        return Err(ApiError::INVALID_EXTENSION_ID);
    }
    // The filters reach the log's store: one no event can carry (a control
    // character, which Postgres text cannot even hold) is refused here.
    let install = q.install_id.clone().unwrap_or_default();
    if !install.is_empty() && !crate::identifiers::is_extension(&install) {
        return Err(ApiError::INVALID_INSTALL_ID);
    }
    let request = q.request_id.clone().unwrap_or_default();
    if !request.is_empty() && !crate::identifiers::is_request_id(&request) {
        return Err(ApiError::INVALID_REQUEST_ID);
    }
    // Accept an install id or slug too; a disabled install still has logs
    // worth reading, so an unresolvable id is passed through as given.
    let extension = match state.installs.resolve(&principal.tenant, &extension).await {
        Ok(i) => i.registry_id.clone(),
        Err(ResolveError::NotFound) => extension,
        Err(_) => return Err(ApiError::POLICY_UNAVAILABLE),
    };
    Ok(Watch {
        user: format!("{}/{}", principal.tenant, principal.audit_id()),
        tenant: principal.tenant,
        extension,
        install,
        request,
    })
}

async fn open(
    state: &EdgeState,
    q: DebugQuery,
    incoming: &Incoming<'_>,
) -> Result<Response, ApiError> {
    let watch = authorize(state, &q, incoming).await?;
    // A reconnecting `EventSource` resumes after the last id it saw.
    let after_id = match incoming.headers.get("last-event-id") {
        Some(v) => event_id(v.to_str().ok())?,
        None => String::new(),
    };
    let Some(permit) = state.debug_streams.acquire(&watch.tenant, &watch.user) else {
        state.metrics.debug_stream_refusals.inc();
        tracing::info!(tenant = %watch.tenant, "debug stream refused over its cap");
        return Err(ApiError::too_many_streams());
    };
    let stream = state
        .host
        .clone()
        .watch_logs(pb::WatchLogsRequest {
            tenant_id: watch.tenant,
            extension_id: watch.extension,
            install_id: watch.install,
            request_id: watch.request,
            tail: state.debug_streams.tail(),
            after_id,
        })
        .await
        .map_err(|s| {
            tracing::warn!(code = ?s.code(), message = s.message(), "opening the log stream failed");
            ApiError::POLICY_UNAVAILABLE
        })?
        .into_inner();
    let events = stream.map_while(move |item| {
        // The stream's cap slot lives as long as the stream.
        let _held = &permit;
        match item {
            Ok(e) => Some(Ok::<Event, Infallible>(
                Event::default()
                    .id(e.id.clone())
                    .data(LogEventBody::from(&e).to_json()),
            )),
            Err(s) => {
                tracing::debug!(code = ?s.code(), "log stream ended");
                None
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// A polling request's body.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PollBody {
    /// The `lastId` of the previous answer; absent or empty: the recent tail.
    #[schema(pattern = "^[0-9]{0,19}$")]
    last_id: Option<String>,
}

/// A poll's answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PollAnswer {
    events: Vec<LogEventBody>,
    /// The id to send as `lastId` next time.
    last_id: String,
}

/// The largest polling body read.
const MAX_POLL_BODY: usize = 4096;
/// Events one poll after `lastId` answers with at most.
const POLL_PAGE: u32 = 100;

async fn page(
    state: &EdgeState,
    q: DebugQuery,
    incoming: &Incoming<'_>,
    body: Body,
) -> Result<Response, ApiError> {
    let watch = authorize(state, &q, incoming).await?;
    let bytes = axum::body::to_bytes(body, MAX_POLL_BODY)
        .await
        .map_err(|_| ApiError::PAYLOAD_TOO_LARGE)?;
    let body: PollBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        PollBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|_| ApiError::INVALID_JSON)?
    };
    let after_id = event_id(body.last_id.as_deref())?;
    let limit = if after_id.is_empty() {
        state.debug_streams.tail()
    } else {
        POLL_PAGE
    };
    let page = state
        .host
        .clone()
        .list_logs(pb::ListLogsRequest {
            tenant_id: watch.tenant,
            extension_id: watch.extension,
            install_id: watch.install,
            request_id: watch.request,
            after_id,
            limit,
        })
        .await
        .map_err(|s| {
            tracing::warn!(code = ?s.code(), message = s.message(), "reading the log failed");
            ApiError::POLICY_UNAVAILABLE
        })?
        .into_inner();
    let answer = PollAnswer {
        events: page.events.iter().map(LogEventBody::from).collect(),
        last_id: page.last_id,
    };
    Ok(axum::Json(answer).into_response())
}

/// An event id from a client: empty, or the decimal id an earlier answer
/// gave (a position in the log, at most `i64::MAX`); anything else is 400
/// `invalid_last_id`.
fn event_id(id: Option<&str>) -> Result<String, ApiError> {
    let id = id.unwrap_or_default().trim();
    if id.is_empty() || (id.bytes().all(|b| b.is_ascii_digit()) && id.parse::<i64>().is_ok()) {
        Ok(id.to_owned())
    } else {
        Err(ApiError::INVALID_LAST_ID)
    }
}

/// Caps on open debug streams per tenant and per user (a user is a tenant's
/// user id or API key): one read-only session must not hold hundreds of
/// streams open.
#[derive(Debug)]
pub(crate) struct StreamCaps {
    settings: StreamSettings,
    open: Arc<Mutex<HashMap<String, usize>>>,
    gauge: Gauge,
}

/// How many debug streams may be open at once.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub per_tenant: usize,
    pub per_user: usize,
    /// Recent events sent when a stream opens (and a first poll answers
    /// with), at most [`MAX_TAIL`].
    pub tail: u32,
}

/// The most recent events a stream can start with.
pub(crate) const MAX_TAIL: u32 = 2000;

impl Default for StreamSettings {
    fn default() -> Self {
        // A developer watches a few extensions at a time; a tenant has a
        // handful of developers.
        StreamSettings {
            per_tenant: 20,
            per_user: 5,
            tail: 200,
        }
    }
}

/// One open stream's place under the caps, given back when dropped.
#[derive(Debug)]
pub(crate) struct StreamPermit {
    keys: [String; 2],
    open: Arc<Mutex<HashMap<String, usize>>>,
    gauge: Gauge,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        for k in &self.keys {
            if let Some(n) = open.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(k);
                }
            }
        }
        self.gauge.dec();
    }
}

impl StreamCaps {
    pub(crate) fn new(settings: StreamSettings, gauge: Gauge) -> StreamCaps {
        StreamCaps {
            settings,
            open: Arc::default(),
            gauge,
        }
    }

    /// How many recent events a stream starts with.
    pub(crate) fn tail(&self) -> u32 {
        self.settings.tail.min(MAX_TAIL)
    }

    /// A place for one more stream of `tenant`'s `user`, unless either is at
    /// its cap.
    pub(crate) fn acquire(&self, tenant: &str, user: &str) -> Option<StreamPermit> {
        let keys = [format!("t:{tenant}"), format!("u:{user}")];
        let mut open = self.open.lock();
        let count = |k: &str| open.get(k).copied().unwrap_or(0);
        if count(&keys[0]) >= self.settings.per_tenant || count(&keys[1]) >= self.settings.per_user
        {
            return None;
        }
        for k in &keys {
            *open.entry(k.clone()).or_default() += 1;
        }
        self.gauge.inc();
        Some(StreamPermit {
            keys,
            open: self.open.clone(),
            gauge: self.gauge.clone(),
        })
    }
}

/// Alga's SSE event shape (the id travels as the SSE event id, and as
/// `lastId` of a poll).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = LogEvent)]
pub(crate) struct LogEventBody {
    /// Milliseconds since the Unix epoch.
    ts: i64,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    level: String,
    /// `log`, `stderr`, `stdout` or `system`.
    stream: String,
    tenant_id: String,
    /// The registry id.
    extension_id: String,
    install_id: String,
    request_id: String,
    version_id: String,
    content_hash: String,
    message: String,
    /// Whether `message` was cut at 8,192 bytes.
    truncated: bool,
}

impl From<&pb::LogEvent> for LogEventBody {
    fn from(e: &pb::LogEvent) -> LogEventBody {
        LogEventBody {
            ts: e.ts_ms,
            level: e.level.clone(),
            stream: e.stream.clone(),
            tenant_id: e.tenant_id.clone(),
            extension_id: e.extension_id.clone(),
            install_id: e.install_id.clone(),
            request_id: e.request_id.clone(),
            version_id: e.version_id.clone(),
            content_hash: e.content_hash.clone(),
            message: e.message.clone(),
            truncated: e.truncated,
        }
    }
}

impl LogEventBody {
    /// The event as an SSE `data` line's JSON.
    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_positions_in_the_log() {
        for ok in ["", " ", "0", "42", "9223372036854775807"] {
            assert!(event_id(Some(ok)).is_ok(), "{ok:?}");
        }
        // One past `i64::MAX`, past `u64::MAX`, and not a number.
        for bad in [
            "9223372036854775808",
            "99999999999999999999",
            "-1",
            "1e3",
            "x",
        ] {
            assert_eq!(
                event_id(Some(bad)),
                Err(ApiError::INVALID_LAST_ID),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn streams_are_capped_per_tenant_and_per_user_and_given_back() {
        let caps = StreamCaps::new(
            StreamSettings {
                per_tenant: 3,
                per_user: 2,
                tail: 0,
            },
            Gauge::default(),
        );
        let a1 = caps.acquire("t", "t/ann").expect("first");
        let _a2 = caps.acquire("t", "t/ann").expect("second");
        assert!(caps.acquire("t", "t/ann").is_none(), "user cap");
        let _b1 = caps.acquire("t", "t/bob").expect("bob");
        assert!(caps.acquire("t", "t/cid").is_none(), "tenant cap");
        assert!(caps.acquire("u", "u/ann").is_some(), "another tenant");
        drop(a1);
        assert!(caps.acquire("t", "t/ann").is_some(), "given back");
    }
}
