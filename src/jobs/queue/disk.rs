//! The embedded job queue: one SQLite file in the data directory.
//!
//! SQLite gives what a queue needs from a file: transactions, durability across
//! `kill -9` and power loss (WAL, `synchronous=FULL`), and locking between processes,
//! so two processes on one data directory never lease the same job (a lease is one
//! write transaction). What it costs is an fsync per commit; so one thread owns the
//! connection and commits every operation waiting at that moment in one transaction
//! (group commit), each in its own savepoint so that one failing operation does not
//! undo the others.

use super::{millis, Job, JobFilter, JobId, JobQueue, NewJob, QueueError, QueueResult, Tally};
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// Most operations committed together.
const GROUP: usize = 512;
/// How long a process waits for another's write transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// What to do once the group has committed (or failed to).
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
/// One operation: runs inside the group's transaction (or is told why it cannot), and
/// returns whether it succeeded and its [`Finish`].
type Op = Box<dyn FnOnce(Result<&Connection, String>) -> (bool, Finish) + Send>;

/// The embedded queue. Cheap to share behind an `Arc`; dropping the last handle stops its
/// thread.
pub struct DiskQueue {
    /// Operations, and whether they must be on disk before they are answered.
    tx: mpsc::Sender<(bool, Op)>,
    notify: Arc<Notify>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_at INTEGER NOT NULL,
    worker TEXT,
    lease_until INTEGER,
    error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    progress TEXT
);
CREATE INDEX IF NOT EXISTS jobs_runnable ON jobs (state, run_at, id);
CREATE INDEX IF NOT EXISTS jobs_key ON jobs (key, id);
CREATE INDEX IF NOT EXISTS jobs_kind ON jobs (kind, id);
";

const COLUMNS: &str =
    "id, kind, key, payload, state, attempts, run_at, worker, lease_until, error, created_at, updated_at, progress";

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn unavailable(e: rusqlite::Error) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Job, QueueError>> {
    let payload: String = r.get(3)?;
    let state: String = r.get(4)?;
    let lease_until: Option<i64> = r.get(8)?;
    let progress: Option<String> = r.get(12)?;
    let build = || -> Result<Job, QueueError> {
        Ok(Job {
            id: r.get(0).map_err(|e| QueueError::Corrupt(e.to_string()))?,
            kind: r.get(1).map_err(|e| QueueError::Corrupt(e.to_string()))?,
            key: r.get(2).map_err(|e| QueueError::Corrupt(e.to_string()))?,
            payload: serde_json::from_str(&payload).map_err(|e| QueueError::Corrupt(format!("payload: {e}")))?,
            state: state.parse()?,
            attempts: r.get(5).map_err(|e| QueueError::Corrupt(e.to_string()))?,
            run_at: time(r.get(6).map_err(|e| QueueError::Corrupt(e.to_string()))?),
            worker: r.get(7).map_err(|e| QueueError::Corrupt(e.to_string()))?,
            lease_until: lease_until.map(time),
            error: r.get(9).map_err(|e| QueueError::Corrupt(e.to_string()))?,
            created_at: time(r.get(10).map_err(|e| QueueError::Corrupt(e.to_string()))?),
            updated_at: time(r.get(11).map_err(|e| QueueError::Corrupt(e.to_string()))?),
            progress: progress
                .map(|p| serde_json::from_str(&p).map_err(|e| QueueError::Corrupt(format!("progress: {e}"))))
                .transpose()?,
        })
    };
    Ok(build())
}

fn query_jobs(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> QueueResult<Vec<Job>> {
    let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
    let rows = stmt.query_map(params, row_to_job).map_err(unavailable)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r.map_err(unavailable)??);
    }
    Ok(out)
}

fn open_connection(path: &Path) -> QueueResult<Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| QueueError::Config(format!("{}: {e}", dir.display())))?;
    }
    let conn = Connection::open(path).map_err(|e| QueueError::Config(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    // WAL: readers never block the writer; FULL: a commit is on disk when it returns.
    conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
    conn.execute_batch(SCHEMA).map_err(unavailable)?;
    conn.execute_batch(super::registry::SQLITE_SCHEMA)
        .map_err(unavailable)?;
    conn.execute_batch(super::journal::SQLITE_SCHEMA).map_err(unavailable)?;
    // Queues made before progress was kept gain its column.
    let has_progress: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name = 'progress'",
            [],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    if has_progress == 0 {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN progress TEXT")
            .map_err(unavailable)?;
    }
    Ok(conn)
}

impl DiskQueue {
    /// Open (creating) the queue in the SQLite file `path`.
    pub fn open(path: &Path) -> QueueResult<DiskQueue> {
        let conn = open_connection(path)?;
        let (tx, rx) = mpsc::channel::<(bool, Op)>();
        std::thread::Builder::new()
            .name("dss-jobs-disk".into())
            .spawn(move || writer(conn, rx))
            .map_err(|e| QueueError::Config(format!("starting the queue thread: {e}")))?;
        Ok(DiskQueue {
            tx,
            notify: Arc::new(Notify::new()),
        })
    }

    /// Run `f` in the next group and wait for it to be committed; `durable`: on disk (fsync)
    /// before it is answered, else only safe from a crash of this process (a lease,
    /// heartbeat or completion lost in a power cut makes a job run again; jobs are
    /// idempotent).
    pub(super) async fn run<T: Send + 'static>(
        &self,
        durable: bool,
        f: impl FnOnce(&Connection) -> QueueResult<T> + Send + 'static,
    ) -> QueueResult<T> {
        let (done, rx) = oneshot::channel::<QueueResult<T>>();
        let op: Op = Box::new(move |conn| {
            let result = conn.map_err(QueueError::Unavailable).and_then(f);
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |committed: Result<(), String>| {
                let _ = done.send(match committed {
                    Ok(()) => result,
                    Err(e) => Err(QueueError::Unavailable(e)),
                });
            });
            (ok, finish)
        });
        self.tx
            .send((durable, op))
            .map_err(|_| QueueError::Unavailable("the queue thread has stopped".into()))?;
        rx.await
            .map_err(|_| QueueError::Unavailable("the queue thread has stopped".into()))?
    }
}

/// The thread that owns the connection: takes every operation waiting, runs them in one
/// transaction (a savepoint each), commits once, then answers them all.
fn writer(mut conn: Connection, rx: mpsc::Receiver<(bool, Op)>) {
    let mut synchronous = "FULL";
    while let Ok((first_durable, first)) = rx.recv() {
        let mut durable = first_durable;
        let mut ops = vec![first];
        while ops.len() < GROUP {
            match rx.try_recv() {
                Ok((d, op)) => {
                    durable |= d;
                    ops.push(op);
                }
                Err(_) => break,
            }
        }
        // WAL with NORMAL survives a crash of the process, FULL a power cut too.
        let wanted = if durable { "FULL" } else { "NORMAL" };
        if wanted != synchronous && conn.pragma_update(None, "synchronous", wanted).is_ok() {
            synchronous = wanted;
        }
        let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let e = format!("cannot begin a transaction: {e}");
                tracing::warn!("job queue: {e}");
                for op in ops {
                    let (_, finish) = op(Err(e.clone()));
                    finish(Err(e.clone()));
                }
                continue;
            }
        };
        let mut finishers = Vec::with_capacity(ops.len());
        let mut broken: Option<String> = None;
        for op in ops {
            if let Some(e) = &broken {
                let (_, finish) = op(Err(e.clone()));
                finishers.push(finish);
                continue;
            }
            // A savepoint per operation: one that fails is undone alone.
            if let Err(e) = tx.execute_batch("SAVEPOINT op") {
                broken = Some(e.to_string());
                let (_, finish) = op(Err(e.to_string()));
                finishers.push(finish);
                continue;
            }
            let (ok, finish) = op(Ok(&tx));
            let end = if ok { "RELEASE op" } else { "ROLLBACK TO op; RELEASE op" };
            if let Err(e) = tx.execute_batch(end) {
                broken = Some(e.to_string());
            }
            finishers.push(finish);
        }
        let committed = match broken {
            Some(e) => Err(e),
            None => tx.commit().map_err(|e| e.to_string()),
        };
        for f in finishers {
            f(committed.clone());
        }
    }
}

impl JobQueue for DiskQueue {
    async fn enqueue(&self, jobs: Vec<NewJob>) -> QueueResult<Vec<JobId>> {
        let ids = self
            .run(true, move |c| {
                let now = now_ms();
                let mut ids = Vec::with_capacity(jobs.len());
                for j in jobs {
                    let run_at = j.run_at.map_or(now, |t| t.timestamp_millis());
                    let existing: Option<(i64, i64)> = c
                        .prepare_cached(
                            "SELECT id, run_at FROM jobs WHERE key = ?1 AND kind = ?2 AND state = 'queued' LIMIT 1",
                        )
                        .and_then(|mut s| {
                            s.query_row(params![j.key, j.kind], |r| Ok((r.get(0)?, r.get(1)?)))
                                .optional()
                        })
                        .map_err(unavailable)?;
                    if let Some((id, at)) = existing {
                        if run_at < at {
                            c.prepare_cached("UPDATE jobs SET run_at = ?1, updated_at = ?2 WHERE id = ?3")
                                .and_then(|mut s| s.execute(params![run_at, now, id]))
                                .map_err(unavailable)?;
                        }
                        ids.push(id);
                        continue;
                    }
                    let payload = j.payload.to_string();
                    c.prepare_cached(
                        "INSERT INTO jobs (kind, key, payload, state, attempts, run_at, created_at, updated_at)
                         VALUES (?1, ?2, ?3, 'queued', 0, ?4, ?5, ?5)",
                    )
                    .and_then(|mut s| s.execute(params![j.kind, j.key, payload, run_at, now]))
                    .map_err(unavailable)?;
                    ids.push(c.last_insert_rowid());
                }
                Ok(ids)
            })
            .await?;
        self.notify.notify_one();
        Ok(ids)
    }

    async fn lease(&self, worker: &str, max: usize, lease: Duration) -> QueueResult<Vec<Job>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let worker = worker.to_string();
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let lease = millis(lease);
        self.run(false, move |c| {
            let now = now_ms();
            query_jobs(
                c,
                &format!(
                    "UPDATE jobs SET state = 'running', attempts = attempts + 1, worker = ?1,
                            lease_until = ?2 + ?3, updated_at = ?2
                     WHERE id IN (
                        SELECT id FROM jobs WHERE state = 'queued' AND run_at <= ?2
                        UNION ALL
                        SELECT id FROM jobs WHERE state = 'running' AND lease_until < ?2
                        ORDER BY id LIMIT ?4)
                     RETURNING {COLUMNS}"
                ),
                params![worker, now, lease, max],
            )
        })
        .await
    }

    async fn heartbeat(&self, id: JobId, worker: &str, lease: Duration) -> QueueResult<bool> {
        let worker = worker.to_string();
        let lease = millis(lease);
        self.run(false, move |c| {
            let now = now_ms();
            c.prepare_cached(
                "UPDATE jobs SET lease_until = ?1 + ?2, updated_at = ?1
                 WHERE id = ?3 AND worker = ?4 AND state = 'running'",
            )
            .and_then(|mut s| s.execute(params![now, lease, id, worker]))
            .map(|n| n == 1)
            .map_err(unavailable)
        })
        .await
    }

    async fn report(&self, id: JobId, worker: &str, progress: &crate::model::Progress) -> QueueResult<bool> {
        let worker = worker.to_string();
        let progress = serde_json::to_string(progress).map_err(|e| QueueError::Corrupt(e.to_string()))?;
        self.run(false, move |c| {
            c.prepare_cached(
                "UPDATE jobs SET progress = ?1, updated_at = ?2
                 WHERE id = ?3 AND worker = ?4 AND state = 'running'",
            )
            .and_then(|mut s| s.execute(params![progress, now_ms(), id, worker]))
            .map(|n| n == 1)
            .map_err(unavailable)
        })
        .await
    }

    async fn complete(&self, id: JobId, worker: &str) -> QueueResult<bool> {
        let worker = worker.to_string();
        self.run(false, move |c| {
            c.prepare_cached(
                "UPDATE jobs SET state = 'completed', lease_until = NULL, updated_at = ?1
                 WHERE id = ?2 AND worker = ?3 AND state = 'running'",
            )
            .and_then(|mut s| s.execute(params![now_ms(), id, worker]))
            .map(|n| n == 1)
            .map_err(unavailable)
        })
        .await
    }

    async fn fail(&self, id: JobId, worker: &str, error: &str, retry_at: Option<DateTime<Utc>>) -> QueueResult<bool> {
        let (worker, error) = (worker.to_string(), error.to_string());
        let held = self
            .run(true, move |c| {
                let now = now_ms();
                let (state, run_at) = match retry_at {
                    Some(t) => ("queued", Some(t.timestamp_millis())),
                    None => ("failed", None),
                };
                c.prepare_cached(
                    "UPDATE jobs SET state = ?1, run_at = COALESCE(?2, run_at), error = ?3,
                            lease_until = NULL, updated_at = ?4
                     WHERE id = ?5 AND worker = ?6 AND state = 'running'",
                )
                .and_then(|mut s| s.execute(params![state, run_at, error, now, id, worker]))
                .map(|n| n == 1)
                .map_err(unavailable)
            })
            .await?;
        if retry_at.is_some() {
            self.notify.notify_one();
        }
        Ok(held)
    }

    async fn get(&self, id: JobId) -> QueueResult<Option<Job>> {
        self.run(false, move |c| {
            Ok(query_jobs(c, &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"), params![id])?.pop())
        })
        .await
    }

    async fn list(&self, filter: &JobFilter) -> QueueResult<Vec<Job>> {
        let filter = filter.clone();
        self.run(false, move |c| {
            let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
            let states_json = serde_json::to_string(&states).unwrap_or_else(|_| "[]".into());
            let limit = i64::try_from(filter.limit.max(1)).unwrap_or(i64::MAX);
            // Only the conditions given, so that SQLite uses the key or kind index (an
            // `?1 IS NULL OR …` condition made every listing a scan of the whole table).
            let mut conditions = Vec::new();
            // With a key, its index (a few rows) beats the kind's (every job of a kind):
            // `+kind` keeps SQLite from choosing the latter.
            match (&filter.kind, &filter.key) {
                (Some(_), Some(_)) => conditions.push("+kind = ?1"),
                (Some(_), None) => conditions.push("kind = ?1"),
                _ => {}
            }
            if filter.key.is_some() {
                conditions.push("key = ?2");
            }
            if !states.is_empty() {
                conditions.push("state IN (SELECT value FROM json_each(?3))");
            }
            // Parameters a statement does not name are still bound (SQLite counts up to ?4).
            let filter_sql = match conditions.is_empty() {
                true => "1".to_string(),
                false => conditions.join(" AND "),
            };
            query_jobs(
                c,
                &format!("SELECT {COLUMNS} FROM jobs WHERE {filter_sql} ORDER BY id DESC LIMIT ?4"),
                params![filter.kind, filter.key, states_json, limit],
            )
        })
        .await
    }

    async fn retry(&self, id: JobId) -> QueueResult<bool> {
        let done = self
            .run(true, move |c| {
                let now = now_ms();
                c.prepare_cached(
                    "UPDATE jobs SET state = 'queued', run_at = ?1, worker = NULL, attempts = 0, updated_at = ?1
                     WHERE id = ?2 AND state = 'failed'",
                )
                .and_then(|mut s| s.execute(params![now, id]))
                .map(|n| n == 1)
                .map_err(unavailable)
            })
            .await?;
        self.notify.notify_one();
        Ok(done)
    }

    async fn tally(&self, kind: &str) -> QueueResult<Vec<Tally>> {
        let kind = kind.to_string();
        self.run(false, move |c| {
            // SQLite takes the bare `key` from the row that holds the max(updated_at).
            let mut s = c
                .prepare_cached(
                    "SELECT CASE WHEN instr(key, '/') > 0 THEN substr(key, 1, instr(key, '/') - 1) ELSE key END AS grp,
                            state, count(*), min(created_at), key, max(updated_at)
                     FROM jobs WHERE kind = ?1 GROUP BY grp, state ORDER BY grp, state",
                )
                .map_err(unavailable)?;
            let rows = s
                .query_map(params![kind], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                let (group, state, count, oldest, latest_key, latest) = row.map_err(unavailable)?;
                out.push(Tally {
                    group,
                    state: state.parse()?,
                    count: u64::try_from(count).unwrap_or(0),
                    oldest: time(oldest),
                    latest_key,
                    latest: time(latest),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn prune(&self, before: DateTime<Utc>) -> QueueResult<u64> {
        self.run(false, move |c| {
            c.execute(
                "DELETE FROM jobs WHERE state = 'completed' AND updated_at < ?1",
                params![before.timestamp_millis()],
            )
            .map(|n| n as u64)
            .map_err(unavailable)
        })
        .await
    }

    async fn wait(&self, max: Duration) {
        // Another process on the same file cannot wake us: `max` is the poll interval.
        let _ = tokio::time::timeout(max, self.notify.notified()).await;
    }
}
