//! The edge's path and query decoding: one request target (`/path?query`)
//! through percent decoding, Alga's request path, endpoint matching, the
//! `/ext-ui` path rules, the query map and the ext-proxy `__method`
//! override (`annex_edge::fuzzing::path_and_query`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let target = String::from_utf8_lossy(data);
    annex_edge::fuzzing::path_and_query(&target);
});
