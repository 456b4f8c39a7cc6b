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

/// Documents looked at once (the original checked items in batches of 64 too).
const VERIFY_CONCURRENCY: usize = 64;
/// Most bytes of files' content one check reads (so 1000 fragments cannot make it read a
/// gigabyte).
pub const MAX_READ: u64 = 32 * 1024 * 1024;

impl<S: Store, F: FileDoc> Bucket<'_, S, F> {
    /// What the bucket holds of collection `uuid`: its version `version` (or its latest)
    /// with the document, or that it was deleted, or nothing (one listing, one read).
    pub async fn lookup_collection(&self, uuid: &str, version: Option<&str>) -> Result<Lookup, BucketError> {
        let keys = list_all(self.store, &collection_prefix(uuid)).await?;
        let mut latest: Option<&str> = None;
        for k in &keys {
            match parse_collection_key(k) {
                Some(CollectionKey::Tombstone { .. }) => return Ok(Lookup::Deleted),
                Some(CollectionKey::Version { version: v, .. }) if latest.is_none_or(|l| v > l) => latest = Some(v),
                _ => {}
            }
        }
        let Some(version) = version.or(latest) else {
            return Ok(Lookup::Absent);
        };
        Ok(match self.collection_at(uuid, version).await? {
            Some(doc) => Lookup::Found {
                version: version.to_string(),
                doc,
            },
            None => Lookup::Absent,
        })
    }

    /// Collection `uuid` at `version` (or its latest): `(version, document)`; `None` when
    /// there is none, or a tombstone hides it.
    pub async fn collection(
        &self,
        uuid: &str,
        version: Option<&str>,
    ) -> Result<Option<(String, Map<String, Value>)>, BucketError> {
        Ok(match self.lookup_collection(uuid, version).await? {
            Lookup::Found { version, doc } => Some((version, doc)),
            Lookup::Deleted | Lookup::Absent => None,
        })
    }

    /// The document of collection `uuid` at `version`, read without looking for its
    /// tombstone (for a caller that just did).
    pub async fn collection_at(&self, uuid: &str, version: &str) -> Result<Option<Map<String, Value>>, BucketError> {
        let key = collection_key(uuid, version);
        match self.store.get(&key).await {
            Ok(bytes) => Ok(Some(Self::parse(&key, &bytes)?)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Who owns what, from the bucket alone (to rebuild the owner index, which the
    /// original kept outside the bucket): every collection under `collections/`, deleted
    /// or with each version and its `owner`. Versions whose document names no owner are
    /// left out (and counted in the second part).
    pub async fn collection_ownership(&self) -> Result<(Vec<Ownership>, usize), BucketError> {
        use std::collections::BTreeMap;
        let keys = list_all(self.store, super::keys::COLLECTIONS).await?;
        let mut by_uuid: BTreeMap<&str, Option<Vec<&str>>> = BTreeMap::new();
        for k in &keys {
            match parse_collection_key(k) {
                Some(CollectionKey::Tombstone { uuid }) => {
                    by_uuid.insert(uuid, None);
                }
                Some(CollectionKey::Version { uuid, version }) => {
                    if let Some(vs) = by_uuid.entry(uuid).or_insert_with(|| Some(Vec::new())) {
                        vs.push(version);
                    }
                }
                None => {}
            }
        }
        let mut out = Vec::with_capacity(by_uuid.len());
        let mut ownerless = 0;
        for (uuid, versions) in by_uuid {
            let Some(versions) = versions else {
                out.push(Ownership::Deleted(uuid.to_string()));
                continue;
            };
            let mut owned = Vec::with_capacity(versions.len());
            for v in versions {
                match self.collection_at(uuid, v).await?.as_ref().and_then(|d| d.get("owner")) {
                    Some(Value::String(owner)) => owned.push((v.to_string(), owner.clone())),
                    _ => ownerless += 1,
                }
            }
            out.push(Ownership::Owned(uuid.to_string(), owned));
        }
        Ok((out, ownerless))
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

    /// The size of the object at `key`, or why an item naming it does not resolve (absent,
    /// or larger than [`MAX_LINKED`]).
    async fn linked_size(&self, key: &str, what: &str) -> Result<Result<u64, String>, BucketError> {
        match self.store.head(key).await {
            Ok(m) if m.size > MAX_LINKED => Ok(Err(format!("{what} is larger than {MAX_LINKED} bytes"))),
            Ok(m) => Ok(Ok(m.size)),
            Err(StoreError::NotFound(_)) => Ok(Err(format!("{what} not found"))),
            Err(e) => Err(e.into()),
        }
    }

    /// The JSON at `key` (at most [`MAX_LINKED`] bytes), or why it is unusable: one GET,
    /// its size checked on the response's metadata before the body is read.
    async fn linked_json(&self, key: &str, what: &str) -> Result<Result<(u64, Value), String>, BucketError> {
        use futures::StreamExt;
        let (meta, _, mut body) = match self.store.get_range(key, None).await {
            Ok(r) => r,
            Err(StoreError::NotFound(_)) => return Ok(Err(format!("{what} not found"))),
            Err(e) => return Err(e.into()),
        };
        if meta.size > MAX_LINKED {
            return Ok(Err(format!("{what} is larger than {MAX_LINKED} bytes")));
        }
        let mut bytes = Vec::with_capacity(meta.size as usize);
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| BucketError::Store(e.into()))?);
            // A store that under-reported the size still cannot make us hold more.
            if bytes.len() as u64 > MAX_LINKED {
                return Ok(Err(format!("{what} is larger than {MAX_LINKED} bytes")));
            }
        }
        Ok(serde_json::from_slice(&bytes)
            .map(|v| (bytes.len() as u64, v))
            .map_err(|e| format!("{what} is not JSON: {e}")))
    }

    /// Check that every item resolves: a `file`, `bundle` or `collection` exists at its
    /// uuid and version (at most [`MAX_LINKED`] bytes); any other type names a JSON file
    /// whose content (at most [`MAX_LINKED`]) holds its `fragment`. Each document and
    /// content is read once per call, 64 at a time, and at most [`MAX_READ`] bytes of
    /// content in all. The first item that does not resolve, in the items' order, is a
    /// [`CollectionError::InvalidLink`] naming it.
    pub async fn verify_items(&self, items: &[Value]) -> Result<Result<(), CollectionError>, BucketError> {
        use std::collections::{BTreeSet, HashMap};
        let field = |i: &Value, n: &str| i.get(n).and_then(Value::as_str).unwrap_or_default().to_string();
        // What each item needs: its document, or for a fragment its file and its content.
        let (fragments, documents): (Vec<&Value>, Vec<&Value>) = items.iter().partition(|i| is_fragment(i));
        let doc_keys: BTreeSet<String> = documents.iter().filter_map(|i| item_key(i)).collect();
        let file_keys: BTreeSet<String> = fragments.iter().filter_map(|i| item_key(i)).collect();
        let mut docs: HashMap<String, Result<(), String>> = HashMap::new();
        for chunk in doc_keys.into_iter().collect::<Vec<_>>().chunks(VERIFY_CONCURRENCY) {
            let heads = futures::future::join_all(chunk.iter().map(|k| self.linked_size(k, "the document"))).await;
            for (key, r) in chunk.iter().zip(heads) {
                docs.insert(key.clone(), r?.map(drop));
            }
        }
        // A fragment's file: its metadata, which names its content.
        let mut blobs: HashMap<String, Result<String, String>> = HashMap::new();
        for chunk in file_keys.into_iter().collect::<Vec<_>>().chunks(VERIFY_CONCURRENCY) {
            let reads = futures::future::join_all(chunk.iter().map(|k| self.linked_json(k, "the file"))).await;
            for (key, r) in chunk.iter().zip(reads) {
                let blob = r?.and_then(|(_, meta)| {
                    serde_json::from_value::<crate::model::manifest::FileMetadata>(meta)
                        .map(|m| m.checksums().blob_key())
                        .map_err(|e| format!("the file is unreadable: {e}"))
                });
                blobs.insert(key.clone(), blob);
            }
        }
        let mut contents: HashMap<String, Result<Value, String>> = HashMap::new();
        let mut read = 0u64;
        for item in items {
            let key = item_key(item).unwrap_or_default();
            let why = if !is_fragment(item) {
                docs.get(&key).and_then(|r| r.clone().err())
            } else {
                match blobs.get(&key) {
                    Some(Ok(blob)) => {
                        if !contents.contains_key(blob) {
                            let got = self.linked_json(blob, "the file's content").await?;
                            if let Ok((size, _)) = &got {
                                read += size;
                            }
                            if read > MAX_READ {
                                return Ok(Err(CollectionError::InvalidLink(format!(
                                    "the items' files hold more than {MAX_READ} bytes to check"
                                ))));
                            }
                            contents.insert(blob.clone(), got.map(|(_, v)| v));
                        }
                        match &contents[blob] {
                            Ok(doc) => c::resolve_fragment(doc, &field(item, "fragment")).err(),
                            Err(why) => Some(why.clone()),
                        }
                    }
                    Some(Err(why)) => Some(why.clone()),
                    None => Some("the file not found".into()),
                }
            };
            if let Some(why) = why {
                let short = |n: &str| field(item, n).chars().take(64).collect::<String>();
                let shown: String = item.to_string().chars().take(512).collect();
                return Ok(Err(CollectionError::InvalidLink(format!(
                    "Error while parsing the link {shown}: {} {}.{}: {}",
                    short("type"),
                    short("uuid"),
                    short("version"),
                    why.chars().take(512).collect::<String>()
                ))));
            }
        }
        Ok(Ok(()))
    }
}

/// What [`Bucket::lookup_collection`] found.
pub enum Lookup {
    /// No such collection (or version).
    Absent,
    /// The collection was deleted (every version).
    Deleted,
    /// The version asked for, or the latest.
    Found {
        /// Its version.
        version: String,
        /// Its document.
        doc: Map<String, Value>,
    },
}

/// Whether a collection item names a fragment of a file (not a document of its own).
fn is_fragment(item: &Value) -> bool {
    let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
    !c::DOCUMENT_TYPES.contains(&kind)
}

/// The key of the document a collection item names (a fragment's: its file's).
pub fn item_key(item: &Value) -> Option<String> {
    let field = |n: &str| item.get(n).and_then(Value::as_str);
    let (kind, uuid, version) = (field("type")?, field("uuid")?, field("version")?);
    Some(match kind {
        "bundle" => super::keys::bundle_key(uuid, version),
        "collection" => collection_key(uuid, version),
        _ => super::keys::file_key(uuid, version),
    })
}

/// What the bucket says of one collection's owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Deleted: no one has it.
    Deleted(String),
    /// Its versions, each with its owner.
    Owned(String, Vec<(String, String)>),
}
