//! Gradual rollouts (docs/design/rollouts.md): an install serves its own
//! version (the stable one) and up to three canaries at once, by weight in
//! buckets of [`ROLLOUT_BUCKETS`]; edges split calls by a hash of (install,
//! rollout id, sticky key) from the weights in their cached resolution.
//!
//! [`Rollouts`] starts, promotes and aborts rollouts for operators and runs
//! the evaluator: every tick, on every replica, each active rollout's
//! canaries are compared with the stable version from the execution log
//! since the step began; a breached budget sets every canary's weight to 0
//! (rolled back, the reason recorded), a step held long enough moves to the
//! next, and a last step that gives one canary everything promotes it. Each
//! decision is a conditional update on the rollout's revision, so of several
//! replicas deciding at once only one acts. Every change is announced like
//! an install change (the invalidation broadcast) and shows in the routing
//! snapshot's rollout marks, which edges following other replicas see.
//!
//! Canaries follow the rules of an upgrade: each version's signature is
//! checked again, schedules must map onto it (checked at start, applied at
//! promotion), config and secrets are the install's, and each version runs
//! with the grants its own manifest asks for. It does not run executions.

use std::sync::Arc;
use std::time::Duration;

use annex_proto::domain::TenantId;
use annex_proto::{AnnexError, ErrorCode};
use chrono::Utc;
use uuid::Uuid;

use crate::installs::Installs;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::{
    InstallView, NewRollout, ROLLOUT_BUCKETS, RolloutChange, RolloutEvent, RolloutPolicy,
    RolloutRow, RolloutState, RolloutVariant, Store, StoreError, VersionRow, VersionStats,
};

/// How often each replica evaluates the active rollouts by default.
pub(crate) const DEFAULT_TICK: Duration = Duration::from_secs(1);
/// An install serves at most four versions at once: its own and three canaries.
pub(crate) const MAX_CANARIES: usize = 3;
/// Steps in one schedule, at most.
const MAX_STEPS: usize = 20;
/// Longest hold of one step: a week.
const MAX_HOLD_SECS: u64 = 7 * 24 * 3600;
/// Health is judged on the current step's calls, at most this far back: the
/// aggregate's cost is bounded by the install's traffic over the window,
/// not by the length of a step, and a canary that went bad late in a long
/// step is not diluted by its good hours.
const HEALTH_WINDOW: chrono::Duration = chrono::Duration::minutes(10);

/// The evaluator's actor name in a rollout's history.
const EVALUATOR: &str = "evaluator";

/// A rollout with its versions (the stable one first, then the canaries in
/// the rollout's order) and their health in the current step.
#[derive(Debug, Clone)]
pub(crate) struct RolloutView {
    pub(crate) row: RolloutRow,
    pub(crate) versions: Vec<VersionRow>,
    pub(crate) health: Vec<VersionStats>,
}

/// One arm of an install's split, for the resolution edges cache.
#[derive(Debug, Clone)]
pub(crate) struct Arm {
    pub(crate) weight: u32,
    /// The install as this version runs it (its version, its grants).
    pub(crate) view: InstallView,
}

/// An active rollout as edges route it.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) id: Uuid,
    pub(crate) revision: i64,
    /// In bucket order: the canaries, then the stable version.
    pub(crate) arms: Vec<Arm>,
}

/// A start request, decoded.
#[derive(Debug, Clone)]
pub(crate) struct StartRollout {
    pub(crate) tenant: TenantId,
    pub(crate) extension: String,
    pub(crate) versions: Vec<String>,
    pub(crate) policy: RolloutPolicy,
}

pub(crate) struct Rollouts {
    store: Arc<dyn Store>,
    installs: Arc<Installs>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

fn invalid(msg: impl Into<String>) -> AnnexError {
    AnnexError::invalid(msg.into())
}

/// Checks a policy for `canaries` canary versions.
pub(crate) fn check_policy(policy: &RolloutPolicy, canaries: usize) -> Result<(), AnnexError> {
    if policy.steps.is_empty() || policy.steps.len() > MAX_STEPS {
        return Err(invalid(format!("a rollout has 1 to {MAX_STEPS} steps")));
    }
    for (i, step) in policy.steps.iter().enumerate() {
        if step.weights.len() != canaries {
            return Err(invalid(format!(
                "step {} gives {} weights for {canaries} canary versions",
                i + 1,
                step.weights.len()
            )));
        }
        let sum: u64 = step.weights.iter().map(|w| u64::from(*w)).sum();
        if sum > u64::from(ROLLOUT_BUCKETS) {
            return Err(invalid(format!(
                "step {} gives the canaries {sum} of {ROLLOUT_BUCKETS} buckets",
                i + 1
            )));
        }
        if step.hold_secs > MAX_HOLD_SECS {
            return Err(invalid(format!(
                "step {} holds longer than {MAX_HOLD_SECS} s",
                i + 1
            )));
        }
    }
    if !(policy.max_error_rate.is_finite() && (0.0..=1.0).contains(&policy.max_error_rate)) {
        return Err(invalid("max_error_rate must be 0 to 1"));
    }
    if policy.max_p99_ms > 3_600_000 {
        return Err(invalid("max_p99_ms must be at most 3600000"));
    }
    if policy.min_calls == 0 || policy.min_calls > 1_000_000 {
        return Err(invalid("min_calls must be 1 to 1000000"));
    }
    Ok(())
}

/// The first canary whose budgets are breached, with the reason:
/// `stats[0]` is the stable version's, `stats[i + 1]` canary `i`'s.
pub(crate) fn breach(
    policy: &RolloutPolicy,
    names: &[String],
    stats: &[VersionStats],
) -> Option<(usize, String)> {
    let stable = stats.first()?;
    let rate = |s: &VersionStats| {
        if s.calls == 0 {
            0.0
        } else {
            s.failures as f64 / s.calls as f64
        }
    };
    let stable_rate = rate(stable);
    for (i, canary) in stats.iter().enumerate().skip(1) {
        if canary.calls < u64::from(policy.min_calls) {
            continue;
        }
        let name = names.get(i).map_or("?", String::as_str);
        let canary_rate = rate(canary);
        if canary_rate - stable_rate > policy.max_error_rate {
            return Some((
                i - 1,
                format!(
                    "canary {name}: failure rate {:.1}% ({} of {} calls) exceeds the stable version's {:.1}% by more than {:.1} points",
                    canary_rate * 100.0,
                    canary.failures,
                    canary.calls,
                    stable_rate * 100.0,
                    policy.max_error_rate * 100.0
                ),
            ));
        }
        if policy.max_p99_ms > 0
            && stable.calls >= u64::from(policy.min_calls)
            && canary.p99_ms > stable.p99_ms.saturating_add(policy.max_p99_ms)
        {
            return Some((
                i - 1,
                format!(
                    "canary {name}: p99 latency {} ms exceeds the stable version's {} ms by more than {} ms",
                    canary.p99_ms, stable.p99_ms, policy.max_p99_ms
                ),
            ));
        }
    }
    None
}

/// Whether every canary with weight in the current step has served the
/// policy's `min_calls` (`stats` as for [`breach`]), so the step may pass.
pub(crate) fn served_enough(row: &RolloutRow, stats: &[VersionStats]) -> bool {
    row.variants.iter().enumerate().all(|(i, v)| {
        v.weight == 0
            || stats
                .get(i + 1)
                .is_some_and(|s| s.calls >= u64::from(row.policy.min_calls))
    })
}

/// Where the health window of `row` starts.
fn health_since(row: &RolloutRow) -> chrono::DateTime<Utc> {
    row.step_started_at.max(Utc::now() - HEALTH_WINDOW)
}

fn store_error(e: StoreError) -> AnnexError {
    match e {
        StoreError::AlreadyExists(_) => AnnexError::new(
            ErrorCode::RolloutActive,
            "the install already has an active rollout",
        ),
        StoreError::RevisionMismatch => AnnexError::new(
            ErrorCode::RevisionMismatch,
            "the rollout changed meanwhile; read it again",
        ),
        e => e.into(),
    }
}

impl Rollouts {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        installs: Arc<Installs>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Rollouts {
        Rollouts {
            store,
            installs,
            registry,
            metrics,
        }
    }

    pub(crate) async fn start(
        &self,
        req: StartRollout,
        actor: &str,
    ) -> Result<RolloutView, AnnexError> {
        let view = self.installs.view(&req.tenant, &req.extension).await?;
        if req.versions.is_empty() || req.versions.len() > MAX_CANARIES {
            return Err(invalid(format!(
                "a rollout has 1 to {MAX_CANARIES} canary versions"
            )));
        }
        check_policy(&req.policy, req.versions.len())?;
        let mut canaries: Vec<VersionRow> = Vec::new();
        for v in &req.versions {
            let target = self
                .registry
                .find_version(&view.extension.id.to_string(), v.trim())
                .await?;
            if target.id == view.install.version_id {
                return Err(invalid(format!("{v} is the install's version already")));
            }
            if canaries.iter().any(|c| c.id == target.id) {
                return Err(invalid(format!("{v} is named twice")));
            }
            // The rules of an upgrade, checked now: the signature holds, the
            // manifest's grants are valid, schedules map onto the version.
            self.installs
                .check_upgrade(&view, &target, req.policy.disable_missing_schedules)
                .await?;
            canaries.push(target);
        }
        let first = &req.policy.steps[0].weights;
        let names: Vec<&str> = canaries.iter().map(|c| c.version.as_str()).collect();
        let row = self
            .store
            .create_rollout(NewRollout {
                id: Uuid::new_v4(),
                tenant_id: view.install.tenant_id.clone(),
                install_id: view.install.id,
                registry_id: view.install.registry_id,
                stable_version_id: view.install.version_id,
                variants: canaries
                    .iter()
                    .zip(first)
                    .map(|(c, w)| RolloutVariant {
                        version_id: c.id,
                        weight: *w,
                    })
                    .collect(),
                policy: req.policy.clone(),
                event: RolloutEvent {
                    at: Utc::now(),
                    action: "start".into(),
                    actor: actor.to_owned(),
                    detail: format!(
                        "from {} to {} at {:?}",
                        view.version.version,
                        names.join(", "),
                        first
                    ),
                },
            })
            .await
            .map_err(store_error)?;
        tracing::info!(
            tenant = %req.tenant, install = %row.install_id, rollout = %row.id,
            from = %view.version.version, to = %names.join(","), actor, "rollout started"
        );
        self.changed("start", &row);
        self.installs.prewarm_now().await;
        self.with_versions(row).await
    }

    /// The install's active rollout, or its newest finished one.
    pub(crate) async fn get(
        &self,
        tenant: &TenantId,
        extension: &str,
    ) -> Result<RolloutView, AnnexError> {
        let view = self.installs.view(tenant, extension).await?;
        let row = self
            .store
            .latest_rollout(view.install.id)
            .await?
            .ok_or_else(|| not_found(tenant, extension))?;
        self.with_versions(row).await
    }

    async fn active(&self, tenant: &TenantId, extension: &str) -> Result<RolloutRow, AnnexError> {
        let view = self.installs.view(tenant, extension).await?;
        self.store
            .latest_rollout(view.install.id)
            .await?
            .filter(|r| r.state == RolloutState::Active)
            .ok_or_else(|| not_found(tenant, extension))
    }

    pub(crate) async fn promote(
        &self,
        tenant: &TenantId,
        extension: &str,
        version: Option<&str>,
        actor: &str,
    ) -> Result<RolloutView, AnnexError> {
        let row = self.active(tenant, extension).await?;
        let chosen = match version.map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => {
                let target = self
                    .registry
                    .find_version(&row.registry_id.to_string(), v)
                    .await?;
                if !row.variants.iter().any(|c| c.version_id == target.id) {
                    return Err(invalid(format!("{v} is not a canary of this rollout")));
                }
                target.id
            }
            None => {
                row.variants
                    .iter()
                    .max_by_key(|c| c.weight)
                    .ok_or_else(|| invalid("the rollout has no canary"))?
                    .version_id
            }
        };
        let row = self.promote_row(row, chosen, actor).await?;
        self.with_versions(row).await
    }

    pub(crate) async fn abort(
        &self,
        tenant: &TenantId,
        extension: &str,
        reason: &str,
        actor: &str,
    ) -> Result<RolloutView, AnnexError> {
        let row = self.active(tenant, extension).await?;
        let reason = match reason.trim() {
            "" => "aborted by an operator".to_owned(),
            r => r.chars().take(500).collect(),
        };
        let row = self
            .finish(row, RolloutState::Aborted, "abort", actor, reason, |_| 0)
            .await?;
        self.with_versions(row).await
    }

    /// Ends `row` in `state` with the weights `weight` gives each canary.
    async fn finish(
        &self,
        row: RolloutRow,
        state: RolloutState,
        action: &str,
        actor: &str,
        reason: String,
        weight: impl Fn(&RolloutVariant) -> u32,
    ) -> Result<RolloutRow, AnnexError> {
        let variants = row
            .variants
            .iter()
            .map(|v| RolloutVariant {
                version_id: v.version_id,
                weight: weight(v),
            })
            .collect();
        let done = self
            .store
            .update_rollout(
                row.id,
                row.revision,
                RolloutChange {
                    state,
                    step: row.step,
                    restart_step: false,
                    variants,
                    reason: Some(reason.clone()),
                    event: RolloutEvent {
                        at: Utc::now(),
                        action: action.to_owned(),
                        actor: actor.to_owned(),
                        detail: reason.clone(),
                    },
                },
            )
            .await
            .map_err(store_error)?;
        tracing::info!(
            tenant = %done.tenant_id, install = %done.install_id, rollout = %done.id,
            state = done.state.as_str(), actor, reason = %reason, "rollout ended"
        );
        self.changed(action, &done);
        Ok(done)
    }

    /// Makes `version` the install's version (as an upgrade) and ends the rollout.
    async fn promote_row(
        &self,
        row: RolloutRow,
        version: Uuid,
        actor: &str,
    ) -> Result<RolloutRow, AnnexError> {
        let tenant = TenantId::parse(&row.tenant_id)?;
        let install = row.install_id.to_string();
        let view = self.installs.view(&tenant, &install).await?;
        let target = self
            .store
            .get_version_by_id(version)
            .await?
            .ok_or_else(|| AnnexError::new(ErrorCode::VersionNotFound, "canary version gone"))?;
        let disable = row.policy.disable_missing_schedules;
        // Checked before the rollout ends, so a refusal leaves it running.
        self.installs.check_upgrade(&view, &target, disable).await?;
        let done = self
            .finish(
                row,
                RolloutState::Promoted,
                "promote",
                actor,
                format!("promoted {}", target.version),
                |v| {
                    if v.version_id == version {
                        ROLLOUT_BUCKETS
                    } else {
                        0
                    }
                },
            )
            .await?;
        self.installs
            .upgrade(&tenant, &install, &target.version, disable)
            .await?;
        Ok(done)
    }

    /// The versions of `row` and their health in the current step.
    async fn with_versions(&self, row: RolloutRow) -> Result<RolloutView, AnnexError> {
        let ids: Vec<Uuid> = std::iter::once(row.stable_version_id)
            .chain(row.variants.iter().map(|v| v.version_id))
            .collect();
        let mut versions = Vec::with_capacity(ids.len());
        for id in &ids {
            let v = self.store.get_version_by_id(*id).await?.ok_or_else(|| {
                AnnexError::new(ErrorCode::VersionNotFound, format!("version {id} gone"))
            })?;
            versions.push(v);
        }
        let health = self
            .store
            .version_stats(&row.tenant_id, row.registry_id, &ids, health_since(&row))
            .await?;
        Ok(RolloutView {
            row,
            versions,
            health,
        })
    }

    /// How edges split `view`'s calls, while it has an active rollout.
    pub(crate) async fn route(&self, view: &InstallView) -> Result<Option<Route>, AnnexError> {
        let Some(row) = self
            .store
            .latest_rollout(view.install.id)
            .await?
            .filter(|r| r.state == RolloutState::Active)
        else {
            return Ok(None);
        };
        if row.stable_version_id != view.install.version_id {
            // The install moved on under the rollout (an upgrade by hand):
            // its version is what runs.
            return Ok(None);
        }
        let mut arms = Vec::new();
        for v in row.variants.iter().filter(|v| v.weight > 0) {
            let Some(version) = self.store.get_version_by_id(v.version_id).await? else {
                continue;
            };
            let mut arm = view.clone();
            arm.install.version_id = version.id;
            arm.install.granted_caps = annex_bundle::capability::granted(&version.capabilities)
                .map_err(|e| AnnexError::new(ErrorCode::InvalidManifest, e.to_string()))?;
            arm.version = version;
            arms.push(Arm {
                weight: v.weight,
                view: arm,
            });
        }
        arms.push(Arm {
            weight: row.stable_weight(),
            view: view.clone(),
        });
        Ok(Some(Route {
            id: row.id,
            revision: row.revision,
            arms,
        }))
    }

    /// One evaluation of every active rollout.
    pub(crate) async fn tick(&self) -> Result<(), AnnexError> {
        for row in self.store.active_rollouts().await? {
            let id = row.id;
            match self.evaluate(row).await {
                Ok(()) => {}
                // Another replica acted first: its decision stands.
                Err(e) if e.code == ErrorCode::RevisionMismatch => {}
                Err(e) => tracing::warn!(rollout = %id, error = %e, "evaluating a rollout"),
            }
        }
        Ok(())
    }

    async fn evaluate(&self, row: RolloutRow) -> Result<(), AnnexError> {
        let view = self.with_versions(row).await?;
        let names: Vec<String> = view.versions.iter().map(|v| v.version.clone()).collect();
        let row = view.row;
        let live: Vec<VersionStats> = view
            .health
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // A canary at weight 0 is not judged in this step.
                if i > 0 && row.variants.get(i - 1).is_some_and(|v| v.weight == 0) {
                    VersionStats {
                        calls: 0,
                        ..s.clone()
                    }
                } else {
                    s.clone()
                }
            })
            .collect();
        if let Some((_, reason)) = breach(&row.policy, &names, &live) {
            tracing::warn!(
                tenant = %row.tenant_id, install = %row.install_id, rollout = %row.id,
                reason = %reason, "rollout health budget breached; rolling back"
            );
            self.finish(
                row,
                RolloutState::RolledBack,
                "rollback",
                EVALUATOR,
                reason,
                |_| 0,
            )
            .await?;
            return Ok(());
        }
        let step = row.step as usize;
        let Some(current) = row.policy.steps.get(step) else {
            return Ok(());
        };
        if !served_enough(&row, &live) {
            // No step passes on time alone: each canary must have been judged.
            return Ok(());
        }
        let held = Utc::now() - row.step_started_at;
        if held < chrono::Duration::seconds(i64::try_from(current.hold_secs).unwrap_or(i64::MAX)) {
            return Ok(());
        }
        if let Some(next) = row.policy.steps.get(step + 1) {
            let variants: Vec<RolloutVariant> = row
                .variants
                .iter()
                .zip(&next.weights)
                .map(|(v, w)| RolloutVariant {
                    version_id: v.version_id,
                    weight: *w,
                })
                .collect();
            let done = self
                .store
                .update_rollout(
                    row.id,
                    row.revision,
                    RolloutChange {
                        state: RolloutState::Active,
                        step: row.step + 1,
                        restart_step: true,
                        variants,
                        reason: None,
                        event: RolloutEvent {
                            at: Utc::now(),
                            action: "step".into(),
                            actor: EVALUATOR.into(),
                            detail: format!("step {} at {:?}", step + 2, next.weights),
                        },
                    },
                )
                .await
                .map_err(store_error)?;
            tracing::info!(
                tenant = %done.tenant_id, install = %done.install_id, rollout = %done.id,
                step = done.step + 1, weights = ?next.weights, "rollout stepped"
            );
            self.changed("step", &done);
            return Ok(());
        }
        // The last step held: promote the canary it gives everything, if any
        // (otherwise an operator promotes or aborts).
        if let Some(winner) = row.variants.iter().find(|v| v.weight == ROLLOUT_BUCKETS) {
            let version = winner.version_id;
            self.promote_row(row, version, EVALUATOR).await?;
        }
        Ok(())
    }

    /// Evaluates every `tick` until `stop` turns true.
    pub(crate) async fn run(
        self: Arc<Self>,
        tick: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = interval.tick() => {}
            }
            if let Err(e) = self.tick().await {
                tracing::debug!(error = %e, "evaluating rollouts");
            }
        }
    }

    fn changed(&self, action: &str, row: &RolloutRow) {
        self.metrics.rollout_change(action);
        self.installs
            .announce("rollout", &row.tenant_id, row.install_id, row.registry_id);
    }
}

fn not_found(tenant: &TenantId, extension: &str) -> AnnexError {
    AnnexError::new(
        ErrorCode::RolloutNotFound,
        format!("tenant {tenant}'s install of {extension} has no rollout"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RolloutStep;

    fn policy() -> RolloutPolicy {
        RolloutPolicy {
            steps: vec![RolloutStep {
                weights: vec![1000],
                hold_secs: 60,
            }],
            max_error_rate: 0.05,
            max_p99_ms: 100,
            min_calls: 10,
            disable_missing_schedules: false,
        }
    }

    fn stats(calls: u64, failures: u64, p99_ms: u64) -> VersionStats {
        VersionStats {
            version_id: Uuid::nil(),
            calls,
            failures,
            p99_ms,
        }
    }

    #[test]
    fn a_canary_is_judged_against_the_stable_version_once_it_has_enough_calls() {
        let names = vec!["1.0.0".to_owned(), "1.1.0".to_owned()];
        let p = policy();
        // Too few calls: not judged, however bad.
        assert_eq!(
            breach(&p, &names, &[stats(100, 0, 5), stats(9, 9, 5)]),
            None
        );
        // Failing on every call.
        let (i, reason) =
            breach(&p, &names, &[stats(100, 0, 5), stats(10, 10, 5)]).expect("a breach");
        assert_eq!(i, 0);
        assert!(
            reason.contains("1.1.0") && reason.contains("100.0%"),
            "{reason}"
        );
        // As bad as the stable version: within budget.
        assert_eq!(
            breach(&p, &names, &[stats(100, 10, 5), stats(100, 12, 5)]),
            None
        );
        // Slower by more than the budget.
        let (_, reason) =
            breach(&p, &names, &[stats(100, 0, 5), stats(100, 0, 200)]).expect("a breach");
        assert!(reason.contains("p99"), "{reason}");
    }

    #[test]
    fn a_step_passes_only_once_every_canary_with_weight_has_served_enough() {
        let now = Utc::now();
        let row = RolloutRow {
            id: Uuid::nil(),
            tenant_id: "t".into(),
            install_id: Uuid::nil(),
            registry_id: Uuid::nil(),
            stable_version_id: Uuid::nil(),
            variants: vec![
                RolloutVariant {
                    version_id: Uuid::nil(),
                    weight: 1000,
                },
                RolloutVariant {
                    version_id: Uuid::nil(),
                    weight: 0,
                },
            ],
            policy: policy(),
            state: RolloutState::Active,
            step: 0,
            step_started_at: now,
            revision: 1,
            reason: None,
            history: vec![],
            created_at: now,
            updated_at: now,
        };
        let idle = stats(0, 0, 0);
        assert!(!served_enough(
            &row,
            &[stats(100, 0, 1), stats(9, 0, 1), idle.clone()]
        ));
        // The canary at weight 0 is not waited for.
        assert!(served_enough(
            &row,
            &[stats(100, 0, 1), stats(10, 0, 1), idle]
        ));
    }

    #[test]
    fn policies_are_checked() {
        assert!(check_policy(&policy(), 1).is_ok());
        assert!(check_policy(&policy(), 2).is_err());
        let mut p = policy();
        p.steps[0].weights = vec![10_001];
        assert!(check_policy(&p, 1).is_err());
        let mut p = policy();
        p.max_error_rate = f64::NAN;
        assert!(check_policy(&p, 1).is_err());
        let mut p = policy();
        p.steps.clear();
        assert!(check_policy(&p, 1).is_err());
    }
}
