//! W3C trace context across the Annex processes.
//!
//! When [`telemetry::init`](crate::telemetry::init) installed the OTLP
//! exporter, [`enabled`] is true and these helpers continue an incoming
//! `traceparent` (HTTP headers, gRPC metadata, or the `traceparent` field of
//! an `ExecuteRequest`) on a `tracing` span and inject the current span's
//! context into outgoing tonic requests. When it is not, every helper returns
//! at once: no header is parsed, no metadata is written and [`span!`] makes
//! no span, so a process without an exporter pays one relaxed atomic load.
//!
//! Outgoing calls: wrap a client's channel with [`Propagate`]
//! (`XClient::with_interceptor(channel, Propagate)`), or build one request
//! with [`request`] / [`inject`]. Incoming calls: the control plane's
//! server wraps its routes in [`GrpcServerSpans`]; the edge and the worker
//! make their own entry spans and call [`continue_http`] / [`continue_grpc`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing::Span;
use tracing::instrument::{Instrument as _, Instrumented};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported, so trace context is worth carrying.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Called by `telemetry` once the OTLP layer is installed.
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// An INFO span that exists only while spans are exported
/// ([`enabled`]); otherwise `Span::none()`, which costs nothing to enter.
/// Same arguments as `tracing::info_span!`.
#[macro_export]
macro_rules! span {
    ($($arg:tt)*) => {
        if $crate::trace_context::enabled() {
            ::tracing::info_span!($($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// Reads `traceparent`/`tracestate` from HTTP headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Reads ASCII entries of gRPC metadata.
struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                KeyRef::Ascii(k) => Some(k.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// A lone `traceparent` value (the field of an `ExecuteRequest`).
struct TraceparentExtractor<'a>(&'a str);

impl Extractor for TraceparentExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// Writes entries into gRPC metadata.
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

fn extract(extractor: &dyn Extractor) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(extractor))
}

fn has_remote_parent(cx: &opentelemetry::Context) -> bool {
    cx.span().span_context().is_valid()
}

/// Makes `span` continue the caller's trace from its HTTP headers
/// (`traceparent`, `tracestate`). Without a valid `traceparent` the span
/// starts a new trace. Call before the span is first entered.
pub fn continue_http(span: &Span, headers: &http::HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = extract(&HeaderExtractor(headers));
    if has_remote_parent(&cx) {
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` continue the caller's trace from gRPC metadata, or, when the
/// metadata carries none, from `traceparent` (a request body's field; empty
/// for none). Call before the span is first entered.
pub fn continue_grpc(span: &Span, metadata: &MetadataMap, traceparent: &str) {
    if !enabled() {
        return;
    }
    let mut cx = extract(&MetadataExtractor(metadata));
    if !has_remote_parent(&cx) && !traceparent.is_empty() {
        cx = extract(&TraceparentExtractor(traceparent));
    }
    if has_remote_parent(&cx) {
        let _ = span.set_parent(cx);
    }
}

/// Writes the current span's context into outgoing gRPC metadata.
pub fn inject(metadata: &mut MetadataMap) {
    if !enabled() {
        return;
    }
    let cx = Span::current().context();
    if has_remote_parent(&cx) {
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut MetadataInjector(metadata));
        });
    }
}

/// A tonic request for `message` carrying the current span's context.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    inject(request.metadata_mut());
    request
}

/// The current span's `traceparent`, when spans are exported and there is
/// a current span.
pub fn traceparent() -> Option<String> {
    let mut metadata = MetadataMap::new();
    inject(&mut metadata);
    metadata
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Client interceptor: every request carries the current span's context.
/// `XClient::with_interceptor(channel, Propagate)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Propagate;

impl tonic::service::Interceptor for Propagate {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject(request.metadata_mut());
        Ok(request)
    }
}

/// Server layer: a `grpc.server` span (OpenTelemetry name `<service>/<method>`,
/// kind server) around each call whose path starts with one of `prefixes`
/// (e.g. `/annex.v1.HostServices/`), continuing the caller's context from
/// its metadata. Other calls, and every call while spans are not exported,
/// pass through untouched.
#[derive(Debug, Clone, Copy)]
pub struct GrpcServerSpans {
    prefixes: &'static [&'static str],
}

impl GrpcServerSpans {
    pub const fn new(prefixes: &'static [&'static str]) -> GrpcServerSpans {
        GrpcServerSpans { prefixes }
    }
}

impl<S> tower::Layer<S> for GrpcServerSpans {
    type Service = GrpcServerSpansService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerSpansService {
            inner,
            prefixes: self.prefixes,
        }
    }
}

/// The service [`GrpcServerSpans`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct GrpcServerSpansService<S> {
    inner: S,
    prefixes: &'static [&'static str],
}

impl<S, B> tower::Service<http::Request<B>> for GrpcServerSpansService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = if enabled() {
            server_span(request.uri().path(), request.headers(), self.prefixes)
        } else {
            Span::none()
        };
        self.inner.call(request).instrument(span)
    }
}

fn server_span(path: &str, headers: &http::HeaderMap, prefixes: &[&str]) -> Span {
    if !prefixes.iter().any(|p| path.starts_with(p)) {
        return Span::none();
    }
    let name = path.trim_start_matches('/');
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    );
    continue_http(&span, headers);
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::prelude::*;

    const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const OTHER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// Runs `f` under a subscriber with the OpenTelemetry layer, as a
    /// process with an exporter would (spans are recorded, not exported).
    fn traced<R>(f: impl FnOnce() -> R) -> R {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        enable();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    fn parts(traceparent: &str) -> (String, String) {
        let p: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(p.len(), 4, "{traceparent}");
        (p[1].to_owned(), p[2].to_owned())
    }

    fn sent_traceparent(span: &Span) -> String {
        let _entered = span.enter();
        traceparent().expect("a traceparent for the current span")
    }

    #[test]
    fn an_incoming_http_traceparent_is_continued_with_a_new_span_id() {
        traced(|| {
            let mut headers = http::HeaderMap::new();
            headers.insert("traceparent", http::HeaderValue::from_static(CALLER));
            let span = tracing::info_span!("edge.request");
            continue_http(&span, &headers);
            let (trace, span_id) = parts(&sent_traceparent(&span));
            assert_eq!(trace, CALLER_TRACE);
            assert_ne!(span_id, "00f067aa0ba902b7");
        });
    }

    #[test]
    fn without_a_usable_traceparent_a_new_trace_starts() {
        traced(|| {
            for bad in [
                "",
                "garbage",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ] {
                let mut headers = http::HeaderMap::new();
                headers.insert("traceparent", http::HeaderValue::from_static(bad));
                let span = tracing::info_span!("edge.request");
                continue_http(&span, &headers);
                let (trace, _) = parts(&sent_traceparent(&span));
                assert_ne!(trace, CALLER_TRACE, "{bad:?}");
                assert_ne!(trace, "0".repeat(32), "{bad:?}");
            }
        });
    }

    #[test]
    fn grpc_metadata_wins_over_the_request_field_which_is_the_fallback() {
        traced(|| {
            let mut metadata = MetadataMap::new();
            metadata.insert("traceparent", MetadataValue::from_static(OTHER));
            let span = tracing::info_span!("execute");
            continue_grpc(&span, &metadata, CALLER);
            assert_eq!(
                parts(&sent_traceparent(&span)).0,
                "0af7651916cd43dd8448eb211c80319c"
            );

            let span = tracing::info_span!("execute");
            continue_grpc(&span, &MetadataMap::new(), CALLER);
            assert_eq!(parts(&sent_traceparent(&span)).0, CALLER_TRACE);
        });
    }

    #[test]
    fn outgoing_requests_and_the_interceptor_carry_the_current_span() {
        traced(|| {
            let span = tracing::info_span!("worker.guest");
            let expected = sent_traceparent(&span);
            let _entered = span.enter();
            let r = request(());
            assert_eq!(
                r.metadata()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok()),
                Some(expected.as_str())
            );
            let r = tonic::service::Interceptor::call(&mut Propagate, tonic::Request::new(()))
                .expect("interceptor");
            assert_eq!(
                r.metadata()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok()),
                Some(expected.as_str())
            );
        });
    }

    #[test]
    fn outside_any_span_nothing_is_injected() {
        traced(|| {
            assert_eq!(traceparent(), None);
            assert!(request(()).metadata().get("traceparent").is_none());
        });
    }

    #[test]
    fn server_spans_only_for_the_listed_methods_and_named_after_them() {
        traced(|| {
            let prefixes = &["/annex.v1.HostServices/"];
            let mut headers = http::HeaderMap::new();
            headers.insert("traceparent", http::HeaderValue::from_static(CALLER));
            let span = server_span("/annex.v1.HostServices/StorageGet", &headers, prefixes);
            assert_eq!(span.metadata().map(|m| m.name()), Some("grpc.server"));
            assert_eq!(parts(&sent_traceparent(&span)).0, CALLER_TRACE);
            let span = server_span("/annex.v1.Fleet/Heartbeat", &headers, prefixes);
            assert!(span.is_none());
        });
    }
}
