//! `annex rollout start|status|promote|abort`: the tenant's install serving canary
//! versions beside its own (docs/design/rollouts.md). Each is one `Installs` call scoped to
//! `--tenant`; `--json` prints the rollout as the control plane returns it.

use annex_proto::pb;
use anyhow::Context as _;
use serde_json::{Value, json};

use super::Context;
use super::installs::install_ref;
use crate::cli::{RolloutCommand, RolloutStartArgs};
use crate::client::remote;
use crate::failure::usage;
use crate::output::{Report, fields, table, time, time_json};

pub async fn run(cx: &Context, cmd: RolloutCommand) -> anyhow::Result<Report> {
    match cmd {
        RolloutCommand::Start(args) => start(cx, args).await,
        RolloutCommand::Status { extension } => status(cx, &extension).await,
        RolloutCommand::Promote { extension, version } => {
            promote(cx, &extension, version.unwrap_or_default()).await
        }
        RolloutCommand::Abort { extension, reason } => {
            abort(cx, &extension, reason.unwrap_or_default()).await
        }
    }
}

/// The policy the arguments describe; usage errors for what cannot work.
fn policy(args: &RolloutStartArgs) -> anyhow::Result<pb::RolloutPolicy> {
    let canaries = args.versions.len();
    let mut steps = Vec::with_capacity(args.steps.len());
    for (i, step) in args.steps.iter().enumerate() {
        if step.weights.len() != canaries {
            return Err(usage(format!(
                "step {} names {} percentages for {canaries} canary versions (join one per canary with +)",
                i + 1,
                step.weights.len()
            )));
        }
        steps.push(pb::RolloutStep {
            weights: step.weights.clone(),
            hold_secs: step.hold.unwrap_or(args.every).as_secs(),
        });
    }
    if !(0.0..=100.0).contains(&args.max_error_rate) {
        return Err(usage("--max-error-rate is percentage points, 0 to 100"));
    }
    Ok(pb::RolloutPolicy {
        steps,
        max_error_rate: args.max_error_rate / 100.0,
        max_p99_ms: args.max_p99_ms,
        min_calls: args.min_calls,
    })
}

async fn start(cx: &Context, args: RolloutStartArgs) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let policy = policy(&args)?;
    let cp = cx.connect().await?;
    let rollout = cp
        .installs()
        .start_rollout(pb::StartRolloutRequest {
            install: Some(install_ref(&tenant, &args.extension)),
            versions: args.versions.clone(),
            policy: Some(policy),
            disable_missing_schedules: args.disable_missing_schedules,
        })
        .await
        .map_err(remote)
        .with_context(|| {
            format!(
                "starting a rollout of {} to {} for tenant {tenant}",
                args.extension,
                args.versions.join(", ")
            )
        })?
        .into_inner();
    Ok(report(
        format!(
            "started rollout {} of {}",
            rollout.rollout_id, args.extension
        ),
        &rollout,
    ))
}

async fn status(cx: &Context, extension: &str) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let rollout = cp
        .installs()
        .get_rollout(install_ref(&tenant, extension))
        .await
        .map_err(remote)
        .with_context(|| format!("reading the rollout of {extension} for tenant {tenant}"))?
        .into_inner();
    Ok(report(String::new(), &rollout))
}

async fn promote(cx: &Context, extension: &str, version: String) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let rollout = cp
        .installs()
        .promote_rollout(pb::PromoteRolloutRequest {
            install: Some(install_ref(&tenant, extension)),
            version,
        })
        .await
        .map_err(remote)
        .with_context(|| format!("promoting the rollout of {extension} for tenant {tenant}"))?
        .into_inner();
    Ok(report(format!("promoted: {}", rollout.reason), &rollout))
}

async fn abort(cx: &Context, extension: &str, reason: String) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let rollout = cp
        .installs()
        .abort_rollout(pb::AbortRolloutRequest {
            install: Some(install_ref(&tenant, extension)),
            reason,
        })
        .await
        .map_err(remote)
        .with_context(|| format!("aborting the rollout of {extension} for tenant {tenant}"))?
        .into_inner();
    Ok(report(
        format!("aborted rollout {}", rollout.rollout_id),
        &rollout,
    ))
}

fn percent(weight: u32) -> String {
    format!("{:.2}%", f64::from(weight) / 100.0)
}

fn report(headline: String, r: &pb::Rollout) -> Report {
    let policy = r.policy.clone().unwrap_or_default();
    let steps: Vec<String> = policy
        .steps
        .iter()
        .map(|s| {
            let w: Vec<String> = s.weights.iter().map(|w| percent(*w)).collect();
            format!("{}@{}s", w.join("+"), s.hold_secs)
        })
        .collect();
    let mut text = String::new();
    if !headline.is_empty() {
        text.push_str(&headline);
        text.push_str("\n\n");
    }
    text.push_str(&fields(&[
        ("rollout", r.rollout_id.clone()),
        ("install", r.install_id.clone()),
        ("state", r.state.clone()),
        ("step", format!("{} of {}", r.step + 1, policy.steps.len())),
        ("step since", time(r.step_started_at.as_ref())),
        ("steps", steps.join(", ")),
        (
            "budgets",
            format!(
                "failure rate +{:.1} points, p99 +{} ms, after {} calls",
                policy.max_error_rate * 100.0,
                policy.max_p99_ms,
                policy.min_calls
            ),
        ),
        (
            "reason",
            if r.reason.is_empty() {
                "-".into()
            } else {
                r.reason.clone()
            },
        ),
    ]));
    text.push('\n');
    let rows: Vec<Vec<String>> = r
        .versions
        .iter()
        .map(|v| {
            let h = r.health.iter().find(|h| h.version == v.version);
            vec![
                format!("{}{}", v.version, if v.stable { " (stable)" } else { "" }),
                percent(v.weight),
                h.map_or("0".into(), |h| h.calls.to_string()),
                h.map_or("0".into(), |h| h.failures.to_string()),
                h.map_or("0".into(), |h| h.p99_ms.to_string()),
            ]
        })
        .collect();
    text.push_str(&table(
        &["VERSION", "WEIGHT", "CALLS", "FAILURES", "P99 MS"],
        &rows,
    ));
    text.push('\n');
    let history: Vec<Vec<String>> = r
        .history
        .iter()
        .map(|e| {
            vec![
                time(e.at.as_ref()),
                e.action.clone(),
                e.actor.clone(),
                e.detail.clone(),
            ]
        })
        .collect();
    text.push_str(&table(&["AT", "ACTION", "BY", "DETAIL"], &history));
    Report::new(text, rollout_json(r))
}

fn rollout_json(r: &pb::Rollout) -> Value {
    let policy = r.policy.clone().unwrap_or_default();
    json!({
        "rollout_id": r.rollout_id,
        "install_id": r.install_id,
        "tenant_id": r.tenant_id,
        "state": r.state,
        "step": r.step,
        "step_started_at": time_json(r.step_started_at.as_ref()),
        "reason": r.reason,
        "revision": r.revision,
        "versions": r.versions.iter().map(|v| json!({
            "version": v.version,
            "version_id": v.version_id,
            "weight": v.weight,
            "stable": v.stable,
            "content_hash": v.content_hash,
            "granted_caps": v.granted_caps,
        })).collect::<Vec<_>>(),
        "health": r.health.iter().map(|h| json!({
            "version": h.version,
            "calls": h.calls,
            "failures": h.failures,
            "p99_ms": h.p99_ms,
        })).collect::<Vec<_>>(),
        "policy": {
            "steps": policy.steps.iter().map(|s| json!({
                "weights": s.weights,
                "hold_secs": s.hold_secs,
            })).collect::<Vec<_>>(),
            "max_error_rate": policy.max_error_rate,
            "max_p99_ms": policy.max_p99_ms,
            "min_calls": policy.min_calls,
        },
        "history": r.history.iter().map(|e| json!({
            "at": time_json(e.at.as_ref()),
            "action": e.action,
            "actor": e.actor,
            "detail": e.detail,
        })).collect::<Vec<_>>(),
        "created_at": time_json(r.created_at.as_ref()),
        "updated_at": time_json(r.updated_at.as_ref()),
    })
}
