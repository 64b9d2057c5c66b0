//! One release of the watched project to the dev tenant: build it, give it the next dev
//! version, sign it with the dev publisher key, publish it and install (first time) or upgrade
//! the dev tenant's install to it. Everything goes through the control plane's public gRPC API
//! with the operator certificate, exactly as `annex publish` and `annex install` would.
//!
//! **Dev versions.** Published versions are immutable, so every release gets a version of its
//! own: the manifest's version (a wildcard `X.Y.*` counts as `X.Y.0`, build metadata is
//! dropped) with a pre-release suffix `-dev.<n>` (or `.dev.<n>` after an existing pre-release),
//! where `n` is one more than the highest such `n` in the registry. The counter lives in the
//! registry, so it keeps counting across restarts of `annex dev`. Only the bundle that is
//! published carries the dev version; the project's manifest.json is never rewritten.
//!
//! A rebuild whose bundle contents (manifest, component, UI) did not change publishes nothing.
//! This module prints progress lines; it must not decide when to rebuild (the watcher does).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use annex_bundle::archive::{COMPONENT_PATH, DEFAULT_LEVEL, MANIFEST_PATH};
use annex_bundle::hash::{ContentHash, ContentHasher};
use annex_bundle::manifest::{Manifest, VersionSpec};
use annex_bundle::signing::{KeyPair, sign_bundle};
use annex_proto::pb;
use anyhow::Context as _;

use super::super::{build, pack, publish};
use super::DEV_TENANT;
use crate::cli::Lang;
use crate::client::{ControlPlane, remote};

/// What the dev tenant runs after a release; the UI page follows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    pub slug: String,
    pub registry_id: String,
    pub version: String,
    pub content_hash: String,
    /// The manifest's `ui.entry`; `None` when the extension has no UI.
    pub ui_entry: Option<String>,
    /// `METHOD /path` of each declared endpoint.
    #[serde(skip)]
    pub endpoints: Vec<String>,
}

/// Releases one project again and again.
pub struct Releaser {
    pub project: PathBuf,
    pub lang: Lang,
    cp: ControlPlane,
    key: KeyPair,
    /// Publishers the dev key is already trusted for.
    trusted: HashSet<String>,
    /// Contents of the last published bundle, before its version was set.
    published: Option<ContentHash>,
}

impl Releaser {
    pub fn new(project: PathBuf, lang: Lang, cp: ControlPlane, key: KeyPair) -> Releaser {
        Releaser {
            project,
            lang,
            cp,
            key,
            trusted: HashSet::new(),
            published: None,
        }
    }

    /// Builds and, when the bundle's contents changed, publishes and installs it. `Ok(None)`:
    /// nothing changed.
    pub async fn release(&mut self) -> anyhow::Result<Option<Served>> {
        let started = Instant::now();
        eprintln!(
            "annex dev: building {} ({})",
            self.project.display(),
            self.lang.as_str()
        );
        build::compile(&self.project, self.lang).await?;
        let manifest_path = self.project.join(MANIFEST_PATH);
        let raw = std::fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        let manifest = pack::parse_manifest(&manifest_path, &raw)?;
        let contents = fingerprint(&self.project, &raw)?;
        if self.published.as_ref() == Some(&contents) {
            eprintln!("annex dev: the bundle did not change; nothing to publish");
            return Ok(None);
        }

        let slug = format!("{}.{}", manifest.publisher, manifest.name).to_lowercase();
        let existing = self.versions(&slug).await?;
        let version = next_dev_version(&manifest.version, &existing);
        let staged = build::stage(&self.project, Some(&with_version(&raw, &version)?))?;
        let bundle = self
            .project
            .join(build::BUILD_DIR)
            .join("dev/bundle.tar.zst");
        if let Some(parent) = bundle.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let packed = pack::pack(&staged, &bundle, DEFAULT_LEVEL).await?;

        self.trust(&manifest.publisher).await?;
        let signature = sign_bundle(
            &self.key,
            &packed.hash,
            &manifest.publisher,
            &manifest.name,
            &version,
        );
        let header = pb::PublishHeader {
            signature,
            key_id: self.key.public_key().key_id(),
            declared_hash: packed.hash.to_string(),
            declared_size: packed.size,
        };
        let published = publish::upload(&self.cp, &bundle, header)
            .await
            .with_context(|| format!("publishing {slug} {version}"))?;
        let ext = published.extension.unwrap_or_default();
        self.install(&slug, &version).await?;
        self.published = Some(contents);
        eprintln!(
            "annex dev: {slug} {version} is installed for tenant {DEV_TENANT} ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
        Ok(Some(Served {
            slug,
            registry_id: ext.id,
            version,
            content_hash: packed.hash.to_string(),
            ui_entry: manifest.ui.as_ref().map(|ui| ui.entry.clone()),
            endpoints: endpoints(&manifest),
        }))
    }

    /// The extension's published versions; none when it was never published.
    async fn versions(&self, slug: &str) -> anyhow::Result<Vec<String>> {
        let listed = self
            .cp
            .registry()
            .list_versions(pb::ListVersionsRequest {
                extension: slug.to_owned(),
            })
            .await;
        match listed {
            Ok(r) => Ok(r
                .into_inner()
                .versions
                .into_iter()
                .map(|v| v.version)
                .collect()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(Vec::new()),
            Err(status) => Err(remote(status).context(format!("listing the versions of {slug}"))),
        }
    }

    /// Trusts the dev publisher key for `publisher` unless it already is.
    async fn trust(&mut self, publisher: &str) -> anyhow::Result<()> {
        if self.trusted.contains(publisher) {
            return Ok(());
        }
        let key_id = self.key.public_key().key_id();
        let keys = self
            .cp
            .trust()
            .list_keys(pb::ListKeysRequest {
                publisher: publisher.to_owned(),
            })
            .await
            .map_err(remote)
            .context("listing trusted keys")?
            .into_inner()
            .keys;
        if !keys.iter().any(|k| k.key_id == key_id && !k.revoked) {
            self.cp
                .trust()
                .add_key(pb::AddKeyRequest {
                    publisher: publisher.to_owned(),
                    public_key: self.key.public_key().to_pem(),
                    ..Default::default()
                })
                .await
                .map_err(remote)
                .with_context(|| format!("trusting the dev publisher key for {publisher}"))?;
            eprintln!("annex dev: trusted the dev publisher key {key_id} for {publisher}");
        }
        self.trusted.insert(publisher.to_owned());
        Ok(())
    }

    /// Upgrades the dev tenant's install to `version`, or installs it the first time.
    async fn install(&self, slug: &str, version: &str) -> anyhow::Result<()> {
        let mut installs = self.cp.installs();
        let current = installs
            .get_install(pb::InstallRef {
                tenant_id: DEV_TENANT.to_owned(),
                extension: slug.to_owned(),
            })
            .await;
        let result = match current {
            Ok(_) => installs
                .upgrade(pb::UpgradeRequest {
                    tenant_id: DEV_TENANT.to_owned(),
                    extension: slug.to_owned(),
                    version: version.to_owned(),
                    // Endpoints come and go while developing; a schedule on a removed one is
                    // disabled rather than blocking the upgrade.
                    disable_missing_schedules: true,
                })
                .await
                .map(|_| ()),
            Err(status) if status.code() == tonic::Code::NotFound => installs
                .install(pb::InstallRequest {
                    tenant_id: DEV_TENANT.to_owned(),
                    extension: slug.to_owned(),
                    version: version.to_owned(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            Err(status) => Err(status),
        };
        result
            .map_err(remote)
            .with_context(|| format!("installing {slug} {version} for tenant {DEV_TENANT}"))
    }
}

/// The next dev version of `declared` among `existing` (see the module docs).
pub fn next_dev_version<S: AsRef<str>>(declared: &VersionSpec, existing: &[S]) -> String {
    let base = match declared {
        VersionSpec::Exact(v) => v.split('+').next().unwrap_or(v).to_owned(),
        VersionSpec::Wildcard { major, minor } => format!("{major}.{minor}.0"),
    };
    let prefix = if base.contains('-') {
        format!("{base}.dev.")
    } else {
        format!("{base}-dev.")
    };
    let n = existing
        .iter()
        .filter_map(|v| v.as_ref().strip_prefix(&prefix))
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .map_or(1, |n| n.saturating_add(1));
    format!("{prefix}{n}")
}

/// The manifest bytes with `version` set (other fields as written).
fn with_version(raw: &[u8], version: &str) -> anyhow::Result<Vec<u8>> {
    let mut value: serde_json::Value =
        serde_json::from_slice(raw).context("reading manifest.json")?;
    let obj = value
        .as_object_mut()
        .context("manifest.json is not a JSON object")?;
    obj.insert("version".into(), serde_json::Value::from(version));
    Ok(serde_json::to_vec_pretty(&value)?)
}

/// A hash over what the bundle would hold, before its version is set: the manifest bytes,
/// the component and every UI file (path and bytes, in a fixed order).
fn fingerprint(project: &Path, manifest: &[u8]) -> anyhow::Result<ContentHash> {
    let mut hasher = ContentHasher::new();
    let mut add = |label: &str, bytes: &[u8]| {
        hasher.update(format!("{label}\0{}\0", bytes.len()).as_bytes());
        hasher.update(bytes);
    };
    add(MANIFEST_PATH, manifest);
    let component = project.join(COMPONENT_PATH);
    add(
        COMPONENT_PATH,
        &std::fs::read(&component).with_context(|| format!("reading {}", component.display()))?,
    );
    let mut ui = Vec::new();
    collect_files(&project.join("ui"), "ui", &mut ui);
    ui.sort();
    for (rel, path) in ui {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        add(&rel, &bytes);
    }
    Ok(hasher.finish())
}

fn collect_files(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{rel}/{name}");
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect_files(&entry.path(), &rel, out),
            Ok(t) if t.is_file() => out.push((rel, entry.path())),
            _ => {}
        }
    }
}

fn endpoints(manifest: &Manifest) -> Vec<String> {
    manifest
        .endpoints
        .iter()
        .map(|e| format!("{} {}", e.method.to_uppercase(), e.path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(v: &str) -> VersionSpec {
        VersionSpec::Exact(v.to_owned())
    }

    #[test]
    fn dev_versions_count_up_from_the_manifest_version() {
        let none: [&str; 0] = [];
        assert_eq!(next_dev_version(&exact("0.1.0"), &none), "0.1.0-dev.1");
        assert_eq!(
            next_dev_version(&exact("0.1.0"), &["0.1.0-dev.1", "0.1.0-dev.9", "0.1.0"]),
            "0.1.0-dev.10"
        );
        // Other bases and non-numeric suffixes do not count.
        assert_eq!(
            next_dev_version(&exact("0.2.0"), &["0.1.0-dev.5", "0.2.0-dev.x"]),
            "0.2.0-dev.1"
        );
        assert_eq!(
            next_dev_version(&exact("1.0.0-beta.2+b7"), &["1.0.0-beta.2.dev.3"]),
            "1.0.0-beta.2.dev.4"
        );
        assert_eq!(
            next_dev_version(&VersionSpec::Wildcard { major: 2, minor: 3 }, &none),
            "2.3.0-dev.1"
        );
    }

    #[test]
    fn dev_versions_are_valid_manifest_versions() {
        let raw = br#"{"name":"n","publisher":"p","version":"0.1.0","runtime":"wasm-js@1"}"#;
        for version in ["0.1.0-dev.1", "1.0.0-beta.2.dev.4"] {
            let rewritten = with_version(raw, version).expect("rewritten");
            let manifest = Manifest::parse(&rewritten).expect("valid");
            assert_eq!(manifest.version, exact(version));
        }
    }

    #[test]
    fn the_fingerprint_follows_the_bundle_contents_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        std::fs::create_dir_all(p.join("dist")).expect("mkdir");
        std::fs::create_dir_all(p.join("ui")).expect("mkdir");
        std::fs::create_dir_all(p.join("src")).expect("mkdir");
        std::fs::write(p.join("dist/main.wasm"), b"component").expect("write");
        std::fs::write(p.join("ui/index.html"), b"<p>1</p>").expect("write");
        let first = fingerprint(p, b"{}").expect("hash");
        std::fs::write(p.join("src/lib.rs"), b"// comment").expect("write");
        assert_eq!(fingerprint(p, b"{}").expect("hash"), first);
        std::fs::write(p.join("ui/index.html"), b"<p>2</p>").expect("write");
        assert_ne!(fingerprint(p, b"{}").expect("hash"), first);
        assert_ne!(fingerprint(p, b"{ }").expect("hash"), first);
    }
}
