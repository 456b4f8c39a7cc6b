//! Replication between replicas through the API, on local replicas: every write reaches
//! every other replica in dependency order, tombstones follow, replication's own writes
//! are indexed where they land, and a bundle whose files cannot be brought is reported
//! as a failed job and never becomes visible.

mod common;
use common::*;
use dss::jobs::queue::JobState;
use serde_json::json;

const V3: &str = "2017-06-20T214506.766634Z";

/// A file and a bundle written to aws appear in gcp and in a third replica, byte for
/// byte; the search index of gcp finds the bundle; a tombstone follows; a bundle PUT into
/// gcp that names files written to aws waits for them and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_reaches_every_other_replica() {
    let env = Env::with(|c| {
        c.replicas = "aws,gcp,spare".into();
        c.bundle_file_wait = 20;
    });
    let data = br#"{"describedBy": "https://schema.example.org/x", "n": 7}"#;
    let f = env.file("cell.json", data).await;
    let b = uuid::Uuid::new_v4().to_string();
    assert_eq!(env.put_bundle(&b, V1, &[("cell.json", &f, V1)], None).await.status, 201);

    for replica in ["gcp", "spare"] {
        let h = env
            .eventually(
                "HEAD",
                &format!("/v1/files/{f}?replica={replica}&version={V1}"),
                200,
                30,
            )
            .await;
        assert_eq!(h.header("x-dss-sha256"), Some(sha256_hex(data).as_str()));
        // A cached metadata file is put in every replica's checkout bucket by its copy, as
        // at ingest (before any download could make it).
        let copy = env
            .data()
            .join(replica)
            .join("checkout")
            .join(dss::model::checksum::checksums_of(data).blob_key());
        let t = std::time::Instant::now();
        while !copy.exists() {
            assert!(
                t.elapsed().as_secs() < 30,
                "{replica}: no checkout copy of the cached file"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let g = env.get(&format!("/v1/files/{f}?replica={replica}")).await;
        assert_eq!(g.status, 302);
        assert_eq!(
            &env.get(&local_part(g.header("location").unwrap())).await.body[..],
            data
        );
        env.eventually("GET", &format!("/v1/bundles/{b}?replica={replica}"), 200, 30)
            .await;
        // The documents are the same bytes in every replica.
        for key in [format!("files/{f}.{V1}"), format!("bundles/{b}.{V1}")] {
            assert_eq!(
                std::fs::read(env.main_dir(replica).join(&key)).unwrap(),
                std::fs::read(env.main_dir("aws").join(&key)).unwrap(),
                "{key} in {replica}"
            );
        }
    }
    // Indexed where it landed, without being copied back.
    let q = json!({"es_query": {"query": {"match_all": {}}}}).to_string();
    let t = std::time::Instant::now();
    loop {
        let r = env.req("POST", "/v1/search?replica=gcp", None, &q, &[]).await;
        assert_eq!(r.status, 200);
        if r.json()["total_hits"] == 1 {
            break;
        }
        assert!(t.elapsed().as_secs() < 30, "not indexed in gcp: {}", r.json());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let copies = env.jobs_completed("replicate", 30).await;
    let mut keys: Vec<String> = copies.iter().map(|j| j.key.clone()).collect();
    keys.sort();
    let mut want = vec![
        format!("aws>gcp/bundles/{b}.{V1}"),
        format!("aws>gcp/files/{f}.{V1}"),
        format!("aws>spare/bundles/{b}.{V1}"),
        format!("aws>spare/files/{f}.{V1}"),
    ];
    want.sort();
    assert_eq!(keys, want, "one copy per write and replica, none back");

    // A tombstone follows.
    let del = env
        .req(
            "DELETE",
            &format!("/v1/bundles/{b}?replica=aws"),
            Some(&env.admin()),
            r#"{"reason": "retracted"}"#,
            &[],
        )
        .await;
    assert_eq!(del.status, 200, "{}", String::from_utf8_lossy(&del.body));
    for replica in ["gcp", "spare"] {
        env.eventually("GET", &format!("/v1/bundles/{b}?replica={replica}"), 404, 30)
            .await;
    }

    // A bundle PUT into gcp naming a file just written to aws waits for its copy.
    let f2 = env.file("late.txt", b"written to aws").await;
    let b2 = uuid::Uuid::new_v4().to_string();
    let r = env.put_bundle_in("gcp", &b2, V3, &[("late.txt", &f2, V1)], None).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    env.eventually("GET", &format!("/v1/bundles/{b2}?replica=aws"), 200, 30)
        .await;
}

/// A bundle whose file is gone from its source replica (deleted behind the store's back)
/// is reported as a failed replication that names the file, and is not visible in gcp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_whose_files_cannot_come_is_reported_not_half_visible() {
    let env = Env::new();
    let data = vec![5u8; 1000];
    let f = env.file("a.bin", &data).await;
    env.jobs_completed("replicate", 30).await;
    // Drift: the copy in gcp lost, and the bytes in aws lost too.
    let blob = dss::model::checksum::checksums_of(&data).blob_key();
    std::fs::remove_file(env.main_dir("gcp").join(format!("files/{f}.{V1}"))).unwrap();
    std::fs::remove_file(env.main_dir("gcp").join(&blob)).unwrap();
    std::fs::remove_file(env.main_dir("aws").join(&blob)).unwrap();
    let b = uuid::Uuid::new_v4().to_string();
    let r = env.put_bundle(&b, V1, &[("a.bin", &f, V1)], None).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let t = std::time::Instant::now();
    let failed = loop {
        let jobs = env.jobs("replicate").await;
        if let Some(j) = jobs
            .iter()
            .find(|j| j.key.contains("bundles/") && j.state == JobState::Failed)
        {
            break j.clone();
        }
        assert!(t.elapsed().as_secs() < 30, "{jobs:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let error = failed.error.unwrap_or_default();
    assert!(error.contains(&format!("files/{f}.{V1}")), "{error}");
    env.get(&format!("/v1/bundles/{b}?replica=gcp"))
        .await
        .expect_error(404, "not_found");

    // The lost bytes restored at the source, `dss sync` repairs gcp and runs the failed
    // copy again, which now completes: the status shows no failure left.
    std::fs::write(env.main_dir("aws").join(&blob), &data).unwrap();
    let args = dss::cli::sync::SyncArgs {
        cfg: env.cfg.clone(),
        action: None,
        from: Some("aws".into()),
        to: Some("gcp".into()),
        prefix: String::new(),
        dry_run: false,
        quick: false,
        json: false,
    };
    assert_eq!(dss::cli::sync::run(args).await, Ok(true));
    env.eventually("GET", &format!("/v1/bundles/{b}?replica=gcp"), 200, 30)
        .await;
    let again = env.jobs_completed("replicate", 30).await;
    assert!(
        again.iter().any(|j| j.id == failed.id),
        "the failed copy ran again and completed"
    );
}

/// With bundles waiting for the jobs of all their files (`DSS_REPLICATION_INLINE_MAX=0`,
/// as for files over 64 MiB): the bundle arrives once its files have, no file is copied by
/// two jobs, and a bundle whose file's copy failed fails with that file's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_wait_for_their_files_jobs_and_fail_with_them() {
    use dss::storage::{PutOptions, Store};
    let env = Env::with(|c| c.replication_inline_max = 0);
    let f1 = env.file("one.txt", b"first").await;
    let f2 = env.file("two.txt", b"second").await;
    let b = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        env.put_bundle(&b, V1, &[("one.txt", &f1, V1), ("two.txt", &f2, V1)], None)
            .await
            .status,
        201
    );
    env.eventually("GET", &format!("/v1/bundles/{b}?replica=gcp"), 200, 60)
        .await;
    let copies = env.jobs_completed("replicate", 60).await;
    for key in [format!("files/{f1}.{V1}"), format!("files/{f2}.{V1}")] {
        let n = copies.iter().filter(|j| j.key == format!("aws>gcp/{key}")).count();
        assert_eq!(n, 1, "{key} copied by {n} jobs");
    }

    // A file written behind the API (no job of its own) whose blob at the source has the
    // wrong size: the bundle queues its copy, which fails, and then fails with its reason.
    let aws = &env.app.replica("aws").unwrap().main;
    let f3 = uuid::Uuid::new_v4().to_string();
    let c = dss::model::checksum::checksums_of(b"declared bytes");
    aws.put(
        &c.blob_key(),
        bytes::Bytes::from_static(b"short"),
        PutOptions::if_absent(),
    )
    .await
    .unwrap();
    let meta = dss::model::manifest::FileMetadata::new(1, V1, "text/plain", 14, &c);
    aws.put(
        &format!("files/{f3}.{V1}"),
        meta.to_bytes().into(),
        PutOptions::if_absent(),
    )
    .await
    .unwrap();
    let b3 = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        env.put_bundle(&b3, V1, &[("three.txt", &f3, V1)], None).await.status,
        201
    );
    let t = std::time::Instant::now();
    let failed = loop {
        let jobs = env.jobs("replicate").await;
        if let Some(j) = jobs
            .iter()
            .find(|j| j.key == format!("aws>gcp/bundles/{b3}.{V1}") && j.state == JobState::Failed)
        {
            break j.clone();
        }
        assert!(t.elapsed().as_secs() < 60, "{jobs:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let error = failed.error.unwrap_or_default();
    assert!(
        error.contains(&format!("files/{f3}.{V1}")) && error.contains("bytes"),
        "{error}"
    );
    let file_jobs = env.jobs("replicate").await;
    let n = file_jobs
        .iter()
        .filter(|j| j.key == format!("aws>gcp/files/{f3}.{V1}"))
        .count();
    assert_eq!(n, 1, "the failed file is not copied again and again");
    env.get(&format!("/v1/bundles/{b3}?replica=gcp"))
        .await
        .expect_error(404, "not_found");
}
