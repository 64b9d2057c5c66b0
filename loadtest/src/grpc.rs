//! gRPC load against `Worker.Execute` (what the edge sends to a placed worker)
//! and `Dispatch.Execute` (the control plane's dispatch path), over mTLS when
//! the URL is `https://` and plaintext for `http://`. The request is built
//! once from a [`Shape`] (a JSON file, overridden by flags) and cloned per call
//! with a fresh request id. Load workers share `connections` HTTP/2 channels
//! round-robin; one channel multiplexes many calls, as the edge's does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use annex_ops::tls::TlsFiles;
use annex_proto::pb;
use annex_proto::pb::dispatch_client::DispatchClient;
use annex_proto::pb::worker_client::WorkerClient;
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::target::{Expect, Sample};

/// Which service's `Execute` to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Worker,
    Dispatch,
}

/// The request a gRPC load run sends, as read from `--shape file.json`.
/// Field names follow `execute.proto`; everything is optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shape {
    pub tenant: String,
    /// Registry id (Worker) or the `extension` of a dispatch: install id, registry id or slug.
    pub extension_id: String,
    pub install_id: String,
    pub version_id: String,
    pub content_hash: String,
    /// Empty: GET.
    pub method: String,
    /// Empty: `/`.
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    pub body_size: usize,
    pub body_file: Option<PathBuf>,
    /// The control plane's execution grant (`ExecuteRequest.execution_grant`).
    pub grant: String,
    /// Granted capabilities (`cap:*`).
    pub providers: Vec<String>,
    pub secrets_version: String,
    pub config: BTreeMap<String, String>,
    pub egress_allowlist: Vec<String>,
    /// 0: platform default.
    pub timeout_ms: u32,
    /// 0: platform default.
    pub memory_mb: u32,
    pub user_id: String,
}

impl Shape {
    pub fn load(path: &std::path::Path) -> anyhow::Result<Shape> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading request shape {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing request shape {}", path.display()))
    }

    fn http(&self) -> anyhow::Result<pb::HttpRequest> {
        let body = match &self.body_file {
            Some(p) => std::fs::read(p).with_context(|| format!("reading body {}", p.display()))?,
            None => crate::plan::generated_body(self.body_size).to_vec(),
        };
        Ok(pb::HttpRequest {
            method: if self.method.is_empty() {
                "GET".into()
            } else {
                self.method.clone()
            },
            path: if self.path.is_empty() {
                "/".into()
            } else {
                self.path.clone()
            },
            query: self.query.clone().into_iter().collect(),
            headers: self.headers.clone().into_iter().collect(),
            body: (!body.is_empty()).then_some(body),
        })
    }

    fn user(&self) -> Option<pb::User> {
        (!self.user_id.is_empty()).then(|| pb::User {
            user_id: self.user_id.clone(),
            user_type: "internal".into(),
            ..Default::default()
        })
    }

    fn limits(&self) -> pb::Limits {
        pb::Limits {
            timeout_ms: self.timeout_ms,
            memory_mb: self.memory_mb,
            ..Default::default()
        }
    }
}

/// The prepared request of either service.
#[derive(Debug, Clone)]
enum Prepared {
    Worker(Box<pb::ExecuteRequest>),
    Dispatch(Box<pb::DispatchExecuteRequest>),
}

fn prepare(service: Service, s: &Shape) -> anyhow::Result<Prepared> {
    Ok(match service {
        Service::Worker => Prepared::Worker(Box::new(pb::ExecuteRequest {
            context: Some(pb::ExecContext {
                request_id: String::new(),
                tenant_id: s.tenant.clone(),
                extension_id: s.extension_id.clone(),
                install_id: s.install_id.clone(),
                version_id: s.version_id.clone(),
                content_hash: s.content_hash.clone(),
                config: s.config.clone().into_iter().collect(),
                trigger: "http".into(),
                schedule_id: String::new(),
            }),
            http: Some(s.http()?),
            limits: Some(s.limits()),
            providers: s.providers.clone(),
            secrets_version: s.secrets_version.clone(),
            user: s.user(),
            idempotency_key: String::new(),
            execution_grant: s.grant.clone(),
            egress_allowlist: s.egress_allowlist.clone(),
            traceparent: String::new(),
            capture: None,
        })),
        Service::Dispatch => Prepared::Dispatch(Box::new(pb::DispatchExecuteRequest {
            tenant_id: s.tenant.clone(),
            extension: if s.install_id.is_empty() {
                s.extension_id.clone()
            } else {
                s.install_id.clone()
            },
            http: Some(s.http()?),
            user: s.user(),
            request_id: String::new(),
            idempotency_key: String::new(),
            limits: Some(s.limits()),
        })),
    })
}

/// How to reach the gRPC server.
#[derive(Debug, Clone)]
pub struct Connect {
    pub url: String,
    /// Required for `https://` URLs.
    pub tls: Option<TlsFiles>,
    pub server_name: String,
    pub connections: usize,
    /// Dial now (fail fast) or on first use (a server that is still starting).
    pub lazy: bool,
}

/// Responses can carry bodies up to the worker's cap; 16 MiB keeps a large
/// echo from failing as a decode error.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A TCP connect and TLS handshake on loopback take well under a second.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct GrpcTarget {
    service: Service,
    url: String,
    shape: Shape,
    prepared: Prepared,
    channels: Vec<Channel>,
    pub expect: Expect,
}

impl GrpcTarget {
    pub async fn new(
        service: Service,
        connect: &Connect,
        shape: Shape,
        expect: Expect,
    ) -> anyhow::Result<GrpcTarget> {
        let checked = crate::loopback::resolve(&connect.url, 443).await?;
        let mut endpoint = Endpoint::from(checked.uri.clone()).connect_timeout(CONNECT_TIMEOUT);
        match (checked.uri.scheme_str(), &connect.tls) {
            (Some("https"), Some(files)) => {
                let material = files.load().context("loading the client certificate")?;
                endpoint = endpoint
                    .tls_config(material.client_config(&connect.server_name))
                    .context("configuring TLS")?;
            }
            (Some("https"), None) => anyhow::bail!(
                "`{}` is https: pass --tls-dir or --tls-ca/--tls-cert/--tls-key",
                connect.url
            ),
            (Some("http"), _) => {}
            _ => anyhow::bail!("`{}` must be an http:// or https:// URL", connect.url),
        }
        let mut channels = Vec::new();
        for _ in 0..connect.connections.max(1) {
            let channel = if connect.lazy {
                endpoint.connect_lazy()
            } else {
                endpoint
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {}", connect.url))?
            };
            channels.push(channel);
        }
        Ok(GrpcTarget {
            service,
            url: connect.url.clone(),
            prepared: prepare(service, &shape)?,
            shape,
            channels,
            expect,
        })
    }

    pub fn describe(&self) -> String {
        let s = &self.shape;
        let service = match self.service {
            Service::Worker => "Worker.Execute",
            Service::Dispatch => "Dispatch.Execute",
        };
        format!(
            "gRPC {service} {} [{} {} ({} B body), tenant {}, extension {}, install {}]",
            self.url,
            if s.method.is_empty() {
                "GET"
            } else {
                &s.method
            },
            if s.path.is_empty() { "/" } else { &s.path },
            s.body_size,
            s.tenant,
            s.extension_id,
            s.install_id
        )
    }
}

enum Client {
    Worker(WorkerClient<Channel>),
    Dispatch(DispatchClient<Channel>),
}

pub struct GrpcConn {
    client: Client,
    prepared: Prepared,
    expect: Expect,
}

impl GrpcConn {
    pub fn new(target: &GrpcTarget, worker: usize) -> GrpcConn {
        let channel = target.channels[worker % target.channels.len()].clone();
        let client = match target.service {
            Service::Worker => Client::Worker(
                WorkerClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
            ),
            Service::Dispatch => Client::Dispatch(
                DispatchClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
            ),
        };
        GrpcConn {
            client,
            prepared: target.prepared.clone(),
            expect: target.expect.clone(),
        }
    }

    pub async fn send(&mut self, seq: u64) -> Sample {
        let request_id = format!("loadtest-{seq}");
        let result = match (&mut self.client, &self.prepared) {
            (Client::Worker(c), Prepared::Worker(r)) => {
                let mut r = (**r).clone();
                if let Some(ctx) = r.context.as_mut() {
                    ctx.request_id = request_id;
                }
                c.execute(r).await
            }
            (Client::Dispatch(c), Prepared::Dispatch(r)) => {
                let mut r = (**r).clone();
                r.request_id = request_id;
                c.execute(r).await
            }
            _ => return Sample::Error("internal: client and request differ".into()),
        };
        match result {
            Ok(response) => {
                let r = response.into_inner();
                let outcome = pb::Outcome::try_from(r.outcome).unwrap_or(pb::Outcome::Unspecified);
                if outcome != pb::Outcome::Ok {
                    return Sample::Error(format!("outcome {}", outcome.as_str_name()));
                }
                let status = u16::try_from(r.status).unwrap_or(u16::MAX);
                self.expect
                    .judge(status, r.body.as_deref().unwrap_or_default())
            }
            Err(status) => Sample::Error(grpc_error(&status)),
        }
    }
}

/// `grpc Unavailable`, with Annex's stable error code when the server sent one.
fn grpc_error(status: &tonic::Status) -> String {
    let code = status
        .metadata()
        .get("annex-error-code")
        .and_then(|v| v.to_str().ok());
    match code {
        Some(code) => format!("grpc {:?} ({code})", status.code()),
        None => format!("grpc {:?}", status.code()),
    }
}
