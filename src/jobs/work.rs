//! The kinds of job and how they run: `ingest` (a large `PUT /v1/files`) and `index`
//! (bring the search index up to date with a bundle key). [`QueueJobs`] is how writes hand
//! them to the queue; [`Work`] is the runner's handler. Both kinds are idempotent.

use super::queue::runner::{Handler, Outcome};
use super::queue::{AnyQueue, Job, JobFilter, JobQueue, JobState, NewJob};
use crate::api::ingest::{ingest, IngestJob, JobFailure, JobSink};
use crate::api::{ApiError, App};
use crate::http::{ReqwestClient, TokioSleeper};
use crate::model::BoxFuture;
use crate::search::indexer::{ops_for_key, IndexError, IndexJob};
use crate::search::{IndexOp, SearchError};
use crate::storage::AnyStore;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The schema scrubber of the native server.
pub type Scrubber = crate::search::schema::SchemaScrubber<ReqwestClient>;

/// The application the jobs run against.
pub type Services = App<AnyStore, ReqwestClient, TokioSleeper>;

/// Kind of the ingest job; its key is `{replica}/{uuid}.{version}`.
pub const INGEST: &str = "ingest";
/// Kind of the index job; its key is `{replica}/{bundle key}`.
pub const INDEX: &str = "index";

/// The key of the ingest of `files/{uuid}.{version}` into `replica`.
pub fn ingest_key(replica: &str, uuid: &str, version: &str) -> String {
    format!("{replica}/{uuid}.{version}")
}

/// The queue job for an ingest.
pub fn ingest_job(job: &IngestJob) -> NewJob {
    NewJob::new(
        INGEST,
        ingest_key(&job.replica, &job.uuid, &job.version),
        serde_json::to_value(job).unwrap_or_default(),
    )
}

/// The queue job for indexing a bundle key.
pub fn index_job(job: &IndexJob) -> NewJob {
    NewJob::new(
        INDEX,
        format!("{}/{}", job.replica, job.key),
        serde_json::to_value(job).unwrap_or_default(),
    )
}

/// Writes hand their follow-up work to the queue through this.
pub struct QueueJobs {
    queue: Arc<AnyQueue>,
}

impl QueueJobs {
    /// Over `queue`.
    pub fn new(queue: Arc<AnyQueue>) -> Self {
        QueueJobs { queue }
    }
}

impl JobSink for QueueJobs {
    fn submit_ingest(&self, job: IngestJob) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.queue
                .enqueue(vec![ingest_job(&job)])
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }

    fn ingest_failure<'a>(
        &'a self,
        replica: &'a str,
        uuid: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Option<JobFailure>> {
        Box::pin(async move {
            let filter = JobFilter {
                kind: Some(INGEST.into()),
                key: Some(ingest_key(replica, uuid, version)),
                states: Vec::new(),
                limit: 1,
            };
            let latest = match self.queue.list(&filter).await {
                Ok(mut jobs) => jobs.pop()?,
                Err(e) => {
                    tracing::warn!("cannot look up the ingest of {uuid}.{version}: {e}");
                    return None;
                }
            };
            if latest.state != JobState::Failed {
                return None;
            }
            let error = latest.error.unwrap_or_default();
            Some(serde_json::from_str(&error).unwrap_or(JobFailure {
                status: 500,
                code: "internal_server_error".into(),
                title: error,
            }))
        })
    }

    fn submit_index(&self, job: IndexJob) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.queue
                .enqueue(vec![index_job(&job)])
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

/// The runner's handler for every kind of job.
pub struct Work {
    app: Arc<Services>,
    scrubber: Option<Arc<Scrubber>>,
    batcher: IndexBatcher,
}

impl Work {
    /// Jobs against `app`; indexed metadata scrubbed by `scrubber` if set.
    pub fn new(app: Arc<Services>, scrubber: Option<Arc<Scrubber>>) -> Self {
        Work {
            app,
            scrubber,
            batcher: IndexBatcher::default(),
        }
    }

    async fn ingest(&self, job: &Job) -> Outcome {
        let ingest_job: IngestJob = match serde_json::from_value(job.payload.clone()) {
            Ok(j) => j,
            Err(e) => return Outcome::Fail(format!("unreadable ingest job: {e}")),
        };
        match ingest(&self.app, &ingest_job).await {
            Ok(_) => Outcome::Done,
            // Storage down: queued again, never dropped.
            Err(e @ ApiError::Unavailable(_)) => Outcome::Retry(e.to_string()),
            Err(e) => {
                tracing::error!(uuid = %ingest_job.uuid, version = %ingest_job.version, "ingest failed: {e}");
                // Kept as the client's error, to answer HEAD/GET of the file with it.
                Outcome::Fail(serde_json::to_string(&JobFailure::from(&e)).unwrap_or_else(|_| e.title()))
            }
        }
    }

    async fn index(&self, job: &Job) -> Outcome {
        let index_job: IndexJob = match serde_json::from_value(job.payload.clone()) {
            Ok(j) => j,
            Err(e) => return Outcome::Fail(format!("unreadable index job: {e}")),
        };
        let Some(engine) = self.app.search.clone() else {
            return Outcome::Done; // no index kept here
        };
        let replica = match self.app.replica(&index_job.replica) {
            Ok(r) => r,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        let ops = match ops_for_key(&replica.main, &index_job.key, self.scrubber.as_deref()).await {
            Ok(ops) => ops,
            Err(e) if e.is_transient() => return Outcome::Retry(e.to_string()),
            Err(e @ IndexError::Store(_)) => return Outcome::Retry(e.to_string()),
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        if ops.is_empty() {
            return Outcome::Done;
        }
        match self.batcher.index(&*engine, &index_job.replica, ops).await {
            Ok(()) => Outcome::Done,
            Err(e @ (SearchError::Unavailable(_) | SearchError::Internal(_) | SearchError::TimedOut(_))) => {
                Outcome::Retry(e.to_string())
            }
            Err(e) => Outcome::Fail(e.to_string()),
        }
    }
}

impl Handler for Work {
    async fn run(&self, job: &Job) -> Outcome {
        match job.kind.as_str() {
            INGEST => self.ingest(job).await,
            INDEX => self.index(job).await,
            other => Outcome::Fail(format!("no handler for jobs of kind {other:?}")),
        }
    }
}

type Waiting = (String, Vec<IndexOp>, oneshot::Sender<Result<(), SearchError>>);

/// Index writes of jobs running at the same time go to the engine in one call (one
/// commit): each caller adds its documents, and whoever gets the turn writes everything
/// waiting, then tells each caller how its part went.
#[derive(Default)]
struct IndexBatcher {
    waiting: Mutex<Vec<Waiting>>,
    turn: tokio::sync::Mutex<()>,
}

impl IndexBatcher {
    async fn index(
        &self,
        engine: &dyn crate::search::SearchEngine,
        replica: &str,
        ops: Vec<IndexOp>,
    ) -> Result<(), SearchError> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((replica.to_string(), ops, tx));
        {
            let _turn = self.turn.lock().await;
            let batch = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
            let mut by_replica: std::collections::BTreeMap<String, (Vec<IndexOp>, Vec<oneshot::Sender<_>>)> =
                Default::default();
            for (r, ops, tx) in batch {
                let e = by_replica.entry(r).or_default();
                e.0.extend(ops);
                e.1.push(tx);
            }
            for (r, (ops, waiters)) in by_replica {
                let result = engine.index(&r, ops).await;
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(SearchError::Internal("index batch dropped".into())))
    }
}
