//! `alga:extension/ui-proxy`: `call-route` relayed to the extension's own
//! UI proxy routes by the control plane. Needs `cap:ui.proxy`; Alga's route
//! pre-checks and status mapping (denied, route-not-found, bad-request,
//! internal).

use crate::backend::UiProxyCall;
use crate::bindings::alga::extension::ui_proxy;
use crate::bindings::types::ProxyError;
use crate::capabilities::Capability;
use crate::host::HostState;
/// Alga's pre-checks: an empty route, or a `.`/`..` segment, is a bad request.
fn route_ok(route: &str) -> bool {
    let path = route.split('?').next().unwrap_or("");
    !route.trim().is_empty() && !path.split('/').any(|s| s == "." || s == "..")
}

fn proxy_error(status: u16) -> ProxyError {
    match status {
        401 | 403 | 429 => ProxyError::Denied,
        404 => ProxyError::RouteNotFound,
        400..=499 => ProxyError::BadRequest,
        _ => ProxyError::Internal,
    }
}

impl ui_proxy::Host for HostState {
    async fn call_route(
        &mut self,
        route: String,
        payload: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<Vec<u8>, ProxyError>> {
        if !self.caps.has(Capability::UiProxy) {
            return Ok(Err(ProxyError::Denied));
        }
        if !route_ok(&route) {
            return Ok(Err(ProxyError::BadRequest));
        }
        let user = self.call.user.as_ref();
        let call = UiProxyCall {
            route,
            payload,
            // Alga sends `ui-proxy-call` when the request has no id.
            request_id: self
                .call
                .request_id
                .clone()
                .unwrap_or_else(|| "ui-proxy-call".to_string()),
            user_id: user.map(|u| u.user_id.clone()).unwrap_or_default(),
            user_email: user.map(|u| u.user_email.clone()).unwrap_or_default(),
        };
        let result = self
            .services
            .backend
            .call_ui_proxy(&self.call.grant, call)
            .await;
        Ok(match result {
            Ok(r) if (200..300).contains(&r.status) => Ok(r.body),
            Ok(r) => Err(proxy_error(r.status)),
            // A grant the control plane refuses is a denial; an unreachable
            // host application is internal.
            Err(e) => Err(match e.status {
                401 | 403 => ProxyError::Denied,
                _ => ProxyError::Internal,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_routes_and_statuses() {
        assert!(!route_ok(""));
        assert!(!route_ok("/a/../b"));
        assert!(route_ok("/a/b?x=../y"));
        assert_eq!(proxy_error(404), ProxyError::RouteNotFound);
        assert_eq!(proxy_error(429), ProxyError::Denied);
        assert_eq!(proxy_error(422), ProxyError::BadRequest);
        assert_eq!(proxy_error(502), ProxyError::Internal);
    }
}
