//! Google Cloud Storage over the JSON API (`/storage/v1`, `/upload/storage/v1`).
//!
//! Everything goes through [`HttpClient`] and waits through [`Sleeper`], so this backend
//! compiles for wasm32 too: no tokio, no reqwest here.
//!
//! * Auth: a service-account key is exchanged for an OAuth2 access token (JWT bearer
//!   grant, RS256), cached until five minutes before it expires. Against an emulator
//!   (`STORAGE_EMULATOR_HOST`) no credentials are loaded and no auth is sent.
//! * Writes: `uploadType=multipart` for whole objects; streams of unknown length are
//!   buffered up to [`SMALL_UPLOAD`] and then go through a resumable session in chunks of
//!   [`CHUNK`] (a multiple of 256 KiB). A failed stream cancels the session, so nothing
//!   becomes visible. Create-only writes carry `ifGenerationMatch=0`.
//! * Reads: `objects.get` for metadata, then `alt=media` pinned to that generation, so the
//!   bytes streamed always belong to the metadata returned.
//! * Copies: `objects.rewrite`, looping on `rewriteToken`.
//! * Download URLs: V4 signatures (`GOOG4-HMAC-SHA256` with HMAC keys when configured,
//!   else `GOOG4-RSA-SHA256` with the service-account key). Without either (emulator),
//!   a plain `{endpoint}/{bucket}/{key}` URL, which fake-gcs-server serves.
//! * Failures: 429, 5xx and transport errors are retried [`MAX_ATTEMPTS`] times in all,
//!   with exponential backoff and full jitter, then reported as
//!   [`StoreError::Unavailable`].

use super::*;
use crate::http::{HttpClient, HttpError, ReqBody};
use crate::model::platform::{box_stream, Sleeper};
use crate::model::Clock;
use bytes::BytesMut;
use futures::StreamExt;
use http::{header, HeaderName, HeaderValue, Method, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rsa::RsaPrivateKey;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

/// The public GCS endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
/// The OAuth2 scope requested for the access token.
pub const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// Streams up to this size are written with one multipart upload.
pub const SMALL_UPLOAD: usize = 8 * 1024 * 1024;
/// Chunk size of resumable uploads (GCS wants multiples of 256 KiB).
pub const CHUNK: usize = 32 * 256 * 1024;
/// Attempts per request (the first try included) before [`StoreError::Unavailable`].
pub const MAX_ATTEMPTS: u32 = 5;
/// Longest signed-URL lifetime GCS accepts (7 days).
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Tokens are refreshed this long before they expire.
const TOKEN_MARGIN_SECS: i64 = 300;
/// Backoff before retry n (from 0) is uniform in `0..=min(BACKOFF_CAP, BACKOFF_BASE * 2^n)`.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(4);
/// A rewrite that needs more calls than this is abandoned.
const MAX_REWRITE_CALLS: u32 = 10_000;
/// Metadata/generation races tolerated in one `get_range` before giving up.
const MAX_GENERATION_RACES: u32 = 3;

/// Everything but RFC 3986 unreserved characters is escaped (so `/` becomes `%2F`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// As [`COMPONENT`], but `/` stays: object names in XML-API (download) paths.
const PATH: &AsciiSet = &COMPONENT.remove(b'/');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

fn enc_path(s: &str) -> String {
    utf8_percent_encode(s, PATH).to_string()
}

/// Problems loading GCS configuration.
#[derive(Debug, thiserror::Error)]
pub enum GcsConfigError {
    /// The credentials file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The credentials are not a usable service-account key.
    #[error("service-account key: {0}")]
    Key(String),
}

/// A service-account key, as in the JSON file Google issues.
#[derive(Clone)]
pub struct ServiceAccountKey {
    /// The account (`…@….iam.gserviceaccount.com`): JWT issuer and V4 credential.
    pub client_email: String,
    /// Id of the key, sent as the JWT `kid`.
    pub private_key_id: String,
    /// Where access tokens are obtained.
    pub token_uri: String,
    /// The project of the account, if the file names one (used by `create_bucket`).
    pub project_id: Option<String>,
    key: RsaPrivateKey,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: String,
    #[serde(default)]
    token_uri: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
}

impl ServiceAccountKey {
    /// Parse a service-account JSON key file (`private_key` is PKCS#8 PEM).
    pub fn from_json(json: &str) -> Result<Self, GcsConfigError> {
        use rsa::pkcs8::DecodePrivateKey;
        let f: KeyFile = serde_json::from_str(json).map_err(|e| GcsConfigError::Key(e.to_string()))?;
        let key = RsaPrivateKey::from_pkcs8_pem(&f.private_key).map_err(|e| GcsConfigError::Key(e.to_string()))?;
        Ok(ServiceAccountKey {
            client_email: f.client_email,
            private_key_id: f.private_key_id,
            token_uri: f
                .token_uri
                .unwrap_or_else(|| "https://oauth2.googleapis.com/token".to_string()),
            project_id: f.project_id,
            key,
        })
    }

    /// A key from its parts (for tests and for keys held elsewhere).
    pub fn new(client_email: &str, private_key_id: &str, token_uri: &str, key: RsaPrivateKey) -> Self {
        ServiceAccountKey {
            client_email: client_email.to_string(),
            private_key_id: private_key_id.to_string(),
            token_uri: token_uri.to_string(),
            project_id: None,
            key,
        }
    }

    /// The signed JWT-bearer assertion for the token exchange, valid for one hour from `now`.
    fn assertion(&self, now: DateTime<Utc>) -> StoreResult<String> {
        use jwt_compact::{alg::Rsa, AlgorithmExt, Claims, Header};
        #[derive(serde::Serialize)]
        struct Grant<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
        }
        let mut claims = Claims::new(Grant {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
        });
        claims.issued_at = Some(now);
        claims.expiration = Some(now + chrono::Duration::hours(1));
        let mut header = Header::empty().with_token_type("JWT");
        if !self.private_key_id.is_empty() {
            header = header.with_key_id(self.private_key_id.clone());
        }
        Rsa::rs256()
            .token(&header, &claims, &self.key)
            .map_err(|e| StoreError::Other(format!("signing the token request: {e}")))
    }
}

/// Where and how to reach a bucket.
#[derive(Debug, Clone)]
pub struct GcsConfig {
    /// The bucket.
    pub bucket: String,
    /// Base URL of the JSON API, without a trailing slash ([`DEFAULT_ENDPOINT`], or an emulator).
    pub endpoint: String,
    /// Service account for OAuth2 and RSA-signed URLs; `None` sends no auth (emulators).
    pub credentials: Option<ServiceAccountKey>,
    /// HMAC key `(access_id, secret)`: when set, download URLs are HMAC-signed.
    pub hmac: Option<(String, String)>,
}

impl GcsConfig {
    /// An unauthenticated configuration for an emulator at `endpoint`.
    pub fn emulator(bucket: &str, endpoint: &str) -> Self {
        GcsConfig {
            bucket: bucket.to_string(),
            endpoint: normalize_endpoint(endpoint),
            credentials: None,
            hmac: None,
        }
    }

    /// Configuration from the environment, as Google's client libraries read it:
    /// `STORAGE_EMULATOR_HOST` (an emulator: `http://` is added when it has no scheme,
    /// and no credentials are loaded or sent), else the public endpoint with the
    /// service-account file named by `GOOGLE_APPLICATION_CREDENTIALS`, and optionally
    /// `GCS_HMAC_ACCESS_ID` / `GCS_HMAC_SECRET` for HMAC-signed download URLs.
    pub fn from_env(bucket: &str) -> Result<Self, GcsConfigError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(host) = var("STORAGE_EMULATOR_HOST") {
            return Ok(Self::emulator(bucket, &host));
        }
        let credentials = match var("GOOGLE_APPLICATION_CREDENTIALS") {
            Some(path) => {
                let json = std::fs::read_to_string(&path).map_err(|source| GcsConfigError::Io { path, source })?;
                Some(ServiceAccountKey::from_json(&json)?)
            }
            None => None,
        };
        let hmac = match (var("GCS_HMAC_ACCESS_ID"), var("GCS_HMAC_SECRET")) {
            (Some(id), Some(secret)) => Some((id, secret)),
            _ => None,
        };
        Ok(GcsConfig {
            bucket: bucket.to_string(),
            endpoint: DEFAULT_ENDPOINT.to_string(),
            credentials,
            hmac,
        })
    }
}

fn normalize_endpoint(e: &str) -> String {
    let e = e.trim().trim_end_matches('/');
    if e.contains("://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

struct CachedToken {
    token: String,
    expires_at: DateTime<Utc>,
}

/// One request, kept so that it can be sent again on a retry.
#[derive(Clone)]
struct Req {
    method: Method,
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    /// A large upload body: sent without the client's whole-request timeout.
    upload: bool,
}

impl Req {
    fn new(method: Method, url: String) -> Self {
        Req {
            method,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
            upload: false,
        }
    }

    /// Mark as a large upload (see [`Req::upload`]).
    fn upload(mut self) -> Self {
        self.upload = true;
        self
    }

    fn header(mut self, name: HeaderName, value: &str) -> StoreResult<Self> {
        let v = HeaderValue::from_str(value).map_err(|e| StoreError::Other(format!("header {name}: {e}")))?;
        self.headers.push((name, v));
        Ok(self)
    }

    fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    fn build<B>(&self, token: Option<&str>, body: B) -> StoreResult<http::Request<B>> {
        let mut b = http::Request::builder().method(self.method.clone()).uri(&self.url);
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(body)
            .map_err(|e| StoreError::Other(format!("request {}: {e}", self.url)))
    }
}

fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

fn text(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(512)]);
    s.trim().to_string()
}

/// The meaning of a failed response for object `key`.
fn status_error(key: &str, status: StatusCode, body: &[u8]) -> StoreError {
    match status.as_u16() {
        404 => StoreError::NotFound(key.to_string()),
        412 => StoreError::AlreadyExists(key.to_string()),
        416 => StoreError::RangeNotSatisfiable,
        s if retryable(status) => StoreError::Unavailable(format!("GCS answered {s} for {key}: {}", text(body))),
        s => StoreError::Other(format!("GCS answered {s} for {key}: {}", text(body))),
    }
}

/// `objects` resource, the fields we use.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectResource {
    #[serde(default)]
    size: Option<serde_json::Value>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    updated: Option<DateTime<Utc>>,
    #[serde(default)]
    time_created: Option<DateTime<Utc>>,
    #[serde(default)]
    generation: Option<serde_json::Value>,
}

fn json_u64(v: &Option<serde_json::Value>) -> Option<u64> {
    match v {
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListResponse {
    #[serde(default)]
    items: Vec<ListItem>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct ListItem {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RewriteResponse {
    #[serde(default)]
    done: bool,
    #[serde(default)]
    rewrite_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// Where a resumable chunk upload ended.
enum Chunk {
    /// The server holds bytes `0..n`; the upload continues.
    Persisted(u64),
    /// The object is written.
    Done,
}

/// A bucket in Google Cloud Storage.
pub struct GcsStore<H, T> {
    bucket: String,
    endpoint: String,
    credentials: Option<ServiceAccountKey>,
    hmac: Option<(String, String)>,
    http: H,
    sleeper: T,
    clock: Arc<dyn Clock>,
    token: Mutex<Option<CachedToken>>,
}

impl<H: HttpClient, T: Sleeper> GcsStore<H, T> {
    /// A store for `cfg.bucket`, calling out through `http`, backing off with `sleeper`,
    /// and signing and caching tokens by `clock`.
    pub fn new(cfg: GcsConfig, http: H, sleeper: T, clock: Arc<dyn Clock>) -> Self {
        GcsStore {
            bucket: cfg.bucket,
            endpoint: normalize_endpoint(&cfg.endpoint),
            credentials: cfg.credentials,
            hmac: cfg.hmac,
            http,
            sleeper,
            clock,
            token: Mutex::new(None),
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Create the bucket (in the service account's project); an existing bucket is fine.
    /// For tests against emulators, and for operators.
    pub async fn create_bucket(&self) -> StoreResult<()> {
        let project = self
            .credentials
            .as_ref()
            .and_then(|c| c.project_id.clone())
            .unwrap_or_else(|| "dss".to_string());
        let url = format!("{}/storage/v1/b?project={}", self.endpoint, enc(&project));
        let body = serde_json::json!({ "name": self.bucket }).to_string();
        let req = Req::new(Method::POST, url)
            .header(header::CONTENT_TYPE, "application/json")?
            .body(body);
        let resp = self.call(&req).await?;
        match resp.status().as_u16() {
            200..=299 | 409 => Ok(()),
            _ => Err(status_error(&self.bucket, resp.status(), resp.body())),
        }
    }

    fn object_url(&self, key: &str) -> String {
        format!("{}/storage/v1/b/{}/o/{}", self.endpoint, enc(&self.bucket), enc(key))
    }

    fn upload_url(&self, kind: &str, if_absent: bool) -> String {
        let mut u = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType={kind}",
            self.endpoint,
            enc(&self.bucket)
        );
        if if_absent {
            u.push_str("&ifGenerationMatch=0");
        }
        u
    }

    // ----- auth -----

    fn token_slot(&self) -> std::sync::MutexGuard<'_, Option<CachedToken>> {
        // The slot holds a complete value or nothing; a poisoned lock is still consistent.
        self.token.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A valid access token, exchanging the service-account key for one when the cached
    /// token is missing or within five minutes of expiry. `None` without credentials.
    async fn access_token(&self) -> StoreResult<Option<String>> {
        let Some(sa) = &self.credentials else { return Ok(None) };
        let now = self.clock.now();
        let cached = {
            let slot = self.token_slot();
            slot.as_ref()
                .filter(|t| now + chrono::Duration::seconds(TOKEN_MARGIN_SECS) < t.expires_at)
                .map(|t| t.token.clone())
        };
        if let Some(t) = cached {
            return Ok(Some(t));
        }
        let assertion = sa.assertion(now)?;
        let form = format!("grant_type={}&assertion={}", enc(JWT_BEARER), enc(&assertion));
        let req = Req::new(Method::POST, sa.token_uri.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")?
            .body(form);
        let resp = self.send_retrying(&req, None).await?;
        if !resp.status().is_success() {
            let e = format!("token exchange answered {}: {}", resp.status(), text(resp.body()));
            return Err(if retryable(resp.status()) {
                StoreError::Unavailable(e)
            } else {
                StoreError::Other(e)
            });
        }
        let t: TokenResponse = serde_json::from_slice(resp.body())
            .map_err(|e| StoreError::Other(format!("token exchange response: {e}")))?;
        let expires_at = now + chrono::Duration::seconds(t.expires_in.unwrap_or(3600));
        *self.token_slot() = Some(CachedToken {
            token: t.access_token.clone(),
            expires_at,
        });
        Ok(Some(t.access_token))
    }

    fn forget_token(&self) {
        *self.token_slot() = None;
    }

    // ----- sending -----

    /// Wait before retry number `attempt` (0-based): full jitter over an exponential cap.
    async fn backoff(&self, attempt: u32) {
        let cap = BACKOFF_CAP.min(BACKOFF_BASE * 2u32.saturating_pow(attempt));
        let ms = cap.as_millis() as u64;
        let wait = rand_core::RngCore::next_u64(&mut rand_core::OsRng) % (ms + 1);
        self.sleeper.sleep(Duration::from_millis(wait)).await;
    }

    /// One attempt at `req`, with the whole (small) response body. Uploads go through the
    /// streaming path, which has connect and read timeouts but no limit on the whole
    /// exchange, so that slow links can still move a chunk.
    async fn exchange(&self, req: &Req, token: Option<&str>) -> StoreResult<Result<http::Response<Bytes>, HttpError>> {
        if !req.upload {
            return Ok(self.http.send(req.build(token, req.body.clone())?).await);
        }
        let resp = match self
            .http
            .send_stream(req.build(token, ReqBody::Bytes(req.body.clone()))?)
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let (parts, mut stream) = resp.into_parts();
        let mut body = BytesMut::new();
        while let Some(c) = stream.next().await {
            match c {
                Ok(c) => body.extend_from_slice(&c),
                Err(e) => return Ok(Err(HttpError::Transport(e.to_string()))),
            }
        }
        Ok(Ok(http::Response::from_parts(parts, body.freeze())))
    }

    /// Send `req` with a fixed `token`, retrying transport errors and retryable statuses.
    /// Returns the last response if it is not retryable; `Unavailable` once retries run out.
    async fn send_retrying(&self, req: &Req, token: Option<&str>) -> StoreResult<http::Response<Bytes>> {
        let mut attempt = 0;
        loop {
            let last = match self.exchange(req, token).await? {
                Ok(resp) if !retryable(resp.status()) => return Ok(resp),
                Ok(resp) => format!("{} answered {}: {}", req.url, resp.status(), text(resp.body())),
                Err(HttpError::Transport(e)) => format!("{}: {e}", req.url),
            };
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                return Err(StoreError::Unavailable(format!("after {attempt} attempts: {last}")));
            }
            tracing::debug!(attempt, "GCS request failed, retrying: {last}");
            self.backoff(attempt - 1).await;
        }
    }

    /// Send `req` authenticated, with retries; a 401 refreshes the token once.
    async fn call(&self, req: &Req) -> StoreResult<http::Response<Bytes>> {
        let token = self.access_token().await?;
        let resp = self.send_retrying(req, token.as_deref()).await?;
        if resp.status() == StatusCode::UNAUTHORIZED && token.is_some() {
            self.forget_token();
            let token = self.access_token().await?;
            return self.send_retrying(req, token.as_deref()).await;
        }
        Ok(resp)
    }

    /// As [`Self::call`], with the response body streamed (nothing is retried once the
    /// body has been handed out).
    async fn call_stream(&self, req: &Req) -> StoreResult<http::Response<ByteStream>> {
        let mut token = self.access_token().await?;
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            let r = req.build(token.as_deref(), ReqBody::Bytes(req.body.clone()))?;
            let last = match self.http.send_stream(r).await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && token.is_some() && !refreshed => {
                    refreshed = true;
                    self.forget_token();
                    token = self.access_token().await?;
                    continue;
                }
                Ok(resp) if !retryable(resp.status()) => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    format!(
                        "{} answered {status}: {}",
                        req.url,
                        text(&drain(resp.into_body()).await)
                    )
                }
                Err(HttpError::Transport(e)) => format!("{}: {e}", req.url),
            };
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                return Err(StoreError::Unavailable(format!("after {attempt} attempts: {last}")));
            }
            tracing::debug!(attempt, "GCS request failed, retrying: {last}");
            self.backoff(attempt - 1).await;
        }
    }

    // ----- reads -----

    async fn object_resource(&self, key: &str) -> StoreResult<ObjectResource> {
        if key.is_empty() {
            return Err(StoreError::NotFound(key.to_string()));
        }
        let resp = self.call(&Req::new(Method::GET, self.object_url(key))).await?;
        if !resp.status().is_success() {
            return Err(status_error(key, resp.status(), resp.body()));
        }
        serde_json::from_slice(resp.body()).map_err(|e| StoreError::Other(format!("object resource of {key}: {e}")))
    }

    fn meta_of(&self, r: &ObjectResource) -> ObjectMeta {
        ObjectMeta {
            size: json_u64(&r.size).unwrap_or(0),
            content_type: r.content_type.clone().filter(|c| !c.is_empty()),
            metadata: r.metadata.clone().unwrap_or_default(),
            last_modified: r.updated.or(r.time_created).unwrap_or_else(|| self.clock.now()),
        }
    }

    // ----- writes -----

    async fn multipart(&self, key: &str, data: Bytes, opts: &PutOptions) -> StoreResult<()> {
        let meta = resource_json(Some(key), opts.content_type.as_deref(), &opts.metadata);
        let boundary = boundary_for(&data);
        let media_type = opts.content_type.as_deref().unwrap_or("application/octet-stream");
        if media_type.chars().any(|c| c.is_control()) {
            return Err(StoreError::Other(format!("content type of {key}: control characters")));
        }
        let mut body = BytesMut::with_capacity(data.len() + meta.len() + 256);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n").as_bytes(),
        );
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {media_type}\r\n\r\n").as_bytes());
        body.extend_from_slice(&data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let req = Req::new(Method::POST, self.upload_url("multipart", opts.if_absent))
            .header(header::CONTENT_TYPE, &format!("multipart/related; boundary={boundary}"))?
            .body(body.freeze())
            .upload();
        let resp = self.call(&req).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(status_error(key, resp.status(), resp.body()))
        }
    }

    /// Open a resumable upload session; returns its URI.
    async fn start_session(&self, key: &str, opts: &PutOptions) -> StoreResult<String> {
        let meta = resource_json(Some(key), opts.content_type.as_deref(), &opts.metadata);
        let mut req = Req::new(Method::POST, self.upload_url("resumable", opts.if_absent))
            .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")?
            .body(meta);
        if let Some(ct) = &opts.content_type {
            req = req.header(HeaderName::from_static("x-upload-content-type"), ct)?;
        }
        let resp = self.call(&req).await?;
        if !resp.status().is_success() {
            return Err(status_error(key, resp.status(), resp.body()));
        }
        resp.headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| StoreError::Other(format!("resumable upload of {key}: no session URI")))
    }

    /// Send `data` as bytes `offset..` of the upload (`total` when this is the last piece).
    /// A failed attempt is followed by a status query, so the caller resumes from what
    /// the server actually holds.
    async fn upload_chunk(
        &self,
        key: &str,
        session: &str,
        offset: u64,
        data: Bytes,
        total: Option<u64>,
    ) -> StoreResult<Chunk> {
        let total_s = total.map_or_else(|| "*".to_string(), |t| t.to_string());
        let put = if data.is_empty() {
            format!("bytes */{total_s}")
        } else {
            format!("bytes {}-{}/{total_s}", offset, offset + data.len() as u64 - 1)
        };
        let put = Req::new(Method::PUT, session.to_string())
            .header(header::CONTENT_RANGE, &put)?
            .body(data)
            .upload();
        let query =
            Req::new(Method::PUT, session.to_string()).header(header::CONTENT_RANGE, &format!("bytes */{total_s}"))?;
        let mut attempt = 0;
        let mut req = &put;
        loop {
            let token = self.access_token().await?;
            let last = match self.exchange(req, token.as_deref()).await? {
                Ok(resp) if resp.status().is_success() => return Ok(Chunk::Done),
                Ok(resp) if resp.status().as_u16() == 308 => {
                    let held = resp
                        .headers()
                        .get(header::RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|r| r.strip_prefix("bytes=0-"))
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .map_or(0, |n| n + 1);
                    return Ok(Chunk::Persisted(held));
                }
                Ok(resp) if !retryable(resp.status()) && resp.status() != StatusCode::UNAUTHORIZED => {
                    return Err(status_error(key, resp.status(), resp.body()))
                }
                Ok(resp) => {
                    if resp.status() == StatusCode::UNAUTHORIZED {
                        self.forget_token();
                    }
                    format!("upload of {key} answered {}: {}", resp.status(), text(resp.body()))
                }
                Err(HttpError::Transport(e)) => format!("upload of {key}: {e}"),
            };
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                return Err(StoreError::Unavailable(format!("after {attempt} attempts: {last}")));
            }
            tracing::debug!(attempt, "GCS upload chunk failed, asking what arrived: {last}");
            self.backoff(attempt - 1).await;
            req = &query;
        }
    }

    /// The resumable part of `put_stream`: `buf` holds what was read so far (more than
    /// [`SMALL_UPLOAD`]), `data` the rest.
    async fn resumable(&self, key: &str, session: &str, mut buf: BytesMut, data: &mut ByteStream) -> StoreResult<u64> {
        let mut offset: u64 = 0; // bytes the server holds; `buf` starts there
        let mut ended = false;
        loop {
            // Fill until more than a chunk is buffered (so a full chunk is never the last).
            while !ended && buf.len() <= CHUNK {
                match data.next().await {
                    Some(Ok(b)) => buf.extend_from_slice(&b),
                    Some(Err(e)) => return Err(StoreError::Other(format!("reading the upload of {key}: {e}"))),
                    None => ended = true,
                }
            }
            let (piece, total) = if ended {
                (buf.clone().freeze(), Some(offset + buf.len() as u64))
            } else {
                (Bytes::copy_from_slice(&buf[..CHUNK]), None)
            };
            let sent = piece.len() as u64;
            match self.upload_chunk(key, session, offset, piece, total).await? {
                Chunk::Done if ended => return Ok(offset + sent),
                Chunk::Done => return Err(StoreError::Other(format!("upload of {key} finished before its end"))),
                Chunk::Persisted(held) if held >= offset && held <= offset + sent => {
                    let _ = buf.split_to((held - offset) as usize);
                    offset = held;
                }
                Chunk::Persisted(held) => {
                    return Err(StoreError::Other(format!(
                        "upload of {key}: server holds {held} bytes, expected {offset}..={}",
                        offset + sent
                    )))
                }
            }
        }
    }

    async fn cancel_session(&self, session: &str) {
        // GCS answers 499 to a cancelled session; failures here leave an unfinished
        // session, which GCS discards after a week and which is never visible.
        if let Err(e) = self.call(&Req::new(Method::DELETE, session.to_string())).await {
            tracing::warn!("cancelling a GCS upload session: {e}");
        }
    }

    /// `objects.rewrite` from `src_bucket/src_key` to `dst_key` here, following rewrite tokens.
    async fn rewrite(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_key: &str,
        if_absent: bool,
        resource: Option<String>,
    ) -> StoreResult<()> {
        let base = format!(
            "{}/storage/v1/b/{}/o/{}/rewriteTo/b/{}/o/{}",
            self.endpoint,
            enc(src_bucket),
            enc(src_key),
            enc(&self.bucket),
            enc(dst_key)
        );
        let mut token: Option<String> = None;
        for _ in 0..MAX_REWRITE_CALLS {
            let mut params = Vec::new();
            if if_absent {
                params.push("ifGenerationMatch=0".to_string());
            }
            if let Some(t) = &token {
                params.push(format!("rewriteToken={}", enc(t)));
            }
            let url = if params.is_empty() {
                base.clone()
            } else {
                format!("{base}?{}", params.join("&"))
            };
            let mut req = Req::new(Method::POST, url);
            if let Some(r) = &resource {
                req = req.header(header::CONTENT_TYPE, "application/json")?.body(r.clone());
            }
            let resp = self.call(&req).await?;
            if !resp.status().is_success() {
                // 404 may be either object: report the one the caller asked about.
                let key = if resp.status() == StatusCode::NOT_FOUND {
                    src_key
                } else {
                    dst_key
                };
                return Err(status_error(key, resp.status(), resp.body()));
            }
            let r: RewriteResponse = serde_json::from_slice(resp.body())
                .map_err(|e| StoreError::Other(format!("rewrite of {src_key}: {e}")))?;
            if r.done {
                return Ok(());
            }
            token = r.rewrite_token.filter(|t| !t.is_empty());
            if token.is_none() {
                return Err(StoreError::Other(format!(
                    "rewrite of {src_key}: not done and no token"
                )));
            }
        }
        Err(StoreError::Unavailable(format!("rewrite of {src_key} did not finish")))
    }

    /// Refuse early when a create-only write targets an existing key. Not atomic: the
    /// `ifGenerationMatch=0` precondition on the write itself is the guarantee; this check
    /// spares a large transfer that would be refused at the end (and covers emulators
    /// that ignore preconditions on resumable uploads and rewrites).
    async fn refuse_existing(&self, key: &str) -> StoreResult<()> {
        match self.object_resource(key).await {
            Ok(_) => Err(StoreError::AlreadyExists(key.to_string())),
            Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    // ----- signing -----

    fn presign(&self, key: &str, expires_in: Duration, opts: &PresignOptions) -> StoreResult<String> {
        let mut params: Vec<(String, String)> = Vec::new();
        if let Some(d) = &opts.content_disposition {
            params.push(("response-content-disposition".into(), d.clone()));
        }
        if let Some(t) = &opts.content_type {
            params.push(("response-content-type".into(), t.clone()));
        }
        let path = format!("/{}/{}", enc_path(&self.bucket), enc_path(key));
        let signer = match (&self.hmac, &self.credentials) {
            (Some((id, secret)), _) => V4Signer::Hmac { id, secret },
            (None, Some(sa)) => V4Signer::Rsa(sa),
            (None, None) => {
                let q = canonical_query(&mut params);
                let sep = if q.is_empty() { "" } else { "?" };
                return Ok(format!("{}{path}{sep}{q}", self.endpoint));
            }
        };
        let url = url::Url::parse(&self.endpoint).map_err(|e| StoreError::Other(format!("endpoint: {e}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return Err(StoreError::Other(format!("endpoint {} has no host", self.endpoint))),
        };
        let origin = format!("{}://{host}", url.scheme());
        sign_v4(&signer, &origin, &host, &path, params, expires_in, self.clock.now())
    }
}

/// The JSON object resource of a write.
fn resource_json(name: Option<&str>, content_type: Option<&str>, metadata: &BTreeMap<String, String>) -> String {
    let mut m = serde_json::Map::new();
    if let Some(n) = name {
        m.insert("name".into(), n.into());
    }
    if let Some(ct) = content_type {
        m.insert("contentType".into(), ct.into());
    }
    if !metadata.is_empty() {
        let md: serde_json::Map<String, serde_json::Value> =
            metadata.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        m.insert("metadata".into(), md.into());
    }
    serde_json::Value::Object(m).to_string()
}

/// A multipart boundary that does not occur in `data`.
fn boundary_for(data: &[u8]) -> String {
    loop {
        let b = format!(
            "dss-{:016x}{:016x}",
            rand_core::RngCore::next_u64(&mut rand_core::OsRng),
            rand_core::RngCore::next_u64(&mut rand_core::OsRng)
        );
        if !data.windows(b.len()).any(|w| w == b.as_bytes()) {
            return b;
        }
    }
}

/// Read (at most 4 KiB of) an error body.
async fn drain(mut s: ByteStream) -> Bytes {
    let mut out = BytesMut::new();
    while let Some(Ok(b)) = s.next().await {
        out.extend_from_slice(&b);
        if out.len() >= 4096 {
            break;
        }
    }
    out.freeze()
}

/// Bytes `skip..skip + take` of `inner`; an error if it ends early.
fn window(inner: ByteStream, skip: u64, take: u64) -> ByteStream {
    struct W {
        inner: ByteStream,
        skip: u64,
        left: u64,
    }
    let w = W {
        inner,
        skip,
        left: take,
    };
    box_stream(futures::stream::unfold(w, |mut w| async move {
        loop {
            if w.left == 0 {
                return None;
            }
            match w.inner.next().await {
                None => {
                    w.left = 0;
                    let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "object body ended early");
                    return Some((Err(e), w));
                }
                Some(Err(e)) => {
                    w.left = 0;
                    return Some((Err(e), w));
                }
                Some(Ok(mut b)) => {
                    let cut = w.skip.min(b.len() as u64);
                    w.skip -= cut;
                    let _ = b.split_to(cut as usize);
                    b.truncate(w.left.min(b.len() as u64) as usize);
                    if b.is_empty() {
                        continue;
                    }
                    w.left -= b.len() as u64;
                    return Some((Ok(b), w));
                }
            }
        }
    }))
}

enum V4Signer<'a> {
    Rsa(&'a ServiceAccountKey),
    Hmac { id: &'a str, secret: &'a str },
}

/// `k=v&…` sorted by key, both percent-encoded (RFC 3986 unreserved kept).
fn canonical_query(params: &mut [(String, String)]) -> String {
    let mut enc_params: Vec<(String, String)> = params.iter().map(|(k, v)| (enc(k), enc(v))).collect();
    enc_params.sort();
    enc_params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

type HmacSha256 = hmac::Hmac<Sha256>;

fn hmac(key: &[u8], msg: &[u8]) -> StoreResult<Vec<u8>> {
    use hmac::Mac;
    let mut m = HmacSha256::new_from_slice(key).map_err(|e| StoreError::Other(e.to_string()))?;
    m.update(msg);
    Ok(m.finalize().into_bytes().to_vec())
}

/// A V4 signed GET URL for `path` (already encoded) on `origin`, signed with `host` as
/// the only signed header.
fn sign_v4(
    signer: &V4Signer<'_>,
    origin: &str,
    host: &str,
    path: &str,
    mut params: Vec<(String, String)>,
    expires_in: Duration,
    now: DateTime<Utc>,
) -> StoreResult<String> {
    let (algorithm, account) = match signer {
        V4Signer::Rsa(sa) => ("GOOG4-RSA-SHA256", sa.client_email.as_str()),
        V4Signer::Hmac { id, .. } => ("GOOG4-HMAC-SHA256", *id),
    };
    let expires = expires_in.as_secs().clamp(1, MAX_PRESIGN.as_secs());
    let date = now.format("%Y%m%d").to_string();
    let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
    let scope = format!("{date}/auto/storage/goog4_request");
    params.extend([
        ("X-Goog-Algorithm".to_string(), algorithm.to_string()),
        ("X-Goog-Credential".to_string(), format!("{account}/{scope}")),
        ("X-Goog-Date".to_string(), stamp.clone()),
        ("X-Goog-Expires".to_string(), expires.to_string()),
        ("X-Goog-SignedHeaders".to_string(), "host".to_string()),
    ]);
    let query = canonical_query(&mut params);
    let canonical_request = format!("GET\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
    let string_to_sign = format!(
        "{algorithm}\n{stamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let signature = match signer {
        V4Signer::Rsa(sa) => {
            use rsa::signature::{SignatureEncoding, Signer};
            let key = rsa::pkcs1v15::SigningKey::<Sha256>::new(sa.key.clone());
            key.try_sign(string_to_sign.as_bytes())
                .map_err(|e| StoreError::Other(format!("signing a download URL: {e}")))?
                .to_vec()
        }
        V4Signer::Hmac { secret, .. } => {
            let k = hmac(format!("GOOG4{secret}").as_bytes(), date.as_bytes())?;
            let k = hmac(&k, b"auto")?;
            let k = hmac(&k, b"storage")?;
            let k = hmac(&k, b"goog4_request")?;
            hmac(&k, string_to_sign.as_bytes())?
        }
    };
    Ok(format!(
        "{origin}{path}?{query}&X-Goog-Signature={}",
        hex::encode(signature)
    ))
}

impl<H: HttpClient, T: Sleeper> Store for GcsStore<H, T> {
    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        if key.is_empty() {
            return Err(StoreError::NotFound(key.to_string()));
        }
        let resp = self
            .call(&Req::new(Method::GET, format!("{}?alt=media", self.object_url(key))))
            .await?;
        if resp.status().is_success() {
            Ok(resp.into_body())
        } else {
            Err(status_error(key, resp.status(), resp.body()))
        }
    }

    async fn get_range(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> StoreResult<(ObjectMeta, (u64, u64), ByteStream)> {
        for _ in 0..MAX_GENERATION_RACES {
            let r = self.object_resource(key).await?;
            let meta = self.meta_of(&r);
            let (start, end) = match range {
                None => (0, meta.size),
                Some(r) => r.resolve(meta.size).ok_or(StoreError::RangeNotSatisfiable)?,
            };
            if start == end {
                return Ok((meta, (start, end), box_stream(futures::stream::empty())));
            }
            // Pin the read to the generation whose metadata we return.
            let mut url = format!("{}?alt=media", self.object_url(key));
            if let Some(g) = json_u64(&r.generation) {
                url.push_str(&format!("&generation={g}"));
            }
            let mut req = Req::new(Method::GET, url);
            let partial = start > 0 || end < meta.size;
            if partial {
                req = req.header(header::RANGE, &format!("bytes={start}-{}", end - 1))?;
            }
            let resp = self.call_stream(&req).await?;
            let status = resp.status();
            match status.as_u16() {
                206 => return Ok((meta, (start, end), window(resp.into_body(), 0, end - start))),
                // A server that ignores Range sends everything: cut the window out.
                200 => return Ok((meta, (start, end), window(resp.into_body(), start, end - start))),
                // That generation is gone: the object was replaced or deleted meanwhile.
                404 => continue,
                _ => return Err(status_error(key, status, &drain(resp.into_body()).await)),
            }
        }
        Err(StoreError::NotFound(key.to_string()))
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let r = self.object_resource(key).await?;
        Ok(self.meta_of(&r))
    }

    async fn put(&self, key: &str, data: Bytes, opts: PutOptions) -> StoreResult<()> {
        check_key(key)?;
        self.multipart(key, data, &opts).await
    }

    async fn put_stream(&self, key: &str, mut data: ByteStream, opts: PutOptions) -> StoreResult<u64> {
        check_key(key)?;
        let mut buf = BytesMut::new();
        while buf.len() <= SMALL_UPLOAD {
            match data.next().await {
                Some(Ok(b)) => buf.extend_from_slice(&b),
                Some(Err(e)) => return Err(StoreError::Other(format!("reading the upload of {key}: {e}"))),
                None => {
                    let n = buf.len() as u64;
                    self.multipart(key, buf.freeze(), &opts).await?;
                    return Ok(n);
                }
            }
        }
        if opts.if_absent {
            self.refuse_existing(key).await?;
        }
        let session = self.start_session(key, &opts).await?;
        match self.resumable(key, &session, buf, &mut data).await {
            Ok(n) => Ok(n),
            Err(e) => {
                // Dropping the session keeps the partial upload invisible for good.
                self.cancel_session(&session).await;
                Err(e)
            }
        }
    }

    async fn list(&self, prefix: &str, token: Option<&str>, limit: usize) -> StoreResult<ListPage> {
        let mut url = format!(
            "{}/storage/v1/b/{}/o?maxResults={}&fields={}",
            self.endpoint,
            enc(&self.bucket),
            limit.clamp(1, 1000),
            enc("items(name),nextPageToken")
        );
        if !prefix.is_empty() {
            url.push_str(&format!("&prefix={}", enc(prefix)));
        }
        if let Some(t) = token {
            url.push_str(&format!("&pageToken={}", enc(t)));
        }
        let resp = self.call(&Req::new(Method::GET, url)).await?;
        if !resp.status().is_success() {
            return Err(status_error(&self.bucket, resp.status(), resp.body()));
        }
        let l: ListResponse =
            serde_json::from_slice(resp.body()).map_err(|e| StoreError::Other(format!("listing {prefix}: {e}")))?;
        Ok(ListPage {
            keys: l.items.into_iter().map(|i| i.name).collect(),
            next_token: l.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    async fn copy(&self, src: &str, dst: &str) -> StoreResult<()> {
        check_key(dst)?;
        if src.is_empty() {
            return Err(StoreError::NotFound(src.to_string()));
        }
        self.rewrite(&self.bucket, src, dst, false, None).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        if key.is_empty() {
            return Ok(());
        }
        let resp = self.call(&Req::new(Method::DELETE, self.object_url(key))).await?;
        match resp.status().as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(status_error(key, resp.status(), resp.body())),
        }
    }

    async fn presign_get(&self, key: &str, expires_in: Duration, opts: &PresignOptions) -> StoreResult<String> {
        self.presign(key, expires_in, opts)
    }

    async fn head_with_tags(&self, key: &str) -> StoreResult<ObjectMeta> {
        // GCS has no tags: user metadata is all there is.
        self.head(key).await
    }

    async fn copy_from(&self, src: &Self, src_key: &str, dst_key: &str, opts: PutOptions) -> StoreResult<()> {
        check_key(dst_key)?;
        if src_key.is_empty() {
            return Err(StoreError::NotFound(src_key.to_string()));
        }
        if opts.if_absent {
            self.refuse_existing(dst_key).await?;
        }
        // Without overrides the rewrite keeps the source's content type and metadata.
        // With one, the destination resource is spelled out whole, the rest from the source.
        let resource = if opts.content_type.is_some() || !opts.metadata.is_empty() {
            let m = src.head(src_key).await?;
            let ct = opts.content_type.or(m.content_type);
            let md = if opts.metadata.is_empty() {
                m.metadata
            } else {
                opts.metadata
            };
            Some(resource_json(None, ct.as_deref(), &md))
        } else {
            None
        };
        self.rewrite(&src.bucket, src_key, dst_key, opts.if_absent, resource)
            .await
    }

    fn direct_url(&self, key: &str) -> Option<String> {
        Some(format!("gs://{}/{key}", self.bucket))
    }
}

