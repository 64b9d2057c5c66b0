//! The guest-response mapping from worker to client: a worker's `Ok`
//! answer (status, headers, body) turned into the client's response on
//! `/api/ext` and `/api/ext-proxy` (`annex_edge::fuzzing::guest_response`).
//! Input: the first line is the status (decimal), then `name: value`
//! header lines, an empty line and the body, like an HTTP/1.1 response.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], Some(data[i + 2..].to_vec())),
        None => (data, None),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n');
    let first = lines.next().unwrap_or_default().trim();
    let status = first.parse::<u32>().unwrap_or_else(|_| {
        first.bytes().fold(0u32, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(u32::from(b))
        })
    });
    let pairs: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()))
        .collect();
    annex_edge::fuzzing::guest_response(status, &pairs, body);
});
