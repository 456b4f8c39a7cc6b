//! The index of the event journal, kept beside the job queue (the SQLite file of the
//! embedded queue, or PostgreSQL, which every backend sharing the queue sees): one row
//! per event of each replica, naming the journal that holds its document and where. A
//! listing is one indexed range query; the journals themselves are objects in the
//! replica's bucket ([`crate::bucket::events`]).
//!
//! A row whose journal is NULL is a deleted event: kept, so that a recording that comes
//! late (its job retried after the tombstone's) cannot bring it back. A **pending** row
//! waits for compaction: a one-event journal, or the live rest of a journal some of whose
//! events were deleted (rewritten without them). A journal no row names any more is
//! **garbage**, deleted from the bucket once its grace time (the life of the URLs handed
//! out for it) has passed.

use super::disk::DiskQueue;
use super::pg::PgQueue;
use super::{AnyQueue, QueueError, QueueResult};
use crate::model::event::{Cursor, EventEntry};
use rusqlite::{params, OptionalExtension};
use sqlx::Row;
use std::future::Future;

/// What [`EventIndex::record_event`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The event was added.
    Added,
    /// It was there already, live.
    Live,
    /// It was deleted before.
    Deleted,
}

/// A moved event: its id, the journal it was in, and where it is now.
pub type Move = (String, String, EventEntry);

/// The event journal's index. Every method is one atomic step.
pub trait EventIndex: Send + Sync + 'static {
    /// Add `entry` of `replica`, pending compaction, unless its event is known (live or
    /// deleted). A deleted one's `entry.journal` is garbage from `garbage_after` (unix
    /// seconds), as nothing names it.
    fn record_event(
        &self,
        replica: &str,
        entry: &EventEntry,
        garbage_after: i64,
    ) -> impl Future<Output = QueueResult<Recorded>> + Send;
    /// Delete events `ids` of `replica` (known or not, so that a late recording stays
    /// out). The live rest of a journal that held one is pending again; a journal nothing
    /// names any more is garbage from `garbage_after`. How many live events were deleted.
    fn delete_events(
        &self,
        replica: &str,
        ids: &[String],
        garbage_after: i64,
    ) -> impl Future<Output = QueueResult<u64>> + Send;
    /// Up to `limit` live events of `replica` from `from` (inclusive) to timestamp `to`
    /// (exclusive), by `(timestamp, event_id)`.
    fn event_entries(
        &self,
        replica: &str,
        from: &Cursor,
        to: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = QueueResult<Vec<EventEntry>>> + Send;
    /// The live event `event_id` of `replica`; `Ok(None)` if deleted or unknown. The
    /// second part says whether it is known at all.
    fn event_entry(
        &self,
        replica: &str,
        event_id: &str,
    ) -> impl Future<Output = QueueResult<(Option<EventEntry>, bool)>> + Send;
    /// How many events of `replica` are pending compaction, counted up to `up_to`.
    fn pending_count(&self, replica: &str, up_to: usize) -> impl Future<Output = QueueResult<usize>> + Send;
    /// Up to `limit` live events of `replica` pending compaction, in order.
    fn pending_events(&self, replica: &str, limit: usize) -> impl Future<Output = QueueResult<Vec<EventEntry>>> + Send;
    /// Note journal `journal` of `replica`, about to be written, as garbage from
    /// `garbage_after` unless something names it by then (a compaction that fails after
    /// writing it leaves nothing behind for good).
    fn intend_journal(
        &self,
        replica: &str,
        journal: &str,
        garbage_after: i64,
    ) -> impl Future<Output = QueueResult<()>> + Send;
    /// Move events to the journals compaction wrote, all or none: `false` (nothing
    /// changed) if any of them is no longer pending in the journal it was read from (a
    /// deletion or another compaction came first). They stay pending unless `sealed`.
    /// Journals left unnamed are garbage from `garbage_after`.
    fn move_events(
        &self,
        replica: &str,
        moves: &[Move],
        sealed: bool,
        garbage_after: i64,
    ) -> impl Future<Output = QueueResult<bool>> + Send;
    /// Up to `limit` garbage journals of `replica` whose grace time ended by `now`.
    fn garbage_journals(
        &self,
        replica: &str,
        now: i64,
        limit: usize,
    ) -> impl Future<Output = QueueResult<Vec<String>>> + Send;
    /// Forget garbage journals (deleted from the bucket).
    fn forget_journals(&self, replica: &str, journals: &[String]) -> impl Future<Output = QueueResult<()>> + Send;
    /// When the next garbage journal of `replica` may be deleted (unix seconds), if any.
    fn next_garbage(&self, replica: &str) -> impl Future<Output = QueueResult<Option<i64>>> + Send;
}

/// The tables of the embedded queue's file (created at open).
pub(super) const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    replica TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    journal TEXT,
    off INTEGER NOT NULL,
    size INTEGER NOT NULL,
    jsize INTEGER NOT NULL,
    pending INTEGER NOT NULL,
    PRIMARY KEY (replica, event_id)
);
CREATE INDEX IF NOT EXISTS events_order ON events (replica, ts, event_id) WHERE journal IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_journal ON events (replica, journal);
CREATE INDEX IF NOT EXISTS events_pending ON events (replica, ts, event_id) WHERE pending = 1;
CREATE TABLE IF NOT EXISTS event_garbage (
    replica TEXT NOT NULL,
    journal TEXT NOT NULL,
    after INTEGER NOT NULL,
    PRIMARY KEY (replica, journal)
);
";

const COLUMNS: &str = "event_id, ts, journal, off, size, jsize";

fn sqlite(e: rusqlite::Error) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> QueueError {
    QueueError::Corrupt(e.to_string())
}

fn u(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn i(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn sqlite_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventEntry> {
    Ok(EventEntry {
        event_id: r.get(0)?,
        timestamp: r.get(1)?,
        journal: r.get(2)?,
        offset: u(r.get(3)?),
        size: u(r.get(4)?),
        journal_size: u(r.get(5)?),
    })
}

fn sqlite_garbage(c: &rusqlite::Connection, replica: &str, journal: &str, after: i64) -> QueueResult<()> {
    let named: i64 = c
        .query_row(
            "SELECT count(*) FROM events WHERE replica = ?1 AND journal = ?2",
            params![replica, journal],
            |r| r.get(0),
        )
        .map_err(sqlite)?;
    if named == 0 {
        c.execute(
            "INSERT OR IGNORE INTO event_garbage (replica, journal, after) VALUES (?1, ?2, ?3)",
            params![replica, journal, after],
        )
        .map_err(sqlite)?;
    }
    Ok(())
}

/// The upper bound of a listing: `to`, or past every timestamp.
fn upper(to: Option<&str>) -> String {
    to.unwrap_or("~").to_string()
}

impl EventIndex for DiskQueue {
    async fn record_event(&self, replica: &str, entry: &EventEntry, garbage_after: i64) -> QueueResult<Recorded> {
        let (replica, e) = (replica.to_string(), entry.clone());
        self.run(true, move |c| {
            let known: Option<Option<String>> = c
                .query_row(
                    "SELECT journal FROM events WHERE replica = ?1 AND event_id = ?2",
                    params![replica, e.event_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sqlite)?;
            match known {
                Some(Some(_)) => {
                    // The caller's object is garbage unless the row names it.
                    sqlite_garbage(c, &replica, &e.journal, garbage_after)?;
                    Ok(Recorded::Live)
                }
                Some(None) => {
                    sqlite_garbage(c, &replica, &e.journal, garbage_after)?;
                    Ok(Recorded::Deleted)
                }
                None => {
                    c.execute(
                        "INSERT INTO events (replica, event_id, ts, journal, off, size, jsize, pending)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)",
                        params![
                            replica,
                            e.event_id,
                            e.timestamp,
                            e.journal,
                            i(e.offset),
                            i(e.size),
                            i(e.journal_size)
                        ],
                    )
                    .map_err(sqlite)?;
                    Ok(Recorded::Added)
                }
            }
        })
        .await
    }

    async fn delete_events(&self, replica: &str, ids: &[String], garbage_after: i64) -> QueueResult<u64> {
        let (replica, ids) = (replica.to_string(), ids.to_vec());
        self.run(true, move |c| {
            let mut deleted = 0;
            for id in ids {
                let known: Option<Option<String>> = c
                    .query_row(
                        "SELECT journal FROM events WHERE replica = ?1 AND event_id = ?2",
                        params![replica, id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sqlite)?;
                match known {
                    Some(None) => {}
                    None => {
                        c.execute(
                            "INSERT INTO events (replica, event_id, ts, journal, off, size, jsize, pending)
                             VALUES (?1, ?2, '', NULL, 0, 0, 0, 0)",
                            params![replica, id],
                        )
                        .map_err(sqlite)?;
                    }
                    Some(Some(journal)) => {
                        c.execute(
                            "UPDATE events SET journal = NULL, pending = 0 WHERE replica = ?1 AND event_id = ?2",
                            params![replica, id],
                        )
                        .map_err(sqlite)?;
                        c.execute(
                            "UPDATE events SET pending = 1 WHERE replica = ?1 AND journal = ?2",
                            params![replica, journal],
                        )
                        .map_err(sqlite)?;
                        sqlite_garbage(c, &replica, &journal, garbage_after)?;
                        deleted += 1;
                    }
                }
            }
            Ok(deleted)
        })
        .await
    }

    async fn event_entries(
        &self,
        replica: &str,
        from: &Cursor,
        to: Option<&str>,
        limit: usize,
    ) -> QueueResult<Vec<EventEntry>> {
        let (replica, from, to) = (replica.to_string(), from.clone(), upper(to));
        self.run(false, move |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM events
                     WHERE replica = ?1 AND journal IS NOT NULL
                       AND (ts, event_id) >= (?2, ?3) AND ts < ?4
                     ORDER BY ts, event_id LIMIT ?5"
                ))
                .map_err(sqlite)?;
            let rows = s
                .query_map(
                    params![replica, from.timestamp, from.event_id, to, i(limit as u64)],
                    sqlite_entry,
                )
                .map_err(sqlite)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sqlite)
        })
        .await
    }

    async fn event_entry(&self, replica: &str, event_id: &str) -> QueueResult<(Option<EventEntry>, bool)> {
        let (replica, id) = (replica.to_string(), event_id.to_string());
        self.run(false, move |c| {
            let found: Option<(Option<String>, EventEntry)> = c
                .query_row(
                    &format!("SELECT {COLUMNS} FROM events WHERE replica = ?1 AND event_id = ?2"),
                    params![replica, id],
                    |r| {
                        let journal: Option<String> = r.get(2)?;
                        Ok((
                            journal.clone(),
                            EventEntry {
                                event_id: r.get(0)?,
                                timestamp: r.get(1)?,
                                journal: journal.unwrap_or_default(),
                                offset: u(r.get(3)?),
                                size: u(r.get(4)?),
                                journal_size: u(r.get(5)?),
                            },
                        ))
                    },
                )
                .optional()
                .map_err(sqlite)?;
            Ok(match found {
                None => (None, false),
                Some((None, _)) => (None, true),
                Some((Some(_), e)) => (Some(e), true),
            })
        })
        .await
    }

    async fn pending_count(&self, replica: &str, up_to: usize) -> QueueResult<usize> {
        let replica = replica.to_string();
        self.run(false, move |c| {
            c.query_row(
                "SELECT count(*) FROM (SELECT 1 FROM events WHERE replica = ?1 AND pending = 1 LIMIT ?2)",
                params![replica, i(up_to as u64)],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| usize::try_from(n).unwrap_or(0))
            .map_err(sqlite)
        })
        .await
    }

    async fn pending_events(&self, replica: &str, limit: usize) -> QueueResult<Vec<EventEntry>> {
        let replica = replica.to_string();
        self.run(false, move |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM events WHERE replica = ?1 AND pending = 1
                     ORDER BY ts, event_id LIMIT ?2"
                ))
                .map_err(sqlite)?;
            let rows = s
                .query_map(params![replica, i(limit as u64)], sqlite_entry)
                .map_err(sqlite)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sqlite)
        })
        .await
    }

    async fn intend_journal(&self, replica: &str, journal: &str, garbage_after: i64) -> QueueResult<()> {
        let (replica, journal) = (replica.to_string(), journal.to_string());
        self.run(true, move |c| {
            c.execute(
                "INSERT OR IGNORE INTO event_garbage (replica, journal, after) VALUES (?1, ?2, ?3)",
                params![replica, journal, garbage_after],
            )
            .map(drop)
            .map_err(sqlite)
        })
        .await
    }

    async fn move_events(&self, replica: &str, moves: &[Move], sealed: bool, garbage_after: i64) -> QueueResult<bool> {
        let (replica, moves) = (replica.to_string(), moves.to_vec());
        let pending = i64::from(!sealed);
        self.run(true, move |c| {
            // Operations on this file run one at a time: checked, then changed, atomically.
            for (id, old, _) in &moves {
                let still: i64 = c
                    .query_row(
                        "SELECT count(*) FROM events
                         WHERE replica = ?1 AND event_id = ?2 AND journal = ?3 AND pending = 1",
                        params![replica, id, old],
                        |r| r.get(0),
                    )
                    .map_err(sqlite)?;
                if still == 0 {
                    return Ok(false);
                }
            }
            for (id, _, e) in &moves {
                c.execute(
                    "UPDATE events SET journal = ?3, off = ?4, size = ?5, jsize = ?6, pending = ?7
                     WHERE replica = ?1 AND event_id = ?2",
                    params![
                        replica,
                        id,
                        e.journal,
                        i(e.offset),
                        i(e.size),
                        i(e.journal_size),
                        pending
                    ],
                )
                .map_err(sqlite)?;
                // Named now: no longer garbage.
                c.execute(
                    "DELETE FROM event_garbage WHERE replica = ?1 AND journal = ?2",
                    params![replica, e.journal],
                )
                .map_err(sqlite)?;
            }
            let mut olds: Vec<&String> = moves.iter().map(|(_, old, _)| old).collect();
            olds.sort();
            olds.dedup();
            for old in olds {
                sqlite_garbage(c, &replica, old, garbage_after)?;
            }
            Ok(true)
        })
        .await
    }

    async fn garbage_journals(&self, replica: &str, now: i64, limit: usize) -> QueueResult<Vec<String>> {
        let replica = replica.to_string();
        self.run(false, move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT journal FROM event_garbage g WHERE replica = ?1 AND after <= ?2
                     AND NOT EXISTS (SELECT 1 FROM events e WHERE e.replica = ?1 AND e.journal = g.journal)
                     ORDER BY after LIMIT ?3",
                )
                .map_err(sqlite)?;
            let rows = s
                .query_map(params![replica, now, i(limit as u64)], |r| r.get(0))
                .map_err(sqlite)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(sqlite)
        })
        .await
    }

    async fn forget_journals(&self, replica: &str, journals: &[String]) -> QueueResult<()> {
        let (replica, journals) = (replica.to_string(), journals.to_vec());
        self.run(true, move |c| {
            for j in journals {
                c.execute(
                    "DELETE FROM event_garbage WHERE replica = ?1 AND journal = ?2",
                    params![replica, j],
                )
                .map_err(sqlite)?;
            }
            Ok(())
        })
        .await
    }

    async fn next_garbage(&self, replica: &str) -> QueueResult<Option<i64>> {
        let replica = replica.to_string();
        self.run(false, move |c| {
            c.query_row(
                "SELECT min(after) FROM event_garbage WHERE replica = ?1",
                params![replica],
                |r| r.get(0),
            )
            .map_err(sqlite)
        })
        .await
    }
}

fn pg(e: sqlx::Error) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn pg_entry(r: &sqlx::postgres::PgRow) -> QueueResult<EventEntry> {
    Ok(EventEntry {
        event_id: r.try_get(0).map_err(corrupt)?,
        timestamp: r.try_get(1).map_err(corrupt)?,
        journal: r.try_get::<Option<String>, _>(2).map_err(corrupt)?.unwrap_or_default(),
        offset: u(r.try_get(3).map_err(corrupt)?),
        size: u(r.try_get(4).map_err(corrupt)?),
        journal_size: u(r.try_get(5).map_err(corrupt)?),
    })
}

async fn pg_garbage(tx: &mut sqlx::PgConnection, replica: &str, journal: &str, after: i64) -> QueueResult<()> {
    sqlx::query(
        "INSERT INTO dss_event_garbage (replica, journal, after)
         SELECT $1, $2, $3
         WHERE NOT EXISTS (SELECT 1 FROM dss_events WHERE replica = $1 AND journal = $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(replica)
    .bind(journal)
    .bind(after)
    .execute(&mut *tx)
    .await
    .map_err(pg)
    .map(drop)
}

/// Changes to one replica's index take turns (an advisory lock for the transaction), so
/// that a check and the change it allows are one step, as on the embedded queue.
async fn pg_lock(tx: &mut sqlx::PgConnection, replica: &str) -> QueueResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 2))")
        .bind(replica)
        .execute(&mut *tx)
        .await
        .map_err(pg)
        .map(drop)
}

impl EventIndex for PgQueue {
    async fn record_event(&self, replica: &str, e: &EventEntry, garbage_after: i64) -> QueueResult<Recorded> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        pg_lock(&mut tx, replica).await?;
        let known: Option<Option<String>> =
            sqlx::query("SELECT journal FROM dss_events WHERE replica = $1 AND event_id = $2")
                .bind(replica)
                .bind(&e.event_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(corrupt)?;
        let out = match known {
            Some(Some(_)) => {
                // The caller's object is garbage unless the row names it.
                pg_garbage(&mut tx, replica, &e.journal, garbage_after).await?;
                Recorded::Live
            }
            Some(None) => {
                pg_garbage(&mut tx, replica, &e.journal, garbage_after).await?;
                Recorded::Deleted
            }
            None => {
                sqlx::query(
                    "INSERT INTO dss_events (replica, event_id, ts, journal, off, size, jsize, pending)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE)",
                )
                .bind(replica)
                .bind(&e.event_id)
                .bind(&e.timestamp)
                .bind(&e.journal)
                .bind(i(e.offset))
                .bind(i(e.size))
                .bind(i(e.journal_size))
                .execute(&mut *tx)
                .await
                .map_err(pg)?;
                Recorded::Added
            }
        };
        tx.commit().await.map_err(pg)?;
        Ok(out)
    }

    async fn delete_events(&self, replica: &str, ids: &[String], garbage_after: i64) -> QueueResult<u64> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        pg_lock(&mut tx, replica).await?;
        let mut deleted = 0;
        for id in ids {
            let known: Option<Option<String>> =
                sqlx::query("SELECT journal FROM dss_events WHERE replica = $1 AND event_id = $2")
                    .bind(replica)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(pg)?
                    .map(|r| r.try_get(0))
                    .transpose()
                    .map_err(corrupt)?;
            match known {
                Some(None) => {}
                None => {
                    sqlx::query(
                        "INSERT INTO dss_events (replica, event_id, ts, journal, off, size, jsize, pending)
                         VALUES ($1, $2, '', NULL, 0, 0, 0, FALSE)",
                    )
                    .bind(replica)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(pg)?;
                }
                Some(Some(journal)) => {
                    sqlx::query(
                        "UPDATE dss_events SET journal = NULL, pending = FALSE WHERE replica = $1 AND event_id = $2",
                    )
                    .bind(replica)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(pg)?;
                    sqlx::query("UPDATE dss_events SET pending = TRUE WHERE replica = $1 AND journal = $2")
                        .bind(replica)
                        .bind(&journal)
                        .execute(&mut *tx)
                        .await
                        .map_err(pg)?;
                    pg_garbage(&mut tx, replica, &journal, garbage_after).await?;
                    deleted += 1;
                }
            }
        }
        tx.commit().await.map_err(pg)?;
        Ok(deleted)
    }

    async fn event_entries(
        &self,
        replica: &str,
        from: &Cursor,
        to: Option<&str>,
        limit: usize,
    ) -> QueueResult<Vec<EventEntry>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM dss_events
             WHERE replica = $1 AND journal IS NOT NULL
               AND (ts, event_id) >= ($2, $3) AND ts < $4
             ORDER BY ts, event_id LIMIT $5"
        ))
        .bind(replica)
        .bind(&from.timestamp)
        .bind(&from.event_id)
        .bind(upper(to))
        .bind(i(limit as u64))
        .fetch_all(&self.fast)
        .await
        .map_err(pg)?;
        rows.iter().map(pg_entry).collect()
    }

    async fn event_entry(&self, replica: &str, event_id: &str) -> QueueResult<(Option<EventEntry>, bool)> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM dss_events WHERE replica = $1 AND event_id = $2"
        ))
        .bind(replica)
        .bind(event_id)
        .fetch_optional(&self.fast)
        .await
        .map_err(pg)?;
        let Some(row) = row else { return Ok((None, false)) };
        let journal: Option<String> = row.try_get(2).map_err(corrupt)?;
        Ok((journal.map(|_| pg_entry(&row)).transpose()?, true))
    }

    async fn pending_count(&self, replica: &str, up_to: usize) -> QueueResult<usize> {
        let n: i64 =
            sqlx::query("SELECT count(*) FROM (SELECT 1 FROM dss_events WHERE replica = $1 AND pending LIMIT $2) p")
                .bind(replica)
                .bind(i(up_to as u64))
                .fetch_one(&self.fast)
                .await
                .map_err(pg)?
                .try_get(0)
                .map_err(corrupt)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn pending_events(&self, replica: &str, limit: usize) -> QueueResult<Vec<EventEntry>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM dss_events WHERE replica = $1 AND pending
             ORDER BY ts, event_id LIMIT $2"
        ))
        .bind(replica)
        .bind(i(limit as u64))
        .fetch_all(&self.fast)
        .await
        .map_err(pg)?;
        rows.iter().map(pg_entry).collect()
    }

    async fn intend_journal(&self, replica: &str, journal: &str, garbage_after: i64) -> QueueResult<()> {
        sqlx::query(
            "INSERT INTO dss_event_garbage (replica, journal, after) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(replica)
        .bind(journal)
        .bind(garbage_after)
        .execute(&self.pool)
        .await
        .map_err(pg)
        .map(drop)
    }

    async fn move_events(&self, replica: &str, moves: &[Move], sealed: bool, garbage_after: i64) -> QueueResult<bool> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        pg_lock(&mut tx, replica).await?;
        for (id, old, e) in moves {
            let n = sqlx::query(
                "UPDATE dss_events SET journal = $4, off = $5, size = $6, jsize = $7, pending = $8
                 WHERE replica = $1 AND event_id = $2 AND journal = $3 AND pending",
            )
            .bind(replica)
            .bind(id)
            .bind(old)
            .bind(&e.journal)
            .bind(i(e.offset))
            .bind(i(e.size))
            .bind(i(e.journal_size))
            .bind(!sealed)
            .execute(&mut *tx)
            .await
            .map_err(pg)?
            .rows_affected();
            if n == 0 {
                tx.rollback().await.map_err(pg)?;
                return Ok(false);
            }
        }
        let mut news: Vec<&String> = moves.iter().map(|(_, _, e)| &e.journal).collect();
        news.sort();
        news.dedup();
        for j in news {
            // Named now: no longer garbage.
            sqlx::query("DELETE FROM dss_event_garbage WHERE replica = $1 AND journal = $2")
                .bind(replica)
                .bind(j)
                .execute(&mut *tx)
                .await
                .map_err(pg)?;
        }
        let mut olds: Vec<&String> = moves.iter().map(|(_, old, _)| old).collect();
        olds.sort();
        olds.dedup();
        for old in olds {
            pg_garbage(&mut tx, replica, old, garbage_after).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(true)
    }

    async fn garbage_journals(&self, replica: &str, now: i64, limit: usize) -> QueueResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT journal FROM dss_event_garbage g WHERE replica = $1 AND after <= $2
             AND NOT EXISTS (SELECT 1 FROM dss_events e WHERE e.replica = $1 AND e.journal = g.journal)
             ORDER BY after LIMIT $3",
        )
        .bind(replica)
        .bind(now)
        .bind(i(limit as u64))
        .fetch_all(&self.fast)
        .await
        .map_err(pg)?;
        rows.iter().map(|r| r.try_get(0).map_err(corrupt)).collect()
    }

    async fn forget_journals(&self, replica: &str, journals: &[String]) -> QueueResult<()> {
        sqlx::query("DELETE FROM dss_event_garbage WHERE replica = $1 AND journal = ANY($2)")
            .bind(replica)
            .bind(journals)
            .execute(&self.pool)
            .await
            .map_err(pg)
            .map(drop)
    }

    async fn next_garbage(&self, replica: &str) -> QueueResult<Option<i64>> {
        sqlx::query("SELECT min(after) FROM dss_event_garbage WHERE replica = $1")
            .bind(replica)
            .fetch_one(&self.fast)
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(corrupt)
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

impl EventIndex for AnyQueue {
    async fn record_event(&self, replica: &str, entry: &EventEntry, garbage_after: i64) -> QueueResult<Recorded> {
        each!(self, q => q.record_event(replica, entry, garbage_after).await)
    }
    async fn delete_events(&self, replica: &str, ids: &[String], garbage_after: i64) -> QueueResult<u64> {
        each!(self, q => q.delete_events(replica, ids, garbage_after).await)
    }
    async fn event_entries(
        &self,
        replica: &str,
        from: &Cursor,
        to: Option<&str>,
        limit: usize,
    ) -> QueueResult<Vec<EventEntry>> {
        each!(self, q => q.event_entries(replica, from, to, limit).await)
    }
    async fn event_entry(&self, replica: &str, event_id: &str) -> QueueResult<(Option<EventEntry>, bool)> {
        each!(self, q => q.event_entry(replica, event_id).await)
    }
    async fn pending_count(&self, replica: &str, up_to: usize) -> QueueResult<usize> {
        each!(self, q => q.pending_count(replica, up_to).await)
    }
    async fn pending_events(&self, replica: &str, limit: usize) -> QueueResult<Vec<EventEntry>> {
        each!(self, q => q.pending_events(replica, limit).await)
    }
    async fn intend_journal(&self, replica: &str, journal: &str, garbage_after: i64) -> QueueResult<()> {
        each!(self, q => q.intend_journal(replica, journal, garbage_after).await)
    }
    async fn move_events(&self, replica: &str, moves: &[Move], sealed: bool, garbage_after: i64) -> QueueResult<bool> {
        each!(self, q => q.move_events(replica, moves, sealed, garbage_after).await)
    }
    async fn garbage_journals(&self, replica: &str, now: i64, limit: usize) -> QueueResult<Vec<String>> {
        each!(self, q => q.garbage_journals(replica, now, limit).await)
    }
    async fn forget_journals(&self, replica: &str, journals: &[String]) -> QueueResult<()> {
        each!(self, q => q.forget_journals(replica, journals).await)
    }
    async fn next_garbage(&self, replica: &str) -> QueueResult<Option<i64>> {
        each!(self, q => q.next_garbage(replica).await)
    }
}
