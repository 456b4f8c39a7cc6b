//! The shared job queue: PostgreSQL, for several backends.
//!
//! Leases are one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)`, so backends
//! leasing at once never block on, nor take, the same rows. Every enqueue (and retry)
//! sends `NOTIFY dss_jobs`; each process listens and wakes its idle workers, so a job
//! starts within milliseconds, with polling as the fallback if the listener drops. All
//! times are the database's (`now()`), so backends' clocks need not agree. Writes to the
//! buckets are announced on `dss_writes` ([`PgQueue::announce_write`]), so that every
//! backend forgets what it listed of that uuid at once ([`PgQueue::writes`]). The schema is
//! created and migrated at connect by sqlx's migrator (`migrations/postgres/`).

use super::{millis, Job, JobFilter, JobId, JobQueue, JobState, NewJob, QueueError, QueueResult, Tally};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The channel of wake-ups.
const CHANNEL: &str = "dss_jobs";
/// The channel of write announcements: the payload is `{replica} {key}`.
const WRITES: &str = "dss_writes";
/// Announcements a slow receiver may fall behind by before it is told it missed some.
const WRITES_BACKLOG: usize = 4096;
/// Connections per process.
const POOL: u32 = 8;

/// The migrations, in order, embedded in the binary.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "jobs", include_str!("../../../migrations/postgres/0001_jobs.sql")),
    (
        2,
        "progress",
        include_str!("../../../migrations/postgres/0002_progress.sql"),
    ),
    (
        3,
        "subscriptions",
        include_str!("../../../migrations/postgres/0003_subscriptions.sql"),
    ),
    (
        4,
        "collections",
        include_str!("../../../migrations/postgres/0004_collections.sql"),
    ),
    (
        5,
        "events",
        include_str!("../../../migrations/postgres/0005_events.sql"),
    ),
    (
        6,
        "collection_claims",
        include_str!("../../../migrations/postgres/0006_collection_claims.sql"),
    ),
];

/// The PostgreSQL queue.
pub struct PgQueue {
    /// For what must survive a crash of the database before the caller goes on: enqueues
    /// (a write is answered only once its follow-up job is durable) and retries.
    pub(super) pool: PgPool,
    /// For the rest, with `synchronous_commit = off`: a lease, heartbeat, completion or
    /// failure lost in a database crash only makes a job run again, and jobs are
    /// idempotent. It spares a WAL flush per job.
    pub(super) fast: PgPool,
    notify: Arc<Notify>,
    writes: tokio::sync::broadcast::Sender<WriteNews>,
    listener: tokio::task::JoinHandle<()>,
}

/// What the write announcements of all backends say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteNews {
    /// `key` of `replica` was written.
    Written {
        /// The replica.
        replica: String,
        /// The key.
        key: String,
    },
    /// Announcements may have been missed (the listener reconnected, or the receiver fell
    /// behind): forget everything.
    Missed,
}

impl Drop for PgQueue {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn unavailable(e: sqlx::Error) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn migrator() -> sqlx::migrate::Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, name, sql)| {
            sqlx::migrate::Migration::new(
                *version,
                Cow::Borrowed(*name),
                sqlx::migrate::MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    sqlx::migrate::Migrator {
        migrations: Cow::Owned(migrations),
        ..sqlx::migrate::Migrator::DEFAULT
    }
}

const COLUMNS: &str = "id, kind, key, payload::text AS payload, state, attempts, run_at, worker, lease_until, error, created_at, updated_at, (SELECT p.progress::text FROM dss_job_progress p WHERE p.id = dss_jobs.id) AS progress";

fn job(r: &PgRow) -> QueueResult<Job> {
    let corrupt = |e: sqlx::Error| QueueError::Corrupt(e.to_string());
    let payload: String = r.try_get("payload").map_err(corrupt)?;
    let state: String = r.try_get("state").map_err(corrupt)?;
    let attempts: i32 = r.try_get("attempts").map_err(corrupt)?;
    let progress: Option<String> = r.try_get("progress").map_err(corrupt)?;
    Ok(Job {
        id: r.try_get("id").map_err(corrupt)?,
        kind: r.try_get("kind").map_err(corrupt)?,
        key: r.try_get("key").map_err(corrupt)?,
        payload: serde_json::from_str(&payload).map_err(|e| QueueError::Corrupt(format!("payload: {e}")))?,
        state: state.parse()?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        run_at: r.try_get("run_at").map_err(corrupt)?,
        worker: r.try_get("worker").map_err(corrupt)?,
        lease_until: r.try_get("lease_until").map_err(corrupt)?,
        error: r.try_get("error").map_err(corrupt)?,
        created_at: r.try_get("created_at").map_err(corrupt)?,
        updated_at: r.try_get("updated_at").map_err(corrupt)?,
        progress: progress
            .map(|p| serde_json::from_str(&p).map_err(|e| QueueError::Corrupt(format!("progress: {e}"))))
            .transpose()?,
    })
}

impl PgQueue {
    /// Connect, migrate the schema, and start listening for wake-ups.
    pub async fn connect(url: &str) -> QueueResult<PgQueue> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| QueueError::Config(format!("connecting to the job queue: {e}")))?;
        let fast_options = sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(|e| QueueError::Config(format!("job queue URL: {e}")))?
            .options([("synchronous_commit", "off")]);
        let fast = PgPoolOptions::new()
            .max_connections(POOL)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(fast_options)
            .await
            .map_err(|e| QueueError::Config(format!("connecting to the job queue: {e}")))?;
        migrator()
            .run(&pool)
            .await
            .map_err(|e| QueueError::Config(format!("migrating the job queue: {e}")))?;
        let notify = Arc::new(Notify::new());
        let (writes, _) = tokio::sync::broadcast::channel(WRITES_BACKLOG);
        let listener = tokio::spawn(listen(pool.clone(), notify.clone(), writes.clone()));
        Ok(PgQueue {
            pool,
            fast,
            notify,
            writes,
            listener,
        })
    }

    /// Tell every backend (this one too) that `key` of `replica` was written. Not
    /// durable: a backend that misses it sees the write within its freshness time.
    pub async fn announce_write(&self, replica: &str, key: &str) -> QueueResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WRITES)
            .bind(format!("{replica} {key}"))
            .execute(&self.fast)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The write announcements of every backend from now on.
    pub fn writes(&self) -> tokio::sync::broadcast::Receiver<WriteNews> {
        self.writes.subscribe()
    }
}

/// Wake local waiters on every wake-up, pass write announcements on; reconnects (after a
/// pause) when dropped, and then says announcements may have been missed.
async fn listen(pool: PgPool, notify: Arc<Notify>, writes: tokio::sync::broadcast::Sender<WriteNews>) {
    loop {
        let mut l = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("job queue: cannot listen for notifications (polling meanwhile): {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = l.listen_all([CHANNEL, WRITES]).await {
            tracing::warn!("job queue: LISTEN failed (polling meanwhile): {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let _ = writes.send(WriteNews::Missed);
        loop {
            // `try_recv`, not `recv`: after a dropped connection `recv` reconnects by itself
            // and says nothing of what was sent meanwhile; `Ok(None)` tells us.
            match l.try_recv().await {
                Ok(None) => {
                    tracing::warn!("job queue: notification connection lost; reconnecting");
                    let _ = writes.send(WriteNews::Missed);
                    notify.notify_waiters();
                }
                Ok(Some(n)) if n.channel() == WRITES => {
                    let news = match n.payload().split_once(' ') {
                        Some((replica, key)) => WriteNews::Written {
                            replica: replica.to_string(),
                            key: key.to_string(),
                        },
                        None => WriteNews::Missed,
                    };
                    let _ = writes.send(news);
                }
                Ok(Some(_)) => notify.notify_one(),
                Err(e) => {
                    tracing::warn!("job queue: notification stream ended: {e}");
                    break;
                }
            }
        }
    }
}

/// Wake every backend's idle workers when `tx` commits (PostgreSQL delivers a NOTIFY
/// only then), and commit it.
async fn notify_and_commit(mut tx: sqlx::Transaction<'_, sqlx::Postgres>) -> QueueResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)
}

impl JobQueue for PgQueue {
    async fn enqueue(&self, jobs: Vec<NewJob>) -> QueueResult<Vec<JobId>> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Enqueues of one key, here and in other backends, take turns: each waits until the
        // other's row is committed and then finds it, so a repeat is absorbed exactly.
        // One statement takes every lock of the batch in lock-id order (the `OFFSET 0`
        // keeps the sort below the calls), so batches never wait on each other in a
        // circle; they are released at commit.
        let names: Vec<String> = jobs.iter().map(|j| format!("{}/{}", j.kind, j.key)).collect();
        sqlx::query(
            "SELECT pg_advisory_xact_lock(h) FROM
               (SELECT DISTINCT hashtextextended(n, 0) AS h FROM unnest($1::text[]) AS n ORDER BY h OFFSET 0) AS ids",
        )
        .bind(&names)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut ids = Vec::with_capacity(jobs.len());
        for j in jobs {
            // A queued job with this key absorbs the new one (keeping the earlier time).
            let row = sqlx::query(
                "WITH found AS (
                    UPDATE dss_jobs SET run_at = LEAST(run_at, COALESCE($4, now())), updated_at = now()
                    WHERE id = (SELECT id FROM dss_jobs WHERE key = $2 AND kind = $1 AND state = 'queued'
                                ORDER BY id LIMIT 1 FOR UPDATE)
                    RETURNING id),
                 added AS (
                    INSERT INTO dss_jobs (kind, key, payload, state, run_at)
                    SELECT $1, $2, $3::jsonb, 'queued', COALESCE($4, now())
                    WHERE NOT EXISTS (SELECT 1 FROM found)
                    RETURNING id)
                 SELECT id FROM found UNION ALL SELECT id FROM added",
            )
            .bind(&j.kind)
            .bind(&j.key)
            .bind(j.payload.to_string())
            .bind(j.run_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
            ids.push(row.try_get::<i64, _>(0).map_err(unavailable)?);
        }
        notify_and_commit(tx).await?;
        Ok(ids)
    }

    async fn lease(&self, worker: &str, max: usize, lease: Duration) -> QueueResult<Vec<Job>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "UPDATE dss_jobs SET state = 'running', attempts = attempts + 1, worker = $1,
                    lease_until = now() + $2 * interval '1 millisecond', updated_at = now()
             WHERE id IN (
                SELECT id FROM dss_jobs
                WHERE (state = 'queued' AND run_at <= now()) OR (state = 'running' AND lease_until < now())
                ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING {COLUMNS}"
        ))
        .bind(worker)
        .bind(millis(lease) as f64)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.fast)
        .await
        .map_err(unavailable)?;
        let mut jobs = rows.iter().map(job).collect::<QueueResult<Vec<_>>>()?;
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    async fn heartbeat(&self, id: JobId, worker: &str, lease: Duration) -> QueueResult<bool> {
        let r = sqlx::query(
            "UPDATE dss_jobs SET lease_until = now() + $3 * interval '1 millisecond', updated_at = now()
             WHERE id = $1 AND worker = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(worker)
        .bind(millis(lease) as f64)
        .execute(&self.fast)
        .await
        .map_err(unavailable)?;
        Ok(r.rows_affected() == 1)
    }

    async fn report(&self, id: JobId, worker: &str, progress: &crate::model::Progress) -> QueueResult<bool> {
        let progress = serde_json::to_string(progress).map_err(|e| QueueError::Corrupt(e.to_string()))?;
        let r = sqlx::query(
            "INSERT INTO dss_job_progress (id, progress)
             SELECT id, $3::jsonb FROM dss_jobs WHERE id = $1 AND worker = $2 AND state = 'running'
             ON CONFLICT (id) DO UPDATE SET progress = EXCLUDED.progress",
        )
        .bind(id)
        .bind(worker)
        .bind(progress)
        .execute(&self.fast)
        .await
        .map_err(unavailable)?;
        Ok(r.rows_affected() == 1)
    }

    async fn complete(&self, id: JobId, worker: &str) -> QueueResult<bool> {
        let r = sqlx::query(
            "UPDATE dss_jobs SET state = 'completed', lease_until = NULL, updated_at = now()
             WHERE id = $1 AND worker = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(worker)
        .execute(&self.fast)
        .await
        .map_err(unavailable)?;
        Ok(r.rows_affected() == 1)
    }

    async fn fail(&self, id: JobId, worker: &str, error: &str, retry_at: Option<DateTime<Utc>>) -> QueueResult<bool> {
        let state = if retry_at.is_some() {
            JobState::Queued
        } else {
            JobState::Failed
        };
        let r = sqlx::query(
            "UPDATE dss_jobs SET state = $3, run_at = COALESCE($4, run_at), error = $5,
                    lease_until = NULL, updated_at = now()
             WHERE id = $1 AND worker = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(worker)
        .bind(state.as_str())
        .bind(retry_at)
        .bind(error)
        .execute(&self.fast)
        .await
        .map_err(unavailable)?;
        Ok(r.rows_affected() == 1)
    }

    async fn get(&self, id: JobId) -> QueueResult<Option<Job>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM dss_jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.fast)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(job).transpose()
    }

    async fn list(&self, filter: &JobFilter) -> QueueResult<Vec<Job>> {
        let states: Vec<String> = filter.states.iter().map(|s| s.as_str().to_string()).collect();
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM dss_jobs
             WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR key = $2)
               AND (cardinality($3::text[]) = 0 OR state = ANY($3))
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(&filter.kind)
        .bind(&filter.key)
        .bind(&states)
        .bind(i64::try_from(filter.limit.max(1)).unwrap_or(i64::MAX))
        .fetch_all(&self.fast)
        .await
        .map_err(unavailable)?;
        rows.iter().map(job).collect()
    }

    async fn tally(&self, kind: &str) -> QueueResult<Vec<Tally>> {
        let rows = sqlx::query(
            "SELECT split_part(key, '/', 1) AS grp, state, count(*), min(created_at),
                    (array_agg(key ORDER BY updated_at DESC))[1], max(updated_at)
             FROM dss_jobs WHERE kind = $1 GROUP BY grp, state ORDER BY grp, state",
        )
        .bind(kind)
        .fetch_all(&self.fast)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(1).map_err(unavailable)?;
                let count: i64 = r.try_get(2).map_err(unavailable)?;
                Ok(Tally {
                    group: r.try_get(0).map_err(unavailable)?,
                    state: state.parse()?,
                    count: u64::try_from(count).unwrap_or(0),
                    oldest: r.try_get(3).map_err(unavailable)?,
                    latest_key: r.try_get(4).map_err(unavailable)?,
                    latest: r.try_get(5).map_err(unavailable)?,
                })
            })
            .collect()
    }

    async fn retry(&self, id: JobId) -> QueueResult<bool> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let r = sqlx::query(
            "UPDATE dss_jobs SET state = 'queued', run_at = now(), worker = NULL, attempts = 0, updated_at = now()
             WHERE id = $1 AND state = 'failed'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        notify_and_commit(tx).await?;
        Ok(r.rows_affected() == 1)
    }

    async fn prune(&self, before: DateTime<Utc>) -> QueueResult<u64> {
        let row = sqlx::query(
            "WITH gone AS (DELETE FROM dss_jobs WHERE state = 'completed' AND updated_at < $1 RETURNING id),
                  reports AS (DELETE FROM dss_job_progress WHERE id IN (SELECT id FROM gone))
             SELECT count(*) FROM gone",
        )
        .bind(before)
        .fetch_one(&self.fast)
        .await
        .map_err(unavailable)?;
        let n: i64 = row.try_get(0).map_err(unavailable)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn wait(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.notify.notified()).await;
    }
}
