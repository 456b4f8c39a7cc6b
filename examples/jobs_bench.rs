//! One process of the job-queue benchmark (`scripts/bench-jobs` runs it; see there).
//!
//! `jobs_bench QUEUE_URL JOBS PRODUCE_LATENCY` runs a runner of 8 workers with a handler
//! that does nothing but note when each job started, enqueues JOBS jobs in batches of 50,
//! waits until the queue holds no unfinished job, then, if PRODUCE_LATENCY is 1, enqueues
//! 200 single jobs 10 ms apart into idle workers. It prints one JSON line: jobs it ran,
//! seconds of the throughput phase, and the enqueue-to-start delays (ms) of the jobs of
//! the latency phase that it ran.

use dss::jobs::queue::runner::{self, Handler, Outcome, RunnerConfig};
use dss::jobs::queue::{AnyQueue, Job, JobFilter, JobQueue, JobState, NewJob, QueueLocation};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Note {
    ran: AtomicU64,
    delays_ms: Mutex<Vec<f64>>,
}

impl Handler for Note {
    async fn run(&self, job: &Job, _progress: std::sync::Arc<dss::model::ProgressCounter>) -> Outcome {
        self.ran.fetch_add(1, Ordering::Relaxed);
        if job.kind == "latency" {
            let sent: i64 = job.payload["sent_us"].as_i64().unwrap_or(0);
            let now = chrono::Utc::now().timestamp_micros();
            self.delays_ms.lock().unwrap().push((now - sent) as f64 / 1000.0);
        }
        Outcome::Done
    }
}

async fn unfinished(q: &AnyQueue) -> bool {
    let f = JobFilter {
        states: vec![JobState::Queued, JobState::Running],
        limit: 1,
        ..Default::default()
    };
    !q.list(&f).await.unwrap().is_empty()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (url, jobs, latency) = (&args[1], args[2].parse::<usize>().unwrap(), args[3] == "1");
    let at = QueueLocation::parse(Some(url), std::path::Path::new(".")).unwrap();
    let q = Arc::new(AnyQueue::open(&at).await.unwrap());
    let note = Arc::new(Note {
        ran: AtomicU64::new(0),
        delays_ms: Mutex::new(Vec::new()),
    });
    let mut cfg = RunnerConfig::new(8, Duration::from_secs(60));
    cfg.poll = Duration::from_millis(200);
    let _runner = runner::start(q.clone(), note.clone(), cfg);
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let start = Instant::now();
    let producers: Vec<_> = (0..jobs.div_ceil(50))
        .map(|b| {
            let (q, tag) = (q.clone(), tag.clone());
            let n = 50.min(jobs - b * 50);
            async move {
                let batch = (0..n)
                    .map(|i| NewJob::new("bench", format!("{tag}/{b}/{i}"), serde_json::json!({})))
                    .collect();
                q.enqueue(batch).await.unwrap();
            }
        })
        .collect();
    // Four producers at a time.
    futures::StreamExt::for_each_concurrent(futures::stream::iter(producers), 4, |p| p).await;
    while unfinished(&q).await {
        tokio::time::sleep(Duration::from_millis(50)).await; // a look costs the queue a scan
    }
    let secs = start.elapsed().as_secs_f64();
    if latency {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..200 {
            let sent = chrono::Utc::now().timestamp_micros();
            let job = NewJob::new("latency", format!("{tag}/l{i}"), serde_json::json!({ "sent_us": sent }));
            q.enqueue(vec![job]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Let the other processes finish theirs (and the latency jobs run) before reporting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    while unfinished(&q).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delays = note.delays_ms.lock().unwrap().clone();
    println!(
        "{}",
        serde_json::json!({"ran": note.ran.load(Ordering::Relaxed), "secs": secs, "delays_ms": delays})
    );
}
