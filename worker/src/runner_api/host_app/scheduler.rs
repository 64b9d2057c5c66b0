//! `alga:extension/scheduler` against Alga's scheduler host API
//! (docs/design/alga-compatibility.md, "Host APIs"): operations `list`,
//! `get`, `create`, `update`, `delete`, `getEndpoints`; schedules read in
//! camelCase or snake_case, rows that do not parse dropped from a list.
//! A rejected create, update or delete (HTTP 400 with Alga's
//! `{success: false, error, fieldErrors}`) comes back as the result record
//! with its reason (docs/design/differences.md, "Scheduler failures keep
//! their details"); other failures are their status.

use annex_proto::pb;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{json_ok, malformed};
use crate::backend::{HostApiResponse, HostError};

/// An operation without input.
pub(super) fn op(operation: &str) -> Value {
    json!({ "operation": operation })
}

pub(super) fn get(schedule_id: &str) -> Value {
    json!({"operation": "get", "scheduleId": schedule_id})
}

pub(super) fn delete(schedule_id: &str) -> Value {
    json!({"operation": "delete", "scheduleId": schedule_id})
}

pub(super) fn create(r: &pb::CreateScheduleRequest) -> Value {
    let mut body = Map::new();
    body.insert("operation".into(), json!("create"));
    body.insert("endpoint".into(), json!(r.endpoint));
    body.insert("cron".into(), json!(r.cron));
    optional(&mut body, "timezone", r.timezone.as_ref().map(|v| json!(v)));
    optional(&mut body, "enabled", r.enabled.map(|v| json!(v)));
    optional(&mut body, "name", r.name.as_ref().map(|v| json!(v)));
    optional(&mut body, "payload", r.payload_json.as_deref().map(payload));
    Value::Object(body)
}

pub(super) fn update(r: &pb::UpdateScheduleRequest) -> Value {
    let mut body = Map::new();
    body.insert("operation".into(), json!("update"));
    body.insert("scheduleId".into(), json!(r.schedule_id));
    optional(&mut body, "endpoint", r.endpoint.as_ref().map(|v| json!(v)));
    optional(&mut body, "cron", r.cron.as_ref().map(|v| json!(v)));
    optional(&mut body, "timezone", r.timezone.as_ref().map(|v| json!(v)));
    optional(&mut body, "enabled", r.enabled.map(|v| json!(v)));
    optional(&mut body, "name", r.name.as_ref().map(|v| json!(v)));
    optional(&mut body, "payload", r.payload_json.as_deref().map(payload));
    Value::Object(body)
}

fn optional(body: &mut Map<String, Value>, field: &str, value: Option<Value>) {
    if let Some(v) = value {
        body.insert(field.to_string(), v);
    }
}

/// The guest's payload text as JSON (the interface checked that it parses).
fn payload(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleJson {
    id: String,
    #[serde(alias = "endpoint_path")]
    endpoint_path: String,
    #[serde(alias = "endpoint_method")]
    endpoint_method: String,
    #[serde(default)]
    name: Option<String>,
    cron: String,
    timezone: String,
    enabled: bool,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default, alias = "last_run_at")]
    last_run_at: Option<String>,
    #[serde(default, alias = "last_run_status")]
    last_run_status: Option<String>,
    #[serde(default, alias = "last_error")]
    last_error: Option<String>,
    #[serde(default, alias = "created_at")]
    created_at: Option<String>,
}

impl From<ScheduleJson> for pb::ScheduleInfo {
    fn from(s: ScheduleJson) -> Self {
        pb::ScheduleInfo {
            id: s.id,
            endpoint_path: s.endpoint_path,
            endpoint_method: s.endpoint_method,
            name: s.name,
            cron: s.cron,
            timezone: s.timezone,
            enabled: s.enabled,
            payload_json: s.payload.filter(|p| !p.is_null()).map(|p| p.to_string()),
            last_run_at: s.last_run_at,
            last_run_status: s.last_run_status,
            last_error: s.last_error,
            created_at: s.created_at,
        }
    }
}

fn schedule(v: &Value) -> Option<pb::ScheduleInfo> {
    serde_json::from_value::<ScheduleJson>(v.clone())
        .ok()
        .map(Into::into)
}

pub(super) fn read_list(r: &HostApiResponse) -> Result<Vec<pb::ScheduleInfo>, HostError> {
    let v = json_ok(r, "scheduler")?;
    let rows = v
        .get("schedules")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("scheduler"))?;
    Ok(rows.iter().filter_map(schedule).collect())
}

pub(super) fn read_get(r: &HostApiResponse) -> Result<Option<pb::ScheduleInfo>, HostError> {
    let v = json_ok(r, "scheduler")?;
    match v.get("schedule") {
        None | Some(Value::Null) => Ok(None),
        Some(s) => schedule(s).map(Some).ok_or_else(|| malformed("scheduler")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MutationJson {
    success: bool,
    #[serde(default, alias = "schedule_id")]
    schedule_id: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, alias = "field_errors")]
    field_errors: Option<Value>,
}

/// 2xx, or a 400 that carries Alga's result record, is the record.
pub(super) fn read_mutation(r: &HostApiResponse) -> Result<pb::ScheduleMutationResult, HostError> {
    let parsed = || serde_json::from_slice::<MutationJson>(&r.body).ok();
    let m = match r.status {
        200..=299 => parsed().ok_or_else(|| malformed("scheduler"))?,
        400 => match parsed() {
            Some(m) if !m.success => m,
            _ => return Err(super::failed(r)),
        },
        _ => return Err(super::failed(r)),
    };
    Ok(pb::ScheduleMutationResult {
        success: m.success,
        schedule_id: m.schedule_id,
        error: m.error,
        field_errors: m
            .field_errors
            .filter(|f| !f.is_null())
            .map(|f| f.to_string()),
    })
}

#[derive(Deserialize)]
struct EndpointJson {
    id: String,
    method: String,
    path: String,
    handler: String,
    schedulable: bool,
}

pub(super) fn read_endpoints(r: &HostApiResponse) -> Result<Vec<pb::EndpointInfo>, HostError> {
    let v = json_ok(r, "scheduler")?;
    let list = v.get("endpoints").cloned().unwrap_or(Value::Null);
    let endpoints: Vec<EndpointJson> =
        serde_json::from_value(list).map_err(|_| malformed("scheduler"))?;
    Ok(endpoints
        .into_iter()
        .map(|e| pb::EndpointInfo {
            id: e.id,
            method: e.method,
            path: e.path,
            handler: e.handler,
            schedulable: e.schedulable,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: Value) -> HostApiResponse {
        HostApiResponse {
            status,
            body: body.to_string().into_bytes(),
        }
    }

    #[test]
    fn lists_read_both_spellings_and_drop_bad_rows() {
        let r = answer(
            200,
            json!({"schedules": [
                {"id": "a", "endpointPath": "/p", "endpointMethod": "GET", "cron": "0 * * * *",
                 "timezone": "UTC", "enabled": true, "payload": {"x": 1}},
                {"id": "b", "endpoint_path": "/q", "endpoint_method": "POST", "cron": "0 0 * * *",
                 "timezone": "UTC", "enabled": false, "last_run_at": "2024-01-01T00:00:00Z"},
                {"id": "broken"}
            ]}),
        );
        let list = read_list(&r).expect("list");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].payload_json.as_deref(), Some(r#"{"x":1}"#));
        assert_eq!(list[1].last_run_at.as_deref(), Some("2024-01-01T00:00:00Z"));
    }

    #[test]
    fn a_rejected_mutation_keeps_its_reason() {
        let r = answer(
            400,
            json!({"success": false, "error": "Invalid cron", "fieldErrors": {"cron": "too often"}}),
        );
        let m = read_mutation(&r).expect("record");
        assert!(!m.success);
        assert_eq!(m.error.as_deref(), Some("Invalid cron"));
        assert_eq!(m.field_errors.as_deref(), Some(r#"{"cron":"too often"}"#));
        let limited = answer(
            429,
            json!({"error": "Rate limited", "code": "RATE_LIMITED"}),
        );
        assert_eq!(read_mutation(&limited).err().map(|e| e.status), Some(429));
    }

    #[test]
    fn creates_send_the_payload_as_json_and_omit_absent_fields() {
        let body = create(&pb::CreateScheduleRequest {
            endpoint: "GET /p".into(),
            cron: "0 * * * *".into(),
            payload_json: Some(r#"{"a":1}"#.into()),
            ..Default::default()
        });
        assert_eq!(body["operation"], "create");
        assert_eq!(body["payload"]["a"], 1);
        assert!(body.get("timezone").is_none());
    }
}
