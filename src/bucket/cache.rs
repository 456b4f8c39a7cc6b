//! In-memory caches of a replica, each bounded by an estimate of the memory it holds
//! ([`HeapSize`]), not by a count of entries: one bundle manifest can weigh as much as
//! ten thousand file metadata documents.
//!
//! * [`ImmutableCache`]: documents that never change once written (file metadata
//!   `files/{uuid}.{version}`, manifests `bundles/{uuid}.{version}`): written
//!   create-only, so a cached copy can never be stale. Tombstones are separate keys and
//!   are always checked.
//! * [`PresignCache`]: presigned download URLs, reused for a small part of their lifetime
//!   ([`PRESIGN_REUSE_DIVISOR`]) so that signing (RSA for GCS: about 2 ms) is not paid on
//!   every redirect.
//!
//! Budgets differ by target ([`Budget`]): the native server has memory to spare, an edge
//! isolate has 128 MB for everything.

use crate::model::heap::{alloc_size, HeapSize};
use crate::storage::PresignOptions;
use chrono::{DateTime, Utc};
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

/// A byte budget and the number of shards it is split into. quick_cache admits no entry
/// heavier than about 97% of one shard, so the shard count is chosen per cache: few
/// shards where single entries are large (manifests), more where many small entries are
/// read concurrently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most bytes the cache holds (by [`HeapSize`] estimate).
    pub bytes: u64,
    /// Shards (rounded up to a power of two by quick_cache).
    pub shards: usize,
    /// Typical entry weight, to size the hash tables.
    pub typical_entry: u64,
}

impl Budget {
    /// The heaviest entry this budget admits.
    pub fn largest_entry(&self) -> u64 {
        let shards = self.shards.max(1).next_power_of_two() as u64;
        // quick_cache keeps 97% of a shard for its "hot" entries and admits nothing larger.
        self.bytes / shards * 97 / 100
    }

    fn build<K: Eq + Hash, V: Clone, W: Weighter<K, V> + Clone>(&self, weighter: W) -> Cache<K, V, W> {
        let items = (self.bytes / self.typical_entry.max(1)).clamp(32, 1 << 20) as usize;
        let options = OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(self.bytes.max(1))
            .shards(self.shards.max(1))
            .build();
        match options {
            Ok(o) => Cache::with_options(o, weighter, DefaultHashBuilder::default(), Default::default()),
            // Unreachable (both required options are set); a small default keeps the type total.
            Err(_) => Cache::with_weighter(items, self.bytes.max(1), weighter),
        }
    }
}

/// Budgets of a replica's caches on the native server: manifests up to 256 MiB in all
/// (4 shards, so one manifest of up to ~62 MiB, about 100,000 files at ~600 bytes each,
/// is kept), file metadata 64 MiB (about 32,000 documents at ~2 KiB with their response
/// headers), presigned URLs 16 MiB (about 13,000 RSA-signed GCS URLs at ~1.2 KiB).
#[cfg(not(target_arch = "wasm32"))]
pub mod budgets {
    use super::Budget;
    /// `bundles/{uuid}.{version}`, parsed.
    pub const BUNDLES: Budget = Budget {
        bytes: 256 << 20,
        shards: 4,
        typical_entry: 64 << 10,
    };
    /// `files/{uuid}.{version}`, parsed, with their response headers.
    pub const FILES: Budget = Budget {
        bytes: 64 << 20,
        shards: 16,
        typical_entry: 1 << 10,
    };
    /// Presigned download URLs.
    pub const PRESIGNED: Budget = Budget {
        bytes: 16 << 20,
        shards: 16,
        typical_entry: 1 << 10,
    };
}

/// Budgets of a replica's caches in an edge isolate (128 MB for everything, two
/// replicas): manifests 12 MiB (one shard: the isolate is single-threaded, and a
/// manifest of up to ~11.6 MiB, about 20,000 files at ~600 bytes each, is kept), file
/// metadata 4 MiB, presigned URLs 1 MiB. With both replicas full that is 34 MiB, leaving
/// room for the code, the requests in flight and the one large manifest a request may
/// parse.
#[cfg(target_arch = "wasm32")]
pub mod budgets {
    use super::Budget;
    /// `bundles/{uuid}.{version}`, parsed.
    pub const BUNDLES: Budget = Budget {
        bytes: 12 << 20,
        shards: 1,
        typical_entry: 64 << 10,
    };
    /// `files/{uuid}.{version}`, parsed, with their response headers.
    pub const FILES: Budget = Budget {
        bytes: 4 << 20,
        shards: 1,
        typical_entry: 1 << 10,
    };
    /// Presigned download URLs.
    pub const PRESIGNED: Budget = Budget {
        bytes: 1 << 20,
        shards: 1,
        typical_entry: 1 << 10,
    };
}

/// What quick_cache and the hash table spend per entry besides key and value (slab slot,
/// table slot, hash, state): an estimate.
const ENTRY_OVERHEAD: usize = 64;

/// A cached value with its weight, computed once on insert: quick_cache weighs entries
/// while it evicts, and walking a manifest of thousands of files there would be slow.
struct Weighed<V> {
    value: Arc<V>,
    weight: u64,
}

impl<V> Clone for Weighed<V> {
    fn clone(&self) -> Self {
        Weighed {
            value: self.value.clone(),
            weight: self.weight,
        }
    }
}

#[derive(Clone, Copy)]
struct StoredWeight;

impl<K, V> Weighter<K, Weighed<V>> for StoredWeight {
    fn weight(&self, _key: &K, val: &Weighed<V>) -> u64 {
        val.weight
    }
}

/// The memory an entry `(k, v)` holds in an [`ImmutableCache`].
pub fn entry_weight<K: HeapSize, V: HeapSize>(k: &K, v: &V) -> u64 {
    // The Arc's allocation holds two counters and the value itself.
    let arc = alloc_size(2 * std::mem::size_of::<usize>() + std::mem::size_of::<V>());
    let inline = std::mem::size_of::<K>() + std::mem::size_of::<Weighed<V>>();
    (inline + k.heap_size() + arc + v.heap_size() + ENTRY_OVERHEAD) as u64
}

/// Immutable documents by key, bounded by the memory they hold; entries are evicted by
/// quick_cache's CLOCK-Pro policy (recent and frequent entries stay).
pub struct ImmutableCache<K, V> {
    budget: Budget,
    inner: Cache<K, Weighed<V>, StoredWeight>,
}

impl<K: Hash + Eq + Clone + HeapSize, V: HeapSize> ImmutableCache<K, V> {
    /// An empty cache holding at most `budget.bytes`.
    pub fn new(budget: Budget) -> Self {
        ImmutableCache {
            budget,
            inner: budget.build(StoredWeight),
        }
    }

    /// The cached value for `k`.
    pub fn get(&self, k: &K) -> Option<Arc<V>> {
        self.inner.get(k).map(|w| w.value)
    }

    /// Forget `k` (a document `dss sync` rewrote).
    pub fn remove(&self, k: &K) {
        self.inner.remove(k);
    }

    /// Remember `v` for `k`; not kept when it alone is heavier than
    /// [`Budget::largest_entry`].
    pub fn insert(&self, k: K, v: Arc<V>) {
        let weight = entry_weight(&k, &*v);
        if weight > self.budget.largest_entry() {
            tracing::debug!(weight, "too large to cache");
            return;
        }
        self.inner.insert(k, Weighed { value: v, weight })
    }

    /// The cached value for `k`, or what `load` gives (then remembered). Concurrent
    /// callers missing the same key wait for one `load` instead of each running their
    /// own: a cold cache under load reads each document from storage once. If that load
    /// fails, the next waiter loads in turn.
    pub async fn get_or_load<E, F, Fut>(&self, k: &K, load: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<V>, E>>,
    {
        match self.inner.get_value_or_guard_async(k).await {
            Ok(w) => Ok(w.value),
            Err(guard) => {
                let v = load().await?;
                let weight = entry_weight(k, &*v);
                if weight <= self.budget.largest_entry() {
                    let _ = guard.insert(Weighed {
                        value: v.clone(),
                        weight,
                    });
                }
                // Too heavy to keep: dropping the guard lets each waiter load its own.
                Ok(v)
            }
        }
    }

    /// Estimated bytes held now.
    pub fn weight(&self) -> u64 {
        self.inner.weight()
    }

    /// The budget this cache was made with.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// A presigned URL is reused for `1 / PRESIGN_REUSE_DIVISOR` of its lifetime (5%): a
/// client always gets at least 95% of the lifetime the server grants (57 of 60 minutes
/// by default), and a burst of redirects to one blob signs once every 3 minutes.
pub const PRESIGN_REUSE_DIVISOR: u32 = 20;

/// What a presigned URL depends on: the blob, the response headers it fixes, and its
/// lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PresignKey {
    blob_key: String,
    content_type: Option<String>,
    content_disposition: Option<String>,
    ttl_secs: u64,
}

impl PresignKey {
    /// The key of a URL for `blob_key` with `opts`, valid for `ttl`.
    pub fn new(blob_key: &str, opts: &PresignOptions, ttl: Duration) -> Self {
        PresignKey {
            blob_key: blob_key.to_string(),
            content_type: opts.content_type.clone(),
            content_disposition: opts.content_disposition.clone(),
            ttl_secs: ttl.as_secs(),
        }
    }
}

impl HeapSize for PresignKey {
    fn heap_size(&self) -> usize {
        self.blob_key.heap_size() + self.content_type.heap_size() + self.content_disposition.heap_size()
    }
}

/// A URL and until when (unix ms) it may be handed out again.
#[derive(Clone)]
struct Presigned {
    url: Arc<str>,
    reuse_until: i64,
}

#[derive(Clone)]
struct PresignWeighter;

impl Weighter<PresignKey, Presigned> for PresignWeighter {
    fn weight(&self, key: &PresignKey, val: &Presigned) -> u64 {
        (std::mem::size_of::<PresignKey>()
            + key.heap_size()
            + std::mem::size_of::<Presigned>()
            + val.url.heap_size()
            + ENTRY_OVERHEAD) as u64
    }
}

/// Presigned download URLs, bounded by bytes and aged by the caller's clock (the app's).
pub struct PresignCache {
    inner: Cache<PresignKey, Presigned, PresignWeighter>,
}

impl PresignCache {
    /// An empty cache holding at most `budget.bytes`.
    pub fn new(budget: Budget) -> Self {
        PresignCache {
            inner: budget.build(PresignWeighter),
        }
    }

    /// The URL for `key` if one was signed less than a reuse window before `now`.
    pub fn get(&self, key: &PresignKey, now: DateTime<Utc>) -> Option<Arc<str>> {
        let hit = self.inner.get(key)?;
        if now.timestamp_millis() < hit.reuse_until {
            Some(hit.url)
        } else {
            // Expired entries would only take room from fresh ones.
            self.inner.remove(key);
            None
        }
    }

    /// Remember `url`, signed at `now` for `ttl`, for reuse during `ttl / PRESIGN_REUSE_DIVISOR`.
    pub fn insert(&self, key: PresignKey, url: &str, now: DateTime<Utc>, ttl: Duration) {
        let window = (ttl / PRESIGN_REUSE_DIVISOR).as_millis();
        if window == 0 {
            return;
        }
        let reuse_until = now
            .timestamp_millis()
            .saturating_add(i64::try_from(window).unwrap_or(i64::MAX));
        self.inner.insert(
            key,
            Presigned {
                url: Arc::from(url),
                reuse_until,
            },
        );
    }

    /// Estimated bytes held now.
    pub fn weight(&self) -> u64 {
        self.inner.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value of a chosen heap size.
    struct Blob(Vec<u8>);

    impl HeapSize for Blob {
        fn heap_size(&self) -> usize {
            alloc_size(self.0.capacity())
        }
    }

    #[test]
    fn a_cache_fed_more_than_its_budget_stays_under_it() {
        let budget = Budget {
            bytes: 1 << 20,
            shards: 4,
            typical_entry: 16 << 10,
        };
        let c: ImmutableCache<String, Blob> = ImmutableCache::new(budget);
        let mut fed = 0usize;
        for i in 0..1000 {
            let v = Blob(vec![0u8; 16 << 10]);
            fed += v.heap_size();
            c.insert(format!("files/{i}"), Arc::new(v));
            assert!(
                c.weight() <= budget.bytes,
                "after {i}: {} > {}",
                c.weight(),
                budget.bytes
            );
        }
        assert!(fed > 10 * (1 << 20), "fed ten times the budget");
        // What is held adds up to the weight (nothing is uncounted) and most of the budget is used.
        let held: usize = (0..1000)
            .filter_map(|i| c.get(&format!("files/{i}")))
            .map(|v| v.heap_size())
            .sum();
        assert!(held as u64 <= c.weight());
        assert!(c.weight() > budget.bytes / 2, "{}", c.weight());
        assert!(c.len() < 64);
    }

    #[test]
    fn concurrent_misses_load_a_document_once() {
        let budget = Budget {
            bytes: 1 << 20,
            shards: 2,
            typical_entry: 1 << 10,
        };
        let c: ImmutableCache<String, Blob> = ImmutableCache::new(budget);
        let loads = std::sync::atomic::AtomicUsize::new(0);
        let key = "bundles/u.v".to_string();
        let reads = (0..16).map(|_| {
            c.get_or_load(&key, || async {
                loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                crate::model::platform::YieldOnce(false).await; // the others arrive while this one reads
                Ok::<_, ()>(Arc::new(Blob(vec![7; 10])))
            })
        });
        let got = futures::executor::block_on(futures::future::join_all(reads));
        assert!(got.iter().all(|r| r.as_ref().is_ok_and(|b| b.0[0] == 7)));
        assert_eq!(
            loads.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one storage read for 16 readers"
        );
        // A failed load is not remembered: the next caller loads again.
        let other = "bundles/w.v".to_string();
        let failed = futures::executor::block_on(c.get_or_load(&other, || async { Err::<Arc<Blob>, _>("down") }));
        assert_eq!(failed.err(), Some("down"));
        let again =
            futures::executor::block_on(c.get_or_load(&other, || async { Ok::<_, ()>(Arc::new(Blob(vec![1]))) }));
        assert!(again.is_ok());
    }

    #[test]
    fn one_large_entry_is_kept_when_it_fits_and_not_when_it_cannot() {
        let budget = Budget {
            bytes: 8 << 20,
            shards: 2,
            typical_entry: 64 << 10,
        };
        assert_eq!(budget.largest_entry(), (4 << 20) * 97 / 100);
        let c: ImmutableCache<String, Blob> = ImmutableCache::new(budget);
        c.insert("small".into(), Arc::new(Blob(vec![1; 100])));
        c.insert("big".into(), Arc::new(Blob(vec![2; 3 << 20])));
        assert_eq!(c.get(&"big".to_string()).map(|b| b.0[0]), Some(2));
        c.insert("huge".into(), Arc::new(Blob(vec![3; 5 << 20])));
        assert!(c.get(&"huge".to_string()).is_none(), "heavier than a shard");
        assert!(c.weight() <= budget.bytes);
    }

    #[test]
    fn presigned_urls_are_reused_for_a_twentieth_of_their_lifetime() {
        let c = PresignCache::new(budgets::PRESIGNED);
        let t0: DateTime<Utc> = "2024-05-06T07:08:09Z".parse().unwrap();
        let ttl = Duration::from_secs(3600);
        let opts = PresignOptions {
            content_type: Some("application/json".into()),
            content_disposition: None,
        };
        let k = PresignKey::new("blobs/a", &opts, ttl);
        assert!(c.get(&k, t0).is_none());
        c.insert(k.clone(), "https://x/a?sig=1", t0, ttl);
        let later = |s| t0 + chrono::Duration::seconds(s);
        assert_eq!(c.get(&k, later(179)).as_deref(), Some("https://x/a?sig=1"));
        assert!(
            c.get(&k, later(180)).is_none(),
            "3 minutes of 60: 95% of the lifetime is left"
        );
        // Each part of the key matters.
        c.insert(k.clone(), "https://x/a?sig=2", t0, ttl);
        let other_type = PresignOptions {
            content_type: Some("text/plain".into()),
            ..opts.clone()
        };
        let disposition = PresignOptions {
            content_disposition: Some("attachment".into()),
            ..opts.clone()
        };
        for other in [
            PresignKey::new("blobs/b", &opts, ttl),
            PresignKey::new("blobs/a", &other_type, ttl),
            PresignKey::new("blobs/a", &disposition, ttl),
            PresignKey::new("blobs/a", &opts, ttl * 2),
        ] {
            assert!(c.get(&other, t0).is_none(), "{other:?}");
        }
        // A lifetime too short to share is not kept.
        let short = PresignKey::new("blobs/s", &opts, Duration::from_millis(10));
        c.insert(short.clone(), "u", t0, Duration::from_millis(10));
        assert!(c.get(&short, t0).is_none());
    }

    #[test]
    fn the_presign_cache_stays_under_its_budget() {
        let budget = Budget {
            bytes: 256 << 10,
            shards: 1,
            typical_entry: 1 << 10,
        };
        let c = PresignCache::new(budget);
        let t0: DateTime<Utc> = "2024-05-06T07:08:09Z".parse().unwrap();
        let url = format!("https://storage.example/b/k?X-Goog-Signature={}", "0".repeat(512));
        for i in 0..10_000 {
            let k = PresignKey::new(
                &format!("blobs/{i}"),
                &PresignOptions::default(),
                Duration::from_secs(3600),
            );
            c.insert(k, &url, t0, Duration::from_secs(3600));
            assert!(c.weight() <= budget.bytes);
        }
        assert!(c.weight() > budget.bytes / 2);
    }
}
