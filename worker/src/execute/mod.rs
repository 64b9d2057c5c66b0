//! One execution from the wire to its answer: decode ([`request`]), admit
//! (the per-tenant fair queue), load the component (the [`Loader`]; a
//! component still being compiled after a short wait is a refusal), run
//! the guest on the separate guest runtime ([`guest`], or [`proxy`] for a
//! `wasi:http/proxy` component) and answer with an outcome ([`response`]).
//! Every path ends in an `ExecuteResponse`
//! (`ok | trap | timeout | oom | rejected`) except the refusals of
//! [`NotStarted`], which the caller may retry (on another worker, or later
//! for [`NotStarted::Compiling`] and the idempotency refusals).
//!
//! A call with an idempotency key first claims its record ([`idempotency`]):
//! a replay answers without loading anything, and a claimed call runs with
//! its lease renewed and settles the record afterwards.
//!
//! The guest runtime is apart from the one serving gRPC: a guest that spins
//! until its next epoch yield never delays request I/O, and the OS
//! scheduler shares the cores between the two. This module does not decide
//! trust (the loader does) or fleet membership (the fleet module does).
//! [`prepared`] is the same path for executions whose bundle source, trust
//! and host services the caller brings (the runner API).

mod guest;
mod idempotency;
pub(crate) mod limits;
mod prepared;
mod proxy;
mod request;
mod response;

use std::sync::Arc;
use std::time::{Duration, Instant};

use annex_bundle::ContentHash;
use annex_proto::pb;
use tracing::Instrument as _;

use crate::admission::{Admission, Refused};
use crate::cache::{CacheError, Compiled, ComponentCache, LoadSource};
use crate::capabilities::Capabilities;
use crate::capture::{self, Taping, ship::CaptureShipper};
use crate::engine::{Tier, WasmEngine};
use crate::fleet::DrainState;
use crate::host::Services;
use crate::loader::Loader;
use crate::logs::LogShipper;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::usage::UsageLedger;
use guest::Job;
use limits::Limits;
pub(crate) use prepared::{Prepared, Refusal};
use request::{InvalidRequest, Request};
use response::Failure;

/// A failed load as Alga's error strings: `bundle_fetch_failed` (502) for
/// fetching and verifying, `execute_failed` (500) for compiling and linking.
fn load_failure(hash: &ContentHash, error: &CacheError) -> Failure {
    match error {
        CacheError::Bundle(e) => {
            tracing::warn!(error = %e, hash = %hash, "bundle fetch failed");
            Failure::rejected(502, format!("bundle_fetch_failed: {e}"))
        }
        CacheError::Compile(_) | CacheError::WorldMismatch { .. } => {
            tracing::warn!(error = %error, hash = %hash, "component compile failed");
            Failure::rejected(500, format!("execute_failed: {error}"))
        }
    }
}

/// A request the worker did not start: the caller may retry elsewhere
/// (draining, overloaded), later (compiling), or must tell its client (the
/// idempotency refusals, which any worker would answer alike).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotStarted {
    #[error("worker is draining")]
    Draining,
    #[error("worker overloaded: {0}")]
    Overloaded(Refused),
    /// The component is still being compiled (or fetched); retry after
    /// `retry_after`.
    #[error("the component is being compiled; retry in {}s", .retry_after.as_secs().max(1))]
    Compiling { retry_after: Duration },
    /// The idempotency key was used before with another request.
    #[error("the idempotency key was used with another request")]
    KeyReused,
    /// A call with the same idempotency key is still running.
    #[error("a call with this idempotency key is in progress; retry in {}s", .retry_after.as_secs().max(1))]
    InProgress { retry_after: Duration },
    /// The call with this key ran, but its answer was too large to keep.
    #[error("the call with this idempotency key ran; its answer was too large to keep")]
    ResponseNotKept,
    /// The idempotency records cannot be reached; running the call could
    /// run it twice.
    #[error("the idempotency records are unavailable; retry in {}s", .retry_after.as_secs().max(1))]
    RecordsUnavailable { retry_after: Duration },
}

/// Why an execution produced no guest response: refused before it started
/// (no outcome; the caller may retry elsewhere), or rejected or failed
/// (answered with the failure's outcome).
#[derive(Debug)]
enum ExecuteError {
    NotStarted(NotStarted),
    Failed(Failure),
}

impl From<NotStarted> for ExecuteError {
    fn from(e: NotStarted) -> Self {
        ExecuteError::NotStarted(e)
    }
}

impl From<Failure> for ExecuteError {
    fn from(f: Failure) -> Self {
        ExecuteError::Failed(f)
    }
}

impl From<InvalidRequest> for ExecuteError {
    fn from(e: InvalidRequest) -> Self {
        ExecuteError::Failed(Failure::rejected(400, e.to_string()))
    }
}

/// Everything an [`Executor`] is built from.
pub(crate) struct ExecutorParts {
    pub(crate) engine: Arc<WasmEngine>,
    pub(crate) loader: Loader,
    pub(crate) services: Arc<Services>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) limits: Limits,
    pub(crate) metrics: Metrics,
    pub(crate) worker_id: String,
}

/// Runs executions on one engine.
pub struct Executor {
    engine: Arc<WasmEngine>,
    loader: Loader,
    services: Arc<Services>,
    admission: Arc<Admission>,
    limits: Limits,
    metrics: Metrics,
    worker_id: String,
    drain: DrainState,
    guests: GuestRuntime,
    usage: UsageLedger,
    /// Executions' log events on their way to the control plane.
    logs: LogShipper,
    /// Captured executions on their way to the control plane.
    captures: CaptureShipper,
}

/// The runtime guests run on (see the module documentation).
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

impl Executor {
    pub(crate) fn new(parts: ExecutorParts) -> std::io::Result<Executor> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(parts.limits.guest_threads.max(1))
            .thread_name("annex-guest")
            .enable_all()
            .build()?;
        let logs = LogShipper::start(
            parts.services.backend.clone(),
            runtime.handle(),
            parts.metrics.log_batches_dropped(),
        );
        let captures = CaptureShipper::start(
            parts.services.backend.clone(),
            runtime.handle(),
            parts.metrics.captures_dropped(),
        );
        Ok(Executor {
            captures,
            engine: parts.engine,
            loader: parts.loader,
            services: parts.services,
            admission: parts.admission,
            limits: parts.limits,
            metrics: parts.metrics,
            worker_id: parts.worker_id,
            drain: DrainState::default(),
            guests: GuestRuntime(Some(runtime)),
            usage: UsageLedger::default(),
            logs,
        })
    }

    pub(crate) fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The engine's compatibility hash (reported at registration).
    pub(crate) fn engine_hash(&self) -> &str {
        self.engine.compatibility_hash()
    }

    /// Usage recorded since the last call.
    pub(crate) fn take_usage(&self) -> Vec<pb::ExecutionUsage> {
        self.usage.drain()
    }

    /// Guest runs served by code `tier` compiled, since the start.
    pub fn served_by(&self, tier: Tier) -> u64 {
        self.metrics.served(tier.as_str())
    }

    pub fn cache(&self) -> &ComponentCache {
        self.loader.cache()
    }

    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// Leaving the fleet and refusing new calls.
    pub fn drain_state(&self) -> &DrainState {
        &self.drain
    }

    /// Fetches, verifies and compiles `content_hash` ahead of traffic
    /// (waiting for the compile, however long it takes).
    pub(crate) async fn prewarm(&self, content_hash: &str) -> Result<LoadSource, Arc<CacheError>> {
        let hash = crate::bundles::parse_hash(content_hash)
            .map_err(|e| Arc::new(CacheError::Bundle(e)))?;
        let (_, source) = self.load(&hash).await?;
        Ok(source)
    }

    /// Runs one request. `Err` only when the guest was not started (see
    /// [`NotStarted`] for what the caller may do). `deadline` is the
    /// caller's, when it sent one.
    pub(crate) async fn execute(
        self: &Arc<Self>,
        request: pb::ExecuteRequest,
        deadline: Option<Duration>,
    ) -> Result<pb::ExecuteResponse, NotStarted> {
        let started = Instant::now();
        if self.drain.is_draining() {
            return Err(NotStarted::Draining);
        }
        let deadline = deadline.map(|d| started + d);
        let result = self.attempt(request, started, deadline).await;
        self.answer(result, started)
    }

    /// The response (or the refusal) for an attempt's result, counted.
    fn answer(
        &self,
        result: Result<pb::ExecuteResponse, ExecuteError>,
        started: Instant,
    ) -> Result<pb::ExecuteResponse, NotStarted> {
        let (response, outcome) = match result {
            Ok(response) => (response, Outcome::Ok),
            Err(ExecuteError::Failed(failure)) => {
                let outcome = failure.outcome;
                // The guest's figures when it ran, with the whole call's wall time.
                let response = failure.into_response(started.elapsed(), &self.worker_id);
                (response, outcome)
            }
            Err(ExecuteError::NotStarted(refusal)) => {
                self.metrics
                    .record(Outcome::Rejected, started.elapsed().as_secs_f64());
                return Err(refusal);
            }
        };
        self.metrics
            .record(outcome, started.elapsed().as_secs_f64());
        Ok(response)
    }

    /// Decode, claim the idempotency record when the call has a key
    /// (replaying a completed one), admit, load, run, settle the record.
    async fn attempt(
        self: &Arc<Self>,
        request: pb::ExecuteRequest,
        started: Instant,
        deadline: Option<Instant>,
    ) -> Result<pb::ExecuteResponse, ExecuteError> {
        let keyed = idempotency::Keyed::of(&request);
        let taping = capture::recorder_for(&request).map_or(Taping::Off, Taping::Record);
        let request = Request::try_from(request)?;
        let budget = self.limits.budget(&request.limits);
        let caps = Capabilities::from_providers(&request.providers)
            .map_err(|unknown| Failure::rejected(400, unknown.to_string()))?;
        let Some(keyed) = keyed else {
            return self.admitted(request, caps, budget, started, taping).await;
        };
        let wait_until = idempotency::wait_until(started, budget.timeout, deadline);
        let claim = idempotency::claim(
            &self.services.backend,
            &self.metrics,
            keyed,
            self.limits.idempotency_lease,
            wait_until,
        )
        .await?;
        let held = match claim {
            idempotency::Claim::Replay(kept) => {
                return idempotency::replay(kept, started.elapsed(), &self.worker_id);
            }
            idempotency::Claim::Run(held) => *held,
        };
        let result = match held
            .renewing(self.admitted(request, caps, budget, started, taping))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(NotStarted::RecordsUnavailable {
                retry_after: self.limits.idempotency_lease,
            }
            .into()),
        };
        held.settle(&result).await;
        result
    }

    /// Admit, load, run.
    async fn admitted(
        self: &Arc<Self>,
        request: Request,
        caps: Capabilities,
        budget: limits::Budget,
        started: Instant,
        taping: Taping,
    ) -> Result<pb::ExecuteResponse, ExecuteError> {
        let permit = self
            .admission
            .acquire(&request.call.tenant_id, self.limits.queue_wait(&budget))
            .await
            .map_err(NotStarted::Overloaded)?;
        let _in_flight = self.metrics.in_flight();
        let compiled = self.component(&request.hash).await?;
        let services = match &taping {
            Taping::Record(recorder) => Arc::new(Services {
                backend: Arc::new(capture::backend::RecordingBackend {
                    inner: self.services.backend.clone(),
                    recorder: recorder.clone(),
                }),
                egress: self.services.egress.clone(),
                log_rates: self.services.log_rates.clone(),
            }),
            _ => self.services.clone(),
        };
        let job = Job {
            request,
            caps,
            budget,
            started,
            services,
            ship_logs: true,
            taping,
        };
        let result = self.run_on_guest_runtime(compiled, job).await;
        drop(permit);
        result
    }

    /// Fetch, verify and compile, or a cache hit (the span's `source` says
    /// which). A component not ready within the compile wait is a
    /// [`NotStarted::Compiling`] refusal (its load goes on); a failure is
    /// answered with Alga's error string.
    async fn component(&self, hash: &ContentHash) -> Result<Arc<Compiled>, ExecuteError> {
        let span = annex_ops::span!(
            "worker.compile",
            hash = %hash,
            source = tracing::field::Empty
        );
        let wait = self.cache().compile_wait();
        let pending = self.loader.begin(hash);
        let loaded = match tokio::time::timeout(wait, pending.wait().instrument(span.clone())).await
        {
            Ok(loaded) => loaded,
            Err(_) => {
                let retry_after = self.cache().retry_after();
                self.metrics.compile.refusals.inc();
                tracing::info!(
                    hash = %hash,
                    waited_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    retry_after_secs = retry_after.as_secs(),
                    "component still compiling; the caller retries later"
                );
                return Err(NotStarted::Compiling { retry_after }.into());
            }
        };
        match loaded {
            Ok((compiled, source)) => {
                self.metrics.component_loaded(source.as_str());
                span.record("source", source.as_str());
                Ok(compiled)
            }
            Err(e) => Err(load_failure(hash, &e).into()),
        }
    }

    /// The loader, counted by source.
    async fn load(
        &self,
        hash: &ContentHash,
    ) -> Result<(Arc<Compiled>, LoadSource), Arc<CacheError>> {
        let loaded = self.loader.load(hash).await?;
        self.metrics.component_loaded(loaded.1.as_str());
        Ok(loaded)
    }

    /// Instantiation and the guest's handler on the guest runtime; host
    /// calls made from it carry the `worker.run` span's context.
    async fn run_on_guest_runtime(
        self: &Arc<Self>,
        compiled: Arc<Compiled>,
        job: Job,
    ) -> Result<pb::ExecuteResponse, ExecuteError> {
        let Some(runtime) = self.guests.0.as_ref() else {
            return Err(Failure::rejected(503, "worker is shutting down").into());
        };
        let me = self.clone();
        let mut task = AbortOnDrop(runtime.spawn(
            async move { me.run(&compiled, job).await }.instrument(annex_ops::span!("worker.run")),
        ));
        match (&mut task.0).await {
            Ok(result) => Ok(result?),
            Err(e) => Err(Failure::guest_task(e).into()),
        }
    }
}
