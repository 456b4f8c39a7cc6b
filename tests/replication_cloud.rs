//! Replication across clouds with the real binary: aws on moto (S3), gcp on
//! fake-gcs-server. A backend killed with SIGKILL in the middle of copying a large file
//! finishes the copy after its restart, byte for byte; drift injected into gcp (an
//! object deleted, another overwritten with wrong bytes of the same size) is reported by
//! `dss sync --dry-run` and repaired by `dss sync`; `dss sync status` reports the pair.

mod common;
use common::binary::{self, Server};
use common::emulators::{fake_gcs, moto, Emulator};
use dss::jobs::queue::{JobFilter, JobQueue, JobState};
use dss::model::checksum::checksums_of;
use dss::storage::{PutOptions, Store};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const V: &str = "2024-05-01T000000.000000Z";

fn configure(cmd: &mut Command, s3: &Emulator, gcs: &Emulator) {
    cmd.env("DSS_S3_BUCKET", "dss-main")
        .env("DSS_S3_CHECKOUT_BUCKET", "dss-checkout")
        .env("DSS_GS_BUCKET", "dss-gs-main")
        .env("DSS_GS_CHECKOUT_BUCKET", "dss-gs-checkout")
        .env("STORAGE_EMULATOR_HOST", &gcs.endpoint)
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env("DSS_STAGING_BUCKETS", "staging")
        // Short leases: a killed backend's job is taken over within seconds, and progress
        // is stored every second.
        .env("DSS_JOB_LEASE", "3");
    s3.aws_env(cmd);
}

fn start(data: &Path, s3: &Emulator, gcs: &Emulator) -> Server {
    binary::start_dss(data, |cmd| configure(cmd, s3, gcs))
}

/// `dss ARGS` with the server's settings; (exit success, stdout, stderr).
fn dss(data: &Path, s3: &Emulator, gcs: &Emulator, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dss"));
    cmd.args(args).env("DSS_DATA_DIR", data).env("RUST_LOG", "warn");
    configure(&mut cmd, s3, gcs);
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn queue(data: &Path) -> dss::jobs::queue::disk::DiskQueue {
    dss::jobs::queue::disk::DiskQueue::open(&data.join("jobs/queue.sqlite")).unwrap()
}

/// Stage `data` in S3 and `PUT /v1/files` it into aws; the file's uuid.
async fn put_file(http: &reqwest::Client, url: &str, token: &str, s3: &Emulator, name: &str, data: &[u8]) -> String {
    let c = checksums_of(data);
    let opts = PutOptions {
        if_absent: false,
        content_type: Some("application/octet-stream".into()),
        metadata: common::cloud::tags(&c),
        expiring: false,
    };
    let staging = common::cloud::s3_store(s3, "staging");
    let stream: dss::model::platform::ByteStream =
        Box::pin(futures::stream::iter(vec![Ok(bytes::Bytes::copy_from_slice(data))]));
    staging.put_stream(name, stream, opts).await.unwrap();
    let u = uuid::Uuid::new_v4().to_string();
    let r = http
        .put(format!("{url}/v1/files/{u}?version={V}"))
        .bearer_auth(token)
        .json(&json!({"source_url": format!("s3://staging/{name}"), "creator_uid": 0}))
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 201 | 202), "{}", r.text().await.unwrap());
    u
}

async fn wait_status(http: &reqwest::Client, url: &str, want: u16, secs: u64) {
    let t = Instant::now();
    loop {
        let s = http.head(url).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
        if s == want {
            return;
        }
        assert!(t.elapsed().as_secs() < secs, "HEAD {url}: {s} after {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_cloud_replication_survives_a_kill_and_sync_repairs_drift() {
    let (s3, gcs) = (moto(), fake_gcs());
    for b in ["dss-main", "dss-checkout", "staging"] {
        common::cloud::s3_store(&s3, b).create_bucket().await.unwrap();
    }
    for b in ["dss-gs-main", "dss-gs-checkout"] {
        common::cloud::gcs_store(&gcs, b).create_bucket().await.unwrap();
    }
    let gs = common::cloud::gcs_store(&gcs, "dss-gs-main");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = start(&data, &s3, &gcs);
    let (ok, token, err) = dss(
        &data,
        &s3,
        &gcs,
        &["token", "--email", "me@example.org", "--group", "hca"],
    );
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    let http = reqwest::Client::new();

    // A large file: the backend is killed while its copy to gcp streams.
    let big: Vec<u8> = (0..(192usize << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let big_blob = checksums_of(&big).blob_key();
    let bu = put_file(&http, &server.url, &token, &s3, "big.bin", &big).await;
    let file_key = format!("files/{bu}.{V}");
    let q = queue(&data).await;
    let t = Instant::now();
    loop {
        let jobs = q
            .list(&JobFilter {
                kind: Some("replicate".into()),
                key: Some(format!("aws>gcp/{file_key}")),
                states: vec![],
                limit: 1,
            })
            .await
            .unwrap();
        let done = jobs.first().and_then(|j| j.progress).map_or(0, |p| p.bytes_done);
        if done > 0 {
            assert!(jobs[0].state == JobState::Running, "{jobs:?}");
            break;
        }
        assert!(
            t.elapsed().as_secs() < 120,
            "the copy never reported progress: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    assert!(
        gs.head(&big_blob).await.is_err(),
        "the copy finished before the kill: the test must kill it mid-way (make the file larger)"
    );
    let server = start(&data, &s3, &gcs);
    // The dev issuer is the server's URL, whose port changed.
    let (ok, token, err) = dss(
        &data,
        &s3,
        &gcs,
        &["token", "--email", "me@example.org", "--group", "hca"],
    );
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    wait_status(
        &http,
        &format!("{}/v1/files/{bu}?replica=gcp&version={V}", server.url),
        200,
        120,
    )
    .await;
    let (_, _, mut stream) = gs.get_range(&big_blob, None).await.unwrap();
    let mut copied = Vec::with_capacity(big.len());
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        copied.extend_from_slice(&chunk.unwrap());
    }
    assert!(copied == big, "the copy in gcp is byte-identical");
    drop((copied, big));

    // Drift: with everything replicated, one object deleted in gcp and another
    // overwritten with wrong bytes of the same size.
    let (a, b) = (b"first small file".to_vec(), b"second small file".to_vec());
    let ua = put_file(&http, &server.url, &token, &s3, "a.txt", &a).await;
    let ub = put_file(&http, &server.url, &token, &s3, "b.txt", &b).await;
    for u in [&ua, &ub] {
        wait_status(
            &http,
            &format!("{}/v1/files/{u}?replica=gcp&version={V}", server.url),
            200,
            60,
        )
        .await;
    }
    let t = Instant::now();
    let status = loop {
        let (ok, out, err) = dss(&data, &s3, &gcs, &["sync", "status", "--json"]);
        assert!(ok, "{out}{err}");
        let s: serde_json::Value = serde_json::from_str(&out).unwrap();
        let pair = s["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["from"] == "aws")
            .unwrap()
            .clone();
        if pair["pending"] == 0 {
            break pair;
        }
        assert!(t.elapsed().as_secs() < 60, "{pair}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (status["to"].as_str(), status["failed"].as_u64()),
        (Some("gcp"), Some(0)),
        "{status}"
    );
    assert!(
        status["last_copied"]["key"].as_str().unwrap().starts_with("files/"),
        "{status}"
    );
    let (ok, table, _) = dss(&data, &s3, &gcs, &["sync", "status"]);
    assert!(ok && table.contains("aws -> gcp"), "{table}");

    let deleted = format!("files/{ua}.{V}");
    let b_blob = checksums_of(&b).blob_key();
    gs.delete(&deleted).await.unwrap();
    let wrong = vec![b'x'; b.len()];
    gs.put(&b_blob, wrong.clone().into(), PutOptions::overwrite())
        .await
        .unwrap();

    let (ok, out, err) = dss(&data, &s3, &gcs, &["sync", "--from", "aws", "--to", "gcp", "--dry-run"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("{deleted}  missing: would copy")), "{out}");
    assert!(out.contains(&format!("{b_blob}  differs")), "{out}");
    assert!(err.contains("1 missing, 1 different"), "{err}");
    assert!(gs.head(&deleted).await.is_err(), "a dry run changes nothing");
    assert_eq!(gs.get(&b_blob).await.unwrap()[..], wrong[..]);

    let (ok, out, err) = dss(&data, &s3, &gcs, &["sync", "--from", "aws", "--to", "gcp"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("{deleted}  missing: copied")), "{out}");
    assert!(err.contains("2 repaired, 0 failed"), "{err}");
    assert_eq!(
        gs.get(&deleted).await.unwrap(),
        common::cloud::s3_store(&s3, "dss-main").get(&deleted).await.unwrap()
    );
    assert_eq!(gs.get(&b_blob).await.unwrap()[..], b[..]);
    let (ok, _, err) = dss(&data, &s3, &gcs, &["sync", "--from", "aws", "--to", "gcp", "--dry-run"]);
    assert!(ok && err.contains("0 missing, 0 different"), "{err}");
    drop(server);
}
