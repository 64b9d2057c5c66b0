//! The worker's validated settings: [`Settings`] for a whole worker process
//! (what [`server::run`](crate::server::run) takes), built from the
//! binary's flags by [`Config::settings`], and [`ExecutorSettings`], the
//! part an executor is built from (tests start executors from it directly).
//! Invalid flag combinations fail here, at start, before anything binds or
//! connects. Values only: nothing here reads files or opens connections.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use crate::admission::AdmissionConfig;
use crate::cache::queue::default_concurrency;
use crate::cache::{CompileSettings, Tiering};
use crate::config::{CompileTiering, Config, Toggle};
use crate::egress::EgressConfig;
use crate::engine::EngineConfig;
use crate::execute::limits::Limits;
use crate::logs::RateLimits;
use crate::runner_api::RunnerApiSettingsError;
use crate::runner_api::settings::RunnerApiSettings;

/// A whole worker process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) executor: ExecutorSettings,
    pub(crate) origin: Origin,
    /// `host:port` registered with the control plane for edges to reach
    /// this worker.
    pub(crate) advertise_address: String,
    pub(crate) shutdown: ShutdownTiming,
    /// Alga's runner HTTP API, when it is on.
    pub(crate) runner_api: Option<RunnerApiSettings>,
    /// How long the last listed trust keys stay usable.
    pub(crate) trust_max_age: Duration,
    /// In-process endpoints (`annex dev`): the `Worker` service is
    /// registered there under `advertise_address`, and a control plane
    /// registered there under the one control-plane URL's address is called
    /// directly. None for the binary.
    pub(crate) in_process: Option<annex_ops::in_process::Endpoints>,
}

impl Settings {
    /// Also serves the `Worker` service to callers in this process through
    /// `endpoints`, and calls a control plane registered there directly:
    /// both skip TCP, TLS and HTTP/2.
    pub fn serve_in_process(&mut self, endpoints: annex_ops::in_process::Endpoints) {
        self.in_process = Some(endpoints);
    }
}

/// Where bundles, trust keys and host services come from.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    /// The control plane (mTLS): bundles, trust keys, host services and
    /// fleet membership.
    ControlPlane {
        /// One URL per replica, or one resolving to all of them.
        urls: Vec<http::Uri>,
        /// The name their certificates are checked against.
        name: String,
    },
    /// A bundle directory and a trust file; no host services, no fleet.
    Local {
        bundle_dir: PathBuf,
        trust_file: PathBuf,
    },
    /// Only the runner API serves executions (its bundles come from Alga's
    /// bundle store); with a trust file, their signatures are verified.
    RunnerApiOnly { trust_file: Option<PathBuf> },
}

/// The steps of a graceful shutdown.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShutdownTiming {
    /// How long calls are still served after leaving the fleet, while the
    /// routing snapshot without this worker reaches every edge.
    pub(crate) propagation: Duration,
    /// How long in-flight executions may take to finish after that.
    pub(crate) grace: Duration,
}

/// Everything configurable about an executor, as values.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    pub(crate) worker_id: String,
    pub engine: EngineConfig,
    pub(crate) limits: Limits,
    pub(crate) admission: AdmissionConfig,
    pub(crate) egress: EgressConfig,
    /// How much each install may log on this worker.
    pub(crate) log_rates: RateLimits,
    /// Compiled components kept in memory. A JS component's code is ~36 MB
    /// mapped; 64 of them fit comfortably in a worker's memory.
    pub(crate) memory_cache_entries: NonZeroUsize,
    /// Serialized artifacts; `None` disables the disk cache.
    pub(crate) cache_dir: Option<PathBuf>,
    /// The compile queue's bounds and how long a call waits for a compile.
    pub compile: CompileSettings,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        ExecutorSettings {
            worker_id: "worker".to_string(),
            engine: EngineConfig::default(),
            limits: Limits::default(),
            admission: AdmissionConfig::default(),
            egress: EgressConfig::default(),
            log_rates: RateLimits::default(),
            memory_cache_entries: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            cache_dir: None,
            compile: CompileSettings::default(),
        }
    }
}

/// A combination of flags the worker cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "either --control-plane-url, both --bundle-dir and --trust-file, or --runner-api-listen is required"
    )]
    NoSource,
    #[error("capacity and per-tenant must be positive")]
    NoCapacity,
    #[error(transparent)]
    ControlPlaneUrl(#[from] annex_ops::upstream::UpstreamError),
    #[error(transparent)]
    RunnerApi(#[from] RunnerApiSettingsError),
    #[error("invalid --egress-deny entry: {0}")]
    EgressDeny(String),
    #[error("--idempotency-lease-ms must be 1000..=600000")]
    IdempotencyLease,
}

impl TryFrom<&Config> for Settings {
    type Error = SettingsError;

    fn try_from(config: &Config) -> Result<Settings, SettingsError> {
        Ok(Settings {
            origin: origin(config)?,
            executor: executor(config)?,
            advertise_address: config.advertise_address.clone().unwrap_or_else(|| {
                let mut addr = config.grpc_listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                addr.to_string()
            }),
            shutdown: ShutdownTiming {
                propagation: Duration::from_millis(config.drain_propagation_ms),
                grace: Duration::from_secs(config.shutdown_grace_secs),
            },
            runner_api: config.runner_api.settings()?,
            trust_max_age: Duration::from_secs(config.trust_max_age_secs),
            in_process: None,
        })
    }
}

fn origin(config: &Config) -> Result<Origin, SettingsError> {
    if config
        .control_plane_url
        .iter()
        .any(|u| !u.trim().is_empty())
    {
        return Ok(Origin::ControlPlane {
            urls: annex_ops::upstream::parse_urls(&config.control_plane_url)?,
            name: config.control_plane_name.clone(),
        });
    }
    match (&config.bundle_dir, &config.trust_file) {
        (Some(bundle_dir), Some(trust_file)) => Ok(Origin::Local {
            bundle_dir: bundle_dir.clone(),
            trust_file: trust_file.clone(),
        }),
        (None, trust_file) if config.runner_api.runner_api_listen.is_some() => {
            Ok(Origin::RunnerApiOnly {
                trust_file: trust_file.clone(),
            })
        }
        _ => Err(SettingsError::NoSource),
    }
}

fn executor(config: &Config) -> Result<ExecutorSettings, SettingsError> {
    if config.capacity == 0 || config.per_tenant == 0 {
        return Err(SettingsError::NoCapacity);
    }
    let mut s = ExecutorSettings {
        worker_id: config.worker_id.clone(),
        memory_cache_entries: config.memory_cache_entries,
        cache_dir: config.cache_dir.clone(),
        ..ExecutorSettings::default()
    };
    let n = config.pool_instances.max(1);
    let pool = &mut s.engine.pool;
    pool.enabled = !config.no_pool;
    pool.total_component_instances = n;
    pool.total_core_instances = n.saturating_mul(8);
    pool.total_memories = n.saturating_mul(2);
    pool.total_tables = n.saturating_mul(2);
    pool.total_stacks = n;
    pool.pagemap_scan = match config.pool_pagemap_scan {
        Toggle::Auto => wasmtime::Enabled::Auto,
        Toggle::On => wasmtime::Enabled::Yes,
        Toggle::Off => wasmtime::Enabled::No,
    };
    s.engine.fuel = config.fuel;
    if config.compile_concurrency > 0 {
        s.compile.concurrency = config.compile_concurrency;
    } else {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        s.compile.concurrency = default_concurrency(cores);
    }
    s.compile.memory_budget_bytes = config.compile_memory_mb.max(1).saturating_mul(1024 * 1024);
    s.compile.wait = Duration::from_millis(config.compile_wait_ms);
    s.compile.tiering = match config.compile_tiering {
        CompileTiering::WinchThenCranelift => Tiering::WinchThenCranelift,
        CompileTiering::Cranelift => Tiering::Cranelift,
    };
    s.compile.winch_min_bytes = config.compile_winch_min_bytes;
    s.admission.capacity = config.capacity.min(n as usize);
    s.admission.per_tenant = config.per_tenant;
    s.limits.default_timeout = Duration::from_millis(config.default_timeout_ms.max(1));
    s.limits.default_memory_mb = config.default_memory_mb.max(1);
    if !(1_000..=600_000).contains(&config.idempotency_lease_ms) {
        return Err(SettingsError::IdempotencyLease);
    }
    s.limits.idempotency_lease = Duration::from_millis(config.idempotency_lease_ms);
    for entry in config.egress_deny.iter().filter(|e| !e.trim().is_empty()) {
        s.egress
            .deny
            .add(entry)
            .map_err(SettingsError::EgressDeny)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> Config {
        let base = ["annex-worker", "--tls-ca=ca", "--tls-cert=c", "--tls-key=k"];
        Config::try_parse_from(base.iter().chain(args)).expect("flags parse")
    }

    #[test]
    fn a_worker_needs_a_control_plane_or_local_bundles_and_trust() {
        let no_source = Settings::try_from(&parse(&["--bundle-dir=b"]));
        assert_eq!(no_source.err(), Some(SettingsError::NoSource));
        let local = Settings::try_from(&parse(&["--bundle-dir=b", "--trust-file=t"]));
        assert!(matches!(local.map(|s| s.origin), Ok(Origin::Local { .. })));
        let remote = Settings::try_from(&parse(&["--control-plane-url=https://cp:7443"]));
        assert!(matches!(
            remote.map(|s| s.origin),
            Ok(Origin::ControlPlane { .. })
        ));
    }

    #[test]
    fn the_runner_api_alone_is_a_source_with_or_without_trust_keys() {
        let api = [
            "--runner-api-listen=127.0.0.1:8080",
            "--runner-api-token-file=t",
        ];
        let alone = Settings::try_from(&parse(&api));
        assert!(matches!(
            alone.map(|s| s.origin),
            Ok(Origin::RunnerApiOnly { trust_file: None })
        ));
        let trusted = Settings::try_from(&parse(&[api[0], api[1], "--trust-file=k"]));
        assert!(matches!(
            trusted.map(|s| s.origin),
            Ok(Origin::RunnerApiOnly {
                trust_file: Some(_)
            })
        ));
        let no_token = Settings::try_from(&parse(&[api[0]]));
        assert!(matches!(no_token, Err(SettingsError::RunnerApi(_))));
    }

    #[test]
    fn invalid_values_fail_at_start() {
        let url = Settings::try_from(&parse(&["--control-plane-url=https://a b"]));
        assert!(matches!(url, Err(SettingsError::ControlPlaneUrl(_))));
        let plaintext = Settings::try_from(&parse(&["--control-plane-url=http://cp:7443"]));
        assert!(matches!(plaintext, Err(SettingsError::ControlPlaneUrl(_))));
        let capacity = Settings::try_from(&parse(&[
            "--control-plane-url=https://cp:7443",
            "--capacity=0",
        ]));
        assert_eq!(capacity.err(), Some(SettingsError::NoCapacity));
        let deny = Settings::try_from(&parse(&[
            "--control-plane-url=https://cp:7443",
            "--egress-deny=cp-admin:9090,bad host",
        ]));
        assert!(matches!(deny, Err(SettingsError::EgressDeny(_))));
    }

    #[test]
    fn trust_keys_stay_usable_for_a_day_by_default() {
        let s =
            Settings::try_from(&parse(&["--control-plane-url=https://cp:7443"])).expect("valid");
        assert_eq!(s.trust_max_age, Duration::from_secs(86_400));
        let s = Settings::try_from(&parse(&[
            "--control-plane-url=https://cp:7443",
            "--trust-max-age-secs=60",
            "--egress-deny=cp-admin:9090,10.0.0.9",
        ]))
        .expect("valid");
        assert_eq!(s.trust_max_age, Duration::from_secs(60));
    }

    #[test]
    fn several_control_planes_come_from_repeated_flags_and_commas() {
        let s = Settings::try_from(&parse(&[
            "--control-plane-url=https://cp-0:7443,https://cp-1:7443",
            "--control-plane-url=https://10.0.0.3:7443",
        ]))
        .expect("valid");
        let Origin::ControlPlane { urls, .. } = s.origin else {
            panic!("a control-plane origin");
        };
        assert_eq!(urls.len(), 3);
    }

    #[test]
    fn capacity_is_bounded_by_the_pool_and_advertise_defaults_to_loopback() {
        let s = Settings::try_from(&parse(&[
            "--control-plane-url=https://cp:7443",
            "--pool-instances=8",
            "--capacity=64",
            "--grpc-listen=0.0.0.0:7444",
        ]))
        .expect("valid");
        assert_eq!(s.executor.admission.capacity, 8);
        assert_eq!(s.advertise_address, "127.0.0.1:7444");
    }

    #[test]
    fn compiles_are_bounded_by_default_and_by_flags() {
        let cp = "--control-plane-url=https://cp:7443";
        let defaults = Settings::try_from(&parse(&[cp])).expect("valid");
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert_eq!(
            defaults.executor.compile.concurrency,
            default_concurrency(cores)
        );
        assert_eq!(
            defaults.executor.compile.memory_budget_bytes,
            768 * 1024 * 1024
        );
        assert_eq!(defaults.executor.compile.wait, Duration::from_secs(2));
        assert_eq!(
            defaults.executor.compile.tiering,
            Tiering::WinchThenCranelift
        );
        assert_eq!(
            defaults.executor.compile.winch_min_bytes,
            crate::cache::DEFAULT_WINCH_MIN_BYTES
        );
        let set = Settings::try_from(&parse(&[
            cp,
            "--compile-concurrency=3",
            "--compile-memory-mb=2048",
            "--compile-wait-ms=500",
            "--compile-tiering=cranelift",
            "--compile-winch-min-bytes=0",
        ]))
        .expect("valid");
        assert_eq!(set.executor.compile.concurrency, 3);
        assert_eq!(set.executor.compile.memory_budget_bytes, 2048 * 1024 * 1024);
        assert_eq!(set.executor.compile.wait, Duration::from_millis(500));
        assert_eq!(set.executor.compile.tiering, Tiering::Cranelift);
        assert_eq!(set.executor.compile.winch_min_bytes, 0);
    }
}
