//! A load target and its per-worker connections: HTTP against the edge, or
//! gRPC against `Worker.Execute` / `Dispatch.Execute`. The engine sees only
//! [`Target`] and [`Connection`]; each send ends in a [`Sample`]: success with
//! a status, or an error kind (a short stable string the report groups by).

use std::sync::Arc;

use crate::grpc::{GrpcConn, GrpcTarget};
use crate::http::{HttpConn, HttpTarget};

/// What one request ended in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sample {
    Ok { status: u16 },
    Error(String),
}

/// Which responses count as successes.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Accepted statuses; empty means any 2xx.
    pub statuses: Vec<u16>,
    /// A response whose body contains this is an error (e.g. the probe guest's
    /// `"err"` for a failed host call, which still answers 200).
    pub error_body: Option<String>,
}

impl Expect {
    pub fn judge(&self, status: u16, body: &[u8]) -> Sample {
        let accepted = if self.statuses.is_empty() {
            (200..300).contains(&status)
        } else {
            self.statuses.contains(&status)
        };
        if !accepted {
            return Sample::Error(format!("status {status}"));
        }
        if let Some(needle) = &self.error_body
            && contains(body, needle.as_bytes())
        {
            return Sample::Error(format!("body contains {needle}"));
        }
        Sample::Ok { status }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A target, shared by all workers of a run.
#[derive(Debug, Clone)]
pub enum Target {
    Http(Arc<HttpTarget>),
    Grpc(Arc<GrpcTarget>),
}

impl Target {
    /// One connection per load worker.
    pub fn connection(&self, worker: usize) -> Connection {
        match self {
            Target::Http(t) => Connection::Http(Box::new(HttpConn::new(t.clone(), worker))),
            Target::Grpc(t) => Connection::Grpc(Box::new(GrpcConn::new(t, worker))),
        }
    }

    /// Short description for reports.
    pub fn describe(&self) -> String {
        match self {
            Target::Http(t) => format!("HTTP {} [{}]", t.url, t.plan.describe()),
            Target::Grpc(t) => t.describe(),
        }
    }
}

pub enum Connection {
    Http(Box<HttpConn>),
    Grpc(Box<GrpcConn>),
}

impl Connection {
    pub async fn send(&mut self, seq: u64) -> Sample {
        match self {
            Connection::Http(c) => c.send(seq).await,
            Connection::Grpc(c) => c.send(seq).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_error_bodies_are_judged() {
        let any2xx = Expect::default();
        assert_eq!(any2xx.judge(204, b""), Sample::Ok { status: 204 });
        assert_eq!(any2xx.judge(503, b""), Sample::Error("status 503".into()));
        let strict = Expect {
            statuses: vec![200, 404],
            error_body: Some("\"err\"".into()),
        };
        assert_eq!(strict.judge(404, b"{}"), Sample::Ok { status: 404 });
        assert_eq!(strict.judge(201, b"{}"), Sample::Error("status 201".into()));
        assert_eq!(
            strict.judge(200, br#"{"err":"not-found"}"#),
            Sample::Error("body contains \"err\"".into())
        );
    }
}
