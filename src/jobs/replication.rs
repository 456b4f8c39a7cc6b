//! What replication is doing, per source → destination pair, read from the job queue:
//! what `GET /internal/replication` and `dss sync status` report.

use super::queue::{AnyQueue, JobFilter, JobQueue, JobState, QueueError};
use super::work::REPLICATE;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Failed jobs reported per pair (the newest; `dss jobs list --kind replicate --state
/// failed` lists them all).
const FAILURES_SHOWN: usize = 20;

/// Replication between every ordered pair of replicas.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When this was read.
    pub at: DateTime<Utc>,
    /// One entry per ordered pair of configured replicas.
    pub pairs: Vec<Pair>,
}

/// Replication from one replica to another.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    /// Where writes are copied from.
    pub from: String,
    /// Where they are copied to.
    pub to: String,
    /// Copies waiting or running (waiting includes those retrying after an error).
    pub pending: u64,
    /// Of those, running now.
    pub running: u64,
    /// Copies that cannot succeed by waiting (kept; `dss sync` repairs, `dss jobs retry`
    /// tries again).
    pub failed: u64,
    /// Age in seconds of the oldest pending write: how far the destination lags.
    pub lag_seconds: f64,
    /// The last key copied, and when.
    pub last_copied: Option<Copied>,
    /// The newest failures, with their reasons.
    pub failures: Vec<Failure>,
}

/// A key copied.
#[derive(Debug, Clone, Serialize)]
pub struct Copied {
    /// The bucket key.
    pub key: String,
    /// When the copy completed.
    pub at: DateTime<Utc>,
}

/// A copy that failed for good.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Its job (for `dss jobs show` and `dss jobs retry`).
    pub job: i64,
    /// The bucket key.
    pub key: String,
    /// Why.
    pub error: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Read the status of replication between `replicas` from `queue`.
pub async fn status(queue: &AnyQueue, replicas: &[String]) -> Result<Status, QueueError> {
    let now = Utc::now();
    let tally = queue.tally(REPLICATE).await?;
    let failed = queue
        .list(&JobFilter {
            kind: Some(REPLICATE.into()),
            states: vec![JobState::Failed],
            key: None,
            limit: FAILURES_SHOWN * replicas.len().max(1) * replicas.len().max(1),
        })
        .await?;
    let mut pairs = Vec::new();
    for from in replicas {
        for to in replicas.iter().filter(|t| *t != from) {
            let group = format!("{from}>{to}");
            let rows = || tally.iter().filter(|t| t.group == group);
            let count = |s: JobState| rows().filter(|t| t.state == s).map(|t| t.count).sum::<u64>();
            let running = count(JobState::Running);
            let pending = count(JobState::Queued) + running;
            let oldest = rows()
                .filter(|t| matches!(t.state, JobState::Queued | JobState::Running))
                .map(|t| t.oldest)
                .min();
            let lag_seconds = oldest.map_or(0.0, |o| (now - o).num_milliseconds().max(0) as f64 / 1000.0);
            let last_copied = rows().find(|t| t.state == JobState::Completed).map(|t| Copied {
                key: strip_group(&t.latest_key).to_string(),
                at: t.latest,
            });
            let prefix = format!("{group}/");
            let failures = failed
                .iter()
                .filter(|j| j.key.starts_with(&prefix))
                .take(FAILURES_SHOWN)
                .map(|j| Failure {
                    job: j.id,
                    key: strip_group(&j.key).to_string(),
                    error: j.error.clone().unwrap_or_default(),
                    at: j.updated_at,
                })
                .collect();
            pairs.push(Pair {
                from: from.clone(),
                to: to.clone(),
                pending,
                running,
                failed: count(JobState::Failed),
                lag_seconds,
                last_copied,
                failures,
            });
        }
    }
    Ok(Status { at: now, pairs })
}

fn strip_group(key: &str) -> &str {
    key.split_once('/').map_or(key, |(_, k)| k)
}

/// `status` as a table for a terminal.
pub fn render(s: &Status) -> String {
    let mut out = format!(
        "{:<20} {:>8} {:>8} {:>7} {:>10}  LAST COPIED\n",
        "PAIR", "PENDING", "RUNNING", "FAILED", "LAG"
    );
    for p in &s.pairs {
        let last = p.last_copied.as_ref().map_or_else(
            || "-".to_string(),
            |c| format!("{} {}", c.at.format("%Y-%m-%dT%H:%M:%SZ"), c.key),
        );
        out.push_str(&format!(
            "{:<20} {:>8} {:>8} {:>7} {:>9.1}s  {last}\n",
            format!("{} -> {}", p.from, p.to),
            p.pending,
            p.running,
            p.failed,
            p.lag_seconds
        ));
        for f in &p.failures {
            out.push_str(&format!("    failed job {} {}: {}\n", f.job, f.key, f.error));
        }
    }
    out
}
