//! The per-execution host state and the linker. Each host interface is its
//! own module and reads only what it needs from [`HostState`]; gating
//! follows Alga's runner (docs/design/alga-compatibility.md, "Capabilities"):
//!
//! | module | interfaces | gating |
//! | --- | --- | --- |
//! | [`context`] | `context`, `config` | default capability; config is Annex's addition |
//! | [`logging`] | `logging` | silent drop without `cap:log.emit` |
//! | [`user`] | `user`, `user-v2` | `not-allowed` / `not-available` |
//! | [`secrets`] | `secrets` | `denied` / empty list |
//! | [`http`] | `http` | `not-allowed`, then the egress policy |
//! | [`storage`] | `storage` | `denied` without capability or install id |
//! | [`scheduler`] | `scheduler` | `denied` / `{success:false}` records |
//! | [`bridges`] | `invoicing`, `clients`, `services`, `ui-proxy` | per function |
//!
//! WASI 0.2 is linked with no filesystem, sockets, environment, arguments or
//! stdin; stdout and stderr are captured into the execution log.
//! `wasi:http/outgoing-handler` goes through the egress policy
//! ([`wasi_http`]), gated by `cap:http.fetch` like `http.fetch`.
//!
//! One linker serves both worlds: an `alga:extension` runner component and
//! a `wasi:http/proxy` component (which imports only WASI and `wasi:http`)
//! link against it, and the same per-execution [`HostState`] carries the
//! limits, egress policy and log of either.

pub(crate) mod bridges;
pub(crate) mod context;
pub(crate) mod http;
pub(crate) mod logging;
pub(crate) mod scheduler;
pub(crate) mod secrets;
pub(crate) mod storage;
pub(crate) mod user;
pub(crate) mod wasi_http;

use std::collections::BTreeMap;
use std::sync::Arc;

use annex_proto::pb;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::backend::HostBackend;
use crate::bindings::RunnerV2;
use crate::capabilities::Capabilities;
use crate::capture::Taping;
use crate::egress::{Allowlist, EgressClient};
use crate::logs::{CapturedOutput, LogRates, LogScope, LogSink};

/// What the host interfaces know about the request (never shown to the
/// guest except through the interfaces themselves).
#[derive(Debug, Clone, Default)]
pub(crate) struct CallContext {
    pub request_id: Option<String>,
    pub tenant_id: String,
    pub extension_id: String,
    pub install_id: Option<String>,
    pub version_id: Option<String>,
    pub content_hash: String,
    pub config: BTreeMap<String, String>,
    pub user: Option<pb::User>,
    /// The control plane's execution grant, presented on host-service calls.
    pub grant: String,
    /// Empty: the install has no secrets.
    pub secrets_version: String,
    pub allowlist: Allowlist,
}

impl CallContext {
    pub(crate) fn log_scope(&self) -> LogScope {
        LogScope {
            tenant_id: self.tenant_id.clone(),
            extension_id: self.extension_id.clone(),
            install_id: self.install_id.clone().unwrap_or_default(),
            request_id: self.request_id.clone().unwrap_or_default(),
            version_id: self.version_id.clone().unwrap_or_default(),
            content_hash: self.content_hash.clone(),
        }
    }

    /// The install id, if present and non-empty (host APIs keyed by install
    /// need one; docs/design/alga-compatibility.md, "Capabilities").
    pub(crate) fn install_id(&self) -> Option<&str> {
        self.install_id.as_deref().filter(|s| !s.trim().is_empty())
    }
}

/// Process-wide services the host interfaces use.
pub(crate) struct Services {
    pub backend: Arc<dyn HostBackend>,
    pub egress: Arc<EgressClient>,
    /// Every install's guest-log budget on this worker.
    pub log_rates: Arc<LogRates>,
}

/// Linear-memory limit of one store. A denied growth makes `memory.grow`
/// return -1 (the guest decides what to do); the execution is classified as
/// `oom` only if it then fails.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    pub limit_bytes: usize,
    pub peak_bytes: usize,
    pub denied: bool,
}

/// Tables are unlimited in Alga; the pool bounds them too, this bounds them
/// under on-demand allocation.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.limit_bytes && maximum.is_none_or(|m| desired <= m);
        if allowed {
            self.peak_bytes = self.peak_bytes.max(desired);
        } else {
            self.denied = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|m| desired <= m))
    }
}

/// Everything one execution's store holds.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub call: CallContext,
    pub caps: Capabilities,
    pub services: Arc<Services>,
    pub logs: LogSink,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
    /// The install's secrets, fetched on the first read.
    secrets: Option<BTreeMap<String, String>>,
    /// Request plus response bytes of `http.fetch` calls (see
    /// [`HostState::egress_total`] for `wasi:http` as well).
    pub egress_bytes: u64,
    http_ctx: WasiHttpCtx,
    http_hooks: wasi_http::EgressHooks,
    /// Recording or replaying what the guest sees (docs/design/replay.md).
    pub taping: Taping,
}

impl HostState {
    pub(crate) fn new(
        call: CallContext,
        caps: Capabilities,
        services: Arc<Services>,
        memory_limit_bytes: usize,
        taping: Taping,
    ) -> HostState {
        let stdout = CapturedOutput::new();
        let stderr = CapturedOutput::new();
        // No args, env, preopens or stdin; TCP, UDP and name lookup off
        // (docs/design/wasmtime.md: this gives a WASI context with nothing
        // inherited).
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(stdout.clone())
            .stderr(stderr.clone());
        // Captured and replayed executions read clocks and randomness
        // through their tape.
        taping.configure(&mut wasi);
        let wasi = wasi.build();
        let logs = LogSink::new(call.log_scope(), services.log_rates.clone());
        let http_hooks = wasi_http::EgressHooks {
            allowed: caps.has(crate::capabilities::Capability::HttpFetch),
            allowlist: call.allowlist.clone(),
            egress: services.egress.clone(),
            bytes: Arc::default(),
            taping: taping.clone(),
        };
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit_bytes: memory_limit_bytes,
                peak_bytes: 0,
                denied: false,
            },
            call,
            caps,
            services,
            logs,
            stdout,
            stderr,
            secrets: None,
            egress_bytes: 0,
            http_ctx: WasiHttpCtx::new(),
            http_hooks,
            taping,
        }
    }
}

impl HostState {
    /// Drops every host resource the guest left behind (a `wasi:http`
    /// response never set, a body never finished), so whoever waits on one
    /// sees it end. Only once the guest call has returned.
    pub(crate) fn release_resources(&mut self) {
        self.table = ResourceTable::new();
    }

    /// Egress bytes of this execution: `http.fetch` and `wasi:http` bodies.
    pub(crate) fn egress_total(&self) -> u64 {
        self.egress_bytes.saturating_add(
            self.http_hooks
                .bytes
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.http_hooks,
            table: &mut self.table,
            ctx: &mut self.http_ctx,
        }
    }
}

/// The linker every component is instantiated with: WASI 0.2,
/// `wasi:http/types` and `wasi:http/outgoing-handler` behind the egress
/// policy, and every `alga:extension` interface. Built once per engine.
pub(crate) fn linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    RunnerV2::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}

impl crate::bindings::types::Host for HostState {}
