//! Sends executions' log events to the control plane (`HostServices.PublishLogs`)
//! off the execution path: one bounded queue of batches and one task that
//! publishes them in order, the batches queued meanwhile together, each
//! publish bounded by [`PUBLISH_TIMEOUT`]. A
//! batch that finds the queue full, fails or times out is dropped and
//! counted (`annex_worker_log_batches_dropped_total`); nothing here ever
//! waits on the caller's side or grows with a slow control plane.

use std::sync::Arc;
use std::time::Duration;

use annex_proto::pb;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::backend::HostBackend;

/// Batches waiting to be published: a batch holds at most 256 KiB of
/// messages (the per-execution cap), so a full queue holds at most 16 MiB.
pub(crate) const QUEUE_BATCHES: usize = 64;
/// Queued batches sent in one publish at most: 16 executions' events
/// (at most 4,096 events and 4 MiB of messages).
const COALESCE_BATCHES: usize = 16;
/// Deadline of one publish.
pub(crate) const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The sending side of the log queue.
#[derive(Debug, Clone)]
pub(crate) struct LogShipper {
    queue: mpsc::Sender<Vec<pb::LogEvent>>,
    dropped: Counter,
}

impl LogShipper {
    /// Starts the publishing task on `runtime` and returns its queue.
    pub(crate) fn start(
        backend: Arc<dyn HostBackend>,
        runtime: &tokio::runtime::Handle,
        dropped: Counter,
    ) -> LogShipper {
        let (queue, rx) = mpsc::channel(QUEUE_BATCHES);
        runtime.spawn(publish(rx, backend, dropped.clone()));
        LogShipper { queue, dropped }
    }

    /// Queues one execution's events; a full queue drops them.
    pub(crate) fn ship(&self, events: Vec<pb::LogEvent>) {
        if events.is_empty() {
            return;
        }
        if self.queue.try_send(events).is_err() {
            self.dropped.inc();
        }
    }
}

async fn publish(
    mut rx: mpsc::Receiver<Vec<pb::LogEvent>>,
    backend: Arc<dyn HostBackend>,
    dropped: Counter,
) {
    while let Some(mut batch) = rx.recv().await {
        // Executions that finished while the last publish was under way go
        // out together: one publish per round, not one per execution.
        for _ in 1..COALESCE_BATCHES {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        match tokio::time::timeout(PUBLISH_TIMEOUT, backend.publish_logs(batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                dropped.inc();
                tracing::debug!(%error, "publishing guest logs failed");
            }
            Err(_) => {
                dropped.inc();
                tracing::debug!(timeout = ?PUBLISH_TIMEOUT, "publishing guest logs timed out");
            }
        }
    }
}
