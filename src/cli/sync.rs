//! `dss sync`: see what replication is doing (`dss sync status`), and compare two
//! replicas and repair the destination (`dss sync --from aws --to gcp`).

use crate::bucket::sync::{sync, Drift, SyncOptions, SyncProgress};
use crate::server::{self, ServeConfig};
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `dss sync`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SyncArgs {
    /// Server settings (the same flags and environment as `dss serve`).
    #[command(flatten)]
    pub cfg: ServeConfig,
    /// `status`: what replication is doing, per replica pair.
    #[command(subcommand)]
    pub action: Option<SyncAction>,
    /// The replica whose keys are copied.
    #[arg(long)]
    pub from: Option<String>,
    /// The replica that is repaired.
    #[arg(long)]
    pub to: Option<String>,
    /// Only keys starting with this (`bundles/`, `files/0b`, `blobs/`).
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Report what differs; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Compare blobs by size only (without reading the destination's bytes).
    #[arg(long)]
    pub quick: bool,
    /// Print the status as JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `dss sync` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SyncAction {
    /// Per source → destination pair: copies pending and failed (with reasons), the lag,
    /// and the last key copied.
    Status,
}

/// Run `dss sync`; `Ok(false)` when something could not be repaired (exit status 1).
pub async fn run(args: SyncArgs) -> Result<bool, String> {
    let mut cfg = args.cfg.finish();
    // No index is opened here: the writes' index jobs go to the queue, for the server.
    cfg.search = "off".into();
    let (app, queue) = server::assemble(&cfg).map_err(|e| e.to_string())?;
    let names: Vec<String> = app.replicas.names().into_iter().map(String::from).collect();
    if let Some(SyncAction::Status) = args.action {
        let status = crate::jobs::replication::status(&queue, &names)
            .await
            .map_err(|e| e.to_string())?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?);
        } else {
            print!("{}", crate::jobs::replication::render(&status));
        }
        return Ok(status.pairs.iter().all(|p| p.failed == 0));
    }
    let (Some(from), Some(to)) = (args.from.as_deref(), args.to.as_deref()) else {
        return Err("name the replicas: dss sync --from A --to B (or dss sync status)".into());
    };
    if from == to {
        return Err("--from and --to name the same replica".into());
    }
    let (src, dst) = (
        app.replica(from).map_err(|e| e.to_string())?,
        app.replica(to).map_err(|e| e.to_string())?,
    );
    let opts = SyncOptions {
        prefix: args.prefix.clone(),
        dry_run: args.dry_run,
        quick: args.quick,
    };
    let progress = Arc::new(SyncProgress::default());
    let ticker = tokio::spawn(show_progress(progress.clone()));
    let started = Instant::now();
    let verb = if args.dry_run { "would copy" } else { "copied" };
    let mut report = |key: &str, drift: &Drift, done: Option<&Result<(), String>>| {
        let what = match drift {
            Drift::Missing => "missing".to_string(),
            Drift::Different(why) => format!("differs ({why})"),
            Drift::Extra => format!("only in {to} (left alone)"),
        };
        let outcome = match (drift, done) {
            (Drift::Extra, _) => String::new(),
            (_, None) if args.dry_run => format!(": {verb}"),
            (_, None) => String::new(),
            (_, Some(Ok(()))) => format!(": {verb}"),
            (_, Some(Err(e))) => format!(": NOT REPAIRED: {e}"),
        };
        println!("{key}  {what}{outcome}");
    };
    let bucket = |r| app.bucket(r);
    let result = sync(&bucket(src), &bucket(dst), &opts, &progress, &mut report).await;
    ticker.abort();
    let s = result.map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{from} -> {to}: {} keys compared in {secs:.1} s; {} missing, {} different, {} only in {to}; {} {}, {} failed ({:.1} MB of blobs)",
        s.compared,
        s.missing,
        s.different,
        s.extra,
        if args.dry_run { 0 } else { s.repaired },
        if args.dry_run { "repaired (dry run)" } else { "repaired" },
        s.failed.len(),
        progress.bytes.load(Ordering::Relaxed) as f64 / 1e6,
    );
    if !args.dry_run && s.failed.is_empty() {
        let n = retry_failed_copies(&queue, from, to, &args.prefix).await?;
        if n > 0 {
            eprintln!("{n} failed copies {from} -> {to} queued again (they complete now that their keys are in place)");
        }
    }
    Ok(s.failed.is_empty())
}

/// After a repair, the failed replication jobs of the pair (under `prefix`) run again:
/// those whose keys the repair put in place complete, so the status shows what is still
/// wrong, not what was. How many were queued.
async fn retry_failed_copies(
    queue: &crate::jobs::queue::AnyQueue,
    from: &str,
    to: &str,
    prefix: &str,
) -> Result<usize, String> {
    use crate::jobs::queue::{JobFilter, JobQueue, JobState};
    let failed = queue
        .list(&JobFilter {
            kind: Some(crate::jobs::work::REPLICATE.into()),
            states: vec![JobState::Failed],
            key: None,
            limit: 100_000,
        })
        .await
        .map_err(|e| e.to_string())?;
    let pair = format!("{from}>{to}/{prefix}");
    let mut n = 0;
    for job in failed.iter().filter(|j| j.key.starts_with(&pair)) {
        if queue.retry(job.id).await.map_err(|e| e.to_string())? {
            n += 1;
        }
    }
    Ok(n)
}

/// A progress line on stderr: redrawn on a terminal, every ten seconds otherwise.
async fn show_progress(p: Arc<SyncProgress>) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(10)
    };
    loop {
        tokio::time::sleep(every).await;
        let line = format!(
            "compared {} keys, {} drifted, {} repaired, {:.1} MB copied",
            p.compared.load(Ordering::Relaxed),
            p.drifted.load(Ordering::Relaxed),
            p.repaired.load(Ordering::Relaxed),
            p.bytes.load(Ordering::Relaxed) as f64 / 1e6
        );
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
}
