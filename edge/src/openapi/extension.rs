//! The path items of the extension routes, `/api/ext` and `/api/ext-proxy`,
//! built in code: axum routes them with `any()`, so one handler serves every
//! method, and the methods it takes (and what each answers) are written out
//! here per route from the same refusal lists ([`super::errors`]).

use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
    ParameterStyle, PathItem, PathItemBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, Ref, RefOr, Required, Response, ResponseBuilder,
    ResponsesBuilder,
};

use super::errors::{self, Refusal};

/// Which extension route a path item is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExtRoute {
    /// `/api/ext/{extension_id}…`: the gateway.
    Gateway,
    /// `/api/ext-proxy/{extension_id}…`: the iframe bridge's proxy.
    Proxy,
}

impl ExtRoute {
    /// The methods the route serves, the CORS preflight included: `/api/ext`
    /// takes HEAD (as GET), `/api/ext-proxy` does not
    /// (`endpoints::is_routable`, `ext_proxy::OVERRIDABLE`); any other method
    /// answers 404 `endpoint_not_found`.
    pub(crate) fn methods(self) -> &'static [HttpMethod] {
        use HttpMethod::*;
        match self {
            ExtRoute::Gateway => &[Get, Head, Post, Put, Patch, Delete, Options],
            ExtRoute::Proxy => &[Get, Post, Put, Patch, Delete, Options],
        }
    }

    fn name(self) -> &'static str {
        match self {
            ExtRoute::Gateway => "ext",
            ExtRoute::Proxy => "ext_proxy",
        }
    }

    fn description(self) -> &'static str {
        match self {
            ExtRoute::Gateway => {
                "Authenticates the caller, resolves the tenant's active install, checks the \
                 declared endpoint, the permissions, the rate limit and the quotas, then runs \
                 the extension on a worker. The answer is the extension's own; the statuses \
                 listed are the edge's refusals (an extension may answer those statuses too, \
                 with bodies of its own)."
            }
            ExtRoute::Proxy => {
                "As `/api/ext`, with the `__method` override for POST (the query parameter, \
                 else a top-level `__method` field of a JSON object body, which is removed) and \
                 the user's additional fields passed on. A status 0 from the extension is 200."
            }
        }
    }

    fn refusals(self) -> Vec<Refusal> {
        match self {
            ExtRoute::Gateway => errors::gateway(),
            ExtRoute::Proxy => errors::proxy(),
        }
    }
}

/// The path item of `route` at `path` (the router's path; a trailing
/// `{*name}` is the rest of the path).
pub(crate) fn path_item(route: ExtRoute, path: &str) -> PathItem {
    let tail = path
        .rsplit_once("/{*")
        .and_then(|(_, rest)| rest.strip_suffix('}'));
    let suffix = match tail {
        Some(_) => "_path",
        None if path.ends_with('/') => "_slash",
        None => "",
    };
    let mut item = PathItemBuilder::new()
        .description(Some(route.description()))
        .parameters(Some(shared_params(tail)));
    for method in route.methods() {
        let id = format!("{}_{}{suffix}", route.name(), method_name(method));
        let op = if *method == HttpMethod::Options {
            preflight(route, &id)
        } else {
            call(route, method, &id)
        };
        item = item.operation(method.clone(), op);
    }
    item.build()
}

fn method_name(method: &HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "get",
        HttpMethod::Head => "head",
        HttpMethod::Post => "post",
        HttpMethod::Put => "put",
        HttpMethod::Patch => "patch",
        HttpMethod::Delete => "delete",
        HttpMethod::Options => "options",
        HttpMethod::Trace => "trace",
    }
}

/// Any value.
fn any() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::AnyValue)
}

/// Whatever the extension answered.
fn extension_answer() -> ObjectBuilder {
    any().description(Some("The extension's answer, as it gave it"))
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn param(name: &str, at: ParameterIn, required: bool, description: &str) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(at)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(string()))
}

/// The path parameters: the extension and, on the wildcard route, the tail.
fn path_params(tail: Option<&str>) -> Vec<Parameter> {
    let mut v = vec![
        param(
            "extension_id",
            ParameterIn::Path,
            true,
            "The install id, the registry id or the slug (`publisher.name`, lower case)",
        )
        .schema(Some(string().min_length(Some(1))))
        .build(),
    ];
    if let Some(name) = tail {
        v.push(
            param(
                name,
                ParameterIn::Path,
                true,
                "The extension's path (percent-decoded, empty segments dropped), matched \
                 against the install's `api.endpoints`; it may hold `/`",
            )
            .build(),
        );
    }
    v
}

/// What every call of the route may send besides its path: the query and
/// the headers the edge reads.
fn shared_params(tail: Option<&str>) -> Vec<Parameter> {
    let mut v = path_params(tail);
    v.push(
        param(
            "query",
            ParameterIn::Query,
            false,
            "The extension's query parameters, passed on (the last value of a repeated name)",
        )
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(AdditionalProperties::RefOr(string().into()))),
        ))
        .style(Some(ParameterStyle::Form))
        .explode(Some(true))
        .build(),
    );
    v.extend([
        param(
            "x-request-id",
            ParameterIn::Header,
            false,
            "The request's id: kept when 1–128 visible ASCII characters, else a new UUID; \
             answered in `x-request-id`",
        )
        .build(),
        param(
            "x-alga-tenant",
            ParameterIn::Header,
            false,
            "When present, it must be the caller's tenant (403 `tenant_mismatch`)",
        )
        .build(),
        param(
            "x-tenant-id",
            ParameterIn::Header,
            false,
            "When present, it must be the caller's tenant (403 `tenant_mismatch`)",
        )
        .build(),
        param(
            "traceparent",
            ParameterIn::Header,
            false,
            "A W3C trace context, carried on to the worker when well formed",
        )
        .build(),
    ]);
    v
}

fn write(method: &HttpMethod) -> bool {
    !matches!(method, HttpMethod::Get | HttpMethod::Head)
}

fn call(route: ExtRoute, method: &HttpMethod, id: &str) -> Operation {
    let mut params = Vec::new();
    if route == ExtRoute::Proxy && *method == HttpMethod::Post {
        params.push(
            param(
                "__method",
                ParameterIn::Query,
                false,
                "The effective method (GET, POST, PUT, PATCH or DELETE, any case; anything \
                 else is ignored); removed before the extension sees the query",
            )
            .build(),
        );
    }
    params.push(
        param(
            "x-annex-rollout-key",
            ParameterIn::Header,
            false,
            "The sticky key of a rollout (1–256 visible ASCII characters): while the install \
             serves several versions, calls with the same key reach the same version \
             (default: the caller's user or API-key id)",
        )
        .build(),
    );
    if write(method) {
        let what = match route {
            ExtRoute::Gateway => {
                "The write's idempotency key: a repeat (same key, method, path, query, body and \
                 user) gets the first answer with `x-idempotent-replay: true`"
            }
            ExtRoute::Proxy => {
                "Passed on to the extension (a new UUID when absent); not a transport key"
            }
        };
        params.push(param("x-idempotency-key", ParameterIn::Header, false, what).build());
    }
    let mut op = OperationBuilder::new()
        .operation_id(Some(id))
        .tag(route.name())
        .summary(Some(match route {
            ExtRoute::Gateway => "Call an extension's endpoint",
            ExtRoute::Proxy => "Call an extension's endpoint for its iframe UI",
        }))
        .parameters(Some(params))
        .securities(Some(super::authenticated()))
        .responses(responses(route, false));
    if write(method) {
        op = op.request_body(Some(body(route)));
    }
    op.build()
}

/// A write's body: passed on as bytes (none for GET and HEAD).
fn body(route: ExtRoute) -> utoipa::openapi::request_body::RequestBody {
    let json = match route {
        ExtRoute::Gateway => "Any JSON",
        ExtRoute::Proxy => {
            "Any JSON; on POST a top-level `__method` field of an object is the override"
        }
    };
    RequestBodyBuilder::new()
        .description(Some(
            "Passed on to the extension as it came, at most `ANNEX_EDGE_MAX_BODY_BYTES`. A \
             cookie session must send JSON or `application/octet-stream`; a Bearer token or \
             API key may send any type.",
        ))
        .required(Some(Required::False))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(any().description(Some(json))))
                .build(),
        )
        .content(
            "application/octet-stream",
            ContentBuilder::new()
                .schema(Some(
                    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary))),
                ))
                .build(),
        )
        .build()
}

/// The CORS preflight: no authentication, 204.
fn preflight(route: ExtRoute, id: &str) -> Operation {
    let origins = match route {
        ExtRoute::Gateway => "ANNEX_EDGE_ALLOWED_ORIGINS",
        ExtRoute::Proxy => "ANNEX_EDGE_PROXY_ALLOWED_ORIGINS",
    };
    let params = vec![
        param(
            "Origin",
            ParameterIn::Header,
            false,
            "Answered with the CORS headers only when it is in the route's allowlist",
        )
        .build(),
    ];
    OperationBuilder::new()
        .operation_id(Some(id))
        .tag(route.name())
        .summary(Some("CORS preflight"))
        .description(Some(format!(
            "Answered before authentication. For an `Origin` in `{origins}`: \
             `Access-Control-Allow-Origin`, `-Allow-Credentials: true`, `-Allow-Methods: \
             GET,POST,PUT,PATCH,DELETE,OPTIONS`, `-Allow-Headers: \
             content-type,x-request-id,x-idempotency-key` and `-Max-Age: 180`."
        )))
        .parameters(Some(params))
        .securities(Some([SecurityRequirement::default()]))
        .responses(responses(route, true))
        .build()
}

fn request_id_header() -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(string())
        .description(Some("The request's id"))
        .build()
}

/// The responses every call of `route` shares, as `(status, name,
/// response)`: the extension's answer (`default`, named `<route>_answer`)
/// and each status of the refusals (`<route>_<status>`). The document keeps
/// them once, under `components/responses`.
pub(crate) fn shared_responses(route: ExtRoute) -> Vec<(String, String, Response)> {
    let headers = match route {
        ExtRoute::Gateway => "`content-type`, `cache-control`, `etag` and `x-ext-*`",
        ExtRoute::Proxy => {
            "`content-type`, `cache-control`, `x-ext-request-id` and `x-ext-warning`"
        }
    };
    let answer = ResponseBuilder::new()
        .description(format!(
            "The extension's answer: its status (200–599) and body (none for 204 and 304), its \
             headers filtered to {headers}, `cache-control` made private; \
             `x-idempotent-replay: true` on a replayed answer"
        ))
        .header("x-request-id", request_id_header())
        .content(
            "*/*",
            ContentBuilder::new()
                .schema(Some(extension_answer()))
                .build(),
        )
        .build();
    let mut out = vec![(
        "default".to_owned(),
        format!("{}_answer", route.name()),
        answer,
    )];
    // The extension's own answer may have any of the refusals' statuses
    // too: each status is the edge's refusal or the extension's answer.
    for (status, response) in errors::responses(&route.refusals()) {
        let RefOr::T(mut r) = response else {
            continue;
        };
        r.headers.insert("x-request-id".into(), request_id_header());
        r.description
            .push_str("; or the extension's own answer with this status");
        if let Some(json) = r.content.get_mut("application/json")
            && let Some(refusal) = json.schema.take()
        {
            json.schema = Some(
                AnyOfBuilder::new()
                    .item(refusal)
                    .item(extension_answer())
                    .into(),
            );
        }
        r.content.insert(
            "*/*".into(),
            ContentBuilder::new()
                .schema(Some(extension_answer()))
                .build(),
        );
        let name = format!("{}_{status}", route.name());
        out.push((status, name, r));
    }
    out
}

fn responses(route: ExtRoute, preflight: bool) -> utoipa::openapi::Responses {
    if preflight {
        return ResponsesBuilder::new()
            .response(
                "204",
                ResponseBuilder::new()
                    .description("The preflight's answer (no body)")
                    .header("x-request-id", request_id_header()),
            )
            .build();
    }
    ResponsesBuilder::new()
        .responses_from_iter(
            shared_responses(route)
                .into_iter()
                .map(|(status, name, _)| (status, Ref::from_response_name(name))),
        )
        .build()
}
