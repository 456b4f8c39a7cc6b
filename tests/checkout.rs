//! Bundle checkout through the API, on local replicas: RUNNING → SUCCEEDED with every
//! file at `bundles/{uuid}.{version}/{name}`, a user's bucket as destination, FAILED with
//! a cause for a destination that does not exist or cannot be written, the original's
//! errors, and the email that says how it ended (to a local SMTP sink).

mod common;
use common::emulators::smtp_sink;
use common::*;
use serde_json::Value;

async fn start(env: &Env, bundle: &str, body: &str) -> String {
    let r = env
        .req(
            "POST",
            &format!("/v1/bundles/{bundle}/checkout?replica=aws"),
            None,
            body,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["checkout_job_id"].as_str().unwrap().to_string()
}

/// Poll the checkout's status until it is not RUNNING.
async fn ended(env: &Env, id: &str) -> Value {
    let t = std::time::Instant::now();
    loop {
        let r = env.get(&format!("/v1/bundles/checkout/{id}?replica=aws")).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let s = r.json();
        if s["status"] != "RUNNING" {
            return s;
        }
        assert!(t.elapsed().as_secs() < 30, "still running: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_is_checked_out_where_asked_and_its_end_is_mailed() {
    let smtp = smtp_sink();
    let env = Env::with(|c| {
        c.notification_sender = Some("DSS <dss@example.org>".into());
        c.smtp_url = Some(smtp.endpoint.clone());
    });
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.json", br#"{"a": 1}"#.to_vec()),
        ("reads.fastq", vec![b'G'; 100_000]),
        ("empty.txt", Vec::new()),
    ];
    let mut refs = Vec::new();
    for (name, data) in &files {
        refs.push((*name, env.file(name, data).await));
    }
    let b = uuid::Uuid::new_v4().to_string();
    let list: Vec<(&str, &str, &str)> = refs.iter().map(|(n, u)| (*n, u.as_str(), V1)).collect();
    assert_eq!(env.put_bundle(&b, V2, &list, None).await.status, 201);

    // Into the replica's checkout bucket, with an email at the end.
    let id = start(&env, &b, r#"{"email": "me@example.org"}"#).await;
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let s = ended(&env, &id).await;
    assert_eq!(s["status"], "SUCCEEDED", "{s}");
    let dir = env.data().join("aws/checkout").join(format!("bundles/{b}.{V2}"));
    assert_eq!(s["location"], format!("file://{}", dir.display()).as_str());
    assert_eq!(s["progress"]["files_done"], 3);
    assert_eq!(s["progress"]["files_total"], 3);
    assert_eq!(s["progress"]["bytes_total"], 100_008);
    for (name, data) in &files {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), data, "{name}");
    }
    // Quoted-printable: soft line breaks joined.
    let decoded = || smtp.mail().replace("=\n", "").replace("=3D", "=");
    let t = std::time::Instant::now();
    while !decoded().contains(&format!("{}.", dir.display())) {
        assert!(t.elapsed().as_secs() < 30, "no email: {}", smtp.mail());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mail = decoded();
    assert!(mail.contains("me@example.org") && mail.contains("SUCCEEDED"), "{mail}");
    assert!(mail.contains(&format!("file://{}", dir.display())), "{mail}");

    // Into a user's bucket (for a local replica, a directory under DATA_DIR/buckets).
    std::fs::create_dir_all(env.data().join("buckets/mine")).unwrap();
    let id = start(&env, &b, r#"{"destination": "mine"}"#).await;
    assert_eq!(ended(&env, &id).await["status"], "SUCCEEDED");
    let mine = env.data().join(format!("buckets/mine/bundles/{b}.{V2}"));
    assert_eq!(std::fs::read(mine.join("a.json")).unwrap(), files[0].1);

    // A bucket that does not exist, and one that cannot be written: FAILED, with a cause.
    let id = start(&env, &b, r#"{"destination": "nowhere", "email": "me@example.org"}"#).await;
    let s = ended(&env, &id).await;
    assert_eq!(s["status"], "FAILED");
    assert!(s["cause"].as_str().unwrap().contains("does not exist"), "{s}");
    std::fs::create_dir_all(env.data().join("buckets/blocked")).unwrap();
    std::fs::write(
        env.data().join("buckets/blocked/touch"),
        b"a file where a prefix must go",
    )
    .unwrap();
    let id = start(&env, &b, r#"{"destination": "blocked"}"#).await;
    let s = ended(&env, &id).await;
    assert_eq!(s["status"], "FAILED");
    assert!(s["cause"].as_str().unwrap().contains("not writable"), "{s}");

    // The original's refusals.
    let post = |bundle: String, q: &'static str, body: &'static str| {
        let env = &env;
        async move {
            env.req(
                "POST",
                &format!("/v1/bundles/{bundle}/checkout?{q}"),
                None,
                body,
                &[("content-type", "application/json")],
            )
            .await
        }
    };
    post(b.clone(), "replica=aws", r#"{"destination": "a/b"}"#)
        .await
        .expect_error(400, "illegal_arguments");
    post(b.clone(), "replica=aws", r#"{"email": "not an address"}"#)
        .await
        .expect_error(400, "illegal_arguments");
    post(uuid::Uuid::new_v4().to_string(), "replica=aws", "")
        .await
        .expect_error(404, "not_found");
    post(b.clone(), "replica=aws&version=2001-01-01T000000.000000Z", "")
        .await
        .expect_error(404, "not_found");
    post(b.clone(), "replica=mars", "")
        .await
        .expect_error(400, "illegal_arguments");
    let unknown = uuid::Uuid::new_v4();
    env.get(&format!("/v1/bundles/checkout/{unknown}?replica=aws"))
        .await
        .expect_error(404, "not_found");
    env.get("/v1/bundles/checkout/not-a-uuid?replica=aws")
        .await
        .expect_error(400, "illegal_arguments");
}

/// `GET /v1/files` serves the copy in the checkout bucket: a small file's copy is made
/// while the request waits (302 at once); a larger one's by a job while the client is
/// sent back (301, a token, Retry-After, no X-DSS headers) until it is there; a cached
/// metadata file is copied at ingest; an ageing copy is served and copied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_served_from_checkout_copies() {
    let env = Env::with(|c| {
        c.checkout_inline_max = 1000;
        c.blob_public_ttl_days = Some("0.00002".into()); // under two seconds
    });
    let checkout = env.data().join("aws/checkout");
    let blob = |data: &[u8]| dss::model::checksum::checksums_of(data).blob_key();

    // Cached by CHECKOUT_CACHE_CRITERIA: copied at ingest.
    let json_data = br#"{"small": "metadata"}"#;
    let j = env.file("m.json", json_data).await;
    assert!(
        checkout.join(blob(json_data)).exists(),
        "copied to the checkout bucket at ingest"
    );

    // Small: copied while the request waits.
    let small = vec![b's'; 1000];
    let s = env.file("s.bin", &small).await;
    assert!(!checkout.join(blob(&small)).exists());
    let r = env.get(&format!("/v1/files/{s}?replica=aws")).await;
    assert_eq!(r.status, 302);
    assert!(checkout.join(blob(&small)).exists());
    let d = env.get(&local_part(r.header("location").unwrap())).await;
    assert_eq!(&d.body[..], &small[..]);

    // Larger: 301 with a token until the job has copied it, then 302.
    let large = vec![b'L'; 5000];
    let l = env.file("l.bin", &large).await;
    let r = env.get(&format!("/v1/files/{l}?replica=aws")).await;
    assert_eq!(r.status, 301, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("retry-after"), Some("10"));
    assert!(r.header("x-dss-sha256").is_none(), "no X-DSS headers on a 301");
    let mut next = local_part(r.header("location").unwrap());
    let t = std::time::Instant::now();
    let done = loop {
        assert!(next.contains("token="), "{next}");
        let r = env.get(&next).await;
        if r.status != 301 {
            break r;
        }
        let token: serde_json::Value = serde_json::from_str(
            &url::Url::parse(&format!("http://x{next}"))
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "token")
                .unwrap()
                .1,
        )
        .unwrap();
        assert!(token["attempts"].as_u64().unwrap() >= 1);
        assert!(t.elapsed().as_secs() < 30, "copy never made");
        next = local_part(r.header("location").unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(done.status, 302);
    assert_eq!(done.header("x-dss-sha256"), Some(sha256_hex(&large).as_str()));
    let d = env.get(&local_part(done.header("location").unwrap())).await;
    assert_eq!(&d.body[..], &large[..]);
    assert_eq!(env.jobs_completed("copy-out", 30).await.len(), 1);

    // Ageing (past DSS_BLOB_PUBLIC_TTL_DAYS): still served, and copied again meanwhile.
    let before = std::fs::metadata(checkout.join(blob(json_data)))
        .unwrap()
        .modified()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = env
        .get(&format!("/v1/files/{j}?replica=aws&content_disposition=attachment"))
        .await;
    assert_eq!(r.status, 302);
    let t = std::time::Instant::now();
    while std::fs::metadata(checkout.join(blob(json_data)))
        .unwrap()
        .modified()
        .unwrap()
        == before
    {
        assert!(t.elapsed().as_secs() < 30, "ageing copy not renewed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    env.get(&format!("/v1/files/{s}?replica=aws&token=%7B%7D"))
        .await
        .expect_error(400, "illegal_token");
}
