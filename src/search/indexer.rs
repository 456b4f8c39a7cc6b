//! Which index documents a bucket key stands for, read through the bucket layer
//! ([`Bucket`]), with the original's rules (`dss/index/indexer.py`, `dss/index/bundle.py`):
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
use crate::bucket::keys::{parse_bundle_key, BundleKey};
use crate::bucket::{Bucket, BucketError, FileDoc, Listing};
use crate::http::HttpClient;
use crate::model::manifest::BundleFile;
use crate::storage::{Store, StoreError};
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
    /// The document the key names is gone (a job older than a rewrite of the bucket).
    #[error("{0} is not there")]
    Missing(String),
    /// The bundle's shape cannot be described (the original refused these too).
    #[error("bundle shape: {0}")]
    Shape(#[from] ShapeError),
    /// A stored document is not what it should be.
    #[error("{0}")]
    Corrupt(String),
}

impl From<BucketError> for IndexError {
    fn from(e: BucketError) -> Self {
        match e {
            BucketError::Store(e) => IndexError::Store(e),
            other => IndexError::Corrupt(other.to_string()),
        }
    }
}

/// The index operations that bring the index up to date with `key`.
///
/// The uuid's keys are listed anew (never from a kept listing), and after a bundle's
/// document is indexed [`tombstone_ops_if_hidden`] looks again: a tombstone written
/// meanwhile (here or by another backend) is never left overwritten by its bundle's
/// document.
/// With `scrubber`, each file is scrubbed by its JSON schema first (see [`super::schema`]).
pub async fn ops_for_key<S: Store, F: FileDoc, H: HttpClient>(
    bucket: &Bucket<'_, S, F>,
    key: &str,
    now: chrono::DateTime<chrono::Utc>,
    scrubber: Option<&SchemaScrubber<H>>,
) -> Result<Vec<IndexOp>, IndexError> {
    match parse_bundle_key(key) {
        Some(BundleKey::Manifest { uuid, version }) => {
            let seen = bucket.visibility(uuid, now, Listing::Fresh).await?;
            // Indexing a bundle that already has a tombstone indexes the tombstone instead.
            if let Some(op) = hidden_op(bucket, uuid, version, &seen).await? {
                return Ok(vec![op]);
            }
            if !seen.stored(version) {
                return Ok(Vec::new());
            }
            Ok(vec![IndexOp::Put {
                id: format!("{uuid}.{version}"),
                doc: bundle_doc(bucket, uuid, version, scrubber).await?,
            }])
        }
        Some(BundleKey::VersionTombstone { uuid, version }) => {
            let tomb = tombstone(bucket, uuid, Some(version)).await?;
            Ok(vec![tombstone_op(uuid, version, &tomb)])
        }
        Some(BundleKey::Tombstone { uuid }) => {
            let tomb = tombstone(bucket, uuid, None).await?;
            let seen = bucket.visibility(uuid, now, Listing::Fresh).await?;
            Ok(seen
                .stored_versions()
                .map(|version| tombstone_op(uuid, version, &tomb))
                .collect())
        }
        None => {
            tracing::debug!(key, "not a bundle key: nothing to index");
            Ok(Vec::new())
        }
    }
}

/// For a manifest key: the tombstone document of its version if a tombstone hides it now
/// (listed anew), else nothing; for other keys nothing. Run after a bundle's document was
/// indexed, so that a tombstone indexed meanwhile is not left overwritten by it.
pub async fn tombstone_ops_if_hidden<S: Store, F: FileDoc>(
    bucket: &Bucket<'_, S, F>,
    key: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<IndexOp>, IndexError> {
    let Some(BundleKey::Manifest { uuid, version }) = parse_bundle_key(key) else {
        return Ok(Vec::new());
    };
    let seen = bucket.visibility(uuid, now, Listing::Fresh).await?;
    Ok(hidden_op(bucket, uuid, version, &seen).await?.into_iter().collect())
}

/// The tombstone document of `version` when `seen` says a tombstone hides it.
async fn hidden_op<S: Store, F: FileDoc>(
    bucket: &Bucket<'_, S, F>,
    uuid: &str,
    version: &str,
    seen: &crate::bucket::Visibility,
) -> Result<Option<IndexOp>, IndexError> {
    let Some(by) = seen.hidden_by(version) else {
        return Ok(None);
    };
    let tomb = tombstone(bucket, uuid, by).await?;
    Ok(Some(tombstone_op(uuid, version, &tomb)))
}

/// The tombstone of bundle `uuid` (of one `version`, or of all), which its key says exists.
async fn tombstone<S: Store, F: FileDoc>(
    bucket: &Bucket<'_, S, F>,
    uuid: &str,
    version: Option<&str>,
) -> Result<Value, IndexError> {
    bucket
        .tombstone(uuid, version)
        .await?
        .ok_or_else(|| IndexError::Missing(format!("the tombstone of {uuid}")))
}

/// The operation that puts `tombstone`'s document in place of version `version`'s.
fn tombstone_op(uuid: &str, version: &str, tombstone: &Value) -> IndexOp {
    IndexOp::Put {
        id: format!("{uuid}.{version}"),
        doc: tombstone_document_json(uuid, version, tombstone),
    }
}

/// One indexed file's JSON; `None` when it is too large or not JSON (skipped, as the
/// original skipped unparsable files).
async fn read_indexed<S: Store, F: FileDoc>(
    bucket: &Bucket<'_, S, F>,
    uuid: &str,
    f: BundleFile,
) -> Result<Option<(String, Value)>, IndexError> {
    if f.size > MAX_INDEXED_FILE {
        tracing::warn!(bundle = %uuid, file = %f.name, size = f.size, "indexed file too large, skipped");
        return Ok(None);
    }
    let bytes = bucket.blob(&f.blob_key()).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => Ok(Some((f.name, v))),
        Err(e) => {
            tracing::warn!(bundle = %uuid, file = %f.name, "indexed file is not JSON, skipped: {e}");
            Ok(None)
        }
    }
}

/// The JSON files of `manifest` that `wanted` picks, read (16 at a time) and parsed, in
/// manifest order; files too large or not JSON are skipped.
async fn read_json_files<S: Store, F: FileDoc>(
    bucket: &Bucket<'_, S, F>,
    uuid: &str,
    manifest: &crate::model::manifest::BundleManifest,
    wanted: impl Fn(&BundleFile) -> bool,
) -> Result<Vec<(String, Value)>, IndexError> {
    let picked: Vec<BundleFile> = manifest
        .files
        .iter()
        .filter(|f| wanted(f) && f.content_type.starts_with("application/json"))
        .cloned()
        .collect();
    let read: Vec<Result<Option<(String, Value)>, IndexError>> = futures::stream::iter(picked)
        .map(|f| read_indexed(bucket, uuid, f))
        .buffered(READ_CONCURRENCY)
        .collect()
        .await;
    let mut files = Vec::new();
    for r in read {
        if let Some(f) = r? {
            files.push(f);
        }
    }
    Ok(files)
}

/// The original's metadata document of bundle `uuid` at `version`
/// ([`super::document::metadata_document`]), reading every JSON file of it.
pub async fn metadata_doc<S: Store, F: FileDoc>(
    bucket: &Bucket<'_, S, F>,
    uuid: &str,
    version: &str,
) -> Result<Value, IndexError> {
    let manifest = bucket
        .manifest_at(uuid, version)
        .await?
        .ok_or_else(|| IndexError::Missing(format!("bundle {uuid}.{version}")))?;
    let files = read_json_files(bucket, uuid, &manifest, |_| true).await?;
    let manifest = serde_json::to_value(&*manifest).map_err(|e| IndexError::Corrupt(e.to_string()))?;
    Ok(super::document::metadata_document(uuid, version, &manifest, files))
}

/// The document of bundle `uuid` at `version`, reading its indexed JSON files.
pub async fn bundle_doc<S: Store, F: FileDoc, H: HttpClient>(
    bucket: &Bucket<'_, S, F>,
    uuid: &str,
    version: &str,
    scrubber: Option<&SchemaScrubber<H>>,
) -> Result<Value, IndexError> {
    let manifest = bucket
        .manifest_at(uuid, version)
        .await?
        .ok_or_else(|| IndexError::Missing(format!("bundle {uuid}.{version}")))?;
    let mut files = read_json_files(bucket, uuid, &manifest, |f| f.indexed).await?;
    if let Some(s) = scrubber {
        files = s.scrub_files(files).await;
    }
    Ok(bundle_document(uuid, &manifest, &files)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::keys::{bundle_key, tombstone_key};
    use crate::bucket::Memo;
    use crate::model::manifest::{BundleManifest, FileMetadata, Tombstone};
    use crate::storage::memory::MemoryStore;
    use crate::storage::PutOptions;

    /// The look after indexing a bundle finds a tombstone written meanwhile, and only then.
    #[tokio::test]
    async fn a_tombstone_written_meanwhile_is_found_again() {
        let store = MemoryStore::new("t", None, std::sync::Arc::new(crate::model::SystemClock));
        let memo = Memo::<FileMetadata>::default();
        let bucket = Bucket::new("aws", &store, &memo, None);
        let (u, v) = ("0b0e7c1e-0000-4000-8000-000000000000", "2019-01-01T000000.000000Z");
        let now = chrono::Utc::now();
        let manifest = BundleManifest::new(v, Vec::new(), 1).to_bytes();
        store
            .put(&bundle_key(u, v), manifest.into(), PutOptions::if_absent())
            .await
            .unwrap();
        assert!(tombstone_ops_if_hidden(&bucket, &bundle_key(u, v), now)
            .await
            .unwrap()
            .is_empty());
        // Kept listings do not hide it: the look lists anew.
        let tomb = Tombstone {
            email: "a@example.org".into(),
            reason: Some("gone".into()),
            admin_deleted: true,
            version: Some(v.into()),
        };
        store
            .put(
                &tombstone_key(u, Some(v)),
                tomb.to_bytes().into(),
                PutOptions::if_absent(),
            )
            .await
            .unwrap();
        let ops = tombstone_ops_if_hidden(&bucket, &bundle_key(u, v), now).await.unwrap();
        match ops.as_slice() {
            [IndexOp::Put { id, doc }] => {
                assert_eq!(id, &format!("{u}.{v}"));
                assert_eq!(doc["reason"], "gone", "{doc}");
            }
            other => panic!("{other:?}"),
        }
        // Other keys need no look.
        assert!(tombstone_ops_if_hidden(&bucket, &tombstone_key(u, Some(v)), now)
            .await
            .unwrap()
            .is_empty());
    }
}
