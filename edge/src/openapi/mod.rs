//! The edge's HTTP API as an OpenAPI 3.1 document, generated from the code
//! with `utoipa` and served at `GET /openapi.json` (docs/edge.md, "The
//! OpenAPI document"). The router's route table ([`crate::server::ROUTES`])
//! is the list of paths: the handlers of fixed methods carry
//! `#[utoipa::path]`, and the extension routes, which axum serves with
//! `any()`, are path items built in code ([`extension`]). Error answers are
//! built from the [`ApiError`](crate::error::ApiError) values each route
//! answers with ([`errors`]). `docs/openapi.json` is this document,
//! committed and checked by a test (`ANNEX_BLESS=1 cargo test -p annex-edge
//! --lib openapi` rewrites it).

mod errors;
mod extension;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use utoipa::OpenApi as _;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, RefOr, ResponseBuilder};

pub(crate) use extension::ExtRoute;

use crate::error::ApiError;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Annex edge",
        description = "Alga's public extension HTTP contracts, as the Annex edge serves them: \
            the extension API (`/api/ext`), the iframe bridge's proxy (`/api/ext-proxy`), UI \
            files (`/ext-ui`), the debug stream and the bridge scripts. Error bodies are \
            exactly Alga's `{\"error\":\"<code>\"}`.",
    ),
    paths(
        crate::ext_ui::handle,
        crate::debug_stream::handle,
        crate::debug_stream::poll,
        crate::bridge::handle,
        serve,
    ),
    components(schemas(
        crate::debug_stream::LogEventBody,
        crate::debug_stream::PollBody,
        crate::debug_stream::PollAnswer,
    )),
    modifiers(&Security, &ExtensionRoutes),
    tags(
        (name = "ext", description = "An extension's API (docs/design/alga-compatibility.md, \"Gateway\")"),
        (name = "ext_proxy", description = "The iframe bridge's calls (\"ext-proxy and the bridge\")"),
        (name = "ui", description = "An installed bundle's UI files (\"UI hosting\")"),
        (name = "debug", description = "Extension logs, streamed or polled"),
        (name = "bridge", description = "The postMessage bridge scripts"),
        (name = "meta", description = "This document"),
    ),
)]
pub(crate) struct ApiDoc;

/// The document as pretty JSON with a final newline, as committed in
/// `docs/openapi.json`.
pub(crate) fn json() -> Result<String, serde_json::Error> {
    ApiDoc::openapi().to_pretty_json().map(|mut text| {
        text.push('\n');
        text
    })
}

/// The router's path in OpenAPI's spelling: a wildcard `{*name}` is the
/// parameter `{name}`.
pub(crate) fn openapi_path(route: &str) -> String {
    route.replace("{*", "{")
}

static DOCUMENT: LazyLock<Option<String>> = LazyLock::new(|| match json() {
    Ok(text) => Some(text),
    Err(e) => {
        tracing::error!(error = %e, "the OpenAPI document does not serialise");
        None
    }
});

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of the edge's routes",
            body = serde_json::Value, content_type = "application/json"),
        (status = 500, description = "`internal_error`: a bug in the edge (logged)",
            body = serde_json::Value, content_type = "application/json"),
    ),
)]
pub(crate) async fn serve() -> Response {
    match DOCUMENT.as_ref() {
        Some(text) => (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            text.clone(),
        )
            .into_response(),
        None => ApiError::INTERNAL_ERROR.into_response(),
    }
}

/// The security requirement of an authenticated operation: any one of the
/// three credentials.
pub(crate) fn authenticated() -> Vec<SecurityRequirement> {
    ["session", "session_cookie", "api_key"]
        .into_iter()
        .map(|name| SecurityRequirement::new(name, Vec::<String>::new()))
        .collect()
}

/// The credentials (docs/edge.md, "Authentication").
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A session token signed by the host application (HS256, RS256, ES256 \
                         or EdDSA) with `exp`, `aud`, `sub`, `tenant`, `user_type` and \
                         `permissions` (`extension:read`, `extension:write`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "annex_session",
                "The same session token in the cookie named by `ANNEX_EDGE_SESSION_COOKIE` \
                 (`annex_session` here is an example); such calls must come from an allowed \
                 origin and write JSON or `application/octet-stream` bodies",
            ))),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "A tenant API key (`annex_<32 hex>_<secret>`, from `annex api-key create`); \
                 its permissions are the key's",
            ))),
        );
    }
}

/// The `any()` routes of the router's table, as path items built in code.
struct ExtensionRoutes;

impl utoipa::Modify for ExtensionRoutes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for kind in [ExtRoute::Gateway, ExtRoute::Proxy] {
            for (_, name, response) in extension::shared_responses(kind) {
                components.responses.insert(name, RefOr::T(response));
            }
        }
        for route in crate::server::ROUTES {
            if let Some(kind) = route.any {
                doc.paths.paths.insert(
                    openapi_path(route.path),
                    extension::path_item(kind, route.path),
                );
            }
        }
    }
}

/// `GET /api/ext-debug/stream`'s refusals.
pub(crate) struct DebugStreamErrors;

impl utoipa::IntoResponses for DebugStreamErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        errors::responses(&errors::debug_stream())
    }
}

/// `POST /api/ext-debug/stream`'s refusals.
pub(crate) struct DebugPollErrors;

impl utoipa::IntoResponses for DebugPollErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        errors::responses(&errors::debug_poll())
    }
}

/// The UI store's failure body, `{"code": <one of codes>}`.
fn code_schema(codes: &[&str]) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes.to_vec())),
        )
        .required("code")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
}

/// `/ext-ui`'s refusals and failures (`ext_ui::serve`): short texts, an
/// empty 404, and the UI store's `{"code"}` bodies.
pub(crate) struct UiErrors;

impl utoipa::IntoResponses for UiErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let text = |texts: &[&str]| {
            ContentBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(texts.to_vec())),
                ))
                .build()
        };
        let code = |codes: &[&str]| {
            ContentBuilder::new()
                .schema(Some(code_schema(codes)))
                .build()
        };
        let failed = ContentBuilder::new()
            .schema(Some(
                OneOfBuilder::new()
                    .item(code_schema(&["extract_failed"]))
                    .item(errors::body_schema(
                        vec![ApiError::INTERNAL_ERROR.code],
                        errors::RequestId::Absent,
                    )),
            ))
            .build();
        [
            (
                "400",
                ResponseBuilder::new()
                    .description(
                        "The content hash is not `sha256:` and 64 hex digits, the path is not a \
                         UI file's (a leading `/`, `\\`, control characters, `.` or hidden \
                         segments, or a type outside html js css json map svg png jpg jpeg \
                         webp woff woff2), the tenant is not a tenant id, or the extension is \
                         not 1–256 bytes without control characters or `/`",
                    )
                    .content(
                        "text/plain",
                        text(&[
                            "invalid content hash",
                            "invalid path",
                            "invalid tenant",
                            "invalid extension",
                        ]),
                    )
                    .build(),
            ),
            (
                "404",
                ResponseBuilder::new()
                    .description(
                        "No tenant, no active install of the extension in the tenant whose \
                         bundle has exactly this content hash, or the bundle has no \
                         `index.html` (empty body)",
                    )
                    .build(),
            ),
            (
                "413",
                ResponseBuilder::new()
                    .description("The file is over `ANNEX_EDGE_UI_MAX_FILE_BYTES`")
                    .content("text/plain", text(&["asset too large"]))
                    .build(),
            ),
            (
                "429",
                ResponseBuilder::new()
                    .description("This client's budget of uncached install lookups is spent")
                    .content("text/plain", text(&["too many lookups"]))
                    .header(
                        "Retry-After",
                        HeaderBuilder::new()
                            .schema(ObjectBuilder::new().schema_type(Type::Integer))
                            .build(),
                    )
                    .build(),
            ),
            (
                "500",
                ResponseBuilder::new()
                    .description(
                        "`extract_failed`: the bundle could not be fetched or unpacked, or a \
                         cached file no longer matches it; or `{\"error\":\"internal_error\"}`",
                    )
                    .content("application/json", failed)
                    .build(),
            ),
            (
                "502",
                ResponseBuilder::new()
                    .description("The bundle's bytes do not match its content hash")
                    .content("application/json", code(&["archive_hash_mismatch"]))
                    .build(),
            ),
        ]
        .into_iter()
        .map(|(status, r)| (status.to_owned(), RefOr::T(r)))
        .collect()
    }
}
