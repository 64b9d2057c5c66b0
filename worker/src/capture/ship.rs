//! Finished captures on their way to the control plane: one bounded queue
//! and one task sending them through `HostServices.RecordCapture`, one at
//! a time. A full queue or a refused capture is dropped and counted; the
//! execution's answer never waits for its capture.

use std::sync::Arc;

use annex_proto::pb;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::backend::{HostBackend, PUBLISH_TIMEOUT};

/// Captures waiting to be sent. Each holds at most one tape (3 MiB), so
/// the queue bounds the memory captures can hold on a worker.
const QUEUE_CAPTURES: usize = 16;

pub(crate) struct CaptureShipper {
    queue: mpsc::Sender<pb::RecordCaptureRequest>,
    dropped: Counter,
}

impl CaptureShipper {
    pub(crate) fn start(
        backend: Arc<dyn HostBackend>,
        runtime: &tokio::runtime::Handle,
        dropped: Counter,
    ) -> CaptureShipper {
        let (queue, rx) = mpsc::channel(QUEUE_CAPTURES);
        runtime.spawn(send(rx, backend, dropped.clone()));
        CaptureShipper { queue, dropped }
    }

    pub(crate) fn ship(&self, capture: pb::RecordCaptureRequest) {
        if self.queue.try_send(capture).is_err() {
            self.dropped.inc();
            tracing::debug!("capture queue full; capture dropped");
        }
    }
}

async fn send(
    mut rx: mpsc::Receiver<pb::RecordCaptureRequest>,
    backend: Arc<dyn HostBackend>,
    dropped: Counter,
) {
    while let Some(capture) = rx.recv().await {
        match tokio::time::timeout(PUBLISH_TIMEOUT, backend.record_capture(capture)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                dropped.inc();
                tracing::debug!(%error, "recording a capture failed");
            }
            Err(_) => {
                dropped.inc();
                tracing::debug!("recording a capture timed out");
            }
        }
    }
}
