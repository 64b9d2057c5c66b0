//! `/api/ext-proxy/{extensionId}/{*route}` (docs/design/alga-compatibility.md, "ext-proxy and the bridge"):
//! what the iframe bridge's
//! `apiproxy` messages reach. The same access pipeline as `/api/ext`, the
//! `__method` override for POST (query parameter first, then a top-level
//! JSON body field), ext-proxy's own header allowlists and CORS allowlist.

use std::sync::Arc;

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

const OVERRIDABLE: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

pub(crate) async fn handle(
    State(state): State<Arc<EdgeState>>,
    Client(client): Client,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = gateway::request_id(&headers);
    let extension = gateway::path_segment(&uri, "/api/ext-proxy/", 0);
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
        "proxy",
        &state.proxy_cors,
        &method,
        &headers,
        &request_id,
        call,
    )
    .await
}

/// The effective method, query and body after the `__method` override.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Overridden {
    pub method: String,
    pub query: std::collections::HashMap<String, String>,
    pub body: Option<Vec<u8>>,
}

/// Applies Alga's `__method` override rules to a request.
pub(crate) fn apply_override(
    method: &str,
    mut query: std::collections::HashMap<String, String>,
    body: Option<Vec<u8>>,
) -> Overridden {
    let from_query = query.remove("__method");
    let mut body = body;
    let mut effective = method.to_owned();
    if method == "POST" {
        let mut wanted = from_query;
        if let Some(bytes) = body.as_ref()
            && let Ok(serde_json::Value::Object(mut obj)) =
                serde_json::from_slice::<serde_json::Value>(bytes)
            && let Some(field) = obj.remove("__method")
        {
            if wanted.is_none() {
                wanted = field.as_str().map(str::to_owned);
            }
            body = if obj.is_empty() {
                None
            } else {
                serde_json::to_vec(&serde_json::Value::Object(obj)).ok()
            };
        }
        if let Some(m) = wanted.map(|m| m.trim().to_ascii_uppercase())
            && OVERRIDABLE.contains(&m.as_str())
        {
            effective = m;
        }
    }
    if effective == "GET" {
        body = None;
    }
    Overridden {
        method: effective,
        query,
        body,
    }
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
    if !OVERRIDABLE.contains(&method.as_str()) {
        return Err(ApiError::ENDPOINT_NOT_FOUND);
    }
    let principal = gateway::authenticate(state, incoming).await?;
    // On the transport method: a form POST with `?__method=GET` is still a
    // write as far as the browser's protections go.
    csrf::check(&principal, &state.proxy_cors, method, headers)?;
    let path = gateway::decoded_path(raw_tail(uri, "/api/ext-proxy/"))?;
    // The override decides authorisation, so the (capped) body is read first.
    let raw_body = if *method == Method::GET {
        None
    } else {
        let limit = state.policy.max_body_bytes;
        Some(
            read_body(body, headers, limit, state.policy.timeout)
                .await?
                .to_vec(),
        )
    };
    let o = apply_override(method.as_str(), gateway::query_map(uri), raw_body);
    let call = Call {
        extension,
        method: &o.method,
        path: &path,
        request_id,
        rollout_key: crate::rollout::chosen_key(headers)?,
    };
    let admitted = gateway::admit(state, &principal, &call).await?;
    let mut fwd = headers::forward(headers, headers::PROXY_REQUEST);
    fwd.insert("x-request-id".into(), request_id.to_owned());
    fwd.insert("x-alga-tenant".into(), admitted.install.tenant.clone());
    fwd.insert(
        "x-alga-extension".into(),
        admitted.install.registry_id.clone(),
    );
    if o.method != "GET" {
        let key = fwd
            .get("x-idempotency-key")
            .filter(|k| !k.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        fwd.insert("x-idempotency-key".into(), key);
    } else {
        fwd.remove("x-idempotency-key");
    }
    let http = pb::HttpRequest {
        method: o.method.clone(),
        path,
        query: o.query,
        headers: fwd,
        body: o.body,
    };
    // Alga's ext-proxy sends no transport idempotency key; the header above
    // is for the guest.
    let req = gateway::execute_request(
        state,
        &principal,
        &admitted,
        gateway::Execution {
            trigger: annex_dispatch::Trigger::Proxy,
            http,
            idempotency_key: String::new(),
            traceparent: gateway::traceparent(headers),
        },
    );
    Ok(dispatch(state, admitted, req, ResponsePolicy::Proxy).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn override_rules() {
        // Query wins over the body field; both are removed.
        let o = apply_override(
            "POST",
            q(&[("__method", "delete"), ("a", "1")]),
            Some(br#"{"__method":"PUT","x":1}"#.to_vec()),
        );
        assert_eq!(o.method, "DELETE");
        assert_eq!(o.query, q(&[("a", "1")]));
        assert_eq!(o.body.as_deref(), Some(&br#"{"x":1}"#[..]));
        // Body field alone; nothing left means no body.
        let o = apply_override("POST", q(&[]), Some(br#"{"__method":"patch"}"#.to_vec()));
        assert_eq!((o.method.as_str(), o.body), ("PATCH", None));
        // Effective GET drops the body.
        let o = apply_override(
            "POST",
            q(&[("__method", "GET")]),
            Some(b"{\"k\":2}".to_vec()),
        );
        assert_eq!((o.method.as_str(), o.body), ("GET", None));
        // Only POST is overridden; the parameter is still removed.
        let o = apply_override("PUT", q(&[("__method", "DELETE")]), Some(b"raw".to_vec()));
        assert_eq!(o.method, "PUT");
        assert!(o.query.is_empty());
        // Unknown values are ignored.
        let o = apply_override("POST", q(&[("__method", "TRACE")]), None);
        assert_eq!(o.method, "POST");
        // A non-JSON body is left alone.
        let o = apply_override("POST", q(&[]), Some(b"\x00\x01".to_vec()));
        assert_eq!(o.body.as_deref(), Some(&b"\x00\x01"[..]));
    }
}
