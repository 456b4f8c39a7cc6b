//! Large files: 202 and a durable background ingest, visible only when done,
//! resumed after a restart, failures reported on HEAD.

mod common;
use common::*;
use std::time::Duration;

const BIG: usize = 64 * 1024 * 1024 + 1;

fn big_data() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

async fn wait_for_head(env: &Env, uuid: &str, version: &str) -> Resp {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let h = env
            .head(&format!("/v1/files/{uuid}?replica=aws&version={version}"))
            .await;
        if h.status != 404 || std::time::Instant::now() > deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_is_ingested_in_the_background() {
    let env = Env::new();
    let data = big_data();
    let src = env.stage("big.bin", &data);
    let u = uuid::Uuid::new_v4().to_string();
    let r = env.put_file(&u, V1, &src, None).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["version"], V1);
    assert!(j["task_id"].as_str().is_some_and(|t| !t.is_empty()));
    // HEAD answers 404 until the job is done (the hca CLI polls for that), then 200.
    let h = wait_for_head(&env, &u, V1).await;
    assert_eq!(h.status, 200);
    let c = dss::model::checksum::checksums_of(&data);
    assert_eq!(h.header("x-dss-sha256"), Some(c.sha256.as_str()));
    assert!(c.s3_etag.ends_with("-2"), "a two-part file has a multipart ETag");
    assert_eq!(h.header("x-dss-s3-etag"), Some(c.s3_etag.as_str()));
    let d = env.download(&format!("/v1/files/{u}?replica=aws")).await;
    assert_eq!(sha256_hex(&d.body), c.sha256);
    // The job is recorded as completed, once.
    let jobs = env.jobs_completed("ingest", 10).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].key, format!("aws/{u}.{V1}"));
    assert_eq!(jobs[0].attempts, 1);
    let size = data.len() as u64;
    assert_eq!(
        jobs[0].progress,
        Some(dss::model::Progress {
            items_done: 1,
            items_total: 1,
            bytes_done: size,
            bytes_total: size
        }),
        "every byte copied was counted"
    );
    // The same PUT again: the file exists, so the job ends at once with the same result.
    assert_eq!(env.put_file(&u, V1, &src, None).await.status, 202);
    assert_eq!(wait_for_head(&env, &u, V1).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_background_ingest_is_reported() {
    let env = Env::new();
    let data = big_data();
    let src = env.stage("big.bin", &data);
    // Declared checksums that do not match the bytes.
    let key = src.rsplit_once("/staging/").unwrap().1.to_string();
    let c = dss::model::checksum::checksums_of(b"something else");
    let path = env.cfg.staging_dir.join(".dss-meta").join(format!("{key}.json"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let md = serde_json::json!({"metadata": {"hca-dss-sha256": c.sha256, "hca-dss-sha1": c.sha1, "hca-dss-s3_etag": c.s3_etag, "hca-dss-crc32c": c.crc32c}});
    std::fs::write(path, md.to_string()).unwrap();
    let u = uuid::Uuid::new_v4().to_string();
    assert_eq!(env.put_file(&u, V1, &src, None).await.status, 202);
    let h = wait_for_head(&env, &u, V1).await;
    assert_eq!(h.status, 422);
    let g = env.get(&format!("/v1/files/{u}?replica=aws&version={V1}")).await;
    g.expect_error(422, "checksum_mismatch");
    // Nothing was published and no bad blob is left.
    assert!(!env.main_dir("aws").join(format!("files/{u}.{V1}")).exists());
    assert!(!env.main_dir("aws").join(c.blob_key()).exists());
    // The failure belongs to that replica only, and nothing was copied to another.
    env.get(&format!("/v1/files/{u}?replica=gcp&version={V1}"))
        .await
        .expect_error(404, "not_found");
    assert!(env.jobs("replicate").await.is_empty());
    // Fixed and submitted again: the old failure is forgotten (404 while it runs), then 200.
    let good = dss::model::checksum::checksums_of(&data);
    let md = serde_json::json!({"metadata": {"hca-dss-sha256": good.sha256, "hca-dss-sha1": good.sha1, "hca-dss-s3_etag": good.s3_etag, "hca-dss-crc32c": good.crc32c}});
    std::fs::write(
        env.cfg.staging_dir.join(".dss-meta").join(format!("{key}.json")),
        md.to_string(),
    )
    .unwrap();
    assert_eq!(env.put_file(&u, V1, &src, None).await.status, 202);
    assert_eq!(wait_for_head(&env, &u, V1).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_jobs_resume_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A job recorded by a server of an earlier version that stopped before running it.
    let data = big_data();
    let staging = dir.path().join("staging/abc");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("big.bin"), &data).unwrap();
    let u = uuid::Uuid::new_v4().to_string();
    let job = dss::bucket::ingest::IngestJob {
        task_id: "t-1".into(),
        source: dss::bucket::ingest::SourceUrl {
            scheme: "file".into(),
            bucket: String::new(),
            key: "abc/big.bin".into(),
        },
        replica: "aws".into(),
        uuid: u.clone(),
        version: V1.into(),
        creator_uid: 7,
        expected: None,
        size: data.len() as u64,
        content_type: "application/octet-stream".into(),
    };
    std::fs::create_dir_all(dir.path().join("jobs/pending")).unwrap();
    std::fs::write(
        dir.path().join("jobs/pending/t-1.json"),
        serde_json::to_vec(&job).unwrap(),
    )
    .unwrap();
    // Starting the server resumes it.
    let env = Env::in_dir(dir, |_| {});
    let h = wait_for_head(&env, &u, V1).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("x-dss-creator-uid"), Some("7"));
    // The record of the earlier version moved into the queue, where the job completed.
    assert!(
        !env.data().join("jobs/pending/t-1.json").exists(),
        "the old record is gone"
    );
    let jobs = env.jobs_completed("ingest", 10).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].payload["task_id"], "t-1");
}
