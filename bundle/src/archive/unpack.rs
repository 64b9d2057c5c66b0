//! Streaming, capped unpacking of `bundle.tar.zst` into memory.
//!
//! The zstd decoder feeds tar through [`Capped`], which counts decoded bytes and fails the read
//! that would cross the cap, so neither the tar parser nor this code ever holds more than the cap.
//! A file's declared size is checked against the remaining budget before its buffer is allocated.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, Read};

use super::{
    ArchiveError, Bundle, COMPONENT_PATH, EntryProblem, Limit, Limits, MANIFEST_PATH, MIB,
    check_path,
};
use crate::manifest::Manifest;

/// The zstd frame magic number, little-endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Largest zstd window accepted: 2^25 = 32 MiB, the decoder's memory per unpack. `zstd -19`
/// (Alga's SDK) uses 2^23 and levels up to 20 stay within 2^25; only `--ultra -21/-22` or
/// `--long` need more, and those bundles are refused as corrupt rather than letting a bundle
/// choose a 128 MiB+ allocation.
const WINDOW_LOG_MAX: u32 = 25;

/// Below this many decoded bytes the ratio cap does not apply: a tiny bundle is mostly tar
/// headers and zero padding, which compresses far beyond any sensible ratio.
const RATIO_GRACE_BYTES: u64 = MIB;

/// Unpacks a whole bundle into memory, enforcing `limits` while decoding.
pub fn unpack(bytes: &[u8], limits: &Limits) -> Result<Bundle, ArchiveError> {
    walk(bytes, bytes.len() as u64, limits, &|_| Some(u64::MAX))
}

/// What [`inspect`] keeps of a bundle it streamed through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub manifest: Manifest,
    /// The first `component_head` bytes of `dist/main.wasm` (fewer if the file is shorter);
    /// `None` when the bundle has no component.
    pub component_head: Option<Vec<u8>>,
}

/// Validates every entry of a bundle read from `reader` (`compressed_len` bytes in all) exactly
/// as [`unpack`] does, while keeping only the manifest and the first `component_head` bytes of
/// `dist/main.wasm`: memory stays bounded by the manifest and the decoder whatever the bundle's
/// size. Publish streams a spooled upload through this.
pub fn inspect<R: BufRead>(
    reader: R,
    compressed_len: u64,
    limits: &Limits,
    component_head: usize,
) -> Result<Inspected, ArchiveError> {
    let head = component_head as u64;
    let bundle = walk(reader, compressed_len, limits, &|path| {
        if is_root_or_wrapped(path, MANIFEST_PATH) {
            Some(u64::MAX)
        } else if is_root_or_wrapped(path, COMPONENT_PATH) {
            Some(head)
        } else {
            None
        }
    })?;
    Ok(Inspected {
        manifest: bundle.manifest()?,
        component_head: bundle.component().map(<[u8]>::to_vec),
    })
}

/// `path` is `name` at the root or inside one top-level directory (see `lift_wrapped`).
fn is_root_or_wrapped(path: &str, name: &str) -> bool {
    path == name || path.split_once('/').is_some_and(|(_, rest)| rest == name)
}

/// Validates every entry of a bundle exactly as [`unpack`] does but keeps only the manifest, then
/// parses it. Publish uses this: the manifest comes from the bundle, and a bundle accepted at
/// publish is one every worker can unpack.
pub fn read_manifest(bytes: &[u8], limits: &Limits) -> Result<Manifest, ArchiveError> {
    let bundle = walk(bytes, bytes.len() as u64, limits, &|path| {
        is_root_or_wrapped(path, MANIFEST_PATH).then_some(u64::MAX)
    })?;
    bundle.manifest()
}

/// The decoded-byte cap and which limit it comes from.
#[derive(Clone, Copy)]
struct Budget {
    cap: u64,
    binding: Limit,
    limit: u64,
}

impl Budget {
    fn new(compressed_len: u64, limits: &Limits) -> Budget {
        let ratio_cap = compressed_len
            .saturating_mul(limits.max_ratio)
            .max(RATIO_GRACE_BYTES);
        if ratio_cap < limits.max_unpacked_bytes {
            Budget {
                cap: ratio_cap,
                binding: Limit::Ratio,
                limit: limits.max_ratio,
            }
        } else {
            Budget {
                cap: limits.max_unpacked_bytes,
                binding: Limit::UnpackedBytes,
                limit: limits.max_unpacked_bytes,
            }
        }
    }

    /// Any I/O error after the cap was crossed is the cap, whatever tar made of it; any other is
    /// a corrupt archive (or, for a streamed input, a failed read, named by its message).
    fn io_error(&self, decoded: &Cell<u64>, e: io::Error) -> ArchiveError {
        if decoded.get() > self.cap {
            self.exceeded()
        } else {
            ArchiveError::Corrupt(e.to_string())
        }
    }

    fn exceeded(&self) -> ArchiveError {
        ArchiveError::TooLarge {
            what: self.binding,
            limit: self.limit,
        }
    }
}

/// Counts bytes read and refuses to deliver more than `cap` of them.
struct Capped<'a, R> {
    inner: R,
    read: &'a Cell<u64>,
    cap: u64,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let so_far = self.read.get();
        // Allow one byte past the cap so that reaching it exactly is distinguishable from
        // crossing it.
        let allowed = self.cap.saturating_add(1).saturating_sub(so_far);
        if allowed == 0 {
            return Err(io::Error::other("bundle decompressed size cap exceeded"));
        }
        let len = buf
            .len()
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..len])?;
        self.read.set(so_far + n as u64);
        if self.read.get() > self.cap {
            return Err(io::Error::other("bundle decompressed size cap exceeded"));
        }
        Ok(n)
    }
}

/// Tracks every path seen so duplicates and file/directory clashes are refused.
#[derive(Default)]
struct Tree {
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
}

impl Tree {
    fn ancestors(path: &str) -> impl Iterator<Item = &str> {
        path.match_indices('/').map(move |(i, _)| &path[..i])
    }

    fn add_file(&mut self, path: &str) -> Result<(), EntryProblem> {
        if self.files.contains(path) {
            return Err(EntryProblem::Duplicate);
        }
        if self.dirs.contains(path) || Tree::ancestors(path).any(|a| self.files.contains(a)) {
            return Err(EntryProblem::FileDirConflict);
        }
        self.dirs.extend(Tree::ancestors(path).map(str::to_owned));
        self.files.insert(path.to_owned());
        Ok(())
    }

    fn add_dir(&mut self, path: &str) -> Result<(), EntryProblem> {
        if self.files.contains(path) || Tree::ancestors(path).any(|a| self.files.contains(a)) {
            return Err(EntryProblem::FileDirConflict);
        }
        self.dirs.extend(Tree::ancestors(path).map(str::to_owned));
        self.dirs.insert(path.to_owned());
        Ok(())
    }
}

fn forbidden(path: &str, reason: EntryProblem) -> ArchiveError {
    ArchiveError::ForbiddenEntry {
        path: path.to_owned(),
        reason,
    }
}

/// Walks every entry of the `compressed_len` bytes `reader` yields, checking all of them, and
/// keeps up to `keep(path)` leading bytes of each file (`None`: none; the rest is still read,
/// counted and checked).
fn walk<R: BufRead>(
    mut reader: R,
    compressed_len: u64,
    limits: &Limits,
    keep: &dyn Fn(&str) -> Option<u64>,
) -> Result<Bundle, ArchiveError> {
    if compressed_len > limits.max_archive_bytes {
        return Err(ArchiveError::TooLarge {
            what: Limit::ArchiveBytes,
            limit: limits.max_archive_bytes,
        });
    }
    let mut magic = [0u8; 4];
    if compressed_len < 4 || reader.read_exact(&mut magic).is_err() || magic != ZSTD_MAGIC {
        return Err(ArchiveError::Corrupt("not a zstd stream".into()));
    }
    // At most `compressed_len` bytes are read, whatever the reader holds.
    let rest = reader.take(compressed_len - 4);
    let budget = Budget::new(compressed_len, limits);
    let decoded = Cell::new(0u64);
    let fail = |e| budget.io_error(&decoded, e);

    let mut decoder = zstd::stream::read::Decoder::with_buffer(io::Cursor::new(magic).chain(rest))
        .map_err(fail)?;
    decoder.window_log_max(WINDOW_LOG_MAX).map_err(fail)?;
    let mut archive = tar::Archive::new(Capped {
        inner: decoder,
        read: &decoded,
        cap: budget.cap,
    });

    let mut tree = Tree::default();
    let mut files = BTreeMap::new();
    let mut entries_seen = 0usize;
    for entry in archive.entries().map_err(fail)? {
        let mut entry = entry.map_err(fail)?;
        entries_seen += 1;
        if entries_seen > limits.max_files {
            return Err(ArchiveError::TooLarge {
                what: Limit::Files,
                limit: limits.max_files as u64,
            });
        }
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let Some(is_dir) = classify(entry.header().entry_type(), &shown)? else {
            continue;
        };
        let raw =
            std::str::from_utf8(&raw_path).map_err(|_| forbidden(&shown, EntryProblem::NotUtf8))?;
        let Some(path) = check_path(raw, is_dir).map_err(|p| forbidden(&shown, p))? else {
            continue;
        };
        if is_dir {
            tree.add_dir(&path).map_err(|p| forbidden(&path, p))?;
            continue;
        }
        tree.add_file(&path).map_err(|p| forbidden(&path, p))?;

        let data = read_file(&mut entry, &path, limits, &budget, &decoded, keep(&path))?;
        if let Some(data) = data {
            files.insert(path, data);
        }
    }
    // Read what follows the end-of-archive marker (record padding, usually) so the zstd frame's
    // checksum is verified; it counts against the cap like everything else.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(fail)?;
    Ok(Bundle {
        files: lift_wrapped(files, &tree.files),
    })
}

/// `Some(is_dir)` for the entry types a bundle may hold, `None` for ones to skip, or the
/// refusal naming the entry.
fn classify(kind: tar::EntryType, shown: &str) -> Result<Option<bool>, ArchiveError> {
    let problem = match kind {
        tar::EntryType::Regular => return Ok(Some(false)),
        tar::EntryType::Directory => return Ok(Some(true)),
        // A pax global header (`git archive` writes one) describes the archive, not a file.
        tar::EntryType::XGlobalHeader => return Ok(None),
        tar::EntryType::Symlink => EntryProblem::Symlink,
        tar::EntryType::Link => EntryProblem::Hardlink,
        tar::EntryType::Char | tar::EntryType::Block => EntryProblem::Device,
        tar::EntryType::Fifo => EntryProblem::Fifo,
        other => EntryProblem::UnsupportedType(other.as_byte()),
    };
    Err(forbidden(shown, problem))
}

/// Reads one regular file's data after checking its declared size against the per-file cap and
/// the remaining budget; returns its first `keep` bytes if any are kept and discards the rest
/// (still counted and checked).
fn read_file<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &str,
    limits: &Limits,
    budget: &Budget,
    decoded: &Cell<u64>,
    keep: Option<u64>,
) -> Result<Option<Vec<u8>>, ArchiveError> {
    let fail = |e| budget.io_error(decoded, e);
    let size = entry.size();
    if size > limits.max_file_bytes {
        return Err(ArchiveError::TooLarge {
            what: Limit::FileBytes,
            limit: limits.max_file_bytes,
        });
    }
    if decoded.get().saturating_add(size) > budget.cap {
        return Err(budget.exceeded());
    }
    let (read, data) = match keep {
        Some(keep) => {
            // Bounded by the checks above, so this allocation is within the cap.
            let kept = size.min(keep);
            let capacity = usize::try_from(kept).map_err(|_| budget.exceeded())?;
            let mut data = Vec::with_capacity(capacity);
            entry
                .by_ref()
                .take(kept)
                .read_to_end(&mut data)
                .map_err(fail)?;
            let rest = io::copy(entry, &mut io::sink()).map_err(fail)?;
            (data.len() as u64 + rest, Some(data))
        }
        None => (io::copy(entry, &mut io::sink()).map_err(fail)?, None),
    };
    if read != size {
        return Err(ArchiveError::Corrupt(format!(
            "entry `{path}` is truncated"
        )));
    }
    Ok(data)
}

/// Alga's finalize also finds `<dir>/manifest.json`. When there is no root manifest and every
/// file sits under one top-level directory that holds a manifest, strip that directory.
fn lift_wrapped(
    files: BTreeMap<String, Vec<u8>>,
    all_files: &BTreeSet<String>,
) -> BTreeMap<String, Vec<u8>> {
    if all_files.contains(MANIFEST_PATH) {
        return files;
    }
    let Some(first) = all_files.iter().next() else {
        return files;
    };
    let Some((top, _)) = first.split_once('/') else {
        return files;
    };
    let prefix = format!("{top}/");
    let wrapped = all_files.contains(&format!("{prefix}{MANIFEST_PATH}"))
        && all_files.iter().all(|p| p.starts_with(&prefix));
    if !wrapped {
        return files;
    }
    files
        .into_iter()
        .filter_map(|(path, data)| Some((path.strip_prefix(&prefix)?.to_owned(), data)))
        .collect()
}

#[cfg(test)]
pub(super) mod tests_support {
    use std::cell::Cell;
    use std::io::Read;

    pub(in crate::archive) fn capped<'a, R: Read + 'a>(
        inner: R,
        read: &'a Cell<u64>,
        cap: u64,
    ) -> impl Read + 'a {
        super::Capped { inner, read, cap }
    }
}
