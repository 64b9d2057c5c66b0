//! [`LocalPostgres`]: a private PostgreSQL cluster started from the system's
//! `initdb`/`pg_ctl`/`postgres`, for the Postgres tests (a throwaway cluster in
//! a temporary directory) and for `annex dev` (a persistent cluster under
//! `.annex/pg`, so local data survives restarts).
//!
//! It listens on 127.0.0.1 only, on a free port, with `trust` authentication:
//! it is a developer tool and must never be used to run a shared deployment.
//! It manages processes only and holds no SQL: databases are made with the
//! cluster's own `createdb` and readiness is asked of `pg_isready`, both from
//! the directory `initdb` and `pg_ctl` come from (see `binaries`). Under root
//! every program runs as the `postgres` user (see `run_as`).

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

mod binaries;
mod run_as;

use binaries::Binaries;
use run_as::{RunAs, hand_to_postgres_user, shell_join, shell_quote};

/// The database [`LocalPostgres::url`] points at; created when missing.
pub const DATABASE: &str = "annex";

/// The cluster's superuser, created by `initdb -U`.
const SUPERUSER: &str = "postgres";

/// Written in the data directory so a persistent cluster keeps its port.
const PORT_FILE: &str = "annex-port";

/// The server log, in the data directory.
const LOG_FILE: &str = "annex-postgres.log";

/// How long `pg_ctl` waits for start and stop, and how long an adopted
/// cluster may take to accept connections. Generous: a first start after a
/// crash replays WAL, and CI machines are slow.
const PG_CTL_TIMEOUT_SECS: &str = "60";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Between two `pg_isready` probes.
const READY_POLL: Duration = Duration::from_millis(100);

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
    binaries::find().is_ok()
}

impl LocalPostgres {
    /// Starts (after `initdb` if `data_dir` holds no cluster) or adopts the
    /// cluster in `data_dir`, waits until it accepts connections and makes
    /// sure database [`DATABASE`] exists.
    pub async fn start(
        data_dir: &Path,
        opts: LocalPostgresOptions,
    ) -> Result<LocalPostgres, LocalPostgresError> {
        let binaries = binaries::find()?;
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
        cluster.wait_ready().await?;
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

    /// Creates database `name` with the cluster's `createdb`; one that exists
    /// already is left as it is.
    pub async fn create_database(&self, name: &str) -> Result<(), LocalPostgresError> {
        let mut args = self.client_args();
        args.push(name.into());
        let output = self
            .output(&self.binaries.createdb, args, "createdb")
            .await?;
        if output.status.success() {
            tracing::info!(database = name, port = self.port, "database created");
            return Ok(());
        }
        let text = output_text(&output);
        // The cluster's messages are untranslated (`initdb --no-locale`).
        if text.contains("already exists") {
            return Ok(());
        }
        Err(failed(
            format!("create database {name}"),
            format!("{} ({})", text.trim(), output.status),
        ))
    }

    /// Stops the server (`pg_ctl stop -m fast`) and keeps the data directory,
    /// so [`LocalPostgres::start_again`] brings the same cluster back: the
    /// database outages of the end-to-end tests.
    pub async fn stop(&self) -> Result<(), LocalPostgresError> {
        let args = ["stop", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-m", "fast", "-D"]
            .map(OsString::from)
            .into_iter()
            .chain([self.data_dir.clone().into()])
            .collect();
        self.run(&self.binaries.pg_ctl, args, "pg_ctl stop")
            .await
            .map(drop)
    }

    /// Starts a cluster stopped by [`LocalPostgres::stop`] again on its port
    /// and waits until it accepts connections.
    pub async fn start_again(&self) -> Result<(), LocalPostgresError> {
        self.pg_ctl_start(self.port).await?;
        self.wait_ready().await
    }

    /// `-h 127.0.0.1 -p PORT -U postgres`: how client programs reach the cluster.
    fn client_args(&self) -> Vec<OsString> {
        [
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            SUPERUSER,
        ]
        .map(OsString::from)
        .into()
    }

    /// Polls `pg_isready` until the server accepts connections (an adopted
    /// cluster may still be starting or replaying WAL).
    async fn wait_ready(&self) -> Result<(), LocalPostgresError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let output = self
                .output(&self.binaries.pg_isready, self.client_args(), "pg_isready")
                .await?;
            // 0: accepting; 1: rejecting (starting up); 2: no response; 3: bad arguments.
            match output.status.code() {
                Some(0) => return Ok(()),
                Some(1 | 2) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(READY_POLL).await;
                }
                _ => {
                    return Err(failed(
                        format!("wait for postgres on port {}", self.port),
                        format!(
                            "{} ({})\n{}",
                            output_text(&output).trim(),
                            output.status,
                            log_tail(&self.data_dir.join(LOG_FILE))
                        ),
                    ));
                }
            }
        }
    }

    async fn initdb(&self) -> Result<(), LocalPostgresError> {
        let args: Vec<OsString> = vec![
            "-D".into(),
            self.data_dir.clone().into(),
            "--auth=trust".into(),
            format!("-U{SUPERUSER}").into(),
            "--encoding=UTF8".into(),
            // Byte-order collation: orderings do not depend on the machine's
            // locales; messages stay untranslated.
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

    /// Runs a PostgreSQL program (as the `postgres` user under root); fails
    /// with its output when it exits unsuccessfully.
    async fn run(
        &self,
        binary: &Path,
        args: Vec<OsString>,
        step: &str,
    ) -> Result<String, LocalPostgresError> {
        let output = self.output(binary, args, step).await?;
        let text = output_text(&output);
        if output.status.success() {
            Ok(text)
        } else {
            Err(failed(step, format!("{} ({})", text.trim(), output.status)))
        }
    }

    /// Runs a PostgreSQL program (as the `postgres` user under root) to its
    /// end; fails only when it cannot be started.
    async fn output(
        &self,
        binary: &Path,
        args: Vec<OsString>,
        step: &str,
    ) -> Result<Output, LocalPostgresError> {
        let (program, args) = self.run_as.command_line(binary, args);
        let mut command = Command::new(program);
        // The postgres user may not be able to enter the caller's working directory.
        command
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
            .output()
            .await
            .map_err(|e| failed(step, format!("run {}: {e}", binary.display())))
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

// ---- small helpers ----

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

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
