//! [`LocalPostgres`]: a private PostgreSQL cluster started from the system's
//! `initdb`/`pg_ctl`/`postgres`, for the Postgres tests (a throwaway cluster in
//! a temporary directory) and for `annex dev` (a persistent cluster under
//! `.annex/`, so local data survives restarts).
//!
//! It listens on 127.0.0.1 only, on a free port, with `trust` authentication:
//! it is a developer tool and must never be used to run a shared deployment.
//! Binaries are looked up in `$ANNEX_PG_BIN`, then `/usr/lib/postgresql/*/bin`
//! (highest version first), then `PATH`. `initdb` and `pg_ctl` refuse to run as
//! root, so under root they run as the `postgres` system user (via `runuser`,
//! or `su` where there is no `runuser`); the data directory is then handed to
//! that user and its ancestors get the others-execute bit so it can reach it.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use tokio::process::Command;

/// The database [`LocalPostgres::url`] points at; created when missing.
pub const DATABASE: &str = "annex";

/// The cluster's superuser, created by `initdb -U`.
const SUPERUSER: &str = "postgres";

/// Written in the data directory so a persistent cluster keeps its port.
const PORT_FILE: &str = "annex-port";

/// The server log, in the data directory.
const LOG_FILE: &str = "annex-postgres.log";

/// How long `pg_ctl` waits for start and stop. Generous: a first start after a
/// crash replays WAL, and CI machines are slow.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// A Unix socket path must fit in `sun_path` (108 bytes) with `/.s.PGSQL.NNNNN`.
const MAX_SOCKET_DIR_LEN: usize = 90;

#[derive(Debug, thiserror::Error)]
pub enum LocalPostgresError {
    #[error("PostgreSQL binaries not found: {0}")]
    BinariesNotFound(String),
    /// A step of preparing, starting or connecting failed; `detail` carries the
    /// command's output or the tail of the server log.
    #[error("{step}: {detail}")]
    Failed { step: String, detail: String },
}

fn failed(step: impl Into<String>, detail: impl ToString) -> LocalPostgresError {
    LocalPostgresError::Failed {
        step: step.into(),
        detail: detail.to_string(),
    }
}

/// What the cluster is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterMode {
    /// Tests: fsync off, stopped with `-m immediate`, its data directory removed
    /// when stopped, and stopped as well when the starting process exits
    /// without dropping it (a cluster in a `static` is never dropped).
    #[default]
    Throwaway,
    /// `annex dev`: durable, reuses the data directory and its recorded port,
    /// stopped with `-m fast`.
    Persistent,
}

#[derive(Debug, Clone, Default)]
pub struct LocalPostgresOptions {
    pub mode: ClusterMode,
}

/// The three binaries, from one directory so their versions match.
#[derive(Debug, Clone)]
struct Binaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

/// A running local cluster; dropping it stops the cluster if this value started it.
#[derive(Debug)]
pub struct LocalPostgres {
    binaries: Binaries,
    data_dir: PathBuf,
    port: u16,
    mode: ClusterMode,
    run_as: RunAs,
    /// False when the cluster was already running and this value only adopted it.
    owned: bool,
    /// Throwaway clusters: stops the cluster if this process exits without Drop.
    watchdog: Option<Child>,
}

/// Whether [`LocalPostgres::start`] can find the PostgreSQL binaries.
pub fn binaries_available() -> bool {
    find_binaries().is_ok()
}

impl LocalPostgres {
    /// Starts (after `initdb` if `data_dir` holds no cluster) or adopts the
    /// cluster in `data_dir` and makes sure database [`DATABASE`] exists.
    pub async fn start(
        data_dir: &Path,
        opts: LocalPostgresOptions,
    ) -> Result<LocalPostgres, LocalPostgresError> {
        let binaries = find_binaries()?;
        let run_as = RunAs::detect();
        std::fs::create_dir_all(data_dir)
            .map_err(|e| failed(format!("create {}", data_dir.display()), e))?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(|e| failed(format!("resolve {}", data_dir.display()), e))?;
        if run_as != RunAs::Caller {
            hand_to_postgres_user(&data_dir).await?;
        }

        let mut cluster = LocalPostgres {
            binaries,
            data_dir,
            port: 0,
            mode: opts.mode,
            run_as,
            owned: true,
            watchdog: None,
        };
        if !cluster.data_dir.join("PG_VERSION").exists() {
            cluster.initdb().await?;
        }
        match cluster.running_port().await {
            Some(port) => {
                tracing::info!(port, data_dir = %cluster.data_dir.display(), "adopting running local postgres");
                cluster.port = port;
                cluster.owned = false;
            }
            None => cluster.start_server().await?,
        }
        if cluster.owned && cluster.mode == ClusterMode::Throwaway {
            cluster.watchdog = Some(cluster.spawn_watchdog()?);
        }
        cluster.create_database(DATABASE).await?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/annex`.
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// The URL of another database in this cluster.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    async fn initdb(&self) -> Result<(), LocalPostgresError> {
        let args: Vec<OsString> = vec![
            "-D".into(),
            self.data_dir.clone().into(),
            "--auth=trust".into(),
            format!("-U{SUPERUSER}").into(),
            "--encoding=UTF8".into(),
            // Byte-order collation: orderings do not depend on the machine's locales.
            "--no-locale".into(),
            // Skips only the final flush of the fresh files (seconds on a slow
            // disk); a crash in the moment after initdb means a new data directory.
            "--no-sync".into(),
        ];
        self.run(&self.binaries.initdb, args, "initdb")
            .await
            .map(drop)
    }

    /// The port of a server already running on this data directory.
    async fn running_port(&self) -> Option<u16> {
        let args = vec!["status".into(), "-D".into(), self.data_dir.clone().into()];
        self.run(&self.binaries.pg_ctl, args, "pg_ctl status")
            .await
            .ok()?;
        // postmaster.pid line 4 is the port.
        let pid_file = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    async fn start_server(&mut self) -> Result<(), LocalPostgresError> {
        let recorded = match self.mode {
            ClusterMode::Persistent => std::fs::read_to_string(self.data_dir.join(PORT_FILE))
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
                .filter(|port| port_is_free(*port)),
            ClusterMode::Throwaway => None,
        };
        // A port found free can be taken before postgres binds it: try again on another.
        let mut last_error = None;
        for attempt in 0..3 {
            let port = match (attempt, recorded) {
                (0, Some(port)) => port,
                _ => free_port()?,
            };
            match self.pg_ctl_start(port).await {
                Ok(()) => {
                    self.port = port;
                    if self.mode == ClusterMode::Persistent {
                        std::fs::write(self.data_dir.join(PORT_FILE), port.to_string())
                            .map_err(|e| failed("record the local postgres port", e))?;
                    }
                    tracing::info!(port, data_dir = %self.data_dir.display(), "local postgres started");
                    return Ok(());
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| failed("start postgres", "no attempt made")))
    }

    async fn pg_ctl_start(&self, port: u16) -> Result<(), LocalPostgresError> {
        let socket_dir = self.data_dir.to_string_lossy().into_owned();
        let socket_dir = if socket_dir.len() <= MAX_SOCKET_DIR_LEN {
            socket_dir
        } else {
            String::new()
        };
        // pg_ctl hands -o to a shell, hence the quoting.
        let mut server_opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            shell_quote(&socket_dir)
        );
        if self.mode == ClusterMode::Throwaway {
            // Durability buys nothing for a cluster deleted after the test run.
            server_opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
            // Test binaries run in parallel, each test with its own pool.
            server_opts.push_str(" -c max_connections=300");
        }
        let log = self.data_dir.join(LOG_FILE);
        let args = vec![
            "start".into(),
            "-w".into(),
            "-t".into(),
            PG_CTL_TIMEOUT_SECS.into(),
            "-D".into(),
            self.data_dir.clone().into(),
            "-l".into(),
            log.clone().into(),
            "-o".into(),
            server_opts.into(),
        ];
        match self.run(&self.binaries.pg_ctl, args, "pg_ctl start").await {
            Ok(_) => Ok(()),
            Err(e) => Err(failed(
                format!("start postgres on port {port}"),
                format!("{e}\n{}", log_tail(&log)),
            )),
        }
    }

    async fn create_database(&self, name: &str) -> Result<(), LocalPostgresError> {
        let (client, connection) =
            tokio_postgres::connect(&self.url_for("postgres"), tokio_postgres::NoTls)
                .await
                .map_err(|e| failed("connect to local postgres", e))?;
        let connection = tokio::spawn(connection);
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .map_err(|e| failed("look up database", e))?;
        if exists.is_none() {
            // Identifiers cannot be bound as parameters; `name` is ours, quoted anyway.
            let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| failed(format!("create database {name}"), e))?;
        }
        drop(client);
        let _ = connection.await;
        Ok(())
    }

    /// A detached shell that waits for this process to exit, then stops the
    /// cluster and removes its data directory. In its own process group, so a
    /// terminal's Ctrl-C reaches the test process but not the cleanup.
    fn spawn_watchdog(&self) -> Result<Child, LocalPostgresError> {
        use std::os::unix::process::CommandExt as _;
        let data_dir = shell_quote(&self.data_dir.to_string_lossy());
        let stop_args = ["stop", "-m", "immediate", "-D"].map(OsString::from);
        let (program, args) = self.run_as.command_line(
            &self.binaries.pg_ctl,
            stop_args.into_iter().chain([self.data_dir.clone().into()]),
        );
        let stop = shell_join(&program, &args);
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {data_dir}",
            pid = std::process::id()
        );
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| failed("start the local postgres watchdog", e))
    }

    /// Runs a PostgreSQL binary (as the `postgres` user under root); fails with
    /// its output when it exits unsuccessfully.
    async fn run(
        &self,
        binary: &Path,
        args: Vec<OsString>,
        step: &str,
    ) -> Result<String, LocalPostgresError> {
        let (program, args) = self.run_as.command_line(binary, args);
        let mut command = Command::new(program);
        // The postgres user may not be able to enter the caller's working directory.
        command
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = command
            .output()
            .await
            .map_err(|e| failed(step, format!("run {}: {e}", binary.display())))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(text)
        } else {
            Err(failed(step, format!("{} ({})", text.trim(), output.status)))
        }
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let shutdown = match self.mode {
            ClusterMode::Throwaway => "immediate",
            ClusterMode::Persistent => "fast",
        };
        let stop_args = [
            "stop",
            "-w",
            "-t",
            PG_CTL_TIMEOUT_SECS,
            "-m",
            shutdown,
            "-D",
        ];
        let stop_args = stop_args.map(OsString::from).into_iter();
        let (program, args) = self.run_as.command_line(
            &self.binaries.pg_ctl,
            stop_args.chain([self.data_dir.clone().into()]),
        );
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match command.status() {
            Ok(status) if status.success() => {}
            Ok(status) => {
                tracing::warn!(%status, data_dir = %self.data_dir.display(), "pg_ctl stop failed")
            }
            Err(error) => tracing::warn!(%error, "could not run pg_ctl stop"),
        }
        if self.mode == ClusterMode::Throwaway
            && let Err(error) = std::fs::remove_dir_all(&self.data_dir)
        {
            tracing::warn!(%error, data_dir = %self.data_dir.display(), "could not remove throwaway cluster");
        }
    }
}

// ---- finding binaries ----

const NEEDED: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

fn find_binaries() -> Result<Binaries, LocalPostgresError> {
    if let Some(dir) = std::env::var_os("ANNEX_PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return binaries_in(&dir).ok_or_else(|| {
            LocalPostgresError::BinariesNotFound(format!(
                "ANNEX_PG_BIN={} must hold initdb, pg_ctl and postgres",
                dir.display()
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
        })
}

fn is_executable(path: &Path) -> bool {
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

// ---- running as the postgres user ----

/// Who runs PostgreSQL's programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunAs {
    /// This process's own user.
    Caller,
    /// We are root: the `postgres` user, via `runuser`.
    PostgresViaRunuser,
    /// We are root and there is no `runuser`: the `postgres` user, via `su`.
    PostgresViaSu,
}

impl RunAs {
    fn detect() -> RunAs {
        if !effective_uid_is_root() {
            RunAs::Caller
        } else if find_on_path("runuser").is_some() {
            RunAs::PostgresViaRunuser
        } else {
            RunAs::PostgresViaSu
        }
    }

    /// The program and arguments that run `binary args` as this user.
    fn command_line(
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
async fn hand_to_postgres_user(data_dir: &Path) -> Result<(), LocalPostgresError> {
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

// ---- small helpers ----

fn free_port() -> Result<u16, LocalPostgresError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| failed("find a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| failed("find a free port", e))
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// `program args…` as one POSIX shell command line.
fn shell_join(program: &std::ffi::OsStr, args: &[OsString]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|word| shell_quote(&word.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` as one POSIX shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The last lines of the server log, for error messages.
fn log_tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            format!("server log {}:\n{tail}", log.display())
        }
        Err(_) => format!("no server log at {}", log.display()),
    }
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
