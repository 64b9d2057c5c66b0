//! Decoding an `ExecuteRequest` from the wire into what one execution
//! needs: the content hash, the host interfaces' [`CallContext`], the
//! guest's `execute-request` and the limits asked for. Validation only;
//! nothing here loads, admits or runs anything.
//!
//! Guest request mapping (docs/design/alga-compatibility.md, "Handler
//! mapping"): `url` is the path, plus `?` (or `&` if the path already has
//! one) and the form-urlencoded query when it is non-empty; headers as a
//! list; the body as sent, absent when the request had none.

use annex_bundle::ContentHash;
use annex_proto::pb;

use crate::bindings::types;
use crate::bundles;
use crate::egress::Allowlist;
use crate::host::CallContext;

/// A validated `ExecuteRequest`.
pub(crate) struct Request {
    pub(crate) hash: ContentHash,
    pub(crate) call: CallContext,
    pub(crate) providers: Vec<String>,
    pub(crate) guest_request: types::ExecuteRequest,
    /// As sent; the worker's [`Limits`](super::limits::Limits) turn it
    /// into a budget.
    pub(crate) limits: pb::Limits,
}

/// Why a request was refused before admission (answered with status 400
/// and outcome `rejected`; the text is Alga's error string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidRequest {
    #[error("invalid_request: {0}")]
    Invalid(String),
    #[error("missing_routing_headers")]
    MissingRouting,
}

fn invalid(message: &str) -> InvalidRequest {
    InvalidRequest::Invalid(message.to_string())
}

impl TryFrom<pb::ExecuteRequest> for Request {
    type Error = InvalidRequest;

    fn try_from(request: pb::ExecuteRequest) -> Result<Request, InvalidRequest> {
        let ctx = request
            .context
            .ok_or_else(|| invalid("context is required"))?;
        let http = request.http.ok_or_else(|| invalid("http is required"))?;
        if ctx.tenant_id.trim().is_empty() || ctx.extension_id.trim().is_empty() {
            return Err(InvalidRequest::MissingRouting);
        }
        if http.method.is_empty() {
            return Err(invalid("http.method is required"));
        }
        let hash = bundles::parse_hash(&ctx.content_hash)
            .map_err(|e| invalid(&format!("context.content_hash: {e}")))?;
        let opt = |s: String| Some(s).filter(|s| !s.is_empty());
        let guest_request = types::ExecuteRequest {
            context: types::ContextData {
                request_id: opt(ctx.request_id.clone()),
                tenant_id: ctx.tenant_id.clone(),
                extension_id: ctx.extension_id.clone(),
                install_id: opt(ctx.install_id.clone()),
                version_id: opt(ctx.version_id.clone()),
            },
            http: types::HttpRequest {
                method: http.method.clone(),
                url: guest_url(&http.path, &http.query),
                headers: http
                    .headers
                    .iter()
                    .map(|(name, value)| types::HttpHeader {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                body: http.body.clone(),
            },
        };
        let call = CallContext {
            request_id: opt(ctx.request_id),
            tenant_id: ctx.tenant_id,
            extension_id: ctx.extension_id,
            install_id: opt(ctx.install_id),
            version_id: opt(ctx.version_id),
            content_hash: hash.to_string(),
            config: ctx.config.into_iter().collect(),
            user: request.user,
            grant: request.execution_grant,
            secrets_version: request.secrets_version,
            allowlist: Allowlist::new(&request.egress_allowlist),
        };
        Ok(Request {
            hash,
            call,
            providers: request.providers,
            guest_request,
            limits: request.limits.unwrap_or_default(),
        })
    }
}

/// `path`, plus `?` (or `&`) and the form-urlencoded query if non-empty.
fn guest_url<'a, I>(path: &str, query: I) -> String
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
{
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in query {
        ser.append_pair(k, v);
        any = true;
    }
    if !any {
        return path.to_string();
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{}", ser.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn url_is_path_plus_form_urlencoded_query() {
        let q: HashMap<String, String> = [("foo".to_string(), "bar baz".to_string())].into();
        assert_eq!(guest_url("/dynamic/echo", &q), "/dynamic/echo?foo=bar+baz");
        assert_eq!(guest_url("/a?x=1", &q), "/a?x=1&foo=bar+baz");
        assert_eq!(guest_url("/a", &HashMap::new()), "/a");
    }

    fn minimal() -> pb::ExecuteRequest {
        pb::ExecuteRequest {
            context: Some(pb::ExecContext {
                tenant_id: "t".into(),
                extension_id: "e".into(),
                content_hash: format!("sha256:{}", "0".repeat(64)),
                ..Default::default()
            }),
            http: Some(pb::HttpRequest {
                method: "GET".into(),
                path: "/".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_minimal_request_decodes_with_no_body_and_no_limits() {
        let request = Request::try_from(minimal()).expect("valid");
        assert_eq!(request.guest_request.http.body, None);
        assert_eq!(request.guest_request.http.url, "/");
        assert_eq!(request.guest_request.context.request_id, None);
        assert_eq!(request.limits, pb::Limits::default());
    }

    #[test]
    fn routing_and_required_fields_are_checked() {
        let mut r = minimal();
        r.context.get_or_insert_default().tenant_id = " ".into();
        assert_eq!(
            Request::try_from(r).err(),
            Some(InvalidRequest::MissingRouting)
        );
        let mut r = minimal();
        r.http = None;
        assert_eq!(
            Request::try_from(r).err().map(|e| e.to_string()),
            Some("invalid_request: http is required".to_string())
        );
        let mut r = minimal();
        r.context.get_or_insert_default().content_hash = "sha256:abc".into();
        assert!(Request::try_from(r).err().is_some_and(|e| {
            e.to_string()
                .starts_with("invalid_request: context.content_hash: ")
        }));
    }
}
