//! `wasi:http/outgoing-handler` (0.2), routed through the same egress
//! policy as `http.fetch`: the request needs `cap:http.fetch`, its host and
//! port must be allowed by the install's allowlist, private addresses need
//! an IP-literal or `private:` entry, link-local, metadata and platform
//! addresses are never reached, the connection goes to the address that
//! was checked, redirects are not
//! followed, the response body is capped and the whole exchange is bounded
//! by the egress timeout. Alga links `wasi:http` with default hooks, which
//! bypass its allowlist; Annex closes that gap (docs/design/differences.md).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::capture::Taping;
use crate::capture::tape::{Answer, Ask, Bytes};
use crate::egress::{Allowlist, EgressClient, EgressError};

/// The per-execution hooks: what this execution may reach.
pub(crate) struct EgressHooks {
    pub allowed: bool,
    pub allowlist: Allowlist,
    pub egress: Arc<EgressClient>,
    /// Request and response body bytes that crossed the wire, for usage.
    pub bytes: Arc<AtomicU64>,
    /// A captured or replayed execution: `wasi:http` responses are not on
    /// the tape, so a recording notes the request and a replay refuses it
    /// as a divergence (docs/design/replay.md).
    pub taping: Taping,
}

/// Adds the size of each data frame to `counter` as it passes.
fn counted<B>(
    body: B,
    counter: Arc<AtomicU64>,
) -> impl hyper::body::Body<Data = bytes::Bytes, Error = B::Error>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
{
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        frame
    })
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

fn egress_error(e: EgressError) -> Error {
    match e {
        EgressError::NotAllowed(_) => Error::HttpRequestDenied,
        EgressError::InvalidUrl(_) => Error::HttpRequestUriInvalid,
        EgressError::Transport(m) => Error::InternalError(Some(m)),
    }
}

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let ask = Ask::Message {
            name: format!("wasi:http {} {}", request.method(), request.uri()),
            request: Bytes::default(),
        };
        match &self.taping {
            Taping::Play(player) => {
                player.unrecorded(&ask);
                return Box::new(async { Err(Error::HttpRequestDenied) });
            }
            Taping::Record(recorder) => recorder.call(
                ask,
                Answer::Failed {
                    status: 0,
                    message: "wasi:http responses are not recorded".into(),
                },
            ),
            Taping::Off => {}
        }
        let allowed = self.allowed;
        let allowlist = self.allowlist.clone();
        let egress = self.egress.clone();
        let bytes = self.bytes.clone();
        Box::new(async move {
            if !allowed {
                return Err(Error::HttpRequestDenied);
            }
            let https = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
            let host = request
                .uri()
                .host()
                .ok_or(Error::HttpRequestUriInvalid)?
                .to_string();
            let port = request
                .uri()
                .port_u16()
                .unwrap_or(if https { 443 } else { 80 });
            let limits = egress.config().clone();
            let exchange = async {
                let io = egress
                    .connect(&allowlist, &host, port, https)
                    .await
                    .map_err(egress_error)?;
                let (mut parts, body) = request.into_parts();
                // HTTP/1.1 origin form on a direct connection.
                parts.uri = parts
                    .uri
                    .path_and_query()
                    .map(|pq| pq.as_str())
                    .unwrap_or("/")
                    .parse()
                    .map_err(|_| Error::HttpRequestUriInvalid)?;
                let request = http::Request::from_parts(parts, counted(body, bytes.clone()));
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
                let io_future: IoFuture = Box::new(async move { Ok(connection.await?) });
                let driver = tokio::spawn(Box::into_pin(io_future));
                let response = sender.send_request(request).await?;
                let max = limits.max_response_bytes;
                let response = response.map(move |body| {
                    counted(Limited::new(body, max), bytes)
                        .map_err(|_| Error::HttpResponseBodySize(None))
                        .boxed_unsync()
                });
                let io_future: IoFuture = Box::new(async move {
                    match driver.await {
                        Ok(r) => r,
                        Err(e) => Err(Error::InternalError(Some(e.to_string()))),
                    }
                });
                Ok::<_, Error>((response, io_future))
            };
            tokio::time::timeout(limits.timeout, exchange)
                .await
                .map_err(|_| Error::HttpResponseTimeout)?
        })
    }
}
