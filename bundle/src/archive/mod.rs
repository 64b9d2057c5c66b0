//! `bundle.tar.zst`: deterministic packing of an extension directory and safe, capped unpacking
//! into memory (docs/design/alga-compatibility.md, "Bundles and signing").
//!
//! This module owns the entry rules every consumer relies on: only regular files and
//! directories; no absolute paths, `..`, hidden, empty or oddly-charactered segments; caps on
//! archive size, unpacked size, per-file size, entry count and compression ratio, enforced while
//! decoding so a decompression bomb never costs more memory than the cap. Where Alga's runner
//! silently skips a bad entry, Annex rejects the whole bundle and names the entry. It must not
//! write unpacked files to disk (the worker owns its cache layout), hash (see [`crate::hash`]) or
//! verify signatures. Everything here is blocking CPU work: async callers run it on a blocking
//! thread.

mod pack;
mod unpack;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Bound;
use std::path::PathBuf;

use crate::manifest::{Manifest, ManifestError};

pub use pack::{DEFAULT_LEVEL, PackOptions, pack_dir, pack_dir_with};
pub use unpack::{Inspected, inspect, read_manifest, unpack};

const MIB: u64 = 1024 * 1024;

/// The root manifest.
pub const MANIFEST_PATH: &str = "manifest.json";
/// The only entry the worker loads (a WebAssembly component).
pub const COMPONENT_PATH: &str = "dist/main.wasm";
/// Everything under this prefix is served as the extension's iframe UI.
pub(crate) const UI_PREFIX: &str = "ui/";

/// Caps applied while unpacking. The defaults suit publish and the worker alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Compressed size. 200 MiB is Alga's upload cap, so every bundle Alga accepts fits.
    pub max_archive_bytes: u64,
    /// Decompressed tar stream (headers and padding included, so at least the sum of file sizes).
    /// 512 MiB bounds the memory one unpack may take while leaving room for a large component
    /// plus its UI.
    pub max_unpacked_bytes: u64,
    /// Tar entries, directories included. 10 000 covers a bundled single-page app with room to
    /// spare; more is a sign of a packing mistake (a `node_modules/` swept in) or an attack.
    pub max_files: usize,
    /// The decompressed stream may be at most this many times the compressed size (above a
    /// 1 MiB grace, so tiny bundles full of tar padding are never refused). Real bundles measure
    /// 3–10×; 200× leaves headroom for repetitive assets while cutting a bomb off after a few
    /// megabytes instead of at `max_unpacked_bytes`.
    pub max_ratio: u64,
    /// A single file. 128 MiB is an order of magnitude above a componentised JS guest (~10 MiB
    /// for StarlingMonkey) and keeps any single buffer bounded.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_archive_bytes: 200 * MIB,
            max_unpacked_bytes: 512 * MIB,
            max_files: 10_000,
            max_ratio: 200,
            max_file_bytes: 128 * MIB,
        }
    }
}

/// Which cap a bundle exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    ArchiveBytes,
    UnpackedBytes,
    Files,
    Ratio,
    FileBytes,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::ArchiveBytes => "compressed size in bytes",
            Limit::UnpackedBytes => "unpacked size in bytes",
            Limit::Files => "number of entries",
            Limit::Ratio => "compression ratio",
            Limit::FileBytes => "size of one file in bytes",
        })
    }
}

/// Why an entry is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryProblem {
    Absolute,
    ParentSegment,
    HiddenSegment,
    EmptySegment,
    /// A backslash, NUL or other control character.
    BadCharacter,
    NotUtf8,
    Symlink,
    Hardlink,
    /// A character or block device (or, when packing, a socket).
    Device,
    Fifo,
    /// Any other tar entry type (GNU sparse, contiguous, unknown), with its type byte.
    UnsupportedType(u8),
    Duplicate,
    /// A file where a directory is needed, or the reverse (`a` and `a/b` both files).
    FileDirConflict,
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryProblem::Absolute => f.write_str("absolute path"),
            EntryProblem::ParentSegment => f.write_str("`..` path segment"),
            EntryProblem::HiddenSegment => f.write_str("hidden (dot-leading) path segment"),
            EntryProblem::EmptySegment => f.write_str("empty path segment"),
            EntryProblem::BadCharacter => f.write_str("backslash or control character in path"),
            EntryProblem::NotUtf8 => f.write_str("path is not UTF-8"),
            EntryProblem::Symlink => f.write_str("symbolic link"),
            EntryProblem::Hardlink => f.write_str("hard link"),
            EntryProblem::Device => f.write_str("device or socket"),
            EntryProblem::Fifo => f.write_str("named pipe"),
            EntryProblem::UnsupportedType(t) => {
                write!(f, "unsupported entry type {:?}", char::from(*t))
            }
            EntryProblem::Duplicate => f.write_str("duplicate path"),
            EntryProblem::FileDirConflict => f.write_str("file and directory share a path"),
        }
    }
}

/// Why a bundle could not be packed, unpacked or read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Not a zstd stream, not a tar archive, or truncated.
    #[error("bundle is not a valid tar.zst archive: {0}")]
    Corrupt(String),
    #[error("forbidden bundle entry `{path}`: {reason}")]
    ForbiddenEntry { path: String, reason: EntryProblem },
    /// `limit` is in bytes, entries or times, as `what` says.
    #[error("bundle exceeds the limit on {what} ({limit})")]
    TooLarge { what: Limit, limit: u64 },
    #[error("bundle has no manifest.json at its root (or in its single top-level directory)")]
    MissingManifest,
    #[error("bundle has no dist/main.wasm")]
    MissingComponent,
    #[error("bundle manifest is invalid: {0}")]
    Manifest(#[from] ManifestError),
    /// Reading the source directory while packing.
    #[error("failed to read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// An unpacked bundle: every regular file by its normalised path (`ui/index.html`, no `./`).
/// Directories are implied by the paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundle {
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// The root `manifest.json`. [`unpack`] has already lifted a bundle whose files all sit in
    /// one top-level directory holding a `manifest.json` (`ext/manifest.json`, `ext/dist/…`) to
    /// the root, as Alga's finalize accepts that layout.
    pub(crate) fn manifest_bytes(&self) -> Result<&[u8], ArchiveError> {
        self.file(MANIFEST_PATH)
            .ok_or(ArchiveError::MissingManifest)
    }

    pub fn manifest(&self) -> Result<Manifest, ArchiveError> {
        Ok(Manifest::parse(self.manifest_bytes()?)?)
    }

    /// `dist/main.wasm`, the component the worker compiles.
    pub fn component(&self) -> Option<&[u8]> {
        self.file(COMPONENT_PATH)
    }

    pub fn require_component(&self) -> Result<&[u8], ArchiveError> {
        self.component().ok_or(ArchiveError::MissingComponent)
    }

    /// Files under `ui/`, with that prefix removed (`index.html`, `assets/app.js`), sorted.
    pub fn ui_files(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.files
            .range::<str, _>((Bound::Included(UI_PREFIX), Bound::Unbounded))
            .map_while(|(path, bytes)| {
                let rel = path.strip_prefix(UI_PREFIX)?;
                Some((rel, bytes.as_slice()))
            })
    }
}

/// Normalises and checks one entry path; `Ok(None)` for the archive root directory (`./`).
/// Shared by pack and unpack so that everything `pack` writes, `unpack` accepts.
fn check_path(raw: &str, is_dir: bool) -> Result<Option<String>, EntryProblem> {
    // GNU tar run as `tar -C stage -cf - .` names entries `./manifest.json`.
    let mut path = raw.strip_prefix("./").unwrap_or(raw);
    if is_dir {
        path = path.strip_suffix('/').unwrap_or(path);
        if path.is_empty() || path == "." {
            return Ok(None);
        }
    }
    if path.starts_with('/') {
        return Err(EntryProblem::Absolute);
    }
    if path.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(EntryProblem::BadCharacter);
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return Err(EntryProblem::EmptySegment);
        }
        if segment == ".." {
            return Err(EntryProblem::ParentSegment);
        }
        if segment.starts_with('.') {
            return Err(EntryProblem::HiddenSegment);
        }
    }
    Ok(Some(path.to_owned()))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod inspect_tests;
