//! The kinds of job and how they run: [`Work`] names them (`ingest`, a large
//! `PUT /v1/files`; `index`, bringing the search index up to date with a bundle key).
//! [`QueueJobs`] is how writes hand them to the queue; [`Worker`] is the runner's handler.
//! Every kind is idempotent.

use super::events::{self, CompactJob, Journaller, RecordJob};
use super::notify::{self, MatchJob, Notifier, NotifyJob};
use super::queue::runner::{Handler, Outcome};
use super::queue::{AnyQueue, Job, JobFilter, JobQueue, JobState, NewJob};
use crate::api::{ApiError, App};
use crate::bucket::checkout::{self, CheckoutJob, CheckoutStatus, CopyOutJob, DestinationError};
use crate::bucket::followup::{JobFailure, JobSink};
use crate::bucket::ingest::{ingest, IngestJob};
use crate::bucket::keys::{parse_bundle_key, replicated};
use crate::bucket::replicate::{replicate_with, Replicated};
use crate::bucket::Origin;
use crate::http::{ReqwestClient, TokioSleeper};
use crate::model::{BoxFuture, ProgressCounter};
use crate::search::indexer::{ops_for_key, tombstone_ops_if_hidden, IndexError, IndexJob};
use crate::search::{IndexOp, SearchError};
use crate::storage::{AnyStore, Store};
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
/// Kind of the replication job; its key is `{from}>{to}/{bucket key}`.
pub const REPLICATE: &str = "replicate";
/// Kind of the checkout job; its key is `{replica}/{checkout id}`.
pub const CHECKOUT: &str = "checkout";
/// Kind of the job copying a blob to a checkout bucket for downloads; its key is
/// `{replica}/{blob key}`.
pub const COPY_OUT: &str = "copy-out";

/// Copy one key of replica `from`'s bucket to replica `to` ([`crate::bucket::replicate`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicateJob {
    /// Where the key was written.
    pub from: String,
    /// Where it is copied to.
    pub to: String,
    /// The bucket key.
    pub key: String,
}

impl ReplicateJob {
    /// The queue key: `{from}>{to}/{key}` (the pair first, so a pair's jobs group).
    pub fn queue_key(&self) -> String {
        format!("{}>{}/{}", self.from, self.to, self.key)
    }
}

/// The key of the ingest of `files/{uuid}.{version}` into `replica`.
pub fn ingest_key(replica: &str, uuid: &str, version: &str) -> String {
    format!("{replica}/{uuid}.{version}")
}

/// The queue key of a checkout: a shared one's names the bundle version (so that one runs
/// at a time), any other its id.
fn checkout_key(j: &CheckoutJob) -> String {
    match j.shared() {
        true => format!("{}/bundles/{}.{}", j.replica, j.uuid, j.version),
        false => format!("{}/{}", j.replica, j.id),
    }
}

/// Every kind of job, with its input. The queue stores the kind's name and the input as
/// JSON; [`Work::to_job`] and [`Work::from_job`] convert. A new kind (replicate,
/// checkout, notify) is a new variant here and a new arm in the handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// Finish a `PUT /v1/files` of a large file.
    Ingest(Box<IngestJob>),
    /// Bring the search index up to date with a bundle key.
    Index(IndexJob),
    /// Copy a key to another replica.
    Replicate(ReplicateJob),
    /// Check a bundle out.
    Checkout(CheckoutJob),
    /// Copy a blob to a checkout bucket, for downloads.
    CopyOut(CopyOutJob),
    /// Match a bundle key's events against the replica's subscriptions.
    Match(MatchJob),
    /// Deliver one notification.
    Notify(Box<NotifyJob>),
    /// Record (or delete) the events of a bundle key in the journal.
    Record(RecordJob),
    /// Compact a replica's event journal.
    Compact(CompactJob),
}

impl Work {
    /// The kind's name in the queue.
    pub fn kind(&self) -> &'static str {
        match self {
            Work::Ingest(_) => INGEST,
            Work::Index(_) => INDEX,
            Work::Replicate(_) => REPLICATE,
            Work::Checkout(_) => CHECKOUT,
            Work::CopyOut(_) => COPY_OUT,
            Work::Match(_) => notify::MATCH,
            Work::Notify(_) => notify::NOTIFY,
            Work::Record(_) => events::RECORD,
            Work::Compact(_) => events::COMPACT,
        }
    }

    /// Attempts a job of `kind` gets before it is marked failed: with the backoff (1 s
    /// doubling to 5 min, with jitter) 40 attempts span two and a half to three hours, to ride
    /// out a storage outage; `dss jobs retry` starts a failed job again. Replication never
    /// gives up: a replica that is down for a day gets its copies when it is back.
    pub fn max_attempts(kind: &str) -> u32 {
        match kind {
            INGEST | INDEX | COPY_OUT | notify::MATCH | events::RECORD | events::COMPACT => 40,
            // Its own schedule (DSS_NOTIFY_DELAYS) decides: each attempt is a job of its
            // own; the queue's retries (its subscription unreadable) are not attempts.
            notify::NOTIFY => u32::MAX,
            REPLICATE => u32::MAX,
            // Its own count says FAILED in its status after CHECKOUT_ATTEMPTS; its status
            // document must be written before it ends, however long storage is down.
            CHECKOUT => u32::MAX,
            _ => u32::MAX,
        }
    }

    /// What the job is about: a queued job with the same key absorbs a repeat.
    pub fn key(&self) -> String {
        match self {
            Work::Ingest(j) => ingest_key(&j.replica, &j.uuid, &j.version),
            Work::Index(j) => format!("{}/{}", j.replica, j.key),
            Work::Replicate(j) => j.queue_key(),
            Work::Checkout(j) => checkout_key(j),
            Work::CopyOut(j) => format!("{}/{}", j.replica, j.blob_key),
            Work::Match(j) => format!("{}/{}", j.replica, j.key),
            Work::Notify(j) => j.queue_key(),
            Work::Record(j) => format!("{}/{}", j.replica, j.key),
            Work::Compact(j) => j.replica.clone(),
        }
    }

    /// The job to enqueue.
    pub fn to_job(&self) -> NewJob {
        let payload = match self {
            Work::Ingest(j) => serde_json::to_value(j),
            Work::Index(j) => serde_json::to_value(j),
            Work::Replicate(j) => serde_json::to_value(j),
            Work::Checkout(j) => serde_json::to_value(j),
            Work::CopyOut(j) => serde_json::to_value(j),
            Work::Match(j) => serde_json::to_value(j),
            Work::Notify(j) => serde_json::to_value(j),
            Work::Record(j) => serde_json::to_value(j),
            Work::Compact(j) => serde_json::to_value(j),
        };
        NewJob::new(self.kind(), self.key(), payload.unwrap_or_default())
    }

    /// The work a queued job holds.
    pub fn from_job(job: &Job) -> Result<Work, String> {
        let p = job.payload.clone();
        match job.kind.as_str() {
            INGEST => serde_json::from_value(p).map(|j| Work::Ingest(Box::new(j))),
            INDEX => serde_json::from_value(p).map(Work::Index),
            REPLICATE => serde_json::from_value(p).map(Work::Replicate),
            CHECKOUT => serde_json::from_value(p).map(Work::Checkout),
            COPY_OUT => serde_json::from_value(p).map(Work::CopyOut),
            notify::MATCH => serde_json::from_value(p).map(Work::Match),
            notify::NOTIFY => serde_json::from_value(p).map(|j| Work::Notify(Box::new(j))),
            events::RECORD => serde_json::from_value(p).map(Work::Record),
            events::COMPACT => serde_json::from_value(p).map(Work::Compact),
            other => return Err(format!("no handler for jobs of kind {other:?}")),
        }
        .map_err(|e| format!("unreadable {} job: {e}", job.kind))
    }
}

/// Writes hand their follow-up work to the queue through this.
pub struct QueueJobs {
    queue: Arc<AnyQueue>,
    replicas: Vec<String>,
}

impl QueueJobs {
    /// Over `queue`, for the replica set `replicas` (every write is copied to the others).
    pub fn new(queue: Arc<AnyQueue>, replicas: Vec<String>) -> Self {
        QueueJobs { queue, replicas }
    }

    /// The newest job of `kind` with `key` that is in one of `states` (empty: any).
    async fn newest(&self, kind: &str, key: String, states: &[JobState]) -> Result<Option<Job>, String> {
        newest(&self.queue, kind, key, states).await
    }

    /// Queue `work`, durably.
    async fn submit(&self, work: Work) -> Result<(), String> {
        self.queue
            .enqueue(vec![work.to_job()])
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// The newest job of `kind` with `key` in `queue` that is in one of `states` (empty: any).
async fn newest(queue: &AnyQueue, kind: &str, key: String, states: &[JobState]) -> Result<Option<Job>, String> {
    let filter = JobFilter {
        kind: Some(kind.into()),
        key: Some(key),
        states: states.to_vec(),
        limit: 1,
    };
    queue
        .list(&filter)
        .await
        .map(|mut j| j.pop())
        .map_err(|e| e.to_string())
}

/// Queued or running.
const LIVE: [JobState; 2] = [JobState::Queued, JobState::Running];

/// The work that must follow a write of `key` to `replica` made by `origin`, with the
/// replica set `replicas`, decided here and nowhere else: a bundle or tombstone is
/// indexed (in every replica it lands in); a client's write of a document is copied to
/// every other replica (a file's job brings its blob first; a bundle's waits for its
/// files). Replication's own writes are not copied on. Every bundle or tombstone write,
/// a client's or replication's, is matched against the subscriptions of the replica it
/// lands in (each replica notifies its own subscribers, as the original's did).
pub fn follow_ups(replicas: &[String], replica: &str, key: &str, origin: Origin) -> Vec<Work> {
    let mut work = Vec::new();
    if parse_bundle_key(key).is_some() {
        work.push(Work::Index(IndexJob {
            replica: replica.to_string(),
            key: key.to_string(),
        }));
        work.push(Work::Match(MatchJob {
            replica: replica.to_string(),
            key: key.to_string(),
        }));
        work.push(Work::Record(RecordJob {
            replica: replica.to_string(),
            key: key.to_string(),
        }));
    }
    if origin == Origin::Client && replicated(key) {
        work.extend(replicas.iter().filter(|r| r.as_str() != replica).map(|to| {
            Work::Replicate(ReplicateJob {
                from: replica.to_string(),
                to: to.clone(),
                key: key.to_string(),
            })
        }));
    }
    work
}

impl JobSink for QueueJobs {
    fn after_write<'a>(&'a self, replica: &'a str, key: &'a str, origin: Origin) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let jobs: Vec<NewJob> = follow_ups(&self.replicas, replica, key, origin)
                .iter()
                .map(Work::to_job)
                .collect();
            if !jobs.is_empty() {
                self.queue.enqueue(jobs).await.map_err(|e| e.to_string())?;
            }
            // Other backends forget what they listed of this uuid; if the news is lost
            // they see the write within their freshness time, so it fails nothing.
            if let Err(e) = self.queue.announce_write(replica, key).await {
                tracing::warn!(replica, key, "write not announced to other backends: {e}");
            }
            Ok(())
        })
    }

    fn replication_status(&self) -> BoxFuture<'_, Result<serde_json::Value, String>> {
        Box::pin(async move {
            let s = super::replication::status(&self.queue, &self.replicas)
                .await
                .map_err(|e| e.to_string())?;
            serde_json::to_value(s).map_err(|e| e.to_string())
        })
    }

    fn pending_checkout<'a>(
        &'a self,
        replica: &'a str,
        uuid: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let key = format!("{replica}/bundles/{uuid}.{version}");
            let job = self.newest(CHECKOUT, key, &LIVE).await.ok()??;
            match Work::from_job(&job) {
                Ok(Work::Checkout(c)) => Some(c.id),
                _ => None,
            }
        })
    }

    fn checkouts_pending(&self, limit: usize) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            let filter = JobFilter {
                kind: Some(CHECKOUT.into()),
                key: None,
                states: vec![JobState::Queued, JobState::Running],
                limit,
            };
            self.queue.list(&filter).await.map_or(0, |j| j.len())
        })
    }

    fn copy_out_failed<'a>(&'a self, replica: &'a str, blob_key: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let job = self
                .newest(COPY_OUT, format!("{replica}/{blob_key}"), &[])
                .await
                .ok()??;
            (job.state == JobState::Failed).then(|| job.error.unwrap_or_default())
        })
    }

    fn submit_copy_out(&self, job: CopyOutJob) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // A client polling while a large copy runs must not start it again each time.
            let work = Work::CopyOut(job);
            if self.newest(COPY_OUT, work.key(), &LIVE).await?.is_some() {
                return Ok(());
            }
            self.submit(work).await
        })
    }

    fn submit_checkout(&self, job: CheckoutJob) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.submit(Work::Checkout(job)))
    }

    fn submit_ingest(&self, job: IngestJob) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.submit(Work::Ingest(Box::new(job))))
    }

    fn ingest_failure<'a>(
        &'a self,
        replica: &'a str,
        uuid: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Option<JobFailure>> {
        Box::pin(async move {
            let latest = match self.newest(INGEST, ingest_key(replica, uuid, version), &[]).await {
                Ok(job) => job?,
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
}

/// Attempts a checkout gets when storage is unavailable before it is reported FAILED.
const CHECKOUT_ATTEMPTS: u32 = 8;

/// How a checkout cannot finish.
enum CheckoutError {
    /// For good, with a cause for the user.
    Cause(String),
    /// For now (storage unavailable).
    Transient(String),
}

impl From<DestinationError> for CheckoutError {
    fn from(e: DestinationError) -> Self {
        match e {
            DestinationError::Store(e) => CheckoutError::Transient(e.to_string()),
            e => CheckoutError::Cause(e.to_string()),
        }
    }
}

/// The store of a user's bucket `name` in the cloud of `main` (with its credentials);
/// for a local replica, the directory `name` under `buckets_dir`, which must exist.
fn destination(main: &AnyStore, name: &str, buckets_dir: &std::path::Path) -> Result<AnyStore, DestinationError> {
    if !crate::bucket::ingest::valid_bucket_name(name) {
        return Err(DestinationError::Missing(name.to_string()));
    }
    match main {
        AnyStore::S3(s) => Ok(AnyStore::S3(Box::new(s.for_bucket(name)))),
        AnyStore::Gcs(g) => Ok(AnyStore::Gcs(Box::new(g.for_bucket(name)))),
        AnyStore::Fs(_) => {
            let dir = buckets_dir.join(name);
            if !dir.is_dir() {
                return Err(DestinationError::Missing(name.to_string()));
            }
            crate::storage::fs::FsStore::new(name, dir, None)
                .map(AnyStore::Fs)
                .map_err(|_| DestinationError::NotWritable(name.to_string()))
        }
        AnyStore::Memory(_) => Err(DestinationError::Missing(name.to_string())),
    }
}

impl From<IndexError> for Outcome {
    fn from(e: IndexError) -> Self {
        match e {
            e @ IndexError::Store(_) => Outcome::Retry(e.to_string()),
            e => Outcome::Fail(e.to_string()),
        }
    }
}

/// The error a job of `kind` is failed with after `attempts` that ended in `error`. An
/// ingest's is read back to answer HEAD/GET of its file, so it is a [`JobFailure`] with a
/// public title (503: nothing was wrong with the request); the details are in the log.
fn gave_up(kind: &str, attempts: u32, error: &str) -> String {
    let reason = format!("gave up after {attempts} attempts: {error}");
    if kind != INGEST {
        return reason;
    }
    let e = ApiError::Unavailable(format!(
        "the ingest gave up after {attempts} attempts while storage was unavailable; submit the file again"
    ));
    serde_json::to_string(&JobFailure::from(&e)).unwrap_or(reason)
}

/// What a [`Worker`] needs beyond the app and the queue.
pub struct WorkerSettings {
    /// Where local replicas' checkout destinations are (`DATA_DIR/buckets`).
    pub buckets_dir: std::path::PathBuf,
    /// Sends checkout emails (`DSS_SMTP_URL`, `DSS_NOTIFICATION_SENDER`).
    pub mailer: Option<super::email::Mailer>,
    /// Scrubs indexed metadata by JSON schema, if set.
    pub scrubber: Option<Arc<Scrubber>>,
    /// `DSS_REPLICATION_INLINE_MAX`: a bundle's replication copies its missing files up
    /// to this size itself, and waits for the jobs of larger ones.
    pub replication_inline_max: u64,
    /// Matches events and delivers notifications.
    pub notifier: Arc<Notifier>,
    /// `DSS_EVENTS_COMPACT_AFTER`: how long an event waits before a journal smaller than
    /// a full one is written.
    pub events_compact_after: std::time::Duration,
}

/// The runner's handler for every kind of job.
pub struct Worker {
    app: Arc<Services>,
    queue: Arc<AnyQueue>,
    /// Where local replicas' checkout destinations are: bucket `b` is directory `b` here.
    buckets_dir: std::path::PathBuf,
    /// Sends checkout emails, when configured.
    mailer: Option<super::email::Mailer>,
    /// A bundle's replication copies its missing files up to this size itself.
    replication_inline_max: u64,
    scrubber: Option<Arc<Scrubber>>,
    batcher: IndexBatcher,
    notifier: Arc<Notifier>,
    journaller: Journaller,
}

impl Worker {
    /// Jobs against `app`, taken from `queue` (where jobs that must run first are added).
    pub fn new(app: Arc<Services>, queue: Arc<AnyQueue>, settings: WorkerSettings) -> Self {
        let WorkerSettings {
            buckets_dir,
            mailer,
            scrubber,
            replication_inline_max,
            notifier,
            events_compact_after,
        } = settings;
        Worker {
            journaller: Journaller::new(app.clone(), queue.clone(), events_compact_after),
            app,
            queue,
            buckets_dir,
            mailer,
            replication_inline_max,
            scrubber,
            batcher: IndexBatcher::default(),
            notifier,
        }
    }

    /// Match the events of a bundle key against the replica's subscriptions and queue a
    /// notification per match. Matched once: a match of the same key that completed
    /// before (the write was repeated) is not made again.
    async fn match_events(&self, job: &MatchJob, queued: &Job) -> Outcome {
        let compiled = match self.notifier.subscriptions(&self.queue, &job.replica).await {
            Ok(c) => c,
            Err(e) => return Outcome::Retry(e),
        };
        let Some(needs) = compiled.needs() else {
            return Outcome::Done; // no subscriptions in this replica
        };
        let key = format!("{}/{}", job.replica, job.key);
        // Matches of one key take turns (a write repeated while its match runs), and a
        // key matched before (the write was repeated) is not matched again.
        // One look at the key's other matches (a key is written a handful of times).
        let others = JobFilter {
            kind: Some(notify::MATCH.into()),
            key: Some(key),
            states: vec![JobState::Running, JobState::Completed],
            limit: 16,
        };
        let others = match self.queue.list(&others).await {
            Ok(jobs) => jobs.into_iter().filter(|j| j.id != queued.id).collect::<Vec<_>>(),
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        if others.iter().any(|j| j.state == JobState::Running) {
            let at = chrono::Utc::now() + chrono::Duration::seconds(1);
            return Outcome::RetryAt(at, "another match of this key is running".into());
        }
        if !others.is_empty() {
            return Outcome::Done;
        }
        let replica = match self.app.replica(&job.replica) {
            Ok(r) => r,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        let events = match self.events(replica, &job.key, &needs).await {
            Ok(events) => events,
            Err(IndexError::Store(e)) => return Outcome::Retry(e.to_string()),
            Err(IndexError::Missing(what)) => {
                tracing::info!(key = %job.key, "nothing to notify: {what} is gone");
                return Outcome::Done;
            }
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        let api = self.app.config.public_url.clone().unwrap_or_default();
        let first = self
            .notifier
            .webhooks()
            .settings()
            .delays
            .first()
            .copied()
            .unwrap_or_default();
        let run_at = chrono::Utc::now() + chrono::Duration::from_std(first).unwrap_or_default();
        // One event at a time, so that a fan-out over many versions is never all in memory.
        for event in events {
            let found = match self
                .notifier
                .notifications(compiled.clone(), &job.replica, event, &api)
                .await
            {
                Ok(found) => found,
                Err(e) => return Outcome::Retry(e),
            };
            tracing::debug!(key = %job.key, notifications = found.len(), "subscriptions matched");
            for chunk in found.chunks(1000) {
                let jobs: Vec<NewJob> = chunk
                    .iter()
                    .map(|n| NewJob {
                        run_at: Some(run_at),
                        ..Work::Notify(Box::new(n.clone())).to_job()
                    })
                    .collect();
                if let Err(e) = self.queue.enqueue(jobs).await {
                    // A retry matches again: the notifications have the same ids, and one
                    // still queued absorbs its repeat; one already sent may be sent again,
                    // with the id that lets its receiver tell.
                    return Outcome::Retry(e.to_string());
                }
            }
        }
        Outcome::Done
    }

    /// The events bundle key `key` of `replica` stands for, with the documents `needs` asks.
    async fn events(
        &self,
        replica: &crate::api::Replica<AnyStore>,
        key: &str,
        needs: &notify::Needs,
    ) -> Result<Vec<notify::Event>, IndexError> {
        use crate::bucket::keys::BundleKey;
        use crate::model::notification::{tombstone_document, EventType};
        let bucket = self.app.bucket(replica);
        let (kind, uuid, versions, tomb) = match parse_bundle_key(key) {
            Some(BundleKey::Manifest { uuid, version }) => (EventType::Create, uuid, vec![version.to_string()], None),
            Some(BundleKey::VersionTombstone { uuid, version }) => {
                let t = bucket.tombstone(uuid, Some(version)).await?;
                (EventType::Tombstone, uuid, vec![version.to_string()], t)
            }
            Some(BundleKey::Tombstone { uuid }) => {
                let t = bucket.tombstone(uuid, None).await?;
                let seen = bucket
                    .visibility(uuid, self.app.clock.now(), crate::bucket::Listing::Fresh)
                    .await?;
                // Versions tombstoned on their own were notified then.
                let versions = seen
                    .stored_versions()
                    .filter(|v| !seen.version_tombstoned(v))
                    .map(str::to_string)
                    .collect();
                (EventType::Tombstone, uuid, versions, t)
            }
            None => return Ok(Vec::new()),
        };
        let mut events = Vec::with_capacity(versions.len());
        for version in versions {
            let (metadata, index) = match (&kind, &tomb) {
                (EventType::Tombstone, Some(t)) => (
                    needs.metadata.then(|| tombstone_document(uuid, &version, t)),
                    needs
                        .index
                        .then(|| crate::search::document::tombstone_document_json(uuid, &version, t)),
                ),
                (EventType::Tombstone, None) => return Err(IndexError::Missing(format!("the tombstone of {uuid}"))),
                _ => {
                    let metadata = match needs.metadata {
                        true => Some(crate::search::indexer::metadata_doc(&bucket, uuid, &version).await?),
                        false => None,
                    };
                    let index = match needs.index {
                        true => Some(
                            crate::search::indexer::bundle_doc(&bucket, uuid, &version, self.scrubber.as_deref())
                                .await?,
                        ),
                        false => None,
                    };
                    (metadata, index)
                }
            };
            events.push(notify::Event {
                kind,
                uuid: uuid.to_string(),
                version,
                metadata,
                index,
            });
        }
        Ok(events)
    }

    async fn ingest(&self, ingest_job: &IngestJob, progress: &Arc<ProgressCounter>) -> Outcome {
        let app = &self.app;
        let run = async {
            let replica = app.replica(&ingest_job.replica)?;
            let src = app.source_store(&ingest_job.source)?;
            Ok::<_, ApiError>(ingest(&*src, &app.bucket(replica), ingest_job, progress).await)
        };
        let e = match run.await {
            Ok(Ok(_)) => {
                if let Ok(replica) = app.replica(&ingest_job.replica) {
                    crate::api::dss::files::precache(app, replica, ingest_job).await;
                }
                return Outcome::Done;
            }
            // Storage down, or the follow-up not recorded: queued again, never dropped.
            Ok(Err(e)) if e.is_transient() => return Outcome::Retry(e.to_string()),
            Ok(Err(e)) => ApiError::from(e),
            Err(e) => e,
        };
        tracing::error!(uuid = %ingest_job.uuid, version = %ingest_job.version, "ingest failed: {e}");
        // Kept as the client's error, to answer HEAD/GET of the file with it.
        Outcome::Fail(serde_json::to_string(&JobFailure::from(&e)).unwrap_or_else(|_| e.title()))
    }

    async fn index(&self, index_job: &IndexJob) -> Outcome {
        let Some(engine) = self.app.search.clone() else {
            return Outcome::Done; // no index kept here
        };
        let replica = match self.app.replica(&index_job.replica) {
            Ok(r) => r,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        let bucket = self.app.bucket(replica);
        let (key, replica) = (&index_job.key, &index_job.replica);
        let run = async {
            let ops = ops_for_key(&bucket, key, self.app.clock.now(), self.scrubber.as_deref()).await?;
            self.write(&*engine, replica, ops).await?;
            // A tombstone written while this bundle's document was being built has had its
            // own document indexed, perhaps before ours replaced it: look again, and if the
            // version is hidden now, index its tombstone document after ours.
            let hidden = tombstone_ops_if_hidden(&bucket, key, self.app.clock.now()).await?;
            self.write(&*engine, replica, hidden).await
        };
        run.await.err().unwrap_or(Outcome::Done)
    }

    async fn replicate(&self, job: &ReplicateJob, progress: &Arc<ProgressCounter>) -> Outcome {
        let (from, to) = match (self.app.replica(&job.from), self.app.replica(&job.to)) {
            (Ok(f), Ok(t)) => (f, t),
            // A replica taken out of DSS_REPLICAS: nothing to copy to or from any more.
            (Err(e), _) | (_, Err(e)) => return Outcome::Fail(e.to_string()),
        };
        let (src, dst) = (self.app.bucket(from), self.app.bucket(to));
        match replicate_with(&src, &dst, &job.key, self.replication_inline_max, progress).await {
            Ok(Replicated::Copied { .. }) => {
                // A cached metadata file is in every replica's checkout bucket, as at ingest.
                if let Some((uuid, version)) = crate::bucket::keys::parse_file_key(&job.key) {
                    crate::api::dss::files::precache_file(&self.app, to, uuid, version).await;
                }
                Outcome::Done
            }
            Ok(Replicated::Present) => Outcome::Done,
            Ok(Replicated::Waiting(files)) => {
                // Their own jobs (queued when the files were written) bring them. One that
                // failed fails the bundle with its reason; one that is gone (pruned,
                // lost) is queued again; one queued or running is left alone, so that a
                // large blob is never streamed twice at once.
                let mut jobs: Vec<NewJob> = Vec::new();
                for key in &files {
                    let work = Work::Replicate(ReplicateJob {
                        from: job.from.clone(),
                        to: job.to.clone(),
                        key: key.clone(),
                    });
                    match newest(&self.queue, REPLICATE, work.key(), &[]).await {
                        Ok(found) => match found.as_ref() {
                            Some(j) if matches!(j.state, JobState::Queued | JobState::Running) => {}
                            Some(j) if j.state == JobState::Failed => {
                                return Outcome::Fail(format!(
                                    "{key}, which it needs, cannot be copied: {}",
                                    j.error.as_deref().unwrap_or("")
                                ))
                            }
                            _ => jobs.push(work.to_job()),
                        },
                        Err(e) => return Outcome::Retry(format!("the jobs of its files not looked up: {e}")),
                    }
                }
                if !jobs.is_empty() {
                    if let Err(e) = self.queue.enqueue(jobs).await {
                        return Outcome::Retry(format!(
                            "waiting for {} files; their jobs not queued: {e}",
                            files.len()
                        ));
                    }
                }
                Outcome::Retry(format!(
                    "waiting for {} of its files to reach {} (first: {})",
                    files.len(),
                    job.to,
                    files.first().map(String::as_str).unwrap_or("")
                ))
            }
            Err(e) if e.is_transient() => Outcome::Retry(e.to_string()),
            Err(e) => Outcome::Fail(e.to_string()),
        }
    }

    async fn copy_out(&self, job: &CopyOutJob, progress: &Arc<ProgressCounter>) -> Outcome {
        let replica = match self.app.replica(&job.replica) {
            Ok(r) => r,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        progress.set_totals(1, 0);
        match checkout::copy_blob_out(
            &replica.main,
            &replica.checkout,
            &job.blob_key,
            &job.content_type,
            job.expiring,
        )
        .await
        {
            Ok(()) => {
                progress.add(1, 0);
                Outcome::Done
            }
            Err(e @ crate::storage::StoreError::Unavailable(_)) => Outcome::Retry(e.to_string()),
            Err(e) => Outcome::Fail(e.to_string()),
        }
    }

    async fn checkout(&self, job: &CheckoutJob, queued: &Job, progress: &Arc<ProgressCounter>) -> Outcome {
        let attempts = queued.attempts;
        let replica = match self.app.replica(&job.replica) {
            Ok(r) => r,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        let status_store = &replica.checkout;
        let ended = match self.check_out(replica, job, queued.created_at, progress).await {
            Ok(location) => CheckoutStatus::succeeded(location, Some(progress.snapshot().into())),
            Err(CheckoutError::Cause(cause)) => CheckoutStatus::failed(cause, Some(progress.snapshot().into())),
            Err(CheckoutError::Transient(e)) if attempts < CHECKOUT_ATTEMPTS => return Outcome::Retry(e),
            Err(CheckoutError::Transient(e)) => CheckoutStatus::failed(
                format!("storage was unavailable for {attempts} attempts: {e}"),
                Some(progress.snapshot().into()),
            ),
        };
        if let Err(e) = checkout::write_status(status_store, &job.id, &ended).await {
            return Outcome::Retry(format!("status not stored: {e}"));
        }
        tracing::info!(id = %job.id, uuid = %job.uuid, status = %ended.status, "checkout ended");
        match (job.email.as_deref(), &self.mailer) {
            (Some(to), Some(m)) => {
                if let Err(e) = m.checkout_ended(to, job, &ended).await {
                    tracing::warn!(id = %job.id, "checkout email not sent: {e}");
                }
            }
            (Some(_), None) => {
                tracing::warn!(id = %job.id, "checkout email not sent: no DSS_SMTP_URL and DSS_NOTIFICATION_SENDER")
            }
            (None, _) => {}
        }
        Outcome::Done
    }

    /// Run a checkout: the destination checked, the files copied (the status document
    /// showing progress meanwhile); where the bundle is.
    async fn check_out(
        &self,
        replica: &crate::api::Replica<AnyStore>,
        job: &CheckoutJob,
        since: chrono::DateTime<chrono::Utc>,
        progress: &Arc<ProgressCounter>,
    ) -> Result<String, CheckoutError> {
        let own;
        let (dst, name) = match job.destination.as_deref() {
            None => (&replica.checkout, "the replica's checkout bucket".to_string()),
            Some(b) => {
                if self.own_bucket(b) {
                    return Err(CheckoutError::Cause(format!(
                        "the destination {b} is one of this deployment's own buckets"
                    )));
                }
                own = destination(&replica.main, b, &self.buckets_dir)?;
                (&own, b.to_string())
            }
        };
        checkout::check_writable(dst, &name).await?;
        let bucket = self.app.bucket(replica);
        let manifest = match bucket.manifest_at(&job.uuid, &job.version).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(CheckoutError::Cause(format!(
                    "bundle {}.{} not found",
                    job.uuid, job.version
                )))
            }
            Err(e) if e.is_transient() => return Err(CheckoutError::Transient(e.to_string())),
            Err(e) => return Err(CheckoutError::Cause(e.to_string())),
        };
        let id = job.id.clone();
        let status_store = &replica.checkout;
        let plan = checkout::CopyPlan {
            since,
            rules: job.destination.is_none().then_some(&self.app.config.checkout),
        };
        let copy = checkout::copy_bundle(&bucket, &manifest, &job.uuid, dst, plan, progress);
        let report = async {
            // The status document shows how far the copy has come, every two seconds.
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                let s = CheckoutStatus::running(Some(progress.snapshot().into()));
                if let Err(e) = checkout::write_status(status_store, &id, &s).await {
                    tracing::debug!("checkout progress not stored: {e}");
                }
            }
        };
        let copied = tokio::select! {
            r = copy => r,
            () = report => unreachable!("the report loop never ends"),
        };
        match copied {
            Ok(()) => {}
            Err(e) if e.is_transient() => return Err(CheckoutError::Transient(e.to_string())),
            Err(e) => return Err(CheckoutError::Cause(e.to_string())),
        }
        if job.destination.is_none() {
            // Downloads with `directurls`/`presignedurls` serve this copy while it is valid.
            checkout::mark_bundle(&replica.checkout, &job.uuid, &job.version, manifest.files.len())
                .await
                .map_err(|e| CheckoutError::Transient(e.to_string()))?;
        }
        let dir = checkout::bundle_dir(&job.uuid, &job.version);
        Ok(match dst {
            AnyStore::Fs(fs) => format!("file://{}", fs.root().join(&dir).display()),
            other => other.direct_url(&dir).unwrap_or(dir),
        })
    }

    /// Whether `name` is a bucket of one of the replicas (never a checkout destination).
    fn own_bucket(&self, name: &str) -> bool {
        self.app.replicas.iter().any(|r| {
            [&r.main, &r.checkout].iter().any(|s| {
                s.direct_url("x")
                    .and_then(|u| u.split_once("://").map(|(_, rest)| rest.to_string()))
                    .is_some_and(|rest| rest == format!("{name}/x"))
            })
        })
    }

    /// Index `ops` (none: nothing to do); how a failure ends the job.
    async fn write(
        &self,
        engine: &dyn crate::search::SearchEngine,
        replica: &str,
        ops: Vec<IndexOp>,
    ) -> Result<(), Outcome> {
        if ops.is_empty() {
            return Ok(());
        }
        self.batcher.index(engine, replica, ops).await.map_err(|e| match e {
            SearchError::Unavailable(_) | SearchError::Internal(_) | SearchError::TimedOut(_) => {
                Outcome::Retry(e.to_string())
            }
            e => Outcome::Fail(e.to_string()),
        })
    }
}

impl Handler for Worker {
    fn max_attempts(&self, job: &Job) -> u32 {
        Work::max_attempts(&job.kind)
    }

    fn give_up(&self, job: &Job, error: String) -> String {
        tracing::error!(kind = %job.kind, key = %job.key, attempts = job.attempts, "job gave up: {error}");
        gave_up(&job.kind, job.attempts, &error)
    }

    async fn run(&self, job: &Job, progress: Arc<ProgressCounter>) -> Outcome {
        match Work::from_job(job) {
            Ok(Work::Ingest(j)) => self.ingest(&j, &progress).await,
            Ok(Work::Index(j)) => self.index(&j).await,
            Ok(Work::Replicate(j)) => self.replicate(&j, &progress).await,
            Ok(Work::Checkout(j)) => self.checkout(&j, job, &progress).await,
            Ok(Work::CopyOut(j)) => self.copy_out(&j, &progress).await,
            Ok(Work::Match(j)) => self.match_events(&j, job).await,
            Ok(Work::Notify(j)) => self.notifier.deliver(&self.queue, &j).await,
            Ok(Work::Record(j)) => self.journaller.record(&j).await,
            Ok(Work::Compact(j)) => self.journaller.compact(&j).await,
            Err(e) => Outcome::Fail(e),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::ingest::SourceUrl;
    use crate::jobs::queue::JobState;

    fn stored(new: NewJob) -> Job {
        let now = chrono::Utc::now();
        Job {
            id: 1,
            kind: new.kind,
            key: new.key,
            payload: new.payload,
            state: JobState::Queued,
            attempts: 0,
            run_at: now,
            worker: None,
            lease_until: None,
            error: None,
            created_at: now,
            updated_at: now,
            progress: None,
        }
    }

    #[test]
    fn a_given_up_ingest_answers_503_without_its_details() {
        let f: JobFailure = serde_json::from_str(&gave_up(INGEST, 40, "storage: 10.0.0.7 refused")).unwrap();
        assert_eq!((f.status, f.code.as_str()), (503, "service_unavailable"));
        assert!(
            f.title.contains("gave up after 40 attempts") && !f.title.contains("10.0.0.7"),
            "{f:?}"
        );
        assert_eq!(gave_up(INDEX, 3, "down"), "gave up after 3 attempts: down");
    }

    #[test]
    fn every_kind_goes_through_the_queue_unchanged() {
        let ingest = Work::Ingest(Box::new(IngestJob {
            task_id: "t".into(),
            source: SourceUrl {
                scheme: "s3".into(),
                bucket: "b".into(),
                key: "k".into(),
            },
            replica: "aws".into(),
            uuid: "u".into(),
            version: "v".into(),
            creator_uid: 1,
            expected: None,
            size: 2,
            content_type: "text/plain".into(),
        }));
        let index = Work::Index(IndexJob {
            replica: "gcp".into(),
            key: "bundles/u.v".into(),
        });
        let copy = Work::Replicate(ReplicateJob {
            from: "aws".into(),
            to: "gcp".into(),
            key: "files/u.v".into(),
        });
        let matching = Work::Match(MatchJob {
            replica: "aws".into(),
            key: "bundles/u.v.dead".into(),
        });
        let notification = Work::Notify(Box::new(NotifyJob {
            replica: "aws".into(),
            subscription: "s".into(),
            id: "n".into(),
            event_type: crate::model::notification::EventType::Tombstone,
            bundle_uuid: "u".into(),
            bundle_version: "v".into(),
            payload: serde_json::json!({"a": 1}),
            attempt: 3,
        }));
        let record = Work::Record(RecordJob {
            replica: "aws".into(),
            key: "bundles/u.v".into(),
        });
        let compact = Work::Compact(CompactJob { replica: "gcp".into() });
        for (w, kind, key) in [
            (ingest, INGEST, "aws/u.v"),
            (index, INDEX, "gcp/bundles/u.v"),
            (copy, REPLICATE, "aws>gcp/files/u.v"),
            (matching, notify::MATCH, "aws/bundles/u.v.dead"),
            (notification, notify::NOTIFY, "aws/s/n#3"),
            (record, events::RECORD, "aws/bundles/u.v"),
            (compact, events::COMPACT, "gcp"),
        ] {
            let job = stored(w.to_job());
            assert_eq!((job.kind.as_str(), job.key.as_str()), (kind, key));
            assert_eq!(Work::from_job(&job), Ok(w));
        }
        let mut odd = stored(NewJob::new("unheard-of", "x", serde_json::json!({})));
        assert!(Work::from_job(&odd).unwrap_err().contains("no handler"));
        odd.kind = INDEX.into();
        assert!(Work::from_job(&odd).unwrap_err().contains("unreadable index job"));
    }

    /// A client's write of a document is copied to every other replica and a bundle key
    /// indexed, matched and recorded in the event journal where it lands; replication's
    /// own writes are indexed, matched and recorded, never copied on.
    #[test]
    fn writes_are_copied_to_every_other_replica_once() {
        let replicas: Vec<String> = ["aws", "gcp", "spare"].map(String::from).to_vec();
        let u = "0b0e7c1e-0000-4000-8000-000000000000";
        let v = "2019-01-01T000000.000000Z";
        let keys = |key: &str, origin| -> Vec<String> {
            follow_ups(&replicas, "gcp", key, origin)
                .iter()
                .map(|w| format!("{} {}", w.kind(), w.key()))
                .collect()
        };
        let bundle = format!("bundles/{u}.{v}");
        // Indexed, matched against subscriptions and recorded as an event where it lands,
        // whoever wrote it.
        let here = [
            format!("index gcp/{bundle}"),
            format!("notify-match gcp/{bundle}"),
            format!("event gcp/{bundle}"),
        ];
        assert_eq!(
            keys(&bundle, Origin::Client),
            [
                here[0].clone(),
                here[1].clone(),
                here[2].clone(),
                format!("replicate gcp>aws/{bundle}"),
                format!("replicate gcp>spare/{bundle}")
            ]
        );
        assert_eq!(keys(&bundle, Origin::Replication), here);
        let file = format!("files/{u}.{v}");
        assert_eq!(
            keys(&file, Origin::Client),
            [
                format!("replicate gcp>aws/{file}"),
                format!("replicate gcp>spare/{file}")
            ]
        );
        assert!(keys(&file, Origin::Replication).is_empty());
        assert!(keys("incoming/x", Origin::Client).is_empty());
    }
}
