//! The trust keys bundles are verified against: [`StaticTrust`] (a trust
//! file, tests) or [`GrpcTrust`], the control plane's `Trust.ListKeys` kept
//! by this worker.
//!
//! [`GrpcTrust`] keeps the last good listing and refreshes it in the
//! background: every refresh period (10 s in a worker), at once when the
//! control plane announces a trust change on the fleet stream
//! ([`GrpcTrust::refresh_now`]), and every second while it has none. Each
//! listing is bounded by [`LIST_TIMEOUT`]. A load never waits for the
//! control plane: it uses the last good keys as long as they are younger
//! than the maximum age (`--trust-max-age-secs`, 24 h by default), and
//! fails with "trust keys unavailable" beyond it until a listing succeeds.
//! Only a worker that has never listed the keys waits, for at most
//! [`FIRST_WAIT`]; and a bundle the current keys do not admit (its key was
//! added since the last listing) makes the load list them once more
//! ([`TrustSource::relisted`]), at most once per [`MIN_RELIST`] (a load
//! that asks sooner waits for the rest of that interval, and loads asking
//! together share one listing), so an admitted bundle never waits, a bundle
//! whose key was just added loads within a second, and an unknown one
//! cannot make the worker hammer the control plane. A newer listing replaces the old one the
//! moment it arrives, so a revocation stops loads as soon as the worker
//! receives it. Key validity windows are still checked against the clock
//! on every load. This module verifies no signature itself (see
//! `bundles`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use annex_bundle::{PublicKey, TrustBundle, TrustedKey};
use annex_ops::upstream::Upstream;
use annex_proto::pb;
use annex_proto::pb::trust_client::TrustClient;
use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use crate::bundles::{BundleError, TrustSource};

/// Deadline of one `Trust.ListKeys` call.
pub(crate) const LIST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a load waits for the very first listing.
pub(crate) const FIRST_WAIT: Duration = Duration::from_secs(5);
/// Retry period while the worker has no keys at all.
const RETRY_EMPTY: Duration = Duration::from_secs(1);
/// Loads that need fresher keys list them at most once per this period.
pub(crate) const MIN_RELIST: Duration = Duration::from_secs(1);
/// The default of `--trust-max-age-secs`: a day of control-plane or
/// database outage keeps cached extensions running; a revocation made
/// during such an outage cannot reach the worker anyway.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A fixed trust bundle.
#[derive(Debug, Clone)]
pub struct StaticTrust(pub Arc<TrustBundle>);

#[async_trait]
impl TrustSource for StaticTrust {
    async fn trust(&self) -> Result<Arc<TrustBundle>, BundleError> {
        Ok(self.0.clone())
    }
}

/// One successful listing.
#[derive(Debug, Clone)]
struct Listing {
    keys: Arc<TrustBundle>,
    at: Instant,
}

/// What the refresh task and the loads share.
struct Shared {
    client: TrustClient<Upstream>,
    current: watch::Sender<Option<Listing>>,
    /// Why the last listing failed, for the error a load reports.
    last_error: Mutex<Option<String>>,
    wake: Notify,
    refresh: Duration,
    /// One load-triggered listing at a time, and when the last one was.
    relisting: tokio::sync::Mutex<Option<Instant>>,
}

/// The control plane's trust keys, refreshed in the background (see the
/// module documentation).
pub struct GrpcTrust {
    shared: Arc<Shared>,
    max_age: Duration,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcTrust {
    /// Starts keeping the keys listed on `channel`, refreshed every
    /// `refresh`, with the default maximum age. Must be called within a
    /// Tokio runtime (it spawns the refresh task).
    pub fn new(channel: impl Into<Upstream>, refresh: Duration) -> GrpcTrust {
        GrpcTrust::with_max_age(channel, refresh, DEFAULT_MAX_AGE)
    }

    /// As [`GrpcTrust::new`], with keys usable for at most `max_age` after
    /// they were listed.
    pub fn with_max_age(
        channel: impl Into<Upstream>,
        refresh: Duration,
        max_age: Duration,
    ) -> GrpcTrust {
        let shared = Arc::new(Shared {
            client: TrustClient::new(channel.into()),
            current: watch::Sender::new(None),
            last_error: Mutex::new(None),
            wake: Notify::new(),
            refresh,
            relisting: tokio::sync::Mutex::new(None),
        });
        let task = tokio::spawn(refresh_loop(shared.clone()));
        GrpcTrust {
            shared,
            max_age,
            task,
        }
    }

    /// Lists the keys again now (the control plane announced a change).
    pub fn refresh_now(&self) {
        self.shared.wake.notify_one();
    }

    fn unavailable(&self, why: String) -> BundleError {
        let last = self.shared.last_error.lock().clone();
        BundleError::TrustUnavailable(match last {
            Some(error) => format!("{why} (last listing failed: {error})"),
            None => why,
        })
    }
}

impl Drop for GrpcTrust {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl TrustSource for GrpcTrust {
    async fn trust(&self) -> Result<Arc<TrustBundle>, BundleError> {
        let mut rx = self.shared.current.subscribe();
        let current = rx.borrow().clone();
        let listing = match current {
            Some(listing) => listing,
            None => match tokio::time::timeout(FIRST_WAIT, rx.wait_for(Option::is_some)).await {
                Ok(Ok(listing)) => listing
                    .clone()
                    .ok_or_else(|| self.unavailable("the trust keys were never listed".into()))?,
                _ => {
                    return Err(self.unavailable(format!(
                        "the trust keys were not listed within {} s",
                        FIRST_WAIT.as_secs()
                    )));
                }
            },
        };
        let age = listing.at.elapsed();
        if age > self.max_age {
            let age = Duration::from_millis(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
            return Err(self.unavailable(format!(
                "the last trust keys were listed {age:?} ago, beyond the limit of {:?}",
                self.max_age
            )));
        }
        Ok(listing.keys)
    }

    async fn relisted(&self) -> Result<Arc<TrustBundle>, BundleError> {
        let asked = Instant::now();
        let mut last = self.shared.relisting.lock().await;
        if let Some(at) = *last {
            // A listing started since this load asked answers it.
            if at >= asked {
                return self.trust().await;
            }
            // Too soon after the last one: wait for the rest of the second
            // rather than refuse a bundle whose key was just added (loads
            // asking meanwhile queue here and share this listing).
            if let Some(rest) = MIN_RELIST.checked_sub(at.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
        *last = Some(Instant::now());
        match list(&self.shared.client).await {
            Ok(keys) => Ok(self.shared.publish(keys)),
            Err(error) => {
                tracing::warn!(%error, "listing the trust keys for a load failed");
                *self.shared.last_error.lock() = Some(error);
                self.trust().await
            }
        }
    }
}

impl Shared {
    /// Makes `keys` the current listing.
    fn publish(&self, keys: TrustBundle) -> Arc<TrustBundle> {
        let keys = Arc::new(keys);
        *self.last_error.lock() = None;
        self.current.send_replace(Some(Listing {
            keys: keys.clone(),
            at: Instant::now(),
        }));
        keys
    }
}

/// Lists the keys until the [`GrpcTrust`] is dropped (which aborts it).
async fn refresh_loop(s: Arc<Shared>) {
    let mut failures = 0u32;
    loop {
        match list(&s.client).await {
            Ok(keys) => {
                if failures > 0 {
                    tracing::info!(failures, "trust keys listed again");
                }
                failures = 0;
                s.publish(keys);
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(%error, failures, "listing the trust keys failed; keeping the last good keys");
                *s.last_error.lock() = Some(error);
            }
        }
        let wait = if s.current.borrow().is_some() {
            s.refresh
        } else {
            RETRY_EMPTY.min(s.refresh)
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = s.wake.notified() => {}
        }
    }
}

/// One `Trust.ListKeys` call within [`LIST_TIMEOUT`].
async fn list(client: &TrustClient<Upstream>) -> Result<TrustBundle, String> {
    let mut request = tonic::Request::new(pb::ListKeysRequest::default());
    request.set_timeout(LIST_TIMEOUT);
    let mut client = client.clone();
    let call = client.list_keys(request);
    match tokio::time::timeout(LIST_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok(trust_from_pb(response.into_inner().keys)),
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err(format!("no answer within {} s", LIST_TIMEOUT.as_secs())),
    }
}

/// Converts `Trust.ListKeys` keys; keys that do not parse are skipped.
pub(crate) fn trust_from_pb(keys: Vec<pb::PublisherKey>) -> TrustBundle {
    TrustBundle {
        keys: keys
            .into_iter()
            .filter_map(|k| {
                let public_key = PublicKey::parse(&k.public_key).ok()?;
                Some(TrustedKey {
                    key_id: k.key_id,
                    publisher: k.publisher,
                    public_key,
                    not_before_ms: k.not_before.map_or(0, |t| t.unix_ms),
                    not_after_ms: k.not_after.map(|t| t.unix_ms),
                    revoked: k.revoked,
                })
            })
            .collect(),
    }
}
