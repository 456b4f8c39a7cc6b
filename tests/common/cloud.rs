//! Cloud stores on the emulators, and service-account tokens, for end-to-end tests.

use super::emulators::Emulator;
use dss::http::{ReqwestClient, TokioSleeper};
use dss::storage::gcs::{GcsConfig, GcsStore};
use dss::storage::s3::{S3Config, S3Store};
use std::sync::Arc;
use std::time::Duration;

/// An S3 store for `bucket` on moto.
pub fn s3_store(emu: &Emulator, bucket: &str) -> S3Store<ReqwestClient, TokioSleeper> {
    let cfg = S3Config {
        bucket: bucket.to_string(),
        endpoint: Some(emu.endpoint.clone()),
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        session_token: None,
    };
    S3Store::new(
        cfg,
        ReqwestClient::new(Duration::from_secs(30)).unwrap(),
        TokioSleeper,
        Arc::new(dss::model::SystemClock),
    )
}

/// A GCS store for `bucket` on fake-gcs-server.
pub fn gcs_store(emu: &Emulator, bucket: &str) -> GcsStore<ReqwestClient, TokioSleeper> {
    GcsStore::new(
        GcsConfig::emulator(bucket, &emu.endpoint),
        ReqwestClient::new(Duration::from_secs(30)).unwrap(),
        TokioSleeper,
        Arc::new(dss::model::SystemClock),
    )
}

/// A token signed with a service-account key file, shaped as the `hca` CLI makes them.
pub fn sa_token(sa_json: &std::path::Path) -> String {
    use jwt_compact::alg::Rsa;
    use jwt_compact::{AlgorithmExt, Claims, Header, TimeOptions};
    use rsa::pkcs8::DecodePrivateKey;
    let sa: serde_json::Value = serde_json::from_slice(&std::fs::read(sa_json).unwrap()).unwrap();
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(sa["private_key"].as_str().unwrap()).unwrap();
    let email = sa["client_email"].as_str().unwrap();
    let claims = serde_json::json!({
        "iss": email, "sub": email, "email": email,
        "aud": "https://dev.data.humancellatlas.org/",
        "https://auth.data.humancellatlas.org/group": "hca",
        "https://auth.data.humancellatlas.org/email": email,
    });
    let custom: serde_json::Map<String, serde_json::Value> = claims.as_object().unwrap().clone();
    let claims = Claims::new(custom).set_duration_and_issuance(
        &TimeOptions::new(chrono::Duration::zero(), chrono::Utc::now),
        chrono::Duration::hours(1),
    );
    let header = Header::empty().with_key_id(sa["private_key_id"].as_str().unwrap());
    Rsa::rs256().token(&header, &claims, &key).unwrap()
}

/// The `hca-dss-*` staging tags for checksums `c`, as the `hca` CLI sets them.
pub fn tags(c: &dss::model::Checksums) -> std::collections::BTreeMap<String, String> {
    [
        ("hca-dss-sha256", &c.sha256),
        ("hca-dss-sha1", &c.sha1),
        ("hca-dss-s3_etag", &c.s3_etag),
        ("hca-dss-crc32c", &c.crc32c),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect()
}
