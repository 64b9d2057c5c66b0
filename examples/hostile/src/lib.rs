//! A hostile extension: one route per attack a tenant's guest can make on the
//! platform, for the hostile-guest corpus (`tests/tests/hostile.rs`). Every
//! route takes its size from the query so the test can name the exact
//! attack; the defaults are the sizes that broke or strained Annex before.
//!
//! - `/headers?n=N`: N distinct `x-ext-*` response headers (33,000).
//! - `/big-header?kb=N`: one `x-ext-big` header of N KiB (1,024).
//! - `/log-flood?n=N&kb=K`: N log lines of K KiB (5,000 × 8).
//! - `/huge-body?mb=N`: an N MiB body (64).
//! - `/slow-body?ms=N`: waits N ms (60,000) without using CPU, then answers.
//! - `/fetch?url=U`: `http.fetch` of the percent-encoded URL U.
//! - `/fetch-metadata`: `http.fetch` of the cloud metadata address.
//! - `/cpu`: an endless loop. `/memory`: allocates until refused.
//! - `/recurse`: unbounded recursion.
//! - `/host-calls?n=N`: N storage puts and gets (100,000), stopping at the
//!   first error.
//! - `/status?code=N`: answers status N (1,000).
//! - `/ok`: a quick 200.
//!
//! Fetch and host-call routes answer JSON: `{"fetchedStatus": n}` or
//! `{"fetchError": "<http-error case>"}` (status 403), and `{"calls": n}` or
//! `{"calls": n, "storageError": "<case>"}`.

wit_bindgen::generate!({
    path: "../wit",
    world: "runner",
});

use alga::extension::types::{HttpHeader, HttpRequest, StorageEntry};
use alga::extension::{http, logging, storage};
use std::hint::black_box;

/// The cloud metadata endpoint every major provider serves on link-local.
const METADATA_URL: &str = "http://169.254.169.254/latest/meta-data/";

struct Hostile;

impl Guest for Hostile {
    fn handler(request: ExecuteRequest) -> ExecuteResponse {
        let url = request.http.url;
        let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let num = |key: &str, default: usize| {
            param(query, key)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(default)
        };
        match path {
            "/headers" => many_headers(num("n", 33_000)),
            "/big-header" => {
                let mut r = text(200, "big header");
                r.headers
                    .push(header("x-ext-big", &"v".repeat(num("kb", 1024) * 1024)));
                r
            }
            "/log-flood" => log_flood(num("n", 5_000), num("kb", 8)),
            "/huge-body" => respond(
                200,
                "application/octet-stream",
                vec![b'x'; num("mb", 64) << 20],
            ),
            "/slow-body" => {
                std::thread::sleep(std::time::Duration::from_millis(num("ms", 60_000) as u64));
                text(200, "finally")
            }
            "/fetch" => fetch(&param(query, "url").map(percent_decode).unwrap_or_default()),
            "/fetch-metadata" => fetch(METADATA_URL),
            "/cpu" => spin(),
            "/memory" => text(200, &format!("allocated {} chunks", hoard())),
            "/recurse" => text(200, &format!("depth {}", recurse(black_box(0)))),
            "/host-calls" => host_calls(num("n", 100_000)),
            "/status" => text(
                num("code", 1_000).min(usize::from(u16::MAX)) as u16,
                "odd status",
            ),
            _ => text(200, "fine"),
        }
    }
}

fn many_headers(n: usize) -> ExecuteResponse {
    let mut r = text(200, "many headers");
    r.headers
        .extend((0..n).map(|i| header(&format!("x-ext-h{i}"), "v")));
    r
}

fn log_flood(lines: usize, kb: usize) -> ExecuteResponse {
    let line = "l".repeat(kb * 1024);
    for i in 0..lines {
        logging::log_info(&format!("{i} {line}"));
    }
    text(200, &format!("logged {lines}"))
}

fn fetch(url: &str) -> ExecuteResponse {
    let req = HttpRequest {
        method: "GET".to_string(),
        url: url.to_string(),
        headers: Vec::new(),
        body: None,
    };
    match http::fetch(&req) {
        Ok(resp) => json(200, &format!("{{\"fetchedStatus\":{}}}", resp.status)),
        Err(e) => json(403, &format!("{{\"fetchError\":\"{}\"}}", e.name())),
    }
}

fn host_calls(n: usize) -> ExecuteResponse {
    for i in 0..n {
        let key = format!("k{}", i % 64);
        let entry = StorageEntry {
            namespace: "hostile".to_string(),
            key: key.clone(),
            value: vec![b'v'; 64],
            revision: None,
        };
        let result = storage::put(&entry).and_then(|_| storage::get("hostile", &key));
        if let Err(e) = result {
            return json(
                200,
                &format!("{{\"calls\":{i},\"storageError\":\"{}\"}}", e.name()),
            );
        }
    }
    json(200, &format!("{{\"calls\":{n}}}"))
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Keeps every chunk alive so linear memory has to grow until it cannot.
fn hoard() -> usize {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        chunks.push(black_box(vec![1u8; 4 << 20]));
        if chunks.len() == usize::MAX {
            return chunks.len();
        }
    }
}

fn recurse(depth: u64) -> u64 {
    let buf = black_box([depth; 16]);
    if black_box(depth) == u64::MAX {
        return buf[0];
    }
    recurse(depth + 1).wrapping_add(buf[3])
}

/// The first value of `key` in a query string, undecoded.
fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header(name: &str, value: &str) -> HttpHeader {
    HttpHeader {
        name: name.to_string(),
        value: value.to_string(),
    }
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> ExecuteResponse {
    ExecuteResponse {
        status,
        headers: vec![header("content-type", content_type)],
        body: Some(body),
    }
}

fn text(status: u16, body: &str) -> ExecuteResponse {
    respond(status, "text/plain", body.as_bytes().to_vec())
}

fn json(status: u16, body: &str) -> ExecuteResponse {
    respond(status, "application/json", body.as_bytes().to_vec())
}

export!(Hostile);
