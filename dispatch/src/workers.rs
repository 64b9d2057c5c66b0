//! The worker side of dispatch: the mTLS channels to workers, the passive
//! health check (a worker a call could not reach is passed over for
//! [`DOWN_FOR`]), and [`Workers::execute`], which sends one execution.
//!
//! The retry rule (ARCHITECTURE.md, "Invariants"): a call goes to a second
//! worker when the first certainly failed before a guest started
//! ([`annex_proto::error::never_started`]: connect refused, HTTP/2 stream
//! refused, the worker draining or overloaded), or, for a call that carries
//! an idempotency key, when the first worker failed mid-call (the
//! connection broke, the worker died): the key's record makes the repeat
//! safe (docs/design/idempotency.md), since the second worker replays the
//! first one's answer, waits for it, or takes the call over once the
//! first one's lease lapsed. A call without a key that broke mid-call
//! fails: sending it again could run a write twice. The worker's
//! idempotency refusals (key reused, still in progress, records
//! unreachable) are answers for the client, never retried here. Every
//! attempt is sent with what is left of the one deadline.
//! This module must not decide which workers a hash belongs on: that is
//! the routing table's placement, ordered by the `ranking` module.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annex_ops::Role;
use annex_ops::in_process;
use annex_ops::tls::{Tls, TlsConnector};
use annex_proto::pb;
use annex_proto::pb::worker_client::WorkerClient;
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::ranking::{RoutingTable, WorkerTarget, rank};
use crate::transport::Transport;

/// How long a worker that failed a call at the transport level is passed
/// over (passive health check): long enough to leave a dead worker at once
/// rather than after the control plane's heartbeat TTL, short enough that a
/// restarted one is used again soon.
pub(crate) const DOWN_FOR: Duration = Duration::from_secs(5);

/// Attempts made per execution: the first try and one retry.
const ATTEMPTS: usize = 2;

/// Limit on setting up a connection to a worker (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A worker address no connection can be made from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(String);

/// Extra wall time past the guest's own timeout, so a worker's clean
/// `OUTCOME_TIMEOUT` answer arrives before the caller gives up on the call.
pub(crate) const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// How a process reaches workers.
#[derive(Clone)]
pub struct WorkerTls {
    /// The identity presented to workers and the CA they are checked
    /// against, as of the last reload (each new connection takes the
    /// current one).
    pub material: Tls,
    /// Name checked against worker certificates; `None`: the host of the
    /// worker's address.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for WorkerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Why an execution got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The routing table holds no worker.
    #[error("no worker is available")]
    NoWorkers,
    /// The call's deadline passed.
    #[error("the execution timed out")]
    Timeout,
    /// Every worker tried refused the call before starting a guest.
    #[error("no worker could take the execution: {0}")]
    Refused(String),
    /// The worker is still compiling the component; nothing ran. Not sent
    /// to another worker: that would only start a second compile of the
    /// same component there, while this one is ready within `retry_after`.
    #[error("the component is compiling; retry in {}s", .retry_after.as_secs())]
    Compiling { retry_after: Duration },
    /// The worker refused the call for its idempotency key (reused with
    /// another request, still in progress, its answer not kept, or the
    /// records unreachable); nothing ran. Not sent to another worker: any
    /// worker answers the same. `retry_after` when the worker said when.
    #[error("refused for its idempotency key: {error}")]
    Idempotency {
        error: annex_proto::AnnexError,
        retry_after: Option<Duration>,
    },
    /// The worker (or the way to it) failed the call.
    #[error("the worker call failed: {0}")]
    Failed(String),
}

/// A worker's answer to one execution.
#[derive(Debug)]
pub struct Executed {
    pub response: pb::ExecuteResponse,
    /// Whether the first worker refused and a second one answered.
    pub retried: bool,
}

/// The channels, health marks and rotation shared by every execution a
/// process sends to workers.
pub struct Workers {
    tls: WorkerTls,
    max_message_bytes: usize,
    turn: AtomicUsize,
    /// Address → channel (connected lazily, reused).
    channels: Mutex<HashMap<String, Channel>>,
    /// Worker id → until when it is passed over.
    down: Mutex<HashMap<String, Instant>>,
    /// Workers running in this process, by the address they advertise, and
    /// the role this process calls them as.
    in_process: (in_process::Endpoints, Role),
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("tls", &self.tls)
            .field("channels", &self.channels.lock().len())
            .finish_non_exhaustive()
    }
}

impl Workers {
    /// `max_message_bytes` caps Execute messages either way.
    pub fn new(tls: WorkerTls, max_message_bytes: usize) -> Workers {
        Workers {
            tls,
            max_message_bytes,
            turn: AtomicUsize::new(0),
            channels: Mutex::default(),
            down: Mutex::default(),
            in_process: (in_process::Endpoints::default(), Role::Edge),
        }
    }

    /// Reaches the workers registered in `endpoints` (same process) through
    /// their services instead of the network, as a caller with `role`.
    pub fn with_in_process(mut self, endpoints: in_process::Endpoints, role: Role) -> Workers {
        self.in_process = (endpoints, role);
        self
    }

    /// Workers of `table` to try for `content_hash`, best first (placed
    /// ones with room, then the rest, those marked down last); each call
    /// takes the next turn of the rotation.
    pub fn candidates(&self, table: &RoutingTable, content_hash: &str) -> Vec<WorkerTarget> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        rank(table, content_hash, turn, &self.down_now())
    }

    /// Passes over `worker_id` for `DOWN_FOR`: a call to it failed at the
    /// transport (connection refused or reset, draining).
    pub fn mark_down(&self, worker_id: &str) {
        let mut down = self.down.lock();
        if !down.contains_key(worker_id) {
            tracing::info!(worker = worker_id, "worker unreachable; passing it over");
        }
        down.insert(worker_id.to_owned(), Instant::now() + DOWN_FOR);
    }

    /// Worker ids currently marked down (expired marks are dropped).
    fn down_now(&self) -> Vec<String> {
        let now = Instant::now();
        let mut down = self.down.lock();
        down.retain(|_, until| *until > now);
        down.keys().cloned().collect()
    }

    /// Drops the channels to addresses no longer in `table`.
    pub fn retain(&self, table: &RoutingTable) {
        self.channels
            .lock()
            .retain(|addr, _| table.workers.iter().any(|w| &w.address == addr));
    }

    /// A `Worker` client for `target`: its service when it runs in this
    /// process, else over mTLS (channels are reused).
    pub fn client(&self, target: &WorkerTarget) -> Result<WorkerClient<Transport>, ConnectError> {
        let (endpoints, role) = &self.in_process;
        let transport = match endpoints.get(&target.address, *role) {
            Some(service) => Transport::InProcess(service),
            None => Transport::Network(self.channel(&target.address)?),
        };
        Ok(WorkerClient::new(transport)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    fn channel(&self, address: &str) -> Result<Channel, ConnectError> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let c = self.connect(address)?;
        channels.insert(address.to_owned(), c.clone());
        Ok(c)
    }

    fn connect(&self, address: &str) -> Result<Channel, ConnectError> {
        let authority = authority(address);
        let (host, port) = authority
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| ConnectError(format!("{address:?} is not host:port")))?;
        let name = self.tls.server_name.as_deref().unwrap_or(host);
        // The connector dials with the TLS configuration current at each
        // connect (certificates are reloaded), so the URI scheme is plain.
        let connector =
            TlsConnector::new(self.tls.material.clone(), host, port, name, CONNECT_TIMEOUT)
                .map_err(|e| ConnectError(e.to_string()))?;
        Ok(Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| ConnectError(e.to_string()))?
            .http2_keep_alive_interval(Duration::from_secs(20))
            .connect_with_connector_lazy(connector))
    }

    /// Sends `req` to the first of `candidates`, and once more to the next
    /// only when the first call never started a guest or, for a call with
    /// an idempotency key, failed mid-call. The deadline is the request's
    /// guest timeout plus `DEADLINE_GRACE`, for both attempts together; a
    /// request without one (the worker applies its default) has no
    /// deadline here.
    pub async fn execute(
        &self,
        candidates: &[WorkerTarget],
        req: pb::ExecuteRequest,
    ) -> Result<Executed, ExecuteError> {
        if candidates.is_empty() {
            return Err(ExecuteError::NoWorkers);
        }
        let deadline = req
            .limits
            .as_ref()
            .map(|l| l.timeout_ms)
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(u64::from(ms)) + DEADLINE_GRACE);
        let attempts = self.attempts(candidates, req, deadline.map(|d| Instant::now() + d));
        match deadline {
            Some(d) => tokio::time::timeout(d, attempts)
                .await
                .unwrap_or(Err(ExecuteError::Timeout)),
            None => attempts.await,
        }
    }

    async fn attempts(
        &self,
        candidates: &[WorkerTarget],
        req: pb::ExecuteRequest,
        deadline: Option<Instant>,
    ) -> Result<Executed, ExecuteError> {
        let keyed = !req.idempotency_key.is_empty();
        let mut last = String::new();
        for (i, target) in candidates.iter().take(ATTEMPTS).enumerate() {
            let mut client = self.client(target).map_err(|e| {
                ExecuteError::Failed(format!("worker address {}: {e}", target.address))
            })?;
            let mut request = tonic::Request::new(req.clone());
            if let Some(d) = deadline {
                // The worker sees what is left of the call's deadline.
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ExecuteError::Timeout);
                }
                request.set_timeout(left);
            }
            annex_ops::trace_context::inject(request.metadata_mut());
            match client.execute(request).await {
                Ok(r) => {
                    return Ok(Executed {
                        response: r.into_inner(),
                        retried: i > 0,
                    });
                }
                Err(s) if compiling(&s) => {
                    tracing::debug!(worker = %target.id, "component compiling; the caller retries later");
                    return Err(ExecuteError::Compiling {
                        retry_after: annex_proto::error::retry_after(&s)
                            .unwrap_or(COMPILING_RETRY_AFTER),
                    });
                }
                Err(s) if annex_proto::error::idempotency_refusal(&s).is_some() => {
                    return Err(ExecuteError::Idempotency {
                        error: annex_proto::AnnexError::from_status(&s),
                        retry_after: annex_proto::error::retry_after(&s),
                    });
                }
                Err(s) if annex_proto::error::never_started(&s) => {
                    self.mark_down(&target.id);
                    tracing::debug!(worker = %target.id, message = s.message(), "worker unavailable; trying another");
                    last = format!("worker {} unavailable: {}", target.id, s.message());
                }
                Err(s) if keyed && broke_mid_call(&s) && i + 1 < ATTEMPTS.min(candidates.len()) => {
                    // Safe to repeat: the key's record keeps it from
                    // running twice.
                    self.mark_down(&target.id);
                    tracing::info!(worker = %target.id, code = ?s.code(), message = s.message(),
                        "worker failed a call with an idempotency key mid-call; repeating it on another worker");
                    last = format!("worker {} failed mid-call: {}", target.id, s.message());
                }
                Err(s) => return Err(self.failed(target, &s)),
            }
        }
        Err(ExecuteError::Refused(last))
    }

    /// The error for a call that failed after it may have reached a guest.
    fn failed(&self, target: &WorkerTarget, s: &tonic::Status) -> ExecuteError {
        match s.code() {
            // The server side of the deadline: tonic answers CANCELLED when
            // the grpc-timeout it was sent expires.
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ExecuteError::Timeout,
            code => {
                // A connection that broke mid-call: not retried (the guest
                // may have run), but new calls avoid the worker.
                if matches!(
                    code,
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
                ) {
                    self.mark_down(&target.id);
                }
                ExecuteError::Failed(format!("worker {}: {code:?} {}", target.id, s.message()))
            }
        }
    }
}

/// A call the worker or the way to it failed after it may have started:
/// the connection broke or the worker went away (what [`Workers::failed`]
/// also marks the worker down for). A deadline is not among them: the
/// call's time is up.
fn broke_mid_call(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
    )
}

/// When to retry a compiling component if the worker did not say.
const COMPILING_RETRY_AFTER: Duration = Duration::from_secs(2);

/// The worker's refusal while it compiles the component (not a failure of
/// the worker: it is not passed over afterwards).
fn compiling(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && annex_proto::AnnexError::from_status(status).code
            == annex_proto::ErrorCode::ComponentCompiling
}

/// `host:port` of a worker address. The protocol says `host:port`; a
/// scheme some workers advertise is tolerated and ignored (always mTLS).
fn authority(address: &str) -> &str {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    rest.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers() -> Workers {
        annex_ops::tls::install_crypto_provider();
        let ca = annex_ops::devcerts::DevCa::generate().expect("ca");
        let material = ca.issue(annex_ops::Role::Edge, "edge").expect("cert");
        Workers::new(
            WorkerTls {
                material: Tls::new(material).expect("tls"),
                server_name: None,
            },
            1024 * 1024,
        )
    }

    fn closed_address() -> String {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        addr.to_string()
    }

    #[test]
    fn worker_addresses_may_carry_a_scheme() {
        assert_eq!(authority("127.0.0.1:7444"), "127.0.0.1:7444");
        assert_eq!(authority("https://w1:7444/"), "w1:7444");
        assert_eq!(authority("http://[::1]:7444"), "[::1]:7444");
    }

    #[test]
    fn a_marked_worker_is_tried_last() {
        let w = workers();
        let table = RoutingTable::from_snapshot(
            vec![
                pb::WorkerRoute {
                    worker_id: "a".into(),
                    address: "a:1".into(),
                    ..Default::default()
                },
                pb::WorkerRoute {
                    worker_id: "b".into(),
                    address: "b:1".into(),
                    ..Default::default()
                },
            ],
            vec![pb::Placement {
                content_hash: "h".into(),
                worker_ids: vec!["a".into()],
            }],
        );
        assert_eq!(w.candidates(&table, "h")[0].id, "a");
        w.mark_down("a");
        for _ in 0..3 {
            let ids: Vec<String> = w
                .candidates(&table, "h")
                .into_iter()
                .map(|t| t.id)
                .collect();
            assert_eq!(ids, ["b", "a"]);
        }
    }

    #[tokio::test]
    async fn no_candidates_is_no_workers() {
        let err = workers()
            .execute(&[], pb::ExecuteRequest::default())
            .await
            .expect_err("nothing to send to");
        assert!(matches!(err, ExecuteError::NoWorkers), "{err:?}");
    }

    #[tokio::test]
    async fn two_refusals_are_refused_and_mark_both_down() {
        let w = workers();
        let targets: Vec<WorkerTarget> = ["x", "y", "z"]
            .into_iter()
            .map(|id| WorkerTarget {
                id: id.into(),
                address: closed_address(),
                capacity: 0,
                in_flight: 0,
            })
            .collect();
        let req = pb::ExecuteRequest {
            limits: Some(pb::Limits {
                timeout_ms: 5_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = w.execute(&targets, req).await.expect_err("nothing listens");
        assert!(matches!(err, ExecuteError::Refused(_)), "{err:?}");
        // Only two attempts: the third worker was never tried.
        let table = RoutingTable {
            workers: targets,
            placements: HashMap::new(),
        };
        let ranked = w.candidates(&table, "h");
        assert_eq!(ranked[0].id, "z", "{ranked:?}");
    }
}
