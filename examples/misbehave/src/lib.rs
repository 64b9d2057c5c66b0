//! A guest that misbehaves on request, for the worker's containment tests:
//! `/loop` spins forever, `/oom` allocates until memory runs out, `/recurse`
//! recurses without bound, `/giant?mb=N` answers an N MiB body (default 32),
//! `/panic` panics, `/stdout` writes to stdout and stderr, anything else is a
//! quick 200.
//!
//! Under `/hostile/` it attacks the host instead of itself:
//! `/hostile/headers?n=N&bytes=B` answers N `x-ext-h<i>` headers of B bytes
//! each (defaults 33,000 and 8), `/hostile/status?code=N` answers status N,
//! `/hostile/logflood?n=N&bytes=B` writes N log lines of B bytes (defaults
//! 5,000 and 8,192) and `/hostile/printflood?n=N` prints N lines to stdout.

wit_bindgen::generate!({
    path: "../wit",
    world: "runner",
});

use alga::extension::logging;
use alga::extension::types::HttpHeader;
use std::hint::black_box;

struct Misbehave;

impl Guest for Misbehave {
    fn handler(request: ExecuteRequest) -> ExecuteResponse {
        let url = request.http.url;
        let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let number = |name: &str, default: usize| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(default)
        };
        match path {
            "/hostile/headers" => {
                let value = "v".repeat(number("bytes", 8));
                let mut r = ok("many headers".to_string());
                r.headers
                    .extend((0..number("n", 33_000)).map(|i| HttpHeader {
                        name: format!("x-ext-h{i}"),
                        value: value.clone(),
                    }));
                r
            }
            "/hostile/status" => ExecuteResponse {
                status: u16::try_from(number("code", 1000)).unwrap_or(u16::MAX),
                ..ok("odd status".to_string())
            },
            "/hostile/logflood" => {
                let line = "x".repeat(number("bytes", 8192));
                let n = number("n", 5000);
                for _ in 0..n {
                    logging::log_info(&line);
                }
                ok(format!("logged {n} lines"))
            }
            "/hostile/printflood" => {
                let n = number("n", 100_000);
                for i in 0..n {
                    println!("printed line {i}");
                }
                ok(format!("printed {n} lines"))
            }
            "/loop" => spin(),
            "/oom" => ok(format!("allocated {} bytes", hoard())),
            "/recurse" => ok(format!("depth {}", recurse(black_box(0)))),
            "/giant" => response(vec![b'x'; number("mb", 32) * 1024 * 1024]),
            "/panic" => panic!("the guest panicked on purpose"),
            "/stdout" => {
                println!("line one to stdout");
                eprintln!("line two to stderr");
                ok("printed".to_string())
            }
            _ => ok("fine".to_string()),
        }
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Keeps every chunk alive so the allocator has to grow linear memory.
fn hoard() -> usize {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    loop {
        let chunk = vec![1u8; 4 * 1024 * 1024];
        total += chunk.len();
        chunks.push(black_box(chunk));
        if total == usize::MAX {
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

fn ok(text: String) -> ExecuteResponse {
    response(text.into_bytes())
}

fn response(body: Vec<u8>) -> ExecuteResponse {
    ExecuteResponse {
        status: 200,
        headers: vec![HttpHeader {
            name: "content-type".to_string(),
            value: "text/plain".to_string(),
        }],
        body: Some(body),
    }
}

export!(Misbehave);
