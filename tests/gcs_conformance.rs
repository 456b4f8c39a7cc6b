//! The GCS backend against fake-gcs-server: the conformance suite with a peer bucket,
//! large resumable uploads, download URLs, and an unreachable endpoint. Also V4 signing,
//! checked offline against an independently built canonical request.

mod common;
use common::emulators;

use bytes::Bytes;
use dss::http::ReqwestClient;
use dss::model::platform::{box_stream, Sleeper};
use dss::model::SystemClock;
use dss::storage::gcs::{GcsConfig, GcsStore, ServiceAccountKey};
use dss::storage::{conformance, PresignOptions, PutOptions, Store, StoreError};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Timers on tokio.
#[derive(Clone, Copy)]
struct TokioSleeper;

impl Sleeper for TokioSleeper {
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }
}

type Gcs = GcsStore<ReqwestClient, TokioSleeper>;

fn store(cfg: GcsConfig) -> Gcs {
    GcsStore::new(
        cfg,
        ReqwestClient::new(Duration::from_secs(10)).unwrap(),
        TokioSleeper,
        Arc::new(SystemClock),
    )
}

async fn bucket(endpoint: &str, name: &str) -> Gcs {
    let s = store(GcsConfig::emulator(name, endpoint));
    s.create_bucket().await.expect("create bucket");
    s.create_bucket().await.expect("creating an existing bucket is fine");
    s
}

/// `total` bytes of a recognisable pattern, in chunks of odd sizes.
fn pattern(total: usize) -> Vec<u8> {
    (0..total).map(|i| (i % 251) as u8 ^ (i / 65_521) as u8).collect()
}

fn odd_chunks(data: &[u8], fail_after: Option<usize>) -> dss::model::platform::ByteStream {
    let sizes = [1, 77_777, 333_333, 1_048_573, 4_000_037, 12_345];
    let mut out: Vec<std::io::Result<Bytes>> = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        if fail_after.is_some_and(|f| at >= f) {
            out.push(Err(std::io::Error::other("client went away")));
            break;
        }
        let n = sizes[i % sizes.len()].min(data.len() - at);
        out.push(Ok(Bytes::copy_from_slice(&data[at..at + n])));
        at += n;
        i += 1;
    }
    box_stream(futures::stream::iter(out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_store_conforms() {
    let emu = emulators::fake_gcs();
    let s = bucket(&emu.endpoint, "dss-main").await;
    let peer = bucket(&emu.endpoint, "dss-staging").await;
    conformance::run_with_peer(&s, &peer).await;
    assert_eq!(s.direct_url("blobs/a").as_deref(), Some("gs://dss-main/blobs/a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_streams_use_resumable_uploads() {
    let emu = emulators::fake_gcs();
    let s = bucket(&emu.endpoint, "dss-big").await;
    let data = pattern(20 * 1024 * 1024 + 12_345);
    let opts = PutOptions {
        content_type: Some("application/octet-stream; dss=1".into()),
        ..PutOptions::if_absent()
    };
    let n = s
        .put_stream("blobs/big", odd_chunks(&data, None), opts)
        .await
        .expect("put_stream");
    assert_eq!(n, data.len() as u64);
    let head = s.head("blobs/big").await.expect("head");
    assert_eq!(head.size, data.len() as u64);
    assert_eq!(head.content_type.as_deref(), Some("application/octet-stream; dss=1"));
    let (_, range, mut stream) = s.get_range("blobs/big", None).await.expect("get");
    assert_eq!(range, (0, data.len() as u64));
    let mut got = Vec::with_capacity(data.len());
    while let Some(c) = stream.next().await {
        got.extend_from_slice(&c.expect("chunk"));
    }
    assert!(got == data, "bytes round-trip exactly");
    // A range across the chunk boundary of the upload.
    let (_, r, mut stream) = s
        .get_range("blobs/big", Some(dss::storage::ByteRange::FromTo(8_388_000, 8_389_000)))
        .await
        .expect("range");
    assert_eq!(r, (8_388_000, 8_389_001));
    let mut part = Vec::new();
    while let Some(c) = stream.next().await {
        part.extend_from_slice(&c.expect("chunk"));
    }
    assert!(part == data[8_388_000..8_389_001], "range bytes");
    // Create-only onto the existing key is refused before anything is uploaded.
    assert!(matches!(
        s.put_stream("blobs/big", odd_chunks(&data, None), PutOptions::if_absent())
            .await,
        Err(StoreError::AlreadyExists(_))
    ));

    // A stream that fails after 10 MiB (one chunk already sent) leaves nothing.
    let failed = s
        .put_stream(
            "blobs/broken",
            odd_chunks(&data, Some(10 * 1024 * 1024)),
            PutOptions::overwrite(),
        )
        .await;
    assert!(failed.is_err(), "the stream's failure is reported");
    assert!(
        matches!(s.head("blobs/broken").await, Err(StoreError::NotFound(_))),
        "no object after a failed stream"
    );
    assert_eq!(
        dss::storage::list_all(&s, "").await.unwrap(),
        vec!["blobs/big".to_string()]
    );
    s.delete("blobs/big").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_urls_serve_the_object() {
    let emu = emulators::fake_gcs();
    let s = bucket(&emu.endpoint, "dss-urls").await;
    s.put(
        "blobs/p q+r",
        Bytes::from_static(b"downloadable"),
        PutOptions::overwrite(),
    )
    .await
    .unwrap();
    let opts = PresignOptions {
        content_disposition: Some("attachment; filename=\"p q.txt\"".into()),
        content_type: Some("text/plain".into()),
    };
    let url = s
        .presign_get("blobs/p q+r", Duration::from_secs(60), &opts)
        .await
        .unwrap();
    // Emulator mode: no credentials, so the URL is the plain object URL.
    assert!(
        url.starts_with(&format!("{}/dss-urls/blobs/p%20q%2Br", emu.endpoint)),
        "{url}"
    );
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.bytes().await.unwrap()[..], b"downloadable");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_quickly() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed again: nothing listens there
    let s = store(GcsConfig::emulator("nowhere", &format!("127.0.0.1:{port}")));
    let started = Instant::now();
    let r = s.head("files/x").await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = s
        .put("files/x", Bytes::from_static(b"x"), PutOptions::if_absent())
        .await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gave up within bounds: {:?}",
        started.elapsed()
    );
}

/// V4 RSA signing, verified with the public key over a canonical request built here from
/// the URL, independently of the store's own code.
#[tokio::test]
async fn v4_rsa_signed_urls_verify() {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;
    use sha2::{Digest, Sha256};

    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let public = key.to_public_key();
    let sa = ServiceAccountKey::new(
        "dss@project.iam.gserviceaccount.com",
        "kid1",
        "https://oauth2.googleapis.com/token",
        key,
    );
    let cfg = GcsConfig {
        bucket: "hca-dss".into(),
        endpoint: dss::storage::gcs::DEFAULT_ENDPOINT.into(),
        credentials: Some(sa),
        hmac: None,
    };
    let s = store(cfg);
    let opts = PresignOptions {
        content_disposition: Some("attachment; filename=\"a b.json\"".into()),
        content_type: Some("application/json".into()),
    };
    let before = chrono::Utc::now();
    let signed = s
        .presign_get("blobs/a b+c", Duration::from_secs(30 * 24 * 3600), &opts)
        .await
        .unwrap();
    let url = url::Url::parse(&signed).unwrap();
    assert_eq!(url.scheme(), "https");
    assert_eq!(url.host_str(), Some("storage.googleapis.com"));
    assert_eq!(url.path(), "/hca-dss/blobs/a%20b%2Bc");

    let raw_query = url.query().unwrap();
    let (unsigned, sig_hex) = raw_query.rsplit_once("&X-Goog-Signature=").expect("signature last");
    let params: std::collections::BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(params["X-Goog-Algorithm"], "GOOG4-RSA-SHA256");
    let date = before.format("%Y%m%d").to_string();
    assert_eq!(
        params["X-Goog-Credential"],
        format!("dss@project.iam.gserviceaccount.com/{date}/auto/storage/goog4_request")
    );
    assert_eq!(params["X-Goog-Expires"], "604800", "capped at 7 days");
    assert_eq!(params["X-Goog-SignedHeaders"], "host");
    assert_eq!(
        params["response-content-disposition"],
        "attachment; filename=\"a b.json\""
    );
    assert_eq!(params["response-content-type"], "application/json");
    let stamp = &params["X-Goog-Date"];
    let signed_at = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").unwrap();
    assert!((signed_at.and_utc() - before).num_seconds().abs() < 60);
    assert!(sig_hex.len() == 512 && sig_hex.bytes().all(|b| b.is_ascii_hexdigit()));

    // The canonical query: every parameter but the signature, sorted, RFC 3986 encoded.
    let encode = |s: &str| {
        const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        percent_encoding::utf8_percent_encode(s, SET).to_string()
    };
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "X-Goog-Signature")
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let query = query.join("&");
    assert_eq!(query, unsigned, "the URL carries the canonical query");
    let canonical = format!(
        "GET\n{}\n{query}\nhost:storage.googleapis.com\n\nhost\nUNSIGNED-PAYLOAD",
        url.path()
    );
    let to_sign = format!(
        "GOOG4-RSA-SHA256\n{stamp}\n{date}/auto/storage/goog4_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let sig = Signature::try_from(hex::decode(sig_hex).unwrap().as_slice()).unwrap();
    VerifyingKey::<Sha256>::new(public)
        .verify(to_sign.as_bytes(), &sig)
        .expect("signature verifies");
}
