//! Runs an edge: the public HTTP routes, the routing watch, the audit
//! shipper and the admin listener. A server is a function of (settings,
//! [`Io`] (TLS material, listeners, admin state), shutdown): it binds
//! nothing and installs no signal handlers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use annex_ops::serve::Io;
use annex_ops::tls::Tls;
use annex_ops::upstream::{Upstream, UpstreamSettings};
use annex_proto::pb;
use anyhow::Context as _;
use axum::Router;
use axum::routing::{MethodRouter, any, get};
use tokio::net::TcpListener;

use crate::audit::{self, AuditSink};
use crate::auth::{ApiKeyCache, ApiKeyCacheParts, Authenticator, SessionVerifier};
use crate::clients::Clients;
use crate::config::Settings;
use crate::cors::Cors;
use crate::debug_stream::StreamCaps;
use crate::installs::InstallCache;
use crate::metrics::Metrics;
use crate::openapi::ExtRoute;
use crate::ratelimit::RateLimiter;
use crate::routing::{self, Routes};
use crate::state::EdgeState;
use crate::ui_store::UiStore;
use crate::{bridge, debug_stream, ext_api, ext_proxy, ext_ui, listener, openapi, ui_hosts};
use annex_dispatch::WorkerTls;

/// Bound sockets for an edge.
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    pub admin: TcpListener,
}

/// How long buffered audit rows may take to ship at shutdown.
const AUDIT_DRAIN: Duration = Duration::from_secs(5);

/// One public route: its path as the router matches it and its handlers.
/// The router and the OpenAPI document ([`crate::openapi`]) are both built
/// from [`ROUTES`], so no route is served undocumented.
pub(crate) struct Route {
    pub path: &'static str,
    pub handlers: fn() -> MethodRouter<Arc<EdgeState>>,
    /// For a route that takes any method: which extension route it is, whose
    /// path item the document builds in code. `None`: the handlers carry
    /// `#[utoipa::path]`.
    pub any: Option<ExtRoute>,
}

/// Every public route.
pub(crate) const ROUTES: &[Route] = &[
    Route {
        path: "/api/ext/{extension_id}",
        handlers: || any(ext_api::handle),
        any: Some(ExtRoute::Gateway),
    },
    Route {
        path: "/api/ext/{extension_id}/",
        handlers: || any(ext_api::handle),
        any: Some(ExtRoute::Gateway),
    },
    Route {
        path: "/api/ext/{extension_id}/{*path}",
        handlers: || any(ext_api::handle),
        any: Some(ExtRoute::Gateway),
    },
    Route {
        path: "/api/ext-proxy/{extension_id}",
        handlers: || any(ext_proxy::handle),
        any: Some(ExtRoute::Proxy),
    },
    Route {
        path: "/api/ext-proxy/{extension_id}/",
        handlers: || any(ext_proxy::handle),
        any: Some(ExtRoute::Proxy),
    },
    Route {
        path: "/api/ext-proxy/{extension_id}/{*route}",
        handlers: || any(ext_proxy::handle),
        any: Some(ExtRoute::Proxy),
    },
    Route {
        path: "/ext-ui/{extension_id}/{content_hash}/{*path}",
        handlers: || get(ext_ui::handle),
        any: None,
    },
    Route {
        path: "/api/ext-debug/stream",
        handlers: || get(debug_stream::handle).post(debug_stream::poll),
        any: None,
    },
    Route {
        path: "/ext-bridge/{file}",
        handlers: || get(bridge::handle),
        any: None,
    },
    Route {
        path: "/openapi.json",
        handlers: || get(openapi::serve),
        any: None,
    },
];

/// The public routes over `state`.
pub(crate) fn router(state: Arc<EdgeState>) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path, (route.handlers)())
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ui_hosts::guard,
        ))
        .layer(catch_panics())
        .with_state(state)
}

/// A handler that panics answers 500 `{"error":"internal_error"}` (logged
/// with the panic's message) instead of dropping the client's connection.
fn catch_panics() -> tower_http::catch_panic::CatchPanicLayer<
    fn(Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response,
> {
    fn answer(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        tracing::error!(panic = message, "a request handler panicked");
        axum::response::IntoResponse::into_response(crate::error::ApiError::INTERNAL_ERROR)
    }
    tower_http::catch_panic::CatchPanicLayer::custom(answer as fn(_) -> _)
}

/// The control plane's replicas: unary calls spread over them, the routes
/// stream on one at a time (annex_ops::upstream).
fn control_plane(settings: &Settings, tls: &Tls) -> anyhow::Result<Upstream> {
    Upstream::new(
        UpstreamSettings::new(
            settings.control_plane_urls.clone(),
            Some(settings.control_plane_server_name.clone()),
        ),
        tls.clone(),
    )
    .context("configuring the control-plane connection")
}

/// Serves until `shutdown` resolves, then reports not-ready, finishes
/// in-flight requests and ships the buffered audit rows.
pub async fn run(
    settings: Settings,
    io: Io<Listeners>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Io {
        tls,
        listeners,
        admin,
    } = io;
    annex_ops::tls::install_crypto_provider();
    // Certificates are reloaded when their files change (cert-manager
    // renews them in place); new connections use the current ones.
    let tls = Tls::new(tls).context("loading the TLS certificate, key and CA")?;
    tls.watch(&admin);
    let channel = control_plane(&settings, &tls)?;
    let dispatch = pb::dispatch_client::DispatchClient::new(channel.clone());
    let metrics = Metrics::default();
    admin.with_registry(|r| metrics.register(r));
    let routes_client = pb::dispatch_client::DispatchClient::new(channel.stream_channel());
    let installs = InstallCache::new(
        pb::installs_client::InstallsClient::new(channel.clone()),
        settings.install_cache_ttl,
        settings.install_cache_max_bytes,
        metrics.install_cache_bytes.clone(),
    );
    let routes = Arc::new(Routes::new(
        WorkerTls {
            material: tls.clone(),
            server_name: settings.worker_server_name.clone(),
        },
        settings.in_process.clone(),
    ));
    let clients = Arc::new(Clients::new(
        settings.client_ip_header.clone(),
        settings.lookups,
        metrics.lookup_refusals.clone(),
    ));
    let ui = UiStore::open(
        pb::registry_client::RegistryClient::new(channel.clone())
            .max_decoding_message_size(routing::MAX_EXECUTE_MESSAGE_BYTES),
        settings.ui_store.clone(),
        metrics.ui_cache_fills.clone(),
    )
    .with_context(|| {
        format!(
            "opening the UI cache at {}",
            settings.ui_store.root.display()
        )
    })?;
    let (audit_sink, audit_rx) = AuditSink::new(settings.audit);
    let state = Arc::new(EdgeState {
        auth: Authenticator {
            jwt: SessionVerifier::start(settings.jwt.clone())
                .context("starting session verification")?,
            cookie: settings.session_cookie.clone(),
            api_keys: ApiKeyCache::new(ApiKeyCacheParts {
                client: dispatch.clone(),
                ttl: settings.api_key_cache_ttl,
                max_bytes: settings.api_key_cache_max_bytes,
                clients: clients.clone(),
                bytes: metrics.api_key_cache_bytes.clone(),
            }),
        },
        installs: installs.clone(),
        routes: routes.clone(),
        limiter: RateLimiter::new(settings.rate),
        audit: audit_sink,
        ui,
        ui_policy: settings.ui_policy.clone(),
        ui_tenants: crate::ext_ui::TenantHints::default(),
        host: pb::host_services_client::HostServicesClient::new(channel.clone()),
        metrics: metrics.clone(),
        ext_cors: Cors {
            allowed_origins: settings.allowed_origins.clone(),
        },
        proxy_cors: Cors {
            allowed_origins: settings.proxy_allowed_origins.clone(),
        },
        policy: settings.policy,
        clients,
        debug_streams: StreamCaps::new(settings.debug_streams, metrics.debug_streams.clone()),
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_task = tokio::spawn(annex_ops::admin::serve(listeners.admin, admin.clone(), {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }));
    let watch_task = tokio::spawn(routing::watch(
        routes_client,
        settings.edge_id.clone(),
        routes.clone(),
        installs,
        stop_rx.clone(),
    ));
    let audit_task = tokio::spawn(audit::ship(
        dispatch,
        audit_rx,
        settings.audit,
        audit::AuditCounters {
            failures: metrics.audit_failures.clone(),
            dropped: metrics.audit_dropped.clone(),
        },
    ));
    // Ready once the first routing snapshot has arrived (before it, every
    // execution would fail with no worker to send it to).
    let readiness = {
        let admin = admin.clone();
        let routes = routes.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    return;
                }
                admin.set_ready(routes.has_snapshot());
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stop.changed() => {}
                }
            }
        })
    };

    tracing::info!(edge = %settings.edge_id, "edge serving");
    listener::serve(
        listeners.http,
        router(state),
        settings.connections,
        listener::ConnectionMetrics {
            open: metrics.connections.clone(),
            refused: metrics.connections_refused.clone(),
        },
        {
            let admin = admin.clone();
            let stop_tx = stop_tx.clone();
            async move {
                shutdown.await;
                tracing::info!("edge shutting down");
                let _ = stop_tx.send(true);
                admin.set_ready(false);
            }
        },
    )
    .await;
    let _ = stop_tx.send(true);
    admin.set_ready(false);
    readiness.abort();
    let _ = watch_task.await;
    // The router (and with it every audit sender) is gone: the shipper
    // drains what is buffered and ends.
    if tokio::time::timeout(AUDIT_DRAIN, audit_task).await.is_err() {
        tracing::warn!("audit rows still unshipped at shutdown");
    }
    let _ = admin_task.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_the_json_error_body() {
        let app = axum::Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    let v: Vec<&'static str> = Vec::new();
                    v[1]
                }),
            )
            .layer(super::catch_panics());
        let resp = app
            .oneshot(
                http::Request::builder()
                    .uri("/boom")
                    .body(axum::body::Body::empty())
                    .expect("request"),
            )
            .await
            .expect("an answer, not a dropped connection");
        assert_eq!(resp.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body = axum::body::to_bytes(resp.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&body[..], br#"{"error":"internal_error"}"#);
    }
}
