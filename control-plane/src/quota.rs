//! Fleet-wide execution quotas and usage accounting.
//!
//! Operators set a quota per tenant, or per install (`max_concurrency` and
//! `requests_per_second`, 0 = unlimited). Every process that admits
//! executions enforces its *share*: `ceil(limit / participants)`, at least 1
//! for a non-zero limit, where the participants are the edges following
//! `Dispatch.WatchRoutes` on any replica plus every control-plane replica
//! (each dispatches for internal clients and the scheduler). Replicas share
//! only Postgres, so each records its watching edges and itself in
//! `route_watchers` about every second; a row unseen for [`WATCHER_TTL`] no
//! longer counts. Shares travel in the routing snapshot, whose version
//! covers them, so a change reaches every edge within one snapshot tick.
//!
//! Usage: workers report per (tenant, extension, minute) figures in their
//! heartbeats; [`Quotas::record_usage`] adds them into
//! `extension_quota_usage`. A heartbeat's figures were drained from the
//! worker's ledger when it was sent, so each is added once (a heartbeat lost
//! with its stream is not re-sent: usage errs low, never double).
//!
//! [`Quotas`] owns the quota rows, this replica's participant record and the
//! usage windows; [`DispatchQuotas`] is the gate of the executions this
//! replica dispatches itself. Neither runs executions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annex_ops::quota::{QuotaGate, QuotaPermit, QuotaShare};
use annex_proto::domain::TenantId;
use annex_proto::pb;
use annex_proto::{AnnexError, ErrorCode};
use chrono::{DateTime, TimeZone as _, Utc};
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::installs::Installs;
use crate::store::{ExtensionSelector, QuotaLimits, QuotaRow, Store, UsageRow};

/// A watcher (edge or replica) unseen this long no longer counts.
const WATCHER_TTL: Duration = Duration::from_secs(3);
/// How often a watcher's row is refreshed.
pub(crate) const WATCHER_REFRESH: Duration = Duration::from_secs(1);
/// How stale the replica's own shares may get before a dispatch re-reads them.
const GATE_REFRESH: Duration = Duration::from_millis(500);
/// Largest limit accepted: far above any real fleet, and it fits `integer`.
const MAX_LIMIT: u32 = 1_000_000;

/// Fleet-wide quotas, their shares and the usage windows.
pub(crate) struct Quotas {
    store: Arc<dyn Store>,
    installs: Arc<Installs>,
    /// Names this replica in `route_watchers` (a new UUID per process).
    replica_id: String,
}

/// This replica's own enforcement for `Dispatch.Execute` and schedules.
#[derive(Debug, Default)]
pub(crate) struct DispatchQuotas {
    gate: QuotaGate,
    refreshed: Mutex<Option<Instant>>,
}

/// `ceil(limit / participants)`, at least 1 for a non-zero limit; 0 stays unlimited.
fn share(limit: u32, participants: u32) -> u32 {
    if limit == 0 {
        return 0;
    }
    limit.div_ceil(participants.max(1)).max(1)
}

/// Feeds the quotas into a snapshot's version hash, so the version changes
/// whenever a share does.
pub(crate) fn hash_quotas(hasher: &mut Sha256, quotas: &[pb::TenantQuota]) {
    for q in quotas {
        hasher.update(b"quota\0");
        hasher.update(q.tenant_id.as_bytes());
        hasher.update([0]);
        hasher.update(q.install_id.as_bytes());
        hasher.update([0]);
        hasher.update(q.max_concurrency.to_be_bytes());
        hasher.update(q.requests_per_second.to_be_bytes());
    }
}

fn validate(limits: QuotaLimits) -> Result<QuotaLimits, AnnexError> {
    for (name, value) in [
        ("max_concurrency", limits.max_concurrency),
        ("requests_per_second", limits.requests_per_second),
    ] {
        if value > MAX_LIMIT {
            return Err(AnnexError::invalid(format!(
                "{name} must be at most {MAX_LIMIT} (0 = unlimited), got {value}"
            )));
        }
    }
    if limits == QuotaLimits::default() {
        return Err(AnnexError::invalid(
            "set max_concurrency or requests_per_second (or both) above 0; to lift a quota, delete it",
        ));
    }
    Ok(limits)
}

fn quota_not_found(tenant: &TenantId, extension: &str) -> AnnexError {
    let what = if extension.trim().is_empty() {
        format!("tenant {tenant} has no tenant-wide quota")
    } else {
        format!("tenant {tenant} has no quota for {extension}")
    };
    AnnexError::new(ErrorCode::NotFound, what)
}

/// Unix ms as a time, for usage windows and filters.
fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

impl Quotas {
    pub(crate) fn new(store: Arc<dyn Store>, installs: Arc<Installs>) -> Quotas {
        Quotas {
            store,
            installs,
            replica_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// The install a quota names: `None` for an empty `extension` (the
    /// tenant's quota), else the tenant's install (enabled or not).
    async fn quota_install(
        &self,
        tenant: &TenantId,
        extension: &str,
    ) -> Result<Option<Uuid>, AnnexError> {
        if extension.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(
            self.installs.view(tenant, extension).await?.install.id,
        ))
    }

    /// Sets the tenant's quota, or an install's (`extension` non-empty).
    pub(crate) async fn set_quota(
        &self,
        tenant: &TenantId,
        extension: &str,
        limits: QuotaLimits,
    ) -> Result<QuotaRow, AnnexError> {
        let limits = validate(limits)?;
        let install = self.quota_install(tenant, extension).await?;
        let row = self
            .store
            .set_quota(tenant.as_str(), install, limits)
            .await?;
        tracing::info!(
            tenant = %tenant,
            install = ?install,
            max_concurrency = limits.max_concurrency,
            requests_per_second = limits.requests_per_second,
            "quota set"
        );
        Ok(row)
    }

    pub(crate) async fn list_quotas(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<QuotaRow>, AnnexError> {
        Ok(self.store.list_quotas(tenant.map(TenantId::as_str)).await?)
    }

    /// NotFound when no such quota is set.
    pub(crate) async fn delete_quota(
        &self,
        tenant: &TenantId,
        extension: &str,
    ) -> Result<(), AnnexError> {
        let install = self.quota_install(tenant, extension).await?;
        if !self.store.delete_quota(tenant.as_str(), install).await? {
            return Err(quota_not_found(tenant, extension));
        }
        tracing::info!(tenant = %tenant, install = ?install, "quota removed");
        Ok(())
    }

    /// Every quota with one participant's share of it (see the module docs).
    pub(crate) async fn shares(&self) -> Result<Vec<pb::TenantQuota>, AnnexError> {
        let quotas = self.store.list_quotas(None).await?;
        if quotas.is_empty() {
            return Ok(Vec::new());
        }
        let since = Utc::now() - chrono::Duration::from_std(WATCHER_TTL).unwrap_or_default();
        let participants = self.store.count_route_watchers(since).await?.max(1);
        Ok(quotas
            .into_iter()
            .map(|q| pb::TenantQuota {
                tenant_id: q.tenant_id,
                install_id: q.install_id.map(|i| i.to_string()).unwrap_or_default(),
                max_concurrency: share(q.limits.max_concurrency, participants),
                requests_per_second: share(q.limits.requests_per_second, participants),
            })
            .collect())
    }

    /// Records that a watcher (an edge's routes stream, or this replica) is live.
    pub(crate) async fn watcher_seen(&self, watcher: &str) -> Result<(), AnnexError> {
        self.store
            .touch_route_watcher(watcher, &self.replica_id, Utc::now())
            .await?;
        Ok(())
    }

    /// Forgets a watcher whose stream ended here.
    pub(crate) async fn watcher_gone(&self, watcher: &str) {
        if let Err(e) = self
            .store
            .remove_route_watcher(watcher, &self.replica_id)
            .await
        {
            tracing::debug!(watcher, error = %e, "removing a route watcher");
        }
    }

    /// Keeps this replica counted as a quota participant until `stop` turns
    /// true, then removes it.
    pub(crate) async fn upkeep(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        if *stop.borrow() {
            return;
        }
        let me = format!("control-plane/{}", self.replica_id);
        let mut tick = tokio::time::interval(WATCHER_REFRESH);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.watcher_seen(&me).await {
                        tracing::warn!(error = %e, "recording this replica as a quota participant");
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        self.watcher_gone(&me).await;
    }

    /// Adds a heartbeat's usage into the windows. Entries that name no
    /// tenant, a registry id that is not a UUID or an impossible window are
    /// dropped with a warning.
    pub(crate) async fn record_usage(
        &self,
        worker: &str,
        usage: Vec<pb::ExecutionUsage>,
    ) -> Result<(), AnnexError> {
        let rows: Vec<UsageRow> = usage
            .into_iter()
            .filter_map(|u| {
                let registry = Uuid::parse_str(&u.registry_id).ok();
                let window = from_ms(u.window_start_ms - u.window_start_ms.rem_euclid(60_000));
                match (registry, window) {
                    (Some(registry_id), Some(window_start)) if !u.tenant_id.is_empty() => {
                        Some(UsageRow {
                            tenant_id: u.tenant_id,
                            registry_id,
                            window_start,
                            invocations: u.invocations,
                            cpu_us: u.cpu_us,
                            memory_byte_ms: u.memory_byte_ms,
                            egress_bytes: u.egress_bytes,
                            fuel: u.fuel,
                        })
                    }
                    _ => {
                        tracing::warn!(worker, tenant = %u.tenant_id, registry = %u.registry_id, "dropping a malformed usage entry");
                        None
                    }
                }
            })
            .collect();
        self.store.add_usage(rows).await?;
        Ok(())
    }

    /// The tenant's usage windows, of one extension (registry id, install id
    /// or slug) or all.
    pub(crate) async fn usage(
        &self,
        tenant: &TenantId,
        extension: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<UsageRow>, AnnexError> {
        let registry = if extension.trim().is_empty() {
            None
        } else {
            let sel = ExtensionSelector::parse(extension)
                .ok_or_else(|| AnnexError::invalid("extension must be an id or a slug"))?;
            let installed = self.store.find_install(tenant.as_str(), &sel).await?;
            match (installed, sel) {
                (Some(view), _) => Some(view.install.registry_id),
                // Usage outlives installs: a bare registry id is fine.
                (None, ExtensionSelector::Id(id)) => Some(id),
                (None, sel @ ExtensionSelector::Slug(_)) => Some(
                    self.store
                        .get_extension(&sel)
                        .await?
                        .ok_or_else(|| {
                            AnnexError::new(
                                ErrorCode::ExtensionNotFound,
                                format!("no extension {extension}"),
                            )
                        })?
                        .id,
                ),
            }
        };
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            return Err(AnnexError::invalid("since must be before until"));
        }
        Ok(self
            .store
            .list_usage(tenant.as_str(), registry, since, until)
            .await?)
    }
}

impl DispatchQuotas {
    /// Admits one execution dispatched by this replica under its share of
    /// the tenant's and the install's quotas (re-read from `quotas` when
    /// older than [`GATE_REFRESH`]).
    pub(crate) async fn permit(
        &self,
        quotas: &Quotas,
        tenant: &str,
        install_id: &str,
    ) -> Result<QuotaPermit, AnnexError> {
        let stale = self
            .refreshed
            .lock()
            .is_none_or(|at| at.elapsed() >= GATE_REFRESH);
        if stale {
            match quotas.shares().await {
                Ok(shares) => {
                    self.gate.apply(shares.into_iter().map(|q| QuotaShare {
                        tenant_id: q.tenant_id,
                        install_id: (!q.install_id.is_empty()).then_some(q.install_id),
                        max_concurrency: q.max_concurrency,
                        requests_per_second: q.requests_per_second,
                    }));
                    *self.refreshed.lock() = Some(Instant::now());
                }
                // Keep enforcing the last shares known.
                Err(e) => tracing::warn!(error = %e, "reading quota shares"),
            }
        }
        self.gate.acquire(tenant, install_id).map_err(|refusal| {
            AnnexError::new(
                ErrorCode::RateLimited,
                format!(
                    "tenant {tenant} is over its execution quota; retry after {} s",
                    refusal.retry_after
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_up_and_never_reach_zero() {
        assert_eq!(share(0, 3), 0, "unlimited stays unlimited");
        assert_eq!(share(10, 1), 10);
        assert_eq!(share(10, 3), 4);
        assert_eq!(share(2, 3), 1);
        assert_eq!(share(1, 50), 1);
        assert_eq!(share(7, 0), 7, "no participant counted: this one");
    }

    #[test]
    fn limits_are_validated() {
        assert!(validate(QuotaLimits::default()).is_err());
        let over = validate(QuotaLimits {
            max_concurrency: MAX_LIMIT + 1,
            requests_per_second: 0,
        })
        .expect_err("too large");
        assert!(over.message.contains("max_concurrency"), "{}", over.message);
        assert!(
            validate(QuotaLimits {
                max_concurrency: 0,
                requests_per_second: 5
            })
            .is_ok()
        );
    }
}
