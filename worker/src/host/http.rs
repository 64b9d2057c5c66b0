//! `alga:extension/http.fetch` through the worker's egress policy
//! ([`crate::egress`]). Without `cap:http.fetch`: `not-allowed`. Guest
//! headers go out verbatim; a 3xx is returned, never followed; response
//! headers that are not UTF-8 become `""`; `body` is always `Some`.
//! `wasi:http` goes through the same policy ([`super::wasi_http`]).

use crate::bindings::alga::extension::http;
use crate::bindings::types::{HttpError, HttpHeader, HttpRequest, HttpResponse};
use crate::capabilities::Capability;
use crate::egress::{EgressError, OutboundRequest};
use crate::host::HostState;

impl http::Host for HostState {
    async fn fetch(
        &mut self,
        request: HttpRequest,
    ) -> wasmtime::Result<Result<HttpResponse, HttpError>> {
        if !self.caps.has(Capability::HttpFetch) {
            return Ok(Err(HttpError::NotAllowed));
        }
        let sent = request.body.as_ref().map_or(0, Vec::len);
        let outbound = OutboundRequest {
            method: request.method,
            url: request.url,
            headers: request
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            body: request.body,
        };
        let result = self
            .services
            .egress
            .fetch(&self.call.allowlist, outbound)
            .await;
        Ok(match result {
            Ok(response) => {
                self.egress_bytes += (sent + response.body.len()) as u64;
                Ok(HttpResponse {
                    status: response.status,
                    headers: response
                        .headers
                        .into_iter()
                        .map(|(name, value)| HttpHeader { name, value })
                        .collect(),
                    body: Some(response.body),
                })
            }
            Err(error) => {
                tracing::debug!(%error, tenant = %self.call.tenant_id, "guest http.fetch failed");
                Err(match error {
                    EgressError::InvalidUrl(_) => HttpError::InvalidUrl,
                    EgressError::NotAllowed(_) => HttpError::NotAllowed,
                    EgressError::Transport(_) => HttpError::Transport,
                })
            }
        })
    }
}
