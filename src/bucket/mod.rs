//! The meaning of a replica's bucket, over [`Store`]: what its keys are ([`keys`]), which
//! bundle versions can be seen ([`visibility`]), its documents read and parsed once and
//! kept ([`cache`], [`fresh`]), create-only writes with the original's compare rules, and
//! the work that must follow every write ([`followup`]). Handlers, the indexer,
//! `dss reindex` and every job go through [`Bucket`]: nothing else formats a key, applies
//! a tombstone rule or decides whether a second write of a document is the same one.
//!
//! Ingest (a staged object verified into a blob and published as a file) is here too
//! ([`ingest`]): the handler runs it inline for small files, a job for large ones.

pub mod cache;
pub mod checkout;
pub mod collections;
pub mod events;
pub mod followup;
pub mod fresh;
pub mod ingest;
pub mod keys;
pub mod replicate;
pub mod stream;
pub mod sync;
pub mod visibility;

pub use followup::{JobSink, Origin};
pub use fresh::FreshListings;
pub use visibility::Visibility;

use crate::model::heap::HeapSize;
use crate::model::manifest::{BundleManifest, FileMetadata, Tombstone};
use crate::model::{DssVersion, MaybeSend, MaybeSync};
use crate::storage::{list_all, PutOptions, Store, StoreError};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use keys::{bundle_key, bundle_prefix, file_key, file_prefix, parse_bundle_key, tombstone_key, BundleKey};
use std::sync::Arc;

/// What a bucket read or write can end in besides success.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored document is not what its key says it is.
    #[error("{key} unreadable: {detail}")]
    Corrupt {
        /// Its key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// A create-only write found a different document at its key.
    #[error("{doc:?} {uuid}.{} already exists with other content", version.as_deref().unwrap_or("None"))]
    Conflict {
        /// What was written.
        doc: Doc,
        /// Its uuid.
        uuid: String,
        /// Its version (`None`: an unversioned tombstone).
        version: Option<String>,
    },
    /// The write succeeded, but the work that must follow it could not be recorded; a
    /// repeat of the write is idempotent and records it again.
    #[error("stored, but the work that must follow could not be recorded: {0}")]
    FollowUp(String),
    /// A staged source cannot be used (missing, unreadable, not allowed).
    #[error("{0}")]
    Source(String),
    /// A `source_url` of a scheme nobody reads.
    #[error("unknown source scheme {0}")]
    UnknownScheme(String),
    /// Staged bytes that do not match the checksums given for them.
    #[error("{0}")]
    ChecksumMismatch(String),
}

impl BucketError {
    /// Whether trying again later may succeed (storage down; follow-up not recorded).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BucketError::Store(StoreError::Unavailable(_)) | BucketError::FollowUp(_)
        )
    }
}

/// The kinds of document a bucket holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    /// `files/{uuid}.{version}`.
    File,
    /// `bundles/{uuid}.{version}`.
    Bundle,
    /// `bundles/{uuid}[.{version}].dead`.
    Tombstone,
    /// `collections/{uuid}.{version}`.
    Collection,
    /// `collections/{uuid}.dead`.
    CollectionTombstone,
}

/// How a create-only write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The document is new.
    Created,
    /// The same document was there already (a repeated request).
    Existing,
}

/// A file metadata document as a replica keeps it in memory: the document, and whatever
/// its readers prepare from it once (the API keeps its response headers).
pub trait FileDoc: HeapSize + MaybeSend + MaybeSync + Sized + 'static {
    /// Prepared from the stored document.
    fn from_meta(meta: FileMetadata) -> Self;
    /// The stored document.
    fn meta(&self) -> &FileMetadata;
}

impl FileDoc for FileMetadata {
    fn from_meta(meta: FileMetadata) -> Self {
        meta
    }
    fn meta(&self) -> &FileMetadata {
        self
    }
}

/// What one replica keeps of what it read: immutable documents (by key, forever, within a
/// byte budget) and what each uuid's listing said (for a short time, see [`fresh`]).
pub struct Memo<F> {
    /// `files/{uuid}.{version}`, parsed.
    pub files: cache::ImmutableCache<String, F>,
    /// `bundles/{uuid}.{version}`, parsed.
    pub bundles: cache::ImmutableCache<String, BundleManifest>,
    /// What `bundles/{uuid}.` and `files/{uuid}.` listed, fresh for a short time.
    pub listings: FreshListings,
}

impl<F> Memo<F> {
    /// Forget what was listed of the uuid of `key`, which was just written (here, or by
    /// another backend that said so).
    pub fn written(&self, key: &str) {
        if let Some(prefix) = keys::listing_of(key) {
            self.listings.invalidate(&prefix);
        }
    }
}

impl<F: FileDoc> Default for Memo<F> {
    fn default() -> Self {
        Memo {
            files: cache::ImmutableCache::new(cache::budgets::FILES),
            bundles: cache::ImmutableCache::new(cache::budgets::BUNDLES),
            listings: FreshListings::default(),
        }
    }
}

/// Whether a listing may come from what was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// What was listed within the freshness time will do (reads).
    Kept,
    /// List anew (decisions that must see every write made so far, such as indexing).
    Fresh,
}

/// One replica's bucket: its store, what it keeps in memory, and where the work that
/// follows its writes is recorded. Cheap to make: it borrows all three.
pub struct Bucket<'a, S, F = FileMetadata> {
    name: &'a str,
    store: &'a S,
    memo: &'a Memo<F>,
    sink: Option<&'a dyn JobSink>,
    origin: Origin,
}

impl<S, F> Clone for Bucket<'_, S, F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S, F> Copy for Bucket<'_, S, F> {}

impl<'a, S: Store, F: FileDoc> Bucket<'a, S, F> {
    /// Replica `name`'s bucket in `store`, keeping documents in `memo`; the work that follows
    /// its writes goes to `sink` (none: nothing follows, as at the edge, which writes nothing).
    pub fn new(name: &'a str, store: &'a S, memo: &'a Memo<F>, sink: Option<&'a dyn JobSink>) -> Self {
        Bucket {
            name,
            store,
            memo,
            sink,
            origin: Origin::Client,
        }
    }

    /// This bucket, with its writes marked as replication's (see [`Origin`]).
    pub fn for_replication(self) -> Self {
        Bucket {
            origin: Origin::Replication,
            ..self
        }
    }

    /// The replica's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The store underneath (blobs are read and presigned there).
    pub fn store(&self) -> &'a S {
        self.store
    }

    async fn listing(&self, prefix: &str, now: DateTime<Utc>, how: Listing) -> Result<Arc<Vec<String>>, StoreError> {
        let store = self.store;
        self.memo
            .listings
            .keys(prefix, now, how == Listing::Fresh, || list_all(store, prefix))
            .await
    }

    /// Parse `bytes` read at `key`.
    fn parse<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, BucketError> {
        parse_document(key, bytes)
    }

    /// The metadata of file `uuid` at `version`, or at its latest version (through the
    /// kept listing). `None` when there is none; a `version` that is not a version is
    /// simply not found.
    pub async fn file(
        &self,
        uuid: &str,
        version: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Arc<F>>, BucketError> {
        let version = match version {
            Some(v) => match DssVersion::parse(v) {
                Ok(v) => v.as_str().to_string(),
                Err(_) => return Ok(None),
            },
            None => {
                let prefix = file_prefix(uuid);
                let keys = self.listing(&prefix, now, Listing::Kept).await?;
                match keys.iter().filter_map(|k| k.strip_prefix(&prefix)).max() {
                    Some(v) => v.to_string(),
                    None => return Ok(None),
                }
            }
        };
        self.file_at(uuid, &version).await
    }

    /// The metadata of file `uuid` at exactly `version`, read and parsed once for all
    /// concurrent readers of a cold key.
    pub async fn file_at(&self, uuid: &str, version: &str) -> Result<Option<Arc<F>>, BucketError> {
        let key = file_key(uuid, version);
        let loaded = self
            .memo
            .files
            .get_or_load(&key, || async {
                let bytes = self.store.get(&key).await.map_err(not_found_is_none)?;
                let meta: FileMetadata = Self::parse(&key, &bytes).map_err(Some)?;
                Ok(Arc::new(F::from_meta(meta)))
            })
            .await;
        found(loaded)
    }

    /// `look` applied to the metadata of file `uuid` at exactly `version`, from the memo
    /// or read from the store without keeping it: a bundle PUT looks up thousands of files
    /// at once, which would push out the documents that readers ask for.
    pub async fn peek_file<T>(
        &self,
        uuid: &str,
        version: &str,
        look: impl FnOnce(&FileMetadata) -> T,
    ) -> Result<Option<T>, BucketError> {
        let key = file_key(uuid, version);
        if let Some(doc) = self.memo.files.get(&key) {
            return Ok(Some(look(doc.meta())));
        }
        match self.store.get(&key).await {
            Ok(bytes) => Ok(Some(look(&Self::parse::<FileMetadata>(&key, &bytes)?))),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What the keys of bundle `uuid` say about its versions.
    pub async fn visibility(&self, uuid: &str, now: DateTime<Utc>, how: Listing) -> Result<Visibility, BucketError> {
        let keys = self.listing(&bundle_prefix(uuid), now, how).await?;
        Ok(Visibility::of(keys.iter().map(String::as_str)))
    }

    /// The manifest of bundle `uuid` at `version`, or its latest, under the original's
    /// tombstone rules (see [`visibility`]); `None` when nothing visible exists. A version
    /// the kept listing does not know is looked for in a new listing before `None`.
    pub async fn manifest(
        &self,
        uuid: &str,
        version: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Arc<BundleManifest>>, BucketError> {
        if version.is_some_and(|v| DssVersion::parse(v).is_err()) {
            return Ok(None);
        }
        let prefix = bundle_prefix(uuid);
        let mut keys = self.listing(&prefix, now, Listing::Kept).await?;
        if let Some(v) = version {
            if !keys.contains(&bundle_key(uuid, v)) {
                keys = self.listing(&prefix, now, Listing::Fresh).await?;
            }
        }
        let seen = Visibility::of(keys.iter().map(String::as_str));
        let chosen = match version {
            Some(v) if seen.visible(v) => v,
            Some(_) => return Ok(None),
            None => match seen.latest() {
                Some(v) => v,
                None => return Ok(None),
            },
        };
        self.manifest_at(uuid, chosen).await
    }

    /// The manifest stored at `bundles/{uuid}.{version}`, tombstoned or not; parsed once
    /// for all concurrent readers of a cold key, and kept whatever its size as long as it
    /// fits the byte budget (each request serialises only its page).
    pub async fn manifest_at(&self, uuid: &str, version: &str) -> Result<Option<Arc<BundleManifest>>, BucketError> {
        let key = bundle_key(uuid, version);
        let loaded = self
            .memo
            .bundles
            .get_or_load(&key, || async {
                let bytes = self.store.get(&key).await.map_err(not_found_is_none)?;
                let mut m: BundleManifest = Self::parse(&key, &bytes).map_err(Some)?;
                drop(bytes);
                // The parser grows the list by doubling: up to half of it would be spare room.
                m.files.shrink_to_fit();
                Ok(Arc::new(m))
            })
            .await;
        found(loaded)
    }

    /// The tombstone document of bundle `uuid` (of one `version`, or of all), as JSON.
    pub async fn tombstone(&self, uuid: &str, version: Option<&str>) -> Result<Option<serde_json::Value>, BucketError> {
        let key = tombstone_key(uuid, version);
        match self.store.get(&key).await {
            Ok(b) => Self::parse(&key, &b).map(Some),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether any key of bundle `uuid` (of `version`, when given) exists, tombstones
    /// included: what `DELETE` asks before it writes a tombstone.
    pub async fn has_bundle_keys(&self, uuid: &str, version: Option<&str>) -> Result<bool, BucketError> {
        let prefix = match version {
            Some(v) => bundle_key(uuid, v),
            None => bundle_prefix(uuid),
        };
        Ok(!self.store.list(&prefix, None, 1).await?.keys.is_empty())
    }

    /// The bytes of the blob at `blob_key` ([`crate::model::Checksums::blob_key`]).
    pub async fn blob(&self, blob_key: &str) -> Result<Bytes, BucketError> {
        Ok(self.store.get(blob_key).await?)
    }

    /// Every stored bundle version (tombstoned or not) in one page of the listing after
    /// `start_after`, and where the next page starts: what `dss reindex` walks.
    pub async fn bundle_versions(
        &self,
        start_after: Option<&str>,
    ) -> Result<(Vec<(String, String)>, Option<String>), BucketError> {
        let page = self.store.list(keys::BUNDLES, start_after, 1000).await?;
        let versions = page
            .keys
            .iter()
            .filter_map(|k| match parse_bundle_key(k) {
                Some(BundleKey::Manifest { uuid, version }) => Some((uuid.to_string(), version.to_string())),
                _ => None,
            })
            .collect();
        Ok((versions, page.next_token))
    }

    /// Up to `per_page` visible `(uuid, version)` pairs of bundles whose uuid starts with
    /// `uuid_prefix`, after key `start_after`, and the key to resume after when more
    /// keys follow.
    ///
    /// Keys of one uuid are contiguous and its tombstones sort after its versions, so a
    /// uuid's visibility is known once the listing moves past it. A page ends on a
    /// bundle key, so the next page re-reads the rest of that uuid's keys and nothing is
    /// skipped or repeated (the original resumed after the last key read, and could skip).
    ///
    /// At most about `scan_budget` keys are read per call: over a prefix full of
    /// tombstones, a page may come back short (even empty) with a resume key at the end
    /// of the last uuid fully read, so one request never walks the whole bucket.
    pub async fn visible_page(
        &self,
        uuid_prefix: &str,
        start_after: Option<String>,
        per_page: usize,
        scan_budget: usize,
    ) -> Result<(Vec<(String, String)>, Option<String>), BucketError> {
        let prefix = keys::bundles_under(uuid_prefix);
        let mut out: Vec<(String, String)> = Vec::new();
        let mut scanned = 0usize;
        // The last key of the uuid before the current one: a safe place to resume.
        let mut prev_key: Option<String> = None;
        let mut token = start_after;
        let mut group_uuid: Option<String> = None;
        // The current uuid's keys, and what they make visible.
        let mut group = Visibility::default();

        // Emits the finished group; returns the resume key (its bundle key) if the page filled up.
        let flush = |out: &mut Vec<(String, String)>, uuid: &str, group: &mut Visibility| -> Option<String> {
            let done = std::mem::take(group);
            for v in done.visible_versions() {
                out.push((uuid.to_string(), v.to_string()));
                if out.len() == per_page {
                    return Some(bundle_key(uuid, v));
                }
            }
            None
        };

        loop {
            let page = self.store.list(&prefix, token.as_deref(), 1000).await?;
            for key in &page.keys {
                let Some(uuid) = parse_bundle_key(key).map(|k| k.uuid()) else {
                    continue;
                };
                if group_uuid.as_deref() != Some(uuid) {
                    if let Some(g) = group_uuid.take() {
                        if let Some(resume) = flush(&mut out, &g, &mut group) {
                            return Ok((out, Some(resume)));
                        }
                        if scanned >= scan_budget {
                            if let Some(resume) = prev_key.take() {
                                return Ok((out, Some(resume)));
                            }
                        }
                    }
                    group_uuid = Some(uuid.to_string());
                }
                group.add(key);
                scanned += 1;
                prev_key = Some(key.clone());
            }
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        if let Some(g) = group_uuid.take() {
            if let Some(resume) = flush(&mut out, &g, &mut group) {
                // Filled exactly at the end of the listing: say "more" only if keys follow.
                let more = !self.store.list(&prefix, Some(&resume), 1).await?.keys.is_empty();
                return Ok((out, more.then_some(resume)));
            }
        }
        Ok((out, None))
    }

    /// Write manifest `bytes` of bundle `uuid` at `version` create-only; the same bytes
    /// there already are success, other bytes a conflict.
    pub async fn put_manifest(&self, uuid: &str, version: &str, bytes: Bytes) -> Result<Written, BucketError> {
        let key = bundle_key(uuid, version);
        let conflict = || BucketError::Conflict {
            doc: Doc::Bundle,
            uuid: uuid.to_string(),
            version: Some(version.to_string()),
        };
        let written = self.create_bytes(&key, bytes, conflict).await?;
        self.follow(&key).await?;
        Ok(written)
    }

    /// Write a tombstone of bundle `uuid` (of one `version`, or of all) create-only; the
    /// same bytes there already are success, other bytes a conflict.
    pub async fn put_tombstone(
        &self,
        uuid: &str,
        version: Option<&str>,
        tombstone: &Tombstone,
    ) -> Result<Written, BucketError> {
        let key = tombstone_key(uuid, version);
        let conflict = || BucketError::Conflict {
            doc: Doc::Tombstone,
            uuid: uuid.to_string(),
            version: version.map(str::to_string),
        };
        let written = self
            .create_bytes(&key, Bytes::from(tombstone.to_bytes()), conflict)
            .await?;
        self.follow(&key).await?;
        Ok(written)
    }

    /// Write the metadata of file `uuid` at `version` create-only; an existing document
    /// that parses to the same JSON is success (the original compared parsed documents:
    /// older writers spaced them differently), any other a conflict.
    pub async fn put_file(&self, uuid: &str, version: &str, meta: &FileMetadata) -> Result<Written, BucketError> {
        let key = file_key(uuid, version);
        let ours = serde_json::to_value(meta).map_err(|e| BucketError::Corrupt {
            key: key.clone(),
            detail: e.to_string(),
        })?;
        let conflict = || BucketError::Conflict {
            doc: Doc::File,
            uuid: uuid.to_string(),
            version: Some(version.to_string()),
        };
        let written = self
            .create_parsed(&key, Bytes::from(meta.to_bytes()), &ours, conflict)
            .await?;
        self.follow(&key).await?;
        Ok(written)
    }

    /// Write the stored bytes of document `key` (file metadata, manifest or tombstone) as
    /// another replica holds them, create-only under that document's compare rule: what
    /// replication and `dss sync` write. The bytes are kept as they are (documents the
    /// original wrote keep their spacing).
    pub async fn put_copy(&self, key: &str, bytes: Bytes) -> Result<Written, BucketError> {
        let conflict = |doc| {
            let (uuid, version) = match parse_bundle_key(key) {
                Some(k) => (k.uuid().to_string(), k.version().map(str::to_string)),
                None => {
                    let rest = key.strip_prefix(keys::FILES).unwrap_or(key);
                    let (u, v) = rest.split_once('.').unwrap_or((rest, ""));
                    (u.to_string(), Some(v.to_string()))
                }
            };
            BucketError::Conflict { doc, uuid, version }
        };
        if let Some(k) = keys::parse_collection_key(key) {
            let (doc, uuid, version) = match k {
                keys::CollectionKey::Version { uuid, version } => (Doc::Collection, uuid, Some(version.to_string())),
                keys::CollectionKey::Tombstone { uuid } => (Doc::CollectionTombstone, uuid, None),
            };
            let uuid = uuid.to_string();
            let written = self
                .create_bytes(key, bytes, || BucketError::Conflict { doc, uuid, version })
                .await?;
            self.follow(key).await?;
            return Ok(written);
        }
        let written = match parse_bundle_key(key) {
            Some(BundleKey::Manifest { .. }) => self.create_bytes(key, bytes, || conflict(Doc::Bundle)).await?,
            Some(_) => self.create_bytes(key, bytes, || conflict(Doc::Tombstone)).await?,
            None if key.starts_with(keys::FILES) && keys::immutable_document(key) => {
                let ours: serde_json::Value = Self::parse(key, &bytes)?;
                self.create_parsed(key, bytes, &ours, || conflict(Doc::File)).await?
            }
            None => {
                return Err(BucketError::Corrupt {
                    key: key.to_string(),
                    detail: "not a document of the bucket".into(),
                })
            }
        };
        self.follow(key).await?;
        Ok(written)
    }

    /// Write `bytes` over whatever document is at `key`: what `dss sync` does to a
    /// replica whose copy differs from the source's (never an API request: documents are
    /// otherwise create-only). The work that follows a write follows it.
    pub async fn restore(&self, key: &str, bytes: Bytes) -> Result<(), BucketError> {
        if !keys::immutable_document(key) {
            return Err(BucketError::Corrupt {
                key: key.to_string(),
                detail: "not a document of the bucket".into(),
            });
        }
        self.store.put(key, bytes, PutOptions::overwrite()).await?;
        // A parsed copy of the old document may be kept: forget it.
        self.memo.files.remove(&key.to_string());
        self.memo.bundles.remove(&key.to_string());
        self.follow(key).await
    }

    /// Create-only write of `bytes` at `key`, where an existing document equal to `ours`
    /// once parsed is the same one.
    async fn create_parsed(
        &self,
        key: &str,
        bytes: Bytes,
        ours: &serde_json::Value,
        conflict: impl FnOnce() -> BucketError,
    ) -> Result<Written, BucketError> {
        match self.store.put(key, bytes, PutOptions::if_absent()).await {
            Ok(()) => Ok(Written::Created),
            Err(StoreError::AlreadyExists(_)) => {
                let existing: serde_json::Value = Self::parse(key, &self.store.get(key).await?)?;
                if &existing == ours {
                    Ok(Written::Existing)
                } else {
                    Err(conflict())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn create_bytes(
        &self,
        key: &str,
        bytes: Bytes,
        conflict: impl FnOnce() -> BucketError,
    ) -> Result<Written, BucketError> {
        match self.store.put(key, bytes.clone(), PutOptions::if_absent()).await {
            Ok(()) => Ok(Written::Created),
            Err(StoreError::AlreadyExists(_)) if self.store.get(key).await? == bytes => Ok(Written::Existing),
            Err(StoreError::AlreadyExists(_)) => Err(conflict()),
            Err(e) => Err(e.into()),
        }
    }

    /// What follows every successful write of `key` (new or repeated: a repeat may be a
    /// client retrying after its follow-up could not be recorded): this process's kept
    /// listing of the uuid is forgotten, so its next read sees the write, and the work
    /// that must follow is recorded durably before the write is reported done.
    async fn follow(&self, key: &str) -> Result<(), BucketError> {
        self.memo.written(key);
        let Some(sink) = self.sink else {
            return Ok(());
        };
        sink.after_write(self.name, key, self.origin).await.map_err(|e| {
            tracing::error!(key, replica = self.name, "follow-up work not recorded: {e}");
            BucketError::FollowUp(e)
        })
    }
}

/// The document read at `key`, parsed; what does not parse is [`BucketError::Corrupt`].
pub(crate) fn parse_document<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, BucketError> {
    serde_json::from_slice(bytes).map_err(|e| BucketError::Corrupt {
        key: key.to_string(),
        detail: e.to_string(),
    })
}

/// A failed read: `None` when the document is not there, else the error.
fn not_found_is_none(e: StoreError) -> Option<BucketError> {
    match e {
        StoreError::NotFound(_) => None,
        e => Some(e.into()),
    }
}

fn found<T>(loaded: Result<Arc<T>, Option<BucketError>>) -> Result<Option<Arc<T>>, BucketError> {
    match loaded {
        Ok(v) => Ok(Some(v)),
        Err(None) => Ok(None),
        Err(Some(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    fn uuid(i: usize) -> String {
        format!("{i:08x}-0000-4000-8000-000000000000")
    }

    /// A prefix of many tombstoned bundles is walked a bounded number of keys at a
    /// time: pages come back short (even empty) with a key to go on from, and following
    /// them finds every live bundle exactly once.
    #[tokio::test]
    async fn enumeration_reads_a_bounded_number_of_keys_per_page() {
        let store = MemoryStore::new("t", None, Arc::new(crate::model::SystemClock));
        let v = "2020-01-01T000000.000000Z";
        let mut live = Vec::new();
        for i in 0..500 {
            let u = uuid(i);
            store
                .put(&bundle_key(&u, v), Bytes::from_static(b"{}"), PutOptions::default())
                .await
                .unwrap();
            if i % 50 == 7 {
                live.push((u, v.to_string()));
            } else {
                store
                    .put(
                        &tombstone_key(&u, None),
                        Bytes::from_static(b"{}"),
                        PutOptions::default(),
                    )
                    .await
                    .unwrap();
            }
        }
        let memo = Memo::<FileMetadata>::default();
        let bucket = Bucket::new("t", &store, &memo, None);
        let budget = 100;
        let (mut found, mut token, mut calls) = (Vec::new(), None, 0);
        loop {
            calls += 1;
            let (page, next) = bucket.visible_page("", token.clone(), 10, budget).await.unwrap();
            assert!(page.len() <= 10);
            found.extend(page);
            match next {
                Some(n) => {
                    assert!(token.as_ref().is_none_or(|t| &n > t), "progress");
                    token = Some(n);
                }
                None => break,
            }
        }
        assert_eq!(found, live);
        // 1,000 keys at about 100 keys a call.
        assert!(calls >= 9, "{calls} calls: the budget was not applied");
    }

    /// Records what it is told to follow; fails while `broken` is set.
    #[derive(Default)]
    struct Recorder {
        seen: std::sync::Mutex<Vec<(String, String)>>,
        broken: std::sync::atomic::AtomicBool,
    }

    impl JobSink for Recorder {
        fn after_write<'a>(
            &'a self,
            replica: &'a str,
            key: &'a str,
            _origin: Origin,
        ) -> crate::model::BoxFuture<'a, Result<(), String>> {
            Box::pin(async move {
                if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err("queue down".into());
                }
                self.seen.lock().unwrap().push((replica.to_string(), key.to_string()));
                Ok(())
            })
        }
        fn submit_ingest(&self, _job: ingest::IngestJob) -> crate::model::BoxFuture<'_, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn submit_checkout(&self, _job: checkout::CheckoutJob) -> crate::model::BoxFuture<'_, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn submit_copy_out(&self, _job: checkout::CopyOutJob) -> crate::model::BoxFuture<'_, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn ingest_failure<'a>(
            &'a self,
            _replica: &'a str,
            _uuid: &'a str,
            _version: &'a str,
        ) -> crate::model::BoxFuture<'a, Option<followup::JobFailure>> {
            Box::pin(async { None })
        }
    }

    const U: &str = "0b0e7c1e-0000-4000-8000-000000000000";
    const V1: &str = "2019-01-01T000000.000000Z";
    const V2: &str = "2019-01-02T000000.000000Z";

    fn meta(size: u64) -> FileMetadata {
        FileMetadata::new(
            7,
            V1,
            "application/json",
            size,
            &crate::model::checksum::checksums_of(b"x"),
        )
    }

    fn tomb(reason: &str, version: Option<&str>) -> Tombstone {
        Tombstone {
            email: "admin@example.org".into(),
            reason: Some(reason.into()),
            admin_deleted: true,
            version: version.map(str::to_string),
        }
    }

    fn store() -> MemoryStore {
        MemoryStore::new("t", None, Arc::new(crate::model::SystemClock))
    }

    /// Manifests and tombstones compare by bytes, file metadata by parsed JSON (the
    /// original wrote it with other spacing); a different document is a conflict that
    /// names what was written, and the stored one is left as it was.
    #[tokio::test]
    async fn writes_are_create_only_with_the_originals_compare_rules() {
        let store = store();
        let memo = Memo::<FileMetadata>::default();
        let b = Bucket::new("aws", &store, &memo, None);

        let manifest = Bytes::from(BundleManifest::new(V1, Vec::new(), 7).to_bytes());
        assert_eq!(b.put_manifest(U, V1, manifest.clone()).await.unwrap(), Written::Created);
        assert_eq!(
            b.put_manifest(U, V1, manifest.clone()).await.unwrap(),
            Written::Existing
        );
        let other = Bytes::from(BundleManifest::new(V1, Vec::new(), 8).to_bytes());
        match b.put_manifest(U, V1, other).await {
            Err(BucketError::Conflict {
                doc: Doc::Bundle,
                uuid,
                version,
            }) => {
                assert_eq!((uuid.as_str(), version.as_deref()), (U, Some(V1)))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.get(&bundle_key(U, V1)).await.unwrap(), manifest);

        assert_eq!(
            b.put_tombstone(U, None, &tomb("gone", None)).await.unwrap(),
            Written::Created
        );
        assert_eq!(
            b.put_tombstone(U, None, &tomb("gone", None)).await.unwrap(),
            Written::Existing
        );
        assert!(matches!(
            b.put_tombstone(U, None, &tomb("other", None)).await,
            Err(BucketError::Conflict {
                doc: Doc::Tombstone,
                version: None,
                ..
            })
        ));

        // The same document as the original spaced it.
        let spaced = serde_json::to_vec_pretty(&meta(1)).unwrap();
        store
            .put(&file_key(U, V1), Bytes::from(spaced), PutOptions::if_absent())
            .await
            .unwrap();
        assert_eq!(b.put_file(U, V1, &meta(1)).await.unwrap(), Written::Existing);
        assert!(matches!(
            b.put_file(U, V1, &meta(2)).await,
            Err(BucketError::Conflict { doc: Doc::File, .. })
        ));
        assert_eq!(b.file_at(U, V1).await.unwrap().unwrap().size, 1);
    }

    /// Every successful write, a repeated one too, records its follow-up before it
    /// returns; when that cannot be recorded the write says so, and its repeat (the
    /// document now there) records it.
    #[tokio::test]
    async fn every_write_records_its_follow_up_even_a_repeated_one() {
        let store = store();
        let memo = Memo::<FileMetadata>::default();
        let sink = Recorder::default();
        let b = Bucket::new("aws", &store, &memo, Some(&sink));
        let manifest = Bytes::from(BundleManifest::new(V1, Vec::new(), 7).to_bytes());
        b.put_file(U, V1, &meta(1)).await.unwrap();
        b.put_manifest(U, V1, manifest.clone()).await.unwrap();
        b.put_manifest(U, V1, manifest.clone()).await.unwrap();
        b.put_tombstone(U, Some(V1), &tomb("r", Some(V1))).await.unwrap();
        let keys: Vec<String> = sink
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|(r, k)| format!("{r}:{k}"))
            .collect();
        assert_eq!(
            keys,
            [
                format!("aws:{}", file_key(U, V1)),
                format!("aws:{}", bundle_key(U, V1)),
                format!("aws:{}", bundle_key(U, V1)),
                format!("aws:{}", tombstone_key(U, Some(V1))),
            ]
        );

        sink.broken.store(true, std::sync::atomic::Ordering::SeqCst);
        let m2 = Bytes::from(BundleManifest::new(V2, Vec::new(), 7).to_bytes());
        let failed = b.put_manifest(U, V2, m2.clone()).await;
        assert!(
            matches!(&failed, Err(e @ BucketError::FollowUp(_)) if e.is_transient()),
            "{failed:?}"
        );
        assert!(store.head(&bundle_key(U, V2)).await.is_ok(), "the write itself stands");
        sink.broken.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(b.put_manifest(U, V2, m2).await.unwrap(), Written::Existing);
        assert_eq!(sink.seen.lock().unwrap().last().unwrap().1, bundle_key(U, V2));
    }

    /// Reads of "latest" come from a kept listing, and this process's own writes show
    /// in them at once; a named version the listing does not know is looked for anew.
    #[tokio::test]
    async fn own_writes_are_seen_at_once_and_other_writes_within_freshness() {
        let store = store();
        let memo = Memo::<FileMetadata>::default();
        memo.listings.set_freshness(std::time::Duration::from_secs(3600));
        let b = Bucket::new("aws", &store, &memo, None);
        let now = Utc::now();
        let m = |v: &str| Bytes::from(BundleManifest::new(v, Vec::new(), 7).to_bytes());
        b.put_manifest(U, V1, m(V1)).await.unwrap();
        assert_eq!(b.manifest(U, None, now).await.unwrap().unwrap().version, V1);
        b.put_manifest(U, V2, m(V2)).await.unwrap();
        assert_eq!(b.manifest(U, None, now).await.unwrap().unwrap().version, V2);
        b.put_tombstone(U, Some(V2), &tomb("r", Some(V2))).await.unwrap();
        assert_eq!(b.manifest(U, None, now).await.unwrap().unwrap().version, V1);
        assert!(b.manifest(U, Some(V2), now).await.unwrap().is_none());

        // Another backend's write, straight to the store: a named version is found, the
        // latest moves when the kept listing is renewed.
        let v3 = "2019-01-03T000000.000000Z";
        store
            .put(&bundle_key(U, v3), m(v3), PutOptions::if_absent())
            .await
            .unwrap();
        assert_eq!(b.manifest(U, Some(v3), now).await.unwrap().unwrap().version, v3);
        assert_eq!(b.manifest(U, None, now).await.unwrap().unwrap().version, v3);
        assert!(b.manifest(U, Some("not-a-version"), now).await.unwrap().is_none());

        b.put_file(U, V1, &meta(1)).await.unwrap();
        assert_eq!(b.file(U, None, now).await.unwrap().unwrap().version, V1);
        assert!(b.file(U, Some("junk"), now).await.unwrap().is_none());
    }
}
