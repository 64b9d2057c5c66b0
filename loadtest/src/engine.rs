//! The load loops. Closed loop: `concurrency` workers each send, wait for the
//! answer, and send again; latency is service time. Open loop: requests are
//! due on a fixed schedule (`rate` per second) and `concurrency` workers take
//! them in order; latency runs from the *intended* send time, so a stall that
//! delays later sends shows up in their latency instead of silently lowering
//! the rate (coordinated omission).
//!
//! Every run is bounded twice: by time (`warmup + duration`, plus one request
//! timeout for calls in flight) and by count (at most `max_requests` during
//! warm-up and at most `max_requests` measured). Warm-up results are dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::record::Recorder;
use crate::target::{Connection, Sample, Target};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Mode {
    Closed,
    Open { rate: f64 },
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub mode: Mode,
    /// Closed loop: workers (connections). Open loop: most requests in flight.
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub max_requests: u64,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    Duration,
    Requests,
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub recorder: Recorder,
    /// From the end of warm-up to the last measured answer.
    pub elapsed: Duration,
    pub stopped_by: StopReason,
    /// Open loop: measured requests that were due but never sent because the
    /// target fell too far behind (zero in closed loop).
    pub backlog: u64,
}

/// Open loop: a request may go out this much before its slot. Tokio's timer
/// fires on millisecond ticks, so sleeping to the exact slot would add up to
/// 1 ms of harness lag to every latency; waking a tick early and sending then
/// keeps the schedule's average rate and measures from the actual send.
const EARLY_SLACK: Duration = Duration::from_millis(1);

struct Shared {
    target: Target,
    spec: LoadSpec,
    start: Instant,
    warm_end: Instant,
    end: Instant,
    /// Past this, nothing new is sent (in-flight calls time out by then).
    hard_stop: Instant,
    warm_claims: AtomicU64,
    measured_claims: AtomicU64,
    /// Open loop: the next schedule slot.
    slot: AtomicU64,
    seq: AtomicU64,
}

struct WorkerOut {
    recorder: Recorder,
    last_done: Option<Instant>,
}

pub async fn run(target: &Target, spec: &LoadSpec) -> RunResult {
    let start = Instant::now();
    let warm_end = start + spec.warmup;
    let end = warm_end + spec.duration;
    let shared = Arc::new(Shared {
        target: target.clone(),
        spec: spec.clone(),
        start,
        warm_end,
        end,
        hard_stop: end + spec.timeout,
        warm_claims: AtomicU64::new(0),
        measured_claims: AtomicU64::new(0),
        slot: AtomicU64::new(0),
        seq: AtomicU64::new(0),
    });
    let workers: Vec<_> = (0..spec.concurrency.max(1))
        .map(|i| {
            let shared = shared.clone();
            tokio::spawn(async move {
                let conn = shared.target.connection(i);
                match shared.spec.mode {
                    Mode::Closed => closed_worker(&shared, conn).await,
                    Mode::Open { rate } => open_worker(&shared, conn, rate).await,
                }
            })
        })
        .collect();
    let mut recorder = Recorder::new();
    let mut last_done = None;
    for w in workers {
        match w.await {
            Ok(out) => {
                recorder.merge(&out.recorder);
                last_done = last_done.max(out.last_done);
            }
            Err(_) => {
                *recorder
                    .errors
                    .entry("harness worker panicked".into())
                    .or_default() += 1
            }
        }
    }
    let measured = recorder.total();
    let stopped_by = if measured >= spec.max_requests {
        StopReason::Requests
    } else {
        StopReason::Duration
    };
    let elapsed = last_done.map_or(spec.duration, |t| t.saturating_duration_since(warm_end));
    let backlog = match spec.mode {
        Mode::Closed => 0,
        Mode::Open { rate } => {
            let (first, past_end) = open_bounds(spec, rate);
            (past_end - first)
                .min(spec.max_requests)
                .saturating_sub(measured)
        }
    };
    RunResult {
        recorder,
        elapsed,
        stopped_by,
        backlog,
    }
}

async fn send(shared: &Shared, conn: &mut Connection) -> Sample {
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    match tokio::time::timeout(shared.spec.timeout, conn.send(seq)).await {
        Ok(sample) => sample,
        Err(_) => Sample::Error("timeout".into()),
    }
}

async fn closed_worker(shared: &Shared, mut conn: Connection) -> WorkerOut {
    let mut out = WorkerOut {
        recorder: Recorder::new(),
        last_done: None,
    };
    let max = shared.spec.max_requests;
    loop {
        let now = Instant::now();
        if now >= shared.end {
            break;
        }
        if now < shared.warm_end {
            if shared.warm_claims.fetch_add(1, Ordering::Relaxed) >= max {
                tokio::time::sleep_until(shared.warm_end).await;
            } else {
                send(shared, &mut conn).await;
            }
            continue;
        }
        if shared.measured_claims.fetch_add(1, Ordering::Relaxed) >= max {
            break;
        }
        let sent = Instant::now();
        let sample = send(shared, &mut conn).await;
        let done = Instant::now();
        out.recorder.record(done - sent, sample);
        out.last_done = Some(done);
    }
    out
}

/// Slot indexes of the open-loop schedule: the first measured slot and the
/// first slot at or past the end.
fn open_bounds(spec: &LoadSpec, rate: f64) -> (u64, u64) {
    let first = (spec.warmup.as_secs_f64() * rate).ceil() as u64;
    let past_end = ((spec.warmup + spec.duration).as_secs_f64() * rate).ceil() as u64;
    (first, past_end.max(first))
}

async fn open_worker(shared: &Shared, mut conn: Connection, rate: f64) -> WorkerOut {
    let mut out = WorkerOut {
        recorder: Recorder::new(),
        last_done: None,
    };
    let (first_measured, past_end) = open_bounds(&shared.spec, rate);
    let max = shared.spec.max_requests;
    loop {
        let slot = shared.slot.fetch_add(1, Ordering::Relaxed);
        if slot >= past_end {
            break;
        }
        let measured = slot >= first_measured;
        if measured && slot - first_measured >= max {
            break;
        }
        if !measured && slot >= max {
            continue;
        }
        let intended = shared.start + Duration::from_secs_f64(slot as f64 / rate);
        if Instant::now() >= shared.hard_stop {
            break;
        }
        if let Some(wake) = intended.checked_sub(EARLY_SLACK)
            && wake > Instant::now()
        {
            tokio::time::sleep_until(wake).await;
        }
        let sent = Instant::now();
        let sample = send(shared, &mut conn).await;
        let done = Instant::now();
        if measured {
            out.recorder.record(done - intended.min(sent), sample);
            out.last_done = Some(done);
        }
    }
    out
}
