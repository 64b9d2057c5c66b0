//! `annex secrets set|list-keys`: an install's secrets, sealed by the control plane. Values go
//! in and never come back out: the CLI prints key names and the secrets version only.

use std::collections::BTreeMap;
use std::path::Path;

use annex_proto::pb;
use anyhow::Context as _;
use serde_json::json;

use super::Context;
use super::installs::install_ref;
use crate::cli::{KeyValue, SecretsCommand};
use crate::client::remote;
use crate::failure::usage;
use crate::files;
use crate::output::{Report, comma_list};

pub async fn run(cx: &Context, cmd: SecretsCommand) -> anyhow::Result<Report> {
    match cmd {
        SecretsCommand::Set {
            extension,
            entries,
            from_file,
            clear,
        } => {
            let mut secrets = BTreeMap::new();
            for path in &from_file {
                secrets.extend(read_secrets_file(path)?);
            }
            // Arguments win over files, so a file can hold defaults.
            for KeyValue { key, value } in entries {
                secrets.insert(key, value);
            }
            if secrets.is_empty() && !clear {
                return Err(usage(
                    "secrets set needs KEY=VALUE entries, --from-file or --clear",
                ));
            }
            set(cx, &extension, secrets, clear).await
        }
        SecretsCommand::ListKeys { extension } => list_keys(cx, &extension).await,
    }
}

async fn set(
    cx: &Context,
    extension: &str,
    secrets: BTreeMap<String, String>,
    clear: bool,
) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let keys: Vec<String> = secrets.keys().cloned().collect();
    let meta = cp
        .installs()
        .set_secrets(pb::SetSecretsRequest {
            install: Some(install_ref(&tenant, extension)),
            secrets: secrets.into_iter().collect(),
            clear,
            expires_at: None,
        })
        .await
        .map_err(remote)
        .with_context(|| format!("storing secrets of {extension} for tenant {tenant}"))?
        .into_inner();
    let cleared = if clear {
        "cleared the old secrets; "
    } else {
        ""
    };
    Ok(Report::new(
        format!(
            "{cleared}stored {} secret(s) for {extension}: {} (secrets version {})",
            keys.len(),
            comma_list(&keys),
            meta.secrets_version
        ),
        json!({
            "install_id": meta.install_id,
            "secrets_version": meta.secrets_version,
            "keys_set": keys,
            "cleared": clear,
        }),
    ))
}

async fn list_keys(cx: &Context, extension: &str) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let keys = cp
        .installs()
        .list_secret_keys(install_ref(&tenant, extension))
        .await
        .map_err(remote)
        .with_context(|| format!("listing secrets of {extension} for tenant {tenant}"))?
        .into_inner();
    let expires_ms = keys.expires_at.map(|t| t.unix_ms);
    let text = if keys.keys.is_empty() {
        format!("{extension} has no secrets for tenant {tenant}")
    } else {
        let mut text = keys.keys.join("\n");
        if let Some(note) = expiry_note(expires_ms, keys.expired) {
            text.push_str(&format!("\n({note})"));
        }
        text
    };
    Ok(Report::new(
        text,
        json!({
            "keys": keys.keys,
            "secrets_version": keys.secrets_version,
            "expires_at_ms": expires_ms,
            "expired": keys.expired,
        }),
    ))
}

/// "expired at …" (guests no longer see the secrets) or "expires at …".
fn expiry_note(expires_ms: Option<i64>, expired: bool) -> Option<String> {
    let at = expires_ms?;
    let when = chrono::DateTime::from_timestamp_millis(at)
        .map_or_else(|| format!("{at} ms"), |t| t.to_rfc3339());
    Some(if expired {
        format!("expired at {when}: guests no longer see these secrets")
    } else {
        format!("expires at {when}")
    })
}

/// A JSON object of strings, or `KEY=VALUE` lines (blank lines and `#` comments skipped).
fn read_secrets_file(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = files::read_text(path)?;
    parse_secrets(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn parse_secrets(text: &str) -> Result<BTreeMap<String, String>, String> {
    if text.trim_start().starts_with('{') {
        let value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
        return value
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k, s)),
                _ => Err(format!("the value of `{k}` is not a string")),
            })
            .collect();
    }
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        // Never echo the line: it holds a secret.
        let kv: KeyValue = line
            .parse()
            .map_err(|_| format!("line {} is not KEY=VALUE", n + 1))?;
        out.insert(kv.key, kv.value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_files_are_json_or_lines() {
        let json = parse_secrets(r#"{"a":"1","b":"x=y"}"#).expect("json");
        assert_eq!(json.get("b").map(String::as_str), Some("x=y"));
        let lines = parse_secrets("# comment\n\nA=1\r\nB=two=2\n").expect("lines");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines.get("B").map(String::as_str), Some("two=2"));
        let err = parse_secrets("A=1\nhunter2\n").expect_err("bad line");
        assert_eq!(err, "line 2 is not KEY=VALUE");
        assert!(parse_secrets(r#"{"a":1}"#).is_err());
    }

    #[test]
    fn expired_secrets_are_shown_as_expired() {
        assert_eq!(expiry_note(None, false), None);
        assert_eq!(
            expiry_note(Some(0), true).as_deref(),
            Some("expired at 1970-01-01T00:00:00+00:00: guests no longer see these secrets")
        );
        assert_eq!(
            expiry_note(Some(0), false).as_deref(),
            Some("expires at 1970-01-01T00:00:00+00:00")
        );
    }
}
