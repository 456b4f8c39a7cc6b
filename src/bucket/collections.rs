//! Collections in a replica's bucket, laid out as the original laid them out
//! (`collections/{uuid}.{version}`, `collections/{uuid}.dead`): reads under the
//! original's rule (a tombstone hides every version; the latest is the greatest
//! version), create-only writes, and the checks that a collection's items resolve.

use super::keys::{collection_key, collection_prefix, collection_tombstone_key, parse_collection_key, CollectionKey};
use super::{Bucket, BucketError, Doc, FileDoc, Written};
use crate::model::collection::{self as c, CollectionError};
use crate::storage::{list_all, Store, StoreError};
use bytes::Bytes;
use serde_json::{Map, Value};

/// Largest document an item may name, and largest file a fragment is read from (the
/// original checked 1 MiB on the first only).
pub const MAX_LINKED: u64 = 1024 * 1024;

/// Items checked at once (the original checked them in batches of 64 too).
const VERIFY_CONCURRENCY: usize = 64;

impl<S: Store, F: FileDoc> Bucket<'_, S, F> {
    /// Collection `uuid` at `version` (or its latest): `(version, document)`; `None` when
    /// there is none, or a tombstone hides it.
    pub async fn collection(
        &self,
        uuid: &str,
        version: Option<&str>,
    ) -> Result<Option<(String, Map<String, Value>)>, BucketError> {
        let keys = list_all(self.store, &collection_prefix(uuid)).await?;
        let mut latest: Option<&str> = None;
        for k in &keys {
            match parse_collection_key(k) {
                Some(CollectionKey::Tombstone { .. }) => return Ok(None),
                Some(CollectionKey::Version { version: v, .. }) if latest.is_none_or(|l| v > l) => latest = Some(v),
                _ => {}
            }
        }
        let Some(version) = version.or(latest) else {
            return Ok(None);
        };
        let key = collection_key(uuid, version);
        match self.store.get(&key).await {
            Ok(bytes) => Ok(Some((version.to_string(), Self::parse(&key, &bytes)?))),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Write version `version` of collection `uuid` create-only: the same bytes there are
    /// success (a repeated request), others a conflict.
    pub async fn put_collection(
        &self,
        uuid: &str,
        version: &str,
        doc: &Map<String, Value>,
    ) -> Result<Written, BucketError> {
        let key = collection_key(uuid, version);
        let conflict = || BucketError::Conflict {
            doc: Doc::Collection,
            uuid: uuid.to_string(),
            version: Some(version.to_string()),
        };
        let written = self.create_bytes(&key, Bytes::from(c::to_bytes(doc)), conflict).await?;
        self.follow(&key).await?;
        Ok(written)
    }

    /// Tombstone collection `uuid` (every version), naming who deleted it.
    pub async fn put_collection_tombstone(&self, uuid: &str, email: &str) -> Result<Written, BucketError> {
        let key = collection_tombstone_key(uuid);
        let conflict = || BucketError::Conflict {
            doc: Doc::CollectionTombstone,
            uuid: uuid.to_string(),
            version: None,
        };
        let written = self
            .create_bytes(&key, Bytes::from(c::tombstone_bytes(email)), conflict)
            .await?;
        self.follow(&key).await?;
        Ok(written)
    }

    /// A JSON document of at most [`MAX_LINKED`] bytes at `key`, parsed; `Err` says why
    /// an item naming it does not resolve.
    async fn linked_json(&self, key: &str, what: &str) -> Result<Result<Value, String>, BucketError> {
        let size = match self.store.head(key).await {
            Ok(m) => m.size,
            Err(StoreError::NotFound(_)) => return Ok(Err(format!("{what} not found"))),
            Err(e) => return Err(e.into()),
        };
        if size > MAX_LINKED {
            return Ok(Err(format!("{what} is larger than {MAX_LINKED} bytes")));
        }
        let bytes = match self.store.get(key).await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => return Ok(Err(format!("{what} not found"))),
            Err(e) => return Err(e.into()),
        };
        Ok(serde_json::from_slice(&bytes).map_err(|e| format!("{what} is not JSON: {e}")))
    }

    /// Whether one (checked) item resolves: a `file`, `bundle` or `collection` exists at
    /// its uuid and version; any other type names a JSON file whose content holds its
    /// `fragment`. `Err` (outer) only when storage fails.
    async fn resolve_item(&self, item: &Value) -> Result<Result<(), String>, BucketError> {
        let field = |n: &str| item.get(n).and_then(Value::as_str).unwrap_or_default();
        let (kind, uuid, version) = (field("type"), field("uuid"), field("version"));
        let key = match kind {
            "file" => super::keys::file_key(uuid, version),
            "bundle" => super::keys::bundle_key(uuid, version),
            "collection" => collection_key(uuid, version),
            _ => super::keys::file_key(uuid, version),
        };
        let doc = match self.linked_json(&key, &format!("{kind} {uuid}.{version}")).await? {
            Ok(d) => d,
            Err(why) => return Ok(Err(why)),
        };
        if c::DOCUMENT_TYPES.contains(&kind) {
            return Ok(Ok(()));
        }
        let meta: crate::model::manifest::FileMetadata = match serde_json::from_value(doc) {
            Ok(m) => m,
            Err(e) => return Ok(Err(format!("file {uuid}.{version} is unreadable: {e}"))),
        };
        let blob = crate::model::checksum::blob_key(&meta.sha256, &meta.sha1, &meta.s3_etag, &meta.crc32c);
        let content = match self
            .linked_json(&blob, &format!("the content of file {uuid}.{version}"))
            .await?
        {
            Ok(d) => d,
            Err(why) => return Ok(Err(why)),
        };
        Ok(c::resolve_fragment(&content, field("fragment")).map(drop))
    }

    /// Check that every item resolves (up to 64 at once); the first that does not, in
    /// the items' order, is a [`CollectionError::InvalidLink`] naming it.
    pub async fn verify_items(&self, items: &[Value]) -> Result<Result<(), CollectionError>, BucketError> {
        for chunk in items.chunks(VERIFY_CONCURRENCY) {
            let mut results = Vec::with_capacity(chunk.len());
            for item in chunk {
                results.push(self.resolve_item(item));
            }
            let results = futures::future::join_all(results).await;
            for (item, r) in chunk.iter().zip(results) {
                if let Err(why) = r? {
                    let shown: String = item.to_string().chars().take(512).collect();
                    return Ok(Err(CollectionError::InvalidLink(format!(
                        "Error while parsing the link {shown}: {why}"
                    ))));
                }
            }
        }
        Ok(Ok(()))
    }
}
