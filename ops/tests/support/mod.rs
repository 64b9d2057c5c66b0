//! A stand-in control-plane replica for the connection tests: the `Trust`
//! service over mTLS served through `annex_ops::tls::incoming`, answering
//! `ListKeys` with its own name and the caller's certificate name, on its
//! own runtime so that [`Replica::kill`] drops every connection at once, as
//! a killed process would.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use annex_ops::Role;
use annex_ops::tls::Tls;
use annex_proto::pb;
use annex_proto::pb::trust_server::{Trust, TrustServer};
use tonic::service::interceptor::InterceptedService;

/// Answers `ListKeys` with one key: `publisher` is the replica's name,
/// `key_id` the caller's certificate name.
struct Named {
    name: String,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Trust for Named {
    async fn add_key(
        &self,
        _req: tonic::Request<pb::AddKeyRequest>,
    ) -> Result<tonic::Response<pb::PublisherKey>, tonic::Status> {
        Err(tonic::Status::unimplemented("test replica"))
    }

    async fn list_keys(
        &self,
        req: tonic::Request<pb::ListKeysRequest>,
    ) -> Result<tonic::Response<pb::ListKeysResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let caller = annex_ops::tls::peer(&req)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        Ok(tonic::Response::new(pb::ListKeysResponse {
            keys: vec![pb::PublisherKey {
                publisher: self.name.clone(),
                key_id: caller,
                ..Default::default()
            }],
            revision: 1,
        }))
    }

    async fn revoke_key(
        &self,
        _req: tonic::Request<pb::RevokeKeyRequest>,
    ) -> Result<tonic::Response<pb::PublisherKey>, tonic::Status> {
        Err(tonic::Status::unimplemented("test replica"))
    }
}

/// A running replica.
pub struct Replica {
    pub addr: SocketAddr,
    pub calls: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Replica {
    /// Serves on `addr` (`127.0.0.1:0` for a free port) with `tls`,
    /// admitting edge certificates.
    pub fn start(name: &str, addr: SocketAddr, tls: Tls) -> Replica {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = std::net::TcpListener::bind(addr).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let calls = Arc::new(AtomicUsize::new(0));
        let service = InterceptedService::new(
            TrustServer::new(Named {
                name: name.to_owned(),
                calls: calls.clone(),
            }),
            annex_ops::tls::authenticate(&[Role::Edge]),
        );
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(annex_ops::tls::incoming(listener, tls))
                .await;
        });
        Replica {
            addr,
            calls,
            runtime: Some(runtime),
        }
    }

    /// Stops at once, as a killed process does: when this returns, the
    /// listener and every connection are closed (the runtime is shut down
    /// on another thread, since the caller's is async).
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            let stopped = std::thread::spawn(move || rt.shutdown_timeout(Duration::from_secs(5)));
            let _ = stopped.join();
        }
    }

    /// Waits until this replica's address refuses connections (the client
    /// side has had an I/O turn to see its connections close).
    pub async fn gone(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} still accepts connections",
                self.addr
            );
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `(replica name, caller name)` of one `ListKeys` answer.
pub fn who(r: &pb::ListKeysResponse) -> (String, String) {
    r.keys
        .first()
        .map(|k| (k.publisher.clone(), k.key_id.clone()))
        .unwrap_or_default()
}
