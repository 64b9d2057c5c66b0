//! Alga's runner HTTP API on a worker (docs/design/alga-compatibility.md,
//! "Runner API"), so Alga's own gateway and scheduler can send executions
//! to Annex while an Alga deployment adopts it in steps. Off unless the
//! worker is given a listener (`--runner-api-listen`).
//!
//! Routes: `POST /v1/execute` and `POST /warmup` (both need the service
//! token, [`token`]), `GET /healthz`, and documented refusals for `GET /`
//! and `GET /ext-ui/...` (per-install domains and UI files are the edge's).
//! [`envelope`] is the JSON, [`execute`] one call in Alga's order of
//! checks, [`replay`] idempotent replay, [`secrets`] the secret envelope,
//! [`bundle_store`] Alga's bundle store, [`host_app`] the host calls of
//! these executions, [`settings`] the flags (Alga's environment variables),
//! [`tls`] optional TLS.
//!
//! Executions run on the worker's own executor (admission, limits, egress
//! policy, compiled-component cache, logs and metrics); this module never
//! compiles or instantiates anything itself, and holds no database or
//! control-plane credentials.

mod bundle_store;
mod envelope;
mod execute;
mod host_app;
mod metrics;
mod replay;
mod secrets;
pub(crate) mod settings;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
mod token;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::bundles::TrustSource;
use crate::execute::Executor;
use bundle_store::BundleStore;
use host_app::HostApp;
use metrics::ApiMetrics;
use replay::Replays;
use settings::RunnerApiSettings;
pub use settings::{RunnerApiConfig, RunnerApiSettingsError};
use token::ServiceToken;
pub use token::TokenError;

/// What the runner API needs from the worker besides its settings.
pub(crate) struct Parts {
    pub(crate) executor: Arc<Executor>,
    /// The worker's trust keys; `None`: bundles are checked by digest only.
    pub(crate) trust: Option<Arc<dyn TrustSource>>,
    /// The compiled-component disk cache, probed by `/healthz`.
    pub(crate) cache_dir: Option<PathBuf>,
}

/// The runner API's state.
pub(crate) struct RunnerApi {
    executor: Arc<Executor>,
    token: ServiceToken,
    replays: Arc<Replays>,
    bundle_store: Option<Arc<BundleStore>>,
    trust: Option<Arc<dyn TrustSource>>,
    host_app: Arc<HostApp>,
    egress_allowlist: Vec<String>,
    cache_dir: Option<PathBuf>,
    ext_cache_max_bytes: Option<String>,
    metrics: ApiMetrics,
}

impl RunnerApi {
    /// Reads the token file and builds the clients; fails at start on a
    /// token the API must not run with.
    pub(crate) fn new(
        settings: &RunnerApiSettings,
        parts: Parts,
        registry: Option<&mut Registry>,
    ) -> anyhow::Result<RunnerApi> {
        let token = ServiceToken::load(&settings.token_file)?;
        let metrics = registry.map_or_else(ApiMetrics::default, ApiMetrics::register);
        annex_ops::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the runner API's HTTP client")?;
        if parts.trust.is_none() {
            tracing::warn!(
                "runner API without trust keys: bundles are checked against their content hash only, signatures are not verified"
            );
        }
        if settings.bundle_store.is_none() {
            tracing::warn!(
                "BUNDLE_STORE_BASE is not set: every /v1/execute answers engine_init_failed"
            );
        }
        Ok(RunnerApi {
            executor: parts.executor,
            token,
            replays: Arc::new(Replays::new(settings.replay)),
            bundle_store: settings.bundle_store.clone().map(|base| {
                Arc::new(BundleStore::new(
                    base,
                    client.clone(),
                    metrics.downloads.clone(),
                ))
            }),
            trust: parts.trust,
            host_app: Arc::new(HostApp::new(settings.host_app.clone(), client)),
            egress_allowlist: settings.egress_allowlist.clone(),
            cache_dir: parts.cache_dir,
            ext_cache_max_bytes: settings.ext_cache_max_bytes.clone(),
            metrics,
        })
    }
}

/// Serves the runner API on `listener` (TLS when `settings` names
/// certificate files) until `shutdown`.
pub(crate) async fn serve(
    api: Arc<RunnerApi>,
    settings: &RunnerApiSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(api);
    let listen = listener.local_addr().context("runner API listener")?;
    match &settings.tls {
        Some((cert, key)) => {
            let listener = tls::TlsListener::new(listener, tls::acceptor(cert, key)?)?;
            tracing::info!(%listen, tls = true, "runner API serving");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?;
        }
        None => {
            tracing::info!(%listen, tls = false, "runner API serving");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?;
        }
    }
    Ok(())
}

/// The routes; every answer carries `cache-control: no-store` (Alga's
/// runner marks even execute answers immutable, which its gateway then
/// passes to browsers).
fn router(api: Arc<RunnerApi>) -> Router {
    let authenticated = Router::new()
        .route("/v1/execute", post(execute::handle))
        .route("/warmup", post(warmup))
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            execute::require_token,
        ));
    Router::new()
        .merge(authenticated)
        .route("/healthz", get(healthz))
        .route("/", get(no_host_dispatch))
        .route("/ext-ui/{*path}", get(no_ext_ui))
        .layer(axum::middleware::map_response(no_store))
        .with_state(api)
}

async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Serialize)]
struct Health {
    cache_writable: bool,
    bundle_store: &'static str,
    ext_cache_max_bytes: Option<String>,
}

/// Alga's health answer: 200 while the cache is writable, 503 otherwise
/// (and, here, while the worker drains). Unauthenticated, for probes.
async fn healthz(State(api): State<Arc<RunnerApi>>) -> Response {
    let cache_writable = match &api.cache_dir {
        // Memory only: nothing to write.
        None => true,
        Some(dir) => {
            let probe = dir.join("healthz.tmp");
            let ok = tokio::fs::write(&probe, b"ok").await.is_ok();
            ok && tokio::fs::remove_file(&probe).await.is_ok()
        }
    };
    let bundle_store = match &api.bundle_store {
        Some(store) => store.probe().await,
        None => "bundle_store_unreachable",
    };
    let healthy = cache_writable && !api.executor.drain_state().is_draining();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        cache_writable,
        bundle_store,
        ext_cache_max_bytes: api.ext_cache_max_bytes.clone(),
    };
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
struct WarmupBody {
    content_hash: String,
}

/// Alga's runner always refuses warm-up (it has no tenant and extension to
/// find the bundle with). Given the routing headers, Annex fetches,
/// verifies and compiles the bundle; without them it answers as Alga's.
async fn warmup(
    State(api): State<Arc<RunnerApi>>,
    headers: HeaderMap,
    Json(body): Json<WarmupBody>,
) -> Response {
    let (Some(tenant), Some(extension)) = (
        execute::routing_header(&headers, "x-alga-tenant"),
        execute::routing_header(&headers, "x-alga-extension"),
    ) else {
        api.metrics.call("warmup", "refused");
        return (
            StatusCode::BAD_REQUEST,
            "warmup unsupported without tenant + extension context",
        )
            .into_response();
    };
    api.metrics.call("warmup", "answered");
    match api.warm(tenant, extension, &body.content_hash).await {
        Ok(source) => (
            StatusCode::OK,
            Json(serde_json::json!({"content_hash": body.content_hash, "source": source})),
        )
            .into_response(),
        Err((status, error)) => {
            (status, Json(serde_json::json!({ "error": error }))).into_response()
        }
    }
}

/// `GET /` (Alga's per-install domain dispatcher) is not served: Annex has
/// no per-install domains yet.
async fn no_host_dispatch() -> Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        "per-install domains (GET /) are not served by Annex's runner API; see docs/operators.md, \"Running Annex as Alga's runner\"",
    )
        .into_response()
}

/// `/ext-ui` is served by the Annex edge, which checks the install.
async fn no_ext_ui() -> Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        "extension UI files are served by the Annex edge (/ext-ui), not by the runner API; see docs/operators.md, \"Running Annex as Alga's runner\"",
    )
        .into_response()
}
