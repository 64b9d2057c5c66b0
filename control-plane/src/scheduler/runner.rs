//! Runs due schedules as Alga's scheduled invocations do
//! (docs/design/alga-compatibility.md, "Gateway"). Every replica ticks; each
//! due run is claimed by exactly one of them (`FOR UPDATE SKIP LOCKED` with a
//! lease), so two or more replicas need no leader and one schedule never
//! overlaps itself.
//!
//! A run is a dispatch with trigger `schedule`, no user, a fresh request id
//! that doubles as the idempotency key, the endpoint's method and path, and
//! for non-GET the payload as a JSON body. It fails on a dispatch error, a
//! guest trap or timeout, a status ≥ 400 or a response over 256 KiB.
//!
//! This module holds no state of its own; it sends runs through the
//! [`Dispatcher`] like any internal client.

use std::future::Future;
use std::sync::Arc;

use annex_proto::pb;
use chrono::Utc;
use tokio::sync::Semaphore;

use super::Scheduler;
use super::cron::next_run;
use crate::dispatch::{DispatchRequest, Dispatcher};
use crate::store::{ScheduleRow, ScheduleRun};

/// Runs at most this many schedules at once per replica.
const CONCURRENT_RUNS: usize = 8;
/// Alga's `EXT_RUNNER_MAX_RESPONSE_BYTES`.
const MAX_RESPONSE_BYTES: usize = 262_144;
/// Alga keeps at most this much of a run's error.
const MAX_ERROR_CHARS: usize = 4_000;
/// Alga's `EXT_GATEWAY_TIMEOUT_MS`, sent as the run's limit.
const RUN_TIMEOUT_MS: u32 = 30_000;

/// Claims and runs due schedules until `shutdown` resolves.
pub(crate) async fn run(
    scheduler: Arc<Scheduler>,
    dispatcher: Arc<Dispatcher>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = scheduler.limits;
    let lease = chrono::Duration::from_std(limits.lease).unwrap_or(chrono::Duration::minutes(2));
    let permits = Arc::new(Semaphore::new(CONCURRENT_RUNS));
    let mut tick = tokio::time::interval(limits.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        let free = u32::try_from(permits.available_permits()).unwrap_or(0);
        if free == 0 {
            continue;
        }
        let due = match scheduler
            .store
            .claim_due_schedules(Utc::now(), lease, free)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "claiming due schedules");
                continue;
            }
        };
        for schedule in due {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (scheduler, dispatcher) = (scheduler.clone(), dispatcher.clone());
            tokio::spawn(async move {
                run_one(&scheduler, &dispatcher, schedule).await;
                drop(permit);
            });
        }
    }
}

async fn run_one(scheduler: &Scheduler, dispatcher: &Dispatcher, schedule: ScheduleRow) {
    let started = Utc::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let f = &schedule.fields;
    let body = match (&f.payload, f.endpoint_method.as_str()) {
        (_, "GET") | (None, _) => None,
        (Some(payload), _) => Some(payload.to_string().into_bytes()),
    };
    let result = dispatcher
        .dispatch(DispatchRequest {
            tenant: schedule.tenant_id.clone(),
            extension: schedule.install_id.to_string(),
            http: pb::HttpRequest {
                method: f.endpoint_method.clone(),
                path: f.endpoint_path.clone(),
                query: Default::default(),
                headers: [
                    ("x-alga-tenant".to_string(), schedule.tenant_id.clone()),
                    ("content-type".to_string(), "application/json".to_string()),
                ]
                .into(),
                body,
            },
            user: None,
            request_id: request_id.clone(),
            idempotency_key: request_id.clone(),
            limits: Some(pb::Limits {
                timeout_ms: RUN_TIMEOUT_MS,
                ..Default::default()
            }),
            trigger: "schedule".into(),
            schedule_id: schedule.id.to_string(),
        })
        .await;
    let error = match &result {
        Err(e) => Some(format!("dispatch failed: {}", e.message)),
        Ok(resp) if resp.outcome != pb::Outcome::Ok as i32 => Some(if resp.error.is_empty() {
            "execution failed".to_owned()
        } else {
            resp.error.clone()
        }),
        Ok(resp) if resp.status >= 400 => Some(format!("extension answered {}", resp.status)),
        Ok(resp)
            if resp
                .body
                .as_ref()
                .is_some_and(|b| b.len() > MAX_RESPONSE_BYTES) =>
        {
            Some(format!("response larger than {MAX_RESPONSE_BYTES} bytes"))
        }
        Ok(_) => None,
    };
    let status = if error.is_some() { "error" } else { "success" };
    match &error {
        None => {
            tracing::info!(schedule = %schedule.id, tenant = %schedule.tenant_id, install = %schedule.install_id, request = %request_id, "schedule ran")
        }
        Some(e) => {
            tracing::warn!(schedule = %schedule.id, tenant = %schedule.tenant_id, install = %schedule.install_id, request = %request_id, error = %e, "schedule run failed")
        }
    }
    log_run(
        scheduler,
        &schedule,
        &request_id,
        started,
        &result,
        error.as_deref(),
    )
    .await;
    let next_run_at = match (scheduler.test_period(), f.next_run_at) {
        // Test time: the next multiple of the period after the due time, so
        // late ticks never shift or add runs.
        (Some(period), Some(due)) => {
            let mut next = due + period;
            while next <= Utc::now() {
                next += period;
            }
            Some(next)
        }
        _ => next_run(&f.cron, &f.timezone, Utc::now()),
    };
    let run = ScheduleRun {
        at: started,
        status: status.to_owned(),
        error: error.map(|e| e.chars().take(MAX_ERROR_CHARS).collect()),
        next_run_at,
    };
    if let Err(e) = scheduler.store.record_schedule_run(schedule.id, run).await {
        tracing::warn!(schedule = %schedule.id, error = %e, "recording a schedule run");
    }
}

/// Writes the run to the execution log (`extension_execution_log`), as the
/// edge does for HTTP calls: principal kind `schedule`, no user.
async fn log_run(
    scheduler: &Scheduler,
    schedule: &ScheduleRow,
    request_id: &str,
    started: chrono::DateTime<Utc>,
    result: &Result<pb::ExecuteResponse, annex_proto::AnnexError>,
    error: Option<&str>,
) {
    let Ok(tenant) = annex_proto::domain::TenantId::parse(&schedule.tenant_id) else {
        return;
    };
    // The install as it is now (an upgrade may have moved the version).
    let view = match scheduler
        .installs
        .resolve(&tenant, &schedule.install_id.to_string())
        .await
    {
        Ok(view) => view,
        Err(e) => {
            tracing::warn!(schedule = %schedule.id, error = %e, "no install to log a schedule run under");
            return;
        }
    };
    let finished = Utc::now();
    let f = &schedule.fields;
    let (status, kind) = match result {
        Err(_) => ("error", Some("runner_transport_error")),
        Ok(r) if r.outcome == pb::Outcome::Timeout as i32 => ("timeout", Some("timeout")),
        Ok(r) if r.outcome != pb::Outcome::Ok as i32 => ("error", Some("runner_error")),
        Ok(r) if r.status >= 400 => ("error", Some("extension_error_status")),
        Ok(_) if error.is_some() => ("error", Some("invalid_response")),
        Ok(_) => ("ok", None),
    };
    let mut metrics = serde_json::json!({
        "method": f.endpoint_method,
        "path": f.endpoint_path,
        "endpoint_template": f.endpoint_path,
        "principal_kind": "schedule",
        "schedule_id": schedule.id.to_string(),
        "duration_ms": (finished - started).num_milliseconds(),
    });
    if let Ok(r) = result {
        metrics["http_status"] = serde_json::json!(r.status);
    }
    let row = crate::store::ExecutionRow {
        id: uuid::Uuid::new_v4(),
        tenant_id: schedule.tenant_id.clone(),
        registry_id: view.install.registry_id,
        version_id: view.install.version_id,
        request_id: Some(request_id.to_owned()),
        started_at: started,
        finished_at: Some(finished),
        status: status.to_owned(),
        metrics,
        error: kind.map(str::to_owned),
    };
    if let Err(e) = scheduler.store.record_executions(vec![row]).await {
        tracing::warn!(schedule = %schedule.id, error = %e, "logging a schedule run");
    }
}
