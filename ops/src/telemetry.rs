//! Logging and tracing setup for the binaries: JSON lines (or human-readable
//! text for `annex dev`), filtered by `RUST_LOG` (default `info`), and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OpenTelemetry layer exporting
//! Annex's spans over OTLP with a batch processor.
//!
//! The exporter honours the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (and `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`http/protobuf`, the default, or `grpc`), `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME` (default: the binary's
//! name), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*` (batching) and
//! `OTEL_SDK_DISABLED`. The W3C TraceContext propagator is installed
//! globally; [`crate::trace_context`] carries it across processes.
//!
//! Without the endpoint nothing of OpenTelemetry is set up: logging is
//! exactly as before and [`crate::trace_context::enabled`] stays false.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::{EnvFilter, Layer as _, fmt, prelude::*};

/// Log line format; every binary takes it as `--log-format` / `ANNEX_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Span exporting for the life of the process: dropping it (or
/// [`Telemetry::shutdown`]) flushes the spans still queued. Keep it in
/// `main` until the servers have stopped.
#[must_use = "dropping the guard stops span export"]
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub(crate) fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the queued spans and stops the exporter (blocks until done or
    /// the export timeout passes).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("annex: flushing spans at exit failed: {error}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the environment asks for OTLP span export.
fn export_requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The tracer provider exporting over OTLP, `service` unless
/// `OTEL_SERVICE_NAME` names another.
fn provider(service: &'static str) -> Result<SdkTracerProvider, String> {
    // The HTTP exporter's client speaks rustls: it needs the process-wide
    // crypto provider even for plain `http://` endpoints.
    crate::tls::install_crypto_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .is_none_or(|v| v.trim().is_empty())
    {
        resource = resource.with_service_name(service);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Installs the global subscriber once; later calls are ignored (tests start
/// several services in one process) and return an inert guard. `service` is
/// the binary's OpenTelemetry `service.name` (`annex-edge`, ...).
pub fn init(format: LogFormat, service: &'static str) -> Telemetry {
    let (provider, failure) = if export_requested() {
        match provider(service) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    // Only Annex's own spans are exported: the HTTP/2 and TLS stacks'
    // spans (RUST_LOG=trace) would be noise, and the exporter's own calls
    // would feed back into it.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("annex"))
            .with_filter(filter_fn(|m| m.target().starts_with("annex")))
    });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer().compact()).try_init(),
    }
    .is_ok();
    if let Some(error) = failure {
        tracing::error!(error = %error, "OTLP span export is not set up");
    }
    let mut telemetry = Telemetry { provider };
    if !installed {
        telemetry.stop();
    } else if telemetry.exporting() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        crate::trace_context::enable();
        tracing::info!(service, "exporting spans over OTLP");
    }
    telemetry
}
