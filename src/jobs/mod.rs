//! Background work of the backend, on one durable job queue.
//!
//! - [`queue`]: the `JobQueue` seam, its two implementations (SQLite on disk, PostgreSQL
//!   shared by several backends), the runner and the conformance suite;
//! - [`work`]: the kinds of job (ingest, index), the handler that runs them, and the
//!   `JobSink` (in `bucket::followup`) through which writes hand them over.
//!
//! Start-up chores live here too: old-format job records are moved into the queue, and
//! server-side copies whose ingest is gone are swept.

pub mod collections;
pub mod email;
pub mod events;
pub mod notify;
pub mod queue;
pub mod replication;
pub mod work;

use crate::bucket::ingest::{IngestJob, INCOMING_PREFIX};
use crate::search::indexer::IndexJob;
use crate::storage::{list_all, Store, StoreError, StoreResult};
use queue::{JobQueue, QueueResult};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// An `incoming/` copy this old whose job is gone was left by a crash: an inline ingest,
/// which has no job, copies and verifies a small file long before.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Delete the server-side copies `incoming/{task}` in `store` that were left behind (a
/// process killed between copy and clean-up): those whose task is not in `live` (the
/// pending ingest jobs) and that were last written more than [`STALE_AFTER`] before
/// `now`. Both conditions, because small files are copied inline, with no job record.
/// Returns how many were deleted.
pub async fn sweep_incoming<S: Store>(
    store: &S,
    live: &HashSet<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> StoreResult<usize> {
    let cutoff = now - chrono::Duration::seconds(STALE_AFTER.as_secs() as i64);
    let mut removed = 0;
    for key in list_all(store, INCOMING_PREFIX).await? {
        let Some(task) = key.strip_prefix(INCOMING_PREFIX) else {
            continue;
        };
        if live.contains(task) {
            continue;
        }
        match store.head(&key).await {
            Ok(m) if m.last_modified < cutoff => {
                store.delete(&key).await?;
                tracing::info!(%key, "removed a server-side copy whose ingest is gone");
                removed += 1;
            }
            Ok(_) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Once at start: remove the `incoming/` copies of every replica that no unfinished ingest
/// job owns and that are old (see [`sweep_incoming`]). Failures are logged; the next
/// start tries again.
pub async fn sweep_orphaned_copies<Q: JobQueue>(app: &work::Services, queue: &Q) {
    let unfinished = queue::JobFilter {
        kind: Some(work::INGEST.into()),
        states: vec![queue::JobState::Queued, queue::JobState::Running],
        key: None,
        limit: usize::MAX >> 1,
    };
    let jobs = match queue.list(&unfinished).await {
        Ok(jobs) => jobs,
        Err(e) => return tracing::warn!("incoming copies not swept: {e}"),
    };
    let live: HashSet<String> = jobs
        .iter()
        .filter_map(|j| match work::Work::from_job(j) {
            Ok(work::Work::Ingest(i)) => Some(i.task_id),
            _ => None,
        })
        .collect();
    for replica in app.replicas.iter() {
        match sweep_incoming(&replica.main, &live, chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(replica = %replica.name, copies = n, "removed orphaned incoming copies"),
            Err(e) => tracing::warn!(replica = %replica.name, "could not sweep incoming copies: {e}"),
        }
    }
}

/// Move the job records of earlier versions (one JSON file per job under
/// `{dir}/pending/` for ingests and `{dir}/index/pending/` for indexing) into `queue`,
/// removing each file only once its job is enqueued, and the temporary files those
/// versions left when they crashed mid-write. Unreadable records stay where they are,
/// logged. Returns how many were moved.
pub async fn import_legacy_records<Q: JobQueue>(dir: &Path, queue: &Q) -> QueueResult<usize> {
    let mut moved = 0;
    for (sub, kind) in [("pending", work::INGEST), ("index/pending", work::INDEX)] {
        let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for path in rd.filter_map(|e| e.ok()).map(|e| e.path()) {
            if path.extension().is_some_and(|x| x == "tmp") {
                // A record half-written when an earlier version crashed; nothing of this
                // version writes here, so it can only be such a leftover.
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), "could not remove a leftover temporary record: {e}");
                }
                continue;
            }
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let job = std::fs::read(&path).ok().and_then(|b| match kind {
                work::INGEST => serde_json::from_slice::<IngestJob>(&b)
                    .ok()
                    .map(|j| work::Work::Ingest(Box::new(j))),
                _ => serde_json::from_slice::<IndexJob>(&b).ok().map(work::Work::Index),
            });
            let Some(job) = job else {
                tracing::error!(path = %path.display(), "unreadable job record of an earlier version left in place");
                continue;
            };
            queue.enqueue(vec![job.to_job()]).await?;
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), "job record moved to the queue but not removed: {e}");
            }
            moved += 1;
        }
    }
    if moved > 0 {
        tracing::info!(jobs = moved, "moved job records of an earlier version into the queue");
    }
    Ok(moved)
}
