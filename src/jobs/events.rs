//! The event journal, as jobs:
//!
//! - a write of a bundle key queues a **record** job (`event`, key `{replica}/{bundle
//!   key}`). For a manifest it writes the bundle's metadata document (the one
//!   subscriptions v2 match on, as Python's `json.dumps` wrote it) as a one-event journal
//!   and adds it to the index, stamped with the time it is recorded; for a tombstone it
//!   deletes the events of the versions it hides (from the index at once: listings never
//!   show them again). An event is recorded once per replica: a repeat finds it known.
//! - a **compact** job (`events-compact`, key `{replica}`) runs a while after events were
//!   recorded (`DSS_EVENTS_COMPACT_AFTER`), or as soon as a full journal's worth waits: it
//!   packs the pending events (one-event journals, and the live rest of journals that lost
//!   events to a tombstone) into journals of up to 1000 events, moves them in the index
//!   in one step, and deletes the journals nothing names any more once the URLs handed
//!   out for them have expired.

use super::queue::journal::{EventIndex, Move, Recorded};
use super::queue::runner::Outcome;
use super::queue::{AnyQueue, JobQueue, NewJob};
use super::work::Services;
use crate::bucket::keys::{parse_bundle_key, BundleKey};
use crate::model::event::{self as ev, Cursor, EventEntry, EventJournal};
use crate::model::{BoxFuture, DssVersion};
use crate::search::indexer::{metadata_doc, IndexError};
use crate::storage::AnyStore;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Kind of the record job; its key is `{replica}/{bundle key}`.
pub const RECORD: &str = "event";
/// Kind of the compaction job; its key is the replica.
pub const COMPACT: &str = "events-compact";

/// Most pending events one compaction packs (it queues the next for the rest).
const COMPACT_BATCH: usize = 10 * ev::JOURNAL_MAX_EVENTS;

/// Record (or, for a tombstone, delete) the events of bundle key `key` in `replica`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordJob {
    /// Where the key was written.
    pub replica: String,
    /// A bundle or tombstone key.
    pub key: String,
}

/// Compact `replica`'s journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactJob {
    /// The replica.
    pub replica: String,
}

/// The queue job of a compaction of `replica`, not before `at`.
pub fn compact_job(replica: &str, at: chrono::DateTime<chrono::Utc>) -> NewJob {
    let mut job = NewJob::new(
        COMPACT,
        replica,
        serde_json::json!(CompactJob {
            replica: replica.to_string()
        }),
    );
    job.run_at = Some(at);
    job
}

fn retry(e: impl std::fmt::Display) -> Outcome {
    Outcome::Retry(e.to_string())
}

/// Runs the journal's jobs.
pub struct Journaller {
    app: Arc<Services>,
    queue: Arc<AnyQueue>,
    /// How long an event waits before a journal smaller than a full one is written.
    compact_after: Duration,
}

impl Journaller {
    /// Over `app`'s replicas and `queue`'s index.
    pub fn new(app: Arc<Services>, queue: Arc<AnyQueue>, compact_after: Duration) -> Self {
        Journaller {
            app,
            queue,
            compact_after,
        }
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.app.clock.now()
    }

    /// When a journal that nothing names from now on may be deleted: once every URL
    /// handed out for it has expired.
    fn garbage_after(&self) -> i64 {
        let grace = ev::grace(self.app.config.presigned_ttl).as_secs();
        self.now().timestamp() + i64::try_from(grace).unwrap_or(i64::MAX / 2)
    }

    /// Queue a compaction of `replica` at `at` (a queued one absorbs it, keeping the
    /// earlier time).
    async fn schedule(&self, replica: &str, at: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
        self.queue
            .enqueue(vec![compact_job(replica, at)])
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn settle(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.compact_after).unwrap_or_default()
    }

    /// Record or delete the events of a bundle key.
    pub async fn record(&self, job: &RecordJob) -> Outcome {
        let replica = match self.app.replica(&job.replica) {
            Ok(r) => r,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        let bucket = self.app.bucket(replica);
        let (uuid, version) = match parse_bundle_key(&job.key) {
            Some(BundleKey::Manifest { uuid, version }) => (uuid, version),
            Some(BundleKey::VersionTombstone { uuid, version }) => {
                return self.delete(&job.replica, vec![ev::event_id(uuid, version)]).await;
            }
            Some(BundleKey::Tombstone { uuid }) => {
                let seen = match bucket.visibility(uuid, self.now(), crate::bucket::Listing::Fresh).await {
                    Ok(s) => s,
                    Err(e) => return retry(e),
                };
                let ids = seen.stored_versions().map(|v| ev::event_id(uuid, v)).collect();
                return self.delete(&job.replica, ids).await;
            }
            None => return Outcome::Done,
        };
        let id = ev::event_id(uuid, version);
        match self.queue.event_entry(&job.replica, &id).await {
            // Recorded (or deleted) before; its compaction is queued again, in case the
            // run that recorded it ended before it could queue it.
            Ok((_, true)) => return self.compact_later(&job.replica).await,
            Ok((_, false)) => {}
            Err(e) => return retry(e),
        }
        // A version hidden by a tombstone before its event was recorded is not an event.
        match bucket.visibility(uuid, self.now(), crate::bucket::Listing::Fresh).await {
            Ok(seen) if seen.hidden_by(version).is_some() => return self.delete(&job.replica, vec![id]).await,
            Ok(_) => {}
            Err(e) => return retry(e),
        }
        let doc = match metadata_doc(&bucket, uuid, version).await {
            Ok(d) => d,
            Err(IndexError::Store(e)) => return retry(e),
            Err(IndexError::Missing(what)) => {
                tracing::info!(key = %job.key, "no event: {what} is gone");
                return Outcome::Done;
            }
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        let bytes = Bytes::from(crate::model::pyjson::dumps(&doc));
        let now = self.now();
        let ts = DssVersion::from_datetime(now).to_string();
        let size = bytes.len() as u64;
        if let Err(e) = bucket.put_event(&id, bytes).await {
            return retry(e);
        }
        let entry = EventEntry {
            event_id: id.clone(),
            timestamp: ts,
            journal: id,
            offset: 0,
            size,
            journal_size: size,
        };
        match self
            .queue
            .record_event(&job.replica, &entry, self.garbage_after())
            .await
        {
            Ok(Recorded::Added | Recorded::Live | Recorded::Deleted) => self.compact_later(&job.replica).await,
            Err(e) => retry(e),
        }
    }

    /// Queue the compaction that recorded or deleted events need: at once when a full
    /// journal's worth waits, else once the newest of them is due. (A queued compaction
    /// absorbs it, keeping the earlier time, so this is cheap to repeat.)
    async fn compact_later(&self, replica: &str) -> Outcome {
        let full = match self.queue.pending_count(replica, ev::JOURNAL_MAX_EVENTS).await {
            Ok(n) => n >= ev::JOURNAL_MAX_EVENTS,
            Err(e) => return retry(e),
        };
        let now = self.now();
        let at = if full { now } else { now + self.settle() };
        match self.schedule(replica, at).await {
            Ok(()) => Outcome::Done,
            Err(e) => retry(e),
        }
    }

    async fn delete(&self, replica: &str, ids: Vec<String>) -> Outcome {
        match self.queue.delete_events(replica, &ids, self.garbage_after()).await {
            Ok(n) => {
                tracing::debug!(replica, deleted = n, "events deleted");
                // Their journals are rewritten without them at the next compaction (also
                // queued when a repeat finds them deleted already: the run that deleted
                // them may have ended before it queued it).
                self.compact_later(replica).await
            }
            Err(e) => retry(e),
        }
    }

    /// Pack `replica`'s pending events into journals, and delete the journals whose grace
    /// time is over.
    pub async fn compact(&self, job: &CompactJob) -> Outcome {
        let replica = match self.app.replica(&job.replica) {
            Ok(r) => r,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        let bucket = self.app.bucket(replica);
        let pending = match self.queue.pending_events(&job.replica, COMPACT_BATCH).await {
            Ok(p) => p,
            Err(e) => return retry(e),
        };
        let now = self.now();
        let cutoff = DssVersion::from_datetime(now - self.settle()).to_string();
        let due = pending.first().is_some_and(|e| e.timestamp <= cutoff);
        let more = pending.len() == COMPACT_BATCH;
        let mut journals = ev::cut(pending);
        // When this must run again (each run plans the next, so nothing waits for new
        // events to come along): for pending events not due yet, for the rest of a
        // batch, for journals still in their grace time.
        let mut next: Option<chrono::DateTime<chrono::Utc>> = more.then_some(now);
        // Until the oldest has waited long enough, only full journals are written.
        if !due && journals.last().is_some_and(|j| j.len() < ev::JOURNAL_MAX_EVENTS) {
            if let Some(first) = journals.pop().and_then(|rest| rest.into_iter().next()) {
                let at = DssVersion::parse(&first.timestamp).map_or(now, |v| v.datetime()) + self.settle();
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        let mut moved = 0;
        for events in journals {
            match self.pack(&bucket, &job.replica, events).await {
                Ok(Packed::Moved) => moved += 1,
                Ok(Packed::AsIs) => {}
                // Another compaction or a deletion came first: look again in a moment.
                Ok(Packed::Raced) => {
                    return Outcome::RetryAt(now + chrono::Duration::seconds(1), "the pending events changed".into())
                }
                Err(e) => return retry(e),
            }
        }
        if moved > 0 {
            tracing::debug!(replica = %job.replica, journals = moved, "events compacted");
        }
        if let Err(e) = self.sweep(&bucket, &job.replica).await {
            return retry(e);
        }
        match self.queue.next_garbage(&job.replica).await {
            Ok(Some(t)) => {
                let at = chrono::DateTime::from_timestamp(t, 0).unwrap_or(now);
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            Ok(None) => {}
            Err(e) => return retry(e),
        }
        if let Some(at) = next {
            if let Err(e) = self.schedule(&job.replica, at).await {
                return retry(e);
            }
        }
        Outcome::Done
    }

    /// Write one journal of `events` and move them to it.
    async fn pack(
        &self,
        bucket: &crate::bucket::Bucket<'_, AnyStore, crate::api::dss::files::FileEntry>,
        replica: &str,
        events: Vec<EventEntry>,
    ) -> Result<Packed, String> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(Packed::AsIs);
        };
        if ev::unchanged(&events) {
            return Ok(Packed::AsIs);
        }
        let sealed = ev::sealed(&events);
        let id = ev::journal_id(&first.timestamp, &last.timestamp);
        let mut sources: HashMap<String, Bytes> = HashMap::new();
        let mut docs = Vec::with_capacity(events.len());
        for e in &events {
            if !sources.contains_key(&e.journal) {
                let stream = bucket.journal_stream(&e.journal).await.map_err(|e| e.to_string())?;
                sources.insert(e.journal.clone(), stream);
            }
            let stream = &sources[&e.journal];
            let (start, end) = (e.offset as usize, (e.offset + e.size) as usize);
            let doc = stream
                .get(start..end)
                .ok_or_else(|| format!("journal {} is shorter than its index says", e.journal))?;
            docs.push((e.event_id.clone(), e.timestamp.clone(), stream.slice_ref(doc)));
        }
        // Noted first as garbage to be, so that a failure from here on (or a crash) leaves
        // nothing in the bucket for good; the move that names it takes the note back.
        self.queue
            .intend_journal(replica, &id, self.garbage_after())
            .await
            .map_err(|e| e.to_string())?;
        let m = bucket.put_journal(&id, &docs).await.map_err(|e| e.to_string())?;
        let moves: Vec<Move> = events
            .iter()
            .zip(&m.events)
            .map(|(old, placed)| {
                (
                    old.event_id.clone(),
                    old.journal.clone(),
                    EventEntry {
                        event_id: old.event_id.clone(),
                        timestamp: old.timestamp.clone(),
                        journal: id.clone(),
                        offset: placed.offset,
                        size: placed.size,
                        journal_size: m.size,
                    },
                )
            })
            .collect();
        let ok = self
            .queue
            .move_events(replica, &moves, sealed, self.garbage_after())
            .await
            .map_err(|e| e.to_string())?;
        if !ok {
            bucket.delete_journal(&id).await.map_err(|e| e.to_string())?;
            return Ok(Packed::Raced);
        }
        Ok(Packed::Moved)
    }

    /// Delete the journals nothing names whose grace time is over.
    async fn sweep(
        &self,
        bucket: &crate::bucket::Bucket<'_, AnyStore, crate::api::dss::files::FileEntry>,
        replica: &str,
    ) -> Result<(), String> {
        loop {
            let done = self
                .queue
                .garbage_journals(replica, self.now().timestamp(), 500)
                .await
                .map_err(|e| e.to_string())?;
            if done.is_empty() {
                return Ok(());
            }
            for j in &done {
                bucket.delete_journal(j).await.map_err(|e| e.to_string())?;
            }
            self.queue
                .forget_journals(replica, &done)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
}

/// What packing a run of pending events did.
enum Packed {
    /// Written as a new journal, and moved there.
    Moved,
    /// Left as they are: they are one journal already.
    AsIs,
    /// They changed meanwhile (a deletion, another compaction); the journal written was
    /// deleted again.
    Raced,
}

/// The API's view of the journal: the index beside the job queue.
pub struct JournalIndex {
    queue: Arc<AnyQueue>,
}

impl JournalIndex {
    /// Over `queue`.
    pub fn new(queue: Arc<AnyQueue>) -> Self {
        JournalIndex { queue }
    }
}

impl EventJournal for JournalIndex {
    fn entries<'a>(
        &'a self,
        replica: &'a str,
        from: &'a Cursor,
        to: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<EventEntry>, String>> {
        Box::pin(async move {
            self.queue
                .event_entries(replica, from, to, limit)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn entry<'a>(&'a self, replica: &'a str, event_id: &'a str) -> BoxFuture<'a, Result<Option<EventEntry>, String>> {
        Box::pin(async move {
            self.queue
                .event_entry(replica, event_id)
                .await
                .map(|(e, _)| e)
                .map_err(|e| e.to_string())
        })
    }
}
