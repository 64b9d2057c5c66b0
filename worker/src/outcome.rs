//! The outcome of one execution (`ok | trap | timeout | oom | rejected`)
//! and its protobuf value. A plain value shared by the execution path,
//! which decides it, and the metrics, which count it; it knows nothing of
//! either.

use annex_proto::pb;

/// How one execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Trap,
    Timeout,
    Oom,
    Rejected,
}

impl Outcome {
    /// The metric label and the wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
            Outcome::Oom => "oom",
            Outcome::Rejected => "rejected",
        }
    }
}

impl From<Outcome> for pb::Outcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Ok => pb::Outcome::Ok,
            Outcome::Trap => pb::Outcome::Trap,
            Outcome::Timeout => pb::Outcome::Timeout,
            Outcome::Oom => pb::Outcome::Oom,
            Outcome::Rejected => pb::Outcome::Rejected,
        }
    }
}
