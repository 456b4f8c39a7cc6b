//! `dss jobs`: look into the job queue and retry failed jobs.

use crate::jobs::queue::{AnyQueue, Job, JobFilter, JobId, JobQueue, JobState, QueueLocation};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `dss jobs`.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// The job queue (as `dss serve`): `postgres://…`, or a path. Unset: the embedded
    /// queue of the data directory.
    #[arg(long, env = "DSS_JOBS_URL", global = true)]
    pub jobs_url: Option<String>,
    /// Data directory of the server.
    #[arg(long, env = "DSS_DATA_DIR", default_value = "./dss-data", global = true)]
    pub data_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub action: JobsAction,
}

/// `dss jobs` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum JobsAction {
    /// List jobs, newest first.
    List {
        /// Only this kind (`ingest`, `index`).
        #[arg(long)]
        kind: Option<String>,
        /// Only this state (repeatable).
        #[arg(long, value_parser = ["queued", "running", "completed", "failed"])]
        state: Vec<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON document per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one job as JSON.
    Show {
        /// Job id.
        id: JobId,
    },
    /// Queue a failed job again.
    Retry {
        /// Job id.
        id: JobId,
    },
}

/// Run `dss jobs`.
pub async fn run(args: JobsArgs) -> Result<(), String> {
    let at = QueueLocation::parse(args.jobs_url.as_deref(), &args.data_dir).map_err(|e| e.to_string())?;
    if let QueueLocation::Disk(path) = &at {
        if !path.exists() {
            let shown = path.display();
            return Err(format!(
                "no job queue at {shown} (is --data-dir or DSS_JOBS_URL right?)"
            ));
        }
    }
    let queue = AnyQueue::open(&at).await.map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    match args.action {
        JobsAction::List {
            kind,
            state,
            limit,
            json,
        } => {
            let states = state
                .iter()
                .map(|s| s.parse::<JobState>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let jobs = queue
                .list(&JobFilter {
                    kind,
                    states,
                    key: None,
                    limit,
                })
                .await
                .map_err(|e| e.to_string())?;
            if json {
                for j in &jobs {
                    let _ = writeln!(out, "{}", serde_json::to_string(j).unwrap_or_default());
                }
            } else {
                let _ = writeln!(
                    out,
                    "{:>8}  {:<9}  {:<7}  {:>3}  {:<20}  {:<14}  {:<40}  ERROR",
                    "ID", "STATE", "KIND", "TRY", "UPDATED", "DONE", "KEY"
                );
                for j in &jobs {
                    let _ = writeln!(out, "{}", row(j));
                }
            }
        }
        JobsAction::Show { id } => {
            let job = queue
                .get(id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no job {id}"))?;
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&job).unwrap_or_default());
        }
        JobsAction::Retry { id } => {
            if !queue.retry(id).await.map_err(|e| e.to_string())? {
                return Err(format!("job {id} is not failed (or does not exist): nothing to retry"));
            }
            let _ = writeln!(out, "job {id} queued again");
        }
    }
    Ok(())
}

fn row(j: &Job) -> String {
    let error: String = j
        .error
        .as_deref()
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(80)
        .collect();
    format!(
        "{:>8}  {:<9}  {:<7}  {:>3}  {:<20}  {:<14}  {:<40}  {}",
        j.id,
        j.state.as_str(),
        j.kind,
        j.attempts,
        j.updated_at.format("%Y-%m-%dT%H:%M:%SZ"),
        j.progress.map(done).unwrap_or_default(),
        j.key,
        error
    )
}

/// Items done of their total, and the share of bytes: `3/10 42%`.
fn done(p: crate::model::Progress) -> String {
    let items = match p.items_total {
        0 => p.items_done.to_string(),
        n => format!("{}/{n}", p.items_done),
    };
    match p.bytes_total {
        0 => items,
        n => format!("{items} {}%", p.bytes_done.saturating_mul(100) / n),
    }
}
