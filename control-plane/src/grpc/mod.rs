//! gRPC surface of the control plane: each service decodes protobuf into
//! validated values, checks the caller's role for the method, calls the
//! domain types it holds (and only those) and encodes the answer. Domain
//! errors become statuses through `From<AnnexError> for Status`, so handlers
//! use `?`. `HostServices` verifies the execution grant here, once per call.
//! No logic lives here beyond that.

pub(crate) mod captures;
pub(crate) mod dispatch;
pub(crate) mod fleet;
pub(crate) mod host;
pub(crate) mod installs;
pub(crate) mod registry;
mod rollouts;
mod scheduler;
mod storage;
pub(crate) mod trust;

use annex_ops::trace_context::GrpcServerSpans;
use annex_proto::pb;

/// The calls that get a server span continuing the caller's trace while
/// spans are exported: those made on behalf of one execution. Streams,
/// heartbeats, log shipping and audit batches do not.
pub(crate) const TRACED: GrpcServerSpans = GrpcServerSpans::new(&[
    "/annex.v1.Dispatch/Execute",
    "/annex.v1.Dispatch/AuthenticateApiKey",
    "/annex.v1.Installs/Resolve",
    "/annex.v1.Registry/FetchBundle",
    "/annex.v1.HostServices/StorageGet",
    "/annex.v1.HostServices/StoragePut",
    "/annex.v1.HostServices/StorageDelete",
    "/annex.v1.HostServices/StorageList",
    "/annex.v1.HostServices/GetSecrets",
    "/annex.v1.HostServices/ListSchedules",
    "/annex.v1.HostServices/GetSchedule",
    "/annex.v1.HostServices/CreateSchedule",
    "/annex.v1.HostServices/UpdateSchedule",
    "/annex.v1.HostServices/DeleteSchedule",
    "/annex.v1.HostServices/GetEndpoints",
    "/annex.v1.HostServices/CallHostApi",
    "/annex.v1.HostServices/CallUiProxy",
    "/annex.v1.HostServices/IdempotencyClaim",
    "/annex.v1.HostServices/IdempotencyComplete",
    "/annex.v1.HostServices/IdempotencyRelease",
]);
use chrono::{DateTime, TimeZone, Utc};

pub(crate) fn ts(t: DateTime<Utc>) -> Option<pb::Timestamp> {
    Some(pb::Timestamp {
        unix_ms: t.timestamp_millis(),
    })
}

pub(crate) fn from_ts(
    t: Option<&pb::Timestamp>,
) -> Result<Option<DateTime<Utc>>, annex_proto::AnnexError> {
    match t {
        None => Ok(None),
        Some(t) => Utc
            .timestamp_millis_opt(t.unix_ms)
            .single()
            .map(Some)
            .ok_or_else(|| annex_proto::AnnexError::invalid("timestamp out of range")),
    }
}

/// Ends the long-lived streams (routes, heartbeats, logs) when the process
/// shuts down, so the server's graceful shutdown can finish; clients
/// reconnect to another replica.
#[derive(Debug, Clone)]
pub(crate) struct Closing(tokio::sync::watch::Receiver<bool>);

impl Closing {
    /// A handle for the streams and the sender that closes them.
    pub(crate) fn new() -> (tokio::sync::watch::Sender<bool>, Closing) {
        let (close, closing) = tokio::sync::watch::channel(false);
        (close, Closing(closing))
    }

    /// Resolves once the process began to shut down.
    pub(crate) fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }
}
