//! Recording: whether a call is captured ([`recorder_for`]), and the [`Recorder`]
//! its host state writes into while the guest runs. The recorder keeps the
//! tape under the policy's size cap: past it, further calls and readings
//! are dropped and the tape is marked truncated, so a capture never holds
//! more memory than its cap.

use std::collections::BTreeMap;

use annex_proto::pb;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use parking_lot::Mutex;
use prost::Message as _;

use super::tape::{Answer, Ask, Exchange, TAPE_VERSION, Tape};

/// The most a worker keeps for one tape whatever the policy says: a
/// `RecordCapture` request must stay under the host-service message cap
/// (4 MiB) with its headers.
pub(crate) const MAX_TAPE_BYTES: u64 = 3 * 1024 * 1024;

/// Why a call is being recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Drawn by the sample: shipped whatever its outcome.
    Sampled,
    /// Recorded because failures are kept: shipped only if it failed.
    Failure,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Sampled => "sampled",
            Reason::Failure => "failure",
        }
    }
}

/// The capture decision for one request: a recorder when its install's
/// policy asks for one (drawn by the sample, or kept for failures).
pub(crate) fn recorder_for(request: &pb::ExecuteRequest) -> Option<std::sync::Arc<Recorder>> {
    let settings = request.capture.as_ref()?;
    let reason = if sampled(settings.sample_ppm) {
        Reason::Sampled
    } else if settings.failures {
        Reason::Failure
    } else {
        return None;
    };
    Some(std::sync::Arc::new(Recorder::new(request, reason)))
}

fn sampled(ppm: u32) -> bool {
    if ppm == 0 {
        return false;
    }
    let mut draw = [0u8; 4];
    if getrandom::fill(&mut draw).is_err() {
        return false;
    }
    u32::from_le_bytes(draw) % 1_000_000 < ppm
}

/// One execution's recording in progress.
pub(crate) struct Recorder {
    pub(crate) reason: Reason,
    max_bytes: u64,
    /// What the shipped capture is filed under (the grant names the
    /// install to the control plane).
    grant: String,
    request_id: String,
    method: String,
    path: String,
    content_hash: String,
    state: Mutex<Recording>,
}

#[derive(Default)]
struct Recording {
    tape: Tape,
    secure: Vec<u8>,
    insecure: Vec<u8>,
    secrets: BTreeMap<String, String>,
    bytes: u64,
}

impl Recorder {
    pub(crate) fn new(request: &pb::ExecuteRequest, reason: Reason) -> Recorder {
        let settings = request.capture.clone().unwrap_or_default();
        let mut kept = request.clone();
        kept.execution_grant.clear();
        kept.capture = None;
        let request_b64 = B64.encode(kept.encode_to_vec());
        let max_bytes = match settings.max_bytes {
            0 => MAX_TAPE_BYTES,
            n => n.min(MAX_TAPE_BYTES),
        };
        let mut seed = [0u8; 16];
        let _ = getrandom::fill(&mut seed);
        let tape = Tape {
            version: TAPE_VERSION,
            request: request_b64.clone(),
            config_version: settings.config_version,
            insecure_seed: u128::from_le_bytes(seed).to_string(),
            ..Tape::default()
        };
        let context = request.context.clone().unwrap_or_default();
        let http = request.http.clone().unwrap_or_default();
        Recorder {
            reason,
            max_bytes,
            grant: request.execution_grant.clone(),
            request_id: context.request_id,
            method: http.method,
            path: http.path,
            content_hash: context.content_hash,
            state: Mutex::new(Recording {
                bytes: request_b64.len() as u64,
                tape,
                ..Recording::default()
            }),
        }
    }

    /// The `wasi:random/insecure-seed` this execution sees.
    pub(crate) fn insecure_seed(&self) -> u128 {
        self.state.lock().tape.insecure_seed.parse().unwrap_or(0)
    }

    /// Adds `n` bytes to the tape if they fit; false (and the tape marked
    /// truncated) when they do not.
    fn room(state: &mut Recording, max: u64, n: u64) -> bool {
        if state.tape.truncated || state.bytes.saturating_add(n) > max {
            state.tape.truncated = true;
            return false;
        }
        state.bytes += n;
        true
    }

    pub(crate) fn wall_clock(&self, ns: u64) {
        let mut s = self.state.lock();
        if Self::room(&mut s, self.max_bytes, 21) {
            s.tape.wall_clock.push(ns);
        }
    }

    pub(crate) fn monotonic_clock(&self, ns: u64) {
        let mut s = self.state.lock();
        if Self::room(&mut s, self.max_bytes, 21) {
            s.tape.monotonic_clock.push(ns);
        }
    }

    pub(crate) fn random(&self, secure: bool, bytes: &[u8]) {
        let mut s = self.state.lock();
        // base64 grows by a third.
        if Self::room(&mut s, self.max_bytes, (bytes.len() as u64 * 4).div_ceil(3)) {
            if secure {
                s.secure.extend_from_slice(bytes);
            } else {
                s.insecure.extend_from_slice(bytes);
            }
        }
    }

    pub(crate) fn call(&self, ask: Ask, answer: Answer) {
        let exchange = Exchange { ask, answer };
        let size = serde_json::to_vec(&exchange).map_or(0, |v| v.len() as u64);
        let mut s = self.state.lock();
        if Self::room(&mut s, self.max_bytes, size) {
            s.tape.calls.push(exchange);
        }
    }

    /// Keeps the secret values the guest's secrets answer held (never on
    /// the tape itself).
    pub(crate) fn secrets(&self, values: &BTreeMap<String, String>) {
        self.state.lock().secrets = values.clone();
    }

    /// Ends the recording with the worker's answer (usage figures and the
    /// worker id dropped: they are not the guest's) as the capture to ship.
    pub(crate) fn finish(&self, response: &pb::ExecuteResponse) -> pb::RecordCaptureRequest {
        let mut s = self.state.lock();
        let mut kept = response.clone();
        kept.usage = None;
        kept.worker_id.clear();
        let mut tape = std::mem::take(&mut s.tape);
        tape.response = B64.encode(kept.encode_to_vec());
        tape.secure_random = B64.encode(&s.secure);
        tape.insecure_random = B64.encode(&s.insecure);
        pb::RecordCaptureRequest {
            grant: self.grant.clone(),
            request_id: self.request_id.clone(),
            reason: self.reason.as_str().to_string(),
            outcome: outcome_name(response.outcome),
            status: response.status,
            method: self.method.clone(),
            path: self.path.clone(),
            content_hash: self.content_hash.clone(),
            tape: tape.to_json(),
            secrets: std::mem::take(&mut s.secrets).into_iter().collect(),
        }
    }
}

/// `ok`, `trap`, `timeout`, `oom` or `rejected`.
pub(crate) fn outcome_name(outcome: i32) -> String {
    pb::Outcome::try_from(outcome)
        .unwrap_or(pb::Outcome::Unspecified)
        .as_str_name()
        .trim_start_matches("OUTCOME_")
        .to_lowercase()
}
