//! HTTP/1.1 load against the edge (or anything else on loopback speaking plain
//! HTTP). Each load worker owns one keep-alive connection, as wrk does, so
//! `--concurrency 64` means 64 connections; a connection that fails is dropped
//! and redialled on the next request. Responses are read in full (the edge's
//! cost includes writing them).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::SeedableRng as _;

use crate::plan::Plan;
use crate::target::{Expect, Sample};

/// Everything shared by the connections of one HTTP target.
#[derive(Debug)]
pub struct HttpTarget {
    /// The URL as given, for reports.
    pub url: String,
    pub addr: SocketAddr,
    /// `Host` header value.
    pub authority: String,
    pub headers: http::HeaderMap,
    pub plan: Plan,
    pub expect: Expect,
}

/// One keep-alive connection and the worker's random source.
pub struct HttpConn {
    target: Arc<HttpTarget>,
    sender: Option<SendRequest<Full<Bytes>>>,
    rng: rand::rngs::StdRng,
}

impl HttpConn {
    pub fn new(target: Arc<HttpTarget>, worker: usize) -> HttpConn {
        HttpConn {
            target,
            sender: None,
            // Seeded per worker: mixes are reproducible run to run.
            rng: rand::rngs::StdRng::seed_from_u64(0x5eed ^ worker as u64),
        }
    }

    pub async fn send(&mut self, seq: u64) -> Sample {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => match self.connect().await {
                Ok(s) => s,
                Err(kind) => return Sample::Error(kind),
            },
        };
        let request = match self.build(seq) {
            Ok(r) => r,
            Err(e) => return Sample::Error(format!("bad request: {e}")),
        };
        if sender.ready().await.is_err() {
            return Sample::Error("connection closed".into());
        }
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => return Sample::Error(classify(&e)),
        };
        let status = response.status().as_u16();
        let body = match response.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Sample::Error(format!("reading body: {}", classify(&e))),
        };
        self.sender = Some(sender);
        self.target.expect.judge(status, &body)
    }

    fn build(&mut self, seq: u64) -> Result<http::Request<Full<Bytes>>, http::Error> {
        let t = &*self.target;
        let r = t.plan.render(seq, &mut self.rng);
        let mut builder = http::Request::builder()
            .method(r.method.clone())
            .uri(r.path.as_ref())
            .header(http::header::HOST, &t.authority);
        if let Some(h) = builder.headers_mut() {
            h.extend(t.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
            if let Some(token) = r.bearer {
                h.insert(
                    http::header::AUTHORIZATION,
                    http::HeaderValue::try_from(format!("Bearer {token}"))?,
                );
            }
        }
        builder.body(Full::new(r.body.clone()))
    }

    async fn connect(&mut self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(self.target.addr)
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        // Small requests and responses: Nagle would add up to 40 ms per round trip.
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {}", classify(&e)))?;
        tokio::spawn(async move {
            // The connection's own error surfaces on the next send; nothing to log here.
            let _ = conn.await;
        });
        Ok(sender)
    }
}

fn classify(e: &hyper::Error) -> String {
    if e.is_incomplete_message() {
        "connection closed mid-response".into()
    } else if e.is_canceled() || e.is_closed() {
        "connection closed".into()
    } else if e.is_parse() {
        "malformed response".into()
    } else if e.is_timeout() {
        "timeout".into()
    } else {
        "transport error".into()
    }
}
