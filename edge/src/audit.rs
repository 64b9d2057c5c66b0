//! Audit rows for `extension_execution_log`, written off the hot path: the
//! handler reserves a slot in a bounded buffer before it dispatches (no slot:
//! 503, never an unaudited execution), fills it when the request ends, and a
//! background task ships batches to `Dispatch.RecordExecutions`.
//!
//! While the control plane cannot take batches (unavailable, overloaded) the
//! calls keep retrying and the task stops draining the buffer, so a long
//! outage fills the buffer (the rows held are the buffer plus the batches in
//! flight) and the edge starts answering 503 instead of serving without an
//! audit trail. A batch the control plane *refuses* (`INVALID_ARGUMENT`: a
//! row it cannot store) is split in halves until the refused row stands
//! alone; that row is dropped, counted and logged, and every other row is
//! stored. No single row can hold the pipeline. Strings are made safe for
//! Postgres (`text` and `jsonb` refuse NUL) before a row is buffered, see
//! [`clean`].

use std::time::Duration;

use annex_ops::backoff::Backoff;
use annex_ops::upstream::Upstream;
use annex_proto::pb;
use annex_proto::pb::dispatch_client::DispatchClient;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy)]
pub struct AuditSettings {
    /// Rows the buffer holds (reserved plus waiting).
    pub buffer: usize,
    /// Rows per RecordExecutions call (the control plane takes at most 1000).
    pub batch: usize,
    /// RecordExecutions calls in flight at once.
    pub in_flight: usize,
    /// Longest a row waits before its batch is sent.
    pub flush_interval: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            // Seconds of traffic at a few thousand requests per second.
            buffer: 131_072,
            batch: 500,
            // Measured: one call at a time capped the audit trail (and so
            // the edge) near 4k rows/s against a local Postgres.
            in_flight: 4,
            flush_interval: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AuditSink {
    tx: mpsc::Sender<pb::ExecutionRecord>,
}

/// A reserved place in the buffer for one row.
#[derive(Debug)]
pub(crate) struct AuditSlot(mpsc::OwnedPermit<pb::ExecutionRecord>);

impl AuditSlot {
    pub(crate) fn record(self, row: pb::ExecutionRecord) {
        self.0.send(row);
    }
}

impl AuditSink {
    /// The sink and the receiving end for [`ship`].
    pub(crate) fn new(settings: AuditSettings) -> (AuditSink, mpsc::Receiver<pb::ExecutionRecord>) {
        let (tx, rx) = mpsc::channel(settings.buffer.max(1));
        (AuditSink { tx }, rx)
    }

    /// A slot, or `None` when the buffer is full.
    pub(crate) fn reserve(&self) -> Option<AuditSlot> {
        self.tx.clone().try_reserve_owned().ok().map(AuditSlot)
    }
}

/// Longest audit string kept, in characters; longer ones are cut (a path
/// is at most a few KiB of URI, an endpoint template is the author's text).
pub(crate) const MAX_AUDIT_TEXT: usize = 1024;

/// `text` as an audit row may hold it: control characters (NUL above all,
/// which Postgres refuses in `text` and `jsonb`) written as `\u{..}`
/// escapes, and at most [`MAX_AUDIT_TEXT`] characters.
pub(crate) fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_AUDIT_TEXT));
    for (count, c) in text.chars().enumerate() {
        if count >= MAX_AUDIT_TEXT {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// What the shipper counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditCounters {
    /// RecordExecutions calls that failed.
    pub failures: Counter,
    /// Rows the control plane refused on their own, dropped.
    pub dropped: Counter,
}

/// Ships rows until every sender is gone and the buffer is drained: batches
/// of up to `batch` rows, up to `in_flight` calls at once, each retried while
/// the control plane cannot take it and split while it refuses it.
pub(crate) async fn ship(
    client: DispatchClient<Upstream>,
    mut rx: mpsc::Receiver<pb::ExecutionRecord>,
    settings: AuditSettings,
    counters: AuditCounters,
) {
    let mut calls = tokio::task::JoinSet::new();
    loop {
        let Some(first) = rx.recv().await else { break };
        let mut batch = Vec::with_capacity(settings.batch);
        batch.push(first);
        let deadline = tokio::time::Instant::now() + settings.flush_interval;
        while batch.len() < settings.batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(row)) => batch.push(row),
                Ok(None) | Err(_) => break,
            }
        }
        // While every call is busy (or retrying) the buffer fills: that is
        // the back-pressure that turns into 503s.
        while calls.len() >= settings.in_flight.max(1) {
            let _ = calls.join_next().await;
        }
        calls.spawn(send(client.clone(), batch, counters.clone()));
    }
    while calls.join_next().await.is_some() {}
}

/// Delays between attempts at one batch.
const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Sends one batch: retried while the control plane cannot take it; when it
/// refuses the rows, halves are sent on their own until the refused row is
/// alone, and that row is dropped.
async fn send(client: DispatchClient<Upstream>, batch: Vec<pb::ExecutionRecord>, c: AuditCounters) {
    let mut pending = vec![batch];
    while let Some(batch) = pending.pop() {
        match send_until_answered(&client, &batch, &c.failures).await {
            Delivery::Stored => {}
            Delivery::Refused(message) if batch.len() > 1 => {
                tracing::warn!(
                    rows = batch.len(),
                    message,
                    "the control plane refused an audit batch; splitting it"
                );
                let mut first = batch;
                let second = first.split_off(first.len() / 2);
                // Popped last-in first-out: the first half goes first.
                pending.push(second);
                pending.push(first);
            }
            Delivery::Refused(message) => {
                c.dropped.inc();
                let row = batch.first();
                tracing::error!(
                    row = row.map(|r| r.id.as_str()).unwrap_or_default(),
                    request_id = row.map(|r| r.request_id.as_str()).unwrap_or_default(),
                    message,
                    "the control plane refused an audit row; dropped"
                );
            }
        }
    }
}

enum Delivery {
    Stored,
    /// The control plane will never take these rows as they are.
    Refused(String),
}

async fn send_until_answered(
    client: &DispatchClient<Upstream>,
    batch: &[pb::ExecutionRecord],
    failures: &Counter,
) -> Delivery {
    let mut delays = RETRY.delays();
    loop {
        let records = pb::ExecutionRecords {
            records: batch.to_vec(),
        };
        match client.clone().record_executions(records).await {
            Ok(_) => return Delivery::Stored,
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                failures.inc();
                return Delivery::Refused(s.message().to_owned());
            }
            Err(s) => {
                failures.inc();
                tracing::warn!(code = ?s.code(), message = s.message(), rows = batch.len(), "recording audit rows failed; retrying");
                tokio::time::sleep(delays.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
