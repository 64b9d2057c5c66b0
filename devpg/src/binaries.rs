//! Finding the PostgreSQL server binaries: `$ANNEX_PG_BIN`, then
//! `/usr/lib/postgresql/*/bin` (highest version first), then `PATH`. Every
//! program comes from one directory, so their versions match. This module
//! only looks; it runs nothing.

use std::path::{Path, PathBuf};

use crate::LocalPostgresError;

/// The programs a cluster needs, from one directory.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) initdb: PathBuf,
    pub(crate) pg_ctl: PathBuf,
    pub(crate) createdb: PathBuf,
    pub(crate) pg_isready: PathBuf,
}

/// What a directory must hold (`postgres` is started by `pg_ctl`).
const NEEDED: [&str; 5] = ["initdb", "pg_ctl", "postgres", "createdb", "pg_isready"];

pub(crate) fn find() -> Result<Binaries, LocalPostgresError> {
    if let Some(dir) = std::env::var_os("ANNEX_PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return binaries_in(&dir).ok_or_else(|| {
            LocalPostgresError::BinariesNotFound(format!(
                "ANNEX_PG_BIN={} must hold {}",
                dir.display(),
                NEEDED.join(", ")
            ))
        });
    }
    let versioned = versioned_bin_dirs(Path::new("/usr/lib/postgresql"));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    versioned
        .iter()
        .chain(on_path.iter())
        .find_map(|dir| binaries_in(dir))
        .ok_or_else(|| {
            LocalPostgresError::BinariesNotFound(
                "install postgresql-15 or set ANNEX_PG_BIN".to_owned(),
            )
        })
}

fn binaries_in(dir: &Path) -> Option<Binaries> {
    NEEDED
        .iter()
        .all(|b| is_executable(&dir.join(b)))
        .then(|| Binaries {
            initdb: dir.join("initdb"),
            pg_ctl: dir.join("pg_ctl"),
            createdb: dir.join("createdb"),
            pg_isready: dir.join("pg_isready"),
        })
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `<root>/<version>/bin`, highest version first (`16` before `15` before `9.6`).
fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = parse_version(&name)?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let root = tempfile::tempdir().expect("tempdir");
        for v in ["9.6", "15", "16", "notaversion"] {
            std::fs::create_dir(root.path().join(v)).expect("mkdir");
        }
        let dirs = versioned_bin_dirs(root.path());
        let names: Vec<_> = dirs
            .iter()
            .map(|d| d.parent().and_then(Path::file_name))
            .collect();
        assert_eq!(
            names,
            ["16", "15", "9.6"].map(|n| Some(std::ffi::OsStr::new(n)))
        );
    }

    #[test]
    fn a_directory_needs_every_program() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let add = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        };
        for name in ["initdb", "pg_ctl", "postgres", "createdb"] {
            add(name);
        }
        assert!(binaries_in(dir.path()).is_none(), "pg_isready is missing");
        add("pg_isready");
        let found = binaries_in(dir.path()).expect("complete");
        assert_eq!(found.createdb, dir.path().join("createdb"));
        assert_eq!(found.pg_isready, dir.path().join("pg_isready"));
    }
}
