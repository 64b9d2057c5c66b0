//! `annex trust add|list|revoke`: the publisher keys the registry verifies bundle signatures
//! against (at publish, at install and upgrade, and on every worker before it compiles).

use std::path::Path;

use annex_bundle::signing::{KeyPair, PublicKey};
use annex_proto::pb;
use anyhow::Context as _;
use serde_json::{Value, json};

use super::Context;
use crate::cli::{TrustAddArgs, TrustCommand};
use crate::client::remote;
use crate::files;
use crate::output::{Report, fields, note, table, time, time_json};

pub async fn run(cx: &Context, cmd: TrustCommand) -> anyhow::Result<Report> {
    match cmd {
        TrustCommand::Add(args) => add(cx, args).await,
        TrustCommand::List { publisher } => list(cx, publisher).await,
        TrustCommand::Revoke { key_id } => revoke(cx, &key_id).await,
    }
}

async fn add(cx: &Context, args: TrustAddArgs) -> anyhow::Result<Report> {
    let public = resolve_key(&args.key)?;
    let cp = cx.connect().await?;
    let added = cp
        .trust()
        .add_key(pb::AddKeyRequest {
            publisher: args.publisher.clone(),
            public_key: public.to_pem(),
            key_id: args.key_id.unwrap_or_default(),
            not_before: args.not_before.map(ts),
            not_after: args.not_after.map(ts),
        })
        .await
        .map_err(remote)
        .with_context(|| format!("trusting a key for publisher {}", args.publisher))?
        .into_inner();
    Ok(Report::new(
        format!(
            "trusted key {} for publisher {}\n{}",
            added.key_id,
            added.publisher,
            key_fields(&added)
        ),
        key_json(&added),
    ))
}

async fn list(cx: &Context, publisher: Option<String>) -> anyhow::Result<Report> {
    let cp = cx.connect().await?;
    let listed = cp
        .trust()
        .list_keys(pb::ListKeysRequest {
            publisher: publisher.unwrap_or_default(),
        })
        .await
        .map_err(remote)
        .context("listing trusted keys")?
        .into_inner();
    let rows: Vec<Vec<String>> = listed
        .keys
        .iter()
        .map(|k| {
            vec![
                k.key_id.clone(),
                k.publisher.clone(),
                time(k.not_before.as_ref()),
                time(k.not_after.as_ref()),
                state(k),
            ]
        })
        .collect();
    let text = if rows.is_empty() {
        "no trusted keys\n".to_owned()
    } else {
        table(
            &["KEY ID", "PUBLISHER", "NOT BEFORE", "NOT AFTER", "STATE"],
            &rows,
        )
    };
    Ok(Report::new(
        text,
        json!({
            "keys": listed.keys.iter().map(key_json).collect::<Vec<_>>(),
            "revision": listed.revision,
        }),
    ))
}

async fn revoke(cx: &Context, key_id: &str) -> anyhow::Result<Report> {
    let cp = cx.connect().await?;
    let revoked = cp
        .trust()
        .revoke_key(pb::RevokeKeyRequest {
            key_id: key_id.to_owned(),
        })
        .await
        .map_err(remote)
        .with_context(|| format!("revoking key {key_id}"))?
        .into_inner();
    Ok(Report::new(
        format!(
            "revoked key {} of publisher {}",
            revoked.key_id, revoked.publisher
        ),
        key_json(&revoked),
    ))
}

/// `--key`: a file (SPKI PEM, base64, or a private key whose public half is taken) or the
/// value itself. Parsed here so a typo fails before connecting, naming what was wrong.
fn resolve_key(arg: &str) -> anyhow::Result<PublicKey> {
    let path = Path::new(arg);
    let (text, source) = if path.is_file() {
        (files::read_text(path)?, path.display().to_string())
    } else {
        (arg.to_owned(), "--key".to_owned())
    };
    if text.contains("PRIVATE KEY") {
        let key = KeyPair::from_pkcs8_pem(&text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        note(format!(
            "{source} is a private key; trusting its public half (only the public key is sent)"
        ));
        return Ok(key.public_key());
    }
    PublicKey::parse(&text).map_err(|e| {
        if source == "--key" {
            anyhow::anyhow!("--key `{arg}` is neither a file nor a public key ({e})")
        } else {
            anyhow::anyhow!("{source}: {e}")
        }
    })
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> pb::Timestamp {
    pb::Timestamp {
        unix_ms: t.timestamp_millis(),
    }
}

fn state(k: &pb::PublisherKey) -> String {
    if k.revoked {
        return format!("revoked {}", time(k.revoked_at.as_ref()));
    }
    let now = chrono::Utc::now().timestamp_millis();
    match (&k.not_before, &k.not_after) {
        (Some(nb), _) if nb.unix_ms > now => "not yet valid".to_owned(),
        (_, Some(na)) if na.unix_ms <= now => "expired".to_owned(),
        _ => "active".to_owned(),
    }
}

fn key_fields(k: &pb::PublisherKey) -> String {
    fields(&[
        ("public key", k.public_key.clone()),
        ("not before", time(k.not_before.as_ref())),
        ("not after", time(k.not_after.as_ref())),
        ("state", state(k)),
    ])
}

fn key_json(k: &pb::PublisherKey) -> Value {
    json!({
        "key_id": k.key_id,
        "publisher": k.publisher,
        "public_key": k.public_key,
        "not_before": time_json(k.not_before.as_ref()),
        "not_after": time_json(k.not_after.as_ref()),
        "revoked": k.revoked,
        "revoked_at": time_json(k.revoked_at.as_ref()),
        "created_at": time_json(k.created_at.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_from_values_and_files() {
        let pair = KeyPair::generate();
        let public = pair.public_key();
        assert_eq!(resolve_key(&public.to_base64()).expect("base64"), public);

        let dir = tempfile::tempdir().expect("tempdir");
        let pem = dir.path().join("k.pub.pem");
        std::fs::write(&pem, public.to_pem()).expect("write");
        let arg = pem.to_string_lossy().into_owned();
        assert_eq!(resolve_key(&arg).expect("pem file"), public);

        let private = dir.path().join("k.pem");
        std::fs::write(&private, pair.to_pkcs8_pem().expect("pem")).expect("write");
        let arg = private.to_string_lossy().into_owned();
        assert_eq!(resolve_key(&arg).expect("private file"), public);

        let err = resolve_key("keys/missing.pem").expect_err("missing");
        assert!(
            err.to_string().contains("neither a file nor a public key"),
            "{err}"
        );
    }
}
