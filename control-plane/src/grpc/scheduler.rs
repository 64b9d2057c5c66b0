//! Protobuf conversions for the scheduler calls of `HostServices`.

use annex_proto::pb;
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::scheduler::{EndpointInfo, Mutation, NewSchedule, ScheduleChanges};
use crate::store::ScheduleRow;

/// As Alga's `Date.toISOString()`: `2025-01-02T03:04:05.678Z`.
fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn info_pb(s: &ScheduleRow) -> pb::ScheduleInfo {
    pb::ScheduleInfo {
        id: s.id.to_string(),
        endpoint_path: s.fields.endpoint_path.clone(),
        endpoint_method: s.fields.endpoint_method.clone(),
        name: s.fields.name.clone(),
        cron: s.fields.cron.clone(),
        timezone: s.fields.timezone.clone(),
        enabled: s.fields.enabled,
        payload_json: s.fields.payload.as_ref().map(ToString::to_string),
        last_run_at: s.last_run_at.map(iso),
        last_run_status: s.last_run_status.clone(),
        last_error: s.last_error.clone(),
        created_at: Some(iso(s.created_at)),
    }
}

pub(crate) fn endpoint_pb(e: EndpointInfo) -> pb::EndpointInfo {
    pb::EndpointInfo {
        id: e.id.to_string(),
        method: e.method,
        path: e.path,
        handler: e.handler,
        schedulable: e.schedulable,
    }
}

/// `{success, scheduleId?, error?, fieldErrors?}` with field errors as JSON map text.
pub(crate) fn mutation_pb(result: Mutation<Option<Uuid>>) -> pb::ScheduleMutationResult {
    match result {
        Ok(id) => pb::ScheduleMutationResult {
            success: true,
            schedule_id: id.map(|id| id.to_string()),
            error: None,
            field_errors: None,
        },
        Err(rejection) => pb::ScheduleMutationResult {
            success: false,
            schedule_id: None,
            field_errors: rejection
                .field
                .map(|field| serde_json::json!({ field: rejection.error }).to_string()),
            error: Some(rejection.error),
        },
    }
}

pub(crate) fn create_from_pb(r: pb::CreateScheduleRequest) -> NewSchedule {
    NewSchedule {
        endpoint: r.endpoint,
        cron: r.cron,
        timezone: r.timezone,
        enabled: r.enabled,
        name: r.name,
        payload_json: r.payload_json,
    }
}

pub(crate) fn changes_from_pb(r: pb::UpdateScheduleRequest) -> ScheduleChanges {
    ScheduleChanges {
        endpoint: r.endpoint,
        cron: r.cron,
        timezone: r.timezone,
        enabled: r.enabled,
        name: r.name,
        payload_json: r.payload_json,
    }
}
