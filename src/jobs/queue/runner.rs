//! The runner: a number of workers in this process that lease jobs from any
//! [`JobQueue`], run them through a [`Handler`], renew their leases while they run, and
//! record how each ended. It knows nothing of the server: handlers bring their own
//! context.

use super::{Job, JobQueue};
use crate::model::{Progress, ProgressCounter};
use chrono::Utc;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How one run of a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; the job is completed.
    Done,
    /// Failed in a way that may pass (storage down): queued again after a backoff that
    /// grows with the attempts. Never dropped.
    Retry(String),
    /// Failed, to be tried again at a time of the job's own schedule (a webhook's
    /// delays), whatever its attempts.
    RetryAt(chrono::DateTime<Utc>, String),
    /// Failed in a way a retry cannot fix: the job is marked failed, with this error.
    Fail(String),
}

/// What runs jobs. One handler serves every kind a runner is given.
pub trait Handler: Send + Sync + 'static {
    /// Run `job` once, counting how far it has come into `progress` (stored with the job
    /// at each lease renewal and at its end). Jobs are idempotent: a job may run again
    /// after a crash.
    fn run(&self, job: &Job, progress: Arc<ProgressCounter>) -> impl Future<Output = Outcome> + Send;

    /// Attempts a job of this kind gets: a retry after the last one marks it failed (kept,
    /// with its error, for `dss jobs retry`). Unlimited unless a kind says otherwise.
    fn max_attempts(&self, _job: &Job) -> u32 {
        u32::MAX
    }

    /// The error a job is marked failed with when a retry after its last attempt is
    /// refused (`error`: the attempt's own). Kinds whose errors are read back (an
    /// ingest's answers HEAD/GET of its file) say it in their own format.
    fn give_up(&self, job: &Job, error: String) -> String {
        format!("gave up after {} attempts: {error}", job.attempts)
    }
}

/// How a runner works.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Jobs run at once in this process.
    pub workers: usize,
    /// How long a lease lasts; a job whose process dies is taken over after this.
    pub lease: Duration,
    /// Interval of lease renewals (at most a third of the lease, so two may be missed).
    pub heartbeat: Duration,
    /// Longest idle wait between looks at the queue (notifications come sooner).
    pub poll: Duration,
    /// Longest wait before a retry.
    pub max_backoff: Duration,
    /// This worker's name in the queue (unique per process).
    pub worker_id: String,
}

impl RunnerConfig {
    /// `workers` workers with a `lease`, and the other settings derived.
    pub fn new(workers: usize, lease: Duration) -> Self {
        RunnerConfig {
            workers: workers.max(1),
            lease,
            heartbeat: lease / 3,
            poll: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            worker_id: format!(
                "{}:{}:{}",
                hostname(),
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        }
    }

    fn beat(&self) -> Duration {
        // Never fewer than three renewals per lease, whatever was configured.
        self.heartbeat.min(self.lease / 3).max(Duration::from_millis(10))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

/// The delay before retry number `attempts` (1-based): 1 s doubling, capped, with up to a
/// quarter of jitter so that a burst of failures does not come back at once.
pub fn backoff(attempts: u32, cap: Duration) -> Duration {
    let base = Duration::from_secs(1u64 << attempts.saturating_sub(1).min(20)).min(cap);
    let jitter = base.mul_f64(f64::from(rand_core::RngCore::next_u32(&mut rand_core::OsRng) % 1000) / 4000.0);
    (base + jitter).min(cap)
}

/// A started runner; dropping it (or [`Runner::stop`]) stops leasing new jobs.
pub struct Runner {
    task: tokio::task::JoinHandle<()>,
}

impl Runner {
    /// Stop leasing. Jobs already running finish on their own tasks.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start `cfg.workers` workers on `queue` with `handler`. Call inside a tokio runtime.
pub fn start<Q: JobQueue, H: Handler>(queue: Arc<Q>, handler: Arc<H>, cfg: RunnerConfig) -> Runner {
    let task = tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(cfg.workers));
        let cfg = Arc::new(cfg);
        loop {
            let Ok(first) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            let jobs = match queue.lease(&cfg.worker_id, permits.len(), cfg.lease).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!("job runner: cannot lease: {e}");
                    drop(permits);
                    tokio::time::sleep(cfg.poll).await;
                    continue;
                }
            };
            if jobs.is_empty() {
                drop(permits);
                queue.wait(cfg.poll).await;
                continue;
            }
            for (job, permit) in jobs.into_iter().zip(permits) {
                let (queue, handler, cfg) = (queue.clone(), handler.clone(), cfg.clone());
                tokio::spawn(async move {
                    run_one(&*queue, &*handler, job, &cfg).await;
                    drop(permit);
                });
            }
        }
    });
    Runner { task }
}

/// Run one leased job to its end, renewing the lease meanwhile.
async fn run_one<Q: JobQueue, H: Handler>(queue: &Q, handler: &H, job: Job, cfg: &RunnerConfig) {
    let counter = Arc::new(ProgressCounter::default());
    let mut reported = job.progress.unwrap_or_default();
    // Stores what the job counted since the last report, if anything.
    let report = |reported: &mut Progress| {
        let now = counter.snapshot();
        let changed = now != Progress::default() && now != *reported;
        if changed {
            *reported = now;
        }
        async move {
            if changed {
                if let Err(e) = queue.report(job.id, &cfg.worker_id, &now).await {
                    tracing::debug!(id = job.id, "job progress not stored: {e}");
                }
            }
        }
    };
    let work = handler.run(&job, counter.clone());
    tokio::pin!(work);
    let mut beat = tokio::time::interval(cfg.beat());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beat.tick().await; // the first tick is immediate; the lease is fresh
    let outcome = loop {
        tokio::select! {
            o = &mut work => break o,
            _ = beat.tick() => match queue.heartbeat(job.id, &cfg.worker_id, cfg.lease).await {
                Ok(true) => report(&mut reported).await,
                Ok(false) => tracing::warn!(id = job.id, "job lease lost: another worker may run it too (jobs are idempotent)"),
                Err(e) => tracing::warn!(id = job.id, "job lease not renewed: {e}"),
            },
        }
    };
    report(&mut reported).await;
    let outcome = match outcome {
        Outcome::Retry(e) if job.attempts >= handler.max_attempts(&job) => Outcome::Fail(handler.give_up(&job, e)),
        o => o,
    };
    let recorded = match &outcome {
        Outcome::Done => queue.complete(job.id, &cfg.worker_id).await,
        Outcome::Retry(e) => {
            let delay = backoff(job.attempts, cfg.max_backoff);
            tracing::warn!(id = job.id, kind = %job.kind, key = %job.key, "job will be retried in {delay:?}: {e}");
            let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            queue.fail(job.id, &cfg.worker_id, e, Some(at)).await
        }
        Outcome::RetryAt(at, e) => {
            tracing::debug!(id = job.id, kind = %job.kind, key = %job.key, "job will be tried again at {at}: {e}");
            queue.fail(job.id, &cfg.worker_id, e, Some(*at)).await
        }
        Outcome::Fail(e) => {
            tracing::error!(id = job.id, kind = %job.kind, key = %job.key, "job failed: {e}");
            queue.fail(job.id, &cfg.worker_id, e, None).await
        }
    };
    match recorded {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            id = job.id,
            "job ended after its lease was taken over; its result was not recorded"
        ),
        Err(e) => tracing::warn!(id = job.id, "job end not recorded (it will run again): {e}"),
    }
}
