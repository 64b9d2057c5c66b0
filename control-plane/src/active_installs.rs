//! The answer to "is this grant's install still active?", kept briefly.
//!
//! Every host call (storage, secrets, scheduler, host-app calls, idempotency
//! records) checks that the install its grant names is still enabled and
//! still the one the grant names; without a cache that is one install-view
//! query per call, as much Postgres work as the call itself. Answers are kept
//! for [`TTL`]:
//!
//! - a change made through this replica (disable, uninstall, upgrade, config,
//!   secrets) drops the install's entry before the change returns, so the
//!   next call here sees it;
//! - a change made through another replica is seen here within [`TTL`];
//! - a lookup that started before a change never stores its (older) answer
//!   after the change dropped the entry: each change bumps a generation, and
//!   an answer is stored only if the generation did not move while it was
//!   read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use uuid::Uuid;

use crate::store::InstallView;

/// How long an answer is used; the bound on a change made through another
/// replica reaching this one's host calls.
pub(crate) const TTL: Duration = Duration::from_secs(1);

/// Entries kept at most; when full, the cache starts over (each entry is
/// one install's view, a few hundred bytes to a few KiB with its config).
const MAX_ENTRIES: usize = 4096;

type Key = (String, Uuid);

#[derive(Default)]
pub(crate) struct ActiveInstalls {
    entries: Mutex<HashMap<Key, (Instant, Option<InstallView>)>>,
    generation: AtomicU64,
}

impl ActiveInstalls {
    /// The kept answer for (tenant, install), if younger than [`TTL`].
    pub(crate) fn get(&self, tenant: &str, install: Uuid) -> Option<Option<InstallView>> {
        let entries = self.entries.lock();
        let (at, view) = entries.get(&(tenant.to_owned(), install))?;
        (at.elapsed() < TTL).then(|| view.clone())
    }

    /// The generation to pass to [`ActiveInstalls::put`] for a lookup
    /// starting now.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `view` as the answer for (tenant, install) unless a change was
    /// announced since `generation` was read.
    pub(crate) fn put(
        &self,
        generation: u64,
        tenant: &str,
        install: Uuid,
        view: Option<InstallView>,
    ) {
        let mut entries = self.entries.lock();
        // Checked under the lock `changed` also takes: a change is either
        // before this check (nothing stored) or after the insert (dropped).
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert((tenant.to_owned(), install), (Instant::now(), view));
    }

    /// An install changed: its entry goes, and lookups in flight do not
    /// store what they read.
    pub(crate) fn changed(&self, tenant: &str, install: Uuid) {
        let mut entries = self.entries.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(&(tenant.to_owned(), install));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_that_overlapped_a_change_is_not_kept() {
        let cache = ActiveInstalls::default();
        let install = Uuid::now_v7();
        let before = cache.generation();
        cache.changed("t", install);
        cache.put(before, "t", install, None);
        assert!(
            cache.get("t", install).is_none(),
            "the stale answer was kept"
        );

        let now = cache.generation();
        cache.put(now, "t", install, None);
        assert_eq!(cache.get("t", install), Some(None));
        cache.changed("t", install);
        assert!(
            cache.get("t", install).is_none(),
            "a change drops the entry"
        );
        assert!(cache.get("other", install).is_none());
    }
}
