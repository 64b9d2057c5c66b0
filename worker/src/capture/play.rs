//! Playback: the [`Player`] answers a replayed guest from its tape. Host
//! calls must come in the recorded order with the recorded arguments;
//! clock readings and random bytes are streams read in order. The first
//! request the tape cannot answer is the replay's [`Divergence`]; after
//! it, host calls fail as unavailable and streams answer zeros, so the
//! guest runs to an end and its response is still shown.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use parking_lot::Mutex;
use serde::Serialize;

use super::tape::{Answer, Ask, Tape};

/// Where a replay first left its tape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// The host call's position (0-based) for a host call; the reading's
    /// for a clock or random stream.
    pub index: usize,
    /// What the tape holds there (`None`: the tape had ended).
    pub recorded: Option<String>,
    /// What the guest asked for.
    pub asked: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.recorded {
            Some(recorded) => write!(
                f,
                "at host call #{}: the guest asked for {}, the capture recorded {}",
                self.index, self.asked, recorded
            ),
            None => write!(
                f,
                "at #{}: the guest asked for {}, which the capture does not hold",
                self.index, self.asked
            ),
        }
    }
}

/// One replay's position on its tape.
pub(crate) struct Player {
    state: Mutex<Playing>,
}

struct Playing {
    tape: Tape,
    secure: Vec<u8>,
    insecure: Vec<u8>,
    secrets: BTreeMap<String, String>,
    next_call: usize,
    next_wall: usize,
    next_monotonic: usize,
    secure_at: usize,
    insecure_at: usize,
    divergence: Option<Divergence>,
}

impl Player {
    /// A player over `tape`, answering secrets with `secrets` (the revealed
    /// values, or placeholders).
    pub(crate) fn new(tape: Tape, secrets: BTreeMap<String, String>) -> Player {
        let secure = B64.decode(&tape.secure_random).unwrap_or_default();
        let insecure = B64.decode(&tape.insecure_random).unwrap_or_default();
        Player {
            state: Mutex::new(Playing {
                tape,
                secure,
                insecure,
                secrets,
                next_call: 0,
                next_wall: 0,
                next_monotonic: 0,
                secure_at: 0,
                insecure_at: 0,
                divergence: None,
            }),
        }
    }

    pub(crate) fn insecure_seed(&self) -> u128 {
        self.state.lock().tape.insecure_seed.parse().unwrap_or(0)
    }

    /// The first divergence, if any.
    pub(crate) fn divergence(&self) -> Option<Divergence> {
        self.state.lock().divergence.clone()
    }

    /// The guest ended before asking for every recorded host call: a
    /// divergence at the first call it did not make.
    pub(crate) fn unasked_divergence(&self) -> Option<Divergence> {
        let s = self.state.lock();
        s.tape.calls.get(s.next_call).map(|e| Divergence {
            index: s.next_call,
            recorded: Some(e.ask.describe()),
            asked: "nothing more (the guest ended)".to_string(),
        })
    }

    fn diverge(state: &mut Playing, divergence: Divergence) {
        if state.divergence.is_none() {
            tracing::debug!(%divergence, "replay diverged");
            state.divergence = Some(divergence);
        }
    }

    /// The recorded answer to `ask`, or `None` (a divergence) when the
    /// next recorded call is another or the replay already diverged.
    pub(crate) fn call(&self, ask: &Ask) -> Option<Answer> {
        let mut s = self.state.lock();
        let index = s.next_call;
        if s.divergence.is_some() {
            return None;
        }
        match s.tape.calls.get(index) {
            Some(exchange) if exchange.ask == *ask => {
                let answer = exchange.answer.clone();
                s.next_call += 1;
                Some(answer)
            }
            recorded => {
                let recorded = recorded.map(|e| e.ask.describe());
                Self::diverge(
                    &mut s,
                    Divergence {
                        index,
                        recorded,
                        asked: ask.describe(),
                    },
                );
                None
            }
        }
    }

    /// A recorded answer of the wrong kind for its ask (a tape edited by
    /// hand): reported as a divergence at the call before it.
    pub(crate) fn malformed(&self, ask: &Ask) {
        let mut s = self.state.lock();
        let index = s.next_call.saturating_sub(1);
        Self::diverge(
            &mut s,
            Divergence {
                index,
                recorded: Some("an answer of another kind".to_string()),
                asked: ask.describe(),
            },
        );
    }

    /// The secret values for a secrets answer with `keys`.
    pub(crate) fn secret_values(&self, keys: &[String]) -> BTreeMap<String, String> {
        let s = self.state.lock();
        keys.iter()
            .map(|k| {
                let v = s
                    .secrets
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| SEALED.to_string());
                (k.clone(), v)
            })
            .collect()
    }

    pub(crate) fn wall_clock(&self) -> u64 {
        let mut s = self.state.lock();
        let i = s.next_wall;
        s.next_wall += 1;
        match s.tape.wall_clock.get(i).copied() {
            Some(v) => v,
            None => {
                let last = s.tape.wall_clock.last().copied().unwrap_or(0);
                Self::diverge(&mut s, stream_end(i, "a wall-clock reading"));
                last
            }
        }
    }

    pub(crate) fn monotonic_clock(&self) -> u64 {
        let mut s = self.state.lock();
        let i = s.next_monotonic;
        s.next_monotonic += 1;
        match s.tape.monotonic_clock.get(i).copied() {
            Some(v) => v,
            None => {
                let last = s.tape.monotonic_clock.last().copied().unwrap_or(0);
                Self::diverge(&mut s, stream_end(i, "a monotonic-clock reading"));
                last
            }
        }
    }

    pub(crate) fn random(&self, secure: bool, out: &mut [u8]) {
        let mut s = self.state.lock();
        let (at, len) = if secure {
            (s.secure_at, s.secure.len())
        } else {
            (s.insecure_at, s.insecure.len())
        };
        if at + out.len() <= len {
            let source = if secure { &s.secure } else { &s.insecure };
            out.copy_from_slice(&source[at..at + out.len()]);
        } else {
            out.fill(0);
            let what = if secure { "secure" } else { "insecure" };
            Self::diverge(
                &mut s,
                stream_end(at, &format!("{} {what} random bytes", out.len())),
            );
        }
        if secure {
            s.secure_at += out.len();
        } else {
            s.insecure_at += out.len();
        }
    }
}

/// The value a replay's guest sees for a secret whose value was not
/// revealed to the operator.
pub const SEALED: &str = "(sealed)";

fn stream_end(index: usize, what: &str) -> Divergence {
    Divergence {
        index,
        recorded: None,
        asked: what.to_string(),
    }
}
