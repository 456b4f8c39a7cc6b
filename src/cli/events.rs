//! `dss events`: `replay`, the event journal of a running server as JSON lines, read the
//! way any consumer reads it (README, "The event journal"): `GET /v1/events` page by page,
//! then each stream's URL, cut at the listed offsets; nothing but HTTP, so it works
//! against any deployment. `record`, the events of bundles stored before the journal
//! existed (or written by the original): a record job queued for every stored version.

use crate::model::event::{parse_date, Stream};
use std::io::Write;

/// Arguments of `dss events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: EventsAction,
}

/// `dss events` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum EventsAction {
    /// Print the events recorded from `--from` (inclusive) to `--to` (exclusive), in the
    /// journal's order, one JSON document per line: `{"event_id", "timestamp",
    /// "document"}` (the document: the bundle's metadata document).
    Replay {
        /// Start: a DSS_VERSION, an RFC 3339 time or a date (its midnight UTC).
        #[arg(long)]
        from: String,
        /// End (exclusive), in the same forms. Default: the latest event.
        #[arg(long)]
        to: Option<String>,
        /// Replica whose journal is read.
        #[arg(long, default_value = "aws")]
        replica: String,
        /// Base URL of the server.
        #[arg(long, env = "DSS_PUBLIC_URL", default_value = "http://127.0.0.1:5000")]
        url: String,
    },
    /// Queue the recording of every bundle version stored in the replicas' buckets (for
    /// bundles written before the journal existed, or by the original): the server's
    /// workers record each as an event stamped with the time they do, skipping those
    /// recorded already and those a tombstone hides. Takes the settings of `dss serve`.
    Record(Box<RecordArgs>),
}

/// Arguments of `dss events record`.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Server settings (the same flags and environment as `dss serve`).
    #[command(flatten)]
    pub cfg: crate::server::ServeConfig,
    /// Replica whose bundles are recorded (`all`: every configured replica).
    #[arg(long, default_value = "all")]
    pub replica: String,
}

/// Longest wait for one response.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Run `dss events`.
pub async fn run(args: EventsArgs) -> Result<(), String> {
    match args.action {
        EventsAction::Replay { from, to, replica, url } => replay(from, to, replica, url).await,
        EventsAction::Record(args) => record(*args).await,
    }
}

/// `dss events record`: a record job per stored bundle version, queued 1000 at a time.
async fn record(args: RecordArgs) -> Result<(), String> {
    use crate::jobs::events::RecordJob;
    use crate::jobs::queue::JobQueue;
    use crate::jobs::work::Work;
    let cfg = args.cfg.finish();
    // No job runner here: the server's workers run what is queued.
    let (app, queue) = crate::server::assemble(&cfg).map_err(|e| e.to_string())?;
    let replicas: Vec<&str> = match args.replica.as_str() {
        "all" => app.replicas.names(),
        one => vec![one],
    };
    for name in replicas {
        let replica = app.replica(name).map_err(|e| e.to_string())?;
        let bucket = app.bucket(replica);
        let mut token: Option<String> = None;
        let mut queued = 0usize;
        loop {
            let (versions, next) = bucket
                .bundle_versions(token.as_deref())
                .await
                .map_err(|e| format!("{name}: listing bundles: {e}"))?;
            let jobs: Vec<_> = versions
                .iter()
                .map(|(uuid, version)| {
                    Work::Record(RecordJob {
                        replica: name.to_string(),
                        key: crate::bucket::keys::bundle_key(uuid, version),
                    })
                    .to_job()
                })
                .collect();
            queued += jobs.len();
            if !jobs.is_empty() {
                queue.enqueue(jobs).await.map_err(|e| e.to_string())?;
            }
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        println!("{name}: {queued} bundle versions queued for recording");
    }
    Ok(())
}

/// `dss events replay`.
async fn replay(from: String, to: Option<String>, replica: String, url: String) -> Result<(), String> {
    for (name, d) in [("--from", Some(&from)), ("--to", to.as_ref())] {
        if d.is_some_and(|d| parse_date(d).is_none()) {
            return Err(format!("{name}: not a DSS_VERSION, an RFC 3339 time or a date"));
        }
    }
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let mut next =
        url::Url::parse(&format!("{}/v1/events", url.trim_end_matches('/'))).map_err(|e| format!("--url: {e}"))?;
    {
        let mut q = next.query_pairs_mut();
        q.append_pair("replica", &replica)
            .append_pair("from_date", &from)
            .append_pair("per_page", "10");
        if let Some(to) = &to {
            q.append_pair("to_date", to);
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        let r = http
            .get(next.clone())
            .send()
            .await
            .map_err(|e| format!("GET /v1/events: {e}"))?;
        let status = r.status();
        let link = r
            .headers()
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body: serde_json::Value = r.json().await.map_err(|e| format!("GET /v1/events: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET /v1/events: {status}: {}", body["title"]));
        }
        let streams = body["event_streams"].as_array().cloned().unwrap_or_default();
        for s in streams {
            let stream_url = s["stream_url"].as_str().unwrap_or_default().to_string();
            let s: Stream = serde_json::from_value(s).map_err(|e| format!("a stream of an unknown shape: {e}"))?;
            let bytes = http
                .get(&stream_url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| format!("journal {}: {e}", s.journal_id))?
                .bytes()
                .await
                .map_err(|e| format!("journal {}: {e}", s.journal_id))?;
            for e in &s.events {
                let slice = usize::try_from(e.offset)
                    .ok()
                    .zip(usize::try_from(e.offset + e.size).ok())
                    .and_then(|(a, b)| bytes.get(a..b))
                    .ok_or_else(|| format!("journal {} is shorter than its listing", s.journal_id))?;
                let doc: serde_json::Value =
                    serde_json::from_slice(slice).map_err(|err| format!("event {} is not JSON: {err}", e.event_id))?;
                let line = serde_json::json!({"event_id": e.event_id, "timestamp": e.timestamp, "document": doc});
                writeln!(out, "{line}").map_err(|e| e.to_string())?;
            }
        }
        out.flush().map_err(|e| e.to_string())?;
        match link.as_deref().and_then(next_link) {
            Some(u) if status.as_u16() == 206 => next = url::Url::parse(&u).map_err(|e| format!("Link: {e}"))?,
            _ => return Ok(()),
        }
    }
}

/// The URL of a `Link: <url>; rel='next'` header.
pub fn next_link(link: &str) -> Option<String> {
    let rest = link.trim().strip_prefix('<')?;
    let (url, params) = rest.split_once('>')?;
    params.contains("next").then(|| url.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_next_link_is_read() {
        assert_eq!(
            super::next_link("<http://h/v1/events?token=a~b>; rel='next'").as_deref(),
            Some("http://h/v1/events?token=a~b")
        );
        assert_eq!(super::next_link("nonsense"), None);
    }
}
