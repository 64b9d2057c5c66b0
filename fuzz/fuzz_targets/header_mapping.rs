//! Header mapping at the edge, both ways: `name: value` lines as a guest's
//! response headers through the `/api/ext` and `/api/ext-proxy` response
//! allowlists, and as a client's request headers through the allowlists
//! of what reaches a guest, plus the request id and `traceparent` rules
//! (`annex_edge::fuzzing::header_mapping`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let pairs: Vec<(String, String)> = text
        .split('\n')
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()))
        .collect();
    annex_edge::fuzzing::header_mapping(&pairs);
});
