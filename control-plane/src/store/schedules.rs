//! The schedule area: an install's cron schedules of its own endpoints
//! (`tenant_extension_schedule`), as [`ScheduleStore`]; the table is Alga's
//! (docs/design/alga-compatibility.md, "Data model") and the calls serve the
//! scheduler host API (same document, "Host APIs"). The store enforces what
//! must hold under concurrency (the per-install quota, unique names, one
//! claimer per due run); the `scheduler` module validates everything else
//! before calling it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// A `tenant_extension_schedule` row.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub id: Uuid,
    pub tenant_id: String,
    pub install_id: Uuid,
    pub fields: ScheduleFields,
    pub last_run_at: Option<DateTime<Utc>>,
    /// `success` or `error`.
    pub last_run_status: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a create writes and an update replaces, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleFields {
    /// The endpoint's id as `getEndpoints` reports it for the installed version.
    pub endpoint_id: Uuid,
    /// Upper case: `GET` or `POST`.
    pub endpoint_method: String,
    pub endpoint_path: String,
    /// Unique per install when set.
    pub name: Option<String>,
    pub cron: String,
    /// IANA name as the guest wrote it.
    pub timezone: String,
    pub enabled: bool,
    /// A JSON object or array; `None` for null.
    pub payload: Option<serde_json::Value>,
    /// When the schedule fires next; `None` when disabled or never.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// How an upgrade changes one schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleRemap {
    /// The endpoint exists in the target version under this id.
    Endpoint { id: Uuid, endpoint_id: Uuid },
    /// The endpoint is gone: disable the schedule and say why.
    Disable { id: Uuid, last_error: String },
}

/// The outcome of one run, recorded by whoever ran it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRun {
    pub at: DateTime<Utc>,
    /// `success` or `error`.
    pub status: String,
    /// At most 4,000 characters (the caller truncates).
    pub error: Option<String>,
    /// The next occurrence after this run.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// Schedules. Every call but the claim and the run record is scoped to
/// (tenant, install).
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Inserts a schedule. QuotaExceeded when the install has `max_per_install`
    /// already (held under concurrent creates); AlreadyExists when the name is
    /// taken in the install; NotFound when the install is absent.
    async fn create_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        fields: ScheduleFields,
        max_per_install: u64,
    ) -> StoreResult<ScheduleRow>;
    /// Oldest first (created_at, then id).
    async fn list_schedules(
        &self,
        tenant_id: &str,
        install_id: Uuid,
    ) -> StoreResult<Vec<ScheduleRow>>;
    async fn get_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<ScheduleRow>>;
    /// Replaces the schedule's fields. NotFound when the install has no such
    /// schedule; AlreadyExists when the name is taken by another of its schedules.
    async fn update_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
        fields: ScheduleFields,
    ) -> StoreResult<ScheduleRow>;
    /// False when the install has no such schedule.
    async fn delete_schedule(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        id: Uuid,
    ) -> StoreResult<bool>;
    /// Applies an upgrade's remap in one transaction (a disabled schedule
    /// loses its next run); entries for other installs' schedules are ignored.
    async fn remap_schedules(
        &self,
        tenant_id: &str,
        install_id: Uuid,
        remaps: Vec<ScheduleRemap>,
    ) -> StoreResult<()>;
    /// Claims up to `limit` enabled schedules of active installs that are due
    /// (`next_run_at <= now`), earliest first, across all tenants. Each claimed
    /// row's `next_run_at` moves to `now + lease`, so other claimers (other
    /// replicas) skip it, and a claimer that dies before recording the run
    /// leaves it to be claimed again after the lease. The returned rows carry
    /// the due time they were claimed at.
    async fn claim_due_schedules(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleRow>>;
    /// Records a run's outcome and the next occurrence (kept `None` when the
    /// schedule was disabled meanwhile); false when the schedule is gone.
    async fn record_schedule_run(&self, id: Uuid, run: ScheduleRun) -> StoreResult<bool>;
}
