//! The rollout area (`extension_rollouts`): an install serving up to four
//! versions at once with weights, its policy, its state and its audit
//! trail, as [`RolloutStore`]; and the per-version health figures the
//! evaluator reads from the execution log ([`VersionStats`]).
//!
//! Every change names the revision it read ([`RolloutStore::update_rollout`]):
//! a change against a revision that moved on, or a rollout that is no longer
//! active, is refused with [`StoreError::RevisionMismatch`], so two
//! control-plane replicas deciding about the same rollout cannot both act.
//!
//! [`StoreError::RevisionMismatch`]: super::StoreError::RevisionMismatch

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StoreResult;

/// Weights are parts of this many buckets.
pub const ROLLOUT_BUCKETS: u32 = 10_000;

/// A canary version and its share of the buckets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutVariant {
    pub version_id: Uuid,
    pub weight: u32,
}

/// One step of the schedule: the canaries' weights (in the order of the
/// rollout's variants), held for `hold_secs` before the next step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStep {
    pub weights: Vec<u32>,
    pub hold_secs: u64,
}

/// The schedule and the health budgets of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutPolicy {
    pub steps: Vec<RolloutStep>,
    /// How far a canary's failure rate (5xx, trap, timeout, out of memory)
    /// may exceed the stable version's, as a fraction (0.05 = 5 points).
    pub max_error_rate: f64,
    /// How far a canary's p99 latency may exceed the stable version's, in
    /// milliseconds; 0 = not checked.
    pub max_p99_ms: u64,
    /// Calls a canary must have served in the current step before its
    /// budgets are judged.
    pub min_calls: u32,
    /// At promotion, disable schedules whose endpoint the promoted version
    /// lacks instead of refusing (as an upgrade's option).
    #[serde(default)]
    pub disable_missing_schedules: bool,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    Active,
    Promoted,
    RolledBack,
    Aborted,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Active => "active",
            RolloutState::Promoted => "promoted",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<RolloutState> {
        Some(match s {
            "active" => RolloutState::Active,
            "promoted" => RolloutState::Promoted,
            "rolled_back" => RolloutState::RolledBack,
            "aborted" => RolloutState::Aborted,
            _ => return None,
        })
    }
}

/// One entry of a rollout's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutEvent {
    pub at: DateTime<Utc>,
    /// start | step | promote | rollback | abort
    pub action: String,
    /// Who acted: an operator's certificate subject, or `evaluator`.
    pub actor: String,
    pub detail: String,
}

/// One `extension_rollouts` row.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRow {
    pub id: Uuid,
    pub tenant_id: String,
    pub install_id: Uuid,
    pub registry_id: Uuid,
    pub stable_version_id: Uuid,
    pub variants: Vec<RolloutVariant>,
    pub policy: RolloutPolicy,
    pub state: RolloutState,
    pub step: u32,
    pub step_started_at: DateTime<Utc>,
    pub revision: i64,
    pub reason: Option<String>,
    pub history: Vec<RolloutEvent>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RolloutRow {
    /// The stable version's share: what the canaries leave.
    pub fn stable_weight(&self) -> u32 {
        ROLLOUT_BUCKETS.saturating_sub(self.variants.iter().map(|v| v.weight).sum())
    }
}

/// A new rollout, validated by the caller.
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub id: Uuid,
    pub tenant_id: String,
    pub install_id: Uuid,
    pub registry_id: Uuid,
    pub stable_version_id: Uuid,
    pub variants: Vec<RolloutVariant>,
    pub policy: RolloutPolicy,
    pub event: RolloutEvent,
}

/// A change to an active rollout.
#[derive(Debug, Clone)]
pub struct RolloutChange {
    pub state: RolloutState,
    pub step: u32,
    /// Whether the step's clock starts again now.
    pub restart_step: bool,
    pub variants: Vec<RolloutVariant>,
    pub reason: Option<String>,
    pub event: RolloutEvent,
}

/// One version's executions in a window, from the execution log.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionStats {
    pub version_id: Uuid,
    pub calls: u64,
    /// Calls that failed on the version's account: a 5xx answer, a trap,
    /// a timeout, out of memory (not a refusal while compiling, not a
    /// policy denial).
    pub failures: u64,
    /// The 99th percentile of the calls' durations, in milliseconds.
    pub p99_ms: u64,
}

#[async_trait]
pub trait RolloutStore: Send + Sync {
    /// `AlreadyExists` when the install has an active rollout.
    async fn create_rollout(&self, new: NewRollout) -> StoreResult<RolloutRow>;
    async fn find_rollout(&self, id: Uuid) -> StoreResult<Option<RolloutRow>>;
    /// The install's newest rollout, active or finished.
    async fn latest_rollout(&self, install_id: Uuid) -> StoreResult<Option<RolloutRow>>;
    /// Every active rollout of the fleet, oldest first.
    async fn active_rollouts(&self) -> StoreResult<Vec<RolloutRow>>;
    /// Applies `change` if the rollout is active at `revision`; the revision
    /// moves on by one and the event is appended to the history.
    /// `RevisionMismatch` otherwise, `NotFound` when there is no such rollout.
    async fn update_rollout(
        &self,
        id: Uuid,
        revision: i64,
        change: RolloutChange,
    ) -> StoreResult<RolloutRow>;
    /// Per version of `versions`, the tenant's executions of the extension
    /// that started at or after `since` (a version without any has zeros).
    async fn version_stats(
        &self,
        tenant_id: &str,
        registry_id: Uuid,
        versions: &[Uuid],
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<VersionStats>>;
}

/// Whether an execution-log row counts against its version (see
/// [`VersionStats::failures`]).
pub fn is_failure(status: &str, error: Option<&str>, http_status: Option<u64>) -> bool {
    if status == "policy_denied" || error == Some("component_compiling") {
        return false;
    }
    status == "timeout" || http_status.is_some_and(|s| s >= 500)
}

/// The nearest-rank 99th percentile of `durations` (sorted here).
pub fn p99(durations: &mut [u64]) -> u64 {
    if durations.is_empty() {
        return 0;
    }
    durations.sort_unstable();
    let rank = (durations.len() * 99).div_ceil(100).max(1);
    durations[rank - 1]
}
