//! The S3 backend against moto: the conformance suite, then what only S3 has
//! (presigned URLs, multipart uploads and copies, tags, retries, SigV4 checked by moto's IAM).

mod common;
use common::emulators;

use bytes::Bytes;
use dss::http::{HttpClient, HttpError, ReqBody, ReqwestClient};
use dss::model::platform::{box_stream, ByteStream, Sleeper};
use dss::model::SystemClock;
use dss::storage::s3::{S3Config, S3Store};
use dss::storage::{conformance, ByteRange, PresignOptions, PutOptions, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

#[derive(Clone, Default)]
struct TestSleeper {
    slept: Arc<Mutex<Vec<Duration>>>,
}

impl Sleeper for TestSleeper {
    async fn sleep(&self, d: Duration) {
        self.slept.lock().unwrap().push(d);
        tokio::time::sleep(d).await
    }
}

type TestStore = S3Store<ReqwestClient, TestSleeper>;

fn config(endpoint: &str, bucket: &str) -> S3Config {
    S3Config {
        bucket: bucket.to_string(),
        endpoint: Some(endpoint.to_string()),
        region: "us-east-1".to_string(),
        access_key_id: "testing".to_string(),
        secret_access_key: "testing".to_string(),
        session_token: None,
    }
}

fn client() -> ReqwestClient {
    ReqwestClient::new(Duration::from_secs(10)).unwrap()
}

async fn store_with(cfg: S3Config) -> TestStore {
    let s = S3Store::new(cfg, client(), TestSleeper::default(), Arc::new(SystemClock));
    s.create_bucket().await.expect("create bucket");
    s
}

async fn store(endpoint: &str, bucket: &str) -> TestStore {
    store_with(config(endpoint, bucket)).await
}

/// Deterministic, non-repeating-looking bytes.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// `data` as a stream of chunks of the given (cycled) sizes.
fn chunked(data: &[u8], sizes: &[usize]) -> Vec<std::io::Result<Bytes>> {
    let mut out = Vec::new();
    let mut pos = 0;
    for size in sizes.iter().cycle() {
        if pos >= data.len() {
            break;
        }
        let end = (pos + size).min(data.len());
        out.push(Ok(Bytes::copy_from_slice(&data[pos..end])));
        pos = end;
    }
    out
}

/// Pending multipart uploads in `bucket` (moto answers unsigned requests).
async fn pending_uploads(endpoint: &str, bucket: &str) -> usize {
    let body = reqwest::get(format!("{endpoint}/{bucket}?uploads"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("ListMultipartUploadsResult"), "{body}");
    body.matches("<Upload>").count()
}

/// moto checks `If-None-Match: *` and then writes, in a threaded server, so two concurrent
/// create-only PUTs of one key can both succeed there (S3 decides atomically). This client
/// sends requests carrying that header one at a time, which gives the emulator S3's
/// atomicity; the store is unchanged and still relies on the header alone.
struct OneConditionalWriteAtATime {
    inner: ReqwestClient,
    lock: futures::lock::Mutex<()>,
}

fn conditional(req_headers: &http::HeaderMap) -> bool {
    req_headers.get("if-none-match").is_some_and(|v| v == "*")
}

impl HttpClient for OneConditionalWriteAtATime {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let _turn = if conditional(req.headers()) {
            Some(self.lock.lock().await)
        } else {
            None
        };
        self.inner.send(req).await
    }
    async fn send_stream(&self, req: http::Request<ReqBody>) -> Result<http::Response<ByteStream>, HttpError> {
        let _turn = if conditional(req.headers()) {
            Some(self.lock.lock().await)
        } else {
            None
        };
        self.inner.send_stream(req).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms() {
    let emu = emulators::moto();
    let make = |bucket: &str| {
        let http = OneConditionalWriteAtATime {
            inner: client(),
            lock: futures::lock::Mutex::new(()),
        };
        S3Store::new(
            config(&emu.endpoint, bucket),
            http,
            TestSleeper::default(),
            Arc::new(SystemClock),
        )
    };
    let (s, peer) = (make("dss-main"), make("dss-staging"));
    s.create_bucket().await.unwrap();
    peer.create_bucket().await.unwrap();
    conformance::run_with_peer(&s, &peer).await;
    assert_eq!(s.direct_url("blobs/x").as_deref(), Some("s3://dss-main/blobs/x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_spaces_and_plus_round_trip() {
    let emu = emulators::moto();
    let s = store(&emu.endpoint, "dss-keys").await;
    let keys = [
        "dir/a b+c.txt",
        "dir/x%41y",
        "dir/ünï cödé",
        "dir/semi;colon=eq&amp?q#h",
    ];
    for (i, k) in keys.iter().enumerate() {
        s.put(k, Bytes::from(format!("v{i}")), PutOptions::if_absent())
            .await
            .unwrap();
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(s.get(k).await.unwrap(), format!("v{i}").as_bytes(), "{k}");
        assert_eq!(s.head(k).await.unwrap().size, 2);
    }
    let mut listed = dss::storage::list_all(&s, "dir/").await.unwrap();
    listed.sort();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    s.copy("dir/a b+c.txt", "dir/copy of a+b").await.unwrap();
    assert_eq!(s.get("dir/copy of a+b").await.unwrap(), "v0".as_bytes());
    for k in keys.iter().chain(["dir/copy of a+b"].iter()) {
        s.delete(k).await.unwrap();
    }
    assert!(matches!(s.get("a/../b").await, Err(StoreError::InvalidKey(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_get_serves_the_bytes_with_disposition() {
    let emu = emulators::moto();
    let s = store(&emu.endpoint, "dss-presign").await;
    let key = "blobs/some file+1.txt";
    s.put(key, Bytes::from_static(b"presigned bytes"), PutOptions::overwrite())
        .await
        .unwrap();
    let opts = PresignOptions {
        content_disposition: Some("attachment; filename=\"some file+1.txt\"".into()),
        content_type: Some("text/plain".into()),
    };
    let url = s.presign_get(key, Duration::from_secs(60), &opts).await.unwrap();
    assert!(url.contains("X-Amz-Expires=60"), "{url}");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-disposition"].to_str().unwrap(),
        "attachment; filename=\"some file+1.txt\""
    );
    assert_eq!(resp.headers()["content-type"].to_str().unwrap(), "text/plain");
    assert_eq!(&resp.bytes().await.unwrap()[..], b"presigned bytes");
    // Longer than SigV4 allows: capped at 7 days.
    let url = s
        .presign_get(key, Duration::from_secs(30 * 86400), &PresignOptions::default())
        .await
        .unwrap();
    assert!(url.contains("X-Amz-Expires=604800"), "{url}");
    // moto 5.2.5 does not verify the signatures of presigned URLs (not even with IAM
    // authentication enabled), so a tampered URL cannot be shown to be refused here.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_stream_multipart_round_trips_and_failures_leave_nothing() {
    let emu = emulators::moto();
    let s = store(&emu.endpoint, "dss-multipart").await;
    let data = pattern(20 * MIB + 12345, 7);
    let mut md = BTreeMap::new();
    md.insert("hca-dss-sha256".to_string(), "abc".to_string());
    let opts = PutOptions {
        if_absent: true,
        content_type: Some("application/octet-stream; dcp-type=data".into()),
        metadata: md.clone(),
        expiring: false,
    };
    let chunks = chunked(&data, &[1, 65_537, 3 * MIB + 7, 999_983, 0, 12]);
    let n = s
        .put_stream("blobs/big", box_stream(futures::stream::iter(chunks)), opts)
        .await
        .expect("multipart put_stream");
    assert_eq!(n, data.len() as u64);
    let got = s.get("blobs/big").await.unwrap();
    assert!(got == data, "bytes round-trip exactly");
    let h = s.head("blobs/big").await.unwrap();
    assert_eq!(h.size, data.len() as u64);
    assert_eq!(
        h.content_type.as_deref(),
        Some("application/octet-stream; dcp-type=data")
    );
    assert_eq!(h.metadata, md);
    // A range across a part boundary.
    let (_, range, mut stream) = s
        .get_range(
            "blobs/big",
            Some(ByteRange::FromTo(8 * MIB as u64 - 3, 8 * MIB as u64 + 2)),
        )
        .await
        .unwrap();
    assert_eq!(range, (8 * MIB as u64 - 3, 8 * MIB as u64 + 3));
    let mut part = Vec::new();
    while let Some(c) = futures::StreamExt::next(&mut stream).await {
        part.extend_from_slice(&c.unwrap());
    }
    assert_eq!(part, &data[8 * MIB - 3..8 * MIB + 3]);
    // Create-only onto the existing key, long enough to need multipart.
    let again = chunked(&data, &[MIB]);
    assert!(matches!(
        s.put_stream(
            "blobs/big",
            box_stream(futures::stream::iter(again)),
            PutOptions::if_absent()
        )
        .await,
        Err(StoreError::AlreadyExists(_))
    ));

    // Fails after 10 MiB: the first part is uploaded by then.
    let mut failing = chunked(&data[..10 * MIB], &[MIB + 1]);
    failing.push(Err(std::io::Error::other("source broke")));
    let r = s
        .put_stream(
            "blobs/partial",
            box_stream(futures::stream::iter(failing)),
            PutOptions::overwrite(),
        )
        .await;
    assert!(r.is_err(), "a failing stream fails the put");
    assert!(matches!(s.head("blobs/partial").await, Err(StoreError::NotFound(_))));
    assert_eq!(
        pending_uploads(&emu.endpoint, "dss-multipart").await,
        0,
        "upload aborted"
    );
    s.delete("blobs/big").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_win_over_metadata() {
    let emu = emulators::moto();
    let s = store(&emu.endpoint, "dss-tags").await;
    let mut md = BTreeMap::new();
    md.insert("hca-dss-sha256".to_string(), "from-metadata".to_string());
    md.insert("hca-dss-crc32c".to_string(), "meta-only".to_string());
    let opts = PutOptions {
        metadata: md,
        ..Default::default()
    };
    s.put("staging/t", Bytes::from_static(b"x"), opts).await.unwrap();
    let mut tags = BTreeMap::new();
    tags.insert("hca-dss-sha256".to_string(), "from-tag".to_string());
    tags.insert("hca-dss-s3_etag".to_string(), "tag value/with+chars@x.y".to_string());
    s.put_tags("staging/t", &tags).await.unwrap();
    let h = s.head_with_tags("staging/t").await.unwrap();
    let want: BTreeMap<String, String> = [
        ("hca-dss-sha256", "from-tag"),
        ("hca-dss-crc32c", "meta-only"),
        ("hca-dss-s3_etag", "tag value/with+chars@x.y"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(h.metadata, want);
    assert_eq!(s.head("staging/t").await.unwrap().metadata.len(), 2, "head has no tags");
    assert!(matches!(
        s.head_with_tags("staging/none").await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_fails_fast_with_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sleeper = TestSleeper::default();
    let s = S3Store::new(
        config(&format!("http://127.0.0.1:{port}"), "nowhere"),
        client(),
        sleeper.clone(),
        Arc::new(SystemClock),
    );
    let started = Instant::now();
    let r = s.get("files/x").await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = s
        .put("files/x", Bytes::from_static(b"x"), PutOptions::if_absent())
        .await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    // Two requests of 5 attempts each: 4 backoffs each.
    assert_eq!(sleeper.slept.lock().unwrap().len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_from_in_parts() {
    let emu = emulators::moto();
    let s = store(&emu.endpoint, "dss-copy-dst")
        .await
        .with_multipart_copy(5 * MIB as u64, 5 * MIB as u64);
    let peer = store(&emu.endpoint, "dss-copy-src").await;
    let data = pattern(12 * MIB + 3, 11);
    let mut md = BTreeMap::new();
    md.insert("hca-dss-sha256".to_string(), "abc".to_string());
    let opts = PutOptions {
        if_absent: false,
        content_type: Some("application/json".into()),
        metadata: md.clone(),
        expiring: false,
    };
    peer.put("staging/big file", Bytes::from(data.clone()), opts)
        .await
        .unwrap();
    s.copy_from(&peer, "staging/big file", "blobs/big", PutOptions::if_absent())
        .await
        .expect("multipart copy");
    assert!(s.get("blobs/big").await.unwrap() == data, "bytes copied exactly");
    let h = s.head("blobs/big").await.unwrap();
    assert_eq!(h.content_type.as_deref(), Some("application/json"));
    assert_eq!(h.metadata, md);
    assert!(matches!(
        s.copy_from(&peer, "staging/big file", "blobs/big", PutOptions::if_absent())
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    // Given content type and metadata replace the source's.
    let mut md2 = BTreeMap::new();
    md2.insert("other".to_string(), "x".to_string());
    let replace = PutOptions {
        if_absent: false,
        content_type: Some("text/plain".into()),
        metadata: md2.clone(),
        expiring: false,
    };
    s.copy_from(&peer, "staging/big file", "blobs/big2", replace.clone())
        .await
        .unwrap();
    let h = s.head("blobs/big2").await.unwrap();
    assert_eq!((h.content_type.as_deref(), &h.metadata), (Some("text/plain"), &md2));
    assert_eq!(pending_uploads(&emu.endpoint, "dss-copy-dst").await, 0);
    // The single-request path (a store with the default threshold) replaces too.
    let small = store(&emu.endpoint, "dss-copy-dst").await;
    small
        .copy_from(&peer, "staging/big file", "blobs/big3", replace)
        .await
        .unwrap();
    let h = small.head("blobs/big3").await.unwrap();
    assert_eq!((h.content_type.as_deref(), &h.metadata), (Some("text/plain"), &md2));
    assert_eq!(h.size, data.len() as u64);
}

/// An HTTP client that answers the first `fail` requests with 503 SlowDown itself.
struct Flaky {
    inner: ReqwestClient,
    fail: usize,
    seen: AtomicUsize,
}

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
    <Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

impl Flaky {
    fn fails(&self) -> bool {
        self.seen.fetch_add(1, Ordering::SeqCst) < self.fail
    }
    fn slow_down<B>(body: B) -> http::Response<B> {
        http::Response::builder().status(503).body(body).unwrap()
    }
}

impl HttpClient for Flaky {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        if self.fails() {
            return Ok(Self::slow_down(Bytes::from_static(SLOW_DOWN.as_bytes())));
        }
        self.inner.send(req).await
    }
    async fn send_stream(&self, req: http::Request<ReqBody>) -> Result<http::Response<ByteStream>, HttpError> {
        if self.fails() {
            let body: ByteStream = box_stream(futures::stream::iter([Ok(Bytes::from_static(SLOW_DOWN.as_bytes()))]));
            return Ok(Self::slow_down(body));
        }
        self.inner.send_stream(req).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_then_reported() {
    let emu = emulators::moto();
    store(&emu.endpoint, "dss-flaky").await;
    let flaky = |fail| {
        let sleeper = TestSleeper::default();
        let http = Flaky {
            inner: client(),
            fail,
            seen: AtomicUsize::new(0),
        };
        let s = S3Store::new(
            config(&emu.endpoint, "dss-flaky"),
            http,
            sleeper.clone(),
            Arc::new(SystemClock),
        );
        (s, sleeper)
    };
    let (s, sleeper) = flaky(3);
    s.put("files/a", Bytes::from_static(b"abc"), PutOptions::if_absent())
        .await
        .expect("succeeds on the 4th attempt");
    assert_eq!(sleeper.slept.lock().unwrap().len(), 3);
    let (_, _, stream) = s.get_range("files/a", None).await.unwrap();
    drop(stream);
    let (s, sleeper) = flaky(100);
    let r = s.get("files/a").await;
    match r {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("SlowDown"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let slept: Duration = sleeper.slept.lock().unwrap().iter().sum();
    assert_eq!(sleeper.slept.lock().unwrap().len(), 4, "5 attempts");
    assert!(slept <= Duration::from_millis(200 + 400 + 800 + 1600), "{slept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_only_multipart_loses_to_a_writer_that_finishes_first() {
    let emu = emulators::moto();
    let s = store(&emu.endpoint, "dss-race").await;
    let rival = Arc::new(store(&emu.endpoint, "dss-race").await);
    let head = Bytes::from(pattern(9 * MIB, 3));
    // After the first part went up (and the early HEAD found nothing), a rival writes the key.
    let stream = futures::stream::unfold(0u8, move |step| {
        let (rival, head) = (rival.clone(), head.clone());
        async move {
            match step {
                0 => Some((Ok(head), 1)),
                1 => {
                    rival
                        .put("blobs/race", Bytes::from_static(b"rival"), PutOptions::overwrite())
                        .await
                        .unwrap();
                    Some((Ok(Bytes::from_static(b"tail")), 2))
                }
                _ => None,
            }
        }
    });
    let r = s
        .put_stream("blobs/race", box_stream(stream), PutOptions::if_absent())
        .await;
    assert!(matches!(r, Err(StoreError::AlreadyExists(_))), "{r:?}");
    assert_eq!(
        &s.get("blobs/race").await.unwrap()[..],
        b"rival",
        "the first writer wins"
    );
    assert_eq!(pending_uploads(&emu.endpoint, "dss-race").await, 0, "upload aborted");
}

/// One IAM query-protocol call to moto. Authentication is still off, so the Authorization
/// header only tells moto which service is meant.
async fn iam(endpoint: &str, params: &[(&str, &str)]) -> String {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().copied().chain([("Version", "2010-05-08")]))
        .finish();
    let resp = reqwest::Client::new()
        .post(format!("{endpoint}/"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/iam/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "IAM {params:?}: {}", resp.status());
    resp.text().await.unwrap()
}

fn between<'a>(s: &'a str, a: &str, b: &str) -> &'a str {
    let start = s.find(a).unwrap_or_else(|| panic!("{a} in {s}")) + a.len();
    &s[start..start + s[start..].find(b).unwrap()]
}

/// With moto's IAM authentication on, every request's SigV4 signature is checked, so this
/// shows the signing (canonical URI encoding of odd keys, queries, unsigned payloads) is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_with_iam_accepts_our_signatures() {
    let emu = emulators::moto();
    iam(&emu.endpoint, &[("Action", "CreateUser"), ("UserName", "dss")]).await;
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    iam(
        &emu.endpoint,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "dss"),
            ("PolicyName", "all"),
            ("PolicyDocument", policy),
        ],
    )
    .await;
    let key = iam(&emu.endpoint, &[("Action", "CreateAccessKey"), ("UserName", "dss")]).await;
    let mut cfg = config(&emu.endpoint, "dss-signed");
    cfg.access_key_id = between(&key, "<AccessKeyId>", "</AccessKeyId>").to_string();
    cfg.secret_access_key = between(&key, "<SecretAccessKey>", "</SecretAccessKey>").to_string();
    let resp = reqwest::Client::new()
        .post(format!("{}/moto-api/reset-auth", emu.endpoint))
        .body("0")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());

    let s = store_with(cfg.clone()).await;
    let k = "dir/a b+c ü;x=1.txt";
    let mut md = BTreeMap::new();
    md.insert("hca-dss-sha256".to_string(), "abc".to_string());
    let opts = PutOptions {
        if_absent: true,
        content_type: Some("text/plain".into()),
        metadata: md,
        expiring: false,
    };
    s.put(k, Bytes::from_static(b"signed"), opts).await.expect("signed put");
    assert_eq!(&s.get(k).await.unwrap()[..], b"signed");
    let (_, r, _) = s.get_range(k, Some(ByteRange::Suffix(2))).await.unwrap();
    assert_eq!(r, (4, 6));
    assert_eq!(
        dss::storage::list_all(&s, "dir/a b").await.unwrap(),
        vec![k.to_string()]
    );
    let page = s.list("dir/", None, 1).await.unwrap();
    assert_eq!(page.keys, vec![k.to_string()]);
    s.copy(k, "dir/copy+1").await.expect("signed copy");
    let mut tags = BTreeMap::new();
    tags.insert("t".to_string(), "v".to_string());
    s.put_tags(k, &tags).await.expect("signed tagging");
    assert_eq!(s.head_with_tags(k).await.unwrap().metadata.len(), 2);
    let data = pattern(9 * MIB, 5);
    let n = s
        .put_stream(
            "dir/multi part",
            box_stream(futures::stream::iter(chunked(&data, &[MIB + 3]))),
            PutOptions::if_absent(),
        )
        .await
        .expect("signed multipart upload (unsigned payloads)");
    assert_eq!(n, data.len() as u64);
    for key in [k, "dir/copy+1", "dir/multi part"] {
        s.delete(key).await.expect("signed delete");
    }

    cfg.secret_access_key = "wrong".to_string();
    let bad = S3Store::new(cfg, client(), TestSleeper::default(), Arc::new(SystemClock));
    match bad
        .put("dir/x", Bytes::from_static(b"x"), PutOptions::overwrite())
        .await
    {
        Err(StoreError::Other(msg)) => assert!(msg.contains("SignatureDoesNotMatch"), "{msg}"),
        other => panic!("a wrong secret is refused: {other:?}"),
    }
}

/// A server-side copy between two buckets of one S3 account is checked by what S3
/// computed of the copy (its ETag) against the blob's address: bytes that do not match
/// it (corrupted at the source) are not left at the destination's content address, and
/// the replication fails for good with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_copy_is_checked_by_the_destinations_etag() {
    use dss::bucket::replicate::replicate;
    use dss::bucket::{Bucket, BucketError, Memo};
    use dss::model::checksum::checksums_of;
    use dss::model::manifest::FileMetadata;
    use dss::storage::AnyStore;
    let emu = emulators::moto();
    let s3 = |bucket: &str| AnyStore::S3(Box::new(common::cloud::s3_store(&emu, bucket)));
    let (a, b) = (s3("copy-src"), s3("copy-dst"));
    for s in [&a, &b] {
        let AnyStore::S3(s) = s else { unreachable!() };
        s.create_bucket().await.unwrap();
    }
    assert!(b.same_backend(&a), "one endpoint and account: a server-side copy");
    let v = "2019-01-01T000000.000000Z";
    let put = |uuid: &'static str, declared: &'static [u8], stored: &'static [u8]| {
        let a = &a;
        async move {
            let c = checksums_of(declared);
            a.put(&c.blob_key(), Bytes::from_static(stored), PutOptions::if_absent())
                .await
                .unwrap();
            let meta = FileMetadata::new(1, v, "text/plain", declared.len() as u64, &c);
            a.put(
                &format!("files/{uuid}.{v}"),
                Bytes::from(meta.to_bytes()),
                PutOptions::if_absent(),
            )
            .await
            .unwrap();
            c.blob_key()
        }
    };
    let (ma, mb) = (Memo::<FileMetadata>::default(), Memo::<FileMetadata>::default());
    let (src, dst) = (Bucket::new("aws", &a, &ma, None), Bucket::new("spare", &b, &mb, None));
    let progress = Arc::new(dss::model::ProgressCounter::default());

    let good = put("00000000-0000-4000-8000-000000000001", b"good bytes", b"good bytes").await;
    replicate(
        &src,
        &dst,
        &format!("files/00000000-0000-4000-8000-000000000001.{v}"),
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(&b.get(&good).await.unwrap()[..], b"good bytes");

    let bad = put("00000000-0000-4000-8000-000000000002", b"right bytes", b"wrong bytes").await;
    let e = replicate(
        &src,
        &dst,
        &format!("files/00000000-0000-4000-8000-000000000002.{v}"),
        &progress,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, BucketError::ChecksumMismatch(_)) && !e.is_transient(),
        "{e:?}"
    );
    assert!(
        matches!(b.head(&bad).await, Err(StoreError::NotFound(_))),
        "the wrong bytes are not left at the content address"
    );
    assert!(b
        .head(&format!("files/00000000-0000-4000-8000-000000000002.{v}"))
        .await
        .is_err());
}
