//! `ui-proxy.call-route` against `UI_PROXY_BASE_URL`, as Alga's runner
//! calls it (docs/design/alga-compatibility.md, "Host APIs"): a route
//! under `api/` goes straight under the base, any other under the
//! extension id; GET without a payload, POST (JSON) with one; Alga's
//! headers, with the install's `api_key` secret as `x-api-key`. Without a
//! base every route is not found. The interface maps the status.

use super::{ExecutionHost, read, too_large};
use crate::backend::{HostApiResponse, HostError, UiProxyCall};

/// The URL of `route` under `base`: `None` for an empty route or a `.` or
/// `..` segment (a bad request).
fn url(base: &url::Url, extension: &str, route: &str) -> Option<String> {
    let route = route.trim();
    if route.is_empty() {
        return None;
    }
    let (path, query) = match route.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (route, None),
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return None;
    }
    let mut url = base.as_str().trim_end_matches('/').to_string();
    if segments.first() != Some(&"api") {
        url.push('/');
        url.push_str(extension);
    }
    for s in segments {
        url.push('/');
        url.push_str(s);
    }
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    Some(url)
}

fn status(status: u16) -> HostApiResponse {
    HostApiResponse {
        status,
        body: Vec::new(),
    }
}

pub(super) async fn call(
    host: &ExecutionHost,
    call: UiProxyCall,
) -> Result<HostApiResponse, HostError> {
    let app = &host.app;
    let Some(base) = &app.settings.ui_proxy_base else {
        return Ok(status(404));
    };
    let Some(url) = url(base, &host.extension, &call.route) else {
        return Ok(status(400));
    };
    if let Some(refused) = call.payload.as_ref().and_then(|p| too_large(p.len())) {
        return Err(refused);
    }
    let mut request = match call.payload {
        None => app.client.get(&url),
        Some(body) => app
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body),
    }
    .timeout(app.settings.ui_proxy_timeout)
    .header("x-request-id", &call.request_id)
    .header("x-alga-tenant", &host.tenant)
    .header("x-alga-extension", &host.extension);
    if let Some(install) = &host.install {
        request = request.header("x-ext-install-id", install);
    }
    if let Some(version) = &host.version {
        request = request.header("x-ext-version-id", version);
    }
    if let Some(key) = host.secrets.get("api_key") {
        request = request.header("x-api-key", key);
    }
    if !call.user_id.is_empty() {
        request = request
            .header("x-user-id", &call.user_id)
            .header("x-user-email", &call.user_email);
    }
    read(request.send().await, "ui-proxy").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_algas_rules() {
        let b = url::Url::parse("http://app:3000/").expect("url");
        assert_eq!(
            url(&b, "e1", "/proxy/ping").as_deref(),
            Some("http://app:3000/e1/proxy/ping")
        );
        assert_eq!(
            url(&b, "e1", "api/v1/x?a=1&b").as_deref(),
            Some("http://app:3000/api/v1/x?a=1&b")
        );
        assert_eq!(
            url(&b, "e1", "//a//b").as_deref(),
            Some("http://app:3000/e1/a/b")
        );
        assert_eq!(url(&b, "e1", "/a/../b"), None);
        assert_eq!(url(&b, "e1", " "), None);
    }
}
