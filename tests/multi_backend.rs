//! Several backends, one queue: three `dss serve` processes share one PostgreSQL job
//! queue and one S3 bucket (moto). 300 files are ingested in the background (the async
//! threshold lowered to 0), spread over the three; one backend is killed with `kill -9`
//! half way. Then: every file answers HEAD 200 with its checksums on the survivors, no
//! job was lost or failed, nothing is half-visible (one blob per file, no extra
//! metadata), and the jobs the killed backend held were taken over by the others within
//! its lease.

mod common;

use common::binary::{start_dss, Server};
use common::cloud::{s3_store, tags};
use common::emulators::moto;
use dss::jobs::queue::pg::PgQueue;
use dss::jobs::queue::{Job, JobFilter, JobQueue, JobState};
use dss::storage::{list_all, PutOptions, Store};
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

const FILES: usize = 300;
const VERSION: &str = "2017-06-16T193604.240704Z";
const VICTIM_LEASE: Duration = Duration::from_secs(3);

/// `n` backends on the PostgreSQL queue `db` and the moto buckets `main` and `checkout`,
/// sharing one dev issuer (same key and public URL), search off; `configure` adds each
/// one's settings. Their data directories, and an uploader token (admin too) they accept.
fn backends(
    emu: &common::emulators::Emulator,
    db: &str,
    (main, checkout): (&str, &str),
    n: usize,
    configure: impl Fn(usize, &mut std::process::Command),
) -> (Vec<tempfile::TempDir>, Vec<Server>, String) {
    let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let dev = dss::server::dev_issuer_dir(dir.path());
            std::fs::create_dir_all(&dev).unwrap();
            std::fs::write(dev.join("key.pem"), common::test_key_pem()).unwrap();
            start_dss(dir.path(), |cmd| {
                cmd.env("DSS_S3_BUCKET", main)
                    .env("DSS_S3_CHECKOUT_BUCKET", checkout)
                    .env("DSS_PUBLIC_URL", "http://dss.test")
                    .env("DSS_JOBS_URL", db)
                    .env("DSS_SEARCH", "off")
                    .env("ADMIN_USER_EMAILS", "uploader@example.org");
                configure(i, cmd);
                emu.aws_env(cmd);
            })
        })
        .collect();
    let issuer =
        dss::auth::dev::DevIssuer::load_or_create(&dss::server::dev_issuer_dir(dirs[0].path()), "http://dss.test/")
            .unwrap();
    let token = issuer
        .mint(
            "uploader@example.org",
            Some("hca"),
            "https://dev.data.humancellatlas.org/",
            chrono::Duration::hours(1),
        )
        .unwrap();
    (dirs, servers, token)
}

async fn ingest_jobs(q: &PgQueue, states: &[JobState]) -> Vec<Job> {
    q.list(&JobFilter {
        kind: Some("ingest".into()),
        states: states.to_vec(),
        key: None,
        limit: 100_000,
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_backends_share_one_queue_and_survive_a_kill() {
    let emu = moto();
    for b in ["dss-mb-main", "dss-mb-checkout", "mb-staging"] {
        s3_store(&emu, b).create_bucket().await.unwrap();
    }
    // Stage the files with their checksum tags, as the hca CLI does.
    let staging = s3_store(&emu, "mb-staging");
    let files: Vec<(String, Vec<u8>, dss::model::Checksums)> = (0..FILES)
        .map(|i| {
            let mut data = vec![0u8; 64 * 1024 + i * 97];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut data);
            let c = dss::model::checksum::checksums_of(&data);
            (uuid::Uuid::new_v4().to_string(), data, c)
        })
        .collect();
    futures::stream::iter(&files)
        .for_each_concurrent(16, |(u, data, c)| {
            let staging = &staging;
            async move {
                let key = format!("{u}/data.bin");
                staging
                    .put(&key, bytes::Bytes::from(data.clone()), PutOptions::overwrite())
                    .await
                    .unwrap();
                staging.put_tags(&key, &tags(c)).await.unwrap();
            }
        })
        .await;

    // Three backends: one queue, one bucket, one dev issuer (same key and public URL).
    let db = common::postgres::fresh_database().await;
    let (_dirs, started, token) = backends(&emu, &db, ("dss-mb-main", "dss-mb-checkout"), 3, |i, cmd| {
        let lease = if i == 2 { VICTIM_LEASE } else { Duration::from_secs(60) };
        cmd.env("DSS_ASYNC_INGEST_THRESHOLD", "0")
            .env("DSS_JOB_WORKERS", "2")
            .env("DSS_JOB_LEASE", lease.as_secs().to_string());
    });
    let mut servers: Vec<Option<Server>> = started.into_iter().map(Some).collect();
    let urls: Vec<String> = servers.iter().map(|s| s.as_ref().unwrap().url.clone()).collect();
    let victim_pid = servers[2].as_ref().unwrap().child.id();
    let queue = PgQueue::connect(&db).await.unwrap();
    let http = reqwest::Client::new();

    // PUT every file, round robin, 12 at a time; after half, kill the third backend.
    let put = |url: String, i: usize| {
        let (http, token) = (http.clone(), token.clone());
        let (u, _, _) = &files[i];
        let body = serde_json::json!({
            "source_url": format!("s3://mb-staging/{u}/data.bin"),
            "creator_uid": 7,
        });
        let uri = format!("{url}/v1/files/{u}?version={VERSION}");
        async move {
            http.put(&uri)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    let mut answered = 0;
    let mut killed_at: Option<Instant> = None;
    let mut victim_held: Vec<i64> = Vec::new();
    let mut retry_on_first: Vec<usize> = Vec::new();
    let mut results = futures::stream::iter(0..FILES)
        .map(|i| {
            let url = urls[i % 3].clone();
            let p = put(url, i);
            async move { (i, p.await) }
        })
        .buffer_unordered(12);
    while let Some((i, r)) = results.next().await {
        match r {
            Ok(s) => assert!((200..=202).contains(&s), "PUT {i}: {s}"),
            Err(e) => {
                assert_eq!(i % 3, 2, "only the killed backend fails requests: {e}");
                retry_on_first.push(i);
            }
        }
        answered += 1;
        if answered == FILES / 2 {
            // The victim gets no chance to finish or hand back anything. What it held is
            // still marked running under its name until its lease runs out.
            assert_eq!(kill9(victim_pid), 0, "kill -9 the third backend");
            killed_at = Some(Instant::now());
            let running = ingest_jobs(&queue, &[JobState::Running]).await;
            assert!(
                killed_at.is_some_and(|t| t.elapsed() < VICTIM_LEASE),
                "listed within the lease"
            );
            let tag = format!(":{victim_pid}:");
            victim_held = running
                .iter()
                .filter(|j| j.worker.as_deref().is_some_and(|w| w.contains(&tag)))
                .map(|j| j.id)
                .collect();
        }
    }
    drop(results);
    if let Some(s) = servers[2].take() {
        drop(s); // reaps the killed process
    }
    for i in retry_on_first {
        let s = put(urls[0].clone(), i).await.unwrap();
        assert!((200..=202).contains(&s), "retried PUT {i}: {s}");
    }
    let killed_at = killed_at.expect("the victim was killed");
    assert!(
        !victim_held.is_empty(),
        "the killed backend held no job: nothing was taken over"
    );

    // Every ingest job completes; none fails; the victim's were taken over in time.
    let t = Instant::now();
    loop {
        let left = ingest_jobs(&queue, &[JobState::Queued, JobState::Running]).await;
        if left.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(240),
            "{} ingest jobs unfinished",
            left.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = ingest_jobs(&queue, &[]).await;
    let failed: Vec<&Job> = all.iter().filter(|j| j.state == JobState::Failed).collect();
    assert!(failed.is_empty(), "failed jobs: {failed:#?}");
    let keys: HashSet<&str> = all.iter().map(|j| j.key.as_str()).collect();
    assert_eq!(keys.len(), FILES, "one job (at least) per file, none lost");
    let victim_tag = format!(":{victim_pid}:");
    for id in &victim_held {
        let j = queue.get(*id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Completed, "{j:?}");
        assert!(j.attempts >= 2, "taken over after the kill: {j:?}");
        assert!(!j.worker.as_deref().unwrap_or("").contains(&victim_tag), "{j:?}");
    }
    // Taken over within the lease (plus the survivors' poll and the job's own run).
    let done_by = all
        .iter()
        .filter(|j| victim_held.contains(&j.id))
        .map(|j| j.updated_at)
        .max();
    if let Some(done) = done_by {
        let kill_wall = chrono::Utc::now() - chrono::Duration::from_std(killed_at.elapsed()).unwrap();
        let after = (done - kill_wall).to_std().unwrap_or_default();
        assert!(
            after < VICTIM_LEASE + Duration::from_secs(20),
            "the killed backend's jobs finished {after:?} after the kill (lease {VICTIM_LEASE:?})"
        );
    }
    eprintln!(
        "the killed backend held {} running jobs; all taken over",
        victim_held.len()
    );

    // Every file is visible on both survivors with its checksums; bytes download intact.
    let survivors = [&urls[0], &urls[1]];
    futures::stream::iter(files.iter().enumerate())
        .for_each_concurrent(12, |(i, (u, _, c))| {
            let http = http.clone();
            let url = survivors[i % 2].clone();
            async move {
                let r = http
                    .head(format!("{url}/v1/files/{u}?replica=aws&version={VERSION}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "HEAD {u}");
                let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
                assert_eq!(h("x-dss-sha256").as_deref(), Some(c.sha256.as_str()), "{u}");
                assert_eq!(h("x-dss-crc32c").as_deref(), Some(c.crc32c.as_str()), "{u}");
                assert_eq!(h("x-dss-s3-etag").as_deref(), Some(c.s3_etag.as_str()), "{u}");
            }
        })
        .await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (u, data, _) in files.iter().step_by(100) {
        let r = no_redirects
            .get(format!("{}/v1/files/{u}?replica=aws", urls[1]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let to = r.headers()["location"].to_str().unwrap().to_string();
        let got = http.get(&to).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(
            common::sha256_hex(&got),
            common::sha256_hex(data),
            "downloaded bytes of {u}"
        );
    }
    // Nothing half-visible: exactly one metadata document and one blob per file.
    let main = s3_store(&emu, "dss-mb-main");
    let metas = list_all(&main, "files/").await.unwrap();
    assert_eq!(metas.len(), FILES, "one files/ document per file");
    let blobs = list_all(&main, "blobs/").await.unwrap();
    assert_eq!(blobs.len(), FILES, "one blob per file");
    let blob_set: HashSet<String> = blobs.into_iter().collect();
    let by_uuid: BTreeMap<&str, &dss::model::Checksums> = files.iter().map(|(u, _, c)| (u.as_str(), c)).collect();
    for (u, c) in by_uuid {
        let key = format!("blobs/{}.{}.{}.{}", c.sha256, c.sha1, c.s3_etag, c.crc32c);
        assert!(blob_set.contains(&key), "blob of {u}");
    }
    drop(servers);
}

/// `kill -9`, without a shell.
fn kill9(pid: u32) -> i32 {
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map(|s| s.code().unwrap_or(-1))
        .unwrap_or(-1)
}

/// With a shared queue, each backend forgets what it listed of a uuid as soon as another
/// backend writes it: two backends keep listings for an hour, yet the latest file
/// version, the latest bundle version and a tombstone written on one are seen by the
/// other's next reads within a moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_backends_writes_are_seen_at_once() {
    let emu = moto();
    for b in ["dss-fw-main", "dss-fw-checkout", "fw-staging"] {
        s3_store(&emu, b).create_bucket().await.unwrap();
    }
    let data = b"{\"describedBy\": \"https://schema.example.org/x\"}".to_vec();
    let c = dss::model::checksum::checksums_of(&data);
    let staging = s3_store(&emu, "fw-staging");
    staging
        .put("f.json", bytes::Bytes::from(data), PutOptions::overwrite())
        .await
        .unwrap();
    staging.put_tags("f.json", &tags(&c)).await.unwrap();

    let db = common::postgres::fresh_database().await;
    let (_dirs, servers, token) = backends(&emu, &db, ("dss-fw-main", "dss-fw-checkout"), 2, |_, cmd| {
        cmd.env("DSS_BUCKET_FRESHNESS", "3600");
    });
    let (a, b) = (servers[0].url.clone(), servers[1].url.clone());
    let http = reqwest::Client::new();
    let file = uuid::Uuid::new_v4().to_string();
    let bundle = uuid::Uuid::new_v4().to_string();
    let (v1, v2) = ("2020-01-01T000000.000000Z", "2020-01-02T000000.000000Z");
    let put_file = |url: &str, v: &str| {
        http.put(format!("{url}/v1/files/{file}?version={v}"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"source_url": "s3://fw-staging/f.json", "creator_uid": 7}))
            .send()
    };
    let put_bundle = |url: &str, v: &str| {
        http.put(format!("{url}/v1/bundles/{bundle}?version={v}&replica=aws"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"creator_uid": 7, "files": [
                {"name": "f.json", "uuid": file, "version": v1, "indexed": true}]}))
            .send()
    };
    // What `a` answers for the latest file and bundle: (file version, bundle status, bundle version).
    let latest = || async {
        let f = http
            .head(format!("{a}/v1/files/{file}?replica=aws"))
            .send()
            .await
            .unwrap();
        assert_eq!(f.status(), 200);
        let fv = f.headers()["x-dss-version"].to_str().unwrap().to_string();
        let r = http
            .get(format!("{a}/v1/bundles/{bundle}?replica=aws"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        let bv = body["bundle"]["version"].as_str().unwrap_or("").to_string();
        (fv, status, bv)
    };
    // Seen within 5 s, where only the announcement can explain it (listings kept an hour).
    let within = |want: (String, u16, String)| {
        let latest = &latest;
        async move {
            let t = Instant::now();
            loop {
                let got = latest().await;
                if got == want {
                    return;
                }
                assert!(t.elapsed() < Duration::from_secs(5), "{got:?}, not {want:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    assert_eq!(put_file(&a, v1).await.unwrap().status(), 201);
    assert_eq!(put_bundle(&a, v1).await.unwrap().status(), 201);
    within((v1.into(), 200, v1.into())).await; // now kept by `a`

    assert_eq!(put_file(&b, v2).await.unwrap().status(), 201);
    assert_eq!(put_bundle(&b, v2).await.unwrap().status(), 201);
    within((v2.into(), 200, v2.into())).await;

    let delete = |query: String| {
        http.delete(format!("{b}/v1/bundles/{bundle}?replica=aws{query}"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"reason": "test"}))
            .send()
    };
    assert_eq!(delete(format!("&version={v2}")).await.unwrap().status(), 200);
    within((v2.into(), 200, v1.into())).await;
    assert_eq!(delete(String::new()).await.unwrap().status(), 200);
    within((v2.into(), 404, String::new())).await;

    // Search is off on these backends: said so, and not as something to retry.
    let r = http
        .post(format!("{a}/v1/search?replica=aws"))
        .json(&serde_json::json!({"es_query": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    assert!(r.headers().get("retry-after").is_none());
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["code"], "not_implemented", "{e}");
    assert!(e["title"].as_str().unwrap().contains("DSS_SEARCH=off"), "{e}");
    drop(servers);
}

/// Subscriptions live beside the shared queue: made on one backend, they are seen and
/// notified by another, once, and the delivery log reads the same on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_share_subscriptions_and_notify_once() {
    let emu = moto();
    for b in ["dss-sb-main", "dss-sb-checkout", "sb-staging"] {
        s3_store(&emu, b).create_bucket().await.unwrap();
    }
    let data = b"{\"kind\": \"x\"}".to_vec();
    let c = dss::model::checksum::checksums_of(&data);
    let staging = s3_store(&emu, "sb-staging");
    let json_type = PutOptions {
        content_type: Some("application/json".into()),
        ..PutOptions::overwrite()
    };
    staging
        .put("f.json", bytes::Bytes::from(data), json_type)
        .await
        .unwrap();
    staging.put_tags("f.json", &tags(&c)).await.unwrap();
    let recv = common::emulators::webhook_receiver("k");
    let db = common::postgres::fresh_database().await;
    let (_dirs, servers, token) = backends(&emu, &db, ("dss-sb-main", "dss-sb-checkout"), 2, |_, cmd| {
        cmd.env("DSS_NOTIFY_ALLOW_PRIVATE", "1");
    });
    let (a, b) = (servers[0].url.clone(), servers[1].url.clone());
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{a}/v1/subscriptions?replica=aws"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"callback_url": recv.url("/hook"), "jmespath_query": "files.f_json[0].kind", "hmac_secret_key": "k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sub = r.json::<serde_json::Value>().await.unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let seen = http
        .get(format!("{b}/v1/subscriptions/{sub}?replica=aws"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), 200, "the other backend sees it");

    let (file, bundle, v) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
        VERSION,
    );
    let r = http
        .put(format!("{b}/v1/files/{file}?version={v}"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"source_url": "s3://sb-staging/f.json", "creator_uid": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .put(format!("{b}/v1/bundles/{bundle}?version={v}&replica=aws"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"creator_uid": 7, "files": [
            {"name": "f.json", "uuid": file, "version": v, "indexed": false}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = tokio::task::block_in_place(|| recv.wait_for(Some("/hook"), 1, Duration::from_secs(30)));
    assert_eq!(got[0]["signature_ok"], true);
    assert_eq!(got[0]["payload"]["match"]["bundle_uuid"], bundle.as_str());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(recv.requests().len(), 1, "one notification, whichever backend matched");
    for url in [&a, &b] {
        let log: serde_json::Value = http
            .get(format!("{url}/v1/subscriptions/{sub}/deliveries?replica=aws"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(log["deliveries"][0]["outcome"], "delivered", "{log}");
    }
    // The event journal's index is beside the shared queue too: the bundle written on b
    // is one event, listed by both, its stream (a presigned S3 URL) and document the same.
    let event_id = format!("{bundle}.{v}");
    let t = std::time::Instant::now();
    let mut listings = Vec::new();
    for url in [&a, &b] {
        let streams = loop {
            let r: serde_json::Value = http
                .get(format!("{url}/v1/events?replica=aws&per_page=10"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if r["event_streams"].as_array().is_some_and(|s| !s.is_empty()) {
                break r["event_streams"].clone();
            }
            assert!(t.elapsed().as_secs() < 30, "no event listed by {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(streams.as_array().unwrap().len(), 1, "{streams}");
        assert_eq!(streams[0]["events"][0]["event_id"], event_id.as_str());
        let doc: serde_json::Value = http
            .get(format!("{url}/v1/events/{bundle}?replica=aws&version={v}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["files"]["f_json"], serde_json::json!([{"kind": "x"}]), "{doc}");
        let stream = http
            .get(streams[0]["stream_url"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&stream).unwrap(), doc);
        listings.push(streams[0]["events"].clone());
    }
    assert_eq!(listings[0], listings[1]);
    drop(servers);
}
