//! Audit rows for `extension_execution_log`, written off the hot path: the
//! handler reserves a slot in a bounded buffer before it dispatches (no slot:
//! 503, never an unaudited execution), fills it when the request ends, and a
//! background task ships batches to `Dispatch.RecordExecutions`.
//!
//! While the control plane refuses batches the calls keep retrying and the
//! task stops draining the buffer, so a long outage fills the buffer (the
//! rows held are the buffer plus the batches in flight) and the edge starts
//! answering 503 instead of serving without an audit trail.

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

/// Ships rows until every sender is gone and the buffer is drained: batches
/// of up to `batch` rows, up to `in_flight` calls at once, each retried until
/// the control plane takes it.
pub(crate) async fn ship(
    client: DispatchClient<Upstream>,
    mut rx: mpsc::Receiver<pb::ExecutionRecord>,
    settings: AuditSettings,
    failures: Counter,
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
        calls.spawn(send(client.clone(), batch, failures.clone()));
    }
    while calls.join_next().await.is_some() {}
}

/// Delays between attempts at one batch.
const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

async fn send(
    client: DispatchClient<Upstream>,
    batch: Vec<pb::ExecutionRecord>,
    failures: Counter,
) {
    let mut delays = RETRY.delays();
    loop {
        let records = pb::ExecutionRecords {
            records: batch.clone(),
        };
        match client.clone().record_executions(records).await {
            Ok(_) => return,
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                // Retrying cannot help a batch the control plane rejects as malformed.
                failures.inc();
                tracing::error!(
                    message = s.message(),
                    rows = batch.len(),
                    "the control plane rejected audit rows"
                );
                return;
            }
            Err(s) => {
                failures.inc();
                tracing::warn!(code = ?s.code(), message = s.message(), rows = batch.len(), "recording audit rows failed; retrying");
                tokio::time::sleep(delays.next_delay()).await;
            }
        }
    }
}
