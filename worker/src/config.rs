//! Configuration of the `annex-worker` binary: flags, each with an
//! `ANNEX_WORKER_*` environment variable, turned into [`Settings`] (which
//! validates them; see `settings`). Parsing only: this module checks no
//! combination of flags itself.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use annex_ops::telemetry::LogFormat;

use crate::runner_api::RunnerApiConfig;
use crate::settings::{Settings, SettingsError};

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "annex-worker", version, about = "Annex Wasmtime worker")]
pub struct Config {
    /// gRPC (mTLS) listen address of the Worker service.
    #[arg(long, env = "ANNEX_WORKER_GRPC_LISTEN", default_value = "0.0.0.0:7444")]
    pub grpc_listen: SocketAddr,
    /// Admin listen address (plaintext /live, /ready, /metrics).
    #[arg(
        long,
        env = "ANNEX_WORKER_ADMIN_LISTEN",
        default_value = "0.0.0.0:9091"
    )]
    pub admin_listen: SocketAddr,
    /// This worker's id (reported in responses and stats).
    #[arg(long, env = "ANNEX_WORKER_ID", default_value = "worker")]
    pub(crate) worker_id: String,
    /// Control plane gRPC URL (https://host:port): bundles, trust keys and
    /// host services. Repeat the flag or separate URLs with commas for
    /// several replicas, or give one name that resolves to every replica (a
    /// headless Service): calls are spread over them, the heartbeat stream
    /// stays on one and moves when it goes away. Without it, `--bundle-dir`
    /// and `--trust-file` are used and host services are unavailable.
    #[arg(long, env = "ANNEX_WORKER_CONTROL_PLANE_URL", value_delimiter = ',')]
    pub(crate) control_plane_url: Vec<String>,
    /// `host:port` registered with the control plane for edges to reach this
    /// worker (default: the gRPC listen address, with an unspecified IP
    /// replaced by 127.0.0.1; set it to the pod IP in a cluster).
    #[arg(long, env = "ANNEX_WORKER_ADVERTISE_ADDRESS")]
    pub(crate) advertise_address: Option<String>,
    /// Name every control plane's certificate is checked against, whatever
    /// address it is reached at.
    #[arg(
        long,
        env = "ANNEX_WORKER_CONTROL_PLANE_NAME",
        default_value = "control-plane"
    )]
    pub(crate) control_plane_name: String,
    /// Local bundles (`<hex>.tar.zst` + `<hex>.sig.json`), without a control plane.
    #[arg(long, env = "ANNEX_WORKER_BUNDLE_DIR")]
    pub(crate) bundle_dir: Option<PathBuf>,
    /// Trust bundle JSON (`{"keys":[...]}`), without a control plane (the
    /// runner API verifies signatures with it too; alone, it serves only
    /// the runner API).
    #[arg(long, env = "ANNEX_WORKER_TRUST_FILE")]
    pub(crate) trust_file: Option<PathBuf>,
    /// CA certificate (PEM) that signs every Annex peer.
    #[arg(long, env = "ANNEX_WORKER_TLS_CA")]
    pub tls_ca: PathBuf,
    /// This worker's certificate (PEM) with the worker role.
    #[arg(long, env = "ANNEX_WORKER_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// This worker's private key (PEM).
    #[arg(long, env = "ANNEX_WORKER_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Directory of compiled artifacts (disk cache); unset disables it.
    #[arg(long, env = "ANNEX_WORKER_CACHE_DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Components kept compiled in memory.
    #[arg(long, env = "ANNEX_WORKER_MEMORY_CACHE_ENTRIES", default_value_t = NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN))]
    pub(crate) memory_cache_entries: NonZeroUsize,
    /// Component compiles running at once; 0 picks one on up to two cores
    /// and half the cores beyond that (one compile uses every core).
    #[arg(long, env = "ANNEX_WORKER_COMPILE_CONCURRENCY", default_value_t = 0)]
    pub(crate) compile_concurrency: usize,
    /// Estimated memory all running compiles may take together, in MiB (a
    /// 12 MB JavaScript component is estimated at about 470 MiB; one larger
    /// than the budget still compiles, alone).
    #[arg(long, env = "ANNEX_WORKER_COMPILE_MEMORY_MB", default_value_t = 768)]
    pub(crate) compile_memory_mb: u64,
    /// How long a call waits for its component to finish compiling before
    /// it is answered COMPONENT_COMPILING (retry later), in milliseconds.
    #[arg(long, env = "ANNEX_WORKER_COMPILE_WAIT_MS", default_value_t = 2000)]
    pub(crate) compile_wait_ms: u64,
    /// How a component missing from memory and disk is compiled:
    /// `winch-then-cranelift` serves its first calls from a quick Winch
    /// compile while Cranelift compiles it in the background (only the
    /// Cranelift artifact is cached on disk); `cranelift` waits for
    /// Cranelift.
    #[arg(long, env = "ANNEX_WORKER_COMPILE_TIERING", value_enum, default_value_t = CompileTiering::WinchThenCranelift)]
    pub(crate) compile_tiering: CompileTiering,
    /// Components smaller than this many bytes skip Winch and go straight
    /// to Cranelift (their Cranelift compile is already quick).
    #[arg(long, env = "ANNEX_WORKER_COMPILE_WINCH_MIN_BYTES", default_value_t = crate::cache::DEFAULT_WINCH_MIN_BYTES)]
    pub(crate) compile_winch_min_bytes: u64,
    /// How long the idempotency record of a running call with a key is held
    /// without a renewal, in milliseconds (1,000 to 600,000; renewed every
    /// third of it): how long a repeat waits after a worker died mid-call.
    #[arg(
        long,
        env = "ANNEX_WORKER_IDEMPOTENCY_LEASE_MS",
        default_value_t = 10_000
    )]
    pub(crate) idempotency_lease_ms: u64,
    /// Executions running at once.
    #[arg(long, env = "ANNEX_WORKER_CAPACITY", default_value_t = 64)]
    pub(crate) capacity: usize,
    /// Executions of one tenant running at once.
    #[arg(long, env = "ANNEX_WORKER_PER_TENANT", default_value_t = 16)]
    pub(crate) per_tenant: usize,
    /// Time limit when a request sends none, in milliseconds.
    #[arg(
        long,
        env = "ANNEX_WORKER_DEFAULT_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub(crate) default_timeout_ms: u64,
    /// Memory limit when a request sends none, in MiB.
    #[arg(long, env = "ANNEX_WORKER_DEFAULT_MEMORY_MB", default_value_t = 256)]
    pub(crate) default_memory_mb: u32,
    /// Pool slots (concurrent component instances).
    #[arg(long, env = "ANNEX_WORKER_POOL_INSTANCES", default_value_t = 256)]
    pub(crate) pool_instances: u32,
    /// Reset reused memory slots via the kernel's PAGEMAP_SCAN (only dirty
    /// pages): auto (when the kernel has it), on (fail if missing) or off.
    #[arg(long, env = "ANNEX_WORKER_POOL_PAGEMAP_SCAN", value_enum, default_value_t = Toggle::Auto)]
    pub(crate) pool_pagemap_scan: Toggle,
    /// Use on-demand allocation instead of the pooling allocator.
    #[arg(long, env = "ANNEX_WORKER_NO_POOL")]
    pub(crate) no_pool: bool,
    /// Enable fuel metering (requests may then send a fuel budget).
    #[arg(long, env = "ANNEX_WORKER_FUEL")]
    pub(crate) fuel: bool,
    /// How long in-flight work may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "ANNEX_WORKER_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub(crate) shutdown_grace_secs: u64,
    /// After SIGTERM, how long calls are still accepted while the routing
    /// snapshot without this worker reaches every edge (heartbeat, snapshot
    /// interval and delivery), in milliseconds.
    #[arg(
        long,
        env = "ANNEX_WORKER_DRAIN_PROPAGATION_MS",
        default_value_t = 2000
    )]
    pub(crate) drain_propagation_ms: u64,
    /// How long the trust keys last listed from the control plane stay
    /// usable while they cannot be listed again, in seconds (the worker
    /// lists them every 10 s in the background).
    #[arg(
        long,
        env = "ANNEX_WORKER_TRUST_MAX_AGE_SECS",
        default_value_t = 86_400
    )]
    pub(crate) trust_max_age_secs: u64,
    /// Platform listeners guests must never reach, besides this worker's
    /// own and the control plane's URL: `host[:port]` entries,
    /// comma-separated (without a port, every port of that host).
    #[arg(long, env = "ANNEX_WORKER_EGRESS_DENY", value_delimiter = ',')]
    pub(crate) egress_deny: Vec<String>,
    /// Log format.
    #[arg(long, env = "ANNEX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Alga's runner HTTP API (off unless `--runner-api-listen` is set).
    #[command(flatten)]
    pub runner_api: RunnerApiConfig,
}

/// A feature switch that may follow what the host supports.
/// `--compile-tiering`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CompileTiering {
    WinchThenCranelift,
    Cranelift,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Toggle {
    Auto,
    On,
    Off,
}

impl Config {
    /// Validates the combination of flags and builds [`Settings`].
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        Settings::try_from(self)
    }
}
