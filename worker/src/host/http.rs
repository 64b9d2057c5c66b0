//! `alga:extension/http.fetch` through the worker's egress policy
//! ([`crate::egress`]). Without `cap:http.fetch`: `not-allowed`. Guest
//! headers go out verbatim; a 3xx is returned, never followed; response
//! headers that are not UTF-8 become `""`; `body` is always `Some`.
//! `wasi:http` goes through the same policy ([`super::wasi_http`]).

use crate::bindings::alga::extension::http;
use crate::bindings::types::{HttpError, HttpHeader, HttpRequest, HttpResponse};
use crate::capabilities::Capability;
use crate::capture::tape::{Answer, Ask, Bytes, HttpAnswer};
use crate::capture::{Player, Taping};
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
        let ask = fetch_ask(&request);
        if let Taping::Play(player) = &self.taping {
            return Ok(played(player, &ask));
        }
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
        let answer = match result {
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
        };
        if let Taping::Record(recorder) = &self.taping {
            recorder.call(ask, recorded(&answer));
        }
        Ok(answer)
    }
}

fn fetch_ask(request: &HttpRequest) -> Ask {
    Ask::HttpFetch {
        method: request.method.clone(),
        url: request.url.clone(),
        headers: request
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        body: request.body.as_deref().map(Bytes::of),
    }
}

fn error_name(e: &HttpError) -> &'static str {
    match e {
        HttpError::InvalidUrl => "invalid-url",
        HttpError::NotAllowed => "not-allowed",
        HttpError::Transport => "transport",
        HttpError::Internal => "internal",
    }
}

fn recorded(answer: &Result<HttpResponse, HttpError>) -> Answer {
    match answer {
        Ok(r) => Answer::Http(HttpAnswer {
            status: r.status,
            headers: r
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            body: Bytes::of(r.body.as_deref().unwrap_or_default()),
        }),
        Err(e) => Answer::HttpError(error_name(e).to_string()),
    }
}

/// The recorded answer to a fetch; a divergence is a transport error.
fn played(player: &Player, ask: &Ask) -> Result<HttpResponse, HttpError> {
    match player.call(ask) {
        Some(Answer::Http(r)) => Ok(HttpResponse {
            status: r.status,
            headers: r
                .headers
                .into_iter()
                .map(|(name, value)| HttpHeader { name, value })
                .collect(),
            body: Some(r.body.decode()),
        }),
        Some(Answer::HttpError(e)) => Err(match e.as_str() {
            "invalid-url" => HttpError::InvalidUrl,
            "not-allowed" => HttpError::NotAllowed,
            "internal" => HttpError::Internal,
            _ => HttpError::Transport,
        }),
        Some(_) => {
            player.malformed(ask);
            Err(HttpError::Transport)
        }
        None => Err(HttpError::Transport),
    }
}
