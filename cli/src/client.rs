//! The control-plane connection: one mTLS channel with an operator certificate, and the typed
//! gRPC clients on it (Registry, Trust, Installs).
//!
//! Every command that talks to the control plane goes through [`ControlPlane::connect`], and
//! `annex dev` reuses it against the control plane it starts in-process. Failed calls become
//! [`AnnexError`]s (the stable code from the `annex-error-code` metadata) via [`remote`], so
//! the error line names the code. This module owns no command logic and prints nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annex_ops::tls::TlsFiles;
use annex_proto::AnnexError;
use annex_proto::pb;
use annex_proto::pb::captures_client::CapturesClient;
use annex_proto::pb::installs_client::InstallsClient;
use annex_proto::pb::registry_client::RegistryClient;
use annex_proto::pb::trust_client::TrustClient;
use anyhow::Context as _;
use tokio::io::AsyncReadExt as _;
use tonic::transport::{Channel, Endpoint};

/// Bundle bytes per publish message. 256 KiB keeps each message far below gRPC's 4 MiB default
/// while amortising per-message overhead; a 200 MiB bundle is 800 messages.
pub const PUBLISH_CHUNK: usize = 256 * 1024;

/// Largest response accepted: listings of many versions or installs can exceed gRPC's 4 MiB
/// default; the control plane's own cap is 16 MiB.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A TCP connect plus TLS handshake on a working network takes milliseconds; 10 s means the
/// address is wrong or the control plane is down, and saying so beats hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the control plane is and which certificate to present.
#[derive(Debug, Clone)]
pub struct Target {
    /// `https://host:port`.
    pub url: String,
    pub tls: TlsFiles,
    /// Name checked against the server certificate; `None` uses the URL's host.
    pub server_name: Option<String>,
}

impl Target {
    /// The operator files of a PKI directory (ca.pem, operator.pem, operator-key.pem) with
    /// per-file overrides.
    pub fn new(
        url: &str,
        tls_dir: &Path,
        overrides: [Option<PathBuf>; 3],
        server_name: Option<String>,
    ) -> Target {
        let defaults = annex_ops::devcerts::role_files(tls_dir, annex_ops::Role::Operator);
        let [ca, cert, key] = overrides;
        Target {
            url: url.trim_end_matches('/').to_owned(),
            tls: TlsFiles {
                ca: ca.unwrap_or(defaults.ca),
                cert: cert.unwrap_or(defaults.cert),
                key: key.unwrap_or(defaults.key),
            },
            server_name,
        }
    }
}

/// A connected control plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    channel: Channel,
}

impl ControlPlane {
    /// Loads the certificates and connects (TCP and TLS handshake happen here, so an
    /// unreachable or mistrusted control plane fails now, with the address in the message).
    pub async fn connect(target: &Target) -> anyhow::Result<ControlPlane> {
        let material = target.tls.load().map_err(|e| {
            anyhow::anyhow!(
                "loading the operator certificate: {e} (run `annex dev` to create a dev PKI, \
                 or pass --tls-dir or --tls-ca/--tls-cert/--tls-key)"
            )
        })?;
        let uri: tonic::codegen::http::Uri = target
            .url
            .parse()
            .with_context(|| format!("--control-plane `{}` is not a URL", target.url))?;
        if uri.scheme_str() != Some("https") {
            return Err(crate::failure::usage(format!(
                "--control-plane `{}` must be an https:// URL (the control plane only speaks mTLS)",
                target.url
            )));
        }
        let server_name = match &target.server_name {
            Some(name) => name.clone(),
            None => uri
                .host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
                .with_context(|| format!("--control-plane `{}` has no host", target.url))?,
        };
        let endpoint = Endpoint::from(uri)
            .tls_config(material.client_config(&server_name))
            .context("configuring TLS")?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = endpoint.connect().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to the control plane at {}: {} (is it running? `annex dev` \
                 starts one)",
                target.url,
                error_chain(&e)
            )
        })?;
        Ok(ControlPlane { channel })
    }

    pub fn registry(&self) -> RegistryClient<Channel> {
        RegistryClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn trust(&self) -> TrustClient<Channel> {
        TrustClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn captures(&self) -> CapturesClient<Channel> {
        CapturesClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn installs(&self) -> InstallsClient<Channel> {
        InstallsClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// Streams the file at `path` to `Registry.Publish`: `header` first, then
    /// [`PUBLISH_CHUNK`]-sized chunks. `sent` is called with each chunk's length (for progress).
    /// A read error part-way fails the publish with that error rather than the server's
    /// complaint about a short upload.
    pub async fn publish_file(
        &self,
        path: &Path,
        header: pb::PublishHeader,
        sent: impl Fn(u64) + Send + Sync + 'static,
    ) -> anyhow::Result<pb::PublishResponse> {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let read_error: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
        let first = pb::PublishRequest {
            part: Some(pb::publish_request::Part::Header(header)),
        };
        let state = Upload {
            file,
            read_error: read_error.clone(),
            sent: Arc::new(sent),
        };
        let chunks = futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            match state.next_chunk().await {
                Some(chunk) => {
                    let next = pb::PublishRequest {
                        part: Some(pb::publish_request::Part::Chunk(chunk)),
                    };
                    Some((next, Some(state)))
                }
                None => None,
            }
        });
        let requests = futures::StreamExt::chain(futures::stream::iter([first]), chunks);
        let result = self.registry().publish(requests).await;
        if let Some(e) = read_error.lock().ok().and_then(|mut s| s.take()) {
            return Err(anyhow::Error::new(e).context(format!("reading {}", path.display())));
        }
        result.map(tonic::Response::into_inner).map_err(remote)
    }
}

/// The file side of a streamed publish.
struct Upload {
    file: tokio::fs::File,
    /// Where a read failure is left for [`ControlPlane::publish_file`] to report.
    read_error: Arc<Mutex<Option<std::io::Error>>>,
    sent: Arc<dyn Fn(u64) + Send + Sync>,
}

impl Upload {
    /// The next full chunk (shorter only at the end of the file); `None` at the end or on a
    /// read error (recorded in `read_error`).
    async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; PUBLISH_CHUNK];
        let mut filled = 0;
        while filled < PUBLISH_CHUNK {
            match self.file.read(&mut buf[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    if let Ok(mut slot) = self.read_error.lock() {
                        *slot = Some(e);
                    }
                    return None;
                }
            }
        }
        if filled == 0 {
            return None;
        }
        buf.truncate(filled);
        (self.sent)(filled as u64);
        Some(buf)
    }
}

/// A failed call as the error the user sees: the Annex code and the server's message.
pub fn remote(status: tonic::Status) -> anyhow::Error {
    anyhow::Error::new(AnnexError::from_status(&status))
}

/// `err` and its sources joined by `: ` (tonic's transport errors say only "transport error"
/// at the top; the cause is further down).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}
