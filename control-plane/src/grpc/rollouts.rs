//! Protobuf conversions of `Installs`' rollout methods (StartRollout,
//! GetRollout, PromoteRollout, AbortRollout) and of the rollout route a
//! resolution carries; the methods themselves are in `installs.rs`.

use annex_ops::tls::Peer;
use annex_proto::pb;

use super::installs::info_pb;
use super::registry::endpoint_pb;
use super::ts;
use crate::installs::Installs;
use crate::rollouts::{RolloutView, Route};
use crate::store::{RolloutPolicy, RolloutStep};

/// Who made a change, for the rollout's history.
pub(super) fn actor(peer: &Peer) -> String {
    format!("{}:{}", peer.role, peer.name)
}

pub(super) fn policy_from_pb(p: Option<pb::RolloutPolicy>, disable: bool) -> RolloutPolicy {
    let p = p.unwrap_or_default();
    RolloutPolicy {
        steps: p
            .steps
            .into_iter()
            .map(|s| RolloutStep {
                weights: s.weights,
                hold_secs: s.hold_secs,
            })
            .collect(),
        max_error_rate: p.max_error_rate,
        max_p99_ms: p.max_p99_ms,
        min_calls: p.min_calls,
        disable_missing_schedules: disable,
    }
}

fn policy_pb(p: &RolloutPolicy) -> pb::RolloutPolicy {
    pb::RolloutPolicy {
        steps: p
            .steps
            .iter()
            .map(|s| pb::RolloutStep {
                weights: s.weights.clone(),
                hold_secs: s.hold_secs,
            })
            .collect(),
        max_error_rate: p.max_error_rate,
        max_p99_ms: p.max_p99_ms,
        min_calls: p.min_calls,
    }
}

pub(super) fn rollout_pb(v: &RolloutView) -> pb::Rollout {
    let r = &v.row;
    let weight = |i: usize| {
        if i == 0 {
            r.stable_weight()
        } else {
            r.variants.get(i - 1).map_or(0, |c| c.weight)
        }
    };
    pb::Rollout {
        rollout_id: r.id.to_string(),
        install_id: r.install_id.to_string(),
        tenant_id: r.tenant_id.clone(),
        state: r.state.as_str().to_owned(),
        step: r.step,
        step_started_at: ts(r.step_started_at),
        versions: v
            .versions
            .iter()
            .enumerate()
            .map(|(i, version)| pb::RolloutVersion {
                version_id: version.id.to_string(),
                version: version.version.clone(),
                weight: weight(i),
                content_hash: version.bundle.content_hash.clone(),
                stable: i == 0,
                granted_caps: annex_bundle::capability::granted(&version.capabilities)
                    .unwrap_or_default(),
            })
            .collect(),
        policy: Some(policy_pb(&r.policy)),
        reason: r.reason.clone().unwrap_or_default(),
        history: r
            .history
            .iter()
            .map(|e| pb::RolloutEvent {
                at: ts(e.at),
                action: e.action.clone(),
                actor: e.actor.clone(),
                detail: e.detail.clone(),
            })
            .collect(),
        revision: r.revision,
        created_at: ts(r.created_at),
        updated_at: ts(r.updated_at),
        health: v
            .health
            .iter()
            .zip(&v.versions)
            .map(|(h, version)| pb::VersionHealth {
                version: version.version.clone(),
                calls: h.calls,
                failures: h.failures,
                p99_ms: h.p99_ms,
            })
            .collect(),
    }
}

/// The route of a resolution: every arm with its own execution grant.
pub(super) fn route_pb(installs: &Installs, route: &Route) -> pb::RolloutRoute {
    pb::RolloutRoute {
        rollout_id: route.id.to_string(),
        revision: route.revision,
        arms: route
            .arms
            .iter()
            .map(|arm| {
                let (grant, expires) = installs.issue_grant(&arm.view);
                pb::RolloutArm {
                    weight: arm.weight,
                    install: Some(info_pb(&arm.view)),
                    endpoints: arm.view.version.endpoints.iter().map(endpoint_pb).collect(),
                    signature: arm.view.version.bundle.signature.clone(),
                    signing_key_id: arm.view.version.bundle.signing_key_id.clone(),
                    execution_grant: grant,
                    grant_expires_at: ts(expires),
                }
            })
            .collect(),
    }
}
