//! Replicas in the cloud, through the API: the `gcp` replica on fake-gcs-server
//! (and the `aws` replica on moto): ingest from staging buckets with checksum tags,
//! verification, downloads through presigned URLs, direct URLs, faults.

mod common;
use common::cloud::{gcs_store as gcs, tags};
use common::emulators::fake_gcs;
use common::*;
use dss::storage::{PutOptions, Store};
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_replica_on_gcs() {
    let emu = fake_gcs();
    for b in ["dss-gs-main", "dss-gs-checkout", "gs-staging", "not-staging"] {
        gcs(&emu, b).create_bucket().await.unwrap();
    }
    // The only test in this binary that sets process environment.
    std::env::set_var("STORAGE_EMULATOR_HOST", &emu.endpoint);
    std::env::remove_var("GOOGLE_APPLICATION_CREDENTIALS");
    let env = Env::with(|c| {
        c.gs_bucket = Some("dss-gs-main".into());
        c.gs_checkout_bucket = Some("dss-gs-checkout".into());
        c.staging_buckets = Some("gs-staging".into());
    });
    let staging = gcs(&emu, "gs-staging");
    let main = gcs(&emu, "dss-gs-main");
    let data = std::fs::read(fixtures().join("example_bundle/donor_organism_0.json")).unwrap();
    let c = dss::model::checksum::checksums_of(&data);
    let opts = PutOptions {
        if_absent: false,
        content_type: Some("application/json".into()),
        metadata: tags(&c),
        expiring: false,
    };
    staging.put("up/donor.json", data.clone().into(), opts).await.unwrap();

    let u = uuid::Uuid::new_v4().to_string();
    let r = env.put_file(&u, V1, "gs://gs-staging/up/donor.json", None).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // The blob and the metadata are in the gcp bucket, in the original's layout.
    assert_eq!(&main.get(&c.blob_key()).await.unwrap()[..], &data[..]);
    let meta: serde_json::Value = serde_json::from_slice(&main.get(&format!("files/{u}.{V1}")).await.unwrap()).unwrap();
    assert_eq!(meta["sha256"], c.sha256.as_str());
    assert_eq!(meta["content-type"], "application/json");
    assert_eq!(
        env.put_file(&u, V1, "gs://gs-staging/up/donor.json", None).await.status,
        200
    );

    // Downloads: 302 to the bucket, with the X-DSS headers; direct URLs name the bucket.
    let g = env.get(&format!("/v1/files/{u}?replica=gcp")).await;
    assert_eq!(g.status, 302);
    assert_eq!(g.header("x-dss-sha256"), Some(c.sha256.as_str()));
    let loc = g.header("location").unwrap().to_string();
    assert!(loc.starts_with(&emu.endpoint), "{loc}");
    let body = reqwest::get(&loc).await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256_hex(&body), c.sha256);
    let d = env.get(&format!("/v1/files/{u}?replica=gcp&directurl=true")).await;
    assert_eq!(d.status, 302);
    assert_eq!(
        d.header("location"),
        Some(format!("gs://dss-gs-checkout/{}", c.blob_key()).as_str())
    );
    // Copied from gcp (GCS) to aws (local) by replication.
    let d = env
        .eventually("GET", &format!("/v1/files/{u}?replica=aws"), 302, 30)
        .await;
    let body = env.get(&local_part(d.header("location").unwrap())).await.body;
    assert_eq!(sha256_hex(&body), c.sha256);

    // A bundle in the gcp replica.
    let b = uuid::Uuid::new_v4().to_string();
    let body = serde_json::json!({"files": [{"uuid": u, "version": V1, "name": "donor.json", "indexed": true}], "creator_uid": 1});
    let r = env
        .req(
            "PUT",
            &format!("/v1/bundles/{b}?version={V2}&replica=gcp"),
            Some(&env.user()),
            &body.to_string(),
            &[],
        )
        .await;
    assert_eq!(r.status, 201);
    // directurls: checked out first (301 with a token meanwhile), then URLs into the copy.
    let g = env
        .follow(&format!("/v1/bundles/{b}?replica=gcp&directurls=true"))
        .await;
    assert_eq!(g.status, 200);
    let copy = format!("bundles/{b}.{V2}/donor.json");
    assert_eq!(
        g.json()["bundle"]["files"][0]["url"],
        format!("gs://dss-gs-checkout/{copy}")
    );
    assert_eq!(&gcs(&emu, "dss-gs-checkout").get(&copy).await.unwrap()[..], &data[..]);
    assert!(main.head(&format!("bundles/{b}.{V2}")).await.is_ok());

    // Staging checksum problems: missing, malformed, and bytes that do not match.
    let put_staged = |key: &'static str, md: BTreeMap<String, String>| {
        let staging = &staging;
        async move {
            let opts = PutOptions {
                if_absent: false,
                content_type: None,
                metadata: md,
                expiring: false,
            };
            staging
                .put(key, bytes::Bytes::from_static(b"some staged bytes"), opts)
                .await
                .unwrap();
        }
    };
    put_staged("bad/none", BTreeMap::new()).await;
    env.put_file(&uuid::Uuid::new_v4().to_string(), V1, "gs://gs-staging/bad/none", None)
        .await
        .expect_error(422, "missing_checksum");
    let mut malformed = tags(&c);
    malformed.insert("hca-dss-crc32c".into(), "xyz".into());
    put_staged("bad/malformed", malformed).await;
    env.put_file(
        &uuid::Uuid::new_v4().to_string(),
        V1,
        "gs://gs-staging/bad/malformed",
        None,
    )
    .await
    .expect_error(422, "invalid_checksum");
    let lie = dss::model::checksum::checksums_of(b"other bytes");
    put_staged("bad/lie", tags(&lie)).await;
    let liar = uuid::Uuid::new_v4().to_string();
    env.put_file(&liar, V1, "gs://gs-staging/bad/lie", None)
        .await
        .expect_error(422, "checksum_mismatch");
    assert!(
        main.head(&lie.blob_key()).await.is_err(),
        "the unverified blob was removed"
    );
    assert!(
        main.head(&format!("files/{liar}.{V1}")).await.is_err(),
        "no metadata for it"
    );
    env.put_file(
        &uuid::Uuid::new_v4().to_string(),
        V1,
        "gs://gs-staging/nothing/here",
        None,
    )
    .await
    .expect_error(400, "illegal_source_url");
    env.put_file(&uuid::Uuid::new_v4().to_string(), V1, "gs://not-staging/x", None)
        .await
        .expect_error(400, "illegal_source_url");
    // The aws replica is still local here: s3 sources are refused clearly.
    env.put_file(
        &uuid::Uuid::new_v4().to_string(),
        V1,
        "s3://gs-staging/up/donor.json",
        None,
    )
    .await
    .expect_error(400, "illegal_source_url");

    // The store goes away: a read that needs it answers 503 with Retry-After, promptly.
    drop(emu);
    let started = std::time::Instant::now();
    let r = env.get(&format!("/v1/files/{u}?replica=gcp&version={V2}")).await;
    r.expect_error(503, "service_unavailable");
    assert_eq!(r.header("retry-after"), Some("10"));
    assert!(started.elapsed() < Duration::from_secs(20), "bounded retries, no hang");
}
