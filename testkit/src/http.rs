//! A raw HTTP/1.1 test client: one request per fresh connection, the path
//! sent exactly as written (so traversal attempts and odd encodings reach the
//! server unnormalised), every response header kept, and a streaming variant
//! for responses that never end (server-sent events).
//!
//! It must stay dumb: no redirects, no retries, no cookies, no TLS. A test
//! that needs one of those says so itself.

use std::net::SocketAddr;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt as _;

/// A whole response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON; panics with the status and body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The first value of header `name`, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request; panics when the server cannot be reached or the exchange
/// breaks off.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_send(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `GET path` with `headers` and no body.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    send(addr, "GET", path, headers, b"").await
}

/// As [`send`], but a connection failure is an error rather than a panic
/// (for callers that count failures, e.g. while a process is killed). The
/// error is text: callers print it or record it, never branch on it.
pub async fn try_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    let response = exchange(addr, method, path, headers, body).await?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// A response whose body is read as it arrives.
#[derive(Debug)]
pub struct Streaming {
    pub status: u16,
    pub headers: HeaderMap,
    body: hyper::body::Incoming,
}

impl Streaming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The rest of the body as text, once the server ends it (for a
    /// response that is not a stream, e.g. a refusal).
    pub async fn rest(mut self) -> String {
        let mut text = String::new();
        while let Some(piece) = self.next_text().await {
            text.push_str(&piece);
        }
        text
    }

    /// The next piece of the body as text; `None` once the body has ended.
    /// It waits for the server: bound it with `tokio::time::timeout`.
    pub async fn next_text(&mut self) -> Option<String> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(String::from_utf8_lossy(&data).into_owned());
                    }
                }
                Err(e) => panic!("reading a streamed body: {e}"),
            }
        }
    }
}

/// Sends one request and returns as soon as the response head arrives;
/// panics when the server cannot be reached.
pub async fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Streaming {
    try_open(addr, method, path, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// As [`open`], but a connection failure is an error (text) rather than a
/// panic.
pub async fn try_open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Streaming, String> {
    let response = exchange(addr, method, path, headers, b"").await?;
    let (parts, body) = response.into_parts();
    Ok(Streaming {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// Connects, sends the request and waits for the response head. `Host` is
/// the address unless the caller sends its own.
async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
    tokio::spawn(conn);
    let mut request = http::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request = request.header("host", addr.to_string());
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(http_body_util::Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| format!("building the request: {e}"))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}
