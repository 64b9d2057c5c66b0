//! Writing the files commands produce: bundles, sidecars and signatures replace their target
//! atomically (a temporary file in the same directory, then a rename), so a crash never leaves a
//! half-written bundle behind; private keys and secrets are created with mode 0600 from the
//! start, never chmod-ed after the fact.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Replaces `path` with `bytes` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = parent(path);
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Creates `path` readable by its owner only (0600 on Unix). Refuses to replace an existing file
/// unless `overwrite`.
pub fn write_private(path: &Path, bytes: &[u8], overwrite: bool) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if overwrite && path.exists() {
        fs::remove_file(path).with_context(|| format!("replacing {}", path.display()))?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists (pass --force to overwrite it)",
                path.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("creating {}", path.display()))
        }
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

pub fn read_text(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// `path` with `suffix` appended to its file name (`b.tar.zst` + `.sig` = `b.tar.zst.sig`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The hash sidecar of a bundle: `bundle.tar.zst` → `bundle.sha256`; other names get `.sha256`
/// appended.
pub fn sha256_sidecar(bundle: &Path) -> PathBuf {
    let name = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.strip_suffix(".tar.zst") {
        Some(stem) if !stem.is_empty() => bundle.with_file_name(format!("{stem}.sha256")),
        _ => with_suffix(bundle, ".sha256"),
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_names() {
        assert_eq!(
            sha256_sidecar(Path::new("x/bundle.tar.zst")),
            Path::new("x/bundle.sha256")
        );
        assert_eq!(
            sha256_sidecar(Path::new("b.tzst")),
            Path::new("b.tzst.sha256")
        );
        assert_eq!(
            with_suffix(Path::new("b.tar.zst"), ".sig"),
            Path::new("b.tar.zst.sig")
        );
    }

    #[test]
    fn private_files_are_owner_only_and_not_clobbered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k/key.pem");
        write_private(&path, b"one", false).expect("create");
        let err = write_private(&path, b"two", false).expect_err("exists");
        assert!(err.to_string().contains("--force"), "{err}");
        write_private(&path, b"two", true).expect("overwrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn atomic_writes_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b");
        write_atomic(&path, b"1").expect("write");
        write_atomic(&path, b"22").expect("replace");
        assert_eq!(fs::read(&path).expect("read"), b"22");
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
