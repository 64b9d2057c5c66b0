//! `annex pack <dir>`: validate the manifest and the component, then pack the directory into a
//! deterministic `bundle.tar.zst` (annex-bundle's packer) with a `bundle.sha256` sidecar
//! holding the content hash's hex and a newline.
//!
//! The manifest is checked before any packing, with the same validator the control plane runs
//! at publish, so an author sees every issue at once and locally. Large inputs show a spinner
//! on stderr while the (blocking) packer runs.

use std::path::{Path, PathBuf};

use annex_bundle::archive::{COMPONENT_PATH, MANIFEST_PATH, PackOptions, pack_dir_with};
use annex_bundle::hash::ContentHash;
use annex_bundle::manifest::{Manifest, ManifestError};
use anyhow::Context as _;
use serde_json::json;

use super::blocking;
use crate::cli::PackArgs;
use crate::files;
use crate::output::{Report, fields, note};
use crate::progress;

/// Inputs above this size get a spinner: level-9 zstd runs at roughly 30 MB/s on one core, so
/// from here on packing takes long enough that silence looks like a hang.
const SPINNER_FROM_BYTES: u64 = 8 * 1024 * 1024;

/// WebAssembly binary magic, and the version/layer words of a component and a core module.
const WASM_MAGIC: &[u8] = b"\0asm";
const COMPONENT_LAYER: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];

pub async fn run(args: PackArgs) -> anyhow::Result<Report> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.dir.join("bundle.tar.zst"));
    let packed = pack(&args.dir, &out, args.level).await?;
    Ok(packed.report())
}

/// What [`pack`] wrote.
#[derive(Debug)]
pub struct Packed {
    pub manifest: Manifest,
    pub out: PathBuf,
    pub sidecar: PathBuf,
    pub hash: ContentHash,
    pub size: u64,
}

/// Checks `dir` (manifest and component), packs it at zstd `level` into `out` and writes the
/// hash sidecar beside it. `annex pack` and `annex build` both end here.
pub async fn pack(dir: &Path, out: &Path, level: i32) -> anyhow::Result<Packed> {
    let manifest = check_dir(dir)?;
    let sidecar = files::sha256_sidecar(out);
    let (input_bytes, input_files) = measure(dir);

    let spinner = (input_bytes >= SPINNER_FROM_BYTES).then(|| {
        progress::spinner(format!(
            "packing {} ({input_files} files, {})",
            dir.display(),
            human_bytes(input_bytes)
        ))
    });
    let options = PackOptions { level };
    let packed = blocking({
        let dir = dir.to_path_buf();
        move || {
            let bytes = pack_dir_with(&dir, &options)
                .map_err(|e| anyhow::anyhow!("packing {}: {e}", dir.display()))?;
            let hash = ContentHash::of(&bytes);
            Ok((bytes, hash))
        }
    })
    .await;
    drop(spinner);
    let (bytes, hash) = packed?;
    files::write_atomic(out, &bytes)?;
    files::write_atomic(&sidecar, format!("{}\n", hash.hex()).as_bytes())?;
    Ok(Packed {
        manifest,
        out: out.to_path_buf(),
        sidecar,
        hash,
        size: bytes.len() as u64,
    })
}

impl Packed {
    pub fn slug(&self) -> String {
        format!("{}.{}", self.manifest.publisher, self.manifest.name).to_lowercase()
    }

    /// What `annex pack` prints: the extension, the bundle, its hash, and the next step.
    pub fn report(&self) -> Report {
        let (manifest, out, slug) = (&self.manifest, &self.out, self.slug());
        let text = format!(
            "{}next: annex sign {} --key <signing-key.pem>\n",
            fields(&[
                (
                    "extension",
                    format!("{slug} {} (runtime {})", manifest.version, manifest.runtime)
                ),
                (
                    "bundle",
                    format!("{} ({})", out.display(), human_bytes(self.size))
                ),
                ("content hash", self.hash.to_string()),
                ("sidecar", self.sidecar.display().to_string()),
            ]),
            out.display()
        );
        let json = json!({
            "bundle": out,
            "sidecar": self.sidecar,
            "content_hash": self.hash,
            "size_bytes": self.size,
            "publisher": manifest.publisher,
            "name": manifest.name,
            "version": manifest.version,
            "slug": slug,
        });
        Report::new(text, json)
    }
}

/// Validates `manifest.json` and `dist/main.wasm` before packing; notes a missing UI entry.
fn check_dir(dir: &Path) -> anyhow::Result<Manifest> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    let manifest_path = dir.join(MANIFEST_PATH);
    if !manifest_path.is_file() {
        anyhow::bail!(
            "{} has no {MANIFEST_PATH}; an extension directory holds manifest.json, \
             dist/main.wasm and optionally ui/",
            dir.display()
        );
    }
    let manifest = parse_manifest(&manifest_path, &files::read(&manifest_path)?)?;

    let component_path = dir.join(COMPONENT_PATH);
    let mut head = [0u8; 8];
    let read = std::fs::File::open(&component_path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .with_context(|| {
            format!(
                "reading {} (build your component there first)",
                component_path.display()
            )
        })?;
    if read < 8 || &head[..4] != WASM_MAGIC {
        anyhow::bail!("{} is not a WebAssembly binary", component_path.display());
    }
    if head[4..] == CORE_MODULE_VERSION {
        anyhow::bail!(
            "{} is a core WebAssembly module, not a component; build for wasm32-wasip2 or run \
             `wasm-tools component new` on it",
            component_path.display()
        );
    }
    if head[4..] != COMPONENT_LAYER {
        note(format!(
            "{} has an unfamiliar component version; the worker may refuse it",
            component_path.display()
        ));
    }
    if let Some(ui) = manifest
        .ui
        .as_ref()
        .filter(|ui| !dir.join(&ui.entry).is_file())
    {
        note(format!(
            "the manifest's ui.entry `{}` is not in {}; the UI will answer 404",
            ui.entry,
            dir.display()
        ));
    }
    Ok(manifest)
}

/// Validates manifest bytes read from `path` with the registry's rules; every issue on one line.
pub fn parse_manifest(path: &Path, raw: &[u8]) -> anyhow::Result<Manifest> {
    Manifest::parse(raw).map_err(|e| match e {
        ManifestError::Invalid(issues) => {
            let issues: Vec<String> = issues
                .iter()
                .map(|i| i.to_string().trim_end_matches('.').to_owned())
                .collect();
            anyhow::anyhow!(
                "{} is not a valid manifest: {}",
                path.display(),
                issues.join("; ")
            )
        }
        other => anyhow::anyhow!("{}: {other}", path.display()),
    })
}

/// Total bytes and count of the non-hidden regular files under `dir` (what the packer takes),
/// best effort: only used to decide on the spinner.
fn measure(dir: &Path) -> (u64, u64) {
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    let (mut bytes, mut count) = (0, 0);
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => {
                    bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                    count += 1;
                }
                _ => {}
            }
        }
    }
    (bytes, count)
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(200 * 1024 * 1024), "200.0 MiB");
    }
}
