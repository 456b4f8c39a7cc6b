//! A bounded in-memory cache of immutable objects (file metadata `files/{uuid}.{version}`,
//! manifests `bundles/{uuid}.{version}`): written once, create-only, never changed, so a
//! cached copy can never be stale. Tombstones are separate keys and are always checked.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// The young and the old generation.
type Generations<K, V> = (HashMap<K, Arc<V>>, HashMap<K, Arc<V>>);

/// Two generations approximate LRU: lookups promote into the young one; when it is
/// full the old generation is dropped whole. O(1), one short lock per call.
pub struct ImmutableCache<K, V> {
    cap: usize,
    gens: Mutex<Generations<K, V>>,
}

impl<K: Hash + Eq + Clone, V> ImmutableCache<K, V> {
    /// Holds between `cap` and `2 * cap` entries.
    pub fn new(cap: usize) -> Self {
        ImmutableCache {
            cap: cap.max(1),
            gens: Mutex::new((HashMap::new(), HashMap::new())),
        }
    }

    /// The cached value for `k`.
    pub fn get(&self, k: &K) -> Option<Arc<V>> {
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = g.0.get(k) {
            return Some(v.clone());
        }
        let v = g.1.remove(k)?;
        Self::put_young(&mut g, self.cap, k.clone(), v.clone());
        Some(v)
    }

    /// Remember `v` for `k`.
    pub fn insert(&self, k: K, v: Arc<V>) {
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        Self::put_young(&mut g, self.cap, k, v);
    }

    fn put_young(g: &mut Generations<K, V>, cap: usize, k: K, v: Arc<V>) {
        if g.0.len() >= cap {
            g.1 = std::mem::take(&mut g.0);
        }
        g.0.insert(k, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_promoting() {
        let c = ImmutableCache::new(2);
        c.insert(1, Arc::new("a"));
        c.insert(2, Arc::new("b"));
        c.insert(3, Arc::new("c")); // 1, 2 move to the old generation
        assert_eq!(c.get(&1).as_deref(), Some(&"a")); // promoted
        c.insert(4, Arc::new("d"));
        c.insert(5, Arc::new("e"));
        assert!(c.get(&2).is_none(), "old generation dropped");
        assert!(c.get(&5).is_some());
    }
}
