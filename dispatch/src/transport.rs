//! How a worker is reached: its mTLS channel, or, when the worker runs in
//! this process and registered itself under the address the routing table
//! gives, its service directly ([`annex_ops::in_process`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use annex_ops::in_process;
use tonic::body::Body;
use tonic::transport::Channel;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The way to one worker.
#[derive(Clone)]
pub enum Transport {
    /// TCP, TLS with the caller's certificate, HTTP/2.
    Network(Channel),
    /// The worker's service in this process.
    InProcess(in_process::Service),
}

impl tower::Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Transport::Network(channel) => channel.poll_ready(cx).map_err(Into::into),
            Transport::InProcess(service) => service.poll_ready(cx).map_err(|never| match never {}),
        }
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match self {
            Transport::Network(channel) => {
                let call = channel.call(req);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            Transport::InProcess(service) => {
                let call = service.call(req);
                Box::pin(async move { call.await.map_err(|never| match never {}) })
            }
        }
    }
}
