//! Scenario presets from the load issue, as named configurations over the
//! edge's `/api/ext/{extension}/...` URLs: each fixes the request mix and the
//! default load shape; flags still override the load shape, the base URL,
//! credentials and the ids. Presets that need state (KV reads) fill it first
//! with a bounded setup run. Noisy neighbour and cold start are sequences of
//! runs and have report kinds of their own.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::cli::{LoadArgs, LoadDefaults, RequestArgs};
use crate::engine::{self, LoadSpec, Mode};
use crate::plan::{Plan, Variant, generated_body};
use crate::report::{Output, RUN_TABLE_HEADER, RunReport, human_us};
use crate::target::Target;

#[derive(Debug, Clone, Args)]
pub struct ScenarioArgs {
    /// Preset name (`annex-loadtest scenarios` lists them).
    pub name: String,
    /// The edge's base URL.
    #[arg(
        long,
        env = "ANNEX_LOADTEST_BASE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub base_url: String,
    /// The `{extensionId}` in /api/ext/{extensionId}/... (as `annex install` printed it).
    #[arg(long, env = "ANNEX_LOADTEST_EXTENSION")]
    pub extension: Option<String>,
    /// Secret name the `secrets` preset reads.
    #[arg(long, default_value = "loadtest")]
    pub secret_key: String,
    /// noisy-neighbour: the flooding extension (e.g. the `misbehave` example).
    #[arg(long)]
    pub flood_extension: Option<String>,
    /// noisy-neighbour: the flood's path (the misbehave guest's endless loop).
    #[arg(long, default_value = "/loop")]
    pub flood_path: String,
    /// noisy-neighbour: connections flooding.
    #[arg(long, default_value_t = 8)]
    pub flood_concurrency: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub request: RequestArgs,
    #[command(flatten)]
    pub cold: crate::cold_start::ColdStartSteps,
}

pub struct Preset {
    pub name: &'static str,
    pub about: &'static str,
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "hello",
        about: "GET /hello (tiny JSON), closed loop, 64 connections",
    },
    Preset {
        name: "echo-1k",
        about: "POST /echo with a 1 KiB body, 64 connections",
    },
    Preset {
        name: "echo-64k",
        about: "POST /echo with a 64 KiB body, 16 connections",
    },
    Preset {
        name: "kv-read",
        about: "95% GET /storage/get, 5% POST /storage/put over --keys keys (filled first); \
                needs a guest exposing the probe's storage paths",
    },
    Preset {
        name: "kv-write",
        about: "20% GET /storage/get, 80% POST /storage/put (256 B values)",
    },
    Preset {
        name: "secrets",
        about: "GET /secrets/get?key=<--secret-key>",
    },
    Preset {
        name: "multi-tenant-zipf",
        about: "GET /api/ext/{install}/hello over --installs-file with Zipf(--zipf) popularity",
    },
    Preset {
        name: "noisy-neighbour",
        about: "victim hello alone, then again while --flood-extension floods --flood-path; \
                reports the victim's p99 both ways",
    },
    Preset {
        name: "cold-start",
        about: "--start/--step, then poll /hello until the first 2xx (see `cold-start` for any URL)",
    },
];

/// The storage namespace the KV presets use.
const KV_NAMESPACE: &str = "loadtest";
/// Small enough to be typical for extension state, large enough to not be free.
const KV_VALUE_BYTES: usize = 256;

impl ScenarioArgs {
    fn ext_url(&self, extension: &str, path: &str) -> String {
        format!(
            "{}/api/ext/{extension}{path}",
            self.base_url.trim_end_matches('/')
        )
    }

    fn extension(&self) -> anyhow::Result<&str> {
        self.extension
            .as_deref()
            .with_context(|| format!("scenario `{}` needs --extension", self.name))
    }

    fn defaults(&self) -> LoadDefaults {
        let concurrency = match self.name.as_str() {
            "echo-64k" => 16,
            _ => 64,
        };
        LoadDefaults {
            concurrency,
            ..LoadDefaults::default()
        }
    }

    /// The request mix of a simple preset (the path part after the base URL).
    fn variants(&self) -> anyhow::Result<Vec<Variant>> {
        let get = |path: String| Variant {
            weight: 1,
            method: http::Method::GET,
            path,
            body: Bytes::new(),
        };
        let post = |path: String, body: Bytes| Variant {
            weight: 1,
            method: http::Method::POST,
            path,
            body,
        };
        let kv = |read: u32, write: u32| -> anyhow::Result<Vec<Variant>> {
            let ext = self.extension()?;
            let q = format!("?ns={KV_NAMESPACE}&key=k{{key}}");
            Ok(vec![
                Variant {
                    weight: read,
                    ..get(format!("/api/ext/{ext}/storage/get{q}"))
                },
                Variant {
                    weight: write,
                    ..post(
                        format!("/api/ext/{ext}/storage/put{q}"),
                        generated_body(KV_VALUE_BYTES),
                    )
                },
            ])
        };
        Ok(match self.name.as_str() {
            "hello" => vec![get(format!("/api/ext/{}/hello", self.extension()?))],
            "echo-1k" => vec![post(
                format!("/api/ext/{}/echo", self.extension()?),
                generated_body(1024),
            )],
            "echo-64k" => vec![post(
                format!("/api/ext/{}/echo", self.extension()?),
                generated_body(64 * 1024),
            )],
            "kv-read" => kv(95, 5)?,
            "kv-write" => kv(20, 80)?,
            "secrets" => vec![get(format!(
                "/api/ext/{}/secrets/get?key={}",
                self.extension()?,
                self.secret_key
            ))],
            "multi-tenant-zipf" => vec![get("/api/ext/{install}/hello".to_owned())],
            other => bail!("unknown scenario `{other}` (see `annex-loadtest scenarios`)"),
        })
    }

    async fn target_for(&self, plan: Plan, request: &RequestArgs) -> anyhow::Result<Target> {
        crate::cli::http_target(&self.base_url, plan, request).await
    }
}

pub async fn run(args: &ScenarioArgs) -> anyhow::Result<Output> {
    if args.request.method.is_some()
        || args.request.body_file.is_some()
        || args.request.body_size.is_some()
    {
        bail!(
            "scenario presets fix the method and body; use `annex-loadtest http` for custom requests"
        );
    }
    let spec = args.load.spec(args.defaults())?;
    match args.name.as_str() {
        "noisy-neighbour" => Ok(Output::NoisyNeighbour(Box::new(noisy(args, &spec).await?))),
        "cold-start" => {
            let url = args.ext_url(args.extension()?, "/hello");
            let (_, path) = crate::cli::split_url(&url)?;
            let target =
                crate::cli::http_target(&url, args.request.plan(path)?, &args.request).await?;
            crate::cold_start::run(&target, &args.cold)
                .await
                .map(Output::ColdStart)
        }
        _ => {
            let mut request = args.request.clone();
            if matches!(args.name.as_str(), "kv-read" | "kv-write" | "secrets")
                && request.expect.error_body.is_none()
            {
                // The probe guest answers 200 with {"err": ...} when a host call fails.
                request.expect.error_body = Some("\"err\"".into());
            }
            let installs = request.installs()?;
            if args.name == "multi-tenant-zipf" && installs.is_none() {
                bail!(
                    "scenario `multi-tenant-zipf` needs --installs-file (one install id per line)"
                );
            }
            let mut runs = Vec::new();
            if args.name == "kv-read" {
                runs.push(fill_keys(args, &request).await?);
            }
            let plan = Plan::new(args.variants()?, installs, request.keys)?;
            let target = args.target_for(plan, &request).await?;
            let r = engine::run(&target, &spec).await;
            runs.push(RunReport::new(&args.name, target.describe(), &spec, &r));
            Ok(Output::Runs { runs })
        }
    }
}

/// Writes every key once so reads find them: one connection, bounded by the key count.
async fn fill_keys(args: &ScenarioArgs, request: &RequestArgs) -> anyhow::Result<RunReport> {
    let ext = args.extension()?;
    let put = Variant {
        weight: 1,
        method: http::Method::POST,
        path: format!("/api/ext/{ext}/storage/put?ns={KV_NAMESPACE}&key=k{{seq}}"),
        body: generated_body(KV_VALUE_BYTES),
    };
    let spec = LoadSpec {
        mode: Mode::Closed,
        concurrency: 1,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(60),
        max_requests: request.keys,
        timeout: Duration::from_secs(5),
    };
    let target = args
        .target_for(Plan::new(vec![put], None, 1)?, request)
        .await?;
    let r = engine::run(&target, &spec).await;
    if r.recorder.error_count() > 0 {
        bail!(
            "filling {} keys failed: {:?}",
            request.keys,
            r.recorder.errors
        );
    }
    Ok(RunReport::new("kv-read fill", target.describe(), &spec, &r))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoisyReport {
    pub victim_alone: RunReport,
    pub victim_with_flood: RunReport,
    pub flood: RunReport,
    /// Victim p99 with the flood divided by without.
    pub p99_ratio: f64,
}

async fn noisy(args: &ScenarioArgs, spec: &LoadSpec) -> anyhow::Result<NoisyReport> {
    let ext = args.extension()?;
    let flood_ext = args
        .flood_extension
        .as_deref()
        .context("scenario `noisy-neighbour` needs --flood-extension")?;
    let hello = Plan::single(
        http::Method::GET,
        format!("/api/ext/{ext}/hello"),
        Bytes::new(),
    );
    let victim = args.target_for(hello, &args.request).await?;
    // The flood's failures (timeouts, traps) are its point: every status counts as sent.
    let mut flood_request = args.request.clone();
    flood_request.expect.expect_status = (100..600).collect();
    flood_request.expect.error_body = None;
    let flood_path = format!("/api/ext/{flood_ext}{}", args.flood_path);
    let flood = args
        .target_for(
            Plan::single(http::Method::GET, flood_path, Bytes::new()),
            &flood_request,
        )
        .await?;

    let alone = engine::run(&victim, spec).await;
    let flood_spec = LoadSpec {
        mode: Mode::Closed,
        concurrency: args.flood_concurrency,
        warmup: Duration::ZERO,
        // Covers the victim's warm-up and measurement; bounded like any run.
        duration: spec.warmup + spec.duration,
        max_requests: spec.max_requests,
        timeout: spec.timeout,
    };
    let flood_task = {
        let flood = flood.clone();
        let flood_spec = flood_spec.clone();
        tokio::spawn(async move { engine::run(&flood, &flood_spec).await })
    };
    let with = engine::run(&victim, spec).await;
    let flooded = flood_task.await.context("the flood task failed")?;

    let victim_alone = RunReport::new("victim alone", victim.describe(), spec, &alone);
    let victim_with_flood = RunReport::new("victim with flood", victim.describe(), spec, &with);
    let p99_ratio = if victim_alone.latency.p99_us > 0.0 {
        victim_with_flood.latency.p99_us / victim_alone.latency.p99_us
    } else {
        f64::NAN
    };
    Ok(NoisyReport {
        flood: RunReport::new("flood", flood.describe(), &flood_spec, &flooded),
        victim_alone,
        victim_with_flood,
        p99_ratio,
    })
}

impl NoisyReport {
    pub fn text(&self, out: &mut String) {
        for r in [&self.victim_alone, &self.victim_with_flood, &self.flood] {
            r.text(out);
        }
        let _ = writeln!(
            out,
            "victim p99 {} alone, {} under flood: ratio {:.2}",
            human_us(self.victim_alone.latency.p99_us),
            human_us(self.victim_with_flood.latency.p99_us),
            self.p99_ratio
        );
    }

    pub fn markdown(&self, out: &mut String) {
        let _ = writeln!(out, "{RUN_TABLE_HEADER}");
        for r in [&self.victim_alone, &self.victim_with_flood, &self.flood] {
            let _ = writeln!(out, "{}", r.markdown_row());
        }
        let _ = writeln!(
            out,
            "\nVictim p99 ratio (flood / alone): {:.2}",
            self.p99_ratio
        );
    }
}

pub fn list() -> String {
    let mut out = String::new();
    for p in PRESETS {
        let _ = writeln!(out, "{:<18} {}", p.name, p.about);
    }
    out
}
