//! The command line: subcommands and their flags (clap derive; the common
//! ones also read `ANNEX_LOADTEST_<NAME>`), and their conversion into
//! validated values: [`LoadSpec`], HTTP and gRPC [`Target`]s. Nothing here
//! sends traffic; every target URL goes through the loopback check first.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::{LoadSpec, Mode};
use crate::grpc::{self, GrpcTarget, Service, Shape};
use crate::http::HttpTarget;
use crate::plan::{Installs, Plan, Variant, generated_body};
use crate::target::{Expect, Target};

#[derive(Debug, Parser)]
#[command(
    name = "annex-loadtest",
    version,
    about = "Load harness for Annex: HTTP and gRPC, closed and open loop, loopback only"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Tokio worker threads for the harness. On a 2-core machine the target
    /// needs the other core; raise this when the harness is the bottleneck.
    #[arg(
        long,
        global = true,
        env = "ANNEX_LOADTEST_THREADS",
        default_value_t = 1
    )]
    pub threads: usize,
    /// Also write the report as JSON to this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write the report as Markdown to this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP load against a URL (the edge's /api/ext/...).
    Http {
        #[command(flatten)]
        load: LoadArgs,
        /// Target URL; the path may use {install}, {key} and {seq}.
        #[arg(long)]
        url: String,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// gRPC load against Worker.Execute.
    Worker {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        grpc: GrpcArgs,
    },
    /// gRPC load against Dispatch.Execute (the control plane).
    Dispatch {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        grpc: GrpcArgs,
    },
    /// Two HTTP targets alternately in one session (A, B, A, B…); medians and the ratio B/A.
    Compare(CompareArgs),
    /// Run a named scenario preset (see `scenarios`).
    Scenario(crate::scenario::ScenarioArgs),
    /// List the scenario presets.
    Scenarios,
    /// Serve the calibration stub (answers at once; measures the harness, not Annex).
    Stub {
        /// Loopback address to listen on.
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: String,
        /// Exit after this long.
        #[arg(long, value_parser = parse_duration, default_value = "10m")]
        lifetime: Duration,
    },
    /// Time a cold start: start a process and/or run steps, then poll until the first success.
    ColdStart(crate::cold_start::ColdStartArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Closed,
    Open,
}

/// Load shape. Unset values take the command's or scenario's defaults.
#[derive(Debug, Clone, Args, Default)]
pub struct LoadArgs {
    /// closed: fixed concurrency; open: fixed arrival rate (needs --rate).
    #[arg(long, value_enum, env = "ANNEX_LOADTEST_MODE")]
    pub mode: Option<ModeArg>,
    /// Connections (closed loop) or most requests in flight (open loop).
    #[arg(long, short = 'c', env = "ANNEX_LOADTEST_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Open loop: requests per second.
    #[arg(long, env = "ANNEX_LOADTEST_RATE")]
    pub rate: Option<f64>,
    /// Warm-up before measuring, e.g. 1s, 500ms.
    #[arg(long, value_parser = parse_duration, env = "ANNEX_LOADTEST_WARMUP")]
    pub warmup: Option<Duration>,
    /// Longest measured period, e.g. 5s, 1m.
    #[arg(long, short = 'd', value_parser = parse_duration, env = "ANNEX_LOADTEST_DURATION")]
    pub duration: Option<Duration>,
    /// Most measured requests (warm-up may send as many again).
    #[arg(long, short = 'n', env = "ANNEX_LOADTEST_REQUESTS")]
    pub requests: Option<u64>,
    /// Per-request timeout.
    #[arg(long, value_parser = parse_duration, env = "ANNEX_LOADTEST_TIMEOUT")]
    pub timeout: Option<Duration>,
}

/// Defaults are small on purpose: a forgotten flag must not load a shared
/// 2-core machine for long.
#[derive(Debug, Clone, Copy)]
pub struct LoadDefaults {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub requests: u64,
}

impl Default for LoadDefaults {
    fn default() -> Self {
        LoadDefaults {
            concurrency: 16,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            requests: 100_000,
        }
    }
}

/// No request is worth waiting longer for in a load run; a stuck one is an error.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl LoadArgs {
    pub fn spec(&self, d: LoadDefaults) -> anyhow::Result<LoadSpec> {
        let mode = match (self.mode, self.rate) {
            (None | Some(ModeArg::Closed), None) => Mode::Closed,
            (Some(ModeArg::Closed), Some(_)) => bail!("--rate applies to --mode open only"),
            (None | Some(ModeArg::Open), Some(rate)) if rate > 0.0 && rate.is_finite() => {
                Mode::Open { rate }
            }
            (_, Some(rate)) => bail!("--rate must be a positive number, got {rate}"),
            (Some(ModeArg::Open), None) => bail!("--mode open needs --rate"),
        };
        let spec = LoadSpec {
            mode,
            concurrency: self.concurrency.unwrap_or(d.concurrency),
            warmup: self.warmup.unwrap_or(d.warmup),
            duration: self.duration.unwrap_or(d.duration),
            max_requests: self.requests.unwrap_or(d.requests),
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
        };
        if spec.concurrency == 0 || spec.max_requests == 0 || spec.duration.is_zero() {
            bail!("--concurrency, --requests and --duration must be positive");
        }
        Ok(spec)
    }
}

/// Which responses count as successes.
#[derive(Debug, Clone, Args, Default)]
pub struct ExpectArgs {
    /// Accepted status (repeatable); default any 2xx.
    #[arg(long = "expect-status")]
    pub expect_status: Vec<u16>,
    /// A response body containing this string is an error.
    #[arg(long)]
    pub error_body: Option<String>,
}

impl ExpectArgs {
    pub fn expect(&self) -> Expect {
        Expect {
            statuses: self.expect_status.clone(),
            error_body: self.error_body.clone(),
        }
    }
}

/// What an HTTP request carries.
#[derive(Debug, Clone, Args, Default)]
pub struct RequestArgs {
    /// Method; default GET, or POST when a body is given.
    #[arg(long, short = 'X')]
    pub method: Option<String>,
    /// Extra header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Sends `Authorization: Bearer <TOKEN>`.
    #[arg(long, env = "ANNEX_LOADTEST_BEARER", hide_env_values = true)]
    pub bearer: Option<String>,
    /// Sends `x-api-key: <KEY>`.
    #[arg(long, env = "ANNEX_LOADTEST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Request body from a file.
    #[arg(long, conflicts_with = "body_size")]
    pub body_file: Option<PathBuf>,
    /// Request body of this many generated bytes.
    #[arg(long)]
    pub body_size: Option<usize>,
    /// Content-Type of the body.
    #[arg(long, default_value = "application/octet-stream")]
    pub content_type: String,
    /// Install ids, one per line, for {install} in the path (first = most popular); a line
    /// may add the install's own bearer token after the id (`<id> <token>`).
    #[arg(long)]
    pub installs_file: Option<PathBuf>,
    /// Zipf exponent for picking installs (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// {key} ranges over 0..KEYS.
    #[arg(long, default_value_t = 100)]
    pub keys: u64,
    #[command(flatten)]
    pub expect: ExpectArgs,
}

impl RequestArgs {
    pub fn body(&self) -> anyhow::Result<Bytes> {
        Ok(match (&self.body_file, self.body_size) {
            (Some(p), _) => Bytes::from(
                std::fs::read(p).with_context(|| format!("reading body {}", p.display()))?,
            ),
            (None, Some(n)) => generated_body(n),
            (None, None) => Bytes::new(),
        })
    }

    pub fn header_map(&self, body: &Bytes) -> anyhow::Result<http::HeaderMap> {
        let mut map = http::HeaderMap::new();
        for h in &self.headers {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("header `{h}` is not `Name: value`"))?;
            map.append(
                http::HeaderName::try_from(name.trim()).with_context(|| format!("header `{h}`"))?,
                http::HeaderValue::try_from(value.trim())
                    .with_context(|| format!("header `{h}`"))?,
            );
        }
        if let Some(token) = &self.bearer {
            map.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::try_from(format!("Bearer {token}")).context("--bearer")?,
            );
        }
        if let Some(key) = &self.api_key {
            map.insert(
                "x-api-key",
                http::HeaderValue::try_from(key).context("--api-key")?,
            );
        }
        if !body.is_empty() && !map.contains_key(http::header::CONTENT_TYPE) {
            map.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::try_from(&self.content_type).context("--content-type")?,
            );
        }
        Ok(map)
    }

    pub fn installs(&self) -> anyhow::Result<Option<Installs>> {
        let Some(path) = &self.installs_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading installs {}", path.display()))?;
        Ok(Some(Installs::parse(&text, self.zipf)))
    }

    /// The single-variant plan for `path` (a template).
    pub fn plan(&self, path: String) -> anyhow::Result<Plan> {
        let body = self.body()?;
        let method = match &self.method {
            Some(m) => http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .with_context(|| format!("method `{m}`"))?,
            None if body.is_empty() => http::Method::GET,
            None => http::Method::POST,
        };
        let variant = Variant {
            weight: 1,
            method,
            path,
            body,
        };
        Ok(Plan::new(vec![variant], self.installs()?, self.keys)?)
    }
}

/// Splits `http://host:port/path?query` into the base and the path template
/// (which may hold `{placeholders}` that a URI parser would reject).
pub fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let after_scheme = url
        .find("://")
        .with_context(|| format!("`{url}` is not an absolute URL"))?
        + 3;
    match url[after_scheme..].find('/') {
        Some(i) => Ok((
            url[..after_scheme + i].to_owned(),
            url[after_scheme + i..].to_owned(),
        )),
        None => Ok((url.to_owned(), "/".to_owned())),
    }
}

/// An HTTP target for `url` (plain HTTP, loopback only) with `plan`.
pub async fn http_target(url: &str, plan: Plan, request: &RequestArgs) -> anyhow::Result<Target> {
    let (base, _) = split_url(url)?;
    let checked = crate::loopback::resolve(&base, 80).await?;
    if checked.uri.scheme_str() != Some("http") {
        bail!("`{url}`: only plain http:// is supported for HTTP load (loopback needs no TLS)");
    }
    let authority = checked
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .context("URL has no authority")?;
    let body_hint = plan_body_hint(&plan, request)?;
    Ok(Target::Http(Arc::new(HttpTarget {
        url: url.to_owned(),
        addr: checked.addr,
        authority,
        headers: request.header_map(&body_hint)?,
        plan,
        expect: request.expect.expect(),
    })))
}

/// Whether any request carries a body (decides the default Content-Type).
fn plan_body_hint(plan: &Plan, request: &RequestArgs) -> anyhow::Result<Bytes> {
    let body = request.body()?;
    if body.is_empty() && plan.has_body() {
        return Ok(Bytes::from_static(b"-"));
    }
    Ok(body)
}

/// gRPC target flags. The request comes from `--shape` and is overridden by
/// the other flags.
#[derive(Debug, Clone, Args, Default)]
pub struct GrpcArgs {
    /// `https://127.0.0.1:PORT` (mTLS) or `http://...` (plaintext).
    #[arg(long)]
    pub url: String,
    #[command(flatten)]
    pub request: GrpcRequestArgs,
    #[command(flatten)]
    pub expect: ExpectArgs,
}

#[derive(Debug, Clone, Args, Default)]
pub struct GrpcRequestArgs {
    /// JSON request shape (fields of execute.proto; see BENCHMARKS.md).
    #[arg(long)]
    pub shape: Option<PathBuf>,
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub extension_id: Option<String>,
    #[arg(long)]
    pub install_id: Option<String>,
    #[arg(long)]
    pub version_id: Option<String>,
    #[arg(long)]
    pub content_hash: Option<String>,
    /// The guest request's method.
    #[arg(long)]
    pub grpc_method: Option<String>,
    /// The guest request's path.
    #[arg(long)]
    pub grpc_path: Option<String>,
    /// The guest request's body size (generated bytes).
    #[arg(long)]
    pub grpc_body_size: Option<usize>,
    /// The execution grant from the control plane.
    #[arg(long, env = "ANNEX_LOADTEST_GRANT", hide_env_values = true)]
    pub grant: Option<String>,
    /// Granted capability (repeatable).
    #[arg(long = "provider")]
    pub providers: Vec<String>,
    /// PKI directory with ca.pem, <role>.pem, <role>-key.pem (as `annex dev` writes).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Which role's certificate from --tls-dir to present.
    #[arg(long, default_value = "edge")]
    pub tls_role: String,
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Name checked against the server certificate.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// HTTP/2 connections shared by the load workers.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
}

impl GrpcRequestArgs {
    pub fn shape(&self) -> anyhow::Result<Shape> {
        let mut s = match &self.shape {
            Some(p) => Shape::load(p)?,
            None => Shape::default(),
        };
        let set = |field: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                field.clone_from(v);
            }
        };
        set(&mut s.tenant, &self.tenant);
        set(&mut s.extension_id, &self.extension_id);
        set(&mut s.install_id, &self.install_id);
        set(&mut s.version_id, &self.version_id);
        set(&mut s.content_hash, &self.content_hash);
        set(&mut s.method, &self.grpc_method);
        set(&mut s.path, &self.grpc_path);
        set(&mut s.grant, &self.grant);
        if let Some(n) = self.grpc_body_size {
            s.body_size = n;
            s.body_file = None;
        }
        if !self.providers.is_empty() {
            s.providers.clone_from(&self.providers);
        }
        Ok(s)
    }

    fn tls(&self) -> anyhow::Result<Option<annex_ops::tls::TlsFiles>> {
        if let (Some(ca), Some(cert), Some(key)) = (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            return Ok(Some(annex_ops::tls::TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }));
        }
        let Some(dir) = &self.tls_dir else {
            return Ok(None);
        };
        let role = annex_ops::Role::parse(&self.tls_role)
            .with_context(|| format!("--tls-role `{}` is not a role", self.tls_role))?;
        Ok(Some(annex_ops::devcerts::role_files(dir, role)))
    }

    pub async fn target(
        &self,
        service: Service,
        url: &str,
        lazy: bool,
        expect: Expect,
    ) -> anyhow::Result<Target> {
        let connect = grpc::Connect {
            url: url.to_owned(),
            tls: self.tls()?,
            server_name: self.server_name.clone(),
            connections: self.connections,
            lazy,
        };
        let target = GrpcTarget::new(service, &connect, self.shape()?, expect).await?;
        Ok(Target::Grpc(Arc::new(target)))
    }
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Target A (the baseline), an http:// URL.
    #[arg(long)]
    pub a: String,
    /// Target B, an http:// URL.
    #[arg(long)]
    pub b: String,
    /// Rounds of (A slice, B slice).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub request: RequestArgs,
}

/// `500ms`, `2s`, `1.5s`, `1m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 5s or 1m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("`{s}`: unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn urls_split_before_placeholders() {
        let (base, path) =
            split_url("http://127.0.0.1:8080/api/ext/{install}/hello?k={key}").expect("split");
        assert_eq!(base, "http://127.0.0.1:8080");
        assert_eq!(path, "/api/ext/{install}/hello?k={key}");
        assert_eq!(
            split_url("http://[::1]:9").expect("split"),
            ("http://[::1]:9".to_owned(), "/".to_owned())
        );
    }

    #[test]
    fn open_loop_needs_a_rate() {
        let open = LoadArgs {
            mode: Some(ModeArg::Open),
            ..Default::default()
        };
        assert!(open.spec(LoadDefaults::default()).is_err());
        let rate = LoadArgs {
            rate: Some(100.0),
            ..Default::default()
        };
        assert_eq!(
            rate.spec(LoadDefaults::default()).expect("spec").mode,
            Mode::Open { rate: 100.0 }
        );
    }
}
