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
//! * Failures: retried under the one policy of [`super::retry`] (which statuses, how many
//!   attempts, which waits), then reported as [`StoreError::Unavailable`].

use super::limits::{collect_limited, too_large, MAX_API_ANSWER, MAX_DOCUMENT, MAX_ERROR_BODY};
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
pub use super::retry::MAX_ATTEMPTS;
/// Longest signed-URL lifetime GCS accepts (7 days).
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Tokens are refreshed this long before they expire.
const TOKEN_MARGIN_SECS: i64 = 300;
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
    /// The key ready for PKCS#1 v1.5 signatures of download URLs, made once (not per URL).
    url_signer: rsa::pkcs1v15::SigningKey<Sha256>,
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
            url_signer: rsa::pkcs1v15::SigningKey::new(key.clone()),
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
            url_signer: rsa::pkcs1v15::SigningKey::new(key.clone()),
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
#[derive(Clone)]
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

impl std::fmt::Debug for GcsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the HMAC secret (the service account key hides its own).
        f.debug_struct("GcsConfig")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials)
            .field("hmac_access_id", &self.hmac.as_ref().map(|(id, _)| id))
            .finish()
    }
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
    /// and no credentials are loaded or sent), else the public endpoint (or
    /// `GCS_ENDPOINT_URL`: another JSON API endpoint that gets tokens and signed URLs as
    /// GCS would) with the service-account file named by `GOOGLE_APPLICATION_CREDENTIALS`,
    /// and optionally `GCS_HMAC_ACCESS_ID` / `GCS_HMAC_SECRET` for HMAC-signed download
    /// URLs.
    pub fn from_env(bucket: &str) -> Result<Self, GcsConfigError> {
        Self::from_vars(bucket, &|k| std::env::var(k).ok())
    }

    /// The same settings, read through `lookup`. There are no files at the edge, so
    /// `GOOGLE_APPLICATION_CREDENTIALS_JSON` may hold the key document itself.
    pub fn from_vars(bucket: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, GcsConfigError> {
        let var = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        if let Some(host) = var("STORAGE_EMULATOR_HOST") {
            return Ok(Self::emulator(bucket, &host));
        }
        let credentials = match (
            var("GOOGLE_APPLICATION_CREDENTIALS_JSON"),
            var("GOOGLE_APPLICATION_CREDENTIALS"),
        ) {
            (Some(json), _) => Some(ServiceAccountKey::from_json(&json)?),
            (None, Some(path)) => {
                let json = std::fs::read_to_string(&path).map_err(|source| GcsConfigError::Io { path, source })?;
                Some(ServiceAccountKey::from_json(&json)?)
            }
            (None, None) => None,
        };
        let hmac = match (var("GCS_HMAC_ACCESS_ID"), var("GCS_HMAC_SECRET")) {
            (Some(id), Some(secret)) => Some((id, secret)),
            _ => None,
        };
        Ok(GcsConfig {
            bucket: bucket.to_string(),
            endpoint: var("GCS_ENDPOINT_URL")
                .map(|e| normalize_endpoint(&e))
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
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
    /// Most bytes of the answer read into memory.
    limit: usize,
}

impl Req {
    fn new(method: Method, url: String) -> Self {
        Req {
            method,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
            upload: false,
            limit: MAX_API_ANSWER,
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
    super::retry::retryable_status(status.as_u16())
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
        // Clamped: a token answer cannot make the expiry arithmetic overflow.
        let expires_at = now + chrono::Duration::seconds(t.expires_in.unwrap_or(3600).clamp(0, 24 * 3600));
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

    /// After failed attempt number `attempt` (counted here): give up with `Unavailable`
    /// when attempts or time are used up, else wait with backoff before the next one.
    async fn retry_or_give_up(
        &self,
        attempt: &mut u32,
        started: chrono::DateTime<chrono::Utc>,
        last: &str,
        what: &str,
    ) -> StoreResult<()> {
        *attempt += 1;
        let delay = super::retry::backoff(*attempt);
        let elapsed = (self.clock.now() - started).to_std().unwrap_or_default();
        if !super::retry::may_retry(*attempt, elapsed, delay) {
            return Err(StoreError::Unavailable(format!("after {attempt} attempts: {last}")));
        }
        tracing::debug!(attempt = *attempt, "{what}: {last}");
        self.sleeper.sleep(delay).await;
        Ok(())
    }

    /// One attempt at `req`, with the whole (small) response body. Uploads go through the
    /// streaming path, which has connect and read timeouts but no limit on the whole
    /// exchange, so that slow links can still move a chunk.
    async fn exchange(&self, req: &Req, token: Option<&str>) -> StoreResult<Result<http::Response<Bytes>, HttpError>> {
        if !req.upload {
            return Ok(self
                .http
                .send_limited(req.build(token, req.body.clone())?, req.limit)
                .await);
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
                Ok(c) if body.len() + c.len() > req.limit => return Ok(Err(HttpError::TooLarge(req.limit))),
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
        let started = self.clock.now();
        loop {
            let last = match self.exchange(req, token).await? {
                Ok(resp) if !retryable(resp.status()) => return Ok(resp),
                Ok(resp) => format!("{} answered {}: {}", req.url, resp.status(), text(resp.body())),
                // Asking again would bring the same answer.
                Err(HttpError::TooLarge(limit)) => return Err(too_large(&req.url, limit)),
                Err(e) => format!("{}: {e}", req.url),
            };
            self.retry_or_give_up(&mut attempt, started, &last, "GCS request failed, retrying")
                .await?;
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
        let started = self.clock.now();
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
                Err(e) => format!("{}: {e}", req.url),
            };
            self.retry_or_give_up(&mut attempt, started, &last, "GCS request failed, retrying")
                .await?;
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
        let started = self.clock.now();
        let mut req = &put;
        loop {
            let token = self.access_token().await?;
            let last = match self.exchange(req, token.as_deref()).await? {
                Err(HttpError::TooLarge(limit)) => return Err(too_large(key, limit)),
                Ok(resp) if resp.status().is_success() => return Ok(Chunk::Done),
                Ok(resp) if resp.status().as_u16() == 308 => {
                    let held = resp
                        .headers()
                        .get(header::RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|r| r.strip_prefix("bytes=0-"))
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .map_or(0, |n| n.saturating_add(1));
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
                Err(e) => format!("upload of {key}: {e}"),
            };
            self.retry_or_give_up(
                &mut attempt,
                started,
                &last,
                "GCS upload chunk failed, asking what arrived",
            )
            .await?;
            req = &query;
        }
    }

    /// The resumable part of `put_stream`: `buf` holds what was read so far (more than
    /// [`SMALL_UPLOAD`]), `data` the rest.
    async fn resumable(&self, key: &str, session: &str, mut buf: BytesMut, data: &mut ByteStream) -> StoreResult<u64> {
        let mut offset: u64 = 0; // bytes the server holds; `buf` starts there
        let mut ended = false;
        let mut stalled = 0u32;
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
                    // A server that keeps taking nothing would have us resend forever.
                    stalled = if held == offset { stalled + 1 } else { 0 };
                    if stalled >= MAX_ATTEMPTS {
                        return Err(StoreError::Unavailable(format!(
                            "upload of {key} makes no progress at byte {offset}"
                        )));
                    }
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

/// Read (at most [`MAX_ERROR_BODY`] bytes of) an error body.
async fn drain(mut s: ByteStream) -> Bytes {
    let mut out = BytesMut::new();
    while let Some(Ok(b)) = s.next().await {
        let room = MAX_ERROR_BODY - out.len();
        out.extend_from_slice(&b[..b.len().min(room)]);
        if out.len() >= MAX_ERROR_BODY {
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
            sa.url_signer
                .try_sign(string_to_sign.as_bytes())
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
        // Streamed, so that the cap applies to the object only: an error answer is read
        // no further than `drain` reads.
        let resp = self
            .call_stream(&Req::new(Method::GET, format!("{}?alt=media", self.object_url(key))))
            .await?;
        let status = resp.status();
        let declared = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if !status.is_success() {
            return Err(status_error(key, status, &drain(resp.into_body()).await));
        }
        collect_limited(resp.into_body(), declared, MAX_DOCUMENT, key, |e| {
            StoreError::Unavailable(format!("reading {key}: {e}"))
        })
        .await
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

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};

    struct ManualClock(Mutex<DateTime<Utc>>);
    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }
    impl ManualClock {
        fn advance(&self, d: chrono::Duration) {
            *self.0.lock().unwrap() += d;
        }
    }

    /// Sleeps return at once; their lengths are recorded.
    #[derive(Clone, Default)]
    struct RecSleeper(Arc<Mutex<Vec<Duration>>>);
    impl Sleeper for RecSleeper {
        async fn sleep(&self, d: Duration) {
            self.0.lock().unwrap().push(d);
        }
    }

    struct Seen {
        method: Method,
        url: String,
        headers: http::HeaderMap,
        body: Bytes,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }
    }

    type Reply = Result<http::Response<Bytes>, HttpError>;
    type Handler = Box<dyn Fn(&Seen) -> Reply + Send + Sync>;

    /// An HTTP client that records requests and answers them with `handler`.
    struct Fake {
        seen: Mutex<Vec<Seen>>,
        handler: Handler,
        limits: Mutex<Vec<usize>>,
    }

    impl Fake {
        fn new(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
            Fake {
                seen: Mutex::new(Vec::new()),
                handler: Box::new(handler),
                limits: Mutex::new(Vec::new()),
            }
        }
        fn handle(&self, parts: http::request::Parts, body: Bytes) -> Reply {
            let seen = Seen {
                method: parts.method,
                url: parts.uri.to_string(),
                headers: parts.headers,
                body,
            };
            let reply = (self.handler)(&seen);
            self.seen.lock().unwrap().push(seen);
            reply
        }
        fn count(&self, pred: impl Fn(&Seen) -> bool) -> usize {
            self.seen.lock().unwrap().iter().filter(|s| pred(s)).count()
        }
    }

    impl HttpClient for &Fake {
        async fn send(&self, req: http::Request<Bytes>) -> Reply {
            let (parts, body) = req.into_parts();
            self.handle(parts, body)
        }

        /// As a real client: an answer over `limit` is refused (and the limit recorded).
        async fn send_limited(&self, req: http::Request<Bytes>, limit: usize) -> Reply {
            self.limits.lock().unwrap().push(limit);
            let (parts, body) = req.into_parts();
            let resp = self.handle(parts, body)?;
            if resp.body().len() > limit {
                return Err(HttpError::TooLarge(limit));
            }
            Ok(resp)
        }

        async fn send_stream(&self, req: http::Request<ReqBody>) -> Result<http::Response<ByteStream>, HttpError> {
            let (parts, body) = req.into_parts();
            let body = match body {
                ReqBody::Bytes(b) => b,
                ReqBody::Stream { .. } => return Err(HttpError::Transport("streamed bodies unused".into())),
            };
            let resp = self.handle(parts, body)?;
            let (parts, body) = resp.into_parts();
            // Hand the body out in small pieces, as a network would.
            let pieces: Vec<std::io::Result<Bytes>> = body.chunks(3).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            Ok(http::Response::from_parts(
                parts,
                box_stream(futures::stream::iter(pieces)),
            ))
        }
    }

    fn reply(status: u16, body: impl Into<Bytes>) -> Reply {
        Ok(http::Response::builder().status(status).body(body.into()).unwrap())
    }

    fn object_json(size: usize) -> String {
        serde_json::json!({
            "name": "files/a",
            "size": size.to_string(),
            "contentType": "application/json",
            "metadata": {"hca-dss-sha256": "abc"},
            "updated": "2024-01-02T03:04:05.678Z",
            "generation": "1700000000000001",
        })
        .to_string()
    }

    fn rsa_key() -> RsaPrivateKey {
        RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap()
    }

    fn t0() -> DateTime<Utc> {
        "2024-05-06T07:08:09Z".parse().unwrap()
    }

    fn store(
        fake: &Fake,
        credentials: Option<ServiceAccountKey>,
        clock: Arc<ManualClock>,
    ) -> (GcsStore<&Fake, RecSleeper>, RecSleeper) {
        let sleeper = RecSleeper::default();
        let cfg = GcsConfig {
            bucket: "bkt".into(),
            endpoint: "https://gcs.example/".into(),
            credentials,
            hmac: None,
        };
        (GcsStore::new(cfg, fake, sleeper.clone(), clock), sleeper)
    }

    const TOKEN_URI: &str = "https://oauth2.example/token";

    #[tokio::test]
    async fn token_exchange_is_cached_until_near_expiry() {
        use jwt_compact::{alg::Rsa, AlgorithmExt, UntrustedToken};
        let key = rsa_key();
        let public = key.to_public_key();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let file = serde_json::json!({
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": "kid-1",
            "private_key": pem,
            "client_email": "dss@proj.iam.gserviceaccount.com",
            "token_uri": TOKEN_URI,
        });
        let sa = ServiceAccountKey::from_json(&file.to_string()).unwrap();
        assert_eq!(sa.project_id.as_deref(), Some("proj"));
        assert!(!format!("{sa:?}").contains("PRIVATE"), "Debug hides the key");

        let exchanges = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = exchanges.clone();
        let fake = Fake::new(move |s| {
            if s.url == TOKEN_URI {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                return reply(
                    200,
                    serde_json::json!({"access_token": format!("tok{i}"), "expires_in": 3600, "token_type": "Bearer"})
                        .to_string(),
                );
            }
            match s.header("authorization") {
                // The second token is revoked early: the store must fetch another.
                Some("Bearer tok2") => reply(401, "expired"),
                Some(_) => reply(200, object_json(3)),
                None => reply(403, "no auth"),
            }
        });
        let clock = Arc::new(ManualClock(Mutex::new(t0())));
        let (s, _) = store(&fake, Some(sa), clock.clone());

        let meta = s.head("files/a").await.unwrap();
        assert_eq!(meta.size, 3);
        assert_eq!(meta.content_type.as_deref(), Some("application/json"));
        assert_eq!(meta.metadata.get("hca-dss-sha256").map(String::as_str), Some("abc"));
        assert_eq!(
            meta.last_modified,
            "2024-01-02T03:04:05.678Z".parse::<DateTime<Utc>>().unwrap()
        );
        {
            let seen = fake.seen.lock().unwrap();
            assert_eq!(seen.len(), 2);
            let ex = &seen[0];
            assert_eq!(ex.method, Method::POST);
            assert_eq!(ex.header("content-type"), Some("application/x-www-form-urlencoded"));
            assert!(ex.header("authorization").is_none());
            let form: BTreeMap<String, String> = url::form_urlencoded::parse(&ex.body).into_owned().collect();
            assert_eq!(form["grant_type"], JWT_BEARER);
            let token = UntrustedToken::new(&form["assertion"]).unwrap();
            assert_eq!(token.header().key_id.as_deref(), Some("kid-1"));
            let claims = Rsa::rs256()
                .validator::<serde_json::Value>(&public)
                .validate(&token)
                .expect("assertion signed by the service-account key");
            let claims = claims.claims();
            assert_eq!(claims.custom["iss"], "dss@proj.iam.gserviceaccount.com");
            assert_eq!(claims.custom["scope"], SCOPE);
            assert_eq!(claims.custom["aud"], TOKEN_URI);
            assert_eq!(claims.issued_at, Some(t0()));
            assert_eq!(claims.expiration, Some(t0() + chrono::Duration::hours(1)));
            let get = &seen[1];
            assert_eq!(get.url, "https://gcs.example/storage/v1/b/bkt/o/files%2Fa");
            assert_eq!(get.header("authorization"), Some("Bearer tok1"));
        }

        // Cached while more than five minutes remain.
        clock.advance(chrono::Duration::minutes(54));
        s.head("files/a").await.unwrap();
        assert_eq!(exchanges.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Refreshed within five minutes of expiry; a 401 on the new token refreshes again.
        clock.advance(chrono::Duration::minutes(2));
        s.head("files/a").await.unwrap();
        assert_eq!(exchanges.load(std::sync::atomic::Ordering::SeqCst), 3);
        let seen = fake.seen.lock().unwrap();
        assert_eq!(seen.last().unwrap().header("authorization"), Some("Bearer tok3"));
    }

    #[tokio::test]
    async fn a_refused_exchange_is_an_error_not_a_retry() {
        let fake = Fake::new(|_| reply(400, r#"{"error":"invalid_grant"}"#));
        let sa = ServiceAccountKey::new("a@b", "k", TOKEN_URI, rsa_key());
        let (s, sleeps) = store(&fake, Some(sa), Arc::new(ManualClock(Mutex::new(t0()))));
        match s.head("files/a").await {
            Err(StoreError::Other(m)) => assert!(m.contains("invalid_grant"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(fake.count(|_| true), 1);
        assert!(sleeps.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn failures_are_retried_with_bounded_jittered_backoff() {
        let clock = Arc::new(ManualClock(Mutex::new(t0())));
        // Always 503: five attempts, four waits within the exponential caps, then Unavailable.
        let fake = Fake::new(|_| reply(503, "busy"));
        let (s, sleeps) = store(&fake, None, clock.clone());
        assert!(matches!(s.head("files/a").await, Err(StoreError::Unavailable(_))));
        assert_eq!(fake.count(|_| true), MAX_ATTEMPTS as usize);
        let waits = sleeps.0.lock().unwrap().clone();
        assert_eq!(waits.len(), MAX_ATTEMPTS as usize - 1);
        for (i, w) in waits.iter().enumerate() {
            let cap = super::super::retry::BACKOFF_BASE * 2u32.pow(i as u32);
            assert!(*w <= cap.min(super::super::retry::BACKOFF_CAP), "wait {i}: {w:?}");
        }
        assert!(waits.iter().sum::<Duration>() < Duration::from_secs(15));

        // Transport errors and 429 are retried too, and a later success wins.
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let fake = Fake::new(move |_| match c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Err(HttpError::Transport("connection reset".into())),
            1 => reply(429, "slow down"),
            _ => reply(200, object_json(3)),
        });
        let (s, _) = store(&fake, None, clock.clone());
        assert_eq!(s.head("files/a").await.unwrap().size, 3);
        assert_eq!(fake.count(|_| true), 3);

        // Answers with a meaning are not retried.
        for (status, check) in [
            (
                404,
                (|e: &StoreError| matches!(e, StoreError::NotFound(_))) as fn(&StoreError) -> bool,
            ),
            (412, |e| matches!(e, StoreError::AlreadyExists(_))),
            (403, |e| matches!(e, StoreError::Other(_))),
        ] {
            let fake = Fake::new(move |_| reply(status, "no"));
            let (s, _) = store(&fake, None, clock.clone());
            let e = s
                .put("files/a", Bytes::from_static(b"x"), PutOptions::if_absent())
                .await
                .unwrap_err();
            assert!(check(&e), "{status}: {e:?}");
            assert_eq!(fake.count(|_| true), 1);
        }
    }

    #[tokio::test]
    async fn multipart_put_carries_metadata_and_precondition() {
        let fake = Fake::new(|_| reply(200, "{}"));
        let (s, _) = store(&fake, None, Arc::new(ManualClock(Mutex::new(t0()))));
        let mut md = BTreeMap::new();
        md.insert("k".to_string(), "v".to_string());
        let opts = PutOptions {
            if_absent: true,
            content_type: Some("application/json".into()),
            metadata: md,
        };
        s.put("bundles/a b.1", Bytes::from_static(b"{\"x\": 1}"), opts)
            .await
            .unwrap();
        assert!(matches!(
            s.put("a//b", Bytes::new(), PutOptions::overwrite()).await,
            Err(StoreError::InvalidKey(_))
        ));
        let seen = fake.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "invalid keys never reach the network");
        let put = &seen[0];
        assert_eq!(
            put.url,
            "https://gcs.example/upload/storage/v1/b/bkt/o?uploadType=multipart&ifGenerationMatch=0"
        );
        let ct = put.header("content-type").unwrap();
        let boundary = ct.strip_prefix("multipart/related; boundary=").unwrap();
        let body = String::from_utf8(put.body.to_vec()).unwrap();
        let parts: Vec<&str> = body.split(&format!("--{boundary}")).collect();
        assert_eq!(parts.len(), 4, "{body}");
        let (head, json) = parts[1].split_once("\r\n\r\n").unwrap();
        assert!(head.contains("application/json"));
        let meta: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
        assert_eq!(
            meta,
            serde_json::json!({"name": "bundles/a b.1", "contentType": "application/json", "metadata": {"k": "v"}})
        );
        let (head, data) = parts[2].split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Content-Type: application/json"));
        assert_eq!(data, "{\"x\": 1}\r\n");
        assert_eq!(parts[3], "--\r\n");
    }

    #[tokio::test]
    async fn ranges_are_cut_even_when_the_server_ignores_range() {
        let data: Vec<u8> = (0..100u8).collect();
        let body = Bytes::from(data.clone());
        let fake = Fake::new(move |s| {
            if s.url.contains("alt=media") {
                assert!(s.url.ends_with("&generation=1700000000000001"), "{}", s.url);
                assert_eq!(s.header("range"), Some("bytes=10-19"));
                reply(200, body.clone())
            } else {
                reply(200, object_json(100))
            }
        });
        let (s, _) = store(&fake, None, Arc::new(ManualClock(Mutex::new(t0()))));
        let (meta, got, mut stream) = s.get_range("files/a", Some(ByteRange::FromTo(10, 19))).await.unwrap();
        assert_eq!((meta.size, got), (100, (10, 20)));
        let mut out = Vec::new();
        while let Some(c) = stream.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        assert_eq!(out, &data[10..20]);
        assert!(matches!(
            s.get_range("files/a", Some(ByteRange::From(100))).await,
            Err(StoreError::RangeNotSatisfiable)
        ));
    }

    /// A resumable-upload server: contiguous chunks only, multiples of 256 KiB except the
    /// last; the first chunk is persisted short, as GCS may do.
    #[derive(Default)]
    struct Session {
        content: Vec<u8>,
        chunks: usize,
        finished: bool,
        cancelled: bool,
        session_url: String,
    }

    fn session_server(state: Arc<Mutex<Session>>) -> Fake {
        Fake::new(move |s| {
            let mut st = state.lock().unwrap();
            if s.method == Method::GET {
                return reply(404, "no such object");
            }
            if s.method == Method::POST {
                st.session_url = s.url.clone();
                let meta: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
                assert_eq!(meta["name"], "blobs/big");
                assert_eq!(s.header("x-upload-content-type"), Some("application/x-test"));
                return Ok(http::Response::builder()
                    .status(200)
                    .header("location", "https://upload.example/session/1")
                    .body(Bytes::new())
                    .unwrap());
            }
            assert_eq!(s.url, "https://upload.example/session/1");
            if s.method == Method::DELETE {
                st.cancelled = true;
                return reply(499, "");
            }
            let range = s.header("content-range").unwrap();
            let (span, total) = range.strip_prefix("bytes ").unwrap().split_once('/').unwrap();
            let (a, b) = span.split_once('-').unwrap();
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(a, st.content.len(), "chunks are contiguous");
            assert_eq!(b + 1 - a, s.body.len());
            let keep = if st.chunks == 0 { 256 * 1024 } else { s.body.len() };
            st.chunks += 1;
            if total == "*" {
                assert_eq!(s.body.len() % (256 * 1024), 0, "non-final chunks are 256 KiB multiples");
            }
            st.content.extend_from_slice(&s.body[..keep]);
            if total != "*" && st.content.len() == total.parse::<usize>().unwrap() {
                st.finished = true;
                return reply(200, "{}");
            }
            Ok(http::Response::builder()
                .status(308)
                .header("range", format!("bytes=0-{}", st.content.len() - 1))
                .body(Bytes::new())
                .unwrap())
        })
    }

    fn odd_stream(data: &[u8], fail_at: Option<usize>) -> ByteStream {
        let mut items: Vec<std::io::Result<Bytes>> = Vec::new();
        let mut at = 0;
        for n in [1usize, 999_983, 3_000_017, 65_537].iter().cycle() {
            if at >= data.len() {
                break;
            }
            if fail_at.is_some_and(|f| at >= f) {
                items.push(Err(std::io::Error::other("peer reset")));
                break;
            }
            let n = (*n).min(data.len() - at);
            items.push(Ok(Bytes::copy_from_slice(&data[at..at + n])));
            at += n;
        }
        box_stream(futures::stream::iter(items))
    }

    #[tokio::test]
    async fn resumable_uploads_resend_what_was_not_persisted() {
        let data: Vec<u8> = (0..SMALL_UPLOAD * 2 + 777).map(|i| (i % 253) as u8).collect();
        let state = Arc::new(Mutex::new(Session::default()));
        let fake = session_server(state.clone());
        let (s, _) = store(&fake, None, Arc::new(ManualClock(Mutex::new(t0()))));
        let opts = PutOptions {
            content_type: Some("application/x-test".into()),
            ..PutOptions::if_absent()
        };
        let n = s.put_stream("blobs/big", odd_stream(&data, None), opts).await.unwrap();
        assert_eq!(n, data.len() as u64);
        let st = state.lock().unwrap();
        assert!(st.finished && !st.cancelled);
        assert!(st.content == data, "the server holds exactly the stream's bytes");
        assert!(st.session_url.ends_with("uploadType=resumable&ifGenerationMatch=0"));
    }

    #[tokio::test]
    async fn a_failing_stream_cancels_its_session() {
        let data: Vec<u8> = vec![7; SMALL_UPLOAD * 2];
        let state = Arc::new(Mutex::new(Session::default()));
        let fake = session_server(state.clone());
        let (s, _) = store(&fake, None, Arc::new(ManualClock(Mutex::new(t0()))));
        let opts = PutOptions {
            content_type: Some("application/x-test".into()),
            ..PutOptions::overwrite()
        };
        let r = s.put_stream("blobs/big", odd_stream(&data, Some(10 << 20)), opts).await;
        assert!(matches!(r, Err(StoreError::Other(_))), "{r:?}");
        let st = state.lock().unwrap();
        assert!(st.chunks > 0, "a chunk was sent before the failure");
        assert!(st.cancelled && !st.finished);
    }

    #[tokio::test]
    async fn answers_over_their_caps_are_refused_not_retried() {
        let clock = Arc::new(ManualClock(Mutex::new(t0())));
        // An object resource padded past the cap of API answers.
        let padded = format!("{}{}", " ".repeat(MAX_API_ANSWER), object_json(3));
        let fake = Fake::new(move |_| reply(200, padded.clone()));
        let (s, sleeps) = store(&fake, None, clock.clone());
        match s.head("files/a").await {
            Err(StoreError::TooLarge { limit, .. }) => assert_eq!(limit, MAX_API_ANSWER),
            other => panic!("{other:?}"),
        }
        assert_eq!(fake.count(|_| true), 1, "not retried");
        assert!(sleeps.0.lock().unwrap().is_empty());
        assert_eq!(*fake.limits.lock().unwrap(), [MAX_API_ANSWER]);

        // A document announced larger than the document cap is not read.
        let fake = Fake::new(|_| {
            Ok(http::Response::builder()
                .status(200)
                .header("content-length", (MAX_DOCUMENT + 1).to_string())
                .body(Bytes::from_static(b"{}"))
                .unwrap())
        });
        let (s, _) = store(&fake, None, clock.clone());
        assert!(matches!(s.get("bundles/x").await, Err(StoreError::TooLarge { .. })));
        assert_eq!(fake.count(|_| true), 1);

        // Within the caps: the bytes; an error answer is still its meaning.
        let fake = Fake::new(|s| match s.url.contains("missing") {
            true => reply(404, "no such object"),
            false => reply(200, "{\"a\": 1}"),
        });
        let (s, _) = store(&fake, None, clock);
        assert_eq!(&s.get("files/a").await.unwrap()[..], b"{\"a\": 1}");
        assert!(matches!(s.get("files/missing").await, Err(StoreError::NotFound(_))));
        assert!(fake.seen.lock().unwrap()[0].url.ends_with("/o/files%2Fa?alt=media"));
    }

    #[test]
    fn rsa_signed_urls_verify_with_the_service_account_key() {
        use rsa::signature::Verifier;
        let key = rsa_key();
        let public = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.to_public_key());
        let sa = ServiceAccountKey::new("dss@proj.iam.gserviceaccount.com", "k", TOKEN_URI, key);
        let url = sign_v4(
            &V4Signer::Rsa(&sa),
            "https://storage.googleapis.com",
            "storage.googleapis.com",
            "/bkt/blobs/x",
            vec![("response-content-type".to_string(), "text/plain".to_string())],
            Duration::from_secs(3600),
            t0(),
        )
        .unwrap();
        let (base, sig) = url.split_once("&X-Goog-Signature=").unwrap();
        let query = base.split_once('?').unwrap().1;
        assert!(query.contains("X-Goog-Algorithm=GOOG4-RSA-SHA256"), "{query}");
        let canonical = format!("GET\n/bkt/blobs/x\n{query}\nhost:storage.googleapis.com\n\nhost\nUNSIGNED-PAYLOAD");
        let to_sign = format!(
            "GOOG4-RSA-SHA256\n20240506T070809Z\n20240506/auto/storage/goog4_request\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let sig = rsa::pkcs1v15::Signature::try_from(hex::decode(sig).unwrap().as_slice()).unwrap();
        public.verify(to_sign.as_bytes(), &sig).expect("signed by the key");
    }

    #[test]
    fn hmac_signed_urls_follow_v4() {
        let now = t0();
        let signer = V4Signer::Hmac {
            id: "GOOGACCESSID",
            secret: "c2VjcmV0",
        };
        let params = vec![("response-content-disposition".to_string(), "attachment".to_string())];
        let url = sign_v4(
            &signer,
            "https://storage.googleapis.com",
            "storage.googleapis.com",
            "/bkt/blobs/x",
            params,
            Duration::from_secs(3600),
            now,
        )
        .unwrap();
        let query = "X-Goog-Algorithm=GOOG4-HMAC-SHA256\
            &X-Goog-Credential=GOOGACCESSID%2F20240506%2Fauto%2Fstorage%2Fgoog4_request\
            &X-Goog-Date=20240506T070809Z&X-Goog-Expires=3600&X-Goog-SignedHeaders=host\
            &response-content-disposition=attachment";
        let (base, sig) = url.split_once("&X-Goog-Signature=").unwrap();
        assert_eq!(base, format!("https://storage.googleapis.com/bkt/blobs/x?{query}"));
        // The signature, derived here step by step.
        let canonical = format!("GET\n/bkt/blobs/x\n{query}\nhost:storage.googleapis.com\n\nhost\nUNSIGNED-PAYLOAD");
        let to_sign = format!(
            "GOOG4-HMAC-SHA256\n20240506T070809Z\n20240506/auto/storage/goog4_request\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut k = b"GOOG4c2VjcmV0".to_vec();
        for part in ["20240506", "auto", "storage", "goog4_request", to_sign.as_str()] {
            k = hmac(&k, part.as_bytes()).unwrap();
        }
        assert_eq!(sig, hex::encode(k));
    }

    #[test]
    fn endpoints_and_direct_urls() {
        assert_eq!(normalize_endpoint("localhost:4443"), "http://localhost:4443");
        assert_eq!(normalize_endpoint("https://x.example/"), "https://x.example");
        let fake = Fake::new(|_| reply(500, ""));
        let (s, _) = store(&fake, None, Arc::new(ManualClock(Mutex::new(t0()))));
        assert_eq!(s.direct_url("blobs/a").as_deref(), Some("gs://bkt/blobs/a"));
        assert_eq!(
            s.object_url("a/b c"),
            "https://gcs.example/storage/v1/b/bkt/o/a%2Fb%20c"
        );
    }
}
