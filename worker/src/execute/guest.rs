//! One guest run, on the guest runtime, in steps: a fresh store with the
//! request's limits (memory, epoch deadline, fuel), the handler call bounded
//! in time and CPU-timed, what it used (reported in the response and added
//! to the usage ledger), the classification of its result and the bounds
//! of its answer, and the execution log (queued for the control plane
//! without holding up the response). Instances are never reused: each run
//! instantiates from the cached `InstancePre`. A `wasi:http/proxy`
//! component is entered through [`super::proxy`]; the limits, accounting,
//! bounds and logs are the same.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annex_proto::pb;
use wasmtime::{Store, UpdateDeadline};

use super::Executor;
use super::limits::Budget;
use super::request::Request;
use super::response::{CallResult, Failure, check_response, classify, micros, ok_response};
use crate::bindings::{RunnerV2Pre, types};
use crate::cache::{Compiled, Entry};
use crate::capabilities::Capabilities;
use crate::capture::{Reason, Recorder, Taping};
use crate::cputime::CpuTimed;
use crate::engine::{EPOCH_TICK, WasmEngine};
use crate::host::{HostState, Services};
use crate::logs::{Level, LogSink};
use crate::usage::Used;

/// An admitted request, ready to run once its component is loaded.
pub(super) struct Job {
    pub(super) request: Request,
    pub(super) caps: Capabilities,
    pub(super) budget: Budget,
    /// When the call reached the worker (for `wall_us`).
    pub(super) started: Instant,
    /// The host services its interfaces reach (the worker's own, or the
    /// runner API's per execution).
    pub(super) services: Arc<Services>,
    /// Whether its log events go to the control plane (the runner API's
    /// executions log to the worker's own log only).
    pub(super) ship_logs: bool,
    /// Recording or replaying it (docs/design/replay.md).
    pub(super) taping: Taping,
}

impl Executor {
    /// Instantiates `compiled` and calls its handler with the job's request.
    pub(super) async fn run(
        &self,
        compiled: &Compiled,
        job: Job,
    ) -> Result<pb::ExecuteResponse, Failure> {
        let Job {
            request,
            caps,
            budget,
            started,
            services,
            ship_logs,
            taping,
        } = job;
        let state = HostState::new(
            request.call,
            caps,
            services,
            budget.memory_bytes,
            taping.clone(),
        );
        // The engine that compiled the component (Winch or Cranelift).
        let mut store = Store::new(compiled.engine(), state);
        self.metrics.served_by(compiled.tier().as_str());
        let guest_started = Instant::now();
        let fuel = limit(&mut store, &self.engine, &budget, guest_started);
        let (call, cpu) = match &compiled.entry {
            Entry::Alga(pre) => call(pre, &mut store, &request.guest_request, budget.timeout).await,
            Entry::WasiHttp(pre) => {
                super::proxy::call(pre, &mut store, request.guest_request, &budget).await
            }
        };
        let usage = measure(&store, &self.engine, fuel, cpu, started);
        self.account(store.data(), &usage, guest_started.elapsed());
        let result = classify(call, store.data().limiter.denied, budget.timeout);
        let mut logs = into_log(store);
        let result = match result {
            Ok(response) => {
                check_response(response, budget.max_response_bytes).inspect_err(|failure| {
                    tracing::warn!(error = %failure.error, "guest response refused");
                    logs.note(Level::Error, &failure.error);
                })
            }
            Err(failure) => {
                let message = format!("execute failed: {}", failure.error);
                logs.note(Level::Error, &message);
                Err(failure)
            }
        };
        if ship_logs {
            self.logs.ship(logs.finish());
        }
        let answer = match result {
            Ok(response) => Ok(ok_response(response, usage, &self.worker_id)),
            Err(failure) => Err(Failure {
                usage: Some(usage),
                ..failure
            }),
        };
        if let Taping::Record(recorder) = &taping {
            self.keep_capture(recorder, &answer);
        }
        answer
    }

    /// Ships a recorded execution's capture: a sampled one always, one
    /// recorded for failures only when it failed (trap, timeout, oom,
    /// rejected, or a 5xx answer).
    fn keep_capture(&self, recorder: &Recorder, answer: &Result<pb::ExecuteResponse, Failure>) {
        let response = match answer {
            Ok(response) => response.clone(),
            Err(failure) => pb::ExecuteResponse {
                status: failure.status,
                outcome: pb::Outcome::from(failure.outcome) as i32,
                error: failure.error.clone(),
                ..Default::default()
            },
        };
        let failed = response.outcome != pb::Outcome::Ok as i32 || response.status >= 500;
        if recorder.reason == Reason::Failure && !failed {
            return;
        }
        self.captures.ship(recorder.finish(&response));
    }

    /// Adds what the run used to the usage ledger for heartbeats, with the
    /// guest's own wall time (`guest_wall`), not the whole call's.
    fn account(&self, state: &HostState, usage: &pb::Usage, guest_wall: Duration) {
        self.usage.record(
            &state.call.tenant_id,
            &state.call.extension_id,
            Used {
                wall_us: micros(guest_wall),
                cpu_us: usage.cpu_us,
                peak_memory_bytes: usage.peak_memory_bytes,
                egress_bytes: usage.egress_bytes,
                fuel: usage.fuel_consumed,
            },
        );
    }
}

/// Puts the budget on the store: its memory limiter, the wall-time deadline
/// counted from `guest_started`, and fuel on a metering engine. Returns
/// the fuel budget in effect (`None`: bounded by time only).
fn limit(
    store: &mut Store<HostState>,
    engine: &WasmEngine,
    budget: &Budget,
    guest_started: Instant,
) -> Option<u64> {
    store.limiter(|s| &mut s.limiter);
    // Every tick the guest yields to the runtime (a spinning guest never
    // holds a runtime thread for more than one tick) and is interrupted
    // once its wall-time budget is spent: at most one tick late.
    let deadline = guest_started + budget.timeout;
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
    let fuel = budget.fuel.filter(|_| engine.fuel_enabled());
    if engine.fuel_enabled() {
        // Without a budget in the request the guest is bounded by time only.
        let _ = store.set_fuel(fuel.unwrap_or(u64::MAX));
    }
    fuel
}

/// What the run used, as the response reports it; `wall_us` counts from
/// `started`, when the call reached the worker.
fn measure(
    store: &Store<HostState>,
    engine: &WasmEngine,
    fuel: Option<u64>,
    cpu: Duration,
    started: Instant,
) -> pb::Usage {
    // Metered executions report what they burnt, with or without a budget.
    let fuel_consumed = match store.get_fuel() {
        Ok(left) if engine.fuel_enabled() => fuel.unwrap_or(u64::MAX).saturating_sub(left),
        _ => 0,
    };
    let state = store.data();
    pb::Usage {
        wall_us: micros(started.elapsed()),
        cpu_us: micros(cpu),
        peak_memory_bytes: state.limiter.peak_bytes as u64,
        fuel_consumed,
        egress_bytes: state.egress_total(),
    }
}

/// Instantiates and calls the handler, and the thread CPU time its polls
/// used. Epochs do not advance while the guest awaits a host call, so the
/// whole call is also bounded on the async side (one tick of grace keeps
/// the epoch trap the normal path for spinning guests).
async fn call(
    pre: &RunnerV2Pre<HostState>,
    store: &mut Store<HostState>,
    request: &types::ExecuteRequest,
    timeout: Duration,
) -> (CallResult, Duration) {
    let budget = timeout + 2 * EPOCH_TICK;
    CpuTimed::new(tokio::time::timeout(budget, async {
        let instance = pre.instantiate_async(&mut *store).await?;
        instance.call_handler(&mut *store, request).await
    }))
    .await
}

/// Ends the store and returns its execution log with the captured stdout
/// and stderr appended.
fn into_log(mut store: Store<HostState>) -> LogSink {
    let state = store.data_mut();
    let stdout = state.stdout.clone();
    let stderr = state.stderr.clone();
    let mut logs = state.logs.take();
    drop(store);
    logs.push_output("stdout", Level::Info, &stdout);
    logs.push_output("stderr", Level::Warn, &stderr);
    logs
}
