//! Test harness: an app on a temp data dir, requests through the one router,
//! tokens from a test key trusted as the dev issuer.
#![allow(dead_code)]

pub mod binary;
pub mod cloud;
pub mod emulators;
pub mod postgres;
pub mod worker;

use bytes::Bytes;
use dss::api::Body;
use dss::auth::dev::DevIssuer;
use dss::server::{build_app, dev_issuer_dir, NativeApp, ServeConfig};
use futures::StreamExt;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const V1: &str = "2017-06-16T193604.240704Z";
pub const V2: &str = "2017-06-18T075702.020366Z";
pub const ADMIN: &str = "admin@example.org";

/// One RSA key per test binary (generation is the slow part).
pub fn test_key_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| {
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    })
}

pub struct Env {
    pub app: std::sync::Arc<NativeApp>,
    pub dir: tempfile::TempDir,
    pub cfg: ServeConfig,
    pub issuer: DevIssuer,
}

pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
    /// Assert status and, for errors, the DSS error shape and code.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        let j = self.json();
        assert_eq!(j["status"], status);
        assert_eq!(j["code"], code, "body: {j}");
        assert!(j["title"].is_string());
        assert!(j.get("stacktrace").is_some());
    }
}

impl Env {
    pub fn new() -> Env {
        Self::with(|_| {})
    }

    pub fn with(tweak: impl FnOnce(&mut ServeConfig)) -> Env {
        Self::in_dir(tempfile::tempdir().unwrap(), tweak)
    }

    /// An app on an existing data dir (to test what a restarted server finds).
    pub fn in_dir(dir: tempfile::TempDir, tweak: impl FnOnce(&mut ServeConfig)) -> Env {
        let mut cfg = ServeConfig::for_dir(dir.path());
        cfg.public_url_opt = Some("http://dss.test".into());
        cfg.admin_user_emails = Some(ADMIN.into());
        tweak(&mut cfg);
        let dev_dir = dev_issuer_dir(dir.path());
        std::fs::create_dir_all(&dev_dir).unwrap();
        std::fs::write(dev_dir.join("key.pem"), test_key_pem()).unwrap();
        let app = build_app(&cfg).unwrap();
        let issuer = DevIssuer::load_or_create(&dev_dir, "http://dss.test/").unwrap();
        Env { app, dir, cfg, issuer }
    }

    /// The jobs of `kind` in the server's embedded queue, newest first.
    pub async fn jobs(&self, kind: &str) -> Vec<dss::jobs::queue::Job> {
        use dss::jobs::queue::JobQueue;
        let q = dss::jobs::queue::disk::DiskQueue::open(&self.data().join("jobs/queue.sqlite")).unwrap();
        q.list(&dss::jobs::queue::JobFilter {
            kind: Some(kind.into()),
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
    }

    /// Wait until every job of `kind` has completed (at most `secs`); the jobs.
    pub async fn jobs_completed(&self, kind: &str, secs: u64) -> Vec<dss::jobs::queue::Job> {
        let t = std::time::Instant::now();
        loop {
            let jobs = self.jobs(kind).await;
            if jobs.iter().all(|j| j.state == dss::jobs::queue::JobState::Completed) {
                return jobs;
            }
            assert!(
                t.elapsed().as_secs() < secs,
                "{kind} jobs not completed in {secs} s: {jobs:#?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// `method` `uri` (with the user's token) until it answers `status` (at most `secs`).
    #[track_caller]
    pub fn eventually<'a>(
        &'a self,
        method: &'a str,
        uri: &'a str,
        status: u16,
        secs: u64,
    ) -> impl std::future::Future<Output = Resp> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let t = std::time::Instant::now();
            loop {
                let r = self.req(method, uri, Some(&self.user()), "", &[]).await;
                if r.status == status {
                    return r;
                }
                assert!(
                    t.elapsed().as_secs() < secs,
                    "{caller}: {method} {uri} still {} after {secs} s: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }

    /// GET as a client of the checkout protocol does: 301s (while a checkout copy is
    /// made) followed with their token, without waiting their `Retry-After`; the first
    /// other answer.
    pub async fn follow(&self, uri: &str) -> Resp {
        let t = std::time::Instant::now();
        let mut next = uri.to_string();
        loop {
            let r = self.get(&next).await;
            if r.status != 301 {
                return r;
            }
            next = local_part(r.header("location").unwrap());
            assert!(t.elapsed().as_secs() < 60, "{uri}: still 301 after 60 s");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Download a file as a client does: [`Env::follow`], then the 302's location.
    pub async fn download(&self, uri: &str) -> Resp {
        let r = self.follow(uri).await;
        assert_eq!(r.status, 302, "GET {uri}: {}", String::from_utf8_lossy(&r.body));
        self.get(&local_part(r.header("location").unwrap())).await
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn main_dir(&self, replica: &str) -> PathBuf {
        self.data().join(replica).join("main")
    }

    pub fn token(&self, email: &str, group: Option<&str>) -> String {
        self.issuer
            .mint(
                email,
                group,
                "https://dev.data.humancellatlas.org/",
                chrono::Duration::hours(1),
            )
            .unwrap()
    }

    pub fn user(&self) -> String {
        self.token("user@example.org", Some("hca"))
    }

    pub fn admin(&self) -> String {
        self.token(ADMIN, Some("hca"))
    }

    pub async fn req(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut b = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "dss.test");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self.app.handle(b.body(Bytes::from(body.to_string())).unwrap()).await;
        let (parts, body) = resp.into_parts();
        let body = match body {
            Body::Full(b) => b,
            Body::Stream(mut s) => {
                let mut v = Vec::new();
                while let Some(c) = s.next().await {
                    v.extend_from_slice(&c.unwrap());
                }
                Bytes::from(v)
            }
        };
        Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    /// HEAD `uri`, without a token.
    pub async fn head(&self, uri: &str) -> Resp {
        self.req("HEAD", uri, None, "", &[]).await
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.req("GET", uri, None, "", &[]).await
    }

    /// Put `data` in the staging dir and return its file:// URL.
    pub fn stage(&self, name: &str, data: &[u8]) -> String {
        let dir = self.cfg.staging_dir.join(uuid::Uuid::new_v4().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        url::Url::from_file_path(std::fs::canonicalize(&p).unwrap())
            .unwrap()
            .to_string()
    }

    /// PUT /v1/files through the API; returns the response.
    pub async fn put_file(&self, uuid: &str, version: &str, source_url: &str, replica: Option<&str>) -> Resp {
        let body = format!(r#"{{"source_url": "{source_url}", "creator_uid": 0}}"#);
        let q = replica.map(|r| format!("&replica={r}")).unwrap_or_default();
        self.req(
            "PUT",
            &format!("/v1/files/{uuid}?version={version}{q}"),
            Some(&self.user()),
            &body,
            &[],
        )
        .await
    }

    /// Stage and ingest a file; returns its uuid.
    pub async fn file(&self, name: &str, data: &[u8]) -> String {
        let u = uuid::Uuid::new_v4().to_string();
        let src = self.stage(name, data);
        let r = self.put_file(&u, V1, &src, None).await;
        assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
        u
    }

    pub async fn put_bundle(
        &self,
        uuid: &str,
        version: &str,
        files: &[(&str, &str, &str)],
        token: Option<&str>,
    ) -> Resp {
        self.put_bundle_in("aws", uuid, version, files, token).await
    }

    /// [`Env::put_bundle`] into `replica`.
    pub async fn put_bundle_in(
        &self,
        replica: &str,
        uuid: &str,
        version: &str,
        files: &[(&str, &str, &str)],
        token: Option<&str>,
    ) -> Resp {
        let files: Vec<Value> = files
            .iter()
            .map(|(name, u, v)| serde_json::json!({"uuid": u, "version": v, "name": name, "indexed": false}))
            .collect();
        let body = serde_json::json!({"files": files, "creator_uid": 12}).to_string();
        let t = token.map(str::to_string).unwrap_or_else(|| self.user());
        self.req(
            "PUT",
            &format!("/v1/bundles/{uuid}?version={version}&replica={replica}"),
            Some(&t),
            &body,
            &[],
        )
        .await
    }

    /// Copy the original's objects (fixtures/original-bucket) into a replica's main dir.
    pub fn load_original_bucket(&self, replica: &str) {
        let src = fixtures().join("original-bucket");
        copy_tree(&src, &self.main_dir(replica));
    }
}

pub fn fixtures() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for cand in [here.join("../shared/fixtures"), here.join("shared/fixtures")] {
        if cand.is_dir() {
            return cand;
        }
    }
    panic!("fixtures not found: expected ../shared/fixtures beside the project");
}

pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
            let mut perm = std::fs::metadata(&to).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&to, perm).unwrap();
        }
    }
}

/// Path and query of an absolute URL, for sending it back through the router.
pub fn local_part(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    match u.query() {
        Some(q) => format!("{}?{}", u.path(), q),
        None => u.path().to_string(),
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
