//! Which index documents a bucket key stands for, read through the [`Store`] trait, with
//! the original's rules (`dss/index/indexer.py`, `dss/index/bundle.py`):
//!
//! - `bundles/{uuid}.{version}`: the bundle's document, or its tombstone's document when
//!   a tombstone covers that version;
//! - `bundles/{uuid}.{version}.dead`: the tombstone document for that version;
//! - `bundles/{uuid}.dead`: the tombstone document for every version of the bundle;
//! - any other key: nothing (files and collections are not indexed).
//!
//! Only manifest entries marked `indexed` with a JSON content type are read; a file that
//! does not parse is skipped with a warning; a file that cannot be read fails the whole
//! bundle, so it is retried rather than indexed incomplete.

use super::document::{bundle_document, tombstone_document_json, ShapeError};
use super::schema::SchemaScrubber;
use super::IndexOp;
use crate::http::HttpClient;
use crate::model::manifest::{bundle_key, parse_bundle_key, tombstone_key, BundleFile, BundleKey, BundleManifest};
use crate::storage::{list_all, Store, StoreError};
use futures::StreamExt;
use serde_json::Value;

/// Bring the index up to date with one bucket key of one replica: the durable unit of
/// indexing work, submitted after every bundle PUT, PATCH and DELETE.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexJob {
    /// `aws` or `gcp`.
    pub replica: String,
    /// `bundles/{uuid}.{version}`, or a tombstone key.
    pub key: String,
}

/// Indexed files read at once for one bundle.
const READ_CONCURRENCY: usize = 16;
/// An indexed file larger than this is skipped (metadata files are small).
pub const MAX_INDEXED_FILE: u64 = 16 * 1024 * 1024;

/// Why a key could not be turned into documents.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Storage failed (retry later).
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The bundle's shape cannot be described (the original refused these too).
    #[error("bundle shape: {0}")]
    Shape(#[from] ShapeError),
    /// A stored document is not what it should be.
    #[error("{0}")]
    Corrupt(String),
}

impl IndexError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, IndexError::Store(StoreError::Unavailable(_)))
    }
}

/// The index operations that bring the index up to date with `key`.
///
/// With `scrubber`, each file is scrubbed by its JSON schema first (see [`super::schema`]).
pub async fn ops_for_key<S: Store, H: HttpClient>(
    store: &S,
    key: &str,
    scrubber: Option<&SchemaScrubber<H>>,
) -> Result<Vec<IndexOp>, IndexError> {
    match parse_bundle_key(key) {
        Some(BundleKey::Manifest { uuid, version }) => {
            let keys = list_all(store, &format!("bundles/{uuid}.")).await?;
            let all = tombstone_key(uuid, None);
            let one = tombstone_key(uuid, Some(version));
            // Indexing a bundle that already has a tombstone indexes the tombstone instead.
            for t in [&all, &one] {
                if keys.iter().any(|k| k == t) {
                    let tomb = read_json(store, t).await?;
                    return Ok(vec![IndexOp::Put {
                        id: format!("{uuid}.{version}"),
                        doc: tombstone_document_json(uuid, version, &tomb),
                    }]);
                }
            }
            if !keys.iter().any(|k| k == key) {
                return Ok(Vec::new());
            }
            Ok(vec![IndexOp::Put {
                id: format!("{uuid}.{version}"),
                doc: bundle_doc(store, uuid, version, scrubber).await?,
            }])
        }
        Some(BundleKey::VersionTombstone { uuid, version }) => {
            let tomb = read_json(store, key).await?;
            Ok(vec![IndexOp::Put {
                id: format!("{uuid}.{version}"),
                doc: tombstone_document_json(uuid, version, &tomb),
            }])
        }
        Some(BundleKey::Tombstone { uuid }) => {
            let tomb = read_json(store, key).await?;
            let keys = list_all(store, &format!("bundles/{uuid}.")).await?;
            Ok(keys
                .iter()
                .filter_map(|k| match parse_bundle_key(k) {
                    Some(BundleKey::Manifest { version, .. }) => Some(IndexOp::Put {
                        id: format!("{uuid}.{version}"),
                        doc: tombstone_document_json(uuid, version, &tomb),
                    }),
                    _ => None,
                })
                .collect())
        }
        None => {
            tracing::debug!(key, "not a bundle key: nothing to index");
            Ok(Vec::new())
        }
    }
}

async fn read_json<S: Store>(store: &S, key: &str) -> Result<Value, IndexError> {
    let bytes = store.get(key).await?;
    serde_json::from_slice(&bytes).map_err(|e| IndexError::Corrupt(format!("{key} is not JSON: {e}")))
}

/// One indexed file's JSON; `None` when it is too large or not JSON (skipped, as the
/// original skipped unparsable files).
async fn read_indexed<S: Store>(store: &S, uuid: &str, f: BundleFile) -> Result<Option<(String, Value)>, IndexError> {
    if f.size > MAX_INDEXED_FILE {
        tracing::warn!(bundle = %uuid, file = %f.name, size = f.size, "indexed file too large, skipped");
        return Ok(None);
    }
    let blob = crate::model::checksum::blob_key(&f.sha256, &f.sha1, &f.s3_etag, &f.crc32c);
    let bytes = store.get(&blob).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => Ok(Some((f.name, v))),
        Err(e) => {
            tracing::warn!(bundle = %uuid, file = %f.name, "indexed file is not JSON, skipped: {e}");
            Ok(None)
        }
    }
}

/// The document of bundle `uuid` at `version`, reading its indexed JSON files.
pub async fn bundle_doc<S: Store, H: HttpClient>(
    store: &S,
    uuid: &str,
    version: &str,
    scrubber: Option<&SchemaScrubber<H>>,
) -> Result<Value, IndexError> {
    let key = bundle_key(uuid, version);
    let bytes = store.get(&key).await?;
    let manifest: BundleManifest =
        serde_json::from_slice(&bytes).map_err(|e| IndexError::Corrupt(format!("{key} unreadable: {e}")))?;
    let wanted: Vec<BundleFile> = manifest
        .files
        .iter()
        .filter(|f| f.indexed && f.content_type.starts_with("application/json"))
        .cloned()
        .collect();
    let read: Vec<Result<Option<(String, Value)>, IndexError>> = futures::stream::iter(wanted)
        .map(|f| read_indexed(store, uuid, f))
        .buffered(READ_CONCURRENCY)
        .collect()
        .await;
    let mut files = Vec::new();
    for r in read {
        if let Some(f) = r? {
            files.push(f);
        }
    }
    if let Some(s) = scrubber {
        files = s.scrub_files(files).await;
    }
    Ok(bundle_document(uuid, &manifest, &files)?)
}
