//! What a replica's bucket listed for one uuid (`bundles/{uuid}.`, `files/{uuid}.`),
//! kept for a short time: the latest version and tombstone state of a uuid are read on
//! every unversioned request, and on a cloud replica each listing is a storage request.
//!
//! The freshness rule: a listing is reused for at most the configured time
//! (`DSS_BUCKET_FRESHNESS`, default 2 s; 0 turns it off), and forgotten at once when
//! this process writes under that prefix. A write made by another process (another
//! backend, or someone writing to the bucket directly) is seen within the freshness
//! time. Reads that name a version never depend on it: the documents themselves are
//! immutable, and a versioned read that the listing does not explain lists again.
//!
//! Concurrent misses of one prefix share one listing (single flight), and the memory
//! held is bounded by [`budget`].

use crate::model::heap::HeapSize;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default freshness of a listing.
pub const DEFAULT_FRESHNESS: Duration = Duration::from_secs(2);

/// Bytes of listings held at most (keys' text and the map's own overhead, estimated).
pub fn budget() -> usize {
    if cfg!(target_arch = "wasm32") {
        4 << 20
    } else {
        32 << 20
    }
}

struct Entry {
    at: DateTime<Utc>,
    keys: Arc<Vec<String>>,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    bytes: usize,
}

/// Listings by prefix, fresh for a configured time.
pub struct FreshListings {
    inner: Mutex<Inner>,
    /// One lock per prefix being listed, so that concurrent misses list once.
    flights: Mutex<HashMap<String, Arc<futures::lock::Mutex<()>>>>,
    /// Bumped by every invalidation: a listing that began before one is not kept.
    epoch: AtomicU64,
    freshness_ms: AtomicU64,
}

impl Default for FreshListings {
    fn default() -> Self {
        FreshListings {
            inner: Mutex::default(),
            flights: Mutex::default(),
            epoch: AtomicU64::new(0),
            freshness_ms: AtomicU64::new(DEFAULT_FRESHNESS.as_millis() as u64),
        }
    }
}

fn entry_bytes(prefix: &str, keys: &[String]) -> usize {
    // The prefix twice (map key and text), the vector and each key's heap text.
    2 * prefix.len() + 64 + keys.iter().map(|k| k.heap_size() + 24).sum::<usize>()
}

impl FreshListings {
    /// Set how long a listing stays fresh (zero: never reused).
    pub fn set_freshness(&self, d: Duration) {
        self.freshness_ms
            .store(u64::try_from(d.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        if d.is_zero() {
            self.clear();
        }
    }

    /// How long a listing stays fresh.
    pub fn freshness(&self) -> Duration {
        Duration::from_millis(self.freshness_ms.load(Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, prefix: &str, now: DateTime<Utc>) -> Option<Arc<Vec<String>>> {
        let ttl = chrono::Duration::milliseconds(i64::try_from(self.freshness_ms.load(Ordering::Relaxed)).ok()?);
        let inner = self.lock();
        let e = inner.entries.get(prefix)?;
        // A clock that went back counts as stale too.
        (e.at <= now && now - e.at < ttl).then(|| e.keys.clone())
    }

    fn keep(&self, prefix: &str, at: DateTime<Utc>, keys: Arc<Vec<String>>) {
        let bytes = entry_bytes(prefix, &keys);
        if bytes > budget() / 8 {
            return; // one huge uuid must not push out everything else
        }
        let mut inner = self.lock();
        if inner.bytes + bytes > budget() {
            // Listings are only ever seconds old: dropping them all costs one listing each.
            inner.entries.clear();
            inner.bytes = 0;
        }
        if let Some(old) = inner.entries.insert(prefix.to_string(), Entry { at, keys, bytes }) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
    }

    /// Forget what is kept for `prefix` (a write under it was made here).
    pub fn invalidate(&self, prefix: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let mut inner = self.lock();
        if let Some(old) = inner.entries.remove(prefix) {
            inner.bytes -= old.bytes;
        }
    }

    /// Forget everything.
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let mut inner = self.lock();
        inner.entries.clear();
        inner.bytes = 0;
    }

    /// The keys under `prefix`: kept ones if fresh at `now`, else what `list` returns
    /// (listed once for all concurrent callers). `fresh_only` skips the kept ones.
    pub async fn keys<E, F, Fut>(
        &self,
        prefix: &str,
        now: DateTime<Utc>,
        fresh_only: bool,
        list: F,
    ) -> Result<Arc<Vec<String>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<String>, E>>,
    {
        if self.freshness().is_zero() {
            return list().await.map(Arc::new);
        }
        if !fresh_only {
            if let Some(k) = self.fresh(prefix, now) {
                return Ok(k);
            }
        }
        let flight = self
            .flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(prefix.to_string())
            .or_default()
            .clone();
        let result = {
            let _turn = flight.lock().await;
            // Listed by whoever had the turn before us?
            match self.fresh(prefix, now).filter(|_| !fresh_only) {
                Some(k) => Ok(k),
                None => {
                    let epoch = self.epoch.load(Ordering::SeqCst);
                    let listed = list().await.map(Arc::new);
                    if let Ok(keys) = &listed {
                        if self.epoch.load(Ordering::SeqCst) == epoch {
                            self.keep(prefix, now, keys.clone());
                        }
                    }
                    listed
                }
            }
        };
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        // Ours and the map's: nobody else is waiting, so the lock can go.
        if Arc::strong_count(&flight) <= 2 {
            flights.remove(prefix);
        }
        result
    }

    /// Listings kept now (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000 + ms).expect("time")
    }

    async fn listed(c: &FreshListings, calls: &AtomicUsize, now: DateTime<Utc>, fresh_only: bool) -> Arc<Vec<String>> {
        c.keys("bundles/u.", now, fresh_only, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(vec!["bundles/u.v1".to_string()])
        })
        .await
        .expect("listing")
    }

    #[test]
    fn reused_within_the_freshness_time_only() {
        futures::executor::block_on(async {
            let c = FreshListings::default();
            let calls = AtomicUsize::new(0);
            assert_eq!(*listed(&c, &calls, at(0), false).await, vec!["bundles/u.v1"]);
            listed(&c, &calls, at(1999), false).await;
            assert_eq!(
                calls.load(Ordering::SeqCst),
                1,
                "a repeated read within 2 s lists nothing"
            );
            listed(&c, &calls, at(2000), false).await;
            assert_eq!(calls.load(Ordering::SeqCst), 2, "listed again once stale");
            listed(&c, &calls, at(1000), false).await;
            assert_eq!(calls.load(Ordering::SeqCst), 3, "a clock that went back lists again");
            listed(&c, &calls, at(1001), true).await;
            assert_eq!(calls.load(Ordering::SeqCst), 4, "fresh_only always lists");
        });
    }

    #[test]
    fn own_writes_are_seen_at_once() {
        futures::executor::block_on(async {
            let c = FreshListings::default();
            let calls = AtomicUsize::new(0);
            listed(&c, &calls, at(0), false).await;
            c.invalidate("bundles/u.");
            listed(&c, &calls, at(1), false).await;
            assert_eq!(calls.load(Ordering::SeqCst), 2);
            c.invalidate("bundles/other.");
            listed(&c, &calls, at(2), false).await;
            assert_eq!(
                calls.load(Ordering::SeqCst),
                2,
                "another prefix's write changes nothing"
            );
        });
    }

    #[test]
    fn a_listing_overtaken_by_a_write_is_not_kept() {
        futures::executor::block_on(async {
            let c = FreshListings::default();
            let calls = AtomicUsize::new(0);
            c.keys("bundles/u.", at(0), false, || async {
                c.invalidate("bundles/u."); // a write lands while we list
                Ok::<_, ()>(vec![])
            })
            .await
            .expect("listing");
            assert!(c.is_empty());
            listed(&c, &calls, at(1), false).await;
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn concurrent_misses_list_once() {
        futures::executor::block_on(async {
            let c = FreshListings::default();
            let calls = AtomicUsize::new(0);
            let reads = (0..16).map(|_| {
                c.keys("bundles/u.", at(0), false, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    crate::model::platform::YieldOnce(false).await; // the others arrive while this one lists
                    Ok::<_, ()>(vec!["k".to_string()])
                })
            });
            let all = futures::future::join_all(reads).await;
            assert!(all.iter().all(|r| r.as_ref().is_ok_and(|k| k.len() == 1)));
            assert_eq!(calls.load(Ordering::SeqCst), 1, "one listing for 16 concurrent readers");
            assert!(c.flights.lock().expect("lock").is_empty(), "no lock left behind");
        });
    }

    #[test]
    fn freshness_zero_always_lists_and_memory_stays_bounded() {
        futures::executor::block_on(async {
            let c = FreshListings::default();
            let calls = AtomicUsize::new(0);
            c.set_freshness(Duration::ZERO);
            listed(&c, &calls, at(0), false).await;
            listed(&c, &calls, at(0), false).await;
            assert_eq!(calls.load(Ordering::SeqCst), 2);
            assert!(c.is_empty());
            c.set_freshness(DEFAULT_FRESHNESS);
            let big: Vec<String> = (0..1000).map(|i| format!("bundles/x.{i:0>60}")).collect();
            for p in 0..2000 {
                let prefix = format!("bundles/{p}.");
                c.keys(&prefix, at(0), false, || async { Ok::<_, ()>(big.clone()) })
                    .await
                    .expect("listing");
                assert!(c.lock().bytes <= budget());
            }
        });
    }
}
