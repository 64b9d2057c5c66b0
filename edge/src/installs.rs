//! Install resolution: tenant + (install id | registry id | slug) → the
//! active install with everything an execution needs, through
//! `Installs.Resolve` and a cache. Entries live for a TTL, never past the
//! execution grant's expiry, and are dropped as soon as the control plane's
//! watch stream reports an `InstallInvalidation` for them, so a disabled
//! install stops answering within the stream's latency rather than the TTL.
//!
//! While the control plane is unreachable, an expired entry is served as
//! long as its execution grant is valid (static stability).
//!
//! A resolve that races an invalidation is not cached (generation check), so
//! a stale answer cannot outlive the event that should have removed it.
//!
//! Memory is bounded by bytes, least recently used first, with answers and
//! "not installed" refusals in separate bounds: a flood of names that
//! resolve to nothing can only push out other refusals, never a working
//! install. Lookups on behalf of unverified callers (an `/ext-ui` tenant)
//! also spend the client's lookup budget ([`crate::clients`]) on a miss.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use annex_ops::upstream::Upstream;
use annex_proto::pb;
use annex_proto::pb::installs_client::InstallsClient;
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;

use crate::byte_lru::ByteLru;
use crate::clients::{ClientKey, Clients};
use crate::endpoints::Endpoint;
use crate::rollout::{BUCKETS, Split};

/// Refresh an execution grant this long before it expires.
const GRANT_MARGIN: Duration = Duration::from_secs(10);
/// "Not installed" answers are remembered this long at most.
const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// Refusals may hold this fraction (1/n) of the cache's bytes, on top.
const NEGATIVE_SHARE: usize = 8;

/// An active install, as the edge uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Install {
    pub tenant: String,
    pub install_id: String,
    pub registry_id: String,
    pub version_id: String,
    pub content_hash: String,
    pub providers: Vec<String>,
    pub config: HashMap<String, String>,
    pub secrets_version: String,
    pub egress_allowlist: Vec<String>,
    pub endpoints: Vec<Endpoint>,
    pub client_portal_label: Option<String>,
    pub execution_grant: String,
    /// Every version and its weight while the install has an active rollout.
    pub rollout: Option<Split>,
    /// The install's capture policy, passed to the worker with each call.
    pub capture: Option<Capture>,
}

/// An install's capture policy as the edge passes it on
/// (docs/design/replay.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Capture {
    pub sample_ppm: u32,
    pub failures: bool,
    pub max_bytes: u64,
    pub config_version: String,
}

impl Capture {
    pub(crate) fn to_pb(&self) -> pb::CaptureSettings {
        pb::CaptureSettings {
            sample_ppm: self.sample_ppm,
            failures: self.failures,
            max_bytes: self.max_bytes,
            config_version: self.config_version.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ResolveError {
    /// No active install: 404 `extension_not_available`.
    #[error("no active install")]
    NotFound,
    /// The control plane could not answer: 503.
    #[error("the control plane is unavailable")]
    Unavailable,
    /// The control plane answered something unusable: 502.
    #[error("the control plane's answer is incomplete: {0}")]
    Incomplete(&'static str),
    /// The client's lookup budget is spent: 429, `Retry-After` in seconds.
    #[error("too many lookups from this client")]
    Limited(u64),
}

impl TryFrom<pb::ResolvedInstall> for Install {
    type Error = ResolveError;

    fn try_from(r: pb::ResolvedInstall) -> Result<Install, ResolveError> {
        let info = r.install.ok_or(ResolveError::Incomplete("install"))?;
        if info.install_id.is_empty() {
            return Err(ResolveError::Incomplete("install id"));
        }
        if info.content_hash.is_empty() {
            return Err(ResolveError::Incomplete("content hash"));
        }
        if !(info.enabled && info.status == "enabled") {
            return Err(ResolveError::NotFound);
        }
        let mut install = Install {
            tenant: info.tenant_id,
            install_id: info.install_id,
            registry_id: info.registry_id,
            version_id: info.version_id,
            content_hash: info.content_hash,
            providers: info.granted_caps,
            config: r.config.into_iter().collect(),
            secrets_version: info.secrets_version,
            egress_allowlist: info.egress_allowlist,
            endpoints: endpoints(r.endpoints),
            client_portal_label: r
                .ui
                .and_then(|u| u.hooks)
                .and_then(|h| h.client_portal_menu_label)
                .filter(|l| !l.trim().is_empty()),
            execution_grant: r.execution_grant,
            rollout: None,
            capture: r.capture.map(|c| Capture {
                sample_ppm: c.sample_ppm,
                failures: c.failures,
                max_bytes: c.max_bytes,
                config_version: c.config_version,
            }),
        };
        if let Some(route) = r.rollout {
            install.rollout = Some(split(&install, route)?);
        }
        Ok(install)
    }
}

fn endpoints(list: Vec<pb::Endpoint>) -> Vec<Endpoint> {
    list.into_iter()
        .map(|e| Endpoint {
            method: e.method,
            path: e.path,
        })
        .collect()
}

/// The arms of a rollout route, each the install as its version runs it
/// (config, secrets and egress are the install's).
fn split(base: &Install, route: pb::RolloutRoute) -> Result<Split, ResolveError> {
    const INCOMPLETE: ResolveError = ResolveError::Incomplete("rollout");
    // At most four versions; weights in buckets that add up to all of them.
    if route.arms.is_empty() || route.arms.len() > 4 || route.rollout_id.is_empty() {
        return Err(INCOMPLETE);
    }
    let total: u64 = route.arms.iter().map(|a| u64::from(a.weight)).sum();
    if total != u64::from(BUCKETS) {
        return Err(INCOMPLETE);
    }
    let mut arms = Vec::with_capacity(route.arms.len());
    for arm in route.arms {
        let info = arm.install.ok_or(INCOMPLETE)?;
        if info.install_id != base.install_id
            || info.content_hash.is_empty()
            || arm.execution_grant.is_empty()
        {
            return Err(INCOMPLETE);
        }
        let version = Install {
            version_id: info.version_id,
            content_hash: info.content_hash,
            providers: info.granted_caps,
            endpoints: endpoints(arm.endpoints),
            execution_grant: arm.execution_grant,
            rollout: None,
            ..base.clone()
        };
        arms.push((arm.weight, Arc::new(version)));
    }
    Ok(Split {
        rollout_id: route.rollout_id,
        arms,
    })
}

impl Install {
    /// The version `key`'s calls go to: the install itself, or during a
    /// rollout the arm `key` hashes into, with the arm's name.
    pub(crate) fn pick(self: &Arc<Self>, key: &str) -> (Arc<Install>, Option<crate::rollout::Arm>) {
        match self
            .rollout
            .as_ref()
            .and_then(|s| s.pick(&self.install_id, key))
        {
            Some((arm, name)) => (arm, Some(name)),
            None => (self.clone(), None),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests(install_id: &str) -> Install {
        Install {
            tenant: "t".into(),
            install_id: install_id.into(),
            registry_id: String::new(),
            version_id: String::new(),
            content_hash: String::new(),
            providers: vec![],
            config: HashMap::new(),
            secrets_version: String::new(),
            egress_allowlist: vec![],
            endpoints: vec![],
            client_portal_label: None,
            execution_grant: String::new(),
            rollout: None,
            capture: None,
        }
    }

    /// What the install holds on the heap, roughly, for the cache's bound.
    fn weight(&self) -> usize {
        let strings = [
            &self.tenant,
            &self.install_id,
            &self.registry_id,
            &self.version_id,
            &self.content_hash,
            &self.secrets_version,
            &self.execution_grant,
        ];
        let lists = self.providers.iter().chain(&self.egress_allowlist);
        let config = self.config.iter().map(|(k, v)| k.len() + v.len() + 64);
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| e.method.len() + e.path.len() + 48);
        let arms = self.rollout.as_ref().map_or(0, |s| {
            s.rollout_id.len() + s.arms.iter().map(|(_, a)| a.weight()).sum::<usize>()
        });
        arms + std::mem::size_of::<Install>()
            + strings.iter().map(|s| s.len()).sum::<usize>()
            + lists.map(|s| s.len() + 24).sum::<usize>()
            + config.sum::<usize>()
            + endpoints.sum::<usize>()
            + self.client_portal_label.as_ref().map_or(0, String::len)
    }
}

/// (tenant, extension as the caller named it, lower-cased).
type Key = (String, String);
/// A lock per key being resolved.
type Turns = HashMap<Key, Arc<tokio::sync::Mutex<()>>>;

fn key_weight(key: &Key) -> usize {
    std::mem::size_of::<Key>() + key.0.len() + key.1.len()
}

struct Entry {
    value: Arc<Install>,
    expires: Instant,
    /// Until when the entry may be served stale while the control plane is
    /// unreachable: its execution grant's expiry, less a margin.
    grant_expires: Instant,
}

/// Answers and refusals, each bounded by bytes.
struct Entries {
    found: ByteLru<Key, Entry>,
    /// "Not installed", until the instant stored.
    missing: ByteLru<Key, Instant>,
}

#[derive(Clone)]
pub(crate) struct InstallCache {
    client: InstallsClient<Upstream>,
    ttl: Duration,
    entries: Arc<Mutex<Entries>>,
    generation: Arc<AtomicU64>,
    /// One resolve per key at a time: a burst after an invalidation makes
    /// one control-plane call, not one per request.
    inflight: Arc<Mutex<Turns>>,
    /// The bytes held, for `annex_edge_install_cache_bytes`.
    bytes: Gauge,
}

impl std::fmt::Debug for InstallCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl InstallCache {
    /// A cache holding at most `max_bytes` of answers (and an eighth of
    /// that again of refusals).
    pub(crate) fn new(
        client: InstallsClient<Upstream>,
        ttl: Duration,
        max_bytes: usize,
        bytes: Gauge,
    ) -> InstallCache {
        InstallCache {
            client,
            ttl,
            entries: Arc::new(Mutex::new(Entries {
                found: ByteLru::new(max_bytes),
                missing: ByteLru::new(max_bytes / NEGATIVE_SHARE),
            })),
            generation: Arc::default(),
            inflight: Arc::default(),
            bytes,
        }
    }

    /// The active install `extension` names for `tenant`, for a caller
    /// whose tenant is verified (a session or an API key).
    pub(crate) async fn resolve(
        &self,
        tenant: &str,
        extension: &str,
    ) -> Result<Arc<Install>, ResolveError> {
        self.lookup(tenant, extension, None).await
    }

    /// As [`Self::resolve`], for a caller whose tenant is only claimed: a
    /// miss spends a lookup from `client`'s budget first.
    pub(crate) async fn resolve_unverified(
        &self,
        tenant: &str,
        extension: &str,
        clients: &Clients,
        client: ClientKey,
    ) -> Result<Arc<Install>, ResolveError> {
        self.lookup(tenant, extension, Some((clients, client)))
            .await
    }

    async fn lookup(
        &self,
        tenant: &str,
        extension: &str,
        budget: Option<(&Clients, ClientKey)>,
    ) -> Result<Arc<Install>, ResolveError> {
        let key = (tenant.to_owned(), extension.to_ascii_lowercase());
        if let Some(hit) = self.cached(&key) {
            return hit;
        }
        if let Some((clients, client)) = budget {
            clients.take_lookup(client).map_err(ResolveError::Limited)?;
        }
        let lock = self.inflight.lock().entry(key.clone()).or_default().clone();
        let result = {
            let _turn = lock.lock().await;
            match self.cached(&key) {
                Some(hit) => hit,
                None => self.fetch(key.clone(), tenant, extension).await,
            }
        };
        // The map's reference and ours: nobody else is waiting on this key.
        let mut inflight = self.inflight.lock();
        if Arc::strong_count(&lock) <= 2 {
            inflight.remove(&key);
        }
        result
    }

    fn cached(&self, key: &Key) -> Option<Result<Arc<Install>, ResolveError>> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if let Some(e) = entries.found.get(key)
            && e.expires > now
        {
            return Some(Ok(e.value.clone()));
        }
        entries
            .missing
            .peek(key)
            .is_some_and(|until| *until > now)
            .then_some(Err(ResolveError::NotFound))
    }

    async fn fetch(
        &self,
        key: Key,
        tenant: &str,
        extension: &str,
    ) -> Result<Arc<Install>, ResolveError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let answer = self
            .client
            .clone()
            .resolve(annex_ops::trace_context::request(pb::ResolveRequest {
                tenant_id: tenant.to_owned(),
                extension: extension.to_owned(),
            }))
            .await;
        let found = match answer {
            Ok(r) => {
                let r = r.into_inner();
                let grant_expiry = r.grant_expires_at.as_ref().map(|t| t.unix_ms);
                let install = Install::try_from(r)?;
                if install.tenant != tenant {
                    // The control plane never does this; refuse rather than cross tenants.
                    return Err(ResolveError::Incomplete("tenant"));
                }
                let now = Instant::now();
                Some(Entry {
                    value: Arc::new(install),
                    expires: now + self.entry_ttl(grant_expiry),
                    grant_expires: now + grant_left(grant_expiry).unwrap_or(self.ttl),
                })
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::NotFound | tonic::Code::InvalidArgument
                ) =>
            {
                None
            }
            Err(s) => {
                // Static stability: with the control plane unreachable, an
                // expired answer (still inside its grant) beats no answer.
                if let Some(stale) = self.stale(&key) {
                    tracing::debug!(code = ?s.code(), message = s.message(), "control plane unavailable; serving a stale install");
                    return Ok(stale);
                }
                tracing::warn!(code = ?s.code(), message = s.message(), "resolving an install failed");
                return Err(ResolveError::Unavailable);
            }
        };
        let value = found.as_ref().map(|e| e.value.clone());
        let mut entries = self.entries.lock();
        if self.generation.load(Ordering::SeqCst) == generation {
            let weight = key_weight(&key);
            match found {
                Some(e) => {
                    let weight = weight + e.value.weight();
                    entries.missing.retain(|k, _| *k != key);
                    entries.found.insert(key, e, weight);
                }
                None => {
                    let until = Instant::now() + NEGATIVE_TTL.min(self.ttl);
                    entries.found.retain(|k, _| *k != key);
                    entries.missing.insert(key, until, weight);
                }
            }
            self.report(&entries);
        }
        value.ok_or(ResolveError::NotFound)
    }

    fn report(&self, entries: &Entries) {
        let bytes = entries.found.bytes() + entries.missing.bytes();
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// An expired positive entry whose execution grant is still valid.
    fn stale(&self, key: &Key) -> Option<Arc<Install>> {
        let entries = self.entries.lock();
        let e = entries.found.peek(key)?;
        (e.grant_expires > Instant::now()).then(|| e.value.clone())
    }

    fn entry_ttl(&self, grant_expiry_ms: Option<i64>) -> Duration {
        match grant_left(grant_expiry_ms) {
            Some(left) => self.ttl.min(left),
            None => self.ttl,
        }
    }

    /// Drops every entry of `tenant` that names this install (and every
    /// negative entry of the tenant, which may now resolve).
    pub(crate) fn invalidate(&self, tenant: &str, install_id: &str, registry_id: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let whole_tenant = install_id.is_empty() && registry_id.is_empty();
        let mut entries = self.entries.lock();
        entries.found.retain(|(t, _), e| {
            t != tenant
                || !whole_tenant
                    && (install_id.is_empty() || e.value.install_id != install_id)
                    && (registry_id.is_empty() || e.value.registry_id != registry_id)
        });
        entries.missing.retain(|(t, _), _| t != tenant);
        self.report(&entries);
    }

    /// After a gap in the invalidation stream: every entry must be resolved
    /// again before it is served fresh, but each stays available as a stale
    /// answer (inside its grant) in case the control plane that just came
    /// back cannot answer yet. Dropping them instead turned a reconnect into
    /// 503s for every install while the new replica warmed up.
    pub(crate) fn expire_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let now = Instant::now();
        let mut entries = self.entries.lock();
        for e in entries.found.values_mut() {
            e.expires = e.expires.min(now);
        }
        entries.missing.retain(|_, _| false);
        self.report(&entries);
    }
}

/// How long a grant expiring at `grant_expiry_ms` is still usable, less
/// [`GRANT_MARGIN`]; `None` when the answer carried no expiry.
fn grant_left(grant_expiry_ms: Option<i64>) -> Option<Duration> {
    let exp = grant_expiry_ms?;
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let left = Duration::from_millis(u64::try_from(exp - now_ms).unwrap_or(0));
    Some(left.saturating_sub(GRANT_MARGIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(id: &str, registry: &str) -> Option<Arc<Install>> {
        Some(Arc::new(Install {
            registry_id: registry.into(),
            ..Install::for_tests(id)
        }))
    }

    fn cache() -> InstallCache {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let c = InstallCache::new(
            InstallsClient::new(Upstream::from(channel)),
            Duration::from_secs(60),
            1024 * 1024,
            Gauge::default(),
        );
        let far = Instant::now() + Duration::from_secs(60);
        let mut e = c.entries.lock();
        for (tenant, key, value) in [
            ("t", "a", install("i1", "r1")),
            ("t", "slug-a", install("i1", "r1")),
            ("t", "b", install("i2", "r2")),
            ("t", "missing", None),
            ("u", "a", install("i1", "r1")),
        ] {
            let key: Key = (tenant.into(), key.into());
            match value {
                Some(value) => {
                    e.found.insert(
                        key,
                        Entry {
                            value,
                            expires: far,
                            grant_expires: far,
                        },
                        100,
                    );
                }
                None => {
                    e.missing.insert(key, far, 10);
                }
            }
        }
        drop(e);
        c
    }

    fn keys(c: &InstallCache) -> Vec<String> {
        let e = c.entries.lock();
        let mut k: Vec<String> = e
            .found
            .keys()
            .chain(e.missing.keys())
            .map(|(t, k)| format!("{t}/{k}"))
            .collect();
        k.sort();
        k
    }

    fn resolved(arms: &[(u32, &str, &str)]) -> pb::ResolvedInstall {
        let info = |install: &str, version: &str| pb::InstallInfo {
            install_id: install.into(),
            tenant_id: "t".into(),
            version_id: version.into(),
            content_hash: format!("sha256:{version}"),
            enabled: true,
            status: "enabled".into(),
            granted_caps: vec![format!("cap:{version}")],
            ..Default::default()
        };
        pb::ResolvedInstall {
            install: Some(info("i1", "v1")),
            execution_grant: "grant-v1".into(),
            config: [("k".to_owned(), "v".to_owned())].into(),
            rollout: Some(pb::RolloutRoute {
                rollout_id: "r1".into(),
                revision: 1,
                arms: arms
                    .iter()
                    .map(|(weight, install, version)| pb::RolloutArm {
                        weight: *weight,
                        install: Some(info(install, version)),
                        execution_grant: format!("grant-{version}"),
                        ..Default::default()
                    })
                    .collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_rollout_route_becomes_arms_with_their_own_version_and_grant() {
        let install =
            Install::try_from(resolved(&[(1000, "i1", "v2"), (9000, "i1", "v1")])).expect("ok");
        let split = install.rollout.as_ref().expect("a split");
        assert_eq!(split.rollout_id, "r1");
        let (weight, canary) = &split.arms[0];
        assert_eq!(*weight, 1000);
        assert_eq!(canary.version_id, "v2");
        assert_eq!(canary.content_hash, "sha256:v2");
        assert_eq!(canary.execution_grant, "grant-v2");
        assert_eq!(canary.providers, ["cap:v2"]);
        // The install's config travels with every version.
        assert_eq!(canary.config.get("k").map(String::as_str), Some("v"));
        // Weights that do not cover every bucket, an arm of another install,
        // more than four versions: refused, never guessed.
        for arms in [
            vec![(1000, "i1", "v2"), (8000, "i1", "v1")],
            vec![(1000, "i2", "v2"), (9000, "i1", "v1")],
            vec![(2000, "i1", "v1"); 5],
            vec![],
        ] {
            assert_eq!(
                Install::try_from(resolved(&arms)),
                Err(ResolveError::Incomplete("rollout")),
                "{arms:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_expired_install_is_served_while_the_control_plane_is_unreachable() {
        let c = cache();
        let past = Instant::now() - Duration::from_secs(1);
        for e in c.entries.lock().found.values_mut() {
            e.expires = past;
        }
        // 127.0.0.1:9 refuses: the stale entries answer.
        let got = c.resolve("t", "a").await.expect("stale answer");
        assert_eq!(got.install_id, "i1");
        // Nothing cached under that name: unavailable, not a guess.
        assert_eq!(
            c.resolve("t", "never-seen").await,
            Err(ResolveError::Unavailable)
        );
        // A stale answer whose grant has expired is not served.
        for e in c.entries.lock().found.values_mut() {
            e.grant_expires = past;
        }
        assert_eq!(c.resolve("t", "b").await, Err(ResolveError::Unavailable));
    }

    #[tokio::test]
    async fn after_a_stream_gap_entries_are_re_resolved_but_still_answer_if_that_fails() {
        let c = cache();
        assert!(c.cached(&("t".into(), "a".into())).is_some());
        c.expire_all();
        // Nothing is served fresh any more...
        assert!(c.cached(&("t".into(), "a".into())).is_none());
        // Answers stay as fallbacks; refusals go (the name may resolve now).
        assert_eq!(keys(&c).len(), 4);
        // ...but while the control plane cannot answer, the old entry does.
        let got = c.resolve("t", "a").await.expect("stale answer");
        assert_eq!(got.install_id, "i1");
    }

    #[tokio::test]
    async fn invalidation_drops_the_install_under_every_name_and_the_tenants_misses() {
        let c = cache();
        c.invalidate("t", "i1", "");
        assert_eq!(keys(&c), ["t/b", "u/a"]);
        let c = cache();
        c.invalidate("t", "", "r2");
        assert_eq!(keys(&c), ["t/a", "t/slug-a", "u/a"]);
        let c = cache();
        c.invalidate("t", "", "");
        assert_eq!(keys(&c), ["u/a"]);
    }

    #[tokio::test]
    async fn refusals_never_push_out_answers() {
        let c = cache();
        let far = Instant::now() + Duration::from_secs(60);
        let mut e = c.entries.lock();
        for i in 0..100_000 {
            let key: Key = (format!("tenant-{i}"), "acme.x".into());
            let w = key_weight(&key);
            e.missing.insert(key, far, w);
        }
        assert!(e.missing.bytes() <= 1024 * 1024 / NEGATIVE_SHARE);
        drop(e);
        for name in ["a", "slug-a", "b"] {
            assert!(
                matches!(c.cached(&("t".into(), name.into())), Some(Ok(_))),
                "{name} was evicted"
            );
        }
    }
}
