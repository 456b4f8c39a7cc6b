//! The job queue seam: durable jobs with leases, shared by every kind of background work.
//!
//! A job is a row: a kind (`ingest`, `index`, …), a key that names the work (repeats of a
//! queued key are one job), a JSON payload, a state and a time to run. Workers *lease*
//! jobs for a while and renew the lease while they run (heartbeat); a lease that runs out
//! (its process died) makes the job runnable again, so a job runs at least once and never
//! twice at the same time. Jobs are therefore idempotent.
//!
//! Two implementations pass [`conformance`]: [`disk::DiskQueue`] (SQLite in the data
//! directory, the default) and [`pg::PgQueue`] (PostgreSQL, shared by several backends).
//! [`AnyQueue`] is the closed set of them; [`runner`] drives any of them.

#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
pub mod disk;
pub mod journal;
pub mod pg;
pub mod registry;
pub mod runner;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// A job's id, unique within its queue.
pub type JobId = i64;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its `run_at`, or runnable.
    Queued,
    /// Leased by a worker (runnable again once the lease has run out).
    Running,
    /// Finished.
    Completed,
    /// Ended in an error that a retry cannot fix (until an operator retries it).
    Failed,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 4] = [
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
    ];

    /// The state's name, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for JobState {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self, QueueError> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| QueueError::Corrupt(format!("unknown job state {s:?}")))
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Kind (which handler runs it).
    pub kind: String,
    /// What the job is about; a queued job with the same key absorbs a repeat.
    pub key: String,
    /// The handler's input.
    pub payload: serde_json::Value,
    /// Not before this time (`None`: now).
    pub run_at: Option<DateTime<Utc>>,
}

impl NewJob {
    /// A job of `kind` about `key`, runnable now.
    pub fn new(kind: &str, key: impl Into<String>, payload: serde_json::Value) -> Self {
        NewJob {
            kind: kind.to_string(),
            key: key.into(),
            payload,
            run_at: None,
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Id.
    pub id: JobId,
    /// Kind.
    pub kind: String,
    /// Key.
    pub key: String,
    /// Input.
    pub payload: serde_json::Value,
    /// State.
    pub state: JobState,
    /// Times leased so far (the current run included).
    pub attempts: u32,
    /// Runnable from.
    pub run_at: DateTime<Utc>,
    /// The worker holding it, while running.
    pub worker: Option<String>,
    /// End of the current lease, while running.
    pub lease_until: Option<DateTime<Utc>>,
    /// The last error (of a failed job, or of the attempt before a retry).
    pub error: Option<String>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// How far it had come when its worker last reported (kept across retries).
    pub progress: Option<crate::model::Progress>,
}

/// A failure of the queue itself.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue's storage cannot be reached or refused the operation; try again later.
    #[error("job queue unavailable: {0}")]
    Unavailable(String),
    /// Stored data that cannot be read back.
    #[error("job queue holds unreadable data: {0}")]
    Corrupt(String),
    /// Configuration or set-up that cannot work.
    #[error("job queue: {0}")]
    Config(String),
}

/// Result of queue operations.
pub type QueueResult<T> = Result<T, QueueError>;

/// What a job of a kind/state filter looks like in listings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only these states (empty: all).
    pub states: Vec<JobState>,
    /// Only this key.
    pub key: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// How many jobs of one group (the part of their key before the first `/`) are in one
/// state, and when: what `dss sync status` reports per replica pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// The key's part before its first `/` (for replication, `{from}>{to}`).
    pub group: String,
    /// The state counted.
    pub state: JobState,
    /// How many.
    pub count: u64,
    /// When the oldest of them was enqueued.
    pub oldest: DateTime<Utc>,
    /// The one last changed: its key and when.
    pub latest_key: String,
    /// When that was.
    pub latest: DateTime<Utc>,
}

/// A durable queue of jobs with leases. Every method is one atomic step.
pub trait JobQueue: Send + Sync + 'static {
    /// Add jobs, durably before this returns. A job whose key is already queued (not yet
    /// running) is absorbed by that one: its id is returned instead, and the earlier of
    /// the two run times kept.
    fn enqueue(&self, jobs: Vec<NewJob>) -> impl Future<Output = QueueResult<Vec<JobId>>> + Send;
    /// Lease up to `max` runnable jobs for `worker` until now + `lease`: queued ones whose
    /// time has come and running ones whose lease has run out, oldest `run_at` first.
    fn lease(&self, worker: &str, max: usize, lease: Duration) -> impl Future<Output = QueueResult<Vec<Job>>> + Send;
    /// Extend `worker`'s lease of job `id` to now + `lease`; `false` if it no longer holds it.
    fn heartbeat(&self, id: JobId, worker: &str, lease: Duration) -> impl Future<Output = QueueResult<bool>> + Send;
    /// Store how far job `id`, which `worker` holds, has come; `false` if it no longer
    /// holds it. Not flushed to disk: a report lost in a crash is made again.
    fn report(
        &self,
        id: JobId,
        worker: &str,
        progress: &crate::model::Progress,
    ) -> impl Future<Output = QueueResult<bool>> + Send;
    /// Mark a job `worker` holds as completed; `false` if it no longer holds it.
    fn complete(&self, id: JobId, worker: &str) -> impl Future<Output = QueueResult<bool>> + Send;
    /// End `worker`'s attempt at job `id` with `error`: queued again at `retry_at`, or
    /// failed for good when `None`. `false` if it no longer holds it.
    fn fail(
        &self,
        id: JobId,
        worker: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> impl Future<Output = QueueResult<bool>> + Send;
    /// One job.
    fn get(&self, id: JobId) -> impl Future<Output = QueueResult<Option<Job>>> + Send;
    /// Jobs matching `filter`, newest first.
    fn list(&self, filter: &JobFilter) -> impl Future<Output = QueueResult<Vec<Job>>> + Send;
    /// Queue a failed job again, now, with its attempts counted anew; `false` if it is
    /// not failed.
    fn retry(&self, id: JobId) -> impl Future<Output = QueueResult<bool>> + Send;
    /// The jobs of `kind` counted by group and state (see [`Tally`]).
    fn tally(&self, kind: &str) -> impl Future<Output = QueueResult<Vec<Tally>>> + Send;
    /// Remove completed jobs last changed before `before`; how many.
    fn prune(&self, before: DateTime<Utc>) -> impl Future<Output = QueueResult<u64>> + Send;
    /// Return when new work may have arrived (an enqueue, here or, where the queue can
    /// tell, in another process), or after `max`.
    fn wait(&self, max: Duration) -> impl Future<Output = ()> + Send;
}

/// The queues a deployment can choose from.
pub enum AnyQueue {
    /// SQLite in the data directory.
    Disk(disk::DiskQueue),
    /// PostgreSQL.
    Pg(pg::PgQueue),
}

/// Where a queue is: the one reading of `DSS_JOBS_URL`, for the server and `dss jobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueLocation {
    /// `postgres://…` / `postgresql://…`.
    Postgres(String),
    /// The SQLite file of the embedded queue.
    Disk(std::path::PathBuf),
}

impl QueueLocation {
    /// `url` as given (a PostgreSQL URL or a path), or by default `DATA_DIR/jobs/queue.sqlite`.
    pub fn parse(url: Option<&str>, data_dir: &std::path::Path) -> QueueResult<Self> {
        match url {
            None => Ok(QueueLocation::Disk(data_dir.join("jobs").join("queue.sqlite"))),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(QueueLocation::Postgres(u.to_string()))
            }
            // Not echoed: a URL may hold a password.
            Some(u) if u.contains("://") => Err(QueueError::Config(
                "only postgres:// URLs and paths (the embedded queue) are supported".into(),
            )),
            Some(path) => Ok(QueueLocation::Disk(path.into())),
        }
    }
}

impl AnyQueue {
    /// Open (creating) the queue at `at`.
    pub async fn open(at: &QueueLocation) -> QueueResult<AnyQueue> {
        match at {
            QueueLocation::Postgres(url) => Ok(AnyQueue::Pg(pg::PgQueue::connect(url).await?)),
            QueueLocation::Disk(path) => Ok(AnyQueue::Disk(disk::DiskQueue::open(path)?)),
        }
    }

    /// Whether several backends can share this queue.
    pub fn is_shared(&self) -> bool {
        matches!(self, AnyQueue::Pg(_))
    }

    /// Tell every backend sharing the queue that `key` of `replica` was written (only the
    /// shared queue has others to tell).
    pub async fn announce_write(&self, replica: &str, key: &str) -> QueueResult<()> {
        match self {
            AnyQueue::Disk(_) => Ok(()),
            AnyQueue::Pg(q) => q.announce_write(replica, key).await,
        }
    }

    /// Every backend's write announcements, where the queue carries them.
    pub fn writes(&self) -> Option<tokio::sync::broadcast::Receiver<pg::WriteNews>> {
        match self {
            AnyQueue::Disk(_) => None,
            AnyQueue::Pg(q) => Some(q.writes()),
        }
    }
}

macro_rules! each {
    ($self:ident, $q:ident => $e:expr) => {
        match $self {
            AnyQueue::Disk($q) => $e,
            AnyQueue::Pg($q) => $e,
        }
    };
}

impl JobQueue for AnyQueue {
    async fn enqueue(&self, jobs: Vec<NewJob>) -> QueueResult<Vec<JobId>> {
        each!(self, q => q.enqueue(jobs).await)
    }
    async fn lease(&self, worker: &str, max: usize, lease: Duration) -> QueueResult<Vec<Job>> {
        each!(self, q => q.lease(worker, max, lease).await)
    }
    async fn heartbeat(&self, id: JobId, worker: &str, lease: Duration) -> QueueResult<bool> {
        each!(self, q => q.heartbeat(id, worker, lease).await)
    }
    async fn report(&self, id: JobId, worker: &str, progress: &crate::model::Progress) -> QueueResult<bool> {
        each!(self, q => q.report(id, worker, progress).await)
    }
    async fn complete(&self, id: JobId, worker: &str) -> QueueResult<bool> {
        each!(self, q => q.complete(id, worker).await)
    }
    async fn fail(&self, id: JobId, worker: &str, error: &str, retry_at: Option<DateTime<Utc>>) -> QueueResult<bool> {
        each!(self, q => q.fail(id, worker, error, retry_at).await)
    }
    async fn get(&self, id: JobId) -> QueueResult<Option<Job>> {
        each!(self, q => q.get(id).await)
    }
    async fn list(&self, filter: &JobFilter) -> QueueResult<Vec<Job>> {
        each!(self, q => q.list(filter).await)
    }
    async fn retry(&self, id: JobId) -> QueueResult<bool> {
        each!(self, q => q.retry(id).await)
    }
    async fn tally(&self, kind: &str) -> QueueResult<Vec<Tally>> {
        each!(self, q => q.tally(kind).await)
    }
    async fn prune(&self, before: DateTime<Utc>) -> QueueResult<u64> {
        each!(self, q => q.prune(before).await)
    }
    async fn wait(&self, max: Duration) {
        each!(self, q => q.wait(max).await)
    }
}

/// Milliseconds of a duration, saturating (leases and delays fit easily).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn locations_are_postgres_urls_or_paths() {
        let data = Path::new("/data");
        assert_eq!(
            QueueLocation::parse(None, data).expect("default"),
            QueueLocation::Disk("/data/jobs/queue.sqlite".into())
        );
        assert_eq!(
            QueueLocation::parse(Some("/q.sqlite"), data).expect("path"),
            QueueLocation::Disk("/q.sqlite".into())
        );
        for pg in ["postgres://u:p@h/db", "postgresql://h/db"] {
            assert_eq!(
                QueueLocation::parse(Some(pg), data).expect("pg"),
                QueueLocation::Postgres(pg.into())
            );
        }
        let err = QueueLocation::parse(Some("mysql://u:secret@h/db"), data).expect_err("other scheme");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
