//! Cold-start timing: optionally start a long-running process (a fresh worker,
//! a whole `annex dev`), run setup steps to completion (`annex publish`,
//! `annex install`), then poll a target until the first success. Reports the
//! time from the start to the first success, from the last step to the first
//! success, and how long the successful call itself took.
//!
//! The started process runs in its own process group so that a shell wrapper
//! and its children are stopped together, by that group's id, at the end of
//! each repetition. Nothing else is ever signalled.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cli::{GrpcRequestArgs, RequestArgs, parse_duration};
use crate::compare::median;
use crate::grpc::Service;
use crate::target::{Sample, Target};

/// The process to start and the steps to run; shared by the `cold-start`
/// command and the `cold-start` scenario.
#[derive(Debug, Clone, Args, Default)]
pub struct ColdStartSteps {
    /// Long-running command started first (via `sh -c`) and stopped after each repetition.
    #[arg(long)]
    pub start: Option<String>,
    /// The started command's stdout and stderr go here (default: discarded).
    #[arg(long)]
    pub start_log: Option<PathBuf>,
    /// Command run to completion after the start, in order (repeatable), e.g. `annex install ...`.
    #[arg(long = "step")]
    pub steps: Vec<String>,
    /// Repetitions; each starts the process afresh and reruns the steps.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Pause between polls.
    #[arg(long, value_parser = parse_duration, default_value = "10ms")]
    pub poll_interval: Duration,
    /// Give up when no success came this long after the start.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub give_up: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ColdStartArgs {
    /// What to poll: an http:// URL, or the gRPC server's URL with --service.
    #[arg(long)]
    pub poll: String,
    /// Poll Worker.Execute or Dispatch.Execute instead of HTTP.
    #[arg(long, value_enum)]
    pub service: Option<Service>,
    #[command(flatten)]
    pub steps: ColdStartSteps,
    #[command(flatten)]
    pub request: RequestArgs,
    #[command(flatten)]
    pub grpc: GrpcRequestArgs,
}

impl ColdStartArgs {
    /// The poll target; gRPC channels connect lazily because the server may not be up yet.
    pub async fn target(&self) -> anyhow::Result<Target> {
        match self.service {
            Some(service) => {
                self.grpc
                    .target(service, &self.poll, true, self.request.expect.expect())
                    .await
            }
            None => {
                let (_, path) = crate::cli::split_url(&self.poll)?;
                crate::cli::http_target(&self.poll, self.request.plan(path)?, &self.request).await
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepTiming {
    pub command: String,
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColdStartRun {
    pub steps: Vec<StepTiming>,
    /// From starting the process (or the first step) to the first success.
    pub first_success_ms: Option<f64>,
    /// From the end of the last step to the first success.
    pub after_steps_ms: Option<f64>,
    /// Duration of the successful call itself.
    pub first_ok_call_ms: Option<f64>,
    pub polls: u64,
    /// The last failure seen while polling.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColdStartReport {
    pub target: String,
    pub start: Option<String>,
    pub runs: Vec<ColdStartRun>,
    pub median_first_success_ms: Option<f64>,
    pub median_after_steps_ms: Option<f64>,
    pub median_first_ok_call_ms: Option<f64>,
}

pub async fn run(target: &Target, s: &ColdStartSteps) -> anyhow::Result<ColdStartReport> {
    let mut runs = Vec::new();
    for _ in 0..s.repeat.max(1) {
        let t0 = Instant::now();
        let started = match &s.start {
            Some(cmd) => Some(Started::spawn(cmd, s.start_log.as_ref())?),
            None => None,
        };
        let result = one(target, s, t0).await;
        if let Some(p) = started {
            p.stop().await;
        }
        runs.push(result?);
    }
    let med = |f: fn(&ColdStartRun) -> Option<f64>| {
        let v: Vec<f64> = runs.iter().filter_map(f).collect();
        (v.len() == runs.len()).then(|| median(v))
    };
    Ok(ColdStartReport {
        target: target.describe(),
        start: s.start.clone(),
        median_first_success_ms: med(|r| r.first_success_ms),
        median_after_steps_ms: med(|r| r.after_steps_ms),
        median_first_ok_call_ms: med(|r| r.first_ok_call_ms),
        runs,
    })
}

async fn one(target: &Target, s: &ColdStartSteps, t0: Instant) -> anyhow::Result<ColdStartRun> {
    let mut steps = Vec::new();
    for cmd in &s.steps {
        let began = Instant::now();
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running step `{cmd}`"))?;
        if !out.status.success() {
            bail!(
                "step `{cmd}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        steps.push(StepTiming {
            command: cmd.clone(),
            ms: ms(began.elapsed()),
        });
    }
    let steps_done = Instant::now();
    let deadline = t0 + s.give_up;
    let mut conn = target.connection(0);
    let mut run = ColdStartRun {
        steps,
        first_success_ms: None,
        after_steps_ms: None,
        first_ok_call_ms: None,
        polls: 0,
        last_error: None,
    };
    while Instant::now() < deadline {
        run.polls += 1;
        let sent = Instant::now();
        let sample = tokio::time::timeout_at(deadline, conn.send(run.polls)).await;
        let done = Instant::now();
        match sample {
            Ok(Sample::Ok { .. }) => {
                run.first_success_ms = Some(ms(done - t0));
                run.after_steps_ms = Some(ms(done - steps_done));
                run.first_ok_call_ms = Some(ms(done - sent));
                return Ok(run);
            }
            Ok(Sample::Error(kind)) => run.last_error = Some(kind),
            Err(_) => run.last_error = Some("timeout".into()),
        }
        tokio::time::sleep(s.poll_interval).await;
    }
    Ok(run)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A process we started, in its own process group.
struct Started {
    child: tokio::process::Child,
}

impl Started {
    fn spawn(cmd: &str, log: Option<&PathBuf>) -> anyhow::Result<Started> {
        let (stdout, stderr) = match log {
            Some(path) => {
                let f = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let g = f.try_clone().context("duplicating the log file handle")?;
                (Stdio::from(f), Stdio::from(g))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `{cmd}`"))?;
        Ok(Started { child })
    }

    /// SIGTERM to the group, then SIGKILL if it has not exited within 5 s.
    async fn stop(mut self) {
        let Some(pgid) = self.child.id() else {
            return; // already exited and reaped
        };
        let signal = |sig: &'static str| {
            std::process::Command::new("kill")
                .args([sig, "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status()
        };
        let _ = signal("-TERM");
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = signal("-KILL");
            let _ = self.child.wait().await;
        }
    }
}

impl ColdStartReport {
    pub fn text(&self, out: &mut String) {
        let _ = writeln!(out, "== cold start ==\ntarget    {}", self.target);
        if let Some(s) = &self.start {
            let _ = writeln!(out, "start     {s}");
        }
        for (i, r) in self.runs.iter().enumerate() {
            let steps: Vec<String> = r
                .steps
                .iter()
                .map(|s| format!("`{}` {:.1} ms", s.command, s.ms))
                .collect();
            let _ = writeln!(
                out,
                "run {}     first success {} after start, {} after steps; that call {}; {} polls{}{}",
                i + 1,
                opt_ms(r.first_success_ms),
                opt_ms(r.after_steps_ms),
                opt_ms(r.first_ok_call_ms),
                r.polls,
                if steps.is_empty() {
                    String::new()
                } else {
                    format!("; steps: {}", steps.join(", "))
                },
                match (&r.first_success_ms, &r.last_error) {
                    (None, Some(e)) => format!("; gave up, last error: {e}"),
                    _ => String::new(),
                }
            );
        }
        let _ = writeln!(
            out,
            "median    first success {}, after steps {}, first ok call {}",
            opt_ms(self.median_first_success_ms),
            opt_ms(self.median_after_steps_ms),
            opt_ms(self.median_first_ok_call_ms)
        );
    }

    pub fn markdown(&self, out: &mut String) {
        let _ = writeln!(out, "Target: {}\n", self.target);
        let _ = writeln!(
            out,
            "| run | first success (from start) | after steps | successful call | polls |\n|---:|---:|---:|---:|---:|"
        );
        for (i, r) in self.runs.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                i + 1,
                opt_ms(r.first_success_ms),
                opt_ms(r.after_steps_ms),
                opt_ms(r.first_ok_call_ms),
                r.polls
            );
        }
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "never".to_owned(), |v| format!("{v:.1} ms"))
}
