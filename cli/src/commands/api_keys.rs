//! `annex api-key create|list|revoke`: per-tenant API keys that service clients send to the
//! edge as `x-api-key`. The secret is shown once, at creation; the control plane keeps only its
//! hash.

use annex_proto::pb;
use anyhow::Context as _;
use serde_json::{Value, json};

use super::Context;
use crate::cli::ApiKeyCommand;
use crate::client::remote;
use crate::output::{Report, comma_list, fields, table, time, time_json};

type Installs = pb::installs_client::InstallsClient<tonic::transport::Channel>;

/// What a key gets when no `--permission` is given: everything an API client can do.
const DEFAULT_PERMISSIONS: [&str; 2] = ["extension:read", "extension:write"];

pub async fn run(cx: &Context, cmd: ApiKeyCommand) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let mut installs = cp.installs();
    match cmd {
        ApiKeyCommand::Create { name, permissions } => {
            create(&mut installs, &tenant, name, permissions).await
        }
        ApiKeyCommand::List => list(&mut installs, &tenant).await,
        ApiKeyCommand::Revoke { id } => revoke(&mut installs, &tenant, &id).await,
    }
}

async fn create(
    installs: &mut Installs,
    tenant: &str,
    name: String,
    permissions: Vec<String>,
) -> anyhow::Result<Report> {
    let permissions = if permissions.is_empty() {
        DEFAULT_PERMISSIONS.map(str::to_owned).to_vec()
    } else {
        permissions
    };
    let created = installs
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id: tenant.to_owned(),
            name: name.clone(),
            permissions,
        })
        .await
        .map_err(remote)
        .with_context(|| format!("creating API key {name} for tenant {tenant}"))?
        .into_inner();
    let key = created.key.unwrap_or_default();
    let text = format!(
        "{}\nsecret (shown once; send it as the x-api-key header):\n{}\n",
        fields(&[
            ("id", key.id.clone()),
            ("name", key.name.clone()),
            ("tenant", key.tenant_id.clone()),
            ("permissions", comma_list(&key.permissions)),
        ])
        .trim_end(),
        created.secret
    );
    let mut json = key_json(&key);
    json["secret"] = Value::String(created.secret);
    Ok(Report::new(text, json))
}

async fn list(installs: &mut Installs, tenant: &str) -> anyhow::Result<Report> {
    let keys = installs
        .list_api_keys(pb::ListApiKeysRequest {
            tenant_id: tenant.to_owned(),
        })
        .await
        .map_err(remote)
        .with_context(|| format!("listing API keys of tenant {tenant}"))?
        .into_inner()
        .keys;
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                comma_list(&k.permissions),
                time(k.created_at.as_ref()),
                k.revoked_at.as_ref().map_or("active".to_owned(), |t| {
                    format!("revoked {}", time(Some(t)))
                }),
            ]
        })
        .collect();
    let text = if rows.is_empty() {
        format!("tenant {tenant} has no API keys\n")
    } else {
        table(&["ID", "NAME", "PERMISSIONS", "CREATED", "STATE"], &rows)
    };
    Ok(Report::new(
        text,
        json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() }),
    ))
}

async fn revoke(installs: &mut Installs, tenant: &str, id: &str) -> anyhow::Result<Report> {
    installs
        .revoke_api_key(pb::RevokeApiKeyRequest {
            tenant_id: tenant.to_owned(),
            id: id.to_owned(),
        })
        .await
        .map_err(remote)
        .with_context(|| format!("revoking API key {id} of tenant {tenant}"))?;
    Ok(Report::new(
        format!("revoked API key {id} of tenant {tenant}"),
        json!({ "id": id, "tenant_id": tenant, "revoked": true }),
    ))
}

fn key_json(k: &pb::ApiKeyInfo) -> Value {
    json!({
        "id": k.id,
        "tenant_id": k.tenant_id,
        "name": k.name,
        "permissions": k.permissions,
        "created_at": time_json(k.created_at.as_ref()),
        "revoked_at": time_json(k.revoked_at.as_ref()),
    })
}
