//! The `Worker` gRPC service: decode, call the [`Executor`], encode.
//! Role checks (edge and control-plane certificates) are an interceptor the
//! server wraps around this service (`annex_ops::tls::authenticate`).
//!
//! A request the worker did not start (draining, overloaded) fails with
//! `UNAVAILABLE` so the caller can retry on another worker; one whose
//! component is still compiling fails with `UNAVAILABLE` and the code
//! `COMPONENT_COMPILING` plus when to retry; everything else, guest
//! failures included, is an `ExecuteResponse` with an outcome.

use std::sync::Arc;
use std::time::Instant;

use annex_proto::pb;
use annex_proto::pb::worker_server::{Worker, WorkerServer};
use annex_proto::{AnnexError, ErrorCode};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::bundles::BundleError;
use crate::cache::CacheError;
use crate::execute::{Executor, NotStarted};

/// Largest request or response message: a guest response is capped by
/// `max_response_bytes` (default 8 MiB); this leaves room above it.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The `Worker` service over one executor.
#[derive(Clone)]
pub struct WorkerService {
    executor: Arc<Executor>,
}

impl WorkerService {
    pub fn new(executor: Arc<Executor>) -> WorkerService {
        WorkerService { executor }
    }

    /// The tonic server with Annex's message limits.
    pub fn into_server(self) -> WorkerServer<WorkerService> {
        WorkerServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// A refusal before any guest ran, with Annex's error code: UNAVAILABLE
/// (draining, overloaded, compiling), so the caller may retry on another
/// worker (`annex_proto::error::never_started`), or one of the idempotency
/// refusals (`annex_proto::error::idempotency_refusal`), which callers hand
/// to their client; with when to retry where that is known.
fn not_started(e: &NotStarted) -> Status {
    let (code, retry_after) = match e {
        NotStarted::Draining | NotStarted::Overloaded(_) => (ErrorCode::Unavailable, None),
        NotStarted::Compiling { retry_after } => (ErrorCode::ComponentCompiling, Some(retry_after)),
        NotStarted::KeyReused => (ErrorCode::IdempotencyKeyReused, None),
        NotStarted::InProgress { retry_after } => {
            (ErrorCode::IdempotencyInProgress, Some(retry_after))
        }
        NotStarted::ResponseNotKept => (ErrorCode::IdempotencyResponseNotKept, None),
        NotStarted::RecordsUnavailable { retry_after } => {
            (ErrorCode::IdempotencyUnavailable, Some(retry_after))
        }
    };
    let mut status = Status::from(AnnexError::new(code, e.to_string()));
    if let Some(after) = retry_after {
        annex_proto::error::set_retry_after(&mut status, *after);
    }
    status
}

/// The caller's deadline from its `grpc-timeout` header (an integer of at
/// most 8 digits and a unit: `H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    use std::time::Duration;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn cache_error(e: &CacheError) -> AnnexError {
    let code = match e {
        CacheError::Bundle(b) => match b {
            BundleError::InvalidHash(_) => ErrorCode::InvalidArgument,
            BundleError::NotFound(_) => ErrorCode::BundleNotFound,
            BundleError::Fetch(_) | BundleError::TrustUnavailable(_) => ErrorCode::Unavailable,
            BundleError::HashMismatch { .. } => ErrorCode::HashMismatch,
            BundleError::Untrusted(t) => match t {
                annex_bundle::TrustError::SignatureMissing => ErrorCode::SignatureMissing,
                annex_bundle::TrustError::UntrustedPublisher => ErrorCode::UntrustedPublisher,
                annex_bundle::TrustError::SignatureInvalid => ErrorCode::SignatureInvalid,
                annex_bundle::TrustError::KeyRevoked { .. } => ErrorCode::KeyRevoked,
                annex_bundle::TrustError::KeyExpired { .. } => ErrorCode::KeyExpired,
            },
            BundleError::Archive(_) | BundleError::Runtime(_) => ErrorCode::InvalidBundle,
        },
        CacheError::Compile(_) | CacheError::WorldMismatch { .. } => ErrorCode::InvalidBundle,
    };
    AnnexError::new(code, e.to_string())
}

/// The server span of one execution: tenant, extension, request id and
/// install; it continues the caller's trace from the request's metadata or,
/// without one there, from its `traceparent` field.
fn execute_span(request: &Request<pb::ExecuteRequest>) -> tracing::Span {
    let r = request.get_ref();
    let c = r.context.as_ref();
    let field = |f: fn(&pb::ExecContext) -> &str| c.map(f).unwrap_or("");
    let span = tracing::info_span!(
        "execute",
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        tenant = field(|c| &c.tenant_id),
        extension = field(|c| &c.extension_id),
        request_id = field(|c| &c.request_id),
        install = field(|c| &c.install_id),
        traceparent = r.traceparent.as_str(),
    );
    // Only exported spans need these (log lines stay as they were).
    if annex_ops::trace_context::enabled() {
        span.record("otel.name", "annex.v1.Worker/Execute");
        span.record("otel.kind", "server");
    }
    annex_ops::trace_context::continue_grpc(&span, request.metadata(), &r.traceparent);
    span
}

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let span = execute_span(&request);
        let deadline = grpc_timeout(request.metadata());
        self.executor
            .execute(request.into_inner(), deadline)
            .instrument(span)
            .await
            .map(Response::new)
            .map_err(|e| not_started(&e))
    }

    async fn prewarm(
        &self,
        request: Request<pb::PrewarmRequest>,
    ) -> Result<Response<pb::PrewarmResponse>, Status> {
        let started = Instant::now();
        let source = self
            .executor
            .prewarm(&request.get_ref().content_hash)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, hash = %request.get_ref().content_hash, "prewarm failed");
                Status::from(cache_error(&e))
            })?;
        Ok(Response::new(pb::PrewarmResponse {
            source: source.as_str().to_string(),
            elapsed_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        }))
    }

    async fn drain(&self, _: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        tracing::info!("draining: no new executions");
        self.executor.drain_state().drain();
        Ok(Response::new(pb::Empty {}))
    }

    async fn stats(&self, _: Request<pb::Empty>) -> Result<Response<pb::WorkerStats>, Status> {
        let admission = self.executor.admission();
        Ok(Response::new(pb::WorkerStats {
            worker_id: self.executor.worker_id().to_string(),
            in_flight: u32::try_from(admission.running()).unwrap_or(u32::MAX),
            capacity: u32::try_from(admission.capacity()).unwrap_or(u32::MAX),
            cached_hashes: self.executor.cache().cached_hashes(),
            compiles: self.executor.cache().compiles(),
            draining: self.executor.drain_state().is_draining(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        use std::time::Duration;
        let read = |v: &'static str| {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert(
                "grpc-timeout",
                tonic::metadata::MetadataValue::from_static(v),
            );
            grpc_timeout(&m)
        };
        assert_eq!(read("30500m"), Some(Duration::from_millis(30_500)));
        assert_eq!(read("2S"), Some(Duration::from_secs(2)));
        assert_eq!(read("1M"), Some(Duration::from_secs(60)));
        assert_eq!(read("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(read("7u"), Some(Duration::from_micros(7)));
        assert_eq!(read("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "m", "123456789m", "5x", "-1S"] {
            assert_eq!(read(bad), None, "{bad}");
        }
        assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()), None);
    }

    #[test]
    fn idempotency_refusals_carry_their_codes() {
        let status = not_started(&NotStarted::InProgress {
            retry_after: std::time::Duration::from_secs(4),
        });
        assert_eq!(
            annex_proto::error::idempotency_refusal(&status),
            Some(ErrorCode::IdempotencyInProgress)
        );
        assert_eq!(
            annex_proto::error::retry_after(&status),
            Some(std::time::Duration::from_secs(4))
        );
        let status = not_started(&NotStarted::KeyReused);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(!annex_proto::error::never_started(&status));
    }
}
