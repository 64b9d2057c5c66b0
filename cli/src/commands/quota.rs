//! `annex quota set|list|rm` and `annex usage`: fleet-wide execution quotas
//! per tenant or install (enforced by every edge and the control plane within
//! about a second), and the usage windows workers report.

use annex_proto::pb;
use anyhow::Context as _;
use serde_json::{Value, json};

use super::Context;
use crate::cli::{QuotaCommand, UsageArgs};
use crate::client::remote;
use crate::failure::usage as usage_error;
use crate::output::{Report, table, time, time_json};

pub async fn run(cx: &Context, cmd: QuotaCommand) -> anyhow::Result<Report> {
    match cmd {
        QuotaCommand::Set {
            extension,
            max_concurrency,
            requests_per_second,
        } => {
            if max_concurrency.is_none() && requests_per_second.is_none() {
                return Err(usage_error(
                    "quota set needs --max-concurrency, --rps or both (to lift a quota: annex quota rm)",
                ));
            }
            set(
                cx,
                extension.unwrap_or_default(),
                max_concurrency.unwrap_or(0),
                requests_per_second.unwrap_or(0),
            )
            .await
        }
        QuotaCommand::List { all } => list(cx, all).await,
        QuotaCommand::Rm { extension } => remove(cx, extension.unwrap_or_default()).await,
    }
}

fn limit(n: u32) -> String {
    if n == 0 {
        "unlimited".to_owned()
    } else {
        n.to_string()
    }
}

fn scope(q: &pb::Quota) -> String {
    if q.install_id.is_empty() {
        "tenant".to_owned()
    } else {
        format!("install {}", q.install_id)
    }
}

fn quota_json(q: &pb::Quota) -> Value {
    json!({
        "tenant_id": q.tenant_id,
        "install_id": (!q.install_id.is_empty()).then_some(&q.install_id),
        "max_concurrency": q.max_concurrency,
        "requests_per_second": q.requests_per_second,
        "updated_at": time_json(q.updated_at.as_ref()),
    })
}

async fn set(
    cx: &Context,
    extension: String,
    max_concurrency: u32,
    requests_per_second: u32,
) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let q = cp
        .installs()
        .set_quota(pb::SetQuotaRequest {
            quota: Some(pb::QuotaRef {
                tenant_id: tenant.clone(),
                extension: extension.clone(),
            }),
            max_concurrency,
            requests_per_second,
        })
        .await
        .map_err(remote)
        .with_context(|| format!("setting the quota of tenant {tenant}"))?
        .into_inner();
    Ok(Report::new(
        format!(
            "quota set for tenant {} ({}): max concurrency {}, requests per second {}",
            q.tenant_id,
            scope(&q),
            limit(q.max_concurrency),
            limit(q.requests_per_second)
        ),
        quota_json(&q),
    ))
}

async fn list(cx: &Context, all: bool) -> anyhow::Result<Report> {
    let tenant = if all { String::new() } else { cx.tenant()? };
    let cp = cx.connect().await?;
    let quotas = cp
        .installs()
        .list_quotas(pb::ListQuotasRequest {
            tenant_id: tenant.clone(),
        })
        .await
        .map_err(remote)
        .context("listing quotas")?
        .into_inner()
        .quotas;
    let text = if quotas.is_empty() {
        "no quotas set".to_owned()
    } else {
        let rows: Vec<Vec<String>> = quotas
            .iter()
            .map(|q| {
                vec![
                    q.tenant_id.clone(),
                    scope(q),
                    limit(q.max_concurrency),
                    limit(q.requests_per_second),
                    time(q.updated_at.as_ref()),
                ]
            })
            .collect();
        table(
            &["TENANT", "SCOPE", "MAX CONCURRENCY", "RPS", "UPDATED"],
            &rows,
        )
    };
    Ok(Report::new(
        text,
        json!({ "quotas": quotas.iter().map(quota_json).collect::<Vec<_>>() }),
    ))
}

async fn remove(cx: &Context, extension: String) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    cp.installs()
        .delete_quota(pb::QuotaRef {
            tenant_id: tenant.clone(),
            extension: extension.clone(),
        })
        .await
        .map_err(remote)
        .with_context(|| format!("removing a quota of tenant {tenant}"))?;
    let what = if extension.is_empty() {
        format!("the tenant-wide quota of {tenant}")
    } else {
        format!("the quota of {extension} for tenant {tenant}")
    };
    Ok(Report::new(
        format!("removed {what}"),
        json!({ "tenant_id": tenant, "extension": extension, "removed": true }),
    ))
}

fn parse_time(flag: &str, value: Option<String>) -> anyhow::Result<Option<pb::Timestamp>> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v.trim())
                .map(|t| pb::Timestamp {
                    unix_ms: t.timestamp_millis(),
                })
                .map_err(|e| {
                    usage_error(format!(
                        "{flag} must be an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}"
                    ))
                })
        })
        .transpose()
}

pub async fn usage(cx: &Context, args: UsageArgs) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let since = parse_time("--since", args.since)?;
    let until = parse_time("--until", args.until)?;
    let cp = cx.connect().await?;
    let windows = cp
        .installs()
        .get_usage(pb::GetUsageRequest {
            tenant_id: tenant.clone(),
            extension: args.extension.unwrap_or_default(),
            since,
            until,
        })
        .await
        .map_err(remote)
        .with_context(|| format!("reading the usage of tenant {tenant}"))?
        .into_inner()
        .windows;
    let stamp = |u: &pb::ExecutionUsage| {
        Some(pb::Timestamp {
            unix_ms: u.window_start_ms,
        })
    };
    let text = if windows.is_empty() {
        format!("no usage recorded for tenant {tenant}")
    } else {
        let rows: Vec<Vec<String>> = windows
            .iter()
            .map(|u| {
                vec![
                    time(stamp(u).as_ref()),
                    u.registry_id.clone(),
                    u.invocations.to_string(),
                    u.cpu_us.to_string(),
                    u.memory_byte_ms.to_string(),
                    u.egress_bytes.to_string(),
                    u.fuel.to_string(),
                ]
            })
            .collect();
        table(
            &[
                "WINDOW",
                "EXTENSION",
                "INVOCATIONS",
                "CPU US",
                "MEMORY BYTE-MS",
                "EGRESS BYTES",
                "FUEL",
            ],
            &rows,
        )
    };
    let json_windows: Vec<Value> = windows
        .iter()
        .map(|u| {
            json!({
                "window_start": time_json(stamp(u).as_ref()),
                "registry_id": u.registry_id,
                "invocations": u.invocations,
                "cpu_us": u.cpu_us,
                "memory_byte_ms": u.memory_byte_ms,
                "egress_bytes": u.egress_bytes,
                "fuel": u.fuel,
            })
        })
        .collect();
    Ok(Report::new(text, json!({ "windows": json_windows })))
}
