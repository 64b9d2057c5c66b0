//! `alga:extension/ui-proxy`: `call-route` relayed to the extension's own
//! UI proxy routes by the control plane. Needs `cap:ui.proxy`; Alga's route
//! pre-checks, made after decoding (see [`route_ok`]), and status mapping
//! (denied, route-not-found, bad-request, internal).

use crate::backend::UiProxyCall;
use crate::bindings::alga::extension::ui_proxy;
use crate::bindings::types::ProxyError;
use crate::capabilities::Capability;
use crate::host::HostState;

/// Alga's pre-checks, made on the path as a URL parser or the host
/// application will see it: an empty route is a bad request, and so is a
/// path that, once percent-decoded (repeatedly: `%252e` is `.` after two
/// rounds), has a `.` or `..` segment, a backslash (a separator to WHATWG
/// URL parsers) or a control character. The query is not a path and is not
/// checked.
fn route_ok(route: &str) -> bool {
    if route.trim().is_empty() {
        return false;
    }
    let path = route.split(['?', '#']).next().unwrap_or("");
    !annex_ops::paths::moves(path)
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
        for moving in [
            "/%2e%2e/admin",
            "/a/.%2E/b",
            "/a/%252e%252e/b",
            "/a%2f..%2fb",
            "\\..\\admin",
            "/a/%5c../b",
            "/a/%00",
            "/a/%25252e%25252e/b",
        ] {
            assert!(!route_ok(moving), "{moving}");
        }
        assert!(route_ok("/proxy/a%20b"));
        assert!(route_ok("/proxy/100%"));
        assert_eq!(proxy_error(404), ProxyError::RouteNotFound);
        assert_eq!(proxy_error(429), ProxyError::Denied);
        assert_eq!(proxy_error(422), ProxyError::BadRequest);
        assert_eq!(proxy_error(502), ProxyError::Internal);
    }
}
