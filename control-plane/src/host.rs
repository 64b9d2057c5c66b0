//! Host services for running guests: the parts that need the control plane's
//! state or credentials. Every call comes with a verified execution grant
//! (see [`grant`](crate::grant)); the capability it needs is checked here
//! again even though the worker gates guest calls first.
//!
//! The host-application bridges (invoicing, clients, services, ui-proxy) are
//! relayed to the host application with Alga's request bodies; the control
//! plane holds its URL and credentials, workers hold none. [`Host`] owns that
//! configuration and the HTTP client; it stores nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use annex_bundle::capability::Capability;
use annex_proto::{AnnexError, ErrorCode};
use chrono::Utc;

use crate::grant::VerifiedGrant;
use crate::installs::Installs;
use crate::store::InstallView;

/// Where the host application's internal APIs are.
#[derive(Debug, Clone, Default)]
pub struct HostAppConfig {
    /// Base of `/api/internal/ext-{invoicing,clients,services}/install/{id}`.
    pub base_url: Option<String>,
    /// Sent as `x-runner-auth`.
    pub token: Option<String>,
    /// Base for `ui-proxy.call-route`; unset means every route is not found.
    pub ui_proxy_base_url: Option<String>,
    pub timeout: Duration,
    pub ui_proxy_timeout: Duration,
}

impl HostAppConfig {
    pub fn new() -> Self {
        HostAppConfig {
            timeout: Duration::from_secs(30),
            ui_proxy_timeout: Duration::from_secs(5),
            ..Default::default()
        }
    }
}

/// A relayed response: HTTP status (0 when the host app could not be reached
/// or is not configured) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostResponse {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl HostResponse {
    fn unreachable() -> Self {
        HostResponse {
            status: 0,
            body: Vec::new(),
        }
    }

    fn status(status: u16) -> Self {
        HostResponse {
            status,
            body: Vec::new(),
        }
    }
}

/// A ui-proxy call.
#[derive(Debug, Clone, Default)]
pub(crate) struct UiProxyCall {
    pub(crate) route: String,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) request_id: String,
    pub(crate) user_id: String,
    pub(crate) user_email: String,
}

/// Secrets and the host-application relays.
pub(crate) struct Host {
    installs: Arc<Installs>,
    config: HostAppConfig,
    /// Client for the host application; never follows redirects.
    http: reqwest::Client,
}

impl Host {
    pub(crate) fn new(installs: Arc<Installs>, config: HostAppConfig) -> Host {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Host {
            installs,
            config,
            http,
        }
    }

    /// The grant's install after checking `cap`: refused unless it is still
    /// active.
    async fn granted_install(
        &self,
        grant: &VerifiedGrant,
        cap: Capability,
    ) -> Result<InstallView, AnnexError> {
        grant.require(cap)?;
        self.installs
            .granted_install(grant)
            .await?
            .ok_or_else(|| AnnexError::new(ErrorCode::InstallNotFound, "the install is not active"))
    }

    /// The opened secret map of the grant's install and its version; empty
    /// once the secrets have expired (guests see every key as missing).
    pub(crate) async fn secrets(
        &self,
        grant: &VerifiedGrant,
    ) -> Result<(BTreeMap<String, String>, String), AnnexError> {
        let view = self.granted_install(grant, Capability::SecretsGet).await?;
        match &view.secrets {
            None => Ok((BTreeMap::new(), String::new())),
            Some(row) if row.expired(Utc::now()) => Ok((BTreeMap::new(), row.version.clone())),
            Some(row) => Ok((
                self.installs
                    .open_secrets(&grant.install().to_string(), row)?,
                row.version.clone(),
            )),
        }
    }

    /// Relays an invoicing, clients or services call to the host application.
    pub(crate) async fn call_host_api(
        &self,
        grant: &VerifiedGrant,
        api: &str,
        body_json: &str,
    ) -> Result<HostResponse, AnnexError> {
        let cap = match api {
            "invoicing" => Capability::InvoiceManualCreate,
            "clients" => Capability::ClientRead,
            "services" => Capability::ServiceRead,
            other => return Err(AnnexError::invalid(format!("unknown host api {other:?}"))),
        };
        self.granted_install(grant, cap).await?;
        serde_json::from_str::<serde_json::Value>(body_json)
            .map_err(|_| AnnexError::invalid("body_json is not JSON"))?;
        let (Some(base), Some(auth)) = (&self.config.base_url, &self.config.token) else {
            return Ok(HostResponse::unreachable());
        };
        let url = format!(
            "{}/api/internal/ext-{api}/install/{}",
            trim_base(base),
            grant.install()
        );
        let request = self
            .http
            .post(&url)
            .timeout(self.config.timeout)
            .header("content-type", "application/json")
            .header("x-runner-auth", auth)
            .body(body_json.to_owned());
        Ok(relay(request).await)
    }

    /// `ui-proxy.call-route` as Alga's runner builds it
    /// (docs/design/alga-compatibility.md, "Host APIs").
    pub(crate) async fn call_ui_proxy(
        &self,
        grant: &VerifiedGrant,
        call: UiProxyCall,
    ) -> Result<HostResponse, AnnexError> {
        let view = self.granted_install(grant, Capability::UiProxy).await?;
        let Some(base) = &self.config.ui_proxy_base_url else {
            return Ok(HostResponse::status(404));
        };
        let Some(url) = ui_proxy_url(base, &grant.extension().to_string(), &call.route) else {
            return Ok(HostResponse::status(400));
        };
        let api_key = match &view.secrets {
            Some(row) if !row.expired(Utc::now()) => self
                .installs
                .open_secrets(&grant.install().to_string(), row)
                .ok()
                .and_then(|m| m.get("api_key").cloned()),
            _ => None,
        };
        let mut request = match call.payload {
            None => self.http.get(&url),
            Some(body) => self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body),
        }
        .timeout(self.config.ui_proxy_timeout)
        .header(
            "x-request-id",
            if call.request_id.is_empty() {
                "ui-proxy-call"
            } else {
                call.request_id.as_str()
            },
        )
        .header("x-alga-tenant", grant.tenant())
        .header("x-alga-extension", grant.extension().to_string())
        .header("x-ext-install-id", grant.install().to_string())
        .header("x-ext-version-id", grant.version().to_string());
        if let Some(key) = api_key {
            request = request.header("x-api-key", key);
        }
        if !call.user_id.is_empty() {
            request = request
                .header("x-user-id", &call.user_id)
                .header("x-user-email", &call.user_email);
        }
        Ok(relay(request).await)
    }
}

/// Base URL without a trailing `/` or one trailing `/api` (as Alga's runner).
fn trim_base(base: &str) -> &str {
    let base = base.trim_end_matches('/');
    base.strip_suffix("/api").unwrap_or(base)
}

/// Builds the ui-proxy URL: `/api/...` routes go straight under the base,
/// others under the extension id; empty routes are refused, and so are
/// paths that move once decoded ([`annex_ops::paths::moves`]). The URL built is parsed
/// again and must still lie under the prefix it was built for.
fn ui_proxy_url(base: &str, extension_id: &str, route: &str) -> Option<String> {
    let route = route.trim();
    if route.is_empty() {
        return None;
    }
    let (path, query) = match route.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (route, None),
    };
    if annex_ops::paths::moves(path) {
        return None;
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut url = base.trim_end_matches('/').to_owned();
    if segments.first() != Some(&"api") {
        url.push('/');
        url.push_str(extension_id);
    }
    for s in segments {
        url.push('/');
        url.push_str(s);
    }
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    stays_under(base, extension_id, &url).then_some(url)
}

/// Whether `url`, parsed as the HTTP client will parse it, is still under
/// the base (for `/api/...` routes) or the extension's prefix.
fn stays_under(base: &str, extension_id: &str, url: &str) -> bool {
    let (Ok(base), Ok(url)) = (reqwest::Url::parse(base), reqwest::Url::parse(url)) else {
        return false;
    };
    if base.origin() != url.origin() {
        return false;
    }
    let root = base.path().trim_end_matches('/');
    let path = url.path();
    [format!("{root}/api"), format!("{root}/{extension_id}")]
        .iter()
        .any(|prefix| path == prefix || path.starts_with(&format!("{prefix}/")))
}

async fn relay(request: reqwest::RequestBuilder) -> HostResponse {
    match request.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.bytes().await {
                Ok(body) => HostResponse {
                    status,
                    body: body.to_vec(),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "reading a host application response");
                    HostResponse::unreachable()
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "calling the host application");
            HostResponse::unreachable()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ui_proxy_urls_follow_algas_rules() {
        let b = "http://app:3000/";
        assert_eq!(
            ui_proxy_url(b, "e1", "/proxy/ping").as_deref(),
            Some("http://app:3000/e1/proxy/ping")
        );
        assert_eq!(
            ui_proxy_url(b, "e1", "api/v1/x?a=1&b").as_deref(),
            Some("http://app:3000/api/v1/x?a=1&b")
        );
        assert_eq!(
            ui_proxy_url(b, "e1", "//a//b").as_deref(),
            Some("http://app:3000/e1/a/b")
        );
        assert_eq!(ui_proxy_url(b, "e1", "/a/../b"), None);
        assert_eq!(ui_proxy_url(b, "e1", "./x"), None);
        assert_eq!(ui_proxy_url(b, "e1", " "), None);
        for moving in [
            "/%2e%2e/api/internal",
            "/x/%2E%2E/%2e%2e/admin",
            "/a/.%2e/b",
            "/a/%252e%252e/b",
            "/a%2f..%2fb",
            "\\..\\admin",
            "/a/..\\b",
            "/a/%00",
        ] {
            assert_eq!(ui_proxy_url(b, "e1", moving), None, "{moving}");
        }
        assert_eq!(
            ui_proxy_url(b, "e1", "/proxy/a%20b?x=..").as_deref(),
            Some("http://app:3000/e1/proxy/a%20b?x=..")
        );
        assert_eq!(trim_base("http://h/api/"), "http://h");
    }
}
