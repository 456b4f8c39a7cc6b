//! In-memory store: for tests, and as the reference behaviour of [`super::Store`].

use super::signer::Signer;
use super::*;
use crate::model::platform::box_stream;
use futures::StreamExt;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
struct Obj {
    data: Bytes,
    meta: ObjectMeta,
}

/// A store held in a `BTreeMap` behind a mutex (never held across `.await`).
pub struct MemoryStore {
    name: String,
    objects: Mutex<BTreeMap<String, Obj>>,
    signer: Option<Arc<Signer>>,
    clock: Arc<dyn crate::model::Clock>,
}

impl MemoryStore {
    /// An empty store named `name` (the name appears in download URLs).
    pub fn new(name: &str, signer: Option<Arc<Signer>>, clock: Arc<dyn crate::model::Clock>) -> Self {
        MemoryStore {
            name: name.to_string(),
            objects: Mutex::new(BTreeMap::new()),
            signer,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Obj>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts),
        // so a poisoned lock is still consistent.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn find(&self, key: &str) -> StoreResult<Obj> {
        self.lock()
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        Ok(self.find(key)?.data)
    }

    async fn get_range(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> StoreResult<(ObjectMeta, (u64, u64), ByteStream)> {
        let obj = self.find(key)?;
        let (start, end) = match range {
            None => (0, obj.meta.size),
            Some(r) => r.resolve(obj.meta.size).ok_or(StoreError::RangeNotSatisfiable)?,
        };
        let slice = obj.data.slice(start as usize..end as usize);
        Ok((
            obj.meta,
            (start, end),
            box_stream(futures::stream::once(async move { Ok(slice) })),
        ))
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        Ok(self.find(key)?.meta)
    }

    async fn put(&self, key: &str, data: Bytes, opts: PutOptions) -> StoreResult<()> {
        check_key(key)?;
        let meta = ObjectMeta {
            size: data.len() as u64,
            content_type: opts.content_type,
            metadata: opts.metadata,
            last_modified: self.clock.now(),
            checksum: None,
        };
        let mut map = self.lock();
        if opts.if_absent && map.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        map.insert(key.to_string(), Obj { data, meta });
        Ok(())
    }

    async fn put_stream(&self, key: &str, mut data: ByteStream, opts: PutOptions) -> StoreResult<u64> {
        check_key(key)?;
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = data.next().await {
            buf.extend_from_slice(&chunk.map_err(|e| StoreError::Other(e.to_string()))?);
        }
        let n = buf.len() as u64;
        self.put(key, buf.freeze(), opts).await?;
        Ok(n)
    }

    async fn list(&self, prefix: &str, token: Option<&str>, limit: usize) -> StoreResult<ListPage> {
        let map = self.lock();
        let start = match token {
            Some(t) => std::ops::Bound::Excluded(t.to_string()),
            None => std::ops::Bound::Included(prefix.to_string()),
        };
        let mut keys: Vec<String> = map
            .range((start, std::ops::Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(limit.max(1) + 1)
            .cloned()
            .collect();
        Ok(page(&mut keys, limit))
    }

    async fn copy(&self, src: &str, dst: &str) -> StoreResult<()> {
        check_key(dst)?;
        let mut obj = self.find(src)?;
        obj.meta.last_modified = self.clock.now();
        self.lock().insert(dst.to_string(), obj);
        Ok(())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.lock().remove(key);
        Ok(())
    }

    async fn head_with_tags(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.head(key).await
    }

    async fn copy_from(&self, src: &Self, src_key: &str, dst_key: &str, opts: PutOptions) -> StoreResult<()> {
        let obj = src.find(src_key)?;
        let opts = PutOptions {
            content_type: opts.content_type.or(obj.meta.content_type),
            metadata: if opts.metadata.is_empty() {
                obj.meta.metadata
            } else {
                opts.metadata
            },
            ..opts
        };
        self.put(dst_key, obj.data, opts).await
    }

    fn direct_url(&self, _key: &str) -> Option<String> {
        None
    }

    async fn presign_get(&self, key: &str, expires_in: Duration, opts: &PresignOptions) -> StoreResult<String> {
        super::signer::presign_local(self.signer.as_ref(), &self.name, key, expires_in, opts)
    }
}

/// Cut a sorted key list (fetched with one extra entry) into a page.
pub(crate) fn page(keys: &mut Vec<String>, limit: usize) -> ListPage {
    let limit = limit.max(1);
    let more = keys.len() > limit;
    keys.truncate(limit);
    let next_token = if more { keys.last().cloned() } else { None };
    ListPage {
        keys: std::mem::take(keys),
        next_token,
    }
}
