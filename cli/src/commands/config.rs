//! `annex config get|set`: an install's config map (plain strings the guest reads through
//! `alga:extension/config`).
//!
//! `Installs.SetConfig` replaces the whole map, so `config set` merges by default: it reads the
//! current map, applies the `KEY=VALUE`s and `--unset`s, and writes the result. Two operators
//! merging at the same moment can lose one's change (the last write wins); `--replace` skips
//! the read.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde_json::json;

use super::Context;
use super::installs::install_ref;
use crate::cli::{ConfigCommand, KeyValue};
use crate::client::remote;
use crate::failure::usage;
use crate::output::Report;

pub async fn run(cx: &Context, cmd: ConfigCommand) -> anyhow::Result<Report> {
    match cmd {
        ConfigCommand::Get { extension, key } => get(cx, &extension, key.as_deref()).await,
        ConfigCommand::Set {
            extension,
            entries,
            unset,
            replace,
        } => set(cx, &extension, entries, unset, replace).await,
    }
}

async fn get(cx: &Context, extension: &str, key: Option<&str>) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let config = cp
        .installs()
        .get_config(install_ref(&tenant, extension))
        .await
        .map_err(remote)
        .with_context(|| format!("reading the config of {extension} for tenant {tenant}"))?
        .into_inner();
    let map: BTreeMap<String, String> = config.config.into_iter().collect();
    if let Some(key) = key {
        let value = map
            .get(key)
            .with_context(|| format!("the config of {extension} has no key `{key}`"))?;
        return Ok(Report::new(
            value.clone(),
            json!({ "key": key, "value": value }),
        ));
    }
    Ok(Report::new(
        render(&map),
        json!({ "install_id": config.install_id, "version": config.version, "config": map }),
    ))
}

async fn set(
    cx: &Context,
    extension: &str,
    entries: Vec<KeyValue>,
    unset: Vec<String>,
    replace: bool,
) -> anyhow::Result<Report> {
    if entries.is_empty() && unset.is_empty() && !replace {
        return Err(usage(
            "config set needs KEY=VALUE entries or --unset KEY (or --replace to clear)",
        ));
    }
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let mut installs = cp.installs();
    let what = || format!("setting the config of {extension} for tenant {tenant}");
    let mut map: BTreeMap<String, String> = if replace {
        BTreeMap::new()
    } else {
        installs
            .get_config(install_ref(&tenant, extension))
            .await
            .map_err(remote)
            .with_context(what)?
            .into_inner()
            .config
            .into_iter()
            .collect()
    };
    for key in &unset {
        map.remove(key);
    }
    for kv in entries {
        map.insert(kv.key, kv.value);
    }
    let config = installs
        .set_config(annex_proto::pb::SetConfigRequest {
            install: Some(install_ref(&tenant, extension)),
            config: map.into_iter().collect(),
        })
        .await
        .map_err(remote)
        .with_context(what)?
        .into_inner();
    let map: BTreeMap<String, String> = config.config.into_iter().collect();
    Ok(Report::new(
        format!(
            "config of {extension} is now (version {}):\n{}",
            config.version,
            render(&map)
        ),
        json!({ "install_id": config.install_id, "version": config.version, "config": map }),
    ))
}

/// `KEY=VALUE` lines, sorted: the form `config set` takes back.
fn render(map: &BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return "(empty)\n".to_owned();
    }
    map.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}
