//! The tenant's installs: `install`, `upgrade`, `uninstall`, `enable`, `disable`, `installs`
//! (list) and `status`. Each is one `Installs` call scoped to `--tenant`.

use annex_proto::pb;
use anyhow::Context as _;
use serde_json::{Value, json};

use super::Context;
use crate::cli::{InstallArgs, UpgradeArgs};
use crate::client::remote;
use crate::output::{Report, comma_list, fields, table, time, time_json, yes_no};

pub async fn install(cx: &Context, args: InstallArgs) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let info = cp
        .installs()
        .install(pb::InstallRequest {
            tenant_id: tenant.clone(),
            extension: args.extension.clone(),
            version: args.version.clone().unwrap_or_default(),
            config: args
                .config
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect(),
            egress_allowlist: args.egress,
        })
        .await
        .map_err(remote)
        .with_context(|| format!("installing {} for tenant {tenant}", args.extension))?
        .into_inner();
    Ok(install_report(
        format!(
            "installed {} {} for tenant {}",
            info.slug, info.version, info.tenant_id
        ),
        &info,
    ))
}

pub async fn upgrade(cx: &Context, args: UpgradeArgs) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let info = cp
        .installs()
        .upgrade(pb::UpgradeRequest {
            tenant_id: tenant.clone(),
            extension: args.extension.clone(),
            version: args.version.clone(),
            disable_missing_schedules: args.disable_missing_schedules,
        })
        .await
        .map_err(remote)
        .with_context(|| {
            format!(
                "upgrading {} to {} for tenant {tenant}",
                args.extension, args.version
            )
        })?
        .into_inner();
    Ok(install_report(
        format!(
            "upgraded {} to {} for tenant {}",
            info.slug, info.version, info.tenant_id
        ),
        &info,
    ))
}

pub async fn uninstall(cx: &Context, extension: &str) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    cp.installs()
        .uninstall(install_ref(&tenant, extension))
        .await
        .map_err(remote)
        .with_context(|| format!("uninstalling {extension} for tenant {tenant}"))?;
    Ok(Report::new(
        format!("uninstalled {extension} for tenant {tenant}"),
        json!({ "tenant_id": tenant, "extension": extension, "uninstalled": true }),
    ))
}

pub async fn set_enabled(cx: &Context, extension: &str, enabled: bool) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let mut client = cp.installs();
    let req = install_ref(&tenant, extension);
    let (verb, result) = if enabled {
        ("enabling", client.enable(req).await)
    } else {
        ("disabling", client.disable(req).await)
    };
    let info = result
        .map_err(remote)
        .with_context(|| format!("{verb} {extension} for tenant {tenant}"))?
        .into_inner();
    let done = if enabled { "enabled" } else { "disabled" };
    Ok(install_report(
        format!("{done} {} for tenant {}", info.slug, info.tenant_id),
        &info,
    ))
}

pub async fn list(cx: &Context) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let installs = cp
        .installs()
        .list_installs(pb::ListInstallsRequest {
            tenant_id: tenant.clone(),
        })
        .await
        .map_err(remote)
        .with_context(|| format!("listing the installs of tenant {tenant}"))?
        .into_inner()
        .installs;
    let rows: Vec<Vec<String>> = installs
        .iter()
        .map(|i| {
            vec![
                i.slug.clone(),
                i.version.clone(),
                yes_no(i.enabled).to_owned(),
                i.status.clone(),
                i.install_id.clone(),
            ]
        })
        .collect();
    let text = if rows.is_empty() {
        format!("tenant {tenant} has no installs\n")
    } else {
        table(
            &["EXTENSION", "VERSION", "ENABLED", "STATUS", "INSTALL ID"],
            &rows,
        )
    };
    Ok(Report::new(
        text,
        json!({ "installs": installs.iter().map(install_json).collect::<Vec<_>>() }),
    ))
}

pub async fn status(cx: &Context, extension: &str) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let info = cp
        .installs()
        .get_install(install_ref(&tenant, extension))
        .await
        .map_err(remote)
        .with_context(|| format!("reading the install of {extension} for tenant {tenant}"))?
        .into_inner();
    Ok(install_report(String::new(), &info))
}

pub fn install_ref(tenant: &str, extension: &str) -> pb::InstallRef {
    pb::InstallRef {
        tenant_id: tenant.to_owned(),
        extension: extension.to_owned(),
    }
}

/// A headline (may be empty) and the install's fields.
fn install_report(headline: String, info: &pb::InstallInfo) -> Report {
    let body = fields(&[
        (
            "extension",
            format!("{} ({}/{})", info.slug, info.publisher, info.name),
        ),
        ("version", info.version.clone()),
        ("content hash", info.content_hash.clone()),
        ("tenant", info.tenant_id.clone()),
        ("install id", info.install_id.clone()),
        ("enabled", enabled_text(info)),
        ("capabilities", comma_list(&info.granted_caps)),
        ("egress", comma_list(&info.egress_allowlist)),
        ("config version", or_dash(&info.config_version)),
        ("secrets version", or_dash(&info.secrets_version)),
        ("updated", time(info.updated_at.as_ref())),
    ]);
    let text = if headline.is_empty() {
        body
    } else {
        format!("{headline}\n{body}")
    };
    Report::new(text, install_json(info))
}

/// `yes`/`no`, with the status only when it says more than that.
fn enabled_text(info: &pb::InstallInfo) -> String {
    let plain = if info.enabled { "enabled" } else { "disabled" };
    if info.status.is_empty() || info.status == plain {
        yes_no(info.enabled).to_owned()
    } else {
        format!("{} (status {})", yes_no(info.enabled), info.status)
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

pub fn install_json(i: &pb::InstallInfo) -> Value {
    json!({
        "install_id": i.install_id,
        "tenant_id": i.tenant_id,
        "registry_id": i.registry_id,
        "version_id": i.version_id,
        "version": i.version,
        "publisher": i.publisher,
        "name": i.name,
        "slug": i.slug,
        "content_hash": i.content_hash,
        "granted_caps": i.granted_caps,
        "enabled": i.enabled,
        "status": i.status,
        "config_version": i.config_version,
        "secrets_version": i.secrets_version,
        "egress_allowlist": i.egress_allowlist,
        "created_at": time_json(i.created_at.as_ref()),
        "updated_at": time_json(i.updated_at.as_ref()),
    })
}
