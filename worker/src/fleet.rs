//! Membership in the control plane's fleet: register, then one heartbeat
//! stream per worker (capacity, in-flight, cached hashes, draining, usage
//! per tenant and minute) with commands coming back (prewarm a content
//! hash; re-list trust keys). Reconnects with exponential backoff (0.5 s up
//! to 2 s: a restarted control plane must see heartbeats again within about
//! its worker TTL). Registering, opening the stream and each heartbeat have
//! a deadline of [`CALL_TIMEOUT`]: a control plane that stops reading ends
//! the session, and the worker reconnects. When the worker
//! announces it is leaving, a heartbeat with `draining` goes out at once; a
//! final one is sent on shutdown.
//!
//! [`DrainState`] is the worker's way out of the fleet in two steps:
//! leaving (heartbeats say `draining`, calls still served) and draining
//! (new calls refused). This module does not run executions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annex_ops::backoff::{Backoff, Delays};
use annex_proto::pb;
use annex_proto::pb::fleet_client::FleetClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::execute::Executor;
use crate::trust::GrpcTrust;

/// Heartbeat interval when the control plane does not name one.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(2));
/// Deadline of registering, of opening the heartbeat stream and of queuing
/// one heartbeat on it.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether this worker is leaving the fleet and whether it still takes
/// calls. Leaving comes first: the control plane stops placing work here
/// while calls already on their way are served; draining follows and
/// refuses new calls with UNAVAILABLE, so callers retry elsewhere.
#[derive(Debug)]
pub struct DrainState {
    /// True once the worker announced it is leaving the fleet.
    leaving: watch::Sender<bool>,
    /// Read on every execution: an atomic, not a lock.
    draining: AtomicBool,
}

impl Default for DrainState {
    fn default() -> Self {
        DrainState {
            leaving: watch::Sender::new(false),
            draining: AtomicBool::new(false),
        }
    }
}

impl DrainState {
    /// Stop taking new executions; running ones finish. Implies [`Self::leave`].
    pub fn drain(&self) {
        self.leave();
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Announce leaving the fleet (heartbeats say `draining`, so no new work
    /// is placed here) while still taking the calls that arrive meanwhile.
    pub(crate) fn leave(&self) {
        self.leaving.send_replace(true);
    }

    /// Whether the worker announced it is leaving (or is draining).
    pub(crate) fn is_leaving(&self) -> bool {
        *self.leaving.borrow()
    }

    /// Changes of [`Self::is_leaving`], so the announcement goes out at once.
    pub(crate) fn leaving(&self) -> watch::Receiver<bool> {
        self.leaving.subscribe()
    }

    /// Whether new executions are refused.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// What the fleet loop needs.
pub struct Membership {
    pub channel: Channel,
    pub executor: Arc<Executor>,
    /// Re-listed when the control plane announces a trust change.
    pub trust: Option<Arc<GrpcTrust>>,
    /// The address edges and the control plane reach this worker at.
    pub advertise: String,
}

/// Runs until `shutdown` turns true.
pub async fn run(m: Membership, mut shutdown: watch::Receiver<bool>) {
    let mut delays = RECONNECT.delays();
    while !*shutdown.borrow() {
        match session(&m, &mut shutdown, &mut delays).await {
            Ok(()) => return,
            Err(error) => {
                let backoff = delays.next_delay();
                tracing::warn!(%error, retry_in = ?backoff, "fleet session ended");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

fn heartbeat(executor: &Executor) -> pb::WorkerHeartbeat {
    let admission = executor.admission();
    pb::WorkerHeartbeat {
        worker_id: executor.worker_id().to_string(),
        in_flight: u32::try_from(admission.running()).unwrap_or(u32::MAX),
        capacity: u32::try_from(admission.capacity()).unwrap_or(u32::MAX),
        cached_hashes: executor.cache().cached_hashes(),
        draining: executor.drain_state().is_leaving(),
        usage: executor.take_usage(),
    }
}

async fn session(
    m: &Membership,
    shutdown: &mut watch::Receiver<bool>,
    delays: &mut Delays,
) -> Result<(), tonic::Status> {
    let mut client = FleetClient::new(m.channel.clone());
    let timed_out = |what: &str| {
        tonic::Status::deadline_exceeded(format!(
            "{what}: no answer within {} s",
            CALL_TIMEOUT.as_secs()
        ))
    };
    let mut request = tonic::Request::new(pb::RegisterWorkerRequest {
        worker_id: m.executor.worker_id().to_string(),
        address: m.advertise.clone(),
        capacity: u32::try_from(m.executor.admission().capacity()).unwrap_or(u32::MAX),
        engine_hash: m.executor.engine_hash().to_string(),
    });
    request.set_timeout(CALL_TIMEOUT);
    let registered = tokio::time::timeout(CALL_TIMEOUT, client.register(request))
        .await
        .map_err(|_| timed_out("registering"))??
        .into_inner();
    *delays = RECONNECT.delays();
    let interval = match registered.heartbeat_interval_ms {
        0 => DEFAULT_INTERVAL,
        ms => Duration::from_millis(u64::from(ms)).max(MIN_INTERVAL),
    };
    tracing::info!(?interval, "registered with the control plane");
    let (tx, rx) = mpsc::channel(4);
    let send = |hb: pb::WorkerHeartbeat| {
        let tx = tx.clone();
        async move {
            tx.send_timeout(hb, CALL_TIMEOUT)
                .await
                .map_err(|e| match e {
                    mpsc::error::SendTimeoutError::Timeout(_) => tonic::Status::deadline_exceeded(
                        "the control plane stopped reading heartbeats",
                    ),
                    mpsc::error::SendTimeoutError::Closed(_) => {
                        tonic::Status::unavailable("heartbeat stream closed")
                    }
                })
        }
    };
    send(heartbeat(&m.executor)).await?;
    let mut commands =
        tokio::time::timeout(CALL_TIMEOUT, client.heartbeat(ReceiverStream::new(rx)))
            .await
            .map_err(|_| timed_out("opening the heartbeat stream"))??
            .into_inner();
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    let mut leaving = m.executor.drain_state().leaving();
    loop {
        tokio::select! {
            _ = ticker.tick() => send(heartbeat(&m.executor)).await?,
            // Leaving: tell the control plane now, not at the next tick.
            Ok(()) = leaving.changed() => send(heartbeat(&m.executor)).await?,
            command = commands.message() => match command? {
                Some(c) => handle(m, c).await,
                None => return Err(tonic::Status::unavailable("control plane closed the heartbeat stream")),
            },
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    // Last heartbeat (it says `draining`), then close our side and wait
    // briefly for the control plane to close its side, so it is delivered.
    let _ = send(heartbeat(&m.executor)).await;
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(Some(_)) = commands.message().await {}
    })
    .await;
    Ok(())
}

async fn handle(m: &Membership, command: pb::FleetCommand) {
    match command.command {
        Some(pb::fleet_command::Command::PrewarmContentHash(hash)) => {
            let executor = m.executor.clone();
            tokio::spawn(async move {
                match executor.prewarm(&hash).await {
                    Ok(source) => tracing::info!(%hash, source = source.as_str(), "prewarmed"),
                    Err(error) => tracing::warn!(%hash, %error, "prewarm failed"),
                }
            });
        }
        Some(pb::fleet_command::Command::TrustRevision(revision)) => {
            tracing::info!(revision, "trust keys changed");
            if let Some(trust) = &m.trust {
                trust.refresh_now();
            }
        }
        None => {}
    }
}
