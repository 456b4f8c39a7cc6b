//! A read-through cache in front of a [`Store`], for the edge: the immutable documents
//! (`files/{uuid}.{version}`, `bundles/{uuid}.{version}`, tombstones) are kept for a
//! long time, listings (the "latest version" lookups and `/bundles/all` pages) briefly.
//! Writes, blobs and everything else pass straight through.
//!
//! Where the cached bytes live is the platform's business ([`ObjectCache`]: the Workers
//! Cache API at the edge, memory in tests).

use super::{ByteRange, ListPage, ObjectMeta, PresignOptions, PutOptions, Store, StoreResult};
use crate::model::heap::HeapSize;
use crate::model::platform::ByteStream;
use crate::model::{Clock, MaybeSend, MaybeSync};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Bytes of listing pages remembered in memory per store (a bound: listing prefixes come
/// from requests). At the edge an isolate has 128 MB and up to four stores (two
/// replicas, main and checkout), so 1 MiB each: a full page of 1000 keys is about
/// 100 KiB, a "latest version" lookup a few hundred bytes.
#[cfg(target_arch = "wasm32")]
pub const MEMO_BUDGET: u64 = 1 << 20;
/// See the wasm32 constant; natively (tests, tools) 16 MiB.
#[cfg(not(target_arch = "wasm32"))]
pub const MEMO_BUDGET: u64 = 16 << 20;

/// A remembered listing page and its expiry (unix ms).
#[derive(Clone)]
struct Memo {
    page: Arc<ListPage>,
    until: i64,
}

/// Weighs a memo by the memory of its key and page (computed on insert: see [`Memo`]).
#[derive(Clone, Copy)]
struct MemoWeighter;

impl quick_cache::Weighter<String, Memo> for MemoWeighter {
    fn weight(&self, key: &String, memo: &Memo) -> u64 {
        // Quick enough to run during eviction: one pass over at most 1000 keys.
        let page = memo.page.keys.heap_size() + memo.page.next_token.heap_size();
        let inline = std::mem::size_of::<String>() + std::mem::size_of::<Memo>() + std::mem::size_of::<ListPage>();
        // 64: the page's Arc header and the cache's own per-entry bookkeeping.
        (inline + key.heap_size() + page + 64) as u64
    }
}

type MemoCache = quick_cache::sync::Cache<String, Memo, MemoWeighter>;

/// How long an immutable document is kept: a year (it never changes).
pub const IMMUTABLE_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A key-value cache with expiry, shared by every request the platform serves.
pub trait ObjectCache: MaybeSend + MaybeSync {
    /// The value under `key`, if present and not expired.
    fn get(&self, key: &str) -> impl Future<Output = Option<Bytes>> + MaybeSend;
    /// Keep `value` under `key` for `ttl`. Failures are ignored: a cache may forget.
    fn put(&self, key: &str, value: Bytes, ttl: Duration) -> impl Future<Output = ()> + MaybeSend;
    /// Forget `key`.
    fn delete(&self, key: &str) -> impl Future<Output = ()> + MaybeSend;
}

/// `inner` with its immutable documents and listings cached in `cache`. Listings are also
/// remembered in memory until the same expiry, so a hot "latest version" lookup costs no
/// cache round trip.
pub struct Cached<S, C> {
    inner: S,
    cache: C,
    /// Separates stores sharing one cache (e.g. `s3/bucket`).
    namespace: String,
    /// Lifetime of cached listings; zero turns listing caching off.
    list_ttl: Duration,
    clock: Arc<dyn Clock>,
    /// Listing pages by cache key, bounded by [`MEMO_BUDGET`].
    memo: MemoCache,
    /// Whether the object at a key can never change once it exists (the bucket layer
    /// says which: [`crate::bucket::keys::immutable_document`]); none by default.
    immutable: fn(&str) -> bool,
}

impl<S: Store, C: ObjectCache> Cached<S, C> {
    /// Cache `inner` in `cache` under `namespace`, listings for `list_ttl` by `clock`.
    pub fn new(inner: S, cache: C, namespace: impl Into<String>, list_ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Cached {
            inner,
            cache,
            namespace: namespace.into(),
            list_ttl,
            clock,
            memo: Self::memo_cache(MEMO_BUDGET),
            immutable: |_| false,
        }
    }

    fn memo_cache(budget: u64) -> MemoCache {
        let items = (budget / 512).clamp(32, 1 << 16) as usize;
        // One shard: a full page must fit in it, and the edge is single-threaded.
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(budget.max(1))
            .shards(1)
            .build();
        match options {
            Ok(o) => MemoCache::with_options(o, MemoWeighter, Default::default(), Default::default()),
            // Unreachable (both required options are set); the default sharding still bounds bytes.
            Err(_) => MemoCache::with_weighter(items, budget.max(1), MemoWeighter),
        }
    }

    /// As [`Cached::new`], keeping the objects at keys for which `immutable` holds in the
    /// cache (only objects that never change once written may be).
    pub fn with_immutable(mut self, immutable: fn(&str) -> bool) -> Self {
        self.immutable = immutable;
        self
    }

    /// As [`Cached::new`], with listing pages remembered in memory up to `budget` bytes.
    pub fn with_memo_budget(mut self, budget: u64) -> Self {
        self.memo = Self::memo_cache(budget);
        self
    }

    /// Estimated bytes of listing pages remembered in memory now.
    pub fn memo_weight(&self) -> u64 {
        self.memo.weight()
    }

    fn remember(&self, key: String, page: Arc<ListPage>, until: i64) {
        self.memo.insert(key, Memo { page, until });
    }

    /// The store behind the cache.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn object_key(&self, key: &str) -> String {
        format!("{}/o/{key}", self.namespace)
    }

    fn list_key(&self, prefix: &str, token: Option<&str>, limit: usize) -> String {
        let t = token.map(|t| hex::encode(t.as_bytes())).unwrap_or_default();
        format!("{}/l/{limit}/{t}/{prefix}", self.namespace)
    }

    async fn forget(&self, key: &str) {
        if (self.immutable)(key) {
            self.cache.delete(&self.object_key(key)).await;
        }
    }

    /// Forget the cached first listing page under `prefix` (after a write there, so the
    /// next "latest version" lookup sees it at once).
    pub async fn forget_listing(&self, prefix: &str) {
        let key = self.list_key(prefix, None, 1000);
        self.memo.remove(&key);
        self.cache.delete(&key).await
    }
}

fn encode_page(p: &ListPage, until: i64) -> Bytes {
    Bytes::from(serde_json::json!({"keys": p.keys, "next": p.next_token, "until": until}).to_string())
}

/// A cached page and its expiry (unix ms).
fn decode_page(b: &[u8]) -> Option<(ListPage, i64)> {
    let v: serde_json::Value = serde_json::from_slice(b).ok()?;
    let until = v.get("until")?.as_i64()?;
    let keys = v
        .get("keys")?
        .as_array()?
        .iter()
        .map(|k| k.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()?;
    let next_token = v.get("next").and_then(|n| n.as_str()).map(str::to_string);
    Some((ListPage { keys, next_token }, until))
}

impl<S: Store, C: ObjectCache> Store for Cached<S, C> {
    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        if !(self.immutable)(key) {
            return self.inner.get(key).await;
        }
        let ck = self.object_key(key);
        if let Some(b) = self.cache.get(&ck).await {
            return Ok(b);
        }
        let b = self.inner.get(key).await?;
        self.cache.put(&ck, b.clone(), IMMUTABLE_TTL).await;
        Ok(b)
    }
    async fn get_range(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> StoreResult<(ObjectMeta, (u64, u64), ByteStream)> {
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.inner.head(key).await
    }
    // Writes through this store forget what the cache holds for the key, so the store
    // stays coherent for its own writers (the edge makes none; tests do).
    async fn put(&self, key: &str, data: Bytes, opts: PutOptions) -> StoreResult<()> {
        let r = self.inner.put(key, data, opts).await;
        self.forget(key).await;
        r
    }
    async fn put_stream(&self, key: &str, data: ByteStream, opts: PutOptions) -> StoreResult<u64> {
        let r = self.inner.put_stream(key, data, opts).await;
        self.forget(key).await;
        r
    }
    async fn list(&self, prefix: &str, token: Option<&str>, limit: usize) -> StoreResult<ListPage> {
        if self.list_ttl.is_zero() {
            return self.inner.list(prefix, token, limit).await;
        }
        let ck = self.list_key(prefix, token, limit);
        let now = self.clock.now().timestamp_millis();
        match self.memo.get(&ck) {
            Some(m) if m.until > now => return Ok((*m.page).clone()),
            // Expired: its room is better used by a live page.
            Some(_) => {
                self.memo.remove(&ck);
            }
            None => {}
        }
        // The expiry travels with the page, so no copy outlives the TTL set by its maker.
        if let Some((page, until)) = self.cache.get(&ck).await.and_then(|b| decode_page(&b)) {
            if until > now {
                self.remember(ck, Arc::new(page.clone()), until);
                return Ok(page);
            }
        }
        let page = self.inner.list(prefix, token, limit).await?;
        let until = now.saturating_add(i64::try_from(self.list_ttl.as_millis()).unwrap_or(i64::MAX));
        self.cache.put(&ck, encode_page(&page, until), self.list_ttl).await;
        self.remember(ck, Arc::new(page.clone()), until);
        Ok(page)
    }
    async fn copy(&self, src: &str, dst: &str) -> StoreResult<()> {
        let r = self.inner.copy(src, dst).await;
        self.forget(dst).await;
        r
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        let r = self.inner.delete(key).await;
        self.forget(key).await;
        r
    }
    async fn presign_get(&self, key: &str, expires_in: Duration, opts: &PresignOptions) -> StoreResult<String> {
        self.inner.presign_get(key, expires_in, opts).await
    }
    async fn head_with_tags(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.inner.head_with_tags(key).await
    }
    async fn copy_from(&self, src: &Self, src_key: &str, dst_key: &str, opts: PutOptions) -> StoreResult<()> {
        let r = self.inner.copy_from(&src.inner, src_key, dst_key, opts).await;
        self.forget(dst_key).await;
        r
    }
    fn direct_url(&self, key: &str) -> Option<String> {
        self.inner.direct_url(key)
    }
    fn same_backend(&self, other: &Self) -> bool {
        self.inner.same_backend(&other.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A clock the test moves.
    struct TestClock(Mutex<chrono::DateTime<chrono::Utc>>);

    impl Clock for TestClock {
        fn now(&self) -> chrono::DateTime<chrono::Utc> {
            *self.0.lock().unwrap()
        }
    }

    /// A cache that keeps everything (expiry is the store's own check).
    #[derive(Default)]
    struct TestCache {
        items: Mutex<HashMap<String, Bytes>>,
    }

    impl ObjectCache for &TestCache {
        async fn get(&self, key: &str) -> Option<Bytes> {
            self.items.lock().unwrap().get(key).cloned()
        }
        async fn put(&self, key: &str, value: Bytes, _ttl: Duration) {
            self.items.lock().unwrap().insert(key.to_string(), value);
        }
        async fn delete(&self, key: &str) {
            self.items.lock().unwrap().remove(key);
        }
    }

    fn clock() -> Arc<TestClock> {
        Arc::new(TestClock(Mutex::new(chrono::Utc::now())))
    }

    fn mem() -> MemoryStore {
        let clock = std::sync::Arc::new(crate::model::SystemClock);
        let signer = crate::storage::signer::Signer::new("http://127.0.0.1:1", b"k".to_vec(), clock.clone());
        MemoryStore::new("m", Some(std::sync::Arc::new(signer)), clock)
    }

    #[tokio::test]
    async fn immutable_documents_are_served_from_the_cache() {
        let tc = TestCache::default();
        let s = Cached::new(mem(), &tc, "t", Duration::from_secs(10), clock())
            .with_immutable(crate::bucket::keys::immutable_document);
        let k = "files/0b0e7c1e-0000-4000-8000-000000000000.2019-01-01T000000.000000Z";
        s.put(k, Bytes::from_static(b"{}"), PutOptions::if_absent())
            .await
            .unwrap();
        assert_eq!(s.get(k).await.unwrap(), Bytes::from_static(b"{}"));
        // Gone from the store, still served: the cache answered.
        s.inner().delete(k).await.unwrap();
        assert_eq!(s.get(k).await.unwrap(), Bytes::from_static(b"{}"));
        // A miss is not cached, and mutable keys always go to the store.
        assert!(s.get("files/missing.v").await.is_err());
        s.put("blobs/x", Bytes::from_static(b"1"), PutOptions::overwrite())
            .await
            .unwrap();
        s.get("blobs/x").await.unwrap();
        s.inner().delete("blobs/x").await.unwrap();
        assert!(s.get("blobs/x").await.is_err());
    }

    #[tokio::test]
    async fn listings_are_cached_briefly_and_can_be_forgotten() {
        let tc = TestCache::default();
        let clk = clock();
        let s = Cached::new(mem(), &tc, "t", Duration::from_secs(10), clk.clone());
        s.put("bundles/u.1", Bytes::new(), PutOptions::overwrite())
            .await
            .unwrap();
        assert_eq!(s.list("bundles/u.", None, 1000).await.unwrap().keys, ["bundles/u.1"]);
        s.put("bundles/u.2", Bytes::new(), PutOptions::overwrite())
            .await
            .unwrap();
        // Within the TTL: the cached page.
        assert_eq!(s.list("bundles/u.", None, 1000).await.unwrap().keys, ["bundles/u.1"]);
        // A second store on the same cache (another isolate) finds the page there.
        let other = Cached::new(mem(), &tc, "t", Duration::from_secs(10), clk.clone());
        assert_eq!(
            other.list("bundles/u.", None, 1000).await.unwrap().keys,
            ["bundles/u.1"]
        );
        *clk.0.lock().unwrap() += chrono::Duration::seconds(11);
        assert_eq!(s.list("bundles/u.", None, 1000).await.unwrap().keys.len(), 2);
        // `other` shares the refreshed page; once that expires, it is not used either.
        assert_eq!(other.list("bundles/u.", None, 1000).await.unwrap().keys.len(), 2);
        *clk.0.lock().unwrap() += chrono::Duration::seconds(11);
        assert!(other.list("bundles/u.", None, 1000).await.unwrap().keys.is_empty());
        s.put("bundles/u.3", Bytes::new(), PutOptions::overwrite())
            .await
            .unwrap();
        s.forget_listing("bundles/u.").await;
        assert_eq!(s.list("bundles/u.", None, 1000).await.unwrap().keys.len(), 3);
        // TTL zero: never cached.
        let s = Cached::new(mem(), &tc, "z", Duration::ZERO, clock());
        s.list("bundles/", None, 10).await.unwrap();
        s.put("bundles/a.1", Bytes::new(), PutOptions::overwrite())
            .await
            .unwrap();
        assert_eq!(s.list("bundles/", None, 10).await.unwrap().keys.len(), 1);
    }

    #[tokio::test]
    async fn the_listing_memo_stays_under_its_budget() {
        let tc = TestCache::default();
        let budget = 256 << 10;
        let s = Cached::new(mem(), &tc, "t", Duration::from_secs(10), clock()).with_memo_budget(budget);
        for i in 0..20 {
            s.put(&format!("bundles/u.{i:04}"), Bytes::new(), PutOptions::overwrite())
                .await
                .unwrap();
        }
        // 5,000 distinct listings of 20 keys each: far more than the budget.
        let mut fed = 0u64;
        for i in 0..5000 {
            let page = s.list("bundles/", None, 100 + i).await.unwrap();
            assert_eq!(page.keys.len(), 20);
            fed += page.keys.iter().map(|k| k.len() as u64).sum::<u64>();
            assert!(s.memo_weight() <= budget, "{} > {budget}", s.memo_weight());
        }
        assert!(fed > 4 * budget);
        assert!(s.memo_weight() > budget / 2);
    }

    #[tokio::test]
    async fn conformance() {
        let tc = TestCache::default();
        // Listings uncached: the suite checks read-after-write listings.
        let s = Cached::new(mem(), &tc, "c", Duration::ZERO, clock());
        crate::storage::conformance::run(&s).await;
    }
}
