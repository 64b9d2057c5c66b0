//! A least-recently-used map bounded by the bytes its entries account for
//! (each insert says what its key and value weigh), for the edge's caches of
//! control-plane answers. An insert evicts the least recently used entries
//! until the total fits; an entry heavier than the whole bound is not kept.
//! It must not lock (its owner does) or know what it caches.

use std::hash::Hash;

use lru::LruCache;

/// Bookkeeping per entry on top of the key and value bytes the caller
/// counts: the list links, the hash slot and the allocation headers.
pub(crate) const ENTRY_OVERHEAD: usize = 96;

pub(crate) struct ByteLru<K: Hash + Eq, V> {
    map: LruCache<K, (V, usize)>,
    bytes: usize,
    max_bytes: usize,
}

impl<K: Hash + Eq, V> std::fmt::Debug for ByteLru<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteLru")
            .field("entries", &self.map.len())
            .field("bytes", &self.bytes)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl<K: Hash + Eq, V> ByteLru<K, V> {
    pub(crate) fn new(max_bytes: usize) -> ByteLru<K, V> {
        ByteLru {
            map: LruCache::unbounded(),
            bytes: 0,
            max_bytes,
        }
    }

    /// The bytes the entries account for (with [`ENTRY_OVERHEAD`] each).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.iter().map(|(k, _)| k)
    }

    /// The value of `key`, marked as just used.
    pub(crate) fn get(&mut self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    /// The value of `key` without touching its recency.
    pub(crate) fn peek(&self, key: &K) -> Option<&V> {
        self.map.peek(key).map(|(v, _)| v)
    }

    /// Inserts (or replaces) `key`; `weight` is what key and value hold on
    /// the heap and inline. Returns whether the entry was kept.
    pub(crate) fn insert(&mut self, key: K, value: V, weight: usize) -> bool {
        let weight = weight.saturating_add(ENTRY_OVERHEAD);
        if let Some((_, old)) = self.map.pop(&key) {
            self.bytes -= old;
        }
        if weight > self.max_bytes {
            return false;
        }
        while self.bytes + weight > self.max_bytes {
            match self.map.pop_lru() {
                Some((_, (_, w))) => self.bytes -= w,
                None => break,
            }
        }
        self.map.put(key, (value, weight));
        self.bytes += weight;
        true
    }

    /// Keeps only the entries `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool)
    where
        K: Clone,
    {
        let doomed: Vec<K> = self
            .map
            .iter()
            .filter(|(k, (v, _))| !keep(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            if let Some((_, w)) = self.map.pop(&k) {
                self.bytes -= w;
            }
        }
    }

    /// Every value, for in-place updates that do not change weights.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.map.iter_mut().map(|(_, (v, _))| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entries_go_first_and_the_bound_holds() {
        let mut c: ByteLru<&str, u32> = ByteLru::new(3 * (ENTRY_OVERHEAD + 10));
        assert!(c.insert("a", 1, 10));
        assert!(c.insert("b", 2, 10));
        assert!(c.insert("c", 3, 10));
        assert_eq!(c.get(&"a"), Some(&1));
        // `b` is now the least recently used.
        assert!(c.insert("d", 4, 10));
        assert_eq!((c.peek(&"b"), c.len()), (None, 3));
        assert!(c.bytes() <= 3 * (ENTRY_OVERHEAD + 10));
        // A heavy entry evicts as many as it needs; one over the bound is refused.
        assert!(c.insert("e", 5, 2 * (ENTRY_OVERHEAD + 10)));
        assert_eq!(c.len(), 1);
        assert!(!c.insert("f", 6, 10_000));
        assert_eq!(c.peek(&"f"), None);
        // Replacing an entry accounts for it once.
        assert!(c.insert("e", 7, 10));
        assert_eq!(c.bytes(), ENTRY_OVERHEAD + 10);
        c.retain(|_, v| *v != 7);
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }
}
