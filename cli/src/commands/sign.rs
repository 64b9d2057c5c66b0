//! `annex sign <bundle> --key <pem>`: sign a bundle's identity statement (content hash,
//! publisher, name, version as written in the manifest) and write `<bundle>.sig`.
//!
//! The `.sig` file is JSON ([`SignatureFile`]): the base64 signature and key id that publish
//! sends, plus the hash and identity it covers so `annex publish` can refuse a signature made
//! for a different bundle before uploading anything.

use std::path::Path;

use annex_bundle::archive::{Limits, read_manifest};
use annex_bundle::hash::ContentHash;
use annex_bundle::signing::{KeyPair, sign_bundle};
use serde::{Deserialize, Serialize};

use super::blocking;
use crate::cli::SignArgs;
use crate::files;
use crate::output::{Report, fields};

/// The contents of a `.sig` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureFile {
    /// Standard base64 of the 64-byte Ed25519 signature.
    pub signature: String,
    /// `ed25519:<16 hex>` of the signing key.
    pub key_id: String,
    /// What was signed; absent in a bare-signature file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl SignatureFile {
    /// Reads a `.sig` file: the JSON `annex sign` writes, or a file holding only the base64
    /// signature (then without a key id: the control plane tries every key of the publisher).
    pub fn load(path: &Path) -> anyhow::Result<SignatureFile> {
        let text = files::read_text(path).map_err(|e| {
            e.context(
                "no signature for this bundle; run `annex sign` first or pass --signature-file",
            )
        })?;
        let trimmed = text.trim();
        if trimmed.starts_with('{') {
            return serde_json::from_str(trimmed)
                .map_err(|e| anyhow::anyhow!("{} is not a signature file: {e}", path.display()));
        }
        if trimmed.is_empty() || trimmed.contains(char::is_whitespace) {
            anyhow::bail!(
                "{} holds neither `annex sign` JSON nor a base64 signature",
                path.display()
            );
        }
        Ok(SignatureFile {
            signature: trimmed.to_owned(),
            key_id: String::new(),
            content_hash: None,
            publisher: None,
            name: None,
            version: None,
        })
    }
}

pub async fn run(args: SignArgs) -> anyhow::Result<Report> {
    let key_pem = files::read_text(&args.key)?;
    let key = KeyPair::from_pkcs8_pem(&key_pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.key.display()))?;
    let bundle = args.bundle.clone();
    let (hash, manifest) = blocking(move || {
        let bytes = files::read(&bundle)?;
        let manifest = read_manifest(&bytes, &Limits::default())
            .map_err(|e| anyhow::anyhow!("reading the manifest from {}: {e}", bundle.display()))?;
        Ok((ContentHash::of(&bytes), manifest))
    })
    .await?;
    // The version as written: a wildcard `1.2.*` is signed as the pattern, and the hash (which
    // covers the manifest) binds the version the registry resolves it to.
    let version = manifest.version.to_string();
    let signature = sign_bundle(&key, &hash, &manifest.publisher, &manifest.name, &version);
    let file = SignatureFile {
        signature,
        key_id: key.public_key().key_id(),
        content_hash: Some(hash.to_string()),
        publisher: Some(manifest.publisher.clone()),
        name: Some(manifest.name.clone()),
        version: Some(version.clone()),
    };
    let out = args
        .out
        .unwrap_or_else(|| files::with_suffix(&args.bundle, ".sig"));
    let mut body = serde_json::to_string_pretty(&file)?;
    body.push('\n');
    files::write_atomic(&out, body.as_bytes())?;

    let text = format!(
        "{}next: annex publish {}\n",
        fields(&[
            (
                "signed",
                format!(
                    "{}/{} {version} ({})",
                    manifest.publisher, manifest.name, hash
                )
            ),
            ("key id", file.key_id.clone()),
            ("signature", file.signature.clone()),
            ("written to", out.display().to_string()),
        ]),
        args.bundle.display()
    );
    let mut json = serde_json::to_value(&file)?;
    json["signature_file"] = serde_json::json!(out);
    Ok(Report::new(text, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_json_signature_files_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bare = dir.path().join("bare.sig");
        std::fs::write(&bare, "c2lnbmF0dXJl\n").expect("write");
        let loaded = SignatureFile::load(&bare).expect("bare");
        assert_eq!(loaded.signature, "c2lnbmF0dXJl");
        assert_eq!(loaded.key_id, "");

        let json = dir.path().join("b.sig");
        std::fs::write(&json, r#"{"signature":"c2ln","key_id":"ed25519:00"}"#).expect("write");
        let loaded = SignatureFile::load(&json).expect("json");
        assert_eq!(loaded.key_id, "ed25519:00");
        assert_eq!(loaded.content_hash, None);

        std::fs::write(&bare, "two words").expect("write");
        assert!(SignatureFile::load(&bare).is_err());
    }
}
