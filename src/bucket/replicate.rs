//! Copying one key of a replica's bucket to another replica, in the original's dependency
//! order: a file's blob before its metadata, every file of a bundle before its manifest,
//! tombstones at once. Each step is idempotent (create-only writes; a blob that is there
//! was verified when it got there), so a job that runs again after a crash finishes the
//! rest. Writes land through the destination's [`Bucket`] marked as replication's, so
//! they are indexed there and never copied on.

use super::keys::{file_key, parse_bundle_key, parse_file_key, BundleKey};
use super::{parse_document, Bucket, BucketError, FileDoc, Written};
use crate::model::manifest::{BundleManifest, FileMetadata};
use crate::model::{Checksums, ProgressCounter};
use crate::storage::{PutOptions, Store, StoreError};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

/// Files of a bundle at most this large are copied by the bundle's own job when they are
/// missing at the destination; larger ones are left to their own jobs, which the bundle
/// waits for (two jobs never stream the same large blob at once).
pub const INLINE_FILE_LIMIT: u64 = 64 * 1024 * 1024;

/// Files of a bundle looked up (and small ones copied) at once.
const BUNDLE_FILE_CONCURRENCY: usize = 16;

/// How a replication step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replicated {
    /// Copied (bytes of blobs streamed or copied server-side).
    Copied {
        /// Blob bytes copied.
        bytes: u64,
    },
    /// The destination had it already.
    Present,
    /// A bundle whose files, or a collection whose items, are not all at the destination
    /// yet: these keys must be replicated first (their jobs are running or must be started).
    Waiting(Vec<String>),
}

/// Copy `key` from `src` to `dst` (documents and blobs; see [`super::keys::replicated`]),
/// counting items and bytes into `progress`.
///
/// A key that is gone from `src` is [`BucketError::Source`]; a document that differs at
/// `dst` is [`BucketError::Conflict`]; bytes at `src` that do not match their content
/// address are [`BucketError::ChecksumMismatch`]: none of these pass by waiting, and
/// `dss sync` is how they are repaired.
pub async fn replicate<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    dst: &Bucket<'_, S, F>,
    key: &str,
    progress: &Arc<ProgressCounter>,
) -> Result<Replicated, BucketError> {
    replicate_with(src, dst, key, INLINE_FILE_LIMIT, progress).await
}

/// [`replicate`], a bundle copying its missing files of at most `inline_max` bytes itself
/// (`DSS_REPLICATION_INLINE_MAX`).
pub async fn replicate_with<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    dst: &Bucket<'_, S, F>,
    key: &str,
    inline_max: u64,
    progress: &Arc<ProgressCounter>,
) -> Result<Replicated, BucketError> {
    let dst = dst.for_replication();
    if let Some(k) = parse_bundle_key(key) {
        return match k {
            BundleKey::Manifest { .. } => bundle(src, &dst, key, inline_max, progress).await,
            _ => {
                progress.set_totals(1, 0);
                let bytes = read(src, key).await?;
                let written = dst.put_copy(key, bytes).await?;
                progress.add(1, 0);
                Ok(outcome(written, 0))
            }
        };
    }
    if parse_file_key(key).is_some() {
        return file(src, &dst, key, progress).await;
    }
    if let Some(k) = super::keys::parse_collection_key(key) {
        progress.set_totals(1, 0);
        let bytes = read(src, key).await?;
        let there = match dst.store().head(key).await {
            Ok(_) => true,
            Err(StoreError::NotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if let (super::keys::CollectionKey::Version { .. }, false) = (k, there) {
            // A collection goes after every document it names (a fragment's file brings
            // its blob first), as the original waited for them.
            let doc: serde_json::Value = super::parse_document(key, &bytes)?;
            let mut missing = Vec::new();
            for item in doc
                .get("contents")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(needed) = super::collections::item_key(item) else {
                    continue;
                };
                match dst.store().head(&needed).await {
                    Ok(_) => {}
                    Err(StoreError::NotFound(_)) => missing.push(needed),
                    Err(e) => return Err(e.into()),
                }
            }
            if !missing.is_empty() {
                missing.sort();
                missing.dedup();
                return Ok(Replicated::Waiting(missing));
            }
        }
        let written = dst.put_copy(key, bytes).await?;
        progress.add(1, 0);
        return Ok(outcome(written, 0));
    }
    if let Some(expected) = Checksums::from_blob_key(key) {
        let size = match src.store().head(key).await {
            Ok(m) => m.size,
            Err(StoreError::NotFound(_)) => return Err(gone(src, key)),
            Err(e) => return Err(e.into()),
        };
        progress.set_totals(1, size);
        let copied = copy_blob(src, &dst, key, &expected, size, false, progress).await?;
        progress.add(1, 0);
        return Ok(if copied {
            Replicated::Copied { bytes: size }
        } else {
            Replicated::Present
        });
    }
    Err(BucketError::Corrupt {
        key: key.to_string(),
        detail: "not a key that is replicated".into(),
    })
}

fn gone<S: Store, F: FileDoc>(src: &Bucket<'_, S, F>, key: &str) -> BucketError {
    BucketError::Source(format!("{key} is not in replica {} (deleted there?)", src.name()))
}

async fn read<S: Store, F: FileDoc>(src: &Bucket<'_, S, F>, key: &str) -> Result<Bytes, BucketError> {
    match src.store().get(key).await {
        Ok(b) => Ok(b),
        Err(StoreError::NotFound(_)) => Err(gone(src, key)),
        Err(e) => Err(e.into()),
    }
}

fn outcome(written: Written, bytes: u64) -> Replicated {
    match written {
        Written::Created => Replicated::Copied { bytes },
        Written::Existing => Replicated::Present,
    }
}

/// A file: its blob, then its metadata document (as stored, bytes unchanged).
async fn file<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    dst: &Bucket<'_, S, F>,
    key: &str,
    progress: &Arc<ProgressCounter>,
) -> Result<Replicated, BucketError> {
    let bytes = read(src, key).await?;
    let meta: FileMetadata = parse_document(key, &bytes)?;
    progress.set_totals(1, meta.size);
    let c = meta.checksums();
    let copied = copy_blob(src, dst, &c.blob_key(), &c, meta.size, false, progress).await?;
    let written = dst.put_copy(key, bytes).await?;
    progress.add(1, 0);
    Ok(outcome(written, if copied { meta.size } else { 0 }))
}

/// A manifest, once every file it names is at the destination (small missing files are
/// copied here; large ones are waited for).
async fn bundle<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    dst: &Bucket<'_, S, F>,
    key: &str,
    inline_max: u64,
    progress: &Arc<ProgressCounter>,
) -> Result<Replicated, BucketError> {
    let bytes = read(src, key).await?;
    let manifest: BundleManifest = parse_document(key, &bytes)?;
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    let items = u64::try_from(manifest.files.len())
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    progress.set_totals(items, total);
    let waiting = bring_files(src, dst, &manifest, inline_max, progress).await?;
    if !waiting.is_empty() {
        return Ok(Replicated::Waiting(waiting));
    }
    let written = dst.put_copy(key, bytes).await?;
    progress.add(1, 0);
    Ok(outcome(written, 0))
}

/// Every file of `manifest` at the destination, small missing ones copied now: the keys
/// of the large ones still missing (whose own jobs bring them).
pub async fn bring_files<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    dst: &Bucket<'_, S, F>,
    manifest: &BundleManifest,
    inline_max: u64,
    progress: &Arc<ProgressCounter>,
) -> Result<Vec<String>, BucketError> {
    let dst = &dst.for_replication();
    // By index: a closure over `&BundleFile` would make the future higher-ranked over that
    // borrow, which the runner's `Send` check cannot see through.
    let files = &manifest.files;
    futures::stream::iter(0..files.len())
        .map(|i| bundle_file(src, dst, &files[i], inline_max, progress))
        .buffer_unordered(BUNDLE_FILE_CONCURRENCY)
        .try_filter_map(|k| async move { Ok(k) })
        .try_collect()
        .await
}

/// One file of a bundle at the destination: there already, copied now (small), or its
/// key returned to be waited for (large).
async fn bundle_file<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    dst: &Bucket<'_, S, F>,
    f: &crate::model::manifest::BundleFile,
    inline_max: u64,
    progress: &Arc<ProgressCounter>,
) -> Result<Option<String>, BucketError> {
    let fkey = file_key(&f.uuid, &f.version);
    match dst.store().head(&fkey).await {
        Ok(_) => {
            progress.add(1, f.size);
            return Ok(None);
        }
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    if f.size > inline_max {
        return Ok(Some(fkey));
    }
    match file(src, dst, &fkey, &Arc::new(ProgressCounter::default())).await {
        Ok(_) => {}
        Err(e) if e.is_transient() => return Err(e),
        // Said of the bundle, so that its failed job names the file that holds it back.
        Err(e) => return Err(BucketError::Source(format!("its file {fkey} cannot be copied: {e}"))),
    }
    progress.add(1, f.size);
    Ok(None)
}

/// Put the blob at `blob_key` (of `size` bytes, content address `expected`) into `dst`
/// unless a blob of that size is there (blobs get there only verified) or `overwrite`.
/// Between stores of one backend the copy is server-side (the source's bytes were
/// verified when they were ingested; the size is checked after); across backends the
/// bytes stream through this process and are checked against all four checksums before
/// the destination's object is completed, so bytes that do not match never sit at a
/// blob key. `true` when bytes were copied.
pub async fn copy_blob<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    dst: &Bucket<'_, S, F>,
    blob_key: &str,
    expected: &Checksums,
    size: u64,
    overwrite: bool,
    progress: &Arc<ProgressCounter>,
) -> Result<bool, BucketError> {
    if !overwrite && matches!(dst.store().head(blob_key).await, Ok(m) if m.size == size) {
        progress.add(0, size);
        return Ok(false);
    }
    let not_found = |e| match e {
        StoreError::NotFound(_) => gone(src, blob_key),
        e => BucketError::from(e),
    };
    // The source's content type and metadata come along; its size must be the file's.
    let opts = |meta: &crate::storage::ObjectMeta| -> Result<PutOptions, BucketError> {
        if meta.size != size {
            return Err(BucketError::ChecksumMismatch(format!(
                "{blob_key} in replica {} has {} bytes, its file says {size}",
                src.name(),
                meta.size
            )));
        }
        Ok(PutOptions {
            if_absent: !overwrite,
            content_type: meta.content_type.clone(),
            metadata: meta.metadata.clone(),
            expiring: false,
        })
    };
    // An overwrite (a repair) always streams: the source's bytes are checked first.
    if !overwrite && dst.store().same_backend(src.store()) {
        let opts = opts(&src.store().head(blob_key).await.map_err(not_found)?)?;
        let created = match dst.store().copy_from(src.store(), blob_key, blob_key, opts).await {
            Ok(()) => true,
            Err(StoreError::AlreadyExists(_)) => false,
            Err(e) => return Err(e.into()),
        };
        // Checked by what the destination computed of it (its size; S3's ETag, GCS's
        // CRC32C), without reading it back.
        let copied = dst.store().head(blob_key).await?;
        let agrees = copied.checksum.as_ref().and_then(|c| c.agrees_with(expected));
        if copied.size != size || agrees == Some(false) {
            // What this copy made is not left at a content address (no document points
            // at it yet); one found there is left to `dss sync`.
            if created {
                let _ = dst.store().delete(blob_key).await;
            }
            return Err(BucketError::ChecksumMismatch(format!(
                "the copy of {blob_key} in replica {} is not the bytes of its address ({} bytes, {:?})",
                dst.name(),
                copied.size,
                copied.checksum
            )));
        }
        progress.add(0, size);
        return Ok(true);
    }
    let (meta, _, stream) = src.store().get_range(blob_key, None).await.map_err(not_found)?;
    let opts = opts(&meta)?;
    use super::stream::{put_verified, PutVerifiedError};
    match put_verified(dst.store(), blob_key, stream, size, expected, opts, progress).await {
        Ok(_) => Ok(true),
        // Another copy got there first; it is checked like any blob found there.
        Err(PutVerifiedError::Destination(StoreError::AlreadyExists(_))) => match dst.store().head(blob_key).await {
            Ok(m) if m.size == size => Ok(true),
            Ok(m) => Err(BucketError::ChecksumMismatch(format!(
                "{blob_key} in replica {} has {} bytes, not {size}: `dss sync` repairs it",
                dst.name(),
                m.size
            ))),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.about(blob_key, src.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::keys::{bundle_key, tombstone_key};
    use crate::bucket::Memo;
    use crate::model::checksum::checksums_of;
    use crate::model::manifest::{BundleFile, Tombstone};
    use crate::storage::memory::MemoryStore;
    use crate::storage::AnyStore;

    const U: &str = "0b0e7c1e-0000-4000-8000-000000000000";
    const F1: &str = "1b0e7c1e-0000-4000-8000-000000000000";
    const V: &str = "2019-01-01T000000.000000Z";

    fn memory() -> AnyStore {
        AnyStore::Memory(MemoryStore::new("m", None, Arc::new(crate::model::SystemClock)))
    }

    /// Put a file of `data` straight into `store`; its metadata document's bytes.
    async fn put_file(store: &AnyStore, uuid: &str, data: &'static [u8]) -> Bytes {
        let c = checksums_of(data);
        store
            .put(&c.blob_key(), Bytes::from_static(data), PutOptions::if_absent())
            .await
            .unwrap();
        // Spaced as the original wrote it: the copy keeps these very bytes.
        let meta = FileMetadata::new(1, V, "text/plain", data.len() as u64, &c);
        let doc = Bytes::from(serde_json::to_vec_pretty(&meta).unwrap());
        store
            .put(&file_key(uuid, V), doc.clone(), PutOptions::if_absent())
            .await
            .unwrap();
        doc
    }

    /// Across backends (memory → local directory) a file brings its blob, verified, and
    /// keeps its document's bytes; a bundle brings its missing files; a tombstone is
    /// copied as is; and each is idempotent.
    #[tokio::test]
    async fn documents_come_with_what_they_depend_on() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            memory(),
            AnyStore::Fs(crate::storage::fs::FsStore::new("d", dir.path(), None).unwrap()),
        );
        let (ma, mb) = (Memo::<FileMetadata>::default(), Memo::<FileMetadata>::default());
        let (src, dst) = (Bucket::new("aws", &a, &ma, None), Bucket::new("gcp", &b, &mb, None));
        let p = Arc::new(ProgressCounter::default());

        let doc = put_file(&a, U, b"first file").await;
        let key = file_key(U, V);
        assert_eq!(
            replicate(&src, &dst, &key, &p).await.unwrap(),
            Replicated::Copied { bytes: 10 }
        );
        assert_eq!(b.get(&key).await.unwrap(), doc);
        let blob = checksums_of(b"first file").blob_key();
        assert_eq!(&b.get(&blob).await.unwrap()[..], b"first file");
        assert_eq!(replicate(&src, &dst, &key, &p).await.unwrap(), Replicated::Present);

        put_file(&a, F1, b"second").await;
        let entry = |uuid: &str, data: &[u8]| {
            let meta = FileMetadata::new(1, V, "text/plain", data.len() as u64, &checksums_of(data));
            BundleFile::new("n", uuid, V, false, &meta)
        };
        let manifest = BundleManifest::new(V, vec![entry(U, b"first file"), entry(F1, b"second")], 1);
        let bkey = bundle_key(U, V);
        a.put(&bkey, Bytes::from(manifest.to_bytes()), PutOptions::if_absent())
            .await
            .unwrap();
        assert_eq!(
            replicate(&src, &dst, &bkey, &p).await.unwrap(),
            Replicated::Copied { bytes: 0 }
        );
        assert!(b.head(&file_key(F1, V)).await.is_ok(), "the missing file came first");
        assert_eq!(b.get(&bkey).await.unwrap(), a.get(&bkey).await.unwrap());

        let tomb = Tombstone {
            email: "a@example.org".into(),
            reason: Some("r".into()),
            admin_deleted: true,
            version: None,
        };
        let tkey = tombstone_key(U, None);
        a.put(&tkey, Bytes::from(tomb.to_bytes()), PutOptions::if_absent())
            .await
            .unwrap();
        replicate(&src, &dst, &tkey, &p).await.unwrap();
        assert_eq!(b.get(&tkey).await.unwrap(), a.get(&tkey).await.unwrap());
    }

    /// A blob whose bytes at the source do not match their address never reaches the
    /// destination; a key gone from the source and a document that differs at the
    /// destination are errors that waiting does not cure.
    #[tokio::test]
    async fn what_replication_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            memory(),
            AnyStore::Fs(crate::storage::fs::FsStore::new("d", dir.path(), None).unwrap()),
        );
        let (ma, mb) = (Memo::<FileMetadata>::default(), Memo::<FileMetadata>::default());
        let (src, dst) = (Bucket::new("aws", &a, &ma, None), Bucket::new("gcp", &b, &mb, None));
        let p = Arc::new(ProgressCounter::default());

        put_file(&a, U, b"good bytes").await;
        let blob = checksums_of(b"good bytes").blob_key();
        a.put(&blob, Bytes::from_static(b"evil bytes"), PutOptions::overwrite())
            .await
            .unwrap();
        let e = replicate(&src, &dst, &file_key(U, V), &p).await.unwrap_err();
        assert!(
            matches!(e, BucketError::ChecksumMismatch(_)) && !e.is_transient(),
            "{e:?}"
        );
        assert!(b.head(&blob).await.is_err() && b.head(&file_key(U, V)).await.is_err());

        let e = replicate(&src, &dst, &file_key(F1, V), &p).await.unwrap_err();
        assert!(matches!(e, BucketError::Source(_)), "{e:?}");

        put_file(&a, F1, b"x").await;
        b.put(&file_key(F1, V), Bytes::from_static(b"{}"), PutOptions::if_absent())
            .await
            .unwrap();
        let e = replicate(&src, &dst, &file_key(F1, V), &p).await.unwrap_err();
        assert!(matches!(e, BucketError::Conflict { .. }), "{e:?}");
    }
}
