//! Deterministic packing of an extension directory into `bundle.tar.zst`.
//!
//! The same directory contents and options always give the same bytes (and so the same content
//! hash): entries sorted by path, mtime 0, uid/gid 0, no user or group names, mode 0644 for files
//! and 0755 for directories.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::{ArchiveError, EntryProblem, MANIFEST_PATH, check_path};

/// Default zstd level. Measured on StarlingMonkey's 10 MiB embedding wasm
/// (`zstd -q -<level> -c starlingmonkey_embedding.wasm | wc -c`, release `zstd` 1.5, one core):
/// level 3 gives 3.09 MB in 0.07 s, level 9 2.77 MB in 0.32 s, level 15 2.71 MB in 2.5 s and
/// level 19 (Alga's SDK) 2.47 MB in 5.7 s. Decompression speed barely depends on the level, so
/// level 19 buys 11% on the wire for 18× the pack time; 9 keeps `annex pack` interactive.
/// Pass 19 to match Alga's output size.
pub const DEFAULT_LEVEL: i32 = 9;

/// Files in the source directory's root that are outputs of packing, never inputs.
const OUTPUTS: [&str; 2] = ["bundle.tar.zst", "bundle.sha256"];

/// How to pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackOptions {
    /// zstd compression level (1–22).
    pub level: i32,
}

impl Default for PackOptions {
    fn default() -> PackOptions {
        PackOptions {
            level: DEFAULT_LEVEL,
        }
    }
}

/// Packs `dir` with [`PackOptions::default`].
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>, ArchiveError> {
    pack_dir_with(dir, &PackOptions::default())
}

/// Packs every non-hidden regular file and directory under `dir` (`manifest.json`, `dist/**`,
/// `ui/**` and anything else an author staged), skipping dot-files and a previous
/// `bundle.tar.zst`/`bundle.sha256` at the root. Symlinks and special files are refused rather
/// than followed, so what is packed is exactly what is on disk. `manifest.json` must exist.
pub fn pack_dir_with(dir: &Path, options: &PackOptions) -> Result<Vec<u8>, ArchiveError> {
    let mut entries = Vec::new();
    collect(dir, "", &mut entries)?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if !entries.iter().any(|e| e.path == MANIFEST_PATH && !e.is_dir) {
        return Err(ArchiveError::MissingManifest);
    }

    let in_memory = |source: io::Error| ArchiveError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut encoder =
        zstd::stream::write::Encoder::new(Vec::new(), options.level).map_err(in_memory)?;
    // A content checksum lets unpack tell corruption from a valid but odd archive.
    encoder.include_checksum(true).map_err(in_memory)?;
    let mut builder = tar::Builder::new(encoder);
    for entry in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if entry.is_dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, format!("{}/", entry.path), io::empty())
                .map_err(in_memory)?;
        } else {
            let source = dir.join(&entry.path);
            let data = fs::read(&source).map_err(|e| ArchiveError::Io {
                path: source,
                source: e,
            })?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            builder
                .append_data(&mut header, &entry.path, data.as_slice())
                .map_err(in_memory)?;
        }
    }
    let mut encoder = builder.into_inner().map_err(in_memory)?;
    encoder.flush().map_err(in_memory)?;
    encoder.finish().map_err(in_memory)
}

struct Staged {
    /// Relative, `/`-separated, validated by the same rule as unpack.
    path: String,
    is_dir: bool,
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<Staged>) -> Result<(), ArchiveError> {
    let io_err = |source| ArchiveError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for item in fs::read_dir(dir).map_err(io_err)? {
        let item = item.map_err(io_err)?;
        let name = item.file_name();
        let Some(name) = name.to_str() else {
            return Err(ArchiveError::ForbiddenEntry {
                path: format!("{prefix}{}", name.to_string_lossy()),
                reason: EntryProblem::NotUtf8,
            });
        };
        if name.starts_with('.') || (prefix.is_empty() && OUTPUTS.contains(&name)) {
            continue;
        }
        let rel = format!("{prefix}{name}");
        let file_type = item.file_type().map_err(io_err)?;
        let refuse = |reason| ArchiveError::ForbiddenEntry {
            path: rel.clone(),
            reason,
        };
        let is_dir = if file_type.is_dir() {
            true
        } else if file_type.is_file() {
            false
        } else if file_type.is_symlink() {
            return Err(refuse(EntryProblem::Symlink));
        } else if is_fifo(&file_type) {
            return Err(refuse(EntryProblem::Fifo));
        } else {
            return Err(refuse(EntryProblem::Device));
        };
        let path = check_path(&rel, is_dir)
            .map_err(refuse)?
            .ok_or_else(|| refuse(EntryProblem::EmptySegment))?;
        if is_dir {
            collect(&item.path(), &format!("{path}/"), out)?;
        }
        out.push(Staged { path, is_dir });
    }
    Ok(())
}

#[cfg(unix)]
fn is_fifo(file_type: &fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    file_type.is_fifo()
}

#[cfg(not(unix))]
fn is_fifo(_: &fs::FileType) -> bool {
    false
}
