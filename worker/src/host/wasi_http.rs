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

use crate::capture::tape::{Answer, Ask, Bytes as TapeBytes};
use crate::capture::{Player, Recorder, Taping};
use crate::egress::{Allowlist, EgressClient, EgressError};

/// The per-execution hooks: what this execution may reach.
pub(crate) struct EgressHooks {
    pub allowed: bool,
    pub allowlist: Allowlist,
    pub egress: Arc<EgressClient>,
    /// Request and response body bytes that crossed the wire, for usage.
    pub bytes: Arc<AtomicU64>,
    /// A captured execution reads both bodies whole and writes the
    /// exchange to its tape; a replayed one is answered from its tape and
    /// sends nothing (docs/design/replay.md).
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
        let sender = Sender {
            allowed: self.allowed,
            allowlist: self.allowlist.clone(),
            egress: self.egress.clone(),
            bytes: self.bytes.clone(),
        };
        match self.taping.clone() {
            Taping::Off => Box::new(sender.send(request)),
            Taping::Record(recorder) => Box::new(recorded(sender, recorder, request)),
            Taping::Play(player) => Box::new(played(sender, player, request)),
        }
    }
}

/// What one execution's `wasi:http` requests may reach.
struct Sender {
    allowed: bool,
    allowlist: Allowlist,
    egress: Arc<EgressClient>,
    bytes: Arc<AtomicU64>,
}

impl Sender {
    /// The most of a request or response body a capture reads whole.
    fn max_body(&self) -> usize {
        self.egress.config().max_response_bytes
    }

    async fn send(
        self,
        request: http::Request<WasiBody>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
        let Sender {
            allowed,
            allowlist,
            egress,
            bytes,
        } = self;
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
    }
}

fn whole(bytes: bytes::Bytes) -> WasiBody {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn headers_of(map: &http::HeaderMap) -> Vec<(String, TapeBytes)> {
    map.iter()
        .map(|(k, v)| (k.as_str().to_string(), TapeBytes::of(v.as_bytes())))
        .collect()
}

/// Reads the request's body whole (a capture holds it) and returns what
/// the tape asks with, and the request to send.
async fn read_request(
    request: http::Request<WasiBody>,
    max: usize,
) -> Result<(Ask, http::Request<WasiBody>), Error> {
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, max)
        .collect()
        .await
        .map_err(|_| Error::HttpRequestBodySize(None))?
        .to_bytes();
    let ask = Ask::WasiHttp {
        method: parts.method.to_string(),
        url: parts.uri.to_string(),
        headers: headers_of(&parts.headers),
        body: TapeBytes::of(&body),
    };
    Ok((ask, http::Request::from_parts(parts, whole(body))))
}

/// A failure as the tape keeps it, and back: the variants this module
/// makes by name, any other as an internal error with its text.
fn failure(e: &Error) -> Answer {
    Answer::Failed {
        status: 0,
        message: format!("{e:?}"),
    }
}

fn error_from(message: &str) -> Error {
    match message {
        "HttpRequestDenied" => Error::HttpRequestDenied,
        "HttpRequestUriInvalid" => Error::HttpRequestUriInvalid,
        "HttpResponseTimeout" => Error::HttpResponseTimeout,
        "HttpResponseBodySize(None)" => Error::HttpResponseBodySize(None),
        "HttpRequestBodySize(None)" => Error::HttpRequestBodySize(None),
        other => Error::InternalError(Some(other.to_string())),
    }
}

fn no_io() -> IoFuture {
    Box::new(async { Ok(()) })
}

/// Sends the request, reading both bodies whole, and writes the exchange
/// to the tape.
async fn recorded(
    sender: Sender,
    recorder: Arc<Recorder>,
    request: http::Request<WasiBody>,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let max = sender.max_body();
    let (ask, request) = match read_request(request, max).await {
        Ok(read) => read,
        Err(e) => return Err(e),
    };
    let (response, io) = match sender.send(request).await {
        Ok(sent) => sent,
        Err(e) => {
            recorder.call(ask, failure(&e));
            return Err(e);
        }
    };
    let (parts, body) = response.into_parts();
    match body.collect().await {
        Ok(collected) => {
            let body = collected.to_bytes();
            recorder.call(
                ask,
                Answer::WasiHttp {
                    status: parts.status.as_u16(),
                    headers: headers_of(&parts.headers),
                    body: TapeBytes::of(&body),
                },
            );
            Ok((http::Response::from_parts(parts, whole(body)), io))
        }
        Err(e) => {
            recorder.call(ask, failure(&e));
            Err(e)
        }
    }
}

/// The recorded answer to the request; nothing is sent.
async fn played(
    sender: Sender,
    player: Arc<Player>,
    request: http::Request<WasiBody>,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let (ask, _) = read_request(request, sender.max_body()).await?;
    match player.call(&ask) {
        Some(Answer::WasiHttp {
            status,
            headers,
            body,
        }) => {
            let mut response = http::Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(name, value.decode());
            }
            let response = response
                .body(whole(bytes::Bytes::from(body.decode())))
                .map_err(|e| Error::InternalError(Some(e.to_string())))?;
            Ok((response, no_io()))
        }
        Some(Answer::Failed { message, .. }) => Err(error_from(&message)),
        Some(_) => {
            player.malformed(&ask);
            Err(Error::HttpRequestDenied)
        }
        None => Err(Error::HttpRequestDenied),
    }
}
