//! The GCS V4 signer against Google's published conformance vectors
//! (`tests/fixtures/gcs-v4/`, copied from googleapis/conformance-tests).
//!
//! Every `signingV4Tests` case our signer can express is signed with the vectors' service
//! account at the vector's time, and must give Google's URL, canonical request and
//! string-to-sign exactly; the GET ones without extra query parameters (what
//! `presign_get` asks for) are also signed through a `GcsStore`. The rest are skipped by
//! name in [`SKIPPED`], with the reason, and a vector the signer cannot express that is
//! not in that list fails the test.

use chrono::{DateTime, Utc};
use dss::http::{HttpClient, HttpError, ReqBody};
use dss::model::platform::{ByteStream, Sleeper};
use dss::model::Clock;
use dss::storage::gcs::{sign_v4_url, GcsConfig, GcsStore, ServiceAccountKey, V4Key, V4Request, DEFAULT_ENDPOINT};
use dss::storage::{PresignOptions, Store};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gcs-v4");

/// The vectors we do not run, and why: our URLs are path style on the configured
/// endpoint, for objects, and sign the `host` header alone (a download link asks its
/// holder to send no other header).
const SKIPPED: &[(&str, &str)] = &[
    ("POST for resumable uploads", "signs an extra header (x-goog-resumable)"),
    (
        "Slashes in object name should not be URL encoded",
        "signs an extra header",
    ),
    ("Simple headers", "signs extra headers"),
    ("Headers with colons", "signs extra headers"),
    ("Headers should be trimmed", "signs extra headers"),
    ("Header value with multiple inline values", "signs an extra header"),
    (
        "Customer-supplied encryption key",
        "signs extra headers (x-goog-encryption-*)",
    ),
    ("List Objects", "signs a bucket, not an object"),
    ("Header Ordering", "signs an extra header (x-goog-date)"),
    (
        "Signed Payload Instead of UNSIGNED-PAYLOAD",
        "signs extra headers and a payload hash",
    ),
    ("Virtual Hosted Style", "virtual-hosted-style URL"),
    ("HTTP Bucket Bound Hostname Support", "bucket-bound hostname"),
    ("HTTPS Bucket Bound Hostname Support", "bucket-bound hostname"),
    ("Universe domain with virtual hosted style", "virtual-hosted-style URL"),
];

/// One `signingV4Tests` case (every field of the file: an unknown one fails the parse, so
/// a new input cannot be silently ignored).
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Vector {
    description: String,
    bucket: String,
    #[serde(default)]
    object: Option<String>,
    method: String,
    expiration: u64,
    timestamp: DateTime<Utc>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    query_parameters: BTreeMap<String, String>,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    url_style: Option<String>,
    #[serde(default)]
    bucket_bound_hostname: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    client_endpoint: Option<String>,
    #[serde(default)]
    emulator_hostname: Option<String>,
    #[serde(default)]
    universe_domain: Option<String>,
    expected_url: String,
    expected_canonical_request: String,
    expected_string_to_sign: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    signing_v4_tests: Vec<Vector>,
}

impl Vector {
    /// Why our signer cannot express this case, if it cannot.
    fn inexpressible(&self) -> Option<&'static str> {
        if !self.headers.is_empty() {
            return Some("extra signed headers");
        }
        if self.object.is_none() {
            return Some("no object");
        }
        match self.url_style.as_deref() {
            None | Some("PATH_STYLE") => {}
            Some(_) => return Some("not path style"),
        }
        if self.bucket_bound_hostname.is_some() {
            return Some("bucket-bound hostname");
        }
        None
    }

    /// The one endpoint our configuration has, from the vector's options, with the
    /// precedence the vectors define: an explicit `hostname` (signing option of Google's
    /// libraries), then the client's endpoint (our `GCS_ENDPOINT_URL`), then the emulator
    /// host, then the universe domain's `storage.` host, else the public endpoint. A host
    /// without a scheme gets the vector's scheme (https by default).
    fn endpoint(&self) -> String {
        let scheme = self.scheme.as_deref().unwrap_or("https");
        let with_scheme = |h: &str| {
            if h.contains("://") {
                h.to_string()
            } else {
                format!("{scheme}://{h}")
            }
        };
        if let Some(h) = &self.hostname {
            return with_scheme(h);
        }
        if let Some(e) = &self.client_endpoint {
            return with_scheme(e);
        }
        if let Some(e) = &self.emulator_hostname {
            return with_scheme(e);
        }
        if let Some(d) = &self.universe_domain {
            return with_scheme(&format!("storage.{d}"));
        }
        assert_eq!(scheme, "https", "{}: the public endpoint is https", self.description);
        DEFAULT_ENDPOINT.to_string()
    }
}

fn load() -> (ServiceAccountKey, Vec<Vector>) {
    let read = |name: &str| {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| panic!("reading {name}: {e}"))
    };
    let sa = ServiceAccountKey::from_json(&read("test_service_account.not-a-test.json")).expect("the vectors' key");
    let file: File = serde_json::from_str(&read("v4_signatures.json")).expect("the vectors");
    (sa, file.signing_v4_tests)
}

/// The vectors' time, whatever the store asks.
struct Fixed(DateTime<Utc>);

impl Clock for Fixed {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// Signing needs no network: any request is a failure of the test.
struct NoNetwork;

impl HttpClient for NoNetwork {
    async fn send(&self, req: http::Request<bytes::Bytes>) -> Result<http::Response<bytes::Bytes>, HttpError> {
        panic!("unexpected request to {}", req.uri())
    }

    async fn send_stream(&self, req: http::Request<ReqBody>) -> Result<http::Response<ByteStream>, HttpError> {
        panic!("unexpected request to {}", req.uri())
    }
}

struct NoSleep;

impl Sleeper for NoSleep {
    async fn sleep(&self, _: Duration) {}
}

#[test]
fn the_skip_list_names_exactly_the_vectors_we_cannot_express() {
    let (_, vectors) = load();
    for (name, reason) in SKIPPED {
        let v = vectors
            .iter()
            .find(|v| v.description == *name)
            .unwrap_or_else(|| panic!("skipped vector {name:?} is not in the file"));
        assert!(
            v.inexpressible().is_some(),
            "{name:?} is skipped ({reason}) but the signer can express it: run it"
        );
    }
    for v in &vectors {
        if let Some(why) = v.inexpressible() {
            assert!(
                SKIPPED.iter().any(|(name, _)| *name == v.description),
                "{:?} cannot be expressed ({why}) and is not in SKIPPED",
                v.description
            );
        }
    }
}

#[test]
fn v4_signer_agrees_with_googles_vectors() {
    let (sa, vectors) = load();
    let mut ran = Vec::new();
    for v in &vectors {
        if let Some((_, reason)) = SKIPPED.iter().find(|(name, _)| *name == v.description) {
            println!("skipped: {:?}: {reason}", v.description);
            continue;
        }
        let query: Vec<(String, String)> = v.query_parameters.clone().into_iter().collect();
        let endpoint = v.endpoint();
        let req = V4Request {
            method: http::Method::from_bytes(v.method.as_bytes()).expect("a method"),
            endpoint: &endpoint,
            bucket: &v.bucket,
            object: v.object.as_deref().expect("an object"),
            query: &query,
            expires_in: Duration::from_secs(v.expiration),
            now: v.timestamp,
        };
        let signed = sign_v4_url(V4Key::Rsa(&sa), &req).unwrap_or_else(|e| panic!("{}: {e}", v.description));
        assert_eq!(
            signed.canonical_request, v.expected_canonical_request,
            "{}: canonical request",
            v.description
        );
        assert_eq!(
            signed.string_to_sign, v.expected_string_to_sign,
            "{}: string to sign",
            v.description
        );
        assert_eq!(signed.url, v.expected_url, "{}: URL", v.description);
        println!("ran: {:?} ({} {endpoint})", v.description, v.method);
        ran.push(v.description.as_str());
    }
    println!("{} vectors ran, {} skipped", ran.len(), vectors.len() - ran.len());
    for basic in [
        "Simple GET",
        "Simple PUT",
        "Vary expiration and timestamp",
        "Vary bucket and object",
        "Forward Slashes should not be stripped",
        "Query Parameter Encoding",
        "Query Parameter Ordering",
        "Simple GET with non-default hostname",
        "Simple GET with endpoint on client",
    ] {
        assert!(ran.contains(&basic), "{basic:?} must run");
    }
    assert_eq!(ran.len() + SKIPPED.len(), vectors.len());
}

/// The same vectors through the store's own download URLs, where `presign_get` can ask
/// for what they describe (GET, no query parameters of their own).
#[tokio::test]
async fn presigned_downloads_agree_with_googles_vectors() {
    let (sa, vectors) = load();
    let mut ran = 0;
    for v in &vectors {
        if v.inexpressible().is_some() || v.method != "GET" || !v.query_parameters.is_empty() {
            continue;
        }
        let cfg = GcsConfig {
            bucket: v.bucket.clone(),
            endpoint: v.endpoint(),
            credentials: Some(sa.clone()),
            hmac: None,
        };
        let store = GcsStore::new(cfg, NoNetwork, NoSleep, Arc::new(Fixed(v.timestamp)));
        let url = store
            .presign_get(
                v.object.as_deref().unwrap(),
                Duration::from_secs(v.expiration),
                &PresignOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", v.description));
        assert_eq!(url, v.expected_url, "{}", v.description);
        ran += 1;
    }
    assert!(ran >= 10, "only {ran} vectors went through the store");
}
