//! Schedule rows (`tenant_extension_schedule`, spec §7 and §11.2): an
//! install's cron schedules of its own endpoints. The store enforces what
//! must hold under concurrency (the per-install quota, unique names); the
//! `scheduler` module validates everything else before calling it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

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
