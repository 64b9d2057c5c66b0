//! Test support for the control plane's component tests: a control plane
//! served in-process over real mTLS on 127.0.0.1:0 on a real store (Postgres
//! when one can be had; see `database`), clients per role, and bundle builders.

#![allow(dead_code)]

pub mod database;

use std::io::Write as _;
use std::sync::Arc;

use annex_bundle::hash::ContentHash;
use annex_bundle::signing::KeyPair;
use annex_control_plane::store::Store;
use annex_control_plane::{HostAppConfig, Limits, Listeners, Sealer, Settings};
use annex_ops::Role;
use annex_ops::devcerts::DevCa;
use annex_ops::serve::Io;
use annex_ops::tls::TlsMaterial;
use annex_proto::pb;
use tonic::transport::{Channel, Endpoint};

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
    pub ca: DevCa,
    pub store: Arc<dyn Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Limits {
            platform_egress_allowlist: vec!["*.example.com".into(), "api.partner.test".into()],
            ..Limits::default()
        })
        .await
    }

    pub async fn start_with(limits: Limits) -> TestServer {
        annex_ops::tls::install_crypto_provider();
        let store = database::store().await;
        let settings = Settings {
            store: store.clone(),
            sealer: Sealer::from_bytes(&[42u8; 32]).expect("kek"),
            limits,
            host_app: HostAppConfig::new(),
        };
        let ca = DevCa::generate().expect("ca");
        let tls = ca
            .issue(Role::ControlPlane, "control-plane")
            .expect("server cert");
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = grpc.local_addr().expect("addr");
        let admin_addr = admin.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let io = Io {
            tls,
            listeners: Listeners { grpc, admin },
            admin: annex_ops::admin::AdminState::new(),
        };
        let task = tokio::spawn(annex_control_plane::run(settings, io, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            admin_addr,
            ca,
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A channel presenting a certificate of `role` from this server's CA.
    pub async fn channel(&self, role: Role) -> Channel {
        let material = self.ca.issue(role, &format!("test-{role}")).expect("cert");
        self.channel_with(&material).await.expect("connect")
    }

    pub async fn channel_with(
        &self,
        material: &TlsMaterial,
    ) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(format!("https://{}", self.addr))?
            .tls_config(material.client_config("localhost"))?
            .connect()
            .await
    }

    /// A TLS client that trusts the server's CA but presents no certificate.
    pub async fn channel_without_certificate(&self) -> Result<Channel, tonic::transport::Error> {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(self.ca.ca_pem()))
            .domain_name("localhost");
        Endpoint::from_shared(format!("https://{}", self.addr))?
            .tls_config(tls)?
            .connect()
            .await
    }

    pub async fn registry(&self, role: Role) -> pb::registry_client::RegistryClient<Channel> {
        pb::registry_client::RegistryClient::new(self.channel(role).await)
    }

    pub async fn trust(&self, role: Role) -> pb::trust_client::TrustClient<Channel> {
        pb::trust_client::TrustClient::new(self.channel(role).await)
    }

    pub async fn installs(&self, role: Role) -> pb::installs_client::InstallsClient<Channel> {
        pb::installs_client::InstallsClient::new(self.channel(role).await)
    }

    /// Trusts `key` for `publisher` through the Trust service.
    pub async fn trust_key(&self, publisher: &str, key: &KeyPair) -> pb::PublisherKey {
        self.trust(Role::Operator)
            .await
            .add_key(pb::AddKeyRequest {
                publisher: publisher.into(),
                public_key: key.public_key().to_pem(),
                ..Default::default()
            })
            .await
            .expect("add key")
            .into_inner()
    }

    /// Publishes `bytes` with `signature` as the operator.
    pub async fn publish(
        &self,
        bytes: &[u8],
        signature: &str,
    ) -> Result<pb::PublishResponse, tonic::Status> {
        let mut parts = vec![pb::PublishRequest {
            part: Some(pb::publish_request::Part::Header(pb::PublishHeader {
                signature: signature.into(),
                ..Default::default()
            })),
        }];
        for chunk in bytes.chunks(64 * 1024) {
            parts.push(pb::PublishRequest {
                part: Some(pb::publish_request::Part::Chunk(chunk.to_vec())),
            });
        }
        self.registry(Role::Operator)
            .await
            .publish(futures::stream::iter(parts))
            .await
            .map(|r| r.into_inner())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The smallest valid WebAssembly component: the preamble alone.
pub const EMPTY_COMPONENT: &[u8] = &[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

pub fn manifest(publisher: &str, name: &str, version: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "name": name,
        "publisher": publisher,
        "version": version,
        "runtime": "wasm-js@1",
        "capabilities": ["cap:storage.kv", " Cap:Http.Fetch "],
        "ui": {"type": "iframe", "entry": "ui/index.html", "hooks": {"appMenu": {"label": "Demo"}}},
        "api": {"endpoints": [
            {"method": "get", "path": "hello", "handler": "dist/main"},
            {"method": "POST", "path": "/echo", "handler": "dist/main"}
        ]}
    }))
    .expect("json")
}

/// A bundle.tar.zst of exactly these entries, in order (paths are written raw,
/// so forbidden ones can be built too).
pub fn tar_zst(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tar);
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            let name = path.as_bytes();
            header.as_gnu_mut().expect("gnu").name[..name.len()].copy_from_slice(name);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            builder.append(&header, *data).expect("append");
        }
        builder.finish().expect("finish");
    }
    zstd::encode_all(tar.as_slice(), 3).expect("zstd")
}

pub fn valid_bundle(publisher: &str, name: &str, version: &str) -> Vec<u8> {
    tar_zst(&[
        ("manifest.json", &manifest(publisher, name, version)),
        ("dist/main.wasm", EMPTY_COMPONENT),
        ("ui/index.html", b"<html>hi</html>"),
    ])
}

/// A bundle whose one UI file is `zeros` bytes of zeros: tiny compressed,
/// huge unpacked.
pub fn bomb_bundle(publisher: &str, name: &str, zeros: usize) -> Vec<u8> {
    let mut tar = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tar);
        for (path, data) in [
            ("manifest.json", manifest(publisher, name, "1.0.0")),
            ("dist/main.wasm", EMPTY_COMPONENT.to_vec()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_path(path).expect("path");
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, data.as_slice()).expect("append");
        }
        let mut header = tar::Header::new_gnu();
        header.set_path("ui/zeros.bin").expect("path");
        header.set_size(zeros as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append(&header, std::io::repeat(0).take_n(zeros))
            .expect("append");
        builder.finish().expect("finish");
    }
    let mut enc = zstd::Encoder::new(Vec::new(), 3).expect("zstd");
    enc.write_all(&tar).expect("write");
    enc.finish().expect("finish")
}

trait TakeN: std::io::Read + Sized {
    fn take_n(self, n: usize) -> std::io::Take<Self> {
        std::io::Read::take(self, n as u64)
    }
}
impl<R: std::io::Read> TakeN for R {}

pub fn sign(key: &KeyPair, bytes: &[u8], publisher: &str, name: &str, version: &str) -> String {
    annex_bundle::signing::sign_bundle(key, &ContentHash::of(bytes), publisher, name, version)
}

/// The gRPC status's Annex error code.
pub fn code(status: &tonic::Status) -> annex_proto::ErrorCode {
    annex_proto::AnnexError::from_status(status).code
}

/// A plain HTTP/1.1 GET against the admin listener: (status, body).
pub async fn admin_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin");
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `check` until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
