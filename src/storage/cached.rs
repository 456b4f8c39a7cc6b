//! A read-through cache in front of a [`Store`], for the edge: the immutable documents
//! (`files/{uuid}.{version}`, `bundles/{uuid}.{version}`, tombstones) are kept for a
//! long time, listings (the "latest version" lookups and `/bundles/all` pages) briefly.
//! Writes, blobs and everything else pass straight through.
//!
//! Where the cached bytes live is the platform's business ([`ObjectCache`]: the Workers
//! Cache API at the edge, memory in tests).

use super::{ByteRange, ListPage, ObjectMeta, PresignOptions, PutOptions, Store, StoreResult};
use crate::model::platform::ByteStream;
use crate::model::{MaybeSend, MaybeSync};
use bytes::Bytes;
use std::future::Future;
use std::time::Duration;

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

/// `inner` with its immutable documents and listings cached in `cache`.
pub struct Cached<S, C> {
    inner: S,
    cache: C,
    /// Separates stores sharing one cache (e.g. `s3/bucket`).
    namespace: String,
    /// Lifetime of cached listings; zero turns listing caching off.
    list_ttl: Duration,
}

/// Whether the object at `key` can never change once it exists: the metadata documents
/// are written create-only, so a version once read stays what it is.
fn immutable(key: &str) -> bool {
    let rest = key.strip_prefix("files/").or_else(|| key.strip_prefix("bundles/"));
    rest.is_some_and(|r| r.contains('.') && !r.contains('/'))
}

impl<S: Store, C: ObjectCache> Cached<S, C> {
    /// Cache `inner` in `cache` under `namespace`, listings for `list_ttl`.
    pub fn new(inner: S, cache: C, namespace: impl Into<String>, list_ttl: Duration) -> Self {
        Cached {
            inner,
            cache,
            namespace: namespace.into(),
            list_ttl,
        }
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
        if immutable(key) {
            self.cache.delete(&self.object_key(key)).await;
        }
    }

    /// Forget the cached first listing page under `prefix` (after a write there, so the
    /// next "latest version" lookup sees it at once).
    pub async fn forget_listing(&self, prefix: &str) {
        self.cache.delete(&self.list_key(prefix, None, 1000)).await
    }
}

fn encode_page(p: &ListPage) -> Bytes {
    Bytes::from(serde_json::json!({"keys": p.keys, "next": p.next_token}).to_string())
}

fn decode_page(b: &[u8]) -> Option<ListPage> {
    let v: serde_json::Value = serde_json::from_slice(b).ok()?;
    let keys = v
        .get("keys")?
        .as_array()?
        .iter()
        .map(|k| k.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()?;
    let next_token = v.get("next").and_then(|n| n.as_str()).map(str::to_string);
    Some(ListPage { keys, next_token })
}

impl<S: Store, C: ObjectCache> Store for Cached<S, C> {
    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        if !immutable(key) {
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
        if let Some(page) = self.cache.get(&ck).await.and_then(|b| decode_page(&b)) {
            return Ok(page);
        }
        let page = self.inner.list(prefix, token, limit).await?;
        self.cache.put(&ck, encode_page(&page), self.list_ttl).await;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A cache whose clock the test moves.
    #[derive(Default)]
    struct TestCache {
        now: Mutex<Duration>,
        items: Mutex<HashMap<String, (Bytes, Duration)>>,
    }

    impl TestCache {
        fn advance(&self, d: Duration) {
            *self.now.lock().unwrap() += d;
        }
    }

    impl ObjectCache for &TestCache {
        async fn get(&self, key: &str) -> Option<Bytes> {
            let now = *self.now.lock().unwrap();
            let items = self.items.lock().unwrap();
            items.get(key).filter(|(_, until)| *until > now).map(|(b, _)| b.clone())
        }
        async fn put(&self, key: &str, value: Bytes, ttl: Duration) {
            let until = *self.now.lock().unwrap() + ttl;
            self.items.lock().unwrap().insert(key.to_string(), (value, until));
        }
        async fn delete(&self, key: &str) {
            self.items.lock().unwrap().remove(key);
        }
    }

    fn mem() -> MemoryStore {
        let clock = std::sync::Arc::new(crate::model::SystemClock);
        let signer = crate::storage::signer::Signer::new("http://127.0.0.1:1", b"k".to_vec(), clock.clone());
        MemoryStore::new("m", Some(std::sync::Arc::new(signer)), clock)
    }

    #[tokio::test]
    async fn immutable_documents_are_served_from_the_cache() {
        let tc = TestCache::default();
        let s = Cached::new(mem(), &tc, "t", Duration::from_secs(10));
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
        let s = Cached::new(mem(), &tc, "t", Duration::from_secs(10));
        s.put("bundles/u.1", Bytes::new(), PutOptions::overwrite())
            .await
            .unwrap();
        assert_eq!(s.list("bundles/u.", None, 1000).await.unwrap().keys, ["bundles/u.1"]);
        s.put("bundles/u.2", Bytes::new(), PutOptions::overwrite())
            .await
            .unwrap();
        // Within the TTL: the cached page.
        assert_eq!(s.list("bundles/u.", None, 1000).await.unwrap().keys, ["bundles/u.1"]);
        tc.advance(Duration::from_secs(11));
        assert_eq!(s.list("bundles/u.", None, 1000).await.unwrap().keys.len(), 2);
        s.put("bundles/u.3", Bytes::new(), PutOptions::overwrite())
            .await
            .unwrap();
        s.forget_listing("bundles/u.").await;
        assert_eq!(s.list("bundles/u.", None, 1000).await.unwrap().keys.len(), 3);
        // TTL zero: never cached.
        let s = Cached::new(mem(), &tc, "z", Duration::ZERO);
        s.list("bundles/", None, 10).await.unwrap();
        s.put("bundles/a.1", Bytes::new(), PutOptions::overwrite())
            .await
            .unwrap();
        assert_eq!(s.list("bundles/", None, 10).await.unwrap().keys.len(), 1);
    }

    #[tokio::test]
    async fn conformance() {
        let tc = TestCache::default();
        // Listings uncached: the suite checks read-after-write listings.
        let s = Cached::new(mem(), &tc, "c", Duration::ZERO);
        crate::storage::conformance::run(&s).await;
    }
}
