//! Indexing jobs: after every bundle PUT, PATCH and DELETE, a record
//! `{dir}/pending/{replica}.{bundle key}.json` is written (synced) before the request
//! succeeds; one worker drains the records in batches, turns each key into index
//! documents ([`crate::search::indexer::ops_for_key`]), writes them in one commit, and
//! only then removes the records. Records left behind by a crash are resumed at start.
//!
//! Everything is idempotent: one record per key (a repeat overwrites it), and indexing a
//! key again writes the same documents. Identical requests at once write the same record
//! at once; each write has its own temporary file (see `write_atomic`), so all succeed.
//! A worker may then remove a record that a concurrent repeat had just rewritten: that
//! loses nothing, because the key's document is immutable and the worker read it after
//! the first record was written, and the repeat's job is still queued and runs again.

use crate::api::ApiError;
use crate::search::indexer::{ops_for_key, IndexError, IndexJob};
use crate::search::{IndexOp, SearchError};
use crate::server::NativeApp;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The schema scrubber of the native server.
pub type Scrubber = crate::search::schema::SchemaScrubber<crate::http::ReqwestClient>;

/// Most keys indexed in one commit.
const BATCH: usize = 512;
/// Keys read from storage at once.
const READ_CONCURRENCY: usize = 8;
/// Longest wait between retries while storage or the index is unavailable.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The durable queue of indexing jobs.
pub struct IndexQueue {
    dir: PathBuf,
    scrubber: Option<Arc<Scrubber>>,
    tx: mpsc::UnboundedSender<IndexJob>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<IndexJob>>>,
}

fn record_name(job: &IndexJob) -> Option<String> {
    let rest = job.key.strip_prefix("bundles/")?;
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    (ok(&job.replica) && ok(rest) && !rest.starts_with('.')).then(|| format!("{}.{rest}", job.replica))
}

impl IndexQueue {
    /// Open (creating) the queue's directory.
    pub fn open(dir: &Path, scrubber: Option<Arc<Scrubber>>) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir.join("pending"))?;
        std::fs::create_dir_all(dir.join("failed"))?;
        super::sweep_stale_tmp(&dir.join("pending"));
        super::sweep_stale_tmp(&dir.join("failed"));
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Arc::new(IndexQueue {
            dir: dir.to_path_buf(),
            scrubber,
            tx,
            rx: Mutex::new(Some(rx)),
        }))
    }

    fn path(&self, sub: &str, name: &str) -> PathBuf {
        self.dir.join(sub).join(format!("{name}.json"))
    }

    /// Record `job` durably, then queue it.
    pub fn submit(&self, job: IndexJob) -> Result<(), String> {
        let name = record_name(&job).ok_or_else(|| format!("not a bundle key: {}", job.key))?;
        let body = serde_json::to_vec(&job).map_err(|e| e.to_string())?;
        let path = self.path("pending", &name);
        crate::storage::verify::blocking(|| super::write_atomic(&path, &body))
            .map_err(|e| format!("recording index job: {e}"))?;
        self.tx.send(job).map_err(|_| "index worker is not running".to_string())
    }

    /// Jobs recorded and not yet done.
    pub fn pending(&self) -> Vec<IndexJob> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("pending")) else {
            return Vec::new();
        };
        let mut out: Vec<IndexJob> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(
                |p| match std::fs::read(&p).map(|b| serde_json::from_slice::<IndexJob>(&b)) {
                    Ok(Ok(job)) => Some(job),
                    other => {
                        tracing::error!(path = %p.display(), "unreadable index job record left in place: {other:?}");
                        None
                    }
                },
            )
            .collect();
        out.sort_by(|a, b| (&a.replica, &a.key).cmp(&(&b.replica, &b.key)));
        out
    }

    fn done(&self, job: &IndexJob) {
        if let Some(name) = record_name(job) {
            if let Err(e) = std::fs::remove_file(self.path("pending", &name)) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(key = %job.key, "could not remove finished index job record: {e}");
                }
            }
        }
    }

    fn failed(&self, job: &IndexJob, err: &str) {
        if let Some(name) = record_name(job) {
            let body = serde_json::json!({"replica": job.replica, "key": job.key, "error": err}).to_string();
            if let Err(e) = super::write_atomic(&self.path("failed", &name), body.as_bytes()) {
                tracing::error!(key = %job.key, "could not record index failure: {e}");
            }
        }
        self.done(job);
    }

    /// Start the worker: records from before first, then whatever is submitted.
    pub fn start(self: &Arc<Self>, app: Arc<NativeApp>) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let resumed = self.pending();
        if !resumed.is_empty() {
            tracing::info!(jobs = resumed.len(), "resuming unfinished index jobs");
        }
        for job in resumed {
            let _ = self.tx.send(job);
        }
        let queue = self.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Everything already waiting joins the batch; repeats of a key collapse.
                let mut batch: BTreeMap<(String, String), IndexJob> = BTreeMap::new();
                batch.insert((first.replica.clone(), first.key.clone()), first);
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(j) => {
                            batch.insert((j.replica.clone(), j.key.clone()), j);
                        }
                        Err(_) => break,
                    }
                }
                queue.run_batch(&app, batch.into_values().collect()).await;
            }
        });
    }

    async fn run_batch(&self, app: &NativeApp, jobs: Vec<IndexJob>) {
        use futures::StreamExt;
        let Some(engine) = &app.search else {
            jobs.iter().for_each(|j| self.done(j));
            return;
        };
        let mut todo = jobs;
        let mut backoff = Duration::from_secs(1);
        while !todo.is_empty() {
            let results: Vec<(IndexJob, Result<Vec<IndexOp>, IndexError>)> =
                futures::stream::iter(std::mem::take(&mut todo))
                    .map(|job| read_job(app, self.scrubber.as_deref(), job))
                    .buffered(READ_CONCURRENCY)
                    .collect()
                    .await;
            let mut by_replica: BTreeMap<String, (Vec<IndexJob>, Vec<IndexOp>)> = BTreeMap::new();
            for (job, r) in results {
                match r {
                    Ok(ops) => {
                        let e = by_replica.entry(job.replica.clone()).or_default();
                        e.1.extend(ops);
                        e.0.push(job);
                    }
                    Err(e) if e.is_transient() => {
                        tracing::warn!(key = %job.key, "indexing will be retried: {e}");
                        todo.push(job);
                    }
                    Err(e) => {
                        tracing::error!(replica = %job.replica, key = %job.key, "cannot index: {e}");
                        self.failed(&job, &e.to_string());
                    }
                }
            }
            for (replica, (jobs, ops)) in by_replica {
                let n = ops.len();
                let r = if ops.is_empty() {
                    Ok(())
                } else {
                    engine.index(&replica, ops).await
                };
                match r {
                    Ok(()) => {
                        tracing::debug!(%replica, keys = jobs.len(), docs = n, "indexed");
                        jobs.iter().for_each(|j| self.done(j));
                    }
                    Err(e @ (SearchError::Unavailable(_) | SearchError::Internal(_))) => {
                        tracing::warn!(%replica, "index write will be retried: {e}");
                        todo.extend(jobs);
                    }
                    Err(e) => {
                        tracing::error!(%replica, "index write refused: {e}");
                        jobs.iter().for_each(|j| self.failed(j, &e.to_string()));
                    }
                }
            }
            if !todo.is_empty() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn read_job(
    app: &NativeApp,
    scrubber: Option<&Scrubber>,
    job: IndexJob,
) -> (IndexJob, Result<Vec<IndexOp>, IndexError>) {
    let r = match app.replica(&job.replica) {
        Ok(replica) => ops_for_key(&replica.main, &job.key, scrubber).await,
        Err(ApiError::IllegalArguments(m)) => Err(IndexError::Corrupt(m)),
        Err(e) => Err(IndexError::Corrupt(e.to_string())),
    };
    (job, r)
}
