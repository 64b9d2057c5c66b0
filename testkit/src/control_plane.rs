//! A control plane in-process: `annex_control_plane::run` on `127.0.0.1:0`
//! over real mTLS with a fresh dev CA, on the in-memory store or a throwaway
//! Postgres database, plus clients per role and the few steps most tests
//! start from (trusting a key, publishing, installing, keeping a worker in
//! the routing snapshot).
//!
//! It starts the control plane only through its `run`; it must not reach
//! into the control plane's internals or hold fixtures one crate's tests
//! alone use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use annex_bundle::ContentHash;
use annex_bundle::signing::KeyPair;
use annex_control_plane::store::{BlobStore, MemoryStore, Store, StoreError, WorkerRow};
use annex_control_plane::{HostAppConfig, Limits, Listeners, Sealer, Settings};
use annex_ops::Role;
use annex_ops::admin::AdminState;
use annex_ops::devcerts::DevCa;
use annex_ops::serve::Io;
use annex_ops::tls::TlsMaterial;
use annex_proto::pb;
use tonic::transport::{Channel, Endpoint};

use crate::postgres::TestDatabase;
use crate::running::{self, Running};

/// The store a control plane runs on.
#[derive(Default)]
pub enum StoreChoice {
    #[default]
    Memory,
    /// A fresh database of its own (see [`crate::postgres`]); where Postgres
    /// cannot be had outside CI, the in-memory store after a notice.
    Postgres,
    /// A store the test keeps a handle to.
    Given(Arc<dyn Store>),
}

/// What a test may choose about its control plane.
pub struct ControlPlaneOptions {
    pub store: StoreChoice,
    /// Where bundle bytes live; unset: the store's own (`bundle_blobs`).
    pub blobs: Option<Arc<dyn BlobStore>>,
    pub limits: Limits,
    pub host_app: HostAppConfig,
    /// The key-encryption key.
    pub kek: [u8; 32],
    /// Also serve the gRPC services in-process through these endpoints.
    pub in_process: Option<annex_ops::in_process::Endpoints>,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        ControlPlaneOptions {
            store: StoreChoice::Memory,
            blobs: None,
            limits: Limits::default(),
            host_app: HostAppConfig::new(),
            kek: [42; 32],
            in_process: None,
        }
    }
}

/// An extension published and installed for one tenant.
#[derive(Debug, Clone)]
pub struct Installed {
    pub name: String,
    pub slug: String,
    pub registry_id: String,
    pub install_id: String,
    pub content_hash: String,
}

/// A running control plane; dropping it stops it.
pub struct ControlPlane {
    /// The gRPC listener.
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The CA every certificate of this deployment comes from.
    pub ca: DevCa,
    pub store: Arc<dyn Store>,
    /// Where the bundle bytes are.
    pub blobs: Arc<dyn BlobStore>,
    /// Kept for the test's lifetime (the database outlives it, as a failed
    /// test's database should).
    _database: Option<TestDatabase>,
    running: Running,
}

impl ControlPlane {
    /// On the in-memory store with default limits.
    pub async fn start() -> ControlPlane {
        ControlPlane::start_with(ControlPlaneOptions::default()).await
    }

    /// Starts and waits until the control plane reports ready.
    pub async fn start_with(opts: ControlPlaneOptions) -> ControlPlane {
        annex_ops::tls::install_crypto_provider();
        let (store, database) = open_store(opts.store).await;
        let blobs = opts
            .blobs
            .unwrap_or_else(|| store.clone() as Arc<dyn BlobStore>);
        let settings = Settings {
            store: store.clone(),
            blobs: blobs.clone(),
            sealer: Sealer::from_bytes(&opts.kek).unwrap_or_else(|e| panic!("kek: {e}")),
            limits: opts.limits,
            host_app: opts.host_app,
            in_process: opts.in_process,
        };
        let ca = DevCa::generate().unwrap_or_else(|e| panic!("dev CA: {e}"));
        let tls = ca
            .issue(Role::ControlPlane, "control-plane")
            .unwrap_or_else(|e| panic!("control-plane certificate: {e}"));
        let (grpc, admin) = (running::bind().await, running::bind().await);
        let (addr, admin_addr) = (running::local_addr(&grpc), running::local_addr(&admin));
        let io = Io {
            tls,
            listeners: Listeners { grpc, admin },
            admin: AdminState::new(),
        };
        let mut running = Running::spawn("control plane", |shutdown| {
            annex_control_plane::run(settings, io, shutdown)
        });
        running.wait_ready(admin_addr, running::READY_WITHIN).await;
        ControlPlane {
            addr,
            admin_addr,
            ca,
            store,
            blobs,
            _database: database,
            running,
        }
    }

    /// `https://{addr}`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A channel presenting a fresh certificate of `role` from this CA.
    pub async fn channel(&self, role: Role) -> Channel {
        let material = self
            .ca
            .issue(role, &format!("test-{role}"))
            .unwrap_or_else(|e| panic!("{role} certificate: {e}"));
        self.channel_with(&material)
            .await
            .unwrap_or_else(|e| panic!("connecting to the control plane as {role}: {e}"))
    }

    /// A channel presenting `material`.
    pub async fn channel_with(
        &self,
        material: &TlsMaterial,
    ) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(self.url())?
            .tls_config(material.client_config("localhost"))?
            .connect()
            .await
    }

    /// A TLS client that trusts this CA but presents no certificate.
    pub async fn channel_without_certificate(&self) -> Result<Channel, tonic::transport::Error> {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(self.ca.ca_pem()))
            .domain_name("localhost");
        Endpoint::from_shared(self.url())?
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
            .unwrap_or_else(|e| panic!("trusting a key for {publisher}: {e}"))
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
        parts.extend(bytes.chunks(64 * 1024).map(|chunk| pb::PublishRequest {
            part: Some(pb::publish_request::Part::Chunk(chunk.to_vec())),
        }));
        self.registry(Role::Operator)
            .await
            .publish(futures::stream::iter(parts))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Trusts a fresh key for the manifest's publisher, publishes `bundle`
    /// signed with it and installs it for `tenant`.
    pub async fn publish_and_install(
        &self,
        manifest: &serde_json::Value,
        bundle: &[u8],
        tenant: &str,
    ) -> Installed {
        let field = |name: &str| {
            manifest[name]
                .as_str()
                .unwrap_or_else(|| panic!("the manifest has no {name}"))
                .to_owned()
        };
        let (publisher, name, version) = (field("publisher"), field("name"), field("version"));
        let key = KeyPair::generate();
        self.trust_key(&publisher, &key).await;
        let signature = annex_bundle::signing::sign_bundle(
            &key,
            &ContentHash::of(bundle),
            &publisher,
            &name,
            &version,
        );
        self.publish(bundle, &signature)
            .await
            .unwrap_or_else(|e| panic!("publishing {publisher}.{name}: {e}"));
        let slug = format!("{publisher}.{name}").to_lowercase();
        let info = self
            .installs(Role::Operator)
            .await
            .install(pb::InstallRequest {
                tenant_id: tenant.into(),
                extension: slug.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("installing {slug} for {tenant}: {e}"))
            .into_inner();
        Installed {
            name,
            slug: info.slug,
            registry_id: info.registry_id,
            install_id: info.install_id,
            content_hash: info.content_hash,
        }
    }

    /// Keeps a worker `id` at `address` in the routing snapshot without a
    /// worker process: its row is refreshed on the heartbeat cadence (every
    /// 500 ms), as a real worker's heartbeats would. Abort the handle to let
    /// it lapse.
    pub fn keep_registered(&self, id: &str, address: SocketAddr) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let (id, address) = (id.to_owned(), address.to_string());
        tokio::spawn(async move {
            let mut beats = tokio::time::interval(Duration::from_millis(500));
            loop {
                beats.tick().await;
                let row = WorkerRow {
                    id: id.clone(),
                    address: address.clone(),
                    capacity: 64,
                    in_flight: 0,
                    draining: false,
                    cached_hashes: vec![],
                    last_seen: chrono::Utc::now(),
                };
                let _ = store.upsert_worker(row).await;
            }
        })
    }

    /// Workers the routing snapshot holds: seen in the last 3 s and not
    /// draining.
    pub async fn live_workers(&self) -> Result<Vec<WorkerRow>, StoreError> {
        let since = chrono::Utc::now() - chrono::Duration::seconds(3);
        let mut workers = self.store.list_workers(since).await?;
        workers.retain(|w| !w.draining);
        Ok(workers)
    }

    /// Publishes guest log events as a worker does (`HostServices.PublishLogs`).
    pub async fn publish_logs(&self, events: Vec<pb::LogEvent>) {
        pb::host_services_client::HostServicesClient::new(self.channel(Role::Worker).await)
            .publish_logs(pb::LogBatch { events })
            .await
            .unwrap_or_else(|e| panic!("publishing logs: {e}"));
    }

    /// Stops at once (connections dropped; an edge keeps its last snapshot).
    pub fn stop(&mut self) {
        self.running.stop();
    }

    /// Stops gracefully and returns what `run` returned.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.running.shutdown().await
    }
}

async fn open_store(choice: StoreChoice) -> (Arc<dyn Store>, Option<TestDatabase>) {
    match choice {
        StoreChoice::Memory => (Arc::new(MemoryStore::new()), None),
        StoreChoice::Given(store) => (store, None),
        StoreChoice::Postgres => {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match TestDatabase::create(&format!("component_{n}")).await {
                Some(db) => (Arc::new(db.connect().await), Some(db)),
                None => (Arc::new(MemoryStore::new()), None),
            }
        }
    }
}
