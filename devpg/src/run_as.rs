//! Who runs PostgreSQL's programs. `initdb` and `pg_ctl` refuse to run as
//! root, so under root every program runs as the `postgres` system user (via
//! `runuser`, or `su` where there is no `runuser`), and the data directory is
//! handed to that user. This module builds command lines; it starts nothing
//! but `chown`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::{LocalPostgresError, SUPERUSER, binaries::is_executable, failed};

/// Who runs PostgreSQL's programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunAs {
    /// This process's own user.
    Caller,
    /// We are root: the `postgres` user, via `runuser`.
    PostgresViaRunuser,
    /// We are root and there is no `runuser`: the `postgres` user, via `su`.
    PostgresViaSu,
}

impl RunAs {
    pub(crate) fn detect() -> RunAs {
        if !effective_uid_is_root() {
            RunAs::Caller
        } else if find_on_path("runuser").is_some() {
            RunAs::PostgresViaRunuser
        } else {
            RunAs::PostgresViaSu
        }
    }

    /// The program and arguments that run `binary args` as this user.
    pub(crate) fn command_line(
        self,
        binary: &Path,
        args: impl IntoIterator<Item = OsString>,
    ) -> (OsString, Vec<OsString>) {
        let args = args.into_iter();
        match self {
            RunAs::Caller => (binary.into(), args.collect()),
            RunAs::PostgresViaRunuser => {
                let prefix = ["-u", SUPERUSER, "--"].map(OsString::from);
                let all = prefix.into_iter().chain([binary.into()]).chain(args);
                ("runuser".into(), all.collect())
            }
            RunAs::PostgresViaSu => {
                let line = shell_join(binary.as_os_str(), &args.collect::<Vec<_>>());
                let all = ["-s", "/bin/sh", SUPERUSER, "-c"].map(OsString::from);
                ("su".into(), all.into_iter().chain([line.into()]).collect())
            }
        }
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

/// Whether this process runs as root; `initdb` and `pg_ctl` refuse to.
fn effective_uid_is_root() -> bool {
    match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => effective_uid(&status) == Some(0),
        Err(_) => std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0"),
    }
}

/// The effective uid from `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Gives the data directory to the `postgres` user and lets it reach the
/// directory through its ancestors (execute bit only: it cannot list them).
pub(crate) async fn hand_to_postgres_user(data_dir: &Path) -> Result<(), LocalPostgresError> {
    use std::os::unix::fs::PermissionsExt as _;
    let output = Command::new("chown")
        .arg("-R")
        .arg(format!("{SUPERUSER}:"))
        .arg(data_dir)
        .output()
        .await
        .map_err(|e| failed("run chown", e))?;
    if !output.status.success() {
        return Err(failed(
            format!("give {} to the {SUPERUSER} user", data_dir.display()),
            String::from_utf8_lossy(&output.stderr).trim(),
        ));
    }
    for ancestor in data_dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor)
            .map_err(|e| failed(format!("inspect {}", ancestor.display()), e))?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(mode | 0o001))
                .map_err(|e| failed(format!("make {} traversable", ancestor.display()), e))?;
        }
    }
    Ok(())
}

/// `program args…` as one POSIX shell command line.
pub(crate) fn shell_join(program: &OsStr, args: &[OsString]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|word| shell_quote(&word.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` as one POSIX shell word.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_uid_field() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t5\t5\t5\t5\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn root_runs_binaries_as_the_postgres_user() {
        let args = || ["-D", "/data dir"].map(OsString::from);
        let initdb = Path::new("/usr/lib/postgresql/15/bin/initdb");
        let (program, line) = RunAs::PostgresViaRunuser.command_line(initdb, args());
        assert_eq!(program, "runuser");
        assert_eq!(
            line,
            [
                "-u",
                "postgres",
                "--",
                "/usr/lib/postgresql/15/bin/initdb",
                "-D",
                "/data dir"
            ]
        );
        let (program, line) = RunAs::PostgresViaSu.command_line(initdb, args());
        assert_eq!(program, "su");
        assert_eq!(
            line,
            [
                "-s",
                "/bin/sh",
                "postgres",
                "-c",
                "'/usr/lib/postgresql/15/bin/initdb' '-D' '/data dir'"
            ]
        );
        let (program, line) = RunAs::Caller.command_line(initdb, args());
        assert_eq!((program.as_os_str(), line.len()), (initdb.as_os_str(), 2));
    }

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("/tmp/a b'c"), r"'/tmp/a b'\''c'");
        assert_eq!(shell_quote(""), "''");
    }
}
