//! The job queue: the conformance suite on the disk queue and on PostgreSQL, two
//! processes' worth of connections on one disk queue, and the `dss jobs` command.

mod common;

use dss::jobs::queue::disk::DiskQueue;
use dss::jobs::queue::pg::PgQueue;
use dss::jobs::queue::{conformance, JobQueue, NewJob};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_queue_passes_the_conformance_suite() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().to_path_buf();
    conformance::run_all(|| {
        let file = path.join(format!("{}.sqlite", uuid::Uuid::new_v4().simple()));
        async move { DiskQueue::open(&file).unwrap() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_queue_passes_the_conformance_suite() {
    conformance::run_all(|| async {
        let url = common::postgres::fresh_database().await;
        PgQueue::connect(&url).await.unwrap()
    })
    .await;
}

/// Leases from several handles at once (as from several processes): every job once.
async fn shared_leasing<Q: JobQueue>(handles: Vec<Arc<Q>>) {
    let n = 300;
    handles[0]
        .enqueue(
            (0..n)
                .map(|i| NewJob::new("a", format!("k{i}"), serde_json::json!(i)))
                .collect(),
        )
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (h, q) in handles.iter().enumerate() {
        for w in 0..3 {
            let (q, seen) = (q.clone(), seen.clone());
            let me = format!("p{h}w{w}");
            tasks.push(tokio::spawn(async move {
                loop {
                    let got = q.lease(&me, 4, Duration::from_secs(60)).await.unwrap();
                    if got.is_empty() {
                        return;
                    }
                    for j in got {
                        assert!(q.complete(j.id, &me).await.unwrap());
                        seen.lock().unwrap().push(j.id);
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), n, "every job leased once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), n, "no job leased twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_disk_queues_on_one_file_never_share_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queue.sqlite");
    let a = Arc::new(DiskQueue::open(&file).unwrap());
    let b = Arc::new(DiskQueue::open(&file).unwrap());
    shared_leasing(vec![a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_postgres_backends_never_share_a_job() {
    let url = common::postgres::fresh_database().await;
    let mut handles = Vec::new();
    for _ in 0..3 {
        handles.push(Arc::new(PgQueue::connect(&url).await.unwrap()));
    }
    shared_leasing(handles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_schema_migrates_once_for_many_backends() {
    // Backends starting at once all migrate; the migrator's lock makes that one migration.
    let url = common::postgres::fresh_database().await;
    let connects = (0..4).map(|_| PgQueue::connect(&url));
    for q in futures::future::join_all(connects).await {
        q.unwrap();
    }
}

fn dss(args: &[&str], data: &std::path::Path) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dss"))
        .args(args)
        .env("DSS_DATA_DIR", data)
        .env_remove("DSS_JOBS_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dss_jobs_lists_shows_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = dss(&["jobs", "list"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("no job queue"), "{err}");

    let file = dir.path().join("jobs/queue.sqlite");
    let q = DiskQueue::open(&file).unwrap();
    let ids = q
        .enqueue(vec![
            NewJob::new("ingest", "aws/u.v", serde_json::json!({"n": 1})),
            NewJob::new("index", "aws/bundles/b.v", serde_json::json!({"n": 2})),
        ])
        .await
        .unwrap();
    let leased = q.lease("w", 1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(leased[0].id, ids[0]);
    let progress = dss::model::Progress {
        items_done: 3,
        items_total: 10,
        bytes_done: 420,
        bytes_total: 1000,
    };
    assert!(q.report(ids[0], "w", &progress).await.unwrap());
    q.fail(ids[0], "w", "checksum mismatch\nin detail", None).await.unwrap();

    let (code, out, err) = dss(&["jobs", "list"], dir.path());
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].contains("queued") && lines[1].contains("aws/bundles/b.v"),
        "{out}"
    );
    assert!(
        lines[2].contains("failed") && lines[2].contains("checksum mismatch in detail"),
        "{out}"
    );
    assert!(lines[2].contains(" 3/10 42% "), "items and bytes done: {out}");

    let (code, out, _) = dss(&["jobs", "list", "--state", "failed", "--json"], dir.path());
    assert_eq!(code, 0);
    let jobs: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["id"], ids[0]);
    assert_eq!(jobs[0]["kind"], "ingest");

    let (code, out, _) = dss(&["jobs", "list", "--kind", "index", "--json"], dir.path());
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1);

    let (code, out, _) = dss(&["jobs", "show", &ids[0].to_string()], dir.path());
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["state"], "failed");
    assert_eq!(shown["attempts"], 1);
    assert_eq!(shown["payload"], serde_json::json!({"n": 1}));
    assert_eq!(
        shown["progress"],
        serde_json::json!({"items_done": 3, "items_total": 10, "bytes_done": 420, "bytes_total": 1000})
    );

    let (code, _, err) = dss(&["jobs", "retry", &ids[1].to_string()], dir.path());
    assert_eq!(code, 1, "a queued job cannot be retried");
    assert!(err.contains("not failed"), "{err}");
    let (code, out, _) = dss(&["jobs", "retry", &ids[0].to_string()], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains("queued again"));
    assert_eq!(
        q.get(ids[0]).await.unwrap().unwrap().state,
        dss::jobs::queue::JobState::Queued
    );
    let (code, _, err) = dss(&["jobs", "show", "999999"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("no job 999999"), "{err}");
}
