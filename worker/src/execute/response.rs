//! What an execution answers: the guest's response, or a [`Failure`] with
//! its outcome, mapped to an `ExecuteResponse` with Alga's error strings
//! (`invalid_request`, `bundle_fetch_failed`, `execute_failed`). Also the
//! classification of a guest call's result (trap, timeout, out of memory)
//! and the bounds a guest's response must keep before it leaves the worker
//! ([`check_response`]: status, header count and bytes, body size), so
//! nothing downstream has to hold or parse more than the platform accepts.
//! Pure mapping: nothing here runs a guest or records anything.

use std::collections::BTreeMap;
use std::time::Duration;

use annex_proto::pb;
use wasmtime::Trap;

use crate::bindings::types;
use crate::outcome::Outcome;

/// An execution that did not produce the guest's response.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) outcome: Outcome,
    pub(crate) status: u32,
    pub(crate) error: String,
    /// What the guest used, when it ran.
    pub(crate) usage: Option<pb::Usage>,
}

impl Failure {
    /// Refused before the guest ran (outcome `rejected`).
    pub(crate) fn rejected(status: u32, error: impl Into<String>) -> Failure {
        Failure {
            outcome: Outcome::Rejected,
            status,
            error: error.into(),
            usage: None,
        }
    }

    /// The guest call failed (trap, timeout, out of memory).
    fn failed(outcome: Outcome, detail: impl std::fmt::Display) -> Failure {
        Failure {
            outcome,
            status: 500,
            error: format!("execute_failed: {detail}"),
            usage: None,
        }
    }

    /// The guest task itself ended abnormally (panicked or was cancelled).
    pub(crate) fn guest_task(error: impl std::fmt::Display) -> Failure {
        Failure::failed(Outcome::Trap, format_args!("guest task failed: {error}"))
    }

    /// The response for this failure; `wall` is the whole call's wall time,
    /// which replaces the guest's own figure.
    pub(crate) fn into_response(self, wall: Duration, worker_id: &str) -> pb::ExecuteResponse {
        pb::ExecuteResponse {
            status: self.status,
            outcome: pb::Outcome::from(self.outcome) as i32,
            error: self.error,
            usage: Some(pb::Usage {
                wall_us: micros(wall),
                ..self.usage.unwrap_or_default()
            }),
            worker_id: worker_id.to_string(),
            ..Default::default()
        }
    }
}

/// What the guest answered, within its limits.
pub(crate) fn ok_response(
    response: types::ExecuteResponse,
    usage: pb::Usage,
    worker_id: &str,
) -> pb::ExecuteResponse {
    // Headers folded into a map: the last duplicate wins, as in Alga.
    let headers = response
        .headers
        .into_iter()
        .map(|h| (h.name, h.value))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    pb::ExecuteResponse {
        status: u32::from(response.status),
        headers,
        body: response.body,
        outcome: pb::Outcome::Ok as i32,
        error: String::new(),
        usage: Some(usage),
        worker_id: worker_id.to_string(),
        replayed: false,
    }
}

/// Headers a guest response may carry: Alga's gateway relays a handful;
/// 100 is far above any real extension and far below what an HTTP stack
/// refuses (a `HeaderMap` panics past 32,768 entries).
pub(crate) const MAX_RESPONSE_HEADERS: usize = 100;
/// Bytes of header names and values a guest response may carry: the
/// common HTTP servers' default for a whole header section.
pub(crate) const MAX_RESPONSE_HEADER_BYTES: usize = 64 * 1024;

/// Checks what the guest answered against the platform's bounds: a body
/// over `max_bytes` is refused with status 500 (as before); too many
/// headers, too many header bytes, or a status that is neither 0 (Alga's
/// "unset", which the proxy path answers as 200) nor 100..=599 with status
/// 502. The guest ran; its answer is refused (outcome `rejected`).
pub(crate) fn check_response(
    response: types::ExecuteResponse,
    max_bytes: u64,
) -> Result<types::ExecuteResponse, Failure> {
    let size = response.body.as_ref().map_or(0, Vec::len) as u64;
    if size > max_bytes {
        return Err(Failure {
            outcome: Outcome::Rejected,
            status: 500,
            error: format!(
                "execute_failed: response body of {size} bytes exceeds the limit of {max_bytes} bytes"
            ),
            usage: None,
        });
    }
    let refused = |why: String| Failure {
        outcome: Outcome::Rejected,
        status: 502,
        error: format!("execute_failed: response refused: {why}"),
        usage: None,
    };
    if response.status != 0 && !(100..=599).contains(&response.status) {
        return Err(refused(format!(
            "status {} is not an HTTP status",
            response.status
        )));
    }
    let count = response.headers.len();
    if count > MAX_RESPONSE_HEADERS {
        return Err(refused(format!(
            "{count} headers, above the limit of {MAX_RESPONSE_HEADERS}"
        )));
    }
    let bytes: usize = response
        .headers
        .iter()
        .map(|h| h.name.len() + h.value.len())
        .sum();
    if bytes > MAX_RESPONSE_HEADER_BYTES {
        return Err(refused(format!(
            "{bytes} bytes of headers, above the limit of {MAX_RESPONSE_HEADER_BYTES}"
        )));
    }
    Ok(response)
}

/// A `wasi:http` component's response body over the request's limit, found
/// while reading it (the guest ran; its answer is refused like an
/// oversized Alga response).
#[derive(Debug, thiserror::Error)]
#[error("response body exceeds the limit of {limit} bytes")]
pub(crate) struct ResponseTooLarge {
    pub(crate) limit: u64,
}

/// The result of a guest call bounded by `timeout` on the async side.
pub(crate) type CallResult =
    Result<wasmtime::Result<types::ExecuteResponse>, tokio::time::error::Elapsed>;

/// Maps the call result to the guest's response or a failure: the epoch
/// interrupt, running out of fuel and the async-side bound are all
/// `timeout`; a failure after a denied memory growth is `oom`; anything
/// else `trap`.
pub(crate) fn classify(
    call: CallResult,
    memory_denied: bool,
    timeout: Duration,
) -> Result<types::ExecuteResponse, Failure> {
    let timed_out = || {
        Failure::failed(
            Outcome::Timeout,
            format_args!(
                "execution exceeded its time limit of {} ms",
                timeout.as_millis()
            ),
        )
    };
    match call {
        Err(_) => Err(timed_out()),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) if error.is::<ResponseTooLarge>() => Err(Failure {
            outcome: Outcome::Rejected,
            status: 500,
            error: format!("execute_failed: {error}"),
            usage: None,
        }),
        Ok(Err(error)) => {
            let trap = error.downcast_ref::<Trap>().copied();
            tracing::debug!(error = ?error, "guest call failed");
            if matches!(trap, Some(Trap::Interrupt) | Some(Trap::OutOfFuel)) {
                return Err(timed_out());
            }
            if memory_denied {
                Err(Failure::failed(
                    Outcome::Oom,
                    format_args!("memory limit exceeded ({})", error.root_cause()),
                ))
            } else {
                Err(Failure::failed(Outcome::Trap, error.root_cause()))
            }
        }
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(body: &[u8]) -> types::ExecuteResponse {
        types::ExecuteResponse {
            status: 201,
            headers: vec![
                types::HttpHeader {
                    name: "x".into(),
                    value: "1".into(),
                },
                types::HttpHeader {
                    name: "x".into(),
                    value: "2".into(),
                },
            ],
            body: Some(body.to_vec()),
        }
    }

    #[test]
    fn the_last_duplicate_header_wins() {
        let r = ok_response(guest(b"hi"), pb::Usage::default(), "w");
        assert_eq!(r.status, 201);
        assert_eq!(r.headers.get("x").map(String::as_str), Some("2"));
        assert_eq!(r.outcome, pb::Outcome::Ok as i32);
        assert_eq!(r.worker_id, "w");
    }

    #[test]
    fn an_oversized_body_is_rejected_with_500() {
        let failure = check_response(guest(b"12345"), 4).expect_err("too large");
        assert_eq!(failure.outcome, Outcome::Rejected);
        assert_eq!(failure.status, 500);
        assert_eq!(
            failure.error,
            "execute_failed: response body of 5 bytes exceeds the limit of 4 bytes"
        );
        assert!(check_response(guest(b"1234"), 4).is_ok());
    }

    #[test]
    fn headers_and_statuses_beyond_http_are_refused_with_502() {
        let header = |i: usize, value: &str| types::HttpHeader {
            name: format!("x-ext-{i}"),
            value: value.to_string(),
        };
        let with = |status: u16, headers: Vec<types::HttpHeader>| types::ExecuteResponse {
            status,
            headers,
            body: None,
        };
        let many = (0..=MAX_RESPONSE_HEADERS).map(|i| header(i, "v")).collect();
        let big = vec![header(0, &"v".repeat(MAX_RESPONSE_HEADER_BYTES))];
        for (response, error) in [
            (with(200, many), "101 headers, above the limit of 100"),
            (
                with(200, big),
                "65543 bytes of headers, above the limit of 65536",
            ),
            (with(1000, vec![]), "status 1000 is not an HTTP status"),
            (with(99, vec![]), "status 99 is not an HTTP status"),
        ] {
            let failure = check_response(response, u64::MAX).expect_err(error);
            assert_eq!(failure.status, 502);
            assert_eq!(failure.outcome, Outcome::Rejected);
            assert_eq!(
                failure.error,
                format!("execute_failed: response refused: {error}")
            );
        }
        for status in [0, 100, 599] {
            assert!(check_response(with(status, vec![]), 0).is_ok(), "{status}");
        }
    }

    #[test]
    fn a_failure_reports_the_whole_call_wall_time() {
        let r = Failure::rejected(400, "missing_routing_headers")
            .into_response(Duration::from_millis(3), "w");
        assert_eq!(r.outcome, pb::Outcome::Rejected as i32);
        assert_eq!(r.status, 400);
        assert_eq!(r.error, "missing_routing_headers");
        assert_eq!(r.usage.map(|u| u.wall_us), Some(3_000));
    }
}
