//! The scheduler's host API (docs/design/alga-compatibility.md, "Host APIs"):
//! what a guest with `cap:scheduler.manage` may do to its own install's
//! schedules through the worker's `alga:extension/scheduler`, and how an
//! upgrade carries schedules onto the new version's endpoints
//! (docs/design/alga-compatibility.md, "Data model").
//!
//! Every call comes with a verified execution grant, which names the tenant
//! and install; a schedule id of another install answers as absent. Input
//! rules and messages are Alga's ([`validate`], [`cron`]). Mutations that
//! fail validation are answered in the result record ([`Rejection`]); a
//! denied grant, an inactive install, the mutation rate limit and store
//! failures are errors ([`AnnexError`]) that the worker maps to
//! `denied`, `not-found`, `quota-exceeded` and `internal`.
//!
//! [`Scheduler`] owns the scheduler's limits and the per-install mutation
//! rate limiter. Running due schedules is [`runner`]'s: the fleet claims them
//! with [`ScheduleStore::claim_due_schedules`](crate::store::ScheduleStore::claim_due_schedules)
//! from the `next_run_at` this module keeps.

mod cron;
pub(crate) mod runner;
mod validate;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use annex_bundle::capability::Capability;
use annex_proto::{AnnexError, ErrorCode};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use uuid::Uuid;

use std::sync::Arc;

use crate::grant::VerifiedGrant;
use crate::installs::Installs;
use crate::store::{
    EndpointRow, InstallView, ScheduleFields, ScheduleRemap, ScheduleRow, Store, StoreError,
    VersionRow,
};

const CAPABILITY: Capability = Capability::SchedulerManage;
const NOT_FOUND: &str = "Schedule not found";
const NAME_TAKEN: &str = "Schedule name already in use for this extension";

/// Alga's hard-coded limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerLimits {
    /// Schedules one install may have.
    pub max_per_install: u64,
    /// Creates, updates and deletes one install may make per `window`
    /// (counted per control-plane process, as Alga counts per server).
    pub mutations_per_window: u32,
    pub window: Duration,
    /// How often this replica looks for due schedules.
    pub tick: Duration,
    /// How long a claimed run is this replica's: longer than any run takes
    /// (the execution timeout is 30 s), so no other replica starts it again.
    pub lease: Duration,
    /// For tests only: every enabled schedule runs once per this period
    /// (first one period after it is created or retimed) instead of by its
    /// cron expression, so multi-replica tests need not wait for minutes.
    pub test_period: Option<Duration>,
}

impl Default for SchedulerLimits {
    fn default() -> Self {
        SchedulerLimits {
            max_per_install: 50,
            mutations_per_window: 10,
            window: Duration::from_secs(60),
            tick: Duration::from_secs(1),
            lease: Duration::from_secs(120),
            test_period: None,
        }
    }
}

/// A sliding-window count of each install's recent mutations.
#[derive(Debug, Default)]
struct MutationLimiter {
    hits: Mutex<HashMap<Uuid, VecDeque<Instant>>>,
}

impl MutationLimiter {
    /// Counts a mutation of `install` at `now` if the window has room.
    fn admit(&self, install: Uuid, limits: &SchedulerLimits, now: Instant) -> bool {
        let mut hits = self.hits.lock();
        let expired = |t: &Instant| now.saturating_duration_since(*t) >= limits.window;
        // Keep the map to installs with recent mutations.
        if hits.len() > 1024 {
            hits.retain(|_, q| q.back().is_some_and(|t| !expired(t)));
        }
        let recent = hits.entry(install).or_default();
        while recent.front().is_some_and(expired) {
            recent.pop_front();
        }
        if recent.len() >= limits.mutations_per_window as usize {
            return false;
        }
        recent.push_back(now);
        true
    }
}

/// A create as the guest asked for it (`create-schedule-input`).
#[derive(Debug, Clone, Default)]
pub(crate) struct NewSchedule {
    pub(crate) endpoint: String,
    pub(crate) cron: String,
    pub(crate) timezone: Option<String>,
    pub(crate) enabled: Option<bool>,
    pub(crate) name: Option<String>,
    /// JSON text.
    pub(crate) payload_json: Option<String>,
}

/// An update as the guest asked for it (`update-schedule-input`): `None`
/// keeps a field; an empty endpoint, cron or timezone keeps it too; an empty
/// name clears it; payload `null` clears it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScheduleChanges {
    pub(crate) endpoint: Option<String>,
    pub(crate) cron: Option<String>,
    pub(crate) timezone: Option<String>,
    pub(crate) enabled: Option<bool>,
    pub(crate) name: Option<String>,
    pub(crate) payload_json: Option<String>,
}

/// Why a create, update or delete did not happen: `{success:false, error,
/// fieldErrors?}` in the result record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) error: String,
    /// The input field at fault, if one is: `fieldErrors = {field: error}`.
    pub(crate) field: Option<&'static str>,
}

impl Rejection {
    fn field(field: &'static str, message: &str) -> Rejection {
        Rejection {
            error: message.to_owned(),
            field: Some(field),
        }
    }

    fn general(message: &str) -> Rejection {
        Rejection {
            error: message.to_owned(),
            field: None,
        }
    }
}

/// The outcome of a mutation the caller may retry or correct.
pub(crate) type Mutation<T> = Result<T, Rejection>;

/// An endpoint of the installed version as `get-endpoints` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointInfo {
    pub(crate) id: Uuid,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) handler: String,
    pub(crate) schedulable: bool,
}

/// A stable id for an endpoint of a version (a UUID from a hash of the
/// version, method and path), reported by `get-endpoints` and stored with
/// schedules as `endpoint_id`.
fn endpoint_id(version: Uuid, method: &str, path: &str) -> Uuid {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{version} {method} {path}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The next run of an enabled schedule after `now`.
fn next_run(cron: &cron::Cron, timezone: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.next_after(validate::parse_timezone(timezone)?, now)
}

/// Rejection → the record's `cron`/`timezone`/... field error.
fn on<T>(field: &'static str, result: Result<T, &'static str>) -> Mutation<T> {
    result.map_err(|message| Rejection::field(field, message))
}

/// The scheduler host API of one replica.
pub(crate) struct Scheduler {
    store: Arc<dyn Store>,
    installs: Arc<Installs>,
    limits: SchedulerLimits,
    /// Recent schedule mutations per install, for the rate limit.
    mutations: MutationLimiter,
}

impl Scheduler {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        installs: Arc<Installs>,
        limits: SchedulerLimits,
    ) -> Scheduler {
        Scheduler {
            store,
            installs,
            limits,
            mutations: MutationLimiter::default(),
        }
    }

    /// [`SchedulerLimits::test_period`] as a chrono duration.
    fn test_period(&self) -> Option<chrono::Duration> {
        self.limits
            .test_period
            .and_then(|p| chrono::Duration::from_std(p).ok())
            .filter(|p| *p > chrono::Duration::zero())
    }

    /// The grant's active install, after checking the capability.
    async fn scheduler_install(&self, grant: &VerifiedGrant) -> Result<InstallView, AnnexError> {
        grant.require(CAPABILITY)?;
        self.installs
            .granted_install(grant)
            .await?
            .ok_or_else(|| AnnexError::new(ErrorCode::InstallNotFound, "the install is not active"))
    }

    /// As [`Self::scheduler_install`], and counts a mutation against the rate limit.
    async fn scheduler_mutation(&self, grant: &VerifiedGrant) -> Result<InstallView, AnnexError> {
        let view = self.scheduler_install(grant).await?;
        let limits = &self.limits;
        if !self
            .mutations
            .admit(view.install.id, limits, Instant::now())
        {
            return Err(AnnexError::new(
                ErrorCode::RateLimited,
                format!(
                    "at most {} schedule changes per {} s",
                    limits.mutations_per_window,
                    limits.window.as_secs()
                ),
            ));
        }
        Ok(view)
    }

    /// The install's schedules, oldest first.
    pub(crate) async fn list_schedules(
        &self,
        grant: &VerifiedGrant,
    ) -> Result<Vec<ScheduleRow>, AnnexError> {
        let view = self.scheduler_install(grant).await?;
        let i = &view.install;
        Ok(self.store.list_schedules(&i.tenant_id, i.id).await?)
    }

    /// One of the install's schedules; `None` for a malformed id or another
    /// install's schedule.
    pub(crate) async fn get_schedule(
        &self,
        grant: &VerifiedGrant,
        schedule_id: &str,
    ) -> Result<Option<ScheduleRow>, AnnexError> {
        let view = self.scheduler_install(grant).await?;
        let Ok(id) = validate::schedule_id(schedule_id) else {
            return Ok(None);
        };
        let i = &view.install;
        Ok(self.store.get_schedule(&i.tenant_id, i.id, id).await?)
    }

    /// The declared endpoints of the installed version, by path.
    pub(crate) async fn endpoints(
        &self,
        grant: &VerifiedGrant,
    ) -> Result<Vec<EndpointInfo>, AnnexError> {
        let view = self.scheduler_install(grant).await?;
        let mut endpoints: Vec<EndpointInfo> = view
            .version
            .endpoints
            .iter()
            .map(|e| EndpointInfo {
                id: endpoint_id(view.version.id, &e.method, &e.path),
                method: e.method.to_ascii_uppercase(),
                path: e.path.clone(),
                handler: e.handler.clone(),
                schedulable: validate::schedulable(&e.method, &e.path),
            })
            .collect();
        // Alga orders by path; the sort is stable, so declaration order breaks ties.
        endpoints.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(endpoints)
    }

    pub(crate) async fn create_schedule(
        &self,
        grant: &VerifiedGrant,
        input: NewSchedule,
    ) -> Result<Mutation<Uuid>, AnnexError> {
        let view = self.scheduler_mutation(grant).await?;
        let mut fields = match new_fields(&view.version, input) {
            Ok(f) => f,
            Err(rejection) => return Ok(Err(rejection)),
        };
        if let Some(period) = self.test_period() {
            fields.next_run_at = fields.next_run_at.map(|_| Utc::now() + period);
        }
        let i = &view.install;
        let created = self
            .store
            .create_schedule(&i.tenant_id, i.id, fields, self.limits.max_per_install)
            .await;
        Ok(match created {
            Ok(row) => {
                tracing::info!(tenant = %i.tenant_id, install = %i.id, schedule = %row.id, "schedule created");
                Ok(row.id)
            }
            Err(StoreError::QuotaExceeded(_)) => Err(Rejection::general(&format!(
                "Too many schedules (max {} per extension install)",
                self.limits.max_per_install
            ))),
            Err(StoreError::AlreadyExists(_)) => Err(Rejection::field("name", NAME_TAKEN)),
            Err(e) => return Err(e.into()),
        })
    }

    pub(crate) async fn update_schedule(
        &self,
        grant: &VerifiedGrant,
        schedule_id: &str,
        changes: ScheduleChanges,
    ) -> Result<Mutation<()>, AnnexError> {
        let view = self.scheduler_mutation(grant).await?;
        let i = &view.install;
        let id = match on("scheduleId", validate::schedule_id(schedule_id)) {
            Ok(id) => id,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let Some(current) = self.store.get_schedule(&i.tenant_id, i.id, id).await? else {
            return Ok(Err(Rejection::general(NOT_FOUND)));
        };
        let previous_run = current.fields.next_run_at;
        let mut fields = match changed_fields(&view.version, current.fields, changes) {
            Ok(f) => f,
            Err(rejection) => return Ok(Err(rejection)),
        };
        if let Some(period) = self.test_period()
            && fields.next_run_at.is_some()
            && fields.next_run_at != previous_run
        {
            fields.next_run_at = Some(Utc::now() + period);
        }
        Ok(
            match self
                .store
                .update_schedule(&i.tenant_id, i.id, id, fields)
                .await
            {
                Ok(_) => {
                    tracing::info!(tenant = %i.tenant_id, install = %i.id, schedule = %id, "schedule updated");
                    Ok(())
                }
                Err(StoreError::AlreadyExists(_)) => Err(Rejection::field("name", NAME_TAKEN)),
                Err(StoreError::NotFound(_)) => Err(Rejection::general(NOT_FOUND)),
                Err(e) => return Err(e.into()),
            },
        )
    }

    pub(crate) async fn delete_schedule(
        &self,
        grant: &VerifiedGrant,
        schedule_id: &str,
    ) -> Result<Mutation<()>, AnnexError> {
        let view = self.scheduler_mutation(grant).await?;
        let i = &view.install;
        let id = match validate::schedule_id(schedule_id) {
            Ok(id) => id,
            Err(message) => return Ok(Err(Rejection::general(message))),
        };
        if !self.store.delete_schedule(&i.tenant_id, i.id, id).await? {
            return Ok(Err(Rejection::general(NOT_FOUND)));
        }
        tracing::info!(tenant = %i.tenant_id, install = %i.id, schedule = %id, "schedule deleted");
        Ok(Ok(()))
    }
}

/// How an upgrade of `view` to `target` changes its schedules: each
/// schedule's `METHOD path` must be an endpoint of `target`; the others
/// refuse the upgrade with `SCHEDULE_REMAP_FAILED` naming them, or with
/// `disable_missing` are disabled with `last_error` set. Nothing is
/// written here; the caller applies the plan once the version moved.
pub(crate) async fn plan_remap(
    store: &dyn Store,
    view: &InstallView,
    target: &VersionRow,
    disable_missing: bool,
) -> Result<Vec<ScheduleRemap>, AnnexError> {
    let i = &view.install;
    let schedules = store.list_schedules(&i.tenant_id, i.id).await?;
    let (remaps, missing) = remap(&schedules, target);
    if !missing.is_empty() && !disable_missing {
        let list: Vec<String> = missing
            .iter()
            .map(|s| {
                format!(
                    "{} ({} {})",
                    s.id, s.fields.endpoint_method, s.fields.endpoint_path
                )
            })
            .collect();
        return Err(AnnexError::new(
            ErrorCode::ScheduleRemapFailed,
            format!(
                "version {} has no endpoint for {} schedule(s): {}; upgrade with disable_missing_schedules to disable them",
                target.version,
                missing.len(),
                list.join(", ")
            ),
        ));
    }
    Ok(remaps)
}

/// The remap of `schedules` onto `target`, and the schedules whose endpoint
/// `target` lacks.
fn remap<'a>(
    schedules: &'a [ScheduleRow],
    target: &VersionRow,
) -> (Vec<ScheduleRemap>, Vec<&'a ScheduleRow>) {
    let mut remaps = Vec::new();
    let mut missing = Vec::new();
    for s in schedules {
        let key = validate::endpoint_key(&s.fields.endpoint_method, &s.fields.endpoint_path);
        let found = target
            .endpoints
            .iter()
            .find(|e| validate::endpoint_key(&e.method, &e.path) == key);
        match found {
            Some(e) => remaps.push(ScheduleRemap::Endpoint {
                id: s.id,
                endpoint_id: endpoint_id(target.id, &e.method, &e.path),
            }),
            None => {
                missing.push(s);
                remaps.push(ScheduleRemap::Disable {
                    id: s.id,
                    last_error: format!(
                        "Endpoint {} {} no longer exists in version {}",
                        s.fields.endpoint_method, s.fields.endpoint_path, target.version
                    ),
                });
            }
        }
    }
    (remaps, missing)
}

/// The endpoint an input names, as stored fields.
fn resolve_endpoint(version: &VersionRow, selector: &str) -> Mutation<(Uuid, String, String)> {
    let e: &EndpointRow = validate::endpoint(selector, &version.endpoints)
        .ok_or_else(|| Rejection::field("endpoint", validate::ENDPOINT_NOT_SCHEDULABLE))?;
    Ok((
        endpoint_id(version.id, &e.method, &e.path),
        e.method.to_ascii_uppercase(),
        e.path.clone(),
    ))
}

/// Validates a create in Alga's order: cron, timezone, payload, name, endpoint.
fn new_fields(version: &VersionRow, input: NewSchedule) -> Mutation<ScheduleFields> {
    let (cron_text, cron) = on("cron", cron::validate(&input.cron))?;
    let timezone = on("timezone", validate::timezone(input.timezone.as_deref()))?;
    let payload = on("payload", validate::payload(input.payload_json.as_deref()))?;
    let name = on("name", validate::name(input.name.as_deref()))?;
    let (endpoint_id, endpoint_method, endpoint_path) = resolve_endpoint(version, &input.endpoint)?;
    let enabled = input.enabled.unwrap_or(true);
    Ok(ScheduleFields {
        endpoint_id,
        endpoint_method,
        endpoint_path,
        name,
        next_run_at: if enabled {
            next_run(&cron, &timezone, Utc::now())
        } else {
            None
        },
        cron: cron_text,
        timezone,
        enabled,
        payload,
    })
}

/// Applies an update to `current`. The next run is recomputed when the
/// timing changed (cron, zone, enabled) or an enabled schedule has none.
fn changed_fields(
    version: &VersionRow,
    current: ScheduleFields,
    changes: ScheduleChanges,
) -> Mutation<ScheduleFields> {
    let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let cron = match non_empty(changes.cron) {
        Some(raw) => Some(on("cron", cron::validate(&raw))?.0),
        None => None,
    };
    let timezone = match non_empty(changes.timezone) {
        Some(raw) => Some(on("timezone", validate::timezone(Some(&raw)))?),
        None => None,
    };
    let payload = match changes.payload_json {
        Some(raw) => Some(on("payload", validate::payload(Some(&raw)))?),
        None => None,
    };
    let name = match changes.name {
        Some(raw) => Some(on("name", validate::name(Some(&raw)))?),
        None => None,
    };
    let endpoint = match non_empty(changes.endpoint) {
        Some(selector) => Some(resolve_endpoint(version, &selector)?),
        None => None,
    };

    let retimed = cron.as_ref().is_some_and(|c| *c != current.cron)
        || timezone.as_ref().is_some_and(|t| *t != current.timezone)
        || changes.enabled.is_some_and(|e| e != current.enabled);
    let mut next = ScheduleFields {
        cron: cron.unwrap_or(current.cron),
        timezone: timezone.unwrap_or(current.timezone),
        enabled: changes.enabled.unwrap_or(current.enabled),
        payload: payload.unwrap_or(current.payload),
        name: name.unwrap_or(current.name),
        ..current
    };
    if let Some((id, method, path)) = endpoint {
        (next.endpoint_id, next.endpoint_method, next.endpoint_path) = (id, method, path);
    }
    if !next.enabled {
        next.next_run_at = None;
    } else if retimed || next.next_run_at.is_none() {
        next.next_run_at =
            cron::Cron::parse(&next.cron).and_then(|c| next_run(&c, &next.timezone, Utc::now()));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_is_a_sliding_window_per_install() {
        let limits = SchedulerLimits {
            mutations_per_window: 3,
            ..SchedulerLimits::default()
        };
        let limiter = MutationLimiter::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let t0 = Instant::now();
        let check = |install: Uuid, after: Duration, expected: bool| {
            assert_eq!(
                limiter.admit(install, &limits, t0 + after),
                expected,
                "{after:?}"
            );
        };
        check(a, Duration::ZERO, true);
        check(a, Duration::from_secs(10), true);
        check(a, Duration::from_secs(20), true);
        check(a, Duration::from_secs(30), false);
        check(b, Duration::from_secs(30), true);
        // The first mutation leaves the window at 60 s.
        check(a, Duration::from_secs(60), true);
        check(a, Duration::from_secs(61), false);
    }
}
