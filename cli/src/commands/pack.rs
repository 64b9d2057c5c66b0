//! `annex pack <dir>`: validate the manifest and the component, then pack the directory into a
//! deterministic `bundle.tar.zst` (annex-bundle's packer) with a `bundle.sha256` sidecar
//! holding the content hash's hex and a newline.
//!
//! The manifest is checked before any packing, with the same validator the control plane runs
//! at publish, so an author sees every issue at once and locally. Large inputs show a spinner
//! on stderr while the (blocking) packer runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use annex_bundle::archive::{COMPONENT_PATH, MANIFEST_PATH, PackOptions, pack_dir_with};
use annex_bundle::hash::ContentHash;
use annex_bundle::manifest::{Manifest, ManifestError};
use anyhow::Context as _;
use serde_json::json;

use super::blocking;
use crate::cli::PackArgs;
use crate::files;
use crate::output::{Report, fields, note};

/// Inputs above this size get a spinner: level-9 zstd runs at roughly 30 MB/s on one core, so
/// from here on packing takes long enough that silence looks like a hang.
const SPINNER_FROM_BYTES: u64 = 8 * 1024 * 1024;

/// WebAssembly binary magic, and the version/layer words of a component and a core module.
const WASM_MAGIC: &[u8] = b"\0asm";
const COMPONENT_LAYER: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];

pub async fn run(args: PackArgs) -> anyhow::Result<Report> {
    let dir = args.dir.clone();
    let manifest = check_dir(&dir)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| dir.join("bundle.tar.zst"));
    let sidecar = files::sha256_sidecar(&out);
    let (input_bytes, input_files) = measure(&dir);

    let spinner = (input_bytes >= SPINNER_FROM_BYTES).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!(
            "packing {} ({input_files} files, {})",
            dir.display(),
            human_bytes(input_bytes)
        ));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let options = PackOptions { level: args.level };
    let packed = blocking({
        let dir = dir.clone();
        move || {
            let bytes = pack_dir_with(&dir, &options)
                .map_err(|e| anyhow::anyhow!("packing {}: {e}", dir.display()))?;
            let hash = ContentHash::of(&bytes);
            Ok((bytes, hash))
        }
    })
    .await;
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    let (bytes, hash) = packed?;
    files::write_atomic(&out, &bytes)?;
    files::write_atomic(&sidecar, format!("{}\n", hash.hex()).as_bytes())?;

    let slug = format!("{}.{}", manifest.publisher, manifest.name).to_lowercase();
    let text = format!(
        "{}next: annex sign {} --key <signing-key.pem>\n",
        fields(&[
            (
                "extension",
                format!("{slug} {} (runtime {})", manifest.version, manifest.runtime)
            ),
            (
                "bundle",
                format!("{} ({})", out.display(), human_bytes(bytes.len() as u64))
            ),
            ("content hash", hash.to_string()),
            ("sidecar", sidecar.display().to_string()),
        ]),
        out.display()
    );
    let json = json!({
        "bundle": out,
        "sidecar": sidecar,
        "content_hash": hash,
        "size_bytes": bytes.len(),
        "publisher": manifest.publisher,
        "name": manifest.name,
        "version": manifest.version,
        "slug": slug,
    });
    Ok(Report::new(text, json))
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
    let raw = files::read(&manifest_path)?;
    let manifest = Manifest::parse(&raw).map_err(|e| match e {
        ManifestError::Invalid(issues) => {
            let issues: Vec<String> = issues
                .iter()
                .map(|i| i.to_string().trim_end_matches('.').to_owned())
                .collect();
            anyhow::anyhow!(
                "{} is not a valid manifest: {}",
                manifest_path.display(),
                issues.join("; ")
            )
        }
        other => anyhow::anyhow!("{}: {other}", manifest_path.display()),
    })?;

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
