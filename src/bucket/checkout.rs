//! Bundle checkout: a bundle's files copied, under their names, to
//! `bundles/{uuid}.{version}/{name}` in a replica's checkout bucket or a user's bucket, and
//! the checkout's status kept as the original kept it, at `checkout/status/{id}.json` in
//! the replica's checkout bucket (so any backend, and the original's readers, can answer
//! for it).

use super::{Bucket, BucketError, FileDoc};
use crate::model::manifest::{BundleFile, BundleManifest};
use crate::model::ProgressCounter;
use crate::storage::{PutOptions, Store, StoreError};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Files copied at once.
const CONCURRENCY: usize = 8;

/// Where a checkout's status document is kept in the replica's checkout bucket.
pub fn status_key(id: &str) -> String {
    format!("checkout/status/{id}.json")
}

/// The prefix a bundle is checked out under.
pub fn bundle_dir(uuid: &str, version: &str) -> String {
    format!("bundles/{uuid}.{version}")
}

/// What a checkout job is given (`POST /v1/bundles/{uuid}/checkout`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutJob {
    /// The checkout's id (a uuid4), also its status document's name.
    pub id: String,
    /// The replica read from.
    pub replica: String,
    /// The bundle.
    pub uuid: String,
    /// Its version (resolved when the checkout was asked for).
    pub version: String,
    /// A user's bucket (of the replica's cloud); `None`: the replica's checkout bucket.
    pub destination: Option<String>,
    /// Told when the checkout ends.
    pub email: Option<String>,
}

/// How far a checkout has come (beyond the original, which said only `RUNNING`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutProgress {
    /// Files copied.
    pub files_done: u64,
    /// Files in the bundle.
    pub files_total: u64,
    /// Bytes copied.
    pub bytes_done: u64,
    /// Bytes in the bundle.
    pub bytes_total: u64,
}

impl From<crate::model::Progress> for CheckoutProgress {
    fn from(p: crate::model::Progress) -> Self {
        CheckoutProgress {
            files_done: p.items_done,
            files_total: p.items_total,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
        }
    }
}

/// The status document, as the original stored it (`status`, and `location` or `cause`),
/// with `progress` added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutStatus {
    /// `RUNNING`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    /// Where the bundle is (`s3://bucket/bundles/{uuid}.{version}`), once succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Files and bytes done of the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<CheckoutProgress>,
}

impl CheckoutStatus {
    /// Copying.
    pub fn running(progress: Option<CheckoutProgress>) -> Self {
        CheckoutStatus {
            status: "RUNNING".into(),
            location: None,
            cause: None,
            progress,
        }
    }
    /// Done, at `location`.
    pub fn succeeded(location: String, progress: Option<CheckoutProgress>) -> Self {
        CheckoutStatus {
            status: "SUCCEEDED".into(),
            location: Some(location),
            cause: None,
            progress,
        }
    }
    /// Ended for `cause`.
    pub fn failed(cause: String, progress: Option<CheckoutProgress>) -> Self {
        CheckoutStatus {
            status: "FAILED".into(),
            location: None,
            cause: Some(cause),
            progress,
        }
    }
}

/// Store `status` of checkout `id` in `checkout` (the replica's checkout bucket).
pub async fn write_status<S: Store>(checkout: &S, id: &str, status: &CheckoutStatus) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(status).map_err(|e| StoreError::Other(e.to_string()))?;
    let opts = PutOptions {
        content_type: Some("application/json".into()),
        ..PutOptions::overwrite()
    };
    checkout.put(&status_key(id), Bytes::from(bytes), opts).await
}

/// The status of checkout `id`; `None` when there is no such checkout.
pub async fn read_status<S: Store>(checkout: &S, id: &str) -> Result<Option<CheckoutStatus>, BucketError> {
    let key = status_key(id);
    match checkout.get(&key).await {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| BucketError::Corrupt {
            key,
            detail: e.to_string(),
        }),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Why a destination cannot take a checkout: said to the user as the checkout's `cause`.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// The bucket is not there.
    #[error("the destination bucket {0} does not exist")]
    Missing(String),
    /// Writing a test object failed.
    #[error("the destination bucket {0} is not writable")]
    NotWritable(String),
    /// Storage failed in a way that may pass.
    #[error(transparent)]
    Store(StoreError),
}

/// The original's pre-check: a test object `touch/{2 hex}.txt` is written and deleted.
pub async fn check_writable<S: Store>(dst: &S, name: &str) -> Result<(), DestinationError> {
    let key = format!("touch/{:02x}.txt", uuid::Uuid::new_v4().as_bytes()[0]);
    match dst.put(&key, Bytes::from_static(b""), PutOptions::overwrite()).await {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => return Err(DestinationError::Missing(name.into())),
        Err(e @ StoreError::Unavailable(_)) => return Err(DestinationError::Store(e)),
        Err(e) => {
            tracing::info!(bucket = name, "checkout destination refused a write: {e}");
            return Err(DestinationError::NotWritable(name.into()));
        }
    }
    let _ = dst.delete(&key).await;
    Ok(())
}

/// Copy every file of `manifest` from `src` to `dst` under [`bundle_dir`], a few at a time:
/// server-side between stores of one backend, else streamed and checked against the
/// file's checksums. A file already there with its size is not copied again, so a job
/// run again after a crash finishes the rest.
pub async fn copy_bundle<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    manifest: &BundleManifest,
    uuid: &str,
    dst: &S,
    progress: &Arc<ProgressCounter>,
) -> Result<(), BucketError> {
    let total = manifest.files.iter().map(|f| f.size).sum();
    progress.set_totals(u64::try_from(manifest.files.len()).unwrap_or(u64::MAX), total);
    let dir = bundle_dir(uuid, &manifest.version);
    let files = &manifest.files;
    // By index: a closure over `&BundleFile` would make the future higher-ranked over
    // that borrow, which the runner's `Send` check cannot see through.
    futures::stream::iter(0..files.len())
        .map(|i| copy_file(src, &files[i], &dir, dst, progress))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

async fn copy_file<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    f: &BundleFile,
    dir: &str,
    dst: &S,
    progress: &Arc<ProgressCounter>,
) -> Result<(), BucketError> {
    let key = format!("{dir}/{}", f.name);
    if matches!(dst.head(&key).await, Ok(m) if m.size == f.size) {
        progress.add(1, f.size);
        return Ok(());
    }
    let c = f.checksums();
    let blob = f.blob_key();
    let opts = PutOptions {
        content_type: Some(f.content_type.clone()),
        ..PutOptions::overwrite()
    };
    if dst.same_backend(src.store()) {
        dst.copy_from(src.store(), &blob, &key, opts).await?;
        progress.add(1, f.size);
        return Ok(());
    }
    let (_, _, stream) = src.store().get_range(&blob, None).await?;
    let counter = progress.clone();
    let stream: crate::model::platform::ByteStream = Box::pin(stream.inspect(move |c| {
        if let Ok(b) = c {
            counter.add(0, b.len() as u64);
        }
    }));
    let (stream, mismatch) = crate::storage::verify::verified(stream, f.size, c);
    match dst.put_stream(&key, stream, opts).await {
        Ok(_) => {
            progress.add(1, 0);
            Ok(())
        }
        Err(_) if mismatch.is_set() => Err(BucketError::ChecksumMismatch(format!(
            "the bytes of {blob} in replica {} do not match their content address",
            src.name()
        ))),
        Err(e) => Err(e.into()),
    }
}
