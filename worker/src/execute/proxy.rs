//! A `wasi:http/proxy` component as an extension: the request an Alga
//! guest would get becomes a `wasi:http` incoming request, the component's
//! `wasi:http/incoming-handler.handle` runs, and the response it sets
//! becomes the same `execute-response` an Alga guest returns, so limits,
//! classification, accounting and logs are shared with Alga components
//! (mapping in docs/authors.md, "wasi:http components").
//!
//! Request: the method; scheme `http`, authority the `host` header if the
//! request carries one, else `localhost`; path and query as the guest URL;
//! the headers as sent (repeated names kept); the body as sent. Response:
//! the status, the headers (a repeated name's last value wins, as for Alga
//! guests), the body read while the guest writes it and capped at the
//! request's response limit. This module runs no other world and decides no
//! limits.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::limits::Budget;
use super::response::{CallResult, ResponseTooLarge};
use crate::bindings::types;
use crate::cputime::CpuTimed;
use crate::engine::EPOCH_TICK;
use crate::host::HostState;

type ResponseSlot =
    tokio::sync::oneshot::Receiver<Result<hyper::Response<HyperOutgoingBody>, ErrorCode>>;

/// Instantiates the component and has it handle `request`, bounded like an
/// Alga guest's call (the budget plus two ticks on the async side), with
/// the thread CPU time its polls used.
pub(super) async fn call(
    pre: &ProxyPre<HostState>,
    store: &mut Store<HostState>,
    request: types::ExecuteRequest,
    budget: &Budget,
) -> (CallResult, Duration) {
    let limit = budget.timeout + 2 * EPOCH_TICK;
    let max_bytes = budget.max_response_bytes;
    CpuTimed::new(tokio::time::timeout(
        limit,
        exchange(pre, store, request, max_bytes),
    ))
    .await
}

/// Runs the guest and reads its response at the same time (a guest writing
/// a body larger than the pipe's buffer waits for the reader).
async fn exchange(
    pre: &ProxyPre<HostState>,
    store: &mut Store<HostState>,
    request: types::ExecuteRequest,
    max_bytes: u64,
) -> wasmtime::Result<types::ExecuteResponse> {
    let incoming = incoming(request)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (req, out) = {
        let mut http = store.data_mut().http();
        let req = http.new_incoming_request(Scheme::Http, incoming)?;
        (req, http.new_response_outparam(tx)?)
    };
    let collect = collect(rx, max_bytes);
    tokio::pin!(collect);
    let mut collected = None;
    let called = {
        let guest = async {
            let proxy = pre.instantiate_async(&mut *store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut *store, req, out)
                .await
        };
        tokio::pin!(guest);
        loop {
            tokio::select! {
                result = &mut guest => break result,
                body = &mut collect, if collected.is_none() => collected = Some(body),
            }
        }
    };
    called?;
    match collected {
        Some(body) => body,
        None => {
            // The guest is done: whatever it left unfinished (a response
            // never set, a body never finished) ends now instead of at the
            // deadline. A finished body still drains in full.
            store.data_mut().release_resources();
            collect.await
        }
    }
}

/// The guest's view of the request.
fn incoming(request: types::ExecuteRequest) -> wasmtime::Result<hyper::Request<Full<Bytes>>> {
    let http = request.http;
    let authority = http
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map_or("localhost", |h| h.value.as_str())
        .to_owned();
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(http.url.as_str())
        .build()?;
    let mut builder = hyper::Request::builder()
        .method(http::Method::from_bytes(http.method.as_bytes())?)
        .uri(uri);
    for header in &http.headers {
        match (
            http::HeaderName::from_bytes(header.name.as_bytes()),
            http::HeaderValue::from_str(&header.value),
        ) {
            (Ok(name), Ok(value)) => builder = builder.header(name, value),
            _ => tracing::debug!(header = %header.name, "dropping a header wasi:http cannot carry"),
        }
    }
    Ok(builder.body(Full::new(Bytes::from(http.body.unwrap_or_default())))?)
}

/// The response the guest set, its body read in full up to `max_bytes`.
async fn collect(rx: ResponseSlot, max_bytes: u64) -> wasmtime::Result<types::ExecuteResponse> {
    let response = match rx.await {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => wasmtime::bail!("the component answered with the error {code:?}"),
        Err(_) => wasmtime::bail!("the component did not set a response"),
    };
    let (parts, body) = response.into_parts();
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return Err(ResponseTooLarge { limit: max_bytes }.into());
        }
        Err(error) => wasmtime::bail!("reading the component's response body failed: {error}"),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| types::HttpHeader {
            name: name.as_str().to_owned(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .collect();
    Ok(types::ExecuteResponse {
        status: parts.status.as_u16(),
        headers,
        body: (!body.is_empty()).then(|| body.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> types::ExecuteRequest {
        types::ExecuteRequest {
            context: types::ContextData {
                request_id: None,
                tenant_id: "t".into(),
                extension_id: "e".into(),
                install_id: None,
                version_id: None,
            },
            http: types::HttpRequest {
                method: "POST".into(),
                url: url.into(),
                headers: headers
                    .iter()
                    .map(|(n, v)| types::HttpHeader {
                        name: (*n).into(),
                        value: (*v).into(),
                    })
                    .collect(),
                body: body.map(<[u8]>::to_vec),
            },
        }
    }

    #[test]
    fn the_request_keeps_method_path_query_headers_and_body() {
        let r = incoming(request(
            "/items/1?x=a+b",
            &[("x-alga-tenant", "t"), ("accept", "a"), ("accept", "b")],
            Some(b"hi"),
        ))
        .expect("valid");
        assert_eq!(r.method(), http::Method::POST);
        assert_eq!(r.uri().to_string(), "http://localhost/items/1?x=a+b");
        assert_eq!(r.headers()["x-alga-tenant"], "t");
        assert_eq!(r.headers().get_all("accept").iter().count(), 2);
    }

    #[test]
    fn a_host_header_becomes_the_authority_and_bad_headers_are_dropped() {
        let r = incoming(request(
            "/",
            &[
                ("Host", "ext.example"),
                ("bad header", "x"),
                ("ok", "bad\nvalue"),
            ],
            None,
        ))
        .expect("valid");
        assert_eq!(r.uri().authority().map(|a| a.as_str()), Some("ext.example"));
        assert_eq!(r.headers().len(), 1);
    }
}
