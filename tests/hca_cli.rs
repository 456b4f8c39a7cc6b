//! The unmodified `hca` CLI (hca==7.0.1) against the real `dss` binary, with moto as S3
//! and fake-gcs-server as GCS: upload from an S3 staging bucket (including a file over
//! 64 MiB, ingested in the background), get-bundle, get-bundles-all, download, and a
//! download from a bundle in the gcp replica; then an upload and a download through the edge
//! worker in front of the same server. Every downloaded byte is compared. The subscription
//! commands (put, get, list, deliveries, delete) with a real receiver that the upload
//! notifies.

mod common;
use common::binary::{self, hca_bin, Server};
use common::emulators::{fake_gcs, moto, webhook_receiver, Emulator};
use common::worker::{cloud_bindings, start_worker};
use common::{fixtures, sha256_hex};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SA_DOMAIN: &str = "dss-test.iam.gserviceaccount.com";

fn start_dss(data: &Path, s3: &Emulator, gcs: &Emulator, jwks: &Path) -> Server {
    binary::start_dss(data, |cmd| {
        cmd.env("DSS_S3_BUCKET", "dss-main")
            .env("DSS_S3_CHECKOUT_BUCKET", "dss-checkout")
            .env("DSS_GS_BUCKET", "dss-gs-main")
            .env("DSS_GS_CHECKOUT_BUCKET", "dss-gs-checkout")
            .env("STORAGE_EMULATOR_HOST", &gcs.endpoint)
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env("DSS_TRUSTED_JWKS", jwks)
            .env("DSS_AUTHORIZED_DOMAINS", SA_DOMAIN)
            // A third replica, on local disk: the CLI must be able to name it.
            .env("DSS_REPLICAS", "aws,gcp,spare")
            // The subscriber of this test listens on loopback.
            .env("DSS_NOTIFY_ALLOW_PRIVATE", "1");
        s3.aws_env(cmd);
    })
}

/// A self-made Google service-account key (what `hca` signs its tokens with), and the
/// JWKS the server is told to trust for it.
fn service_account(dir: &Path) -> (PathBuf, PathBuf, rsa::RsaPrivateKey) {
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let email = format!("uploader@{SA_DOMAIN}");
    let sa = json!({
        "type": "service_account",
        "project_id": "dss-test",
        "private_key_id": "sa-key-1",
        "private_key": key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        "client_email": email,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let sa_path = dir.join("sa.json");
    std::fs::write(&sa_path, sa.to_string()).unwrap();
    let jwks = dss::auth::jwks::to_jwks(&[dss::auth::jwks::NamedKey {
        kid: Some("sa-key-1".into()),
        key: key.to_public_key(),
    }]);
    let jwks_path = dir.join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    (sa_path, jwks_path, key)
}

/// The CLI calls `https://{host}{basePath}` for a Swagger 2.0 document; give it a local
/// copy of the server's spec that also names the plain-http server (see hca-cli notes).
fn hca_config(dir: &Path, url: &str) -> PathBuf {
    let spec_text = reqwest::blocking::get(format!("{url}/v1/swagger.json"))
        .unwrap()
        .text()
        .unwrap();
    let mut spec: Value = serde_json::from_str(&spec_text).unwrap();
    spec["openapi"] = json!("3.0.0");
    spec["servers"] = json!([{"url": format!("{url}/v1")}]);
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let swagger_url = format!("{url}/v1/swagger.json");
    let cfg = json!({
        "swagger_filename": spec_path,
        "DSSClient": {"swagger_url": swagger_url},
        "AuthClient": {"swagger_url": swagger_url},
        "application_secrets": {"installed": {"client_id": "t", "client_secret": "x",
            "auth_uri": format!("{url}/authorize"), "token_uri": format!("{url}/oauth/token")}},
    });
    let path = dir.join("hca-config.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

struct Hca<'a> {
    config: PathBuf,
    xdg: PathBuf,
    sa: PathBuf,
    s3: &'a Emulator,
}

impl Hca<'_> {
    fn run(&self, args: &[&str]) -> String {
        self.exec(hca_bin(), args)
    }

    /// The Python of the hca venv running `args` (a script of its Python API).
    fn python(&self, args: &[&str]) -> String {
        self.exec(hca_bin().with_file_name("python"), args)
    }

    /// `program` `args` with this client's configuration; its stdout, once it succeeded.
    fn exec(&self, program: PathBuf, args: &[&str]) -> String {
        let mut cmd = Command::new(&program);
        cmd.args(args)
            .env("HCA_CONFIG_FILE", &self.config)
            .env("XDG_CONFIG_HOME", &self.xdg)
            .env("GOOGLE_APPLICATION_CREDENTIALS", &self.sa)
            .env("OAUTHLIB_INSECURE_TRANSPORT", "1")
            // `download-collection` leaves its manifest in the working directory.
            .current_dir(&self.xdg)
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY");
        self.s3.aws_env(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{} {args:?} failed:\nstdout: {}\nstderr: {}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `hca dss upload` of `dir` into `replica` through the `staging` bucket.
    fn upload(&self, dir: &Path, replica: &str) -> Value {
        let out = self.run(&[
            "dss",
            "upload",
            "--replica",
            replica,
            "--staging-bucket",
            "staging",
            "--src-dir",
            dir.to_str().unwrap(),
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("upload output ({e}): {out}"))
    }

    /// `hca dss download` of a bundle of `replica` into `dir`; every file of `expected`
    /// (name to sha256) must arrive byte for byte. (The CLI also keeps a cache of blobs
    /// named by checksum beside the named files.)
    fn download_matches(&self, replica: &str, bundle: &str, dir: &Path, expected: &BTreeMap<String, String>) {
        self.run(&[
            "dss",
            "download",
            "--replica",
            replica,
            "--bundle-uuid",
            bundle,
            "--download-dir",
            dir.to_str().unwrap(),
        ]);
        let got = files_under(dir);
        for (name, sha) in expected {
            assert_eq!(got.get(name), Some(sha), "{name} downloaded byte for byte");
        }
    }
}

fn files_under(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walk(dir) {
        out.insert(
            e.file_name().unwrap().to_string_lossy().to_string(),
            sha256_hex(&std::fs::read(&e).unwrap()),
        );
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn hca_cli_upload_and_download() {
    let s3 = moto();
    let gcs = fake_gcs();
    let tmp = tempfile::tempdir().unwrap();
    let (sa, jwks, _) = service_account(tmp.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for b in ["dss-main", "dss-checkout", "staging"] {
            common::cloud::s3_store(&s3, b).create_bucket().await.unwrap();
        }
        for b in ["dss-gs-main", "dss-gs-checkout", "gs-staging"] {
            common::cloud::gcs_store(&gcs, b).create_bucket().await.unwrap();
        }
    });
    let server = start_dss(&tmp.path().join("data"), &s3, &gcs, &jwks);
    let xdg = tmp.path().join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    let hca = Hca {
        config: hca_config(tmp.path(), &server.url),
        xdg,
        sa,
        s3: &s3,
    };

    // The example bundle plus one file over 64 MiB (a background ingest the CLI waits for).
    let src = tmp.path().join("bundle");
    common::copy_tree(&fixtures().join("example_bundle"), &src);
    let big: Vec<u8> = (0..(64 * 1024 * 1024 + 4096))
        .map(|i: usize| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("reads.fastq"), &big).unwrap();
    let expected = files_under(&src);

    // A subscription made with the CLI (its command built from our OpenAPI document).
    let receiver = webhook_receiver("cli-secret");
    let created: Value = serde_json::from_str(&hca.run(&[
        "dss",
        "put-subscription",
        "--replica",
        "aws",
        "--callback-url",
        &receiver.url("/hook"),
        "--jmespath-query",
        "files.donor_organism_json",
        "--hmac-secret-key",
        "cli-secret",
        "--attachments",
        r#"{"species": {"type": "jmespath", "expression": "files.donor_organism_json[0].genus_species[0].text"}}"#,
    ]))
    .unwrap();
    let subscription = created["uuid"].as_str().unwrap().to_string();

    let uploaded = hca.upload(&src, "aws");
    let bundle_uuid = uploaded["bundle_uuid"].as_str().unwrap().to_string();
    assert_eq!(uploaded["files"].as_array().unwrap().len(), expected.len());

    let got: Value =
        serde_json::from_str(&hca.run(&["dss", "get-bundle", "--replica", "aws", "--uuid", &bundle_uuid])).unwrap();
    let manifest_files = got["bundle"]["files"].as_array().unwrap();
    assert_eq!(manifest_files.len(), expected.len());
    for f in manifest_files {
        assert_eq!(
            f["sha256"].as_str().unwrap(),
            expected[f["name"].as_str().unwrap()],
            "{}",
            f["name"]
        );
    }
    let all: Value = serde_json::from_str(&hca.run(&["dss", "get-bundles-all", "--replica", "aws"])).unwrap();
    assert!(
        all["bundles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["uuid"] == bundle_uuid.as_str()),
        "{all}"
    );

    hca.download_matches("aws", &bundle_uuid, &tmp.path().join("download"), &expected);

    // A collection of the uploaded bundle, made and downloaded with the CLI (as its own
    // test_collection_download does): the same files as the bundle's own download.
    let version = got["bundle"]["version"].as_str().unwrap().to_string();
    let collection = uuid::Uuid::new_v4().to_string();
    let item = json!({"type": "bundle", "uuid": bundle_uuid, "version": version}).to_string();
    let made: Value = serde_json::from_str(&hca.run(&[
        "dss",
        "put-collection",
        "--replica",
        "aws",
        "--uuid",
        &collection,
        "--version",
        &version,
        "--name",
        "test collection",
        "--description",
        "\"test collection\"",
        "--details",
        "{}",
        "--contents",
        &item,
    ]))
    .unwrap();
    assert_eq!(made["uuid"], collection.as_str(), "{made}");
    let listed: Value = serde_json::from_str(&hca.run(&["dss", "get-collections"])).unwrap();
    assert_eq!(listed["collections"][0]["uuid"], collection.as_str(), "{listed}");
    let t1 = tmp.path().join("collection-download");
    hca.run(&[
        "dss",
        "download-collection",
        "--uuid",
        &collection,
        "--replica",
        "aws",
        "--download-dir",
        t1.to_str().unwrap(),
    ]);
    let bundle_dir = format!("{bundle_uuid}.{version}");
    assert_eq!(
        files_under(&t1.join(&bundle_dir)),
        files_under(&tmp.path().join("download").join(&bundle_dir)),
        "the collection's download is the bundle's"
    );
    let deleted: Value =
        serde_json::from_str(&hca.run(&["dss", "delete-collection", "--replica", "aws", "--uuid", &collection]))
            .unwrap();
    assert_eq!(deleted, json!({}));

    // The client's Python API, as its own integration tests use it: 25 collections made,
    // read back 10 a page with iterate() and paginate() (the client re-sends its
    // parameters on each Link URL), one patched with add_contents, the events iterated.
    let f0 = &got["bundle"]["files"][0];
    let out = hca.python(&[
        fixtures_support("hca_api.py").to_str().unwrap(),
        &bundle_uuid,
        &version,
        f0["uuid"].as_str().unwrap(),
        f0["version"].as_str().unwrap(),
    ]);
    let seen: Value = serde_json::from_str(&out).unwrap();
    let made: std::collections::BTreeSet<String> = seen["made"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}.{}", c["uuid"].as_str().unwrap(), c["version"].as_str().unwrap()))
        .collect();
    let items: Vec<String> = seen["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}.{}", c["uuid"].as_str().unwrap(), c["version"].as_str().unwrap()))
        .collect();
    assert_eq!(made.len(), 25);
    assert!(
        made.iter().all(|m| items.contains(m)),
        "iterate() missed some: {items:?}"
    );
    let unique: std::collections::BTreeSet<&String> = items.iter().collect();
    assert_eq!(unique.len(), items.len(), "iterate() repeated some");
    // 25 made here, plus the CLI's (deleted above): pages of 10, 10 and the rest.
    assert_eq!(seen["pages"], json!([10, 10, items.len() - 20]), "{seen}");
    assert_eq!(seen["after"]["description"], "patched");
    let contents = seen["after"]["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 2, "the bundle once, the file added: {contents:?}");
    assert_eq!(contents[1]["uuid"], f0["uuid"]);
    assert_eq!(seen["after"]["uuid"].as_str(), None);
    assert_ne!(seen["patched"]["version"], seen["made"][0]["version"]);
    let events: Vec<&str> = seen["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let once: std::collections::BTreeSet<&&str> = events.iter().collect();
    assert_eq!(
        once.len(),
        events.len(),
        "get_events.iterate() repeated an event: {events:?}"
    );

    // The upload's bundle is an event in the aws journal (recorded just after the write):
    // `get-event` shows its document, `get-events` (paging one stream at a time) lists
    // it, and the stream's presigned S3 URL holds the same bytes at the listed offset.
    let t = std::time::Instant::now();
    let event: Value = loop {
        let all: Value =
            serde_json::from_str(&hca.run(&["dss", "get-events", "--replica", "aws", "--per-page", "1"])).unwrap();
        let streams = all["event_streams"].as_array().unwrap();
        if let Some(s) = streams
            .iter()
            .find(|s| s["events"][0]["event_id"] == format!("{bundle_uuid}.{version}").as_str())
        {
            break s.clone();
        }
        assert!(t.elapsed().as_secs() < 60, "no event of the upload: {all}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let doc: Value = serde_json::from_str(&hca.run(&[
        "dss",
        "get-event",
        "--replica",
        "aws",
        "--uuid",
        &bundle_uuid,
        "--version",
        &version,
    ]))
    .unwrap();
    assert_eq!(doc["event_type"], "CREATE");
    assert_eq!(doc["bundle_info"], json!({"uuid": bundle_uuid, "version": version}));
    assert!(doc["files"]["donor_organism_json"].is_array(), "{doc}");
    let stream = reqwest::blocking::get(event["stream_url"].as_str().unwrap())
        .unwrap()
        .bytes()
        .unwrap();
    let (o, n) = (
        event["events"][0]["offset"].as_u64().unwrap() as usize,
        event["events"][0]["size"].as_u64().unwrap() as usize,
    );
    assert_eq!(serde_json::from_slice::<Value>(&stream[o..o + n]).unwrap(), doc);

    // The upload's bundle was notified, signed; the CLI shows the subscription and its log.
    let got_hook = receiver.wait_for(Some("/hook"), 1, std::time::Duration::from_secs(60));
    assert_eq!(got_hook[0]["signature_ok"], true, "{}", got_hook[0]);
    let payload = &got_hook[0]["payload"];
    assert_eq!(payload["match"]["bundle_uuid"], bundle_uuid.as_str());
    assert_eq!(payload["subscription_id"], subscription.as_str());
    assert_eq!(payload["attachments"]["species"], "Homo sapiens", "{payload}");
    let mine: Value = serde_json::from_str(&hca.run(&["dss", "get-subscriptions", "--replica", "aws"])).unwrap();
    assert_eq!(mine["subscriptions"][0]["uuid"], subscription.as_str(), "{mine}");
    assert!(mine["subscriptions"][0].get("hmac_secret_key").is_none());
    let one: Value =
        serde_json::from_str(&hca.run(&["dss", "get-subscription", "--replica", "aws", "--uuid", &subscription]))
            .unwrap();
    assert_eq!(one["callback_url"], receiver.url("/hook").as_str());
    // The delivery is logged just after the receiver answered.
    let t = std::time::Instant::now();
    loop {
        let log: Value = serde_json::from_str(&hca.run(&[
            "dss",
            "get-subscriptions-deliveries",
            "--replica",
            "aws",
            "--uuid",
            &subscription,
        ]))
        .unwrap();
        if log["deliveries"][0]["outcome"] == "delivered" {
            break;
        }
        assert!(t.elapsed().as_secs() < 30, "{log}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let deleted: Value = serde_json::from_str(&hca.run(&[
        "dss",
        "delete-subscription",
        "--replica",
        "aws",
        "--uuid",
        &subscription,
    ]))
    .unwrap();
    assert!(deleted["timeDeleted"].is_string(), "{deleted}");
    let mine: Value = serde_json::from_str(&hca.run(&["dss", "get-subscriptions", "--replica", "aws"])).unwrap();
    assert_eq!(mine["subscriptions"], json!([]));

    // Replicated: the bundle and every file reach gcp (S3 → fake-gcs, streamed and
    // verified; the large file by its own job, which the bundle waits for) and the local
    // third replica, whose name the CLI knows from our OpenAPI document.
    let t = std::time::Instant::now();
    let http = reqwest::blocking::Client::new();
    for replica in ["gcp", "spare"] {
        loop {
            let r = http
                .get(format!("{}/v1/bundles/{bundle_uuid}?replica={replica}", server.url))
                .send()
                .unwrap();
            if r.status() == 200 {
                break;
            }
            assert!(t.elapsed().as_secs() < 120, "bundle not in {replica}: {}", r.status());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    eprintln!(
        "replicated to gcp and spare {:.1} s after the upload",
        t.elapsed().as_secs_f64()
    );
    hca.download_matches("gcp", &bundle_uuid, &tmp.path().join("download-replicated"), &expected);
    let spare: Value = serde_json::from_str(&hca.run(&["dss", "get-bundles-all", "--replica", "spare"])).unwrap();
    assert_eq!(spare["bundles"][0]["uuid"], bundle_uuid.as_str(), "{spare}");

    // Checkout with the CLI's own commands (built from our OpenAPI document): the bundle's
    // files land under bundles/{uuid}.{version}/ in the aws checkout bucket.
    let started: Value = serde_json::from_str(&hca.run(&[
        "dss",
        "post-bundles-checkout",
        "--uuid",
        &bundle_uuid,
        "--replica",
        "aws",
    ]))
    .unwrap();
    let job = started["checkout_job_id"].as_str().unwrap().to_string();
    let t = std::time::Instant::now();
    let status = loop {
        let s: Value = serde_json::from_str(&hca.run(&[
            "dss",
            "get-bundles-checkout",
            "--checkout-job-id",
            &job,
            "--replica",
            "aws",
        ]))
        .unwrap();
        if s["status"] != "RUNNING" {
            break s;
        }
        assert!(t.elapsed().as_secs() < 120, "checkout still running: {s}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let version = got["bundle"]["version"].as_str().unwrap();
    let prefix = format!("bundles/{bundle_uuid}.{version}");
    assert_eq!(status["status"], "SUCCEEDED", "{status}");
    assert_eq!(status["location"], format!("s3://dss-checkout/{prefix}").as_str());
    rt.block_on(async {
        use dss::storage::Store;
        let checkout = common::cloud::s3_store(&s3, "dss-checkout");
        for (name, sha) in &expected {
            let (_, _, mut stream) = checkout.get_range(&format!("{prefix}/{name}"), None).await.unwrap();
            let mut h = <sha2::Sha256 as sha2::Digest>::new();
            while let Some(c) = futures::StreamExt::next(&mut stream).await {
                sha2::Digest::update(&mut h, c.unwrap());
            }
            assert_eq!(&hex::encode(sha2::Digest::finalize(h)), sha, "{name} checked out");
        }
        // Copies the caching rules do not keep are tagged for the lifecycle rule to
        // expire, as the original tagged them; cached metadata files are not.
        let tags = checkout
            .head_with_tags(&format!("{prefix}/reads.fastq"))
            .await
            .unwrap()
            .metadata;
        assert_eq!(tags.get("uncached").map(String::as_str), Some("True"), "{tags:?}");
        let small_json = walk(&src)
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "json") && std::fs::metadata(p).unwrap().len() < 12314)
            .unwrap();
        let name = small_json.strip_prefix(&src).unwrap().to_str().unwrap().to_string();
        let tags = checkout
            .head_with_tags(&format!("{prefix}/{name}"))
            .await
            .unwrap()
            .metadata;
        assert!(!tags.contains_key("uncached"), "{name}: {tags:?}");
    });

    // An upload into gcp: the CLI stages in S3 and writes the files to aws (its file PUTs
    // name no replica); the bundle PUT into gcp waits for their copies.
    let to_gcp = tmp.path().join("to-gcp");
    common::copy_tree(&fixtures().join("example_bundle"), &to_gcp);
    let small_expected = files_under(&to_gcp);
    let uploaded = hca.upload(&to_gcp, "gcp");
    let gcp_bundle = uploaded["bundle_uuid"].as_str().unwrap().to_string();
    hca.download_matches("gcp", &gcp_bundle, &tmp.path().join("download-to-gcp"), &small_expected);

    // The gcp replica: a file staged in GCS, ingested through the API, bundled, downloaded.
    let data = std::fs::read(fixtures().join("example_bundle/project_0.json")).unwrap();
    let c = dss::model::checksum::checksums_of(&data);
    rt.block_on(async {
        use dss::storage::Store;
        let mut md = BTreeMap::new();
        md.insert("hca-dss-sha256".to_string(), c.sha256.clone());
        md.insert("hca-dss-sha1".to_string(), c.sha1.clone());
        md.insert("hca-dss-s3_etag".to_string(), c.s3_etag.clone());
        md.insert("hca-dss-crc32c".to_string(), c.crc32c.clone());
        let opts = dss::storage::PutOptions {
            if_absent: false,
            content_type: Some("application/json".into()),
            metadata: md,
            expiring: false,
        };
        common::cloud::gcs_store(&gcs, "gs-staging")
            .put("up/project_0.json", data.clone().into(), opts)
            .await
            .unwrap();
    });
    let token = common::cloud::sa_token(&tmp.path().join("sa.json"));
    let fu = uuid::Uuid::new_v4().to_string();
    let v = "2024-05-01T000000.000000Z";
    let r = http
        .put(format!("{}/v1/files/{fu}?version={v}", server.url))
        .bearer_auth(&token)
        .json(&json!({"source_url": "gs://gs-staging/up/project_0.json", "creator_uid": 0}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    let gb = uuid::Uuid::new_v4().to_string();
    let r = http
        .put(format!("{}/v1/bundles/{gb}?version={v}&replica=gcp", server.url))
        .bearer_auth(&token)
        .json(&json!({"creator_uid": 0, "files": [{"uuid": fu, "version": v, "name": "project_0.json", "indexed": true}]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let gcp_dir = tmp.path().join("download-gcp");
    hca.run(&[
        "dss",
        "download",
        "--replica",
        "gcp",
        "--bundle-uuid",
        &gb,
        "--download-dir",
        gcp_dir.to_str().unwrap(),
    ]);
    let got = files_under(&gcp_dir);
    assert_eq!(got.get("project_0.json"), Some(&c.sha256));

    // The same client through the edge worker: an upload (staging in S3, file and bundle
    // PUTs forwarded to the backend, tokens checked at the edge) and a download whose
    // redirects the worker answers from moto.
    let worker = start_worker(
        &cloud_bindings(
            &server.url,
            &s3,
            &gcs,
            json!({
                "DSS_TRUSTED_JWKS": std::fs::read_to_string(&jwks).unwrap(),
                "DSS_AUTHORIZED_DOMAINS": SA_DOMAIN,
            }),
        ),
        tmp.path().join("worker.log"),
    );
    let edge_dir = tmp.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let via_edge = Hca {
        config: hca_config(&edge_dir, &worker.url),
        ..hca
    };
    let small = tmp.path().join("small");
    common::copy_tree(&fixtures().join("example_bundle"), &small);
    let expected = files_under(&small);
    let uploaded = via_edge.upload(&small, "aws");
    let edge_bundle = uploaded["bundle_uuid"].as_str().unwrap().to_string();
    via_edge.download_matches("aws", &edge_bundle, &tmp.path().join("download-edge"), &expected);
    drop(worker);
    drop(server);
}

/// A file of `tests/support`.
fn fixtures_support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support").join(name)
}
