//! Sends one execution to a worker: the first candidate from the routing
//! snapshot, and once more to the next candidate only when the first call
//! certainly failed before the guest started (connection refused, stream
//! refused, worker draining or overloaded:
//! [`annex_proto::error::never_started`]). A connection that broke mid-call
//! fails the call, idempotency key or not: workers do not deduplicate
//! repeats yet, so sending it again could run a write twice.
//! Everything under one deadline.
//!
//! A worker that fails a call at the transport level (refused, reset,
//! draining) is marked down in [`Routes`] so the next calls go elsewhere.

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
                Err(s) if annex_proto::error::never_started(&s) => {
                    routes.mark_down(&target.id);
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
                    // A connection that broke mid-call: not retried (the
                    // guest may have run), but new calls avoid the worker.
                    if matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
                    ) {
                        routes.mark_down(&target.id);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{WorkerTarget, WorkerTls};

    #[tokio::test]
    async fn a_refused_connection_never_started_and_marks_the_worker_down() {
        annex_ops::tls::install_crypto_provider();
        let ca = annex_ops::devcerts::DevCa::generate().expect("ca");
        let material = ca.issue(annex_ops::Role::Edge, "edge").expect("cert");
        let routes = Routes::new(WorkerTls {
            material,
            server_name: None,
        });
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let target = WorkerTarget {
            id: "gone".into(),
            address: addr.to_string(),
            capacity: 0,
            in_flight: 0,
        };
        let status = routes
            .client(&target)
            .expect("client")
            .execute(pb::ExecuteRequest::default())
            .await
            .expect_err("nothing listens");
        assert!(annex_proto::error::never_started(&status), "{status:?}");

        routes.apply(pb::RoutingSnapshot {
            version: 1,
            workers: vec![pb::WorkerRoute {
                worker_id: "gone".into(),
                address: addr.to_string(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let err = execute(
            &routes,
            pb::ExecuteRequest::default(),
            Duration::from_secs(5),
        )
        .await
        .expect_err("nothing listens");
        assert!(matches!(err, ExecuteError::Failed(_)), "{err:?}");
        assert_eq!(routes.candidates("")[0].id, "gone", "still the only worker");
    }
}
