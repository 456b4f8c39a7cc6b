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
}
