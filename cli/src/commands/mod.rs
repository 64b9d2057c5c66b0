//! One module per command family. Each command takes its parsed arguments and a [`Context`]
//! (the global options) and returns a [`Report`]; it never prints its result itself and never
//! exits the process.
//!
//! Local commands (`new`, `build`, `keygen`, `pack`, `sign`, `token`, `completions`) need no
//! network. The rest connect through [`crate::client`]. A new command slots in as another
//! module and another arm in [`run`].

mod api_keys;
mod build;
mod call;
mod capture;
mod completions;
mod config;
mod dev;
mod installs;
mod keygen;
mod new;
mod pack;
mod publish;
mod quota;
mod rollout;
mod secrets;
mod sign;
mod storage;
mod token;
mod trust;

use crate::cli::{Cli, Command, Global};
use crate::client::{ControlPlane, Target};
use crate::failure::usage;
use crate::output::Report;

pub use pack::human_bytes;

/// Global options, with the lookups commands share.
#[derive(Debug)]
pub struct Context {
    pub global: Global,
}

impl Context {
    /// `--tenant` / `ANNEX_TENANT`, required by tenant-scoped commands.
    pub fn tenant(&self) -> anyhow::Result<String> {
        match self.global.tenant.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => Ok(t.to_owned()),
            _ => Err(usage(
                "this command needs a tenant: pass --tenant or set ANNEX_TENANT",
            )),
        }
    }

    pub fn target(&self) -> Target {
        let g = &self.global;
        Target::new(
            &g.control_plane,
            &g.tls_dir,
            [g.tls_ca.clone(), g.tls_cert.clone(), g.tls_key.clone()],
            g.tls_server_name.clone(),
        )
    }

    pub async fn connect(&self) -> anyhow::Result<ControlPlane> {
        ControlPlane::connect(&self.target()).await
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<Report> {
    let cx = Context { global: cli.global };
    match cli.command {
        Command::New(args) => new::run(args),
        Command::Build(args) => build::run(args).await,
        Command::Completions(args) => completions::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Pack(args) => pack::run(args).await,
        Command::Sign(args) => sign::run(args).await,
        Command::Publish(args) => publish::publish(&cx, args).await,
        Command::Versions(args) => publish::versions(&cx, &args.extension).await,
        Command::Install(args) => installs::install(&cx, args).await,
        Command::Upgrade(args) => installs::upgrade(&cx, args).await,
        Command::Rollout(cmd) => rollout::run(&cx, cmd).await,
        Command::Uninstall(args) => installs::uninstall(&cx, &args.extension).await,
        Command::Enable(args) => installs::set_enabled(&cx, &args.extension, true).await,
        Command::Disable(args) => installs::set_enabled(&cx, &args.extension, false).await,
        Command::Installs => installs::list(&cx).await,
        Command::Status(args) => installs::status(&cx, &args.extension).await,
        Command::Config(cmd) => config::run(&cx, cmd).await,
        Command::Secrets(cmd) => secrets::run(&cx, cmd).await,
        Command::Storage(cmd) => storage::run(&cx, cmd).await,
        Command::Trust(cmd) => trust::run(&cx, cmd).await,
        Command::ApiKey(cmd) => api_keys::run(&cx, cmd).await,
        Command::Quota(cmd) => quota::run(&cx, cmd).await,
        Command::Usage(args) => quota::usage(&cx, args).await,
        Command::Token(args) => token::run(&cx, args),
        Command::Call(args) => call::call(&cx, args).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Logs(args) => call::logs(&cx, args).await,
        Command::Capture(cmd) => capture::run(&cx, cmd).await,
        Command::Replay(args) => capture::replay(&cx, args).await,
    }
}

/// Runs blocking work (hashing, packing, tar reading) off the async runtime.
pub async fn blocking<T, F>(f: F) -> anyhow::Result<T>
where
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!("a background task failed: {e}"))?
}
