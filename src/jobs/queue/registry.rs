//! Subscriptions and their delivery logs, kept beside the job queue: in the SQLite file
//! of the embedded queue, or in PostgreSQL, where every backend sharing the queue sees
//! the same ones. Each replica's subscriptions carry a generation, bumped by every change,
//! so that matching (which reads them all) reloads them only when they changed.

use super::disk::DiskQueue;
use super::pg::PgQueue;
use super::{AnyQueue, QueueError, QueueResult};
use crate::model::subscription::{Delivery, Kind, Subscription, DELIVERIES_KEPT};
use rusqlite::{params, OptionalExtension};
use sqlx::Row;
use std::future::Future;

/// Where subscriptions are kept, and which collections each owner has. Every method is
/// one atomic step.
pub trait Registry: Send + Sync + 'static {
    /// Add `sub` unless its owner already has `limit` of its kind in its replica;
    /// whether it was added.
    fn put_subscription(&self, sub: &Subscription, limit: usize) -> impl Future<Output = QueueResult<bool>> + Send;
    /// One subscription.
    fn get_subscription(
        &self,
        replica: &str,
        uuid: &str,
    ) -> impl Future<Output = QueueResult<Option<Subscription>>> + Send;
    /// An owner's subscriptions of one kind in one replica, oldest first.
    fn owner_subscriptions(
        &self,
        replica: &str,
        owner: &str,
        kind: Kind,
    ) -> impl Future<Output = QueueResult<Vec<Subscription>>> + Send;
    /// Remove a subscription and its delivery log; whether it was there.
    fn delete_subscription(&self, replica: &str, uuid: &str) -> impl Future<Output = QueueResult<bool>> + Send;
    /// The generation of `replica`'s subscriptions (changes with every put and delete).
    fn subscriptions_generation(&self, replica: &str) -> impl Future<Output = QueueResult<i64>> + Send;
    /// Every subscription of `replica`, with the generation they are of.
    fn replica_subscriptions(
        &self,
        replica: &str,
    ) -> impl Future<Output = QueueResult<(i64, Vec<Subscription>)>> + Send;
    /// Append an attempt to a subscription's log (keeping the newest [`DELIVERIES_KEPT`]).
    fn record_delivery(
        &self,
        replica: &str,
        subscription: &str,
        delivery: &Delivery,
    ) -> impl Future<Output = QueueResult<()>> + Send;
    /// A subscription's logged attempts, newest first.
    fn deliveries(&self, replica: &str, subscription: &str) -> impl Future<Output = QueueResult<Vec<Delivery>>> + Send;
    /// Record that `owner` has version `version` of collection `uuid` (a repeat is one row).
    fn add_collection(&self, owner: &str, uuid: &str, version: &str) -> impl Future<Output = QueueResult<()>> + Send;
    /// Claim collection `uuid` for `owner` unless it is claimed (by an owner row or a
    /// claim): who has it.
    fn claim_collection(&self, uuid: &str, owner: &str) -> impl Future<Output = QueueResult<String>> + Send;
    /// `owner`'s collection versions `(uuid, version)`, in the original's order (descending
    /// by `{uuid}.{version}`).
    fn owner_collections(&self, owner: &str) -> impl Future<Output = QueueResult<Vec<(String, String)>>> + Send;
    /// Forget every version of collection `uuid` (it was deleted); how many.
    fn remove_collection(&self, uuid: &str) -> impl Future<Output = QueueResult<u64>> + Send;
}

fn kind_name(k: Kind) -> &'static str {
    k.as_str()
}

fn parse_row(replica: String, uuid: String, owner: String, kind: String, doc: String) -> QueueResult<Subscription> {
    let kind = Kind::parse(Some(&kind)).map_err(|_| QueueError::Corrupt(format!("subscription kind {kind:?}")))?;
    let doc: serde_json::Value =
        serde_json::from_str(&doc).map_err(|e| QueueError::Corrupt(format!("subscription {uuid}: {e}")))?;
    let serde_json::Value::Object(doc) = doc else {
        return Err(QueueError::Corrupt(format!("subscription {uuid} is not an object")));
    };
    Ok(Subscription {
        uuid,
        owner,
        replica,
        kind,
        doc,
    })
}

fn parse_delivery(doc: &str) -> QueueResult<Delivery> {
    serde_json::from_str(doc).map_err(|e| QueueError::Corrupt(format!("delivery: {e}")))
}

fn sqlite(e: rusqlite::Error) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

const SQLITE_COLUMNS: &str = "replica, uuid, owner, kind, doc";

/// Rows as subscriptions; with `skip_corrupt` one that does not parse is logged and left
/// out (so one bad row does not stop matching for a whole replica), else it is an error.
fn sqlite_subs(
    c: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    skip_corrupt: bool,
) -> QueueResult<Vec<Subscription>> {
    let mut s = c.prepare_cached(sql).map_err(sqlite)?;
    let rows = s
        .query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .map_err(sqlite)?;
    let mut out = Vec::new();
    for r in rows {
        let (replica, uuid, owner, kind, doc) = r.map_err(sqlite)?;
        keep(&mut out, parse_row(replica, uuid, owner, kind, doc), skip_corrupt)?;
    }
    Ok(out)
}

fn keep(out: &mut Vec<Subscription>, row: QueueResult<Subscription>, skip_corrupt: bool) -> QueueResult<()> {
    match row {
        Ok(s) => out.push(s),
        Err(QueueError::Corrupt(e)) if skip_corrupt => tracing::error!("unreadable subscription left out: {e}"),
        Err(e) => return Err(e),
    }
    Ok(())
}

fn sqlite_bump(c: &rusqlite::Connection, replica: &str) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT INTO subscription_generations (replica, n) VALUES (?1, 1)
         ON CONFLICT (replica) DO UPDATE SET n = n + 1",
        params![replica],
    )
}

fn sqlite_generation(c: &rusqlite::Connection, replica: &str) -> QueueResult<i64> {
    c.query_row(
        "SELECT n FROM subscription_generations WHERE replica = ?1",
        params![replica],
        |r| r.get(0),
    )
    .optional()
    .map(|n| n.unwrap_or(0))
    .map_err(sqlite)
}

/// The tables of the embedded queue's file (created at open).
pub(super) const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subscriptions (
    replica TEXT NOT NULL,
    uuid TEXT NOT NULL,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    doc TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (replica, uuid)
);
CREATE INDEX IF NOT EXISTS subscriptions_owner ON subscriptions (replica, owner, kind);
CREATE TABLE IF NOT EXISTS subscription_generations (
    replica TEXT PRIMARY KEY,
    n INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    replica TEXT NOT NULL,
    subscription TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_subscription ON deliveries (replica, subscription, id);
CREATE TABLE IF NOT EXISTS collection_owners (
    owner TEXT NOT NULL,
    uuid TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (owner, uuid, version)
);
CREATE INDEX IF NOT EXISTS collection_owners_uuid ON collection_owners (uuid);
CREATE TABLE IF NOT EXISTS collection_claims (
    uuid TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);
";

impl Registry for DiskQueue {
    async fn put_subscription(&self, sub: &Subscription, limit: usize) -> QueueResult<bool> {
        let sub = sub.clone();
        let doc = serde_json::Value::Object(sub.doc.clone()).to_string();
        self.run(true, move |c| {
            let n: i64 = c
                .query_row(
                    "SELECT count(*) FROM subscriptions WHERE replica = ?1 AND owner = ?2 AND kind = ?3",
                    params![sub.replica, sub.owner, kind_name(sub.kind)],
                    |r| r.get(0),
                )
                .map_err(sqlite)?;
            if usize::try_from(n).unwrap_or(usize::MAX) >= limit {
                return Ok(false);
            }
            c.execute(
                "INSERT INTO subscriptions (replica, uuid, owner, kind, doc, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    sub.replica,
                    sub.uuid,
                    sub.owner,
                    kind_name(sub.kind),
                    doc,
                    chrono::Utc::now().timestamp_millis()
                ],
            )
            .map_err(sqlite)?;
            sqlite_bump(c, &sub.replica).map_err(sqlite)?;
            Ok(true)
        })
        .await
    }

    async fn get_subscription(&self, replica: &str, uuid: &str) -> QueueResult<Option<Subscription>> {
        let (replica, uuid) = (replica.to_string(), uuid.to_string());
        self.run(false, move |c| {
            Ok(sqlite_subs(
                c,
                &format!("SELECT {SQLITE_COLUMNS} FROM subscriptions WHERE replica = ?1 AND uuid = ?2"),
                params![replica, uuid],
                false,
            )?
            .pop())
        })
        .await
    }

    async fn owner_subscriptions(&self, replica: &str, owner: &str, kind: Kind) -> QueueResult<Vec<Subscription>> {
        let (replica, owner) = (replica.to_string(), owner.to_string());
        self.run(false, move |c| {
            sqlite_subs(
                c,
                &format!(
                    "SELECT {SQLITE_COLUMNS} FROM subscriptions WHERE replica = ?1 AND owner = ?2 AND kind = ?3
                     ORDER BY created_at, uuid"
                ),
                params![replica, owner, kind_name(kind)],
                true,
            )
        })
        .await
    }

    async fn delete_subscription(&self, replica: &str, uuid: &str) -> QueueResult<bool> {
        let (replica, uuid) = (replica.to_string(), uuid.to_string());
        self.run(true, move |c| {
            let n = c
                .execute(
                    "DELETE FROM subscriptions WHERE replica = ?1 AND uuid = ?2",
                    params![replica, uuid],
                )
                .map_err(sqlite)?;
            c.execute(
                "DELETE FROM deliveries WHERE replica = ?1 AND subscription = ?2",
                params![replica, uuid],
            )
            .map_err(sqlite)?;
            if n > 0 {
                sqlite_bump(c, &replica).map_err(sqlite)?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn subscriptions_generation(&self, replica: &str) -> QueueResult<i64> {
        let replica = replica.to_string();
        self.run(false, move |c| sqlite_generation(c, &replica)).await
    }

    async fn replica_subscriptions(&self, replica: &str) -> QueueResult<(i64, Vec<Subscription>)> {
        let replica = replica.to_string();
        self.run(false, move |c| {
            let generation = sqlite_generation(c, &replica)?;
            let subs = sqlite_subs(
                c,
                &format!("SELECT {SQLITE_COLUMNS} FROM subscriptions WHERE replica = ?1 ORDER BY created_at, uuid"),
                params![replica],
                true,
            )?;
            Ok((generation, subs))
        })
        .await
    }

    async fn record_delivery(&self, replica: &str, subscription: &str, delivery: &Delivery) -> QueueResult<()> {
        let (replica, subscription) = (replica.to_string(), subscription.to_string());
        let doc = serde_json::to_string(delivery).map_err(|e| QueueError::Corrupt(e.to_string()))?;
        self.run(false, move |c| {
            c.execute(
                // Not for a subscription deleted meanwhile (its log went with it).
                "INSERT INTO deliveries (replica, subscription, doc)
                 SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM subscriptions WHERE replica = ?1 AND uuid = ?2)",
                params![replica, subscription, doc],
            )
            .map_err(sqlite)?;
            c.execute(
                "DELETE FROM deliveries WHERE replica = ?1 AND subscription = ?2 AND id <= (
                    SELECT id FROM deliveries WHERE replica = ?1 AND subscription = ?2
                    ORDER BY id DESC LIMIT 1 OFFSET ?3)",
                params![replica, subscription, DELIVERIES_KEPT as i64],
            )
            .map_err(sqlite)?;
            Ok(())
        })
        .await
    }

    async fn deliveries(&self, replica: &str, subscription: &str) -> QueueResult<Vec<Delivery>> {
        let (replica, subscription) = (replica.to_string(), subscription.to_string());
        self.run(false, move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT doc FROM deliveries WHERE replica = ?1 AND subscription = ?2 ORDER BY id DESC LIMIT ?3",
                )
                .map_err(sqlite)?;
            let rows = s
                .query_map(params![replica, subscription, DELIVERIES_KEPT as i64], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(sqlite)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(parse_delivery(&r.map_err(sqlite)?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn add_collection(&self, owner: &str, uuid: &str, version: &str) -> QueueResult<()> {
        let (owner, uuid, version) = (owner.to_string(), uuid.to_string(), version.to_string());
        self.run(true, move |c| {
            c.execute(
                "INSERT OR IGNORE INTO collection_owners (owner, uuid, version) VALUES (?1, ?2, ?3)",
                params![owner, uuid, version],
            )
            .map(drop)
            .map_err(sqlite)
        })
        .await
    }

    async fn claim_collection(&self, uuid: &str, owner: &str) -> QueueResult<String> {
        let (uuid, owner) = (uuid.to_string(), owner.to_string());
        self.run(true, move |c| {
            // A collection listed before claims were kept (its owner rows: reindexed, say) is
            // its latest version's owner's, whom the bucket's check lets write.
            c.execute(
                "INSERT OR IGNORE INTO collection_claims (uuid, owner)
                 SELECT ?1, coalesce((SELECT owner FROM collection_owners WHERE uuid = ?1
                                      ORDER BY version DESC LIMIT 1), ?2)",
                params![uuid, owner],
            )
            .map_err(sqlite)?;
            c.query_row(
                "SELECT owner FROM collection_claims WHERE uuid = ?1",
                params![uuid],
                |r| r.get(0),
            )
            .map_err(sqlite)
        })
        .await
    }

    async fn owner_collections(&self, owner: &str) -> QueueResult<Vec<(String, String)>> {
        let owner = owner.to_string();
        self.run(false, move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT uuid, version FROM collection_owners WHERE owner = ?1
                     ORDER BY uuid || '.' || version DESC",
                )
                .map_err(sqlite)?;
            let rows = s
                .query_map(params![owner], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sqlite)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sqlite)
        })
        .await
    }

    async fn remove_collection(&self, uuid: &str) -> QueueResult<u64> {
        let uuid = uuid.to_string();
        self.run(true, move |c| {
            c.execute("DELETE FROM collection_owners WHERE uuid = ?1", params![uuid])
                .map(|n| n as u64)
                .map_err(sqlite)
        })
        .await
    }
}

fn pg(e: sqlx::Error) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn pg_subs(rows: Vec<sqlx::postgres::PgRow>, skip_corrupt: bool) -> QueueResult<Vec<Subscription>> {
    let mut out = Vec::new();
    for r in &rows {
        let get = |i: usize| {
            r.try_get::<String, _>(i)
                .map_err(|e| QueueError::Corrupt(e.to_string()))
        };
        let row = (|| parse_row(get(0)?, get(1)?, get(2)?, get(3)?, get(4)?))();
        keep(&mut out, row, skip_corrupt)?;
    }
    Ok(out)
}

const PG_COLUMNS: &str = "replica, uuid, owner, kind, doc";

async fn pg_generation<'e, E: sqlx::PgExecutor<'e>>(e: E, replica: &str) -> QueueResult<i64> {
    let row = sqlx::query("SELECT n FROM dss_subscription_generations WHERE replica = $1")
        .bind(replica)
        .fetch_optional(e)
        .await
        .map_err(pg)?;
    Ok(row.and_then(|r| r.try_get::<i64, _>(0).ok()).unwrap_or(0))
}

async fn pg_bump(tx: &mut sqlx::PgConnection, replica: &str) -> QueueResult<()> {
    sqlx::query(
        "INSERT INTO dss_subscription_generations (replica, n) VALUES ($1, 1)
         ON CONFLICT (replica) DO UPDATE SET n = dss_subscription_generations.n + 1",
    )
    .bind(replica)
    .execute(tx)
    .await
    .map_err(pg)
    .map(drop)
}

impl Registry for PgQueue {
    async fn put_subscription(&self, sub: &Subscription, limit: usize) -> QueueResult<bool> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        // Puts of one owner take turns, so two at once cannot both pass the limit.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))")
            .bind(format!("{}/{}/{}", sub.replica, sub.owner, kind_name(sub.kind)))
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        let n: i64 =
            sqlx::query("SELECT count(*) FROM dss_subscriptions WHERE replica = $1 AND owner = $2 AND kind = $3")
                .bind(&sub.replica)
                .bind(&sub.owner)
                .bind(kind_name(sub.kind))
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get(0))
                .map_err(pg)?;
        if usize::try_from(n).unwrap_or(usize::MAX) >= limit {
            return Ok(false);
        }
        sqlx::query("INSERT INTO dss_subscriptions (replica, uuid, owner, kind, doc) VALUES ($1, $2, $3, $4, $5)")
            .bind(&sub.replica)
            .bind(&sub.uuid)
            .bind(&sub.owner)
            .bind(kind_name(sub.kind))
            .bind(serde_json::Value::Object(sub.doc.clone()).to_string())
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        pg_bump(&mut tx, &sub.replica).await?;
        tx.commit().await.map_err(pg)?;
        Ok(true)
    }

    async fn get_subscription(&self, replica: &str, uuid: &str) -> QueueResult<Option<Subscription>> {
        let rows = sqlx::query(&format!(
            "SELECT {PG_COLUMNS} FROM dss_subscriptions WHERE replica = $1 AND uuid = $2"
        ))
        .bind(replica)
        .bind(uuid)
        .fetch_all(&self.fast)
        .await
        .map_err(pg)?;
        Ok(pg_subs(rows, false)?.pop())
    }

    async fn owner_subscriptions(&self, replica: &str, owner: &str, kind: Kind) -> QueueResult<Vec<Subscription>> {
        let rows = sqlx::query(&format!(
            "SELECT {PG_COLUMNS} FROM dss_subscriptions WHERE replica = $1 AND owner = $2 AND kind = $3
             ORDER BY created_at, uuid"
        ))
        .bind(replica)
        .bind(owner)
        .bind(kind_name(kind))
        .fetch_all(&self.fast)
        .await
        .map_err(pg)?;
        pg_subs(rows, true)
    }

    async fn delete_subscription(&self, replica: &str, uuid: &str) -> QueueResult<bool> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        let n = sqlx::query("DELETE FROM dss_subscriptions WHERE replica = $1 AND uuid = $2")
            .bind(replica)
            .bind(uuid)
            .execute(&mut *tx)
            .await
            .map_err(pg)?
            .rows_affected();
        sqlx::query("DELETE FROM dss_deliveries WHERE replica = $1 AND subscription = $2")
            .bind(replica)
            .bind(uuid)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        if n > 0 {
            pg_bump(&mut tx, replica).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(n > 0)
    }

    async fn subscriptions_generation(&self, replica: &str) -> QueueResult<i64> {
        pg_generation(&self.fast, replica).await
    }

    async fn replica_subscriptions(&self, replica: &str) -> QueueResult<(i64, Vec<Subscription>)> {
        // One snapshot for both, so the generation is that of the rows read.
        let mut tx = self.fast.begin().await.map_err(pg)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        let generation = pg_generation(&mut *tx, replica).await?;
        let rows = sqlx::query(&format!(
            "SELECT {PG_COLUMNS} FROM dss_subscriptions WHERE replica = $1 ORDER BY created_at, uuid"
        ))
        .bind(replica)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok((generation, pg_subs(rows, true)?))
    }

    async fn record_delivery(&self, replica: &str, subscription: &str, delivery: &Delivery) -> QueueResult<()> {
        let doc = serde_json::to_string(delivery).map_err(|e| QueueError::Corrupt(e.to_string()))?;
        sqlx::query(
            "WITH added AS (INSERT INTO dss_deliveries (replica, subscription, doc)
                            SELECT $1, $2, $3 WHERE EXISTS
                              (SELECT 1 FROM dss_subscriptions WHERE replica = $1 AND uuid = $2)
                            RETURNING id)
             DELETE FROM dss_deliveries WHERE replica = $1 AND subscription = $2 AND id <= (
                SELECT id FROM dss_deliveries WHERE replica = $1 AND subscription = $2
                ORDER BY id DESC LIMIT 1 OFFSET $4)",
        )
        .bind(replica)
        .bind(subscription)
        .bind(doc)
        .bind(DELIVERIES_KEPT as i64 - 1)
        .execute(&self.fast)
        .await
        .map_err(pg)
        .map(drop)
    }

    async fn deliveries(&self, replica: &str, subscription: &str) -> QueueResult<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT doc FROM dss_deliveries WHERE replica = $1 AND subscription = $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(replica)
        .bind(subscription)
        .bind(DELIVERIES_KEPT as i64)
        .fetch_all(&self.fast)
        .await
        .map_err(pg)?;
        rows.iter()
            .map(|r| {
                parse_delivery(
                    &r.try_get::<String, _>(0)
                        .map_err(|e| QueueError::Corrupt(e.to_string()))?,
                )
            })
            .collect()
    }

    async fn add_collection(&self, owner: &str, uuid: &str, version: &str) -> QueueResult<()> {
        sqlx::query(
            "INSERT INTO dss_collection_owners (owner, uuid, version) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(owner)
        .bind(uuid)
        .bind(version)
        .execute(&self.pool)
        .await
        .map_err(pg)
        .map(drop)
    }

    async fn claim_collection(&self, uuid: &str, owner: &str) -> QueueResult<String> {
        sqlx::query(
            "INSERT INTO dss_collection_claims (uuid, owner)
             SELECT $1, coalesce((SELECT owner FROM dss_collection_owners WHERE uuid = $1
                                  ORDER BY version COLLATE \"C\" DESC LIMIT 1), $2)
             ON CONFLICT DO NOTHING",
        )
        .bind(uuid)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(pg)?;
        sqlx::query("SELECT owner FROM dss_collection_claims WHERE uuid = $1")
            .bind(uuid)
            .fetch_one(&self.pool)
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(|e| QueueError::Corrupt(e.to_string()))
    }

    async fn owner_collections(&self, owner: &str) -> QueueResult<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT uuid, version FROM dss_collection_owners WHERE owner = $1
             ORDER BY uuid || '.' || version COLLATE \"C\" DESC",
        )
        .bind(owner)
        .fetch_all(&self.fast)
        .await
        .map_err(pg)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(|e| QueueError::Corrupt(e.to_string()))?,
                    r.try_get(1).map_err(|e| QueueError::Corrupt(e.to_string()))?,
                ))
            })
            .collect()
    }

    async fn remove_collection(&self, uuid: &str) -> QueueResult<u64> {
        sqlx::query("DELETE FROM dss_collection_owners WHERE uuid = $1")
            .bind(uuid)
            .execute(&self.pool)
            .await
            .map_err(pg)
            .map(|r| r.rows_affected())
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

impl Registry for AnyQueue {
    async fn put_subscription(&self, sub: &Subscription, limit: usize) -> QueueResult<bool> {
        each!(self, q => q.put_subscription(sub, limit).await)
    }
    async fn get_subscription(&self, replica: &str, uuid: &str) -> QueueResult<Option<Subscription>> {
        each!(self, q => q.get_subscription(replica, uuid).await)
    }
    async fn owner_subscriptions(&self, replica: &str, owner: &str, kind: Kind) -> QueueResult<Vec<Subscription>> {
        each!(self, q => q.owner_subscriptions(replica, owner, kind).await)
    }
    async fn delete_subscription(&self, replica: &str, uuid: &str) -> QueueResult<bool> {
        each!(self, q => q.delete_subscription(replica, uuid).await)
    }
    async fn subscriptions_generation(&self, replica: &str) -> QueueResult<i64> {
        each!(self, q => q.subscriptions_generation(replica).await)
    }
    async fn replica_subscriptions(&self, replica: &str) -> QueueResult<(i64, Vec<Subscription>)> {
        each!(self, q => q.replica_subscriptions(replica).await)
    }
    async fn record_delivery(&self, replica: &str, subscription: &str, delivery: &Delivery) -> QueueResult<()> {
        each!(self, q => q.record_delivery(replica, subscription, delivery).await)
    }
    async fn deliveries(&self, replica: &str, subscription: &str) -> QueueResult<Vec<Delivery>> {
        each!(self, q => q.deliveries(replica, subscription).await)
    }
    async fn add_collection(&self, owner: &str, uuid: &str, version: &str) -> QueueResult<()> {
        each!(self, q => q.add_collection(owner, uuid, version).await)
    }
    async fn claim_collection(&self, uuid: &str, owner: &str) -> QueueResult<String> {
        each!(self, q => q.claim_collection(uuid, owner).await)
    }
    async fn owner_collections(&self, owner: &str) -> QueueResult<Vec<(String, String)>> {
        each!(self, q => q.owner_collections(owner).await)
    }
    async fn remove_collection(&self, uuid: &str) -> QueueResult<u64> {
        each!(self, q => q.remove_collection(uuid).await)
    }
}
