//! The `aws` replica on S3 (moto), through the API: staging tags win over metadata,
//! server-side copy then verification, direct s3:// URLs, presigned downloads.

mod common;
use common::cloud::{s3_store, tags};
use common::emulators::moto;
use common::*;
use dss::storage::{PutOptions, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_replica_on_s3() {
    let emu = moto();
    for b in ["dss-main", "dss-checkout", "staging"] {
        s3_store(&emu, b).create_bucket().await.unwrap();
    }
    // The only test in this binary that sets process environment.
    std::env::set_var("AWS_ENDPOINT_URL", &emu.endpoint);
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_DEFAULT_REGION", "us-east-1");
    std::env::remove_var("AWS_ENDPOINT_URL_S3");
    std::env::remove_var("AWS_SESSION_TOKEN");
    let env = Env::with(|c| {
        c.s3_bucket = Some("dss-main".into());
        c.s3_checkout_bucket = Some("dss-checkout".into());
    });
    let staging = s3_store(&emu, "staging");
    let main = s3_store(&emu, "dss-main");
    let data = std::fs::read(fixtures().join("example_bundle/links.json")).unwrap();
    let c = dss::model::checksum::checksums_of(&data);
    // Wrong checksums in the user metadata, right ones in the tags: tags win, as in the original.
    let wrong = dss::model::checksum::checksums_of(b"not these bytes");
    let opts = PutOptions {
        if_absent: false,
        content_type: Some("application/json".into()),
        metadata: tags(&wrong),
        expiring: false,
    };
    staging.put("u1/links.json", data.clone().into(), opts).await.unwrap();
    staging.put_tags("u1/links.json", &tags(&c)).await.unwrap();

    let u = uuid::Uuid::new_v4().to_string();
    let r = env.put_file(&u, V1, "s3://staging/u1/links.json", None).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(&main.get(&c.blob_key()).await.unwrap()[..], &data[..]);
    let h = env.head(&format!("/v1/files/{u}?replica=aws")).await;
    assert_eq!(h.header("x-dss-sha256"), Some(c.sha256.as_str()));
    assert_eq!(h.header("x-dss-content-type"), Some("application/json"));

    let g = env
        .get(&format!("/v1/files/{u}?replica=aws&content_disposition=attachment"))
        .await;
    assert_eq!(g.status, 302);
    let loc = g.header("location").unwrap().to_string();
    assert!(
        loc.starts_with(&format!("{}/dss-checkout/blobs/", emu.endpoint)) && loc.contains("X-Amz-Signature="),
        "{loc}"
    );
    let resp = reqwest::get(&loc).await.unwrap();
    assert_eq!(resp.headers()["content-disposition"], "attachment");
    assert_eq!(sha256_hex(&resp.bytes().await.unwrap()), c.sha256);
    let d = env.get(&format!("/v1/files/{u}?replica=aws&directurl=true")).await;
    assert_eq!(
        d.header("location"),
        Some(format!("s3://dss-checkout/{}", c.blob_key()).as_str())
    );

    // Tags that lie about the bytes: 422, and neither blob nor metadata stays.
    staging
        .put("u2/x", bytes::Bytes::from_static(b"payload"), PutOptions::overwrite())
        .await
        .unwrap();
    staging.put_tags("u2/x", &tags(&wrong)).await.unwrap();
    let liar = uuid::Uuid::new_v4().to_string();
    env.put_file(&liar, V1, "s3://staging/u2/x", None)
        .await
        .expect_error(422, "checksum_mismatch");
    assert!(main.head(&wrong.blob_key()).await.is_err());
    assert!(main.head(&format!("files/{liar}.{V1}")).await.is_err());
    // Bytes of the right size that claim to be an existing file's: as in the original, the
    // stored blob with those checksums is reused (content addressing), so the new file
    // serves the verified bytes its checksums name, and the good blob is untouched.
    let mut forged = data.clone();
    forged[0] ^= 0xff;
    staging
        .put("u3/forged", forged.into(), PutOptions::overwrite())
        .await
        .unwrap();
    staging.put_tags("u3/forged", &tags(&c)).await.unwrap();
    let f2 = uuid::Uuid::new_v4().to_string();
    assert_eq!(env.put_file(&f2, V1, "s3://staging/u3/forged", None).await.status, 201);
    assert_eq!(
        &main.get(&c.blob_key()).await.unwrap()[..],
        &data[..],
        "the verified blob is untouched"
    );
    let g = env.get(&format!("/v1/files/{f2}?replica=aws")).await;
    let body = reqwest::get(g.header("location").unwrap())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        sha256_hex(&body),
        c.sha256,
        "the file serves exactly what its checksums say"
    );
    // Copies wait under incoming/ while they are verified; none is left behind.
    assert!(dss::storage::list_all(&main, "incoming/").await.unwrap().is_empty());
    // A missing staging object is named in a 400.
    let r = env
        .put_file(&uuid::Uuid::new_v4().to_string(), V1, "s3://staging/nope", None)
        .await;
    r.expect_error(400, "illegal_source_url");
    assert!(r.json()["title"].as_str().unwrap().contains("s3://staging/nope"));
    // gs:// while the gcp replica is local: refused clearly.
    env.put_file(
        &uuid::Uuid::new_v4().to_string(),
        V1,
        "gs://staging/u1/links.json",
        None,
    )
    .await
    .expect_error(400, "illegal_source_url");
}
