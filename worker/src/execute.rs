//! One execution: admission, component lookup, a fresh store with its
//! limits, the handler call, and the mapping of everything that can happen
//! to an `ExecuteResponse` with an outcome (`ok | trap | timeout | oom |
//! rejected`) and Alga's error strings.
//!
//! Request mapping (spec §1.4): `url` = path, plus `?` (or `&` if the path
//! already has one) and the form-urlencoded query when it is non-empty;
//! headers as a list; body `None`/`Some`. Response: status passed through,
//! headers folded into a map (last duplicate wins), body as sent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use annex_bundle::ContentHash;
use annex_proto::pb;
use tracing::Instrument as _;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::admission::{Admission, Refused};
use crate::bindings::types;
use crate::bundles::{self, BundleSource, TrustSource};
use crate::cache::{CacheError, Compiled, ComponentCache, LoadSource, Verified};
use crate::capabilities::Capabilities;
use crate::cputime::CpuTimed;
use crate::egress::Allowlist;
use crate::engine::{EPOCH_TICK, WasmEngine};
use crate::host::{CallContext, HostState, Services};
use crate::logs::Level;
use crate::metrics::Metrics;
use crate::usage::{UsageLedger, Used};

/// Platform defaults and ceilings for per-request limits.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Used when a request sends `timeout_ms = 0` (Alga's gateway sends
    /// 30,000; a missing value is never an immediate trap here).
    pub default_timeout: Duration,
    /// Requests asking for more get this.
    pub max_timeout: Duration,
    /// Used when a request sends `memory_mb = 0` (Alga's default, 256 MiB).
    pub default_memory_mb: u32,
    /// Requests asking for more get this; never above the pool's
    /// `max_memory_size`.
    pub max_memory_mb: u32,
    /// Used when a request sends `max_response_bytes = 0`. 8 MiB: above
    /// Alga's effective ~1.5 MiB request bodies, far below worker memory.
    pub default_max_response_bytes: u64,
    /// How long a request may wait in the admission queue at most (it also
    /// never waits longer than its own timeout).
    pub max_queue_wait: Duration,
    /// Threads of the guest runtime: one per core by default, so guests
    /// can use every core while gRPC I/O stays on its own runtime.
    pub guest_threads: usize,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(300),
            default_memory_mb: 256,
            max_memory_mb: 1024,
            default_max_response_bytes: 8 * 1024 * 1024,
            max_queue_wait: Duration::from_secs(10),
            guest_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// The outcome of one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Trap,
    Timeout,
    Oom,
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
            Outcome::Oom => "oom",
            Outcome::Rejected => "rejected",
        }
    }

    fn to_pb(self) -> pb::Outcome {
        match self {
            Outcome::Ok => pb::Outcome::Ok,
            Outcome::Trap => pb::Outcome::Trap,
            Outcome::Timeout => pb::Outcome::Timeout,
            Outcome::Oom => pb::Outcome::Oom,
            Outcome::Rejected => pb::Outcome::Rejected,
        }
    }
}

/// A request the worker did not start: the caller may retry elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotStarted {
    #[error("worker is draining")]
    Draining,
    #[error("worker overloaded: {0}")]
    Overloaded(Refused),
}

/// Everything an [`Executor`] is built from.
pub struct ExecutorParts {
    pub engine: Arc<WasmEngine>,
    pub cache: ComponentCache,
    pub services: Arc<Services>,
    pub bundles: Arc<dyn BundleSource>,
    pub trust: Arc<dyn TrustSource>,
    pub admission: Arc<Admission>,
    pub config: ExecConfig,
    pub metrics: Metrics,
    pub worker_id: String,
}

/// Runs executions on one engine.
pub struct Executor {
    parts: ExecutorParts,
    draining: AtomicBool,
    /// True once the worker announced it is leaving the fleet (it may still
    /// take calls for a short while, until [`Executor::drain`]).
    leaving: tokio::sync::watch::Sender<bool>,
    guests: GuestRuntime,
    usage: UsageLedger,
}

/// The runtime guests run on, apart from the one serving gRPC: a guest that
/// spins until its next epoch yield never delays request I/O, and the OS
/// scheduler shares the cores between the two.
struct GuestRuntime(Option<tokio::runtime::Runtime>);

impl Drop for GuestRuntime {
    fn drop(&mut self) {
        // Dropping a runtime may block; this may run inside another runtime.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Aborts the spawned guest task when the caller goes away (a cancelled
/// `Execute` stops its guest at the next epoch yield).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A failed execution before the response mapping.
struct Failure {
    outcome: Outcome,
    status: u32,
    error: String,
    /// What the guest used, when it ran.
    usage: Option<pb::Usage>,
}

impl Failure {
    fn rejected(status: u32, error: impl Into<String>) -> Failure {
        Failure {
            outcome: Outcome::Rejected,
            status,
            error: error.into(),
            usage: None,
        }
    }
}

impl Executor {
    pub fn new(parts: ExecutorParts) -> std::io::Result<Executor> {
        let threads = parts.config.guest_threads.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("annex-guest")
            .enable_all()
            .build()?;
        Ok(Executor {
            parts,
            draining: AtomicBool::new(false),
            leaving: tokio::sync::watch::Sender::new(false),
            guests: GuestRuntime(Some(runtime)),
            usage: UsageLedger::default(),
        })
    }

    pub fn worker_id(&self) -> &str {
        &self.parts.worker_id
    }

    /// The engine's compatibility hash (reported at registration).
    pub fn engine_hash(&self) -> &str {
        self.parts.engine.compatibility_hash()
    }

    /// Usage recorded since the last call.
    pub fn take_usage(&self) -> Vec<pb::ExecutionUsage> {
        self.usage.drain()
    }

    pub fn cache(&self) -> &ComponentCache {
        &self.parts.cache
    }

    pub fn admission(&self) -> &Arc<Admission> {
        &self.parts.admission
    }

    pub fn metrics(&self) -> &Metrics {
        &self.parts.metrics
    }

    /// Stop taking new executions; running ones finish. Implies [`Self::leave`].
    pub fn drain(&self) {
        self.leave();
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Announce leaving the fleet (heartbeats say `draining`, so no new work
    /// is placed here) while still taking the calls that arrive meanwhile.
    pub fn leave(&self) {
        self.leaving.send_replace(true);
    }

    /// Whether the worker announced it is leaving (or is draining).
    pub fn is_leaving(&self) -> bool {
        *self.leaving.borrow()
    }

    /// Changes of [`Self::is_leaving`], so the announcement goes out at once.
    pub fn leaving(&self) -> tokio::sync::watch::Receiver<bool> {
        self.leaving.subscribe()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Fetches, verifies and compiles `content_hash` ahead of traffic.
    pub async fn prewarm(&self, content_hash: &str) -> Result<LoadSource, CacheError> {
        let hash = bundles::parse_hash(content_hash)?;
        let (_, source) = self.component(&hash).await?;
        Ok(source)
    }

    async fn component(
        &self,
        hash: &ContentHash,
    ) -> Result<(Arc<Compiled>, LoadSource), CacheError> {
        let trust = self.parts.trust.clone();
        let recheck_trust = self.parts.trust.clone();
        let source = self.parts.bundles.clone();
        let recheck_hash = hash.clone();
        let result = self
            .parts
            .cache
            .get(
                hash,
                async move |record| {
                    let trust = recheck_trust.trust().await?;
                    bundles::verify_signature(&recheck_hash, record, &trust)?;
                    Ok(())
                },
                || async move {
                    let fetched = source.fetch(hash).await?;
                    let trust = trust.trust().await?;
                    let hash = hash.clone();
                    tokio::task::spawn_blocking(move || {
                        let component = bundles::verify_and_extract(&hash, &fetched, &trust)?;
                        Ok(Verified {
                            component,
                            signature: fetched.signature,
                        })
                    })
                    .await
                    .map_err(|e| CacheError::Compile(format!("verify task failed: {e}")))?
                },
            )
            .await;
        // Whatever the source, the signature must hold under the current
        // trust keys (a revoked key stops even memory-cached components).
        let result = match result {
            Ok((compiled, source)) => {
                let trust = self.parts.trust.trust().await?;
                if let Err(e) = compiled.ensure_trusted(&trust) {
                    self.parts.cache.evict(hash);
                    return Err(e.into());
                }
                Ok((compiled, source))
            }
            Err(e) => Err(e),
        };
        if let Ok((_, source)) = &result {
            self.parts
                .metrics
                .component_loads
                .get_or_create(&crate::metrics::SourceLabel {
                    source: source.as_str(),
                })
                .inc();
        }
        result
    }

    /// Runs one request. `Err` only when the guest was not started and the
    /// caller may retry on another worker.
    pub async fn execute(
        self: &Arc<Self>,
        request: pb::ExecuteRequest,
    ) -> Result<pb::ExecuteResponse, NotStarted> {
        let started = Instant::now();
        if self.is_draining() {
            return Err(NotStarted::Draining);
        }
        let result = self.execute_inner(request, started).await;
        let (response, outcome) = match result {
            Ok(Ok(done)) => done,
            Ok(Err(failure)) => {
                let outcome = failure.outcome;
                (
                    pb::ExecuteResponse {
                        status: failure.status,
                        outcome: outcome.to_pb() as i32,
                        error: failure.error,
                        // The guest's figures when it ran, with the whole call's wall time.
                        usage: Some(pb::Usage {
                            wall_us: micros(started.elapsed()),
                            ..failure.usage.unwrap_or_default()
                        }),
                        worker_id: self.parts.worker_id.clone(),
                        ..Default::default()
                    },
                    outcome,
                )
            }
            Err(not_started) => {
                self.parts
                    .metrics
                    .record(Outcome::Rejected, started.elapsed().as_secs_f64());
                return Err(not_started);
            }
        };
        self.parts
            .metrics
            .record(outcome, started.elapsed().as_secs_f64());
        Ok(response)
    }

    #[allow(clippy::type_complexity)]
    async fn execute_inner(
        self: &Arc<Self>,
        request: pb::ExecuteRequest,
        started: Instant,
    ) -> Result<Result<(pb::ExecuteResponse, Outcome), Failure>, NotStarted> {
        let cfg = &self.parts.config;
        let parsed = match Parsed::from_pb(request, cfg) {
            Ok(p) => p,
            Err(f) => return Ok(Err(f)),
        };
        let caps = match Capabilities::from_providers(&parsed.providers) {
            Ok(c) => c,
            Err(unknown) => return Ok(Err(Failure::rejected(400, unknown.to_string()))),
        };
        let wait = parsed.timeout.min(cfg.max_queue_wait);
        let permit = self
            .parts
            .admission
            .acquire(&parsed.call.tenant_id, wait)
            .await
            .map_err(NotStarted::Overloaded)?;
        self.parts.metrics.in_flight.inc();
        let _in_flight = scopeguard(&self.parts.metrics);
        // Fetch, verify and compile, or a cache hit (`source` says which).
        let load_span = annex_ops::span!(
            "worker.compile",
            hash = %parsed.hash,
            source = tracing::field::Empty
        );
        let loaded = self
            .component(&parsed.hash)
            .instrument(load_span.clone())
            .await;
        let compiled = match loaded {
            Ok((c, source)) => {
                load_span.record("source", source.as_str());
                c
            }
            Err(CacheError::Bundle(e)) => {
                tracing::warn!(error = %e, hash = %parsed.hash, "bundle fetch failed");
                return Ok(Err(Failure::rejected(
                    502,
                    format!("bundle_fetch_failed: {e}"),
                )));
            }
            Err(CacheError::Compile(e)) => {
                tracing::warn!(error = %e, hash = %parsed.hash, "component compile failed");
                return Ok(Err(Failure::rejected(500, format!("execute_failed: {e}"))));
            }
        };
        let Some(runtime) = self.guests.0.as_ref() else {
            return Ok(Err(Failure::rejected(503, "worker is shutting down")));
        };
        let me = self.clone();
        let mut task = AbortOnDrop(
            // Instantiation and the guest's handler; host calls made from
            // it carry this span's context.
            runtime.spawn(
                async move { me.run(&compiled, parsed, caps, started).await }
                    .instrument(annex_ops::span!("worker.run")),
            ),
        );
        let result = match (&mut task.0).await {
            Ok(result) => result,
            Err(e) => Err(Failure {
                outcome: Outcome::Trap,
                status: 500,
                error: format!("execute_failed: guest task failed: {e}"),
                usage: None,
            }),
        };
        drop(permit);
        Ok(result)
    }

    async fn run(
        &self,
        compiled: &Compiled,
        parsed: Parsed,
        caps: Capabilities,
        started: Instant,
    ) -> Result<(pb::ExecuteResponse, Outcome), Failure> {
        let engine = &self.parts.engine;
        let state = HostState::new(
            parsed.call,
            caps,
            self.parts.services.clone(),
            parsed.memory_bytes,
        );
        let mut store = Store::new(engine.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // Every tick the guest yields to the runtime (a spinning guest never
        // holds a runtime thread for more than one tick) and is interrupted
        // once its wall-time budget is spent: at most one tick late.
        let guest_started = Instant::now();
        let deadline = guest_started + parsed.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                // `yield_now` puts the task at the back of the run queue; a
                // plain self-wake could be polled again at once.
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            })
        });
        let fuel = parsed.fuel.filter(|_| engine.fuel_enabled());
        if engine.fuel_enabled() {
            // Without a budget in the request the guest is bounded by time only.
            let _ = store.set_fuel(fuel.unwrap_or(u64::MAX));
        }
        let guest_request = parsed.guest_request;
        // Epochs do not advance while the guest awaits a host call, so the
        // whole call is also bounded on the async side (one tick of grace
        // keeps the epoch trap the normal path for spinning guests).
        let budget = parsed.timeout + 2 * EPOCH_TICK;
        // CPU time is the thread CPU clock summed over the polls of the guest.
        let (call, cpu) = CpuTimed::new(tokio::time::timeout(budget, async {
            let instance = compiled.pre.instantiate_async(&mut store).await?;
            instance.call_handler(&mut store, &guest_request).await
        }))
        .await;

        // Metered executions report what they burnt, with or without a budget.
        let fuel_consumed = match store.get_fuel() {
            Ok(left) if engine.fuel_enabled() => fuel.unwrap_or(u64::MAX).saturating_sub(left),
            _ => 0,
        };
        let state = store.data_mut();
        let usage = pb::Usage {
            wall_us: micros(started.elapsed()),
            cpu_us: micros(cpu),
            peak_memory_bytes: state.limiter.peak_bytes as u64,
            fuel_consumed,
            egress_bytes: state.egress_total(),
        };
        self.usage.record(
            &state.call.tenant_id,
            &state.call.extension_id,
            Used {
                wall_us: micros(guest_started.elapsed()),
                cpu_us: usage.cpu_us,
                peak_memory_bytes: usage.peak_memory_bytes,
                egress_bytes: usage.egress_bytes,
                fuel: usage.fuel_consumed,
            },
        );
        let result = classify(call, state.limiter.denied, parsed.timeout);
        let stdout = state.stdout.clone();
        let stderr = state.stderr.clone();
        let mut logs = std::mem::replace(
            &mut state.logs,
            crate::logs::LogSink::new(Default::default()),
        );
        drop(store);
        logs.push_output("stdout", Level::Info, &stdout);
        logs.push_output("stderr", Level::Warn, &stderr);

        let outcome = match result {
            Ok(response) => {
                let size = response.body.as_ref().map_or(0, Vec::len) as u64;
                if size > parsed.max_response_bytes {
                    let error = format!(
                        "execute_failed: response body of {size} bytes exceeds the limit of {} bytes",
                        parsed.max_response_bytes
                    );
                    logs.push(Level::Error, "system", &error);
                    Err(Failure {
                        outcome: Outcome::Rejected,
                        status: 500,
                        error,
                        usage: Some(usage),
                    })
                } else {
                    Ok(response)
                }
            }
            Err(failure) => {
                logs.push(
                    Level::Error,
                    "system",
                    &format!("execute failed: {}", failure.error),
                );
                Err(Failure {
                    usage: Some(usage),
                    ..failure
                })
            }
        };
        self.publish(logs.finish());

        outcome.map(|response| {
            let headers = response
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect();
            (
                pb::ExecuteResponse {
                    status: u32::from(response.status),
                    headers,
                    body: response.body,
                    outcome: pb::Outcome::Ok as i32,
                    error: String::new(),
                    usage: Some(usage),
                    worker_id: self.parts.worker_id.clone(),
                },
                Outcome::Ok,
            )
        })
    }

    /// Sends the execution's log events without holding up the response.
    fn publish(&self, events: Vec<pb::LogEvent>) {
        if events.is_empty() {
            return;
        }
        let backend = self.parts.services.backend.clone();
        tokio::spawn(async move {
            if let Err(error) = backend.publish_logs(events).await {
                tracing::debug!(%error, "publishing guest logs failed");
            }
        });
    }
}

/// Maps the call result to a guest response or a failure.
fn classify(
    call: Result<wasmtime::Result<types::ExecuteResponse>, tokio::time::error::Elapsed>,
    memory_denied: bool,
    timeout: Duration,
) -> Result<types::ExecuteResponse, Failure> {
    let timed_out = || Failure {
        outcome: Outcome::Timeout,
        status: 500,
        error: format!(
            "execute_failed: execution exceeded its time limit of {} ms",
            timeout.as_millis()
        ),
        usage: None,
    };
    match call {
        Err(_) => Err(timed_out()),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => {
            let trap = error.downcast_ref::<Trap>().copied();
            tracing::debug!(error = ?error, "guest call failed");
            if matches!(trap, Some(Trap::Interrupt) | Some(Trap::OutOfFuel)) {
                return Err(timed_out());
            }
            let outcome = if memory_denied {
                Outcome::Oom
            } else {
                Outcome::Trap
            };
            let detail = if memory_denied {
                format!("memory limit exceeded ({})", error.root_cause())
            } else {
                error.root_cause().to_string()
            };
            Err(Failure {
                outcome,
                status: 500,
                error: format!("execute_failed: {detail}"),
                usage: None,
            })
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Decrements the in-flight gauge when dropped.
struct InFlightGuard<'a>(&'a Metrics);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

fn scopeguard(metrics: &Metrics) -> InFlightGuard<'_> {
    InFlightGuard(metrics)
}

/// A validated `ExecuteRequest`.
struct Parsed {
    hash: ContentHash,
    call: CallContext,
    providers: Vec<String>,
    guest_request: types::ExecuteRequest,
    timeout: Duration,
    memory_bytes: usize,
    max_response_bytes: u64,
    fuel: Option<u64>,
}

impl Parsed {
    fn from_pb(request: pb::ExecuteRequest, cfg: &ExecConfig) -> Result<Parsed, Failure> {
        let bad = |m: &str| Failure::rejected(400, format!("invalid_request: {m}"));
        let ctx = request.context.ok_or_else(|| bad("context is required"))?;
        let http = request.http.ok_or_else(|| bad("http is required"))?;
        if ctx.tenant_id.trim().is_empty() || ctx.extension_id.trim().is_empty() {
            return Err(Failure::rejected(400, "missing_routing_headers"));
        }
        if http.method.is_empty() {
            return Err(bad("http.method is required"));
        }
        let hash = bundles::parse_hash(&ctx.content_hash)
            .map_err(|e| bad(&format!("context.content_hash: {e}")))?;
        let limits = request.limits.unwrap_or_default();
        let timeout = match limits.timeout_ms {
            0 => cfg.default_timeout,
            ms => Duration::from_millis(u64::from(ms)).min(cfg.max_timeout),
        };
        let memory_mb = match limits.memory_mb {
            0 => cfg.default_memory_mb,
            mb => mb.min(cfg.max_memory_mb),
        };
        let max_response_bytes = match limits.max_response_bytes {
            0 => cfg.default_max_response_bytes,
            n => n,
        };
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
        Ok(Parsed {
            hash,
            call,
            providers: request.providers,
            guest_request,
            timeout,
            memory_bytes: usize::try_from(u64::from(memory_mb) * 1024 * 1024).unwrap_or(usize::MAX),
            max_response_bytes,
            fuel: limits.fuel,
        })
    }
}

/// `path`, plus `?` (or `&`) and the form-urlencoded query if non-empty.
pub fn guest_url<'a, I>(path: &str, query: I) -> String
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

    #[test]
    fn missing_limits_get_platform_defaults() {
        let cfg = ExecConfig::default();
        let request = pb::ExecuteRequest {
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
        };
        let parsed = Parsed::from_pb(request, &cfg)
            .map_err(|f| f.error)
            .expect("valid");
        assert_eq!(parsed.timeout, cfg.default_timeout);
        assert_eq!(parsed.memory_bytes, 256 * 1024 * 1024);
        assert_eq!(parsed.max_response_bytes, cfg.default_max_response_bytes);
        assert_eq!(parsed.guest_request.http.body, None);
    }
}
