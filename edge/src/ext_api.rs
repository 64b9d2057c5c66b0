//! `/api/ext/{extensionId}/{*path}` (docs/design/alga-compatibility.md, "Gateway"): preflight, the shared access
//! pipeline, body cap, dispatch to a worker and the response mapping, with
//! Annex's deliberate differences (allowlisted extension headers, 504 on
//! timeout).

use std::sync::Arc;

use annex_dispatch::Trigger;
use annex_proto::pb;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, Method, Uri};

use crate::clients::Client;
use crate::csrf;
use crate::error::ApiError;
use crate::gateway::{self, Call, Incoming, dispatch, framed, raw_tail, read_body};
use crate::headers::{self, ResponsePolicy};
use crate::state::EdgeState;

pub(crate) async fn handle(
    State(state): State<Arc<EdgeState>>,
    Client(client): Client,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = gateway::request_id(&headers);
    let extension = gateway::path_segment(&uri, "/api/ext/", 0);
    let incoming = Incoming {
        method: &method,
        uri: &uri,
        headers: &headers,
        request_id: &request_id,
        client,
    };
    let call = serve(&state, &extension, &incoming, body);
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

async fn serve(
    state: &EdgeState,
    extension: &str,
    incoming: &Incoming<'_>,
    body: Body,
) -> Result<Response, ApiError> {
    let Incoming {
        method,
        uri,
        headers,
        request_id,
        ..
    } = *incoming;
    let principal = gateway::authenticate(state, incoming).await?;
    csrf::check(&principal, &state.ext_cors, method, headers)?;
    let path = gateway::decoded_path(raw_tail(uri, "/api/ext/"))?;
    let call = Call {
        extension,
        method: method.as_str(),
        path: &path,
        request_id,
        rollout_key: crate::rollout::chosen_key(headers)?,
    };
    let admitted = gateway::admit(state, &principal, &call).await?;
    let body = if matches!(*method, Method::GET | Method::HEAD) {
        None
    } else {
        match read_body(
            body,
            headers,
            state.policy.max_body_bytes,
            state.policy.timeout,
        )
        .await
        {
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
    // Only a key the client sent is honoured (docs/design/idempotency.md,
    // "Which calls carry a key"): a generated one could never be repeated,
    // and would make every write depend on the control plane.
    let idempotency_key = if matches!(*method, Method::GET | Method::HEAD) {
        String::new()
    } else {
        headers
            .get("x-idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.trim().is_empty())
            .map(|k| k.trim().to_owned())
            .unwrap_or_default()
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
            trigger: Trigger::Http,
            http,
            idempotency_key,
            traceparent: gateway::traceparent(headers),
        },
    );
    Ok(dispatch(state, admitted, req, ResponsePolicy::Ext).await)
}
