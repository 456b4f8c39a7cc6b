//! Repair of drift between two replicas (`dss sync`): both buckets are listed side by
//! side, page by page (any size, in bounded memory), every key that replication copies
//! is compared, and what is missing or different at the destination is copied from the
//! source. Documents are compared by content (file metadata parsed, as the original
//! compared it); blobs by size, and by their bytes against their content address unless
//! asked for a quick pass. What only the destination holds is reported, never deleted
//! (it may be a write there not yet replicated back).

use super::keys::{parse_bundle_key, parse_file_key, replicated};
use super::replicate::{copy_blob, replicate, Replicated};
use super::{Bucket, BucketError, FileDoc};
use crate::model::{Checksums, ProgressCounter};
use crate::storage::{ListPage, Store, StoreError};
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Keys compared at once.
const CONCURRENCY: usize = 16;

/// How a sync runs.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Only keys starting with this (`bundles/`, `files/0b`, …).
    pub prefix: String,
    /// Report only; change nothing.
    pub dry_run: bool,
    /// Blobs compared by size only, not by reading the destination's bytes.
    pub quick: bool,
}

/// What is wrong with a key at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// Not there.
    Missing,
    /// There, but not what the source holds (why).
    Different(String),
    /// Only there (reported, left alone).
    Extra,
}

/// Counts as a sync goes, for a progress line.
#[derive(Debug, Default)]
pub struct SyncProgress {
    /// Keys compared.
    pub compared: AtomicU64,
    /// Keys found missing or different.
    pub drifted: AtomicU64,
    /// Keys repaired.
    pub repaired: AtomicU64,
    /// Blob bytes copied.
    pub bytes: AtomicU64,
}

/// What a sync found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncSummary {
    /// Keys compared (on either side).
    pub compared: u64,
    /// Missing at the destination.
    pub missing: u64,
    /// Different at the destination.
    pub different: u64,
    /// Only at the destination.
    pub extra: u64,
    /// Repaired.
    pub repaired: u64,
    /// Keys that could not be repaired, and why.
    pub failed: Vec<(String, String)>,
}

/// A listing read a page at a time.
struct Lister<'a, S> {
    store: &'a S,
    prefix: &'a str,
    buf: VecDeque<String>,
    token: Option<String>,
    done: bool,
}

impl<'a, S: Store> Lister<'a, S> {
    fn new(store: &'a S, prefix: &'a str) -> Self {
        Lister {
            store,
            prefix,
            buf: VecDeque::new(),
            token: None,
            done: false,
        }
    }

    /// The next replicated key, without taking it.
    async fn peek(&mut self) -> Result<Option<&String>, StoreError> {
        while self.buf.is_empty() && !self.done {
            let ListPage { keys, next_token } = self.store.list(self.prefix, self.token.as_deref(), 1000).await?;
            self.buf.extend(keys.into_iter().filter(|k| replicated(k)));
            self.done = next_token.is_none();
            self.token = next_token;
        }
        Ok(self.buf.front())
    }

    fn take(&mut self) -> Option<String> {
        self.buf.pop_front()
    }
}

/// Told of each drifted key: the key, what is wrong, and how its repair went (`None`: not
/// attempted).
pub type Report<'a> = dyn FnMut(&str, &Drift, Option<&Result<(), String>>) + Send + 'a;

/// Compare `src` and `dst` under `opts.prefix` and, unless `opts.dry_run`, repair `dst`.
/// Each drifted key is told to `report` as it is found, with how its repair went
/// (`None` in a dry run).
pub async fn sync<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    dst: &Bucket<'_, S, F>,
    opts: &SyncOptions,
    progress: &SyncProgress,
    report: &mut Report<'_>,
) -> Result<SyncSummary, BucketError> {
    let dst = dst.for_replication();
    let mut summary = SyncSummary::default();
    let (mut a, mut b) = (
        Lister::new(src.store(), &opts.prefix),
        Lister::new(dst.store(), &opts.prefix),
    );
    // Bundles sort before files: a bundle whose large files are missing too is repaired
    // again once the pass has brought them.
    let mut later: Vec<(String, Drift)> = Vec::new();
    loop {
        // The next batch of keys, each with whether the destination has it.
        let mut batch: Vec<(String, bool)> = Vec::new();
        while batch.len() < CONCURRENCY * 4 {
            let next_a = a.peek().await?.cloned();
            let next_b = b.peek().await?.cloned();
            match (next_a, next_b) {
                (None, None) => break,
                (Some(x), Some(y)) if x == y => {
                    a.take();
                    b.take();
                    batch.push((x, true));
                }
                (Some(x), Some(y)) if x < y => {
                    a.take();
                    batch.push((x, false));
                }
                (Some(x), None) => {
                    a.take();
                    batch.push((x, false));
                }
                (_, Some(y)) => {
                    b.take();
                    summary.extra += 1;
                    summary.compared += 1;
                    report(&y, &Drift::Extra, None);
                }
            }
        }
        if batch.is_empty() {
            break;
        }
        let checked: Vec<(String, Result<Option<Drift>, BucketError>)> = futures::stream::iter(batch)
            .map(|(key, there)| async move {
                let drift = if there {
                    compare(src, &dst, &key, opts.quick).await
                } else {
                    Ok(Some(Drift::Missing))
                };
                (key, drift)
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut to_repair = Vec::new();
        for (key, drift) in checked {
            summary.compared += 1;
            progress.compared.fetch_add(1, Ordering::Relaxed);
            match drift {
                Ok(None) => {}
                Ok(Some(d)) => {
                    match d {
                        Drift::Missing => summary.missing += 1,
                        _ => summary.different += 1,
                    }
                    progress.drifted.fetch_add(1, Ordering::Relaxed);
                    to_repair.push((key, d));
                }
                Err(e) => {
                    report(&key, &Drift::Different(format!("cannot be compared: {e}")), None);
                    summary.failed.push((key, e.to_string()));
                }
            }
        }
        if opts.dry_run {
            for (key, d) in &to_repair {
                report(key, d, None);
            }
            continue;
        }
        let repaired: Vec<(String, Drift, Result<Option<String>, String>)> = futures::stream::iter(to_repair)
            .map(|(key, d)| async move {
                let r = repair(src, &dst, &key, &d, progress).await;
                (key, d, r)
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        for (key, d, r) in repaired {
            match r {
                Ok(None) => {
                    summary.repaired += 1;
                    progress.repaired.fetch_add(1, Ordering::Relaxed);
                    report(&key, &d, Some(&Ok(())));
                }
                Ok(Some(_waiting)) => later.push((key, d)),
                Err(e) => {
                    report(&key, &d, Some(&Err(e.clone())));
                    summary.failed.push((key, e));
                }
            }
        }
    }
    // Documents that waited for others (a collection for the collections it names, which
    // may wait in turn): passes again while one brings progress, so chains of any depth
    // are repaired in one run.
    loop {
        let mut waiting = Vec::new();
        let before = later.len();
        for (key, d) in std::mem::take(&mut later) {
            match repair(src, &dst, &key, &d, progress).await {
                Ok(None) => {
                    report(&key, &d, Some(&Ok(())));
                    summary.repaired += 1;
                }
                Ok(Some(first)) => waiting.push((key, d, first)),
                Err(e) => {
                    report(&key, &d, Some(&Err(e.clone())));
                    summary.failed.push((key, e));
                }
            }
        }
        if waiting.is_empty() || waiting.len() == before {
            for (key, d, first) in waiting {
                let e = format!("{first}, which it names, is not at the destination");
                report(&key, &d, Some(&Err(e.clone())));
                summary.failed.push((key, e));
            }
            break;
        }
        later = waiting.into_iter().map(|(key, d, _)| (key, d)).collect();
    }
    Ok(summary)
}

/// Whether the destination's copy of `key` (which it has) differs from the source's.
async fn compare<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    dst: &Bucket<'_, S, F>,
    key: &str,
    quick: bool,
) -> Result<Option<Drift>, BucketError> {
    if let Some(expected) = Checksums::from_blob_key(key) {
        let (s, d) = (src.store().head(key).await?, dst.store().head(key).await?);
        if s.size != d.size {
            return Ok(Some(Drift::Different(format!("{} bytes, not {}", d.size, s.size))));
        }
        if quick {
            return Ok(None);
        }
        let (got, _) = super::ingest::checksum_object(dst.store(), key, BucketError::from).await?;
        return Ok((got != expected).then(|| Drift::Different("its bytes do not match their content address".into())));
    }
    let (s, d) = (src.store().get(key).await?, dst.store().get(key).await?);
    if s == d {
        return Ok(None);
    }
    if parse_file_key(key).is_some() {
        // The original compared file metadata parsed: spacing may differ.
        let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
        let ours = parse(&s);
        if ours.is_some() && ours == parse(&d) {
            return Ok(None);
        }
    }
    Ok(Some(Drift::Different("the document differs".into())))
}

/// Write the source's document `key` over the destination's, once what it depends on is
/// there (a file's blob; a bundle's files): `Ok(Some(file))` while a bundle still waits
/// for `file`.
async fn restore_document<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    dst: &Bucket<'_, S, F>,
    key: &str,
    counter: &Arc<ProgressCounter>,
) -> Result<Option<String>, BucketError> {
    let bytes = src.store().get(key).await?;
    if parse_file_key(key).is_some() {
        let meta: crate::model::manifest::FileMetadata = super::parse_document(key, &bytes)?;
        let c = meta.checksums();
        copy_blob(src, dst, &c.blob_key(), &c, meta.size, false, counter).await?;
    } else if let Some(super::keys::BundleKey::Manifest { .. }) = parse_bundle_key(key) {
        let manifest: crate::model::manifest::BundleManifest = super::parse_document(key, &bytes)?;
        let waiting =
            super::replicate::bring_files(src, dst, &manifest, super::replicate::INLINE_FILE_LIMIT, counter).await?;
        if let Some(first) = waiting.into_iter().next() {
            return Ok(Some(first));
        }
    }
    dst.restore(key, bytes).await.map(|()| None)
}

/// Bring `key` to the destination; `Ok(Some(file))`: a bundle still waiting for `file`.
async fn repair<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    dst: &Bucket<'_, S, F>,
    key: &str,
    drift: &Drift,
    progress: &SyncProgress,
) -> Result<Option<String>, String> {
    let counter = Arc::new(ProgressCounter::default());
    let result = match drift {
        Drift::Missing => match replicate(src, dst, key, &counter).await {
            Ok(Replicated::Waiting(files)) => return Ok(files.into_iter().next()),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        },
        Drift::Different(_) => match Checksums::from_blob_key(key) {
            Some(expected) => match src.store().head(key).await {
                Ok(m) => copy_blob(src, dst, key, &expected, m.size, true, &counter)
                    .await
                    .map(drop),
                Err(e) => Err(e.into()),
            },
            None => match restore_document(src, dst, key, &counter).await {
                Ok(Some(first)) => return Ok(Some(first)),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
        },
        Drift::Extra => Ok(()),
    };
    progress
        .bytes
        .fetch_add(counter.snapshot().bytes_done, Ordering::Relaxed);
    result.map(|()| None).map_err(|e| e.to_string())
}
