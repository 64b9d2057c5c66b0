//! Audit rows for `extension_execution_log`, written off the hot path: the
//! handler reserves a slot in a bounded buffer before it dispatches (no slot:
//! 503, never an unaudited execution), fills it when the request ends, and a
//! background task ships batches to `Dispatch.RecordExecutions`.
//!
//! While the control plane refuses a batch the task keeps retrying it and
//! stops draining the buffer, so a long outage fills the buffer and the edge
//! starts answering 503 instead of serving without an audit trail.

use std::time::Duration;

use annex_proto::pb;
use annex_proto::pb::dispatch_client::DispatchClient;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy)]
pub struct AuditSettings {
    /// Rows the buffer holds (reserved plus waiting).
    pub buffer: usize,
    /// Rows per RecordExecutions call.
    pub batch: usize,
    /// Longest a row waits before its batch is sent.
    pub flush_interval: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            // Seconds of traffic at a few thousand requests per second.
            buffer: 8192,
            batch: 256,
            flush_interval: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<pb::ExecutionRecord>,
}

/// A reserved place in the buffer for one row.
#[derive(Debug)]
pub struct AuditSlot(mpsc::OwnedPermit<pb::ExecutionRecord>);

impl AuditSlot {
    pub fn record(self, row: pb::ExecutionRecord) {
        self.0.send(row);
    }
}

impl AuditSink {
    /// The sink and the receiving end for [`ship`].
    pub fn new(settings: AuditSettings) -> (AuditSink, mpsc::Receiver<pb::ExecutionRecord>) {
        let (tx, rx) = mpsc::channel(settings.buffer.max(1));
        (AuditSink { tx }, rx)
    }

    /// A slot, or `None` when the buffer is full.
    pub fn reserve(&self) -> Option<AuditSlot> {
        self.tx.clone().try_reserve_owned().ok().map(AuditSlot)
    }
}

/// Ships rows until every sender is gone and the buffer is drained.
pub async fn ship(
    client: DispatchClient<Channel>,
    mut rx: mpsc::Receiver<pb::ExecutionRecord>,
    settings: AuditSettings,
    failures: Counter,
) {
    let mut batch = Vec::with_capacity(settings.batch);
    loop {
        let first = rx.recv().await;
        let Some(first) = first else { return };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + settings.flush_interval;
        while batch.len() < settings.batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(row)) => batch.push(row),
                Ok(None) | Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let records = pb::ExecutionRecords {
                records: batch.clone(),
            };
            match client.clone().record_executions(records).await {
                Ok(_) => break,
                Err(s) if s.code() == tonic::Code::InvalidArgument => {
                    // Retrying cannot help a batch the control plane rejects as malformed.
                    failures.inc();
                    tracing::error!(
                        message = s.message(),
                        rows = batch.len(),
                        "the control plane rejected audit rows"
                    );
                    break;
                }
                Err(s) => {
                    failures.inc();
                    tracing::warn!(code = ?s.code(), message = s.message(), rows = batch.len(), "recording audit rows failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
    }
}
