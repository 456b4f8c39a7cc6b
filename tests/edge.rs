//! The edge worker in workerd (Miniflare), in front of the real `dss` binary, both on
//! moto: every read route answered by the worker matches the backend's answer; the
//! worker's redirects reach the bytes; writes through the worker land in the backend;
//! requests that fail auth never reach it; CORS; latest-version caching.
//!
//! Needs `scripts/build-worker` to have built `build/` and `npm ci` to have installed
//! Node 22 and Miniflare (scripts/test does both).

mod common;
use common::binary;
use common::cloud::{gcs_store, s3_store, tags};
use common::emulators::{fake_gcs, moto, Emulator};
use common::sha256_hex;
use common::worker::{cloud_bindings, start_worker};
use dss::storage::{PutOptions, Store};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const V1: &str = "2019-01-01T000000.000000Z";
const V2: &str = "2019-02-01T000000.000000Z";
const V3: &str = "2019-03-01T000000.000000Z";
const ADMIN: &str = "admin@example.org";

/// Lines of a log file that mention `needle`.
fn log_lines(log: &Path, needle: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// The backend on moto and fake-gcs-server, logging every request it answers
/// (`DSS_DEBUG=1`) to `data/backend.log`.
fn start_backend(data: &Path, s3: &Emulator, gcs: &Emulator) -> (binary::Server, PathBuf) {
    let log = data.join("backend.log");
    let server = binary::start_dss(data, |cmd| {
        cmd.env("DSS_S3_BUCKET", "dss-main")
            .env("DSS_S3_CHECKOUT_BUCKET", "dss-checkout")
            .env("ADMIN_USER_EMAILS", ADMIN)
            .env("DSS_BUNDLE_FILE_WAIT", "0")
            // A third replica, in the backend's data directory: the edge forwards its reads.
            .env("DSS_REPLICAS", "aws,gcp,spare")
            .env("DSS_DEBUG", "1")
            .env_remove("RUST_LOG")
            .env("DSS_GS_BUCKET", "dss-gs-main")
            .env("STORAGE_EMULATOR_HOST", &gcs.endpoint)
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .stderr(std::fs::File::create(&log).unwrap());
        s3.aws_env(cmd);
    });
    (server, log)
}

fn dev_token(data: &Path, email: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dss"))
        .args(["token", "--email", email, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

async fn call(c: &reqwest::Client, method: &str, url: &str, token: Option<&str>, body: Option<&Value>) -> Got {
    let mut rb = c.request(method.parse().unwrap(), url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let r = rb.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    Got {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap(),
    }
}

/// Make answers from two servers comparable: their base URLs become `{BASE}`, and
/// presigned URLs lose their query (signatures and dates differ by the second).
fn normalize(s: &str, bases: &[&str]) -> String {
    let mut s = s.to_string();
    for b in bases {
        s = s.replace(b, "{BASE}");
    }
    if s.contains("X-Amz-Signature") || s.contains("X-Goog-Signature") {
        s = s.split('?').next().unwrap_or_default().to_string();
    }
    // A checkout token names its own checkout and time: only its presence is compared.
    if let Some(at) = s.find("token=%7B") {
        let end = s[at..].find('&').map_or(s.len(), |e| at + e);
        s.replace_range(at..end, "token={TOKEN}");
    }
    s
}

fn normalize_json(v: &Value, bases: &[&str]) -> Value {
    match v {
        Value::String(s) => Value::String(normalize(s, bases)),
        Value::Array(a) => Value::Array(a.iter().map(|x| normalize_json(x, bases)).collect()),
        // The time a listing was made differs by nature.
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| *k != "event_timestamp")
                .map(|(k, x)| (k.clone(), normalize_json(x, bases)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The parts of an answer a client relies on, normalised.
fn essence(g: &Got, bases: &[&str]) -> Value {
    let mut headers = serde_json::Map::new();
    for (k, v) in &g.headers {
        let k = k.as_str();
        if k.starts_with("x-dss-") || matches!(k, "content-type" | "link" | "location" | "retry-after") {
            headers.insert(k.into(), json!(normalize(v.to_str().unwrap_or(""), bases)));
        }
    }
    let body = match serde_json::from_slice::<Value>(&g.body) {
        Ok(v) => normalize_json(&v, bases),
        Err(_) => json!(String::from_utf8_lossy(&g.body)),
    };
    json!({"status": g.status, "headers": headers, "body": body})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_worker_in_front_of_the_backend() {
    let s3 = moto();
    for b in ["dss-main", "dss-checkout", "staging"] {
        s3_store(&s3, b).create_bucket().await.unwrap();
    }
    let gcs = fake_gcs();
    for b in ["dss-gs-main", "gs-staging"] {
        gcs_store(&gcs, b).create_bucket().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (backend, backend_log) = start_backend(dir.path(), &s3, &gcs);
    let worker = start_worker(
        &cloud_bindings(
            &backend.url,
            &s3,
            &gcs,
            json!({
            "OPENID_PROVIDER": format!("{}/", backend.url),
            "ADMIN_USER_EMAILS": ADMIN,
            "DSS_CORS_ORIGINS": "https://portal.example.org",
            "DSS_SEARCH_CACHE_TTL": "3",
            "DSS_REPLICAS": "aws,gcp,spare",
            }),
        ),
        dir.path().join("worker.log"),
    );
    let (b, w) = (backend.url.as_str(), worker.url.as_str());
    // Base URLs, then bare hosts (the OpenAPI document names its host alone).
    let bases = [b, w, b.trim_start_matches("http://"), w.trim_start_matches("http://")];
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let user = dev_token(dir.path(), "uploader@example.org");
    let admin = dev_token(dir.path(), ADMIN);

    // Stage 15 files in S3 with the checksum tags the hca CLI sets.
    let staging = s3_store(&s3, "staging");
    let mut files = Vec::new();
    for i in 0..15 {
        let data = format!("file {i} of the edge test\n").repeat(i * 100 + 1).into_bytes();
        let c = dss::model::checksum::checksums_of(&data);
        let key = format!("edge/f{i}.txt");
        staging
            .put(&key, data.clone().into(), PutOptions::overwrite())
            .await
            .unwrap();
        staging.put_tags(&key, &tags(&c)).await.unwrap();
        files.push((uuid::Uuid::new_v4().to_string(), key, data, c));
    }

    // Writes through the worker land in the backend.
    for (u, key, _, _) in &files {
        let body = json!({"source_url": format!("s3://staging/{key}"), "creator_uid": 7});
        let r = call(
            &c,
            "PUT",
            &format!("{w}/v1/files/{u}?version={V1}"),
            Some(&user),
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    let bundle_files = |n: usize| -> Value {
        Value::Array(
            files[..n]
                .iter()
                .enumerate()
                .map(|(i, (u, ..))| json!({"uuid": u, "version": V1, "name": format!("f{i}.txt"), "indexed": false}))
                .collect(),
        )
    };
    let b1 = uuid::Uuid::new_v4().to_string();
    let r = call(
        &c,
        "PUT",
        &format!("{w}/v1/bundles/{b1}?replica=aws&version={V1}"),
        Some(&user),
        Some(&json!({"files": bundle_files(15), "creator_uid": 7})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(!log_lines(&backend_log, &format!("/v1/bundles/{b1}")).is_empty());
    // A second version straight into the backend; a bundle tombstoned through the worker.
    let r = call(
        &c,
        "PUT",
        &format!("{b}/v1/bundles/{b1}?replica=aws&version={V2}"),
        Some(&user),
        Some(&json!({"files": bundle_files(3), "creator_uid": 7})),
    )
    .await;
    assert_eq!(r.status, 201);
    let b2 = uuid::Uuid::new_v4().to_string();
    let r = call(
        &c,
        "PUT",
        &format!("{w}/v1/bundles/{b2}?replica=aws&version={V1}"),
        Some(&user),
        Some(&json!({"files": bundle_files(1), "creator_uid": 7})),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = call(
        &c,
        "DELETE",
        &format!("{w}/v1/bundles/{b2}?replica=aws"),
        Some(&admin),
        Some(&json!({"reason": "edge test"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // The gcp replica: a file staged in GCS, ingested and bundled through the worker.
    let gdata = b"a file in the gcp replica\n".repeat(50);
    let gsums = dss::model::checksum::checksums_of(&gdata);
    let gopts = PutOptions {
        if_absent: false,
        content_type: Some("text/plain".into()),
        metadata: tags(&gsums),
        expiring: false,
    };
    gcs_store(&gcs, "gs-staging")
        .put("edge/g.txt", gdata.clone().into(), gopts)
        .await
        .unwrap();
    let gf = uuid::Uuid::new_v4().to_string();
    let body = json!({"source_url": "gs://gs-staging/edge/g.txt", "creator_uid": 7});
    let r = call(
        &c,
        "PUT",
        &format!("{w}/v1/files/{gf}?version={V1}"),
        Some(&user),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let gb = uuid::Uuid::new_v4().to_string();
    let gfiles = json!([{"uuid": gf, "version": V1, "name": "g.txt", "indexed": false}]);
    let r = call(
        &c,
        "PUT",
        &format!("{w}/v1/bundles/{gb}?replica=gcp&version={V1}"),
        Some(&user),
        Some(&json!({"files": gfiles, "creator_uid": 7})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    // The differential: every read route, the same answer from both.
    let f0 = &files[0].0;
    let missing = uuid::Uuid::new_v4();
    let spare = uuid::Uuid::new_v4().to_string();
    let mut reads: Vec<(&str, String)> = vec![
        ("GET", "/version".into()),
        ("GET", "/internal/health".into()),
        ("GET", "/v1/swagger.json".into()),
        ("GET", format!("/v1/files/{f0}?replica=aws")),
        ("GET", format!("/v1/files/{f0}?replica=aws&version={V1}")),
        (
            "GET",
            format!("/v1/files/{f0}?replica=aws&version={V1}&content_disposition=attachment"),
        ),
        ("GET", format!("/v1/files/{f0}?replica=aws&directurl=true")),
        ("HEAD", format!("/v1/files/{f0}?replica=aws")),
        ("HEAD", format!("/v1/files/{f0}?replica=aws&version={V1}")),
        ("GET", format!("/v1/files/{f0}?replica=aws&version={V2}")),
        ("GET", format!("/v1/files/{missing}?replica=aws")),
        ("HEAD", format!("/v1/files/{missing}?replica=aws")),
        ("GET", format!("/v1/files/{f0}")),
        ("GET", format!("/v1/files/{f0}?replica=azure")),
        ("GET", "/v1/files/not-a-uuid?replica=aws".into()),
        ("GET", format!("/v1/files/{f0}?replica=gcp")),
        ("GET", format!("/v1/files/{gf}?replica=gcp")),
        ("HEAD", format!("/v1/files/{gf}?replica=gcp&version={V1}")),
        ("GET", format!("/v1/files/{gf}?replica=gcp&directurl=true")),
        ("GET", format!("/v1/bundles/{gb}?replica=gcp")),
        ("GET", format!("/v1/bundles/{gb}?replica=gcp&presignedurls=true")),
        ("GET", format!("/v1/bundles/{b1}?replica=aws")),
        ("GET", format!("/v1/bundles/{b1}?replica=aws&version={V1}")),
        ("GET", format!("/v1/bundles/{b1}?replica=aws&version={V1}&per_page=10")),
        (
            "GET",
            format!("/v1/bundles/{b1}?replica=aws&version={V1}&directurls=true"),
        ),
        (
            "GET",
            format!("/v1/bundles/{b1}?replica=aws&version={V1}&presignedurls=true"),
        ),
        ("GET", format!("/v1/bundles/{b1}?replica=aws&version={V1}&per_page=5")), // 400: below 10
        ("GET", format!("/v1/bundles/{b1}?replica=aws&version={V3}")),
        ("GET", format!("/v1/bundles/{b2}?replica=aws")),
        ("GET", format!("/v1/bundles/{b2}?replica=aws&version={V1}")),
        ("GET", format!("/v1/bundles/{missing}?replica=aws")),
        ("GET", "/v1/bundles/all?replica=aws".into()),
        ("GET", "/v1/bundles/all?replica=aws&per_page=10".into()),
        ("GET", format!("/v1/bundles/all?replica=aws&prefix={}", &b1[..4])),
        ("GET", "/v1/bundles/all?replica=gcp".into()),
        ("GET", format!("/v1/files/{spare}?replica=spare")),
        ("GET", format!("/v1/bundles/{spare}?replica=spare")),
        ("POST", format!("/v1/files/{f0}?replica=aws")),
    ];
    // Follow the paging link of the 10-per-page listing as a client would.
    let first = call(
        &c,
        "GET",
        &format!("{w}/v1/bundles/{b1}?replica=aws&version={V1}&per_page=10"),
        None,
        None,
    )
    .await;
    assert_eq!(first.status, 206);
    let next = first.header("link").unwrap().to_string();
    let next = next.trim_start_matches('<').split('>').next().unwrap().replace(w, "");
    reads.push(("GET", next));
    let spare_reads = || log_lines(&backend_log, &spare).len();
    let spare_before = spare_reads();
    let mut compared = 0;
    for (m, path) in &reads {
        let from_backend = essence(&call(&c, m, &format!("{b}{path}"), None, None).await, &bases);
        let from_worker = essence(&call(&c, m, &format!("{w}{path}"), None, None).await, &bases);
        if from_worker != from_backend {
            let show = |v: &Value| v.to_string().chars().take(3000).collect::<String>();
            panic!(
                "{m} {path} differs:\nworker:  {}\nbackend: {}",
                show(&from_worker),
                show(&from_backend)
            );
        }
        compared += 1;
    }
    assert_eq!(compared, reads.len());
    // The third replica's reads reached the backend from the worker too (two each).
    assert_eq!(
        spare_reads() - spare_before,
        4,
        "the worker forwards the spare replica's reads"
    );
    // And the worker's OpenAPI document offers it.
    let doc = call(&c, "GET", &format!("{w}/v1/swagger.json"), None, None)
        .await
        .json();
    let params = doc["paths"]["/files/{uuid}"]["get"]["parameters"].as_array().unwrap();
    let replica = params.iter().find(|p| p["name"] == "replica").unwrap();
    assert_eq!(replica["enum"], json!(["aws", "gcp", "spare"]), "{replica}");

    // The worker's redirects reach the bytes in moto.
    for (u, _, data, sums) in files.iter().take(4) {
        let r = call(&c, "GET", &format!("{w}/v1/files/{u}?replica=aws"), None, None).await;
        assert_eq!(r.status, 302);
        assert_eq!(r.header("x-dss-sha256"), Some(sums.sha256.as_str()));
        let loc = r.header("location").unwrap();
        assert!(loc.starts_with(&s3.endpoint), "{loc}");
        let bytes = reqwest::get(loc).await.unwrap().bytes().await.unwrap();
        assert_eq!(bytes.len(), data.len());
        assert_eq!(sha256_hex(&bytes), sums.sha256);
    }

    let r = call(&c, "GET", &format!("{w}/v1/files/{gf}?replica=gcp"), None, None).await;
    assert_eq!(r.status, 302);
    let bytes = reqwest::get(r.header("location").unwrap())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_hex(&bytes), gsums.sha256);

    // Refused at the edge: the backend never sees these.
    let b3 = uuid::Uuid::new_v4().to_string();
    let stranger = {
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let dev = dss::auth::dev::DevIssuer::from_key(key, &format!("{b}/"));
        dev.mint(
            "x@example.org",
            Some("hca"),
            "https://dev.data.humancellatlas.org/",
            chrono::Duration::hours(1),
        )
        .unwrap()
    };
    let put = format!("{w}/v1/bundles/{b3}?replica=aws&version={V1}");
    let body = json!({"files": bundle_files(1), "creator_uid": 7});
    let r = call(&c, "PUT", &put, None, Some(&body)).await;
    assert_eq!((r.status, r.json()["code"].as_str()), (401, Some("OAuthProblem")));
    let r = call(&c, "PUT", &put, Some("not-a-jwt"), Some(&body)).await;
    assert_eq!(r.status, 401);
    let r = call(&c, "PUT", &put, Some(&stranger), Some(&body)).await;
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    let r = call(
        &c,
        "DELETE",
        &format!("{w}/v1/bundles/{b3}?replica=aws"),
        None,
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 401);
    // The route table's other rules hold at the edge too: the group, the admin list,
    // the body's type.
    let public = Command::new(env!("CARGO_BIN_EXE_dss"))
        .args([
            "token",
            "--email",
            "reader@example.org",
            "--group",
            "public",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let public = String::from_utf8(public.stdout).unwrap().trim().to_string();
    let r = call(&c, "PUT", &put, Some(&public), Some(&body)).await;
    assert_eq!((r.status, r.json()["code"].as_str()), (403, Some("Forbidden")));
    let r = call(
        &c,
        "DELETE",
        &format!("{w}/v1/bundles/{b3}?replica=aws"),
        Some(&user),
        Some(&json!({"reason": "not an admin"})),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = c
        .put(&put)
        .bearer_auth(&user)
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        log_lines(&backend_log, &b3),
        Vec::<String>::new(),
        "backend saw a refused request"
    );

    // A write through the worker is visible through it at once, although the worker
    // had cached the "latest version" lookup a moment ago.
    let latest = call(&c, "GET", &format!("{w}/v1/bundles/{b1}?replica=aws"), None, None).await;
    assert_eq!(latest.json()["bundle"]["version"], V2);
    let r = call(
        &c,
        "PUT",
        &format!("{w}/v1/bundles/{b1}?replica=aws&version={V3}"),
        Some(&user),
        Some(&json!({"files": bundle_files(2), "creator_uid": 7})),
    )
    .await;
    assert_eq!(r.status, 201);
    let latest = call(&c, "GET", &format!("{w}/v1/bundles/{b1}?replica=aws"), None, None).await;
    assert_eq!(latest.json()["bundle"]["version"], V3);
    assert_eq!(latest.json()["bundle"]["files"].as_array().unwrap().len(), 2);

    // Search answers: from the backend once, then from the edge's cache until the TTL
    // (3 s here) runs out. The backend's request log counts what reached it.
    let searches = || log_lines(&backend_log, "path=\"/v1/search\"").len();
    let search = |q: &'static str, params: &'static str| {
        let c = c.clone();
        let url = format!("{w}/v1/search?replica=aws{params}");
        async move {
            let r = c
                .post(url)
                .header("content-type", "application/json")
                .body(q)
                .send()
                .await
                .unwrap();
            let cache = r
                .headers()
                .get("x-dss-edge-cache")
                .map(|v| v.to_str().unwrap().to_string());
            let status = r.status().as_u16();
            (status, cache, r.bytes().await.unwrap())
        }
    };
    let q1 = r#"{"es_query": {"query": {"bool": {"must": [{"match_all": {}}], "must_not": [{"term": {"admin_deleted": true}}]}}}}"#;
    let q1_reordered =
        r#"{"es_query":{"query":{"bool":{"must_not":[{"term":{"admin_deleted":true}}],"must":[{"match_all":{}}]}}}}"#;
    let before = searches();
    let (status, cache, first) = search(q1, "").await;
    assert_eq!(
        (status, cache.as_deref()),
        (200, Some("miss")),
        "{}",
        String::from_utf8_lossy(&first)
    );
    let hits: Value = serde_json::from_slice(&first).unwrap();
    assert!(hits["total_hits"].as_u64().unwrap() >= 1, "{hits}");
    let (status, cache, again) = search(q1_reordered, "").await;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")));
    assert_eq!(again, first, "the cached answer is the backend's");
    assert_eq!(searches(), before + 1, "the hit did not reach the backend");
    // Another page size is another answer; a bad query is never cached.
    let (_, cache, _) = search(q1, "&per_page=100").await;
    assert_eq!(cache.as_deref(), Some("miss"));
    for _ in 0..2 {
        let (status, _, _) = search(r#"{"es_query": {"query": {"no_such_query": {}}}}"#, "").await;
        assert_eq!(status, 400);
    }
    assert_eq!(searches(), before + 4);
    // After the TTL the answer is fetched again.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let (status, cache, _) = search(q1, "").await;
    assert_eq!((status, cache.as_deref()), (200, Some("miss")));
    assert_eq!(searches(), before + 5);

    // Browsers: preflight and exposed headers for the allowed origin only.
    let pre = c
        .request(reqwest::Method::OPTIONS, format!("{w}/v1/files/{f0}?replica=aws"))
        .header("origin", "https://portal.example.org")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://portal.example.org"
    );
    let got = c
        .get(format!("{w}/v1/files/{f0}?replica=aws"))
        .header("origin", "https://portal.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 302);
    let exposed = got.headers()["access-control-expose-headers"].to_str().unwrap();
    assert!(
        exposed.contains("X-DSS-SHA256") && exposed.contains("Link"),
        "{exposed}"
    );
    let other = c
        .get(format!("{w}/version"))
        .header("origin", "https://elsewhere.example.org")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // A worker without BACKEND_URL says so on every request instead of failing obscurely.
    let bare = start_worker(&json!({"DSS_S3_BUCKET": "dss-main"}), dir.path().join("bare.log"));
    let r = call(&c, "GET", &format!("{}/version", bare.url), None, None).await;
    assert_eq!(r.status, 500);
    let title = r.json()["title"].as_str().unwrap_or_default().to_string();
    assert!(title.contains("BACKEND_URL"), "{title}");
}
