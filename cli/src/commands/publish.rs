//! The registry commands: `annex publish` streams a signed bundle to `Registry.Publish`;
//! `annex versions` lists what is published.
//!
//! Publish hashes the file locally first and declares hash and size in the header, so bytes
//! changed in transit (or on disk mid-upload) fail as `HASH_MISMATCH`, and a `.sig` made for
//! other bytes is refused before any upload.

use std::path::Path;

use annex_bundle::hash::ContentHasher;
use annex_proto::pb;
use anyhow::Context as _;
use serde_json::{Value, json};

use super::pack::human_bytes;
use super::sign::SignatureFile;
use super::{Context, blocking};
use crate::cli::PublishArgs;
use crate::client::{ControlPlane, remote};
use crate::files;
use crate::output::{Report, fields, table, time, time_json};
use crate::progress;

/// Uploads above this size show progress on stderr: a bar on a terminal, else a line per quarter.
const PROGRESS_FROM_BYTES: u64 = 4 * 1024 * 1024;

pub async fn publish(cx: &Context, args: PublishArgs) -> anyhow::Result<Report> {
    let sig_path = args
        .signature_file
        .clone()
        .unwrap_or_else(|| files::with_suffix(&args.bundle, ".sig"));
    let sig = SignatureFile::load(&sig_path)?;
    let (hash, size) = blocking({
        let bundle = args.bundle.clone();
        move || hash_file(&bundle)
    })
    .await?;
    if let Some(signed) = sig
        .content_hash
        .as_deref()
        .filter(|signed| *signed != hash.to_string())
    {
        anyhow::bail!(
            "{} was made for {signed}, but {} is {hash}; sign the bundle again with `annex sign`",
            sig_path.display(),
            args.bundle.display()
        );
    }

    let cp = cx.connect().await?;
    let header = pb::PublishHeader {
        signature: sig.signature.clone(),
        key_id: sig.key_id.clone(),
        declared_hash: hash.to_string(),
        declared_size: size,
    };
    let result = upload(&cp, &args.bundle, header).await;
    let response = result.with_context(|| format!("publishing {}", args.bundle.display()))?;

    let ext = response.extension.unwrap_or_default();
    let version = response.version.unwrap_or_default();
    let text = format!(
        "published {} {}\n{}next: annex install {} --tenant <tenant>\n",
        ext.slug,
        version.version,
        fields(&[
            ("content hash", version.content_hash.clone()),
            ("size", human_bytes(version.size_bytes)),
            ("signed by", version.signing_key_id.clone()),
            ("registry id", ext.id.clone()),
        ]),
        ext.slug
    );
    let json = json!({
        "extension": extension_json(&ext),
        "version": version_json(&version),
    });
    Ok(Report::new(text, json))
}

pub async fn versions(cx: &Context, extension: &str) -> anyhow::Result<Report> {
    let cp = cx.connect().await?;
    let versions = cp
        .registry()
        .list_versions(pb::ListVersionsRequest {
            extension: extension.to_owned(),
        })
        .await
        .map_err(remote)
        .with_context(|| format!("listing the versions of {extension}"))?
        .into_inner()
        .versions;
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                v.version.clone(),
                time(v.created_at.as_ref()),
                short_hash(&v.content_hash),
                v.signing_key_id.clone(),
                if v.deprecated {
                    format!("deprecated {}", v.deprecation_reason)
                        .trim_end()
                        .to_owned()
                } else {
                    "active".to_owned()
                },
            ]
        })
        .collect();
    let text = if rows.is_empty() {
        format!("{extension} has no published versions\n")
    } else {
        table(
            &[
                "VERSION",
                "PUBLISHED",
                "CONTENT HASH",
                "SIGNED BY",
                "STATUS",
            ],
            &rows,
        )
    };
    let json = json!({ "versions": versions.iter().map(version_json).collect::<Vec<_>>() });
    Ok(Report::new(text, json))
}

/// Streams `bundle` to the registry after `header` (whose `declared_size` is the file's size),
/// with progress on stderr for bundles from [`PROGRESS_FROM_BYTES`] on.
pub async fn upload(
    cp: &ControlPlane,
    bundle: &Path,
    header: pb::PublishHeader,
) -> anyhow::Result<pb::PublishResponse> {
    let size = header.declared_size;
    if size < PROGRESS_FROM_BYTES {
        return cp.publish_file(bundle, header, |_| {}).await;
    }
    let progress = progress::transfer(format!("uploading {}", bundle.display()), size);
    let sent = progress.clone();
    let result = cp.publish_file(bundle, header, move |n| sent.inc(n)).await;
    progress.finish();
    result
}

/// Content hash and size of a file, streamed (bundles can be 200 MiB).
pub fn hash_file(path: &Path) -> anyhow::Result<(annex_bundle::ContentHash, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = ContentHasher::new();
    let size = std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("reading {}", path.display()))?;
    if size == 0 {
        anyhow::bail!("{} is empty", path.display());
    }
    Ok((hasher.finish(), size))
}

/// `sha256:` and the first 12 hex digits: enough to tell versions apart in a table.
fn short_hash(hash: &str) -> String {
    match hash.get(..19) {
        Some(prefix) if hash.len() > 19 => format!("{prefix}…"),
        _ => hash.to_owned(),
    }
}

pub fn extension_json(e: &pb::Extension) -> Value {
    json!({
        "id": e.id,
        "publisher": e.publisher,
        "name": e.name,
        "slug": e.slug,
        "created_at": time_json(e.created_at.as_ref()),
    })
}

pub fn version_json(v: &pb::Version) -> Value {
    json!({
        "id": v.id,
        "registry_id": v.registry_id,
        "publisher": v.publisher,
        "name": v.name,
        "version": v.version,
        "runtime": v.runtime,
        "main_entry": v.main_entry,
        "endpoints": v.endpoints.iter().map(|e| json!({
            "method": e.method, "path": e.path, "handler": e.handler,
        })).collect::<Vec<_>>(),
        "ui": v.ui.as_ref().map(|ui| json!({
            "entry": ui.entry,
            "app_menu_label": ui.hooks.as_ref().and_then(|h| h.app_menu_label.clone()),
            "client_portal_menu_label":
                ui.hooks.as_ref().and_then(|h| h.client_portal_menu_label.clone()),
        })),
        "capabilities": v.capabilities,
        "content_hash": v.content_hash,
        "size_bytes": v.size_bytes,
        "signature": v.signature,
        "signing_key_id": v.signing_key_id,
        "deprecated": v.deprecated,
        "deprecation_reason": (!v.deprecation_reason.is_empty()).then_some(&v.deprecation_reason),
        "created_at": time_json(v.created_at.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_shorten_for_tables() {
        let h = format!("sha256:{}", "a".repeat(64));
        assert_eq!(short_hash(&h), "sha256:aaaaaaaaaaaa…");
        assert_eq!(short_hash("sha256:ab"), "sha256:ab");
    }
}
