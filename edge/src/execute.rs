//! Sends one execution to a worker: the first candidate from the routing
//! snapshot, and once more to the next candidate only when the first call
//! failed before the guest started (connection refused, worker draining or
//! overloaded: gRPC `UNAVAILABLE`). Everything under one deadline.

use std::time::Duration;

use annex_proto::pb;

use crate::routing::Routes;

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The snapshot holds no worker.
    #[error("no worker is available")]
    NoWorkers,
    /// The deadline passed: 504.
    #[error("the execution timed out")]
    Timeout,
    /// The worker (or the way to it) failed: 502.
    #[error("the worker call failed: {0}")]
    Failed(String),
}

/// Attempts made per execution (the first try and one retry).
const ATTEMPTS: usize = 2;

/// Extra wall time past the guest's own timeout, so a worker's clean
/// `OUTCOME_TIMEOUT` answer arrives before the edge gives up on the call.
const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// Runs `req` on a worker placed for its content hash: `timeout` is the
/// guest's limit, the call's deadline is a little later.
/// Returns the answer and whether a retry was needed.
pub async fn execute(
    routes: &Routes,
    req: pb::ExecuteRequest,
    timeout: Duration,
) -> Result<(pb::ExecuteResponse, bool), ExecuteError> {
    let hash = req
        .context
        .as_ref()
        .map(|c| c.content_hash.clone())
        .unwrap_or_default();
    let candidates = routes.candidates(&hash);
    if candidates.is_empty() {
        return Err(ExecuteError::NoWorkers);
    }
    let deadline = timeout + DEADLINE_GRACE;
    let attempts = async {
        let mut last = String::new();
        for (i, target) in candidates.iter().take(ATTEMPTS).enumerate() {
            let mut client = routes.client(target).map_err(|e| {
                ExecuteError::Failed(format!("worker address {}: {e}", target.address))
            })?;
            let mut request = tonic::Request::new(req.clone());
            request.set_timeout(deadline);
            annex_ops::trace_context::inject(request.metadata_mut());
            match client.execute(request).await {
                Ok(r) => return Ok((r.into_inner(), i > 0)),
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    tracing::debug!(worker = %target.id, message = s.message(), "worker unavailable; trying another");
                    last = format!("worker {} unavailable: {}", target.id, s.message());
                }
                // The server side of the deadline: tonic answers CANCELLED
                // when the grpc-timeout it was sent expires.
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                    ) =>
                {
                    return Err(ExecuteError::Timeout);
                }
                Err(s) => {
                    return Err(ExecuteError::Failed(format!(
                        "worker {}: {:?} {}",
                        target.id,
                        s.code(),
                        s.message()
                    )));
                }
            }
        }
        Err(ExecuteError::Failed(last))
    };
    match tokio::time::timeout(deadline, attempts).await {
        Ok(result) => result,
        Err(_) => Err(ExecuteError::Timeout),
    }
}
