//! `alga:extension/scheduler` through `HostServices`
//! (docs/design/alga-compatibility.md, "Host APIs"). Without
//! `cap:scheduler.manage` or an install id: `denied` (or, for the
//! record-returning functions, `{success:false, error:"Denied"}`).
//!
//! Result-returning functions map statuses as Alga's runner does: 401/403 →
//! `denied`, 404 → `not-found`, 400 → `validation-failed`, 429 →
//! `quota-exceeded`, else `internal`. Record-returning functions report a
//! failed call as `{success:false, error:"<Variant>"}` (Alga's Debug names);
//! a result record the control plane returns is passed through.

use annex_proto::pb;

use crate::backend::HostError;
use crate::bindings::alga::extension::scheduler;
use crate::bindings::types::{
    CreateScheduleInput, CreateScheduleResult, DeleteScheduleResult, EndpointInfo, ScheduleInfo,
    SchedulerError, UpdateScheduleInput, UpdateScheduleResult,
};
use crate::capabilities::Capability;
use crate::host::HostState;

const PAYLOAD_ERROR: &str = "Payload must be valid JSON object or array";

fn map_error(error: &HostError) -> SchedulerError {
    match error.status {
        401 | 403 => SchedulerError::Denied,
        404 => SchedulerError::NotFound,
        400 => SchedulerError::ValidationFailed,
        429 => SchedulerError::QuotaExceeded,
        _ => SchedulerError::Internal,
    }
}

/// Alga's runner reports failed mutations with the Rust Debug name.
fn debug_name(error: SchedulerError) -> String {
    match error {
        SchedulerError::NotFound => "NotFound",
        SchedulerError::ValidationFailed => "ValidationFailed",
        SchedulerError::QuotaExceeded => "QuotaExceeded",
        SchedulerError::Denied => "Denied",
        SchedulerError::Internal => "Internal",
    }
    .to_string()
}

/// `Err(field-errors JSON)` when the payload is not JSON (Alga checks it
/// before calling the server).
fn check_payload(payload: &Option<String>) -> Result<(), String> {
    match payload {
        Some(p) if serde_json::from_str::<serde_json::Value>(p).is_err() => {
            Err(serde_json::json!({ "payload": PAYLOAD_ERROR }).to_string())
        }
        _ => Ok(()),
    }
}

fn info(s: pb::ScheduleInfo) -> ScheduleInfo {
    ScheduleInfo {
        id: s.id,
        endpoint_path: s.endpoint_path,
        endpoint_method: s.endpoint_method,
        name: s.name,
        cron: s.cron,
        timezone: s.timezone,
        enabled: s.enabled,
        payload: s.payload_json,
        last_run_at: s.last_run_at,
        last_run_status: s.last_run_status,
        last_error: s.last_error,
        created_at: s.created_at,
    }
}

impl HostState {
    fn scheduler_grant(&self) -> Result<String, SchedulerError> {
        if !self.caps.has(Capability::SchedulerManage) || self.call.install_id().is_none() {
            return Err(SchedulerError::Denied);
        }
        Ok(self.call.grant.clone())
    }
}

impl scheduler::Host for HostState {
    async fn list_schedules(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<ScheduleInfo>, SchedulerError>> {
        let grant = match self.scheduler_grant() {
            Ok(g) => g,
            Err(e) => return Ok(Err(e)),
        };
        let result = self.services.backend.list_schedules(&grant).await;
        Ok(result
            .map(|l| l.into_iter().map(info).collect())
            .map_err(|e| map_error(&e)))
    }

    async fn get_schedule(
        &mut self,
        schedule_id: String,
    ) -> wasmtime::Result<Result<Option<ScheduleInfo>, SchedulerError>> {
        let grant = match self.scheduler_grant() {
            Ok(g) => g,
            Err(e) => return Ok(Err(e)),
        };
        let result = self
            .services
            .backend
            .get_schedule(&grant, &schedule_id)
            .await;
        Ok(result.map(|s| s.map(info)).map_err(|e| map_error(&e)))
    }

    async fn create_schedule(
        &mut self,
        input: CreateScheduleInput,
    ) -> wasmtime::Result<CreateScheduleResult> {
        let failed = |error: String, field_errors: Option<String>| CreateScheduleResult {
            success: false,
            schedule_id: None,
            error: Some(error),
            field_errors,
        };
        let grant = match self.scheduler_grant() {
            Ok(g) => g,
            Err(e) => return Ok(failed(debug_name(e), None)),
        };
        if let Err(fields) = check_payload(&input.payload) {
            return Ok(failed(PAYLOAD_ERROR.to_string(), Some(fields)));
        }
        let request = pb::CreateScheduleRequest {
            grant,
            endpoint: input.endpoint,
            cron: input.cron,
            timezone: input.timezone,
            enabled: input.enabled,
            name: input.name,
            payload_json: input.payload,
        };
        Ok(match self.services.backend.create_schedule(request).await {
            Ok(r) => CreateScheduleResult {
                success: r.success,
                schedule_id: r.schedule_id,
                error: r.error,
                field_errors: r.field_errors,
            },
            Err(e) => failed(debug_name(map_error(&e)), None),
        })
    }

    async fn update_schedule(
        &mut self,
        schedule_id: String,
        input: UpdateScheduleInput,
    ) -> wasmtime::Result<UpdateScheduleResult> {
        let failed = |error: String, field_errors: Option<String>| UpdateScheduleResult {
            success: false,
            error: Some(error),
            field_errors,
        };
        let grant = match self.scheduler_grant() {
            Ok(g) => g,
            Err(e) => return Ok(failed(debug_name(e), None)),
        };
        if let Err(fields) = check_payload(&input.payload) {
            return Ok(failed(PAYLOAD_ERROR.to_string(), Some(fields)));
        }
        let request = pb::UpdateScheduleRequest {
            grant,
            schedule_id,
            endpoint: input.endpoint,
            cron: input.cron,
            timezone: input.timezone,
            enabled: input.enabled,
            name: input.name,
            payload_json: input.payload,
        };
        Ok(match self.services.backend.update_schedule(request).await {
            Ok(r) => UpdateScheduleResult {
                success: r.success,
                error: r.error,
                field_errors: r.field_errors,
            },
            Err(e) => failed(debug_name(map_error(&e)), None),
        })
    }

    async fn delete_schedule(
        &mut self,
        schedule_id: String,
    ) -> wasmtime::Result<DeleteScheduleResult> {
        let grant = match self.scheduler_grant() {
            Ok(g) => g,
            Err(e) => {
                return Ok(DeleteScheduleResult {
                    success: false,
                    error: Some(debug_name(e)),
                });
            }
        };
        Ok(
            match self
                .services
                .backend
                .delete_schedule(&grant, &schedule_id)
                .await
            {
                Ok(r) => DeleteScheduleResult {
                    success: r.success,
                    error: r.error,
                },
                Err(e) => DeleteScheduleResult {
                    success: false,
                    error: Some(debug_name(map_error(&e))),
                },
            },
        )
    }

    async fn get_endpoints(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<EndpointInfo>, SchedulerError>> {
        let grant = match self.scheduler_grant() {
            Ok(g) => g,
            Err(e) => return Ok(Err(e)),
        };
        let result = self.services.backend.get_endpoints(&grant).await;
        Ok(result
            .map(|l| {
                l.into_iter()
                    .map(|e| EndpointInfo {
                        id: e.id,
                        method: e.method,
                        path: e.path,
                        handler: e.handler,
                        schedulable: e.schedulable,
                    })
                    .collect()
            })
            .map_err(|e| map_error(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_that_is_not_json_is_a_field_error() {
        let fields = check_payload(&Some("{nope".into())).expect_err("not JSON");
        assert_eq!(
            fields,
            r#"{"payload":"Payload must be valid JSON object or array"}"#
        );
        assert!(check_payload(&Some("{\"a\":1}".into())).is_ok());
        assert!(check_payload(&None).is_ok());
    }
}
