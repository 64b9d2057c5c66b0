//! Executions that carry an idempotency key (docs/design/idempotency.md):
//! the record in the control plane decides whether this call runs at all.
//!
//! Before anything loads, the worker claims the record of (the grant's
//! tenant and install, the key) for the request's hash
//! ([`request_hash`]): a completed record is replayed without running the
//! guest; a record another call holds is waited for (polled with backoff,
//! within the call's deadline) until it completes, or its lease lapses and
//! this call takes it over; a record made for another request is refused.
//! A claimed call runs with its lease renewed in the background
//! ([`Held::renewing`]): when the lease cannot be kept, the guest is
//! stopped rather than left running while another worker may take the
//! record over. Afterwards the record is completed with the guest's
//! answer, or released when nothing may be kept (no guest answer: a
//! refusal, a failed load, a trap or time limit), so a retry runs it.
//! When the records cannot be reached the call is refused
//! ([`NotStarted::RecordsUnavailable`]): running it could run it twice.
//!
//! Nothing here runs or loads a guest; the executor calls in around its
//! own steps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annex_proto::domain::MAX_IDEMPOTENT_BODY_BYTES;
use annex_proto::pb;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::{ExecuteError, NotStarted};
use crate::backend::{ClaimAnswer, HostBackend, RecordRef};
use crate::metrics::{IdempotentOutcome, Metrics};

/// How soon a caller refused while the records are unreachable should retry.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(2);
/// Polling a record another call holds: from this delay, doubling up to
/// the ceiling (with jitter), and never later than just after the holder's
/// lease ends.
const POLL_MIN: Duration = Duration::from_millis(50);
const POLL: annex_ops::backoff::Backoff =
    annex_ops::backoff::Backoff::new(POLL_MIN, Duration::from_secs(1));
/// How long after the holder's reported lease end the next look is.
const POLL_AFTER_LEASE: Duration = Duration::from_millis(20);
/// Before the caller's own deadline, a waiting call gives up this much
/// earlier so its refusal reaches the caller in time.
const ANSWER_RESERVE: Duration = Duration::from_millis(250);
/// Attempts to complete a record before leaving it to its lease.
const COMPLETE_ATTEMPTS: usize = 3;

/// The identity of a request, for telling a repeat from another request
/// with the same key: SHA-256 over method, path, query (sorted), body
/// (absent differs from empty) and the calling user, each length-prefixed.
/// Two users of one install sending the same key therefore conflict
/// instead of one reading the other's answer.
pub(crate) fn request_hash(request: &pb::ExecuteRequest) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"annex-idempotency-v1");
    let http = request.http.clone().unwrap_or_default();
    field(http.method.as_bytes());
    field(http.path.as_bytes());
    let mut query: Vec<(&String, &String)> = http.query.iter().collect();
    query.sort();
    field(&(query.len() as u64).to_be_bytes());
    for (k, v) in query {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    match &http.body {
        None => field(b"-"),
        Some(body) => {
            field(b"+");
            field(body);
        }
    }
    let user = request.user.as_ref().map_or("", |u| u.user_id.as_str());
    field(user.as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// A keyed call before its claim.
pub(super) struct Keyed {
    record: RecordRef,
    request_hash: String,
}

impl Keyed {
    /// The call's record, if it carries a key.
    pub(super) fn of(request: &pb::ExecuteRequest) -> Option<Keyed> {
        if request.idempotency_key.is_empty() {
            return None;
        }
        Some(Keyed {
            record: RecordRef {
                grant: request.execution_grant.clone(),
                key: request.idempotency_key.clone(),
                token: uuid::Uuid::new_v4().to_string(),
            },
            request_hash: request_hash(request),
        })
    }
}

/// What a claim lets the call do.
pub(super) enum Claim {
    /// Answer with an earlier call's response; nothing runs.
    Replay(pb::IdempotentResponse),
    /// Run, holding the record.
    Run(Box<Held>),
}

/// Claims the call's record, waiting (until `wait_until`) while another
/// call holds it.
pub(super) async fn claim(
    backend: &Arc<dyn HostBackend>,
    metrics: &Metrics,
    keyed: Keyed,
    lease: Duration,
    wait_until: Instant,
) -> Result<Claim, NotStarted> {
    let mut delays = POLL.delays();
    let mut waited = false;
    loop {
        let sent = Instant::now();
        let answer = backend
            .idempotency_claim(&keyed.record, &keyed.request_hash, lease)
            .await;
        match answer {
            Ok(ClaimAnswer::Claimed) => {
                metrics.idempotent(IdempotentOutcome::Claimed);
                return Ok(Claim::Run(Box::new(Held::new(
                    backend.clone(),
                    metrics.clone(),
                    keyed.record,
                    lease,
                    sent,
                ))));
            }
            Ok(ClaimAnswer::Completed(response)) => {
                metrics.idempotent(IdempotentOutcome::Replayed);
                tracing::info!("idempotent replay");
                return Ok(Claim::Replay(response));
            }
            Ok(ClaimAnswer::Conflict) => {
                metrics.idempotent(IdempotentOutcome::Conflict);
                return Err(NotStarted::KeyReused);
            }
            Ok(ClaimAnswer::InProgress { lease_left }) => {
                if !waited {
                    waited = true;
                    metrics.idempotent(IdempotentOutcome::Waited);
                    tracing::debug!("a call with this idempotency key is running; waiting");
                }
                let now = Instant::now();
                if now >= wait_until {
                    metrics.idempotent(IdempotentOutcome::InProgress);
                    return Err(NotStarted::InProgress {
                        retry_after: lease_left.min(lease).max(Duration::from_secs(1)),
                    });
                }
                // Next look: by the backoff, or just after the lease ends
                // if that is sooner (the holder may have died), and the
                // last one at the call's own limit.
                let step = delays
                    .next_delay()
                    .min(lease_left + POLL_AFTER_LEASE)
                    .max(POLL_MIN);
                let next = (now + step).min(wait_until);
                tokio::time::sleep_until(next.into()).await;
            }
            Err(e) => {
                metrics.idempotent(IdempotentOutcome::Unavailable);
                tracing::warn!(error = %e, "idempotency records unreachable; refusing the keyed call");
                return Err(NotStarted::RecordsUnavailable {
                    retry_after: UNAVAILABLE_RETRY,
                });
            }
        }
    }
}

/// Until when a keyed call may wait for another one: its own time limit
/// from arrival, and never past its caller's deadline (less the time to
/// answer).
pub(super) fn wait_until(
    started: Instant,
    timeout: Duration,
    caller_deadline: Option<Instant>,
) -> Instant {
    let own = started + timeout;
    match caller_deadline {
        Some(d) => own.min(d.checked_sub(ANSWER_RESERVE).unwrap_or(d)),
        None => own,
    }
}

/// The response for a replay, or the refusal of one whose answer was not
/// kept.
pub(super) fn replay(
    kept: pb::IdempotentResponse,
    wall: Duration,
    worker_id: &str,
) -> Result<pb::ExecuteResponse, ExecuteError> {
    if kept.not_kept {
        return Err(NotStarted::ResponseNotKept.into());
    }
    Ok(pb::ExecuteResponse {
        status: kept.status,
        headers: kept.headers,
        body: kept.body,
        outcome: pb::Outcome::Ok as i32,
        error: String::new(),
        usage: Some(pb::Usage {
            wall_us: u64::try_from(wall.as_micros()).unwrap_or(u64::MAX),
            ..Default::default()
        }),
        worker_id: worker_id.to_owned(),
        replayed: true,
    })
}

/// What the record keeps of a guest's answer: status, headers and body,
/// or only that it was too large to keep.
fn kept(response: &pb::ExecuteResponse) -> pb::IdempotentResponse {
    if response.body.as_ref().map_or(0, Vec::len) > MAX_IDEMPOTENT_BODY_BYTES {
        return pb::IdempotentResponse {
            not_kept: true,
            ..Default::default()
        };
    }
    pb::IdempotentResponse {
        status: response.status,
        headers: response.headers.clone(),
        body: response.body.clone(),
        not_kept: false,
    }
}

/// Why a claimed call's lease could not be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseLost {
    /// The control plane did not renew it in time.
    Unrenewed,
    /// Another claimant holds the record now.
    TakenOver,
}

/// A record this worker holds while its call runs. Settle it with
/// [`Held::settle`]; dropped unsettled (the call was cancelled), it is
/// completed with the answer it had or released, in the background.
pub(super) struct Held {
    backend: Arc<dyn HostBackend>,
    metrics: Metrics,
    record: RecordRef,
    lease: Duration,
    /// Until when the control plane holds the record for this worker at
    /// least (measured from when the last successful claim or renewal was
    /// sent).
    held_until: Mutex<Instant>,
    /// The answer being completed, for the drop path.
    answer: Option<pb::IdempotentResponse>,
    settled: bool,
}

impl Held {
    fn new(
        backend: Arc<dyn HostBackend>,
        metrics: Metrics,
        record: RecordRef,
        lease: Duration,
        sent: Instant,
    ) -> Held {
        Held {
            backend,
            metrics,
            record,
            lease,
            held_until: Mutex::new(sent + lease),
            answer: None,
            settled: false,
        }
    }

    /// When the worker stops relying on the lease: a quarter of it before
    /// its end, so a stopped guest is over before another claimant can
    /// take the record over (and clocks of control-plane replicas may
    /// differ a little).
    fn give_up(&self) -> Instant {
        let until = *self.held_until.lock();
        until.checked_sub(self.lease / 4).unwrap_or(until)
    }

    /// Runs `work` while renewing the lease every third of it; `Err` (and
    /// `work` dropped, which stops its guest) when the lease cannot be kept.
    pub(super) async fn renewing<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, LeaseLost> {
        tokio::select! {
            out = work => Ok(out),
            lost = self.keep_lease() => {
                self.metrics.idempotent(IdempotentOutcome::LeaseLost);
                tracing::warn!(reason = ?lost, "the idempotency lease could not be kept; stopping the call");
                Err(lost)
            }
        }
    }

    async fn keep_lease(&self) -> LeaseLost {
        let every = self.lease / 3;
        let retry = (self.lease / 10).max(Duration::from_millis(100));
        let mut next = *self.held_until.lock() - self.lease + every;
        loop {
            let give_up = self.give_up();
            tokio::time::sleep_until(next.min(give_up).into()).await;
            let sent = Instant::now();
            if sent >= give_up {
                return LeaseLost::Unrenewed;
            }
            let renewed = tokio::time::timeout(
                give_up - sent,
                self.backend.idempotency_renew(&self.record, self.lease),
            )
            .await;
            match renewed {
                Ok(Ok(true)) => {
                    *self.held_until.lock() = sent + self.lease;
                    next = sent + every;
                }
                Ok(Ok(false)) => return LeaseLost::TakenOver,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "renewing the idempotency lease failed; retrying");
                    next = Instant::now() + retry;
                }
                Err(_) => next = Instant::now(),
            }
        }
    }

    /// Completes the record with the guest's answer (`Ok` with outcome
    /// ok), or releases it for anything else.
    pub(super) async fn settle(mut self, result: &Result<pb::ExecuteResponse, ExecuteError>) {
        let answered = matches!(result, Ok(r) if r.outcome == pb::Outcome::Ok as i32);
        match result {
            Ok(response) if answered => {
                let kept = kept(response);
                self.answer = Some(kept.clone());
                self.complete(kept).await;
            }
            _ => {
                release(&*self.backend, &self.record).await;
            }
        }
        self.settled = true;
    }

    async fn complete(&self, kept: pb::IdempotentResponse) {
        let mut delays = POLL.delays();
        for attempt in 1..=COMPLETE_ATTEMPTS {
            match self
                .backend
                .idempotency_complete(&self.record, kept.clone())
                .await
            {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(
                        "the idempotency record was taken over before this call completed it; its answer is not kept"
                    );
                    return;
                }
                Err(e) if attempt < COMPLETE_ATTEMPTS && Instant::now() < self.give_up() => {
                    tracing::debug!(error = %e, "completing the idempotency record failed; retrying");
                    tokio::time::sleep(delays.next_delay()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e,
                        "completing the idempotency record failed; a repeat may run once the lease lapses");
                    return;
                }
            }
        }
    }
}

async fn release(backend: &dyn HostBackend, record: &RecordRef) {
    match backend.idempotency_release(record).await {
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e,
            "releasing the idempotency record failed; a repeat waits for its lease to lapse"),
    }
}

impl Drop for Held {
    /// A call cancelled while it held the record (its caller went away,
    /// which also stops its guest): complete with the answer it had, else
    /// release, in the background.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let backend = self.backend.clone();
        let record = self.record.clone();
        let answer = self.answer.take();
        runtime.spawn(async move {
            match answer {
                Some(kept) => {
                    let _ = backend.idempotency_complete(&record, kept).await;
                }
                None => release(&*backend, &record).await,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, body: Option<&[u8]>, user: &str) -> pb::ExecuteRequest {
        pb::ExecuteRequest {
            http: Some(pb::HttpRequest {
                method: method.into(),
                path: "/orders".into(),
                query: [
                    ("a".to_owned(), "1".to_owned()),
                    ("b".to_owned(), "2".to_owned()),
                ]
                .into(),
                body: body.map(<[u8]>::to_vec),
                ..Default::default()
            }),
            user: Some(pb::User {
                user_id: user.into(),
                ..Default::default()
            }),
            idempotency_key: "k".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_request_hash_covers_method_path_query_body_and_user() {
        let base = request_hash(&request("POST", Some(b"{}"), "u1"));
        assert!(base.starts_with("sha256:") && base.len() == 71, "{base}");
        assert_eq!(base, request_hash(&request("POST", Some(b"{}"), "u1")));
        for other in [
            request("PUT", Some(b"{}"), "u1"),
            request("POST", Some(b"{ }"), "u1"),
            request("POST", Some(b""), "u1"),
            request("POST", None, "u1"),
            request("POST", Some(b"{}"), "u2"),
        ] {
            assert_ne!(base, request_hash(&other), "{other:?}");
        }
        let mut r = request("POST", Some(b"{}"), "u1");
        if let Some(http) = r.http.as_mut() {
            http.query.insert("a".into(), "11".into());
        }
        assert_ne!(base, request_hash(&r));
        // The key itself and the request id are not part of it.
        let mut r = request("POST", Some(b"{}"), "u1");
        r.idempotency_key = "other".into();
        assert_eq!(base, request_hash(&r));
    }

    #[test]
    fn a_waiting_call_stops_before_its_callers_deadline() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(wait_until(t0, s(30), None), t0 + s(30));
        assert_eq!(
            wait_until(t0, s(30), Some(t0 + s(10))),
            t0 + s(10) - ANSWER_RESERVE
        );
        assert_eq!(wait_until(t0, s(5), Some(t0 + s(10))), t0 + s(5));
    }

    #[test]
    fn answers_over_the_bound_are_kept_as_not_kept() {
        let small = pb::ExecuteResponse {
            status: 201,
            body: Some(b"ok".to_vec()),
            ..Default::default()
        };
        let k = kept(&small);
        assert_eq!((k.status, k.not_kept), (201, false));
        let big = pb::ExecuteResponse {
            status: 200,
            body: Some(vec![0; MAX_IDEMPOTENT_BODY_BYTES + 1]),
            ..Default::default()
        };
        assert_eq!(
            kept(&big),
            pb::IdempotentResponse {
                not_kept: true,
                ..Default::default()
            }
        );
        let replayed = replay(k, Duration::from_millis(3), "w1").expect("replays");
        assert!(replayed.replayed);
        assert_eq!(replayed.body.as_deref(), Some(&b"ok"[..]));
        assert!(matches!(
            replay(kept(&big), Duration::ZERO, "w1"),
            Err(ExecuteError::NotStarted(NotStarted::ResponseNotKept))
        ));
    }
}
