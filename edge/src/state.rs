//! The shared state of one edge process, built once by [`crate::run`].

use std::sync::Arc;

use annex_ops::upstream::Upstream;
use annex_proto::pb::host_services_client::HostServicesClient;

use crate::audit::AuditSink;
use crate::auth::Authenticator;
use crate::clients::Clients;
use crate::config::Policy;
use crate::cors::Cors;
use crate::debug_stream::StreamCaps;
use crate::ext_ui::UiPolicy;
use crate::installs::InstallCache;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::routing::Routes;
use crate::ui_store::UiStore;

#[derive(Debug)]
pub(crate) struct EdgeState {
    pub auth: Authenticator,
    pub installs: InstallCache,
    pub routes: Arc<Routes>,
    pub limiter: RateLimiter,
    pub audit: AuditSink,
    pub ui: UiStore,
    pub ui_policy: UiPolicy,
    /// Which tenant last loaded a UI, for its subresources (see [`crate::ext_ui::TenantHints`]).
    pub ui_tenants: crate::ext_ui::TenantHints,
    pub host: HostServicesClient<Upstream>,
    pub metrics: Metrics,
    pub ext_cors: Cors,
    pub proxy_cors: Cors,
    pub policy: Policy,
    /// Client identification and the per-client lookup budget.
    pub clients: Arc<Clients>,
    /// Caps on open debug streams.
    pub debug_streams: StreamCaps,
}
