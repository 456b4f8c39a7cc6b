//! Replicas as data: a third replica is configuration only, in the data directory or on
//! any S3-compatible store with its own endpoint and keys.

mod common;

use common::binary::start_dss;
use common::cloud::s3_store;
use common::emulators::moto;
use common::*;
use dss::storage::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_local_replica_serves_files_and_bundles() {
    let env = Env::with(|c| c.replicas = "aws,gcp,spare".into());
    let data = b"on the spare replica".to_vec();
    let u = uuid::Uuid::new_v4().to_string();
    let src = env.stage("spare.txt", &data);
    let r = env.put_file(&u, V1, &src, Some("spare")).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        env.main_dir("spare").join(format!("files/{u}.{V1}")).exists(),
        "stored in DATA_DIR/spare/main"
    );
    let h = env.head(&format!("/v1/files/{u}?replica=spare")).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("x-dss-sha256"), Some(sha256_hex(&data).as_str()));
    // Copied to the other replicas.
    let h = env
        .eventually("HEAD", &format!("/v1/files/{u}?replica=aws"), 200, 30)
        .await;
    assert_eq!(h.header("x-dss-sha256"), Some(sha256_hex(&data).as_str()));
    // Downloads go through the spare replica's own signed URLs.
    let g = env.get(&format!("/v1/files/{u}?replica=spare")).await;
    assert_eq!(g.status, 302);
    let d = env.get(&local_part(g.header("location").unwrap())).await;
    assert_eq!(d.status, 200);
    assert_eq!(&d.body[..], &data[..]);
    // Bundles too.
    let bu = uuid::Uuid::new_v4().to_string();
    let r = env
        .put_bundle_in("spare", &bu, V1, &[("spare.txt", &u, V1)], None)
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = env.get(&format!("/v1/bundles/{bu}?replica=spare")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["bundle"]["files"][0]["uuid"], u.as_str());
    // Health names every replica.
    let h = env.get("/internal/health").await.json();
    assert_eq!(h["Healthy"], true);
    for name in ["aws", "gcp", "spare"] {
        assert_eq!(h["replicas"][name]["Healthy"], true, "{h}");
    }
    // An unknown replica is a 400 that lists the configured ones (and quotes the input).
    let r = env.get(&format!("/v1/files/{u}?replica=nope%22x")).await;
    r.expect_error(400, "illegal_arguments");
    let title = r.json()["title"].as_str().unwrap().to_string();
    assert!(title.contains("'aws', 'gcp', 'spare'"), "{title}");
    assert!(title.contains(r#""nope\"x""#), "{title}");
    // The OpenAPI document offers every replica, so the hca CLI can name the third.
    let doc = env.get("/v1/swagger.json").await.json();
    let params = doc["paths"]["/files/{uuid}"]["get"]["parameters"].as_array().unwrap();
    let replica = params.iter().find(|p| p["name"] == "replica").unwrap();
    assert_eq!(replica["enum"], serde_json::json!(["aws", "gcp", "spare"]), "{replica}");
}

#[test]
fn bad_replica_settings_stop_the_server_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dss"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DSS_DATA_DIR", dir.path())
        .env("DSS_REPLICAS", "aws,gcp,minio")
        .env("DSS_REPLICA_MINIO_STORE", "s3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DSS_REPLICA_MINIO_BUCKET"), "{err}");
}

/// A replica on an S3-compatible store of its own: its endpoint and keys come from
/// `DSS_REPLICA_MINIO_*`, while the process has no AWS settings at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_replica_on_its_own_s3_compatible_store() {
    let emu = moto();
    s3_store(&emu, "dss-minio").create_bucket().await.unwrap();
    s3_store(&emu, "dss-minio-checkout").create_bucket().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dev = dss::server::dev_issuer_dir(dir.path());
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("key.pem"), test_key_pem()).unwrap();
    let server = start_dss(dir.path(), |cmd| {
        cmd.env("DSS_REPLICAS", "aws,gcp,minio")
            .env("DSS_REPLICA_MINIO_STORE", "s3")
            .env("DSS_REPLICA_MINIO_BUCKET", "dss-minio")
            .env("DSS_REPLICA_MINIO_CHECKOUT_BUCKET", "dss-minio-checkout")
            .env("DSS_REPLICA_MINIO_AWS_ENDPOINT_URL", &emu.endpoint)
            .env("DSS_REPLICA_MINIO_AWS_ACCESS_KEY_ID", "testing")
            .env("DSS_REPLICA_MINIO_AWS_SECRET_ACCESS_KEY", "testing")
            .env("DSS_PUBLIC_URL", "http://dss.test");
        for v in [
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "DSS_S3_BUCKET",
        ] {
            cmd.env_remove(v);
        }
    });
    let issuer = dss::auth::dev::DevIssuer::load_or_create(&dev, "http://dss.test/").unwrap();
    let token = issuer
        .mint(
            "u@example.org",
            Some("hca"),
            "https://dev.data.humancellatlas.org/",
            chrono::Duration::hours(1),
        )
        .unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let staged = dir.path().join("staging/x/data.bin");
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    std::fs::write(&staged, &data).unwrap();
    let src = url::Url::from_file_path(std::fs::canonicalize(&staged).unwrap()).unwrap();
    let u = uuid::Uuid::new_v4().to_string();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .put(format!("{}/v1/files/{u}?version={V1}&replica=minio", server.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"source_url": src.as_str(), "creator_uid": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // The bytes and the metadata are in the replica's own bucket.
    let bucket = s3_store(&emu, "dss-minio");
    assert!(bucket.head(&format!("files/{u}.{V1}")).await.is_ok());
    let h = http
        .head(format!("{}/v1/files/{u}?replica=minio", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    assert_eq!(h.headers()["x-dss-sha256"].to_str().unwrap(), sha256_hex(&data));
    let g = http
        .get(format!("{}/v1/files/{u}?replica=minio", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(g.status(), 302);
    let to = g.headers()["location"].to_str().unwrap().to_string();
    assert!(
        to.starts_with(&emu.endpoint),
        "a presigned URL into the replica's store: {to}"
    );
    let got = reqwest::get(&to).await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
}
