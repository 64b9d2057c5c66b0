//! `annex-loadtest`: the load harness every Annex performance figure comes
//! from. It drives HTTP against the edge and gRPC against `Worker.Execute` and
//! `Dispatch.Execute`, in closed loop (fixed concurrency) or open loop (fixed
//! arrival rate, latency from the intended send time), records HDR histograms
//! after a warm-up, and reports as text, JSON and Markdown. `compare` runs two
//! targets alternately in one session; `scenario` holds the load issue's
//! presets; `cold-start` times a process start or setup steps to the first
//! success.
//!
//! It must not send anything off the machine: every target passes the
//! [`loopback`] check, and every run is bounded in both time and count.

pub mod cli;
pub mod cold_start;
pub mod compare;
pub mod engine;
pub mod grpc;
pub mod http;
pub mod loopback;
pub mod plan;
pub mod record;
pub mod report;
pub mod scenario;
pub mod stub;
pub mod target;

use anyhow::Context as _;
use cli::{Cli, Command, LoadDefaults};
use grpc::Service;
use report::{Document, Output, RunReport};

/// Runs one command to its report. Printing and files are the caller's.
pub async fn execute(command: &Command) -> anyhow::Result<Option<Output>> {
    Ok(Some(match command {
        Command::Http { load, url, request } => {
            let spec = load.spec(LoadDefaults::default())?;
            let (_, path) = cli::split_url(url)?;
            let target = cli::http_target(url, request.plan(path)?, request).await?;
            let r = engine::run(&target, &spec).await;
            Output::Runs {
                runs: vec![RunReport::new("http", target.describe(), &spec, &r)],
            }
        }
        Command::Worker { load, grpc } | Command::Dispatch { load, grpc } => {
            let (service, name) = match command {
                Command::Worker { .. } => (Service::Worker, "worker"),
                _ => (Service::Dispatch, "dispatch"),
            };
            let spec = load.spec(LoadDefaults::default())?;
            let target = grpc
                .request
                .target(service, &grpc.url, false, grpc.expect.expect())
                .await?;
            let r = engine::run(&target, &spec).await;
            Output::Runs {
                runs: vec![RunReport::new(name, target.describe(), &spec, &r)],
            }
        }
        Command::Compare(c) => {
            // Slices are short; the defaults make 3 rounds of 2 × (0.5 s + 3 s).
            let spec = c.load.spec(LoadDefaults {
                warmup: std::time::Duration::from_millis(500),
                duration: std::time::Duration::from_secs(3),
                ..LoadDefaults::default()
            })?;
            let mut targets = Vec::new();
            for url in [&c.a, &c.b] {
                let (_, path) = cli::split_url(url)?;
                targets.push(cli::http_target(url, c.request.plan(path)?, &c.request).await?);
            }
            Output::Compare(Box::new(
                compare::compare(&targets[0], &targets[1], &spec, c.rounds).await,
            ))
        }
        Command::Scenario(s) => scenario::run(s).await?,
        Command::Scenarios => {
            print!("{}", scenario::list());
            return Ok(None);
        }
        Command::Stub { listen, lifetime } => {
            let checked = loopback::resolve(&format!("http://{listen}"), 80).await?;
            let listener = tokio::net::TcpListener::bind(checked.addr)
                .await
                .with_context(|| format!("binding {listen}"))?;
            println!("stub listening on http://{}", listener.local_addr()?);
            let lifetime = *lifetime;
            stub::serve(listener, Default::default(), async move {
                tokio::time::sleep(lifetime).await;
            })
            .await?;
            return Ok(None);
        }
        Command::ColdStart(c) => {
            let target = c.target().await?;
            Output::ColdStart(cold_start::run(&target, &c.steps).await?)
        }
    }))
}

/// The binary's body: parse, run on a runtime of `--threads` workers, report.
pub fn main_with(cli: Cli) -> anyhow::Result<()> {
    let threads = cli.threads.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let output = runtime.block_on(execute(&cli.command))?;
    let Some(output) = output else {
        return Ok(());
    };
    let gave_up = match &output {
        Output::ColdStart(c) => c.runs.iter().any(|r| r.first_success_ms.is_none()),
        _ => false,
    };
    Document::new(output, threads).emit(cli.json.as_deref(), cli.markdown.as_deref())?;
    if gave_up {
        anyhow::bail!("the cold-start target never answered with a success (report written)");
    }
    Ok(())
}
