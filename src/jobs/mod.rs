//! Background jobs of the backend: durable records on local disk, run by tokio tasks,
//! resumed when the server starts again.
//!
//! The queue seam is small on purpose: submit (durable before it returns), run,
//! complete or fail. A deployment with several backends can swap the directory for a
//! shared queue without touching the jobs themselves, which are idempotent.

pub mod index;

use crate::api::ingest::{ingest, IngestJob, JobFailure, JobSink, INCOMING_PREFIX};
use crate::api::ApiError;
use crate::server::NativeApp;
use crate::storage::{list_all, Store, StoreError, StoreResult};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Ingest jobs running at once.
const CONCURRENCY: usize = 4;
/// Longest wait between retries of a job whose storage is unavailable.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Ending of the temporary files that records are written through.
const TMP_SUFFIX: &str = ".tmp";
/// A record's temporary file untouched this long was left by a crash (a write takes
/// milliseconds), and so was an `incoming/` copy this old whose job is gone: an inline
/// ingest, which has no job record, copies and verifies a small file long before.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Job records under `{dir}/pending/{task_id}.json` (to run) and
/// `{dir}/failed/{replica}.{uuid}.{version}.json` (ended in an error a retry cannot fix).
pub struct FsJobs {
    dir: PathBuf,
    tx: mpsc::UnboundedSender<IngestJob>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<IngestJob>>>,
    failures: Mutex<HashMap<String, JobFailure>>,
    index: Arc<index::IndexQueue>,
}

/// Write `data` to `path` so that readers (and a crash) see the old record or the new one.
/// Every write goes through a temporary file of its own: identical requests at once write
/// the same record, and with one shared temporary name they renamed each other's file
/// away (and answered 503). The last rename wins; the records are equal anyway.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{}: not a file name", path.display())))?;
    let tmp = path.with_file_name(format!(
        "{}.{}{TMP_SUFFIX}",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let written = (|| {
        let mut f = std::fs::File::options().write(true).create_new(true).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Remove the temporary files in `dir` that a crash left between create and rename.
/// Only old ones: another process sharing the directory may be writing a fresh one.
fn sweep_stale_tmp(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for p in rd.filter_map(|e| e.ok()).map(|e| e.path()) {
        let stale = p.to_str().is_some_and(|n| n.ends_with(TMP_SUFFIX))
            && std::fs::symlink_metadata(&p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age >= STALE_AFTER);
        if stale {
            match std::fs::remove_file(&p) {
                Ok(()) => tracing::info!(path = %p.display(), "removed a job record's temporary file left by a crash"),
                Err(e) => tracing::warn!(path = %p.display(), "could not remove a stale temporary file: {e}"),
            }
        }
    }
}

/// Delete the server-side copies `incoming/{task}` in `store` that were left behind (a
/// process killed between copy and clean-up): those whose task is not in `live` (the
/// pending ingest jobs) and that were last written more than [`STALE_AFTER`] before
/// `now`. Both conditions, because small files are copied inline, with no job record.
/// Returns how many were deleted.
pub async fn sweep_incoming<S: Store>(
    store: &S,
    live: &HashSet<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> StoreResult<usize> {
    let cutoff = now - chrono::Duration::seconds(STALE_AFTER.as_secs() as i64);
    let mut removed = 0;
    for key in list_all(store, INCOMING_PREFIX).await? {
        let Some(task) = key.strip_prefix(INCOMING_PREFIX) else {
            continue;
        };
        if live.contains(task) {
            continue;
        }
        match store.head(&key).await {
            Ok(m) if m.last_modified < cutoff => {
                store.delete(&key).await?;
                tracing::info!(%key, "removed a server-side copy whose ingest is gone");
                removed += 1;
            }
            Ok(_) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

impl FsJobs {
    /// Open (creating) the job directory and load the record of failures.
    pub fn open(dir: &Path, scrubber: Option<Arc<index::Scrubber>>) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir.join("pending"))?;
        std::fs::create_dir_all(dir.join("failed"))?;
        sweep_stale_tmp(&dir.join("pending"));
        sweep_stale_tmp(&dir.join("failed"));
        let mut failures = HashMap::new();
        for e in std::fs::read_dir(dir.join("failed"))? {
            let p = e?.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue; // a write in progress (or its leftover)
            }
            let stem = p.file_stem().and_then(|s| s.to_str()).map(str::to_string);
            let record = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<JobFailure>(&b).ok());
            match (stem, record) {
                (Some(stem), Some(f)) => {
                    failures.insert(stem, f);
                }
                _ => tracing::error!(path = %p.display(), "unreadable job failure record ignored"),
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Arc::new(FsJobs {
            dir: dir.to_path_buf(),
            tx,
            rx: Mutex::new(Some(rx)),
            failures: Mutex::new(failures),
            index: index::IndexQueue::open(&dir.join("index"), scrubber)?,
        }))
    }

    fn pending_path(&self, task_id: &str) -> PathBuf {
        self.dir.join("pending").join(format!("{task_id}.json"))
    }

    /// Jobs recorded but not finished (after a restart: the ones to resume).
    pub fn pending(&self) -> Vec<IngestJob> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("pending")) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(
                |p| match std::fs::read(&p).map(|b| serde_json::from_slice::<IngestJob>(&b)) {
                    Ok(Ok(job)) => Some(job),
                    // Never dropped silently: an operator must see a job that cannot run.
                    other => {
                        tracing::error!(path = %p.display(), "unreadable job record left in place: {other:?}");
                        None
                    }
                },
            )
            .collect()
    }

    fn complete(&self, job: &IngestJob) {
        if let Err(e) = std::fs::remove_file(self.pending_path(&job.task_id)) {
            tracing::warn!(task = %job.task_id, "could not remove finished job record: {e}");
        }
    }

    fn failure_name(replica: &str, uuid: &str, version: &str) -> String {
        format!("{replica}.{uuid}.{version}")
    }

    fn fail(&self, job: &IngestJob, err: &ApiError) {
        let name = Self::failure_name(&job.replica, &job.uuid, &job.version);
        let failure = JobFailure::from(err);
        let body = serde_json::to_vec(&failure).unwrap_or_default();
        if let Err(e) = write_atomic(&self.dir.join("failed").join(format!("{name}.json")), &body) {
            tracing::error!(task = %job.task_id, "could not record job failure: {e}");
        }
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, failure);
        self.complete(job);
    }

    /// Start running jobs: everything pending from before, and whatever is submitted
    /// from now on. Call once, inside the tokio runtime.
    pub fn start(self: &Arc<Self>, app: Arc<NativeApp>) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let resumed = self.pending();
        if !resumed.is_empty() {
            tracing::info!(jobs = resumed.len(), "resuming unfinished ingest jobs");
        }
        let live: HashSet<String> = resumed.iter().map(|j| j.task_id.clone()).collect();
        for job in resumed {
            let _ = self.tx.send(job);
        }
        self.index.start(app.clone());
        let (sweeper, sweep_app) = (self.clone(), app.clone());
        tokio::spawn(async move { sweeper.sweep_incoming(&sweep_app, live).await });
        let jobs = self.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (app, jobs) = (app.clone(), jobs.clone());
                tokio::spawn(async move {
                    jobs.run(&app, job).await;
                    drop(permit);
                });
            }
        });
    }

    /// Once at start: the `incoming/` copies of every replica's main store that no job
    /// owns any more. `live` holds the jobs resumed here; the records on disk are read
    /// again too, for jobs another process sharing this directory has submitted since.
    async fn sweep_incoming(&self, app: &NativeApp, mut live: HashSet<String>) {
        live.extend(self.pending().into_iter().map(|j| j.task_id));
        for replica in [&app.aws, &app.gcp] {
            match sweep_incoming(&replica.main, &live, chrono::Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(replica = replica.name, copies = n, "removed orphaned incoming copies"),
                Err(e) => tracing::warn!(replica = replica.name, "could not sweep incoming copies: {e}"),
            }
        }
    }

    async fn run(&self, app: &NativeApp, job: IngestJob) {
        let mut backoff = Duration::from_secs(1);
        loop {
            match ingest(app, &job).await {
                Ok(_) => return self.complete(&job),
                // Storage down: the job stays recorded and is retried, never dropped.
                Err(e @ ApiError::Unavailable(_)) => {
                    tracing::warn!(task = %job.task_id, "ingest will be retried in {backoff:?}: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    tracing::error!(task = %job.task_id, uuid = %job.uuid, version = %job.version, "ingest failed: {e}");
                    return self.fail(&job, &e);
                }
            }
        }
    }
}

impl JobSink for FsJobs {
    fn submit_ingest(&self, job: IngestJob) -> Result<(), String> {
        let body = serde_json::to_vec(&job).map_err(|e| e.to_string())?;
        // A new attempt at the same file forgets how the last one ended.
        let name = Self::failure_name(&job.replica, &job.uuid, &job.version);
        if self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name)
            .is_some()
        {
            let _ = std::fs::remove_file(self.dir.join("failed").join(format!("{name}.json")));
        }
        // Durable before the 202 goes out; two fsyncs, so let other tasks run meanwhile.
        let path = self.pending_path(&job.task_id);
        crate::storage::verify::blocking(|| write_atomic(&path, &body)).map_err(|e| format!("recording job: {e}"))?;
        self.tx.send(job).map_err(|_| "job runner is not running".to_string())
    }

    fn submit_index(&self, job: crate::search::indexer::IndexJob) -> Result<(), String> {
        self.index.submit(job)
    }

    fn ingest_failure(&self, replica: &str, uuid: &str, version: &str) -> Option<JobFailure> {
        let name = Self::failure_name(replica, uuid, version);
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .cloned()
    }
}
