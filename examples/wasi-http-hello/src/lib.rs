//! A plain `wasi:http/proxy` component (what Spin and `wasmtime serve` run),
//! published to Annex as an extension with `"runtime": "wasi-http@0.2"`.
//! It is also the baseline `wasmtime serve` runs in BENCHMARKS.md: any path
//! but the two below answers a small JSON body, the same work as the
//! `hello` extension's `/hello` without Annex around it.
//!
//! - `POST /echo`: the request as the component saw it (method, path and
//!   query, the `x-alga-*` and `x-request-id` headers, the body), with
//!   status 201 and an `x-ext-world` header.
//! - `GET /fetch?url=http://host:port/path`: a GET through
//!   `wasi:http/outgoing-handler` (Annex routes it through the egress
//!   policy); answers `{"status": N, "body": "…"}` or `{"error": "…"}`.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = match (request.method(), path.split('?').next()) {
            (Method::Post, Some("/echo")) => (201, echo(&request, &path)),
            (Method::Get, Some("/fetch")) => (200, fetch(&path)),
            _ => (200, format!(r#"{{"message":"hello","path":"{path}"}}"#)),
        };
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"application/json".to_vec()]);
        let _ = headers.set("x-ext-world", &[b"wasi-http".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let Ok(out) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(mut stream) = out.write() {
            let _ = stream.write_all(body.as_bytes());
            let _ = stream.flush();
        }
        let _ = OutgoingBody::finish(out, None);
    }
}

/// A JSON string literal of `s`.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn header(request: &IncomingRequest, name: &str) -> String {
    request
        .headers()
        .get(name)
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

fn echo(request: &IncomingRequest, path: &str) -> String {
    let mut body = Vec::new();
    if let Ok(incoming) = request.consume()
        && let Ok(stream) = incoming.stream()
    {
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            body.extend_from_slice(&chunk);
        }
    }
    format!(
        r#"{{"method":"POST","path":{},"tenant":{},"extension":{},"requestId":{},"contentType":{},"body":{}}}"#,
        quote(path),
        quote(&header(request, "x-alga-tenant")),
        quote(&header(request, "x-alga-extension")),
        quote(&header(request, "x-request-id")),
        quote(&header(request, "content-type")),
        quote(&String::from_utf8_lossy(&body)),
    )
}

/// Decodes a form-urlencoded query value (`+` is a space, `%XX` a byte).
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url=http://authority/path` from the query.
fn fetch(path: &str) -> String {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{OutgoingRequest, Scheme};

    let Some(url) = path
        .split_once('?')
        .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("url=")))
        .map(decode)
    else {
        return r#"{"error":"no url"}"#.to_string();
    };
    let url = url.as_str();
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some((_, rest)) => (Scheme::Http, rest),
        None => (Scheme::Http, url),
    };
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(target));
    let pending = match outgoing_handler::handle(request, None) {
        Ok(p) => p,
        Err(e) => return format!(r#"{{"error":{}}}"#, quote(&format!("{e:?}"))),
    };
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return format!(r#"{{"error":{}}}"#, quote(&format!("{e:?}"))),
        _ => return r#"{"error":"no response"}"#.to_string(),
    };
    let status = response.status();
    let mut text = Vec::new();
    if let Ok(incoming) = response.consume()
        && let Ok(stream) = incoming.stream()
    {
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            text.extend_from_slice(&chunk);
        }
    }
    format!(
        r#"{{"status":{status},"body":{}}}"#,
        quote(&String::from_utf8_lossy(&text))
    )
}
