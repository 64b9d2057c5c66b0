//! gRPC surface of the control plane: each service decodes protobuf into
//! validated values, checks the caller's role for the method, calls the
//! domain logic on [`ControlPlane`](crate::ControlPlane) and encodes the
//! answer. No logic lives here beyond that.

pub mod dispatch;
pub mod fleet;
pub mod host;
pub mod installs;
pub mod registry;
mod scheduler;
pub mod storage;
pub mod trust;

use annex_ops::trace_context::GrpcServerSpans;
use annex_proto::pb;

/// The calls that get a server span continuing the caller's trace while
/// spans are exported: those made on behalf of one execution. Streams,
/// heartbeats, log shipping and audit batches do not.
pub const TRACED: GrpcServerSpans = GrpcServerSpans::new(&[
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

/// Runs a domain call and turns its error into a status.
pub(crate) fn status(err: annex_proto::AnnexError) -> tonic::Status {
    tonic::Status::from(err)
}
