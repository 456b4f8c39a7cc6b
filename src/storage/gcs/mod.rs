//! Google Cloud Storage over the JSON API (`/storage/v1`, `/upload/storage/v1`).
//!
//! Everything goes through [`HttpClient`] and waits through [`Sleeper`], so this backend
//! compiles for wasm32 too: no tokio, no reqwest here.
//!
//! * Auth (`auth.rs`): a service-account key is exchanged for an OAuth2 access token (JWT
//!   bearer grant, RS256), cached until five minutes before it expires. Concurrent
//!   requests that find no usable token share one exchange. Against an emulator
//!   (`STORAGE_EMULATOR_HOST`) no credentials are loaded and no auth is sent.
//! * Writes (`upload.rs`): `uploadType=multipart` for whole objects; streams of unknown
//!   length are buffered up to [`SMALL_UPLOAD`] and then go through a resumable session in
//!   chunks of [`CHUNK`] (a multiple of 256 KiB). A failed stream cancels the session, so
//!   nothing becomes visible. Create-only writes carry `ifGenerationMatch=0`.
//! * Reads: `objects.get` for metadata, then `alt=media` pinned to that generation, so the
//!   bytes streamed always belong to the metadata returned.
//! * Copies (`copy.rs`): `objects.rewrite`, looping on `rewriteToken`.
//! * Download URLs (`sign.rs`, [`sign_v4_url`]): V4 signatures (`GOOG4-HMAC-SHA256` with
//!   HMAC keys when configured, else `GOOG4-RSA-SHA256` with the service-account key),
//!   checked against Google's conformance vectors (`tests/gcs_v4_vectors.rs`). Without
//!   either (emulator), a plain `{endpoint}/{bucket}/{key}` URL, which fake-gcs-server
//!   serves.
//! * Failures: retried under the one policy of [`super::retry`] (which statuses, how many
//!   attempts, which waits), then reported as [`StoreError::Unavailable`].
//!
//! Configuration (the environment, key files, endpoints) is in `config.rs`.

mod auth;
mod config;
mod copy;
mod sign;
#[cfg(test)]
mod testing;
mod upload;

pub use super::retry::MAX_ATTEMPTS;
pub use auth::SCOPE;
pub use config::{GcsConfig, GcsConfigError, ServiceAccountKey, DEFAULT_ENDPOINT};
pub use sign::{sign_v4_url, SignedUrl, V4Key, V4Request, MAX_PRESIGN};
pub use upload::{CHUNK, SMALL_UPLOAD};

use super::limits::{collect_limited, too_large, MAX_API_ANSWER, MAX_DOCUMENT, MAX_ERROR_BODY};
use super::*;
use crate::http::{HttpClient, HttpError, ReqBody};
use crate::model::platform::{box_stream, Sleeper};
use crate::model::Clock;
use bytes::BytesMut;
use futures::StreamExt;
use http::{header, HeaderName, HeaderValue, Method, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use std::sync::Arc;

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
    /// Base64 of the big-endian CRC32C.
    #[serde(default)]
    crc32c: Option<String>,
}

/// GCS's base64 CRC32C as the 8 hex digits the DSS writes.
fn crc32c_hex(b64: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (raw.len() == 4).then(|| hex::encode(raw))
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

/// A bucket in Google Cloud Storage.
pub struct GcsStore<H, T> {
    bucket: String,
    endpoint: String,
    credentials: Option<ServiceAccountKey>,
    hmac: Option<(String, String)>,
    http: H,
    sleeper: T,
    clock: Arc<dyn Clock>,
    tokens: auth::TokenCache,
}

impl<H: HttpClient, T: Sleeper> GcsStore<H, T> {
    /// A store for `cfg.bucket`, calling out through `http`, backing off with `sleeper`,
    /// and signing and caching tokens by `clock`.
    pub fn new(cfg: GcsConfig, http: H, sleeper: T, clock: Arc<dyn Clock>) -> Self {
        GcsStore {
            bucket: cfg.bucket,
            endpoint: config::normalize_endpoint(&cfg.endpoint),
            credentials: cfg.credentials,
            hmac: cfg.hmac,
            http,
            sleeper,
            clock,
            tokens: auth::TokenCache::default(),
        }
    }

    /// The same endpoint and credentials, for another bucket (a user's checkout
    /// destination).
    pub fn for_bucket(&self, bucket: &str) -> Self
    where
        H: Clone,
        T: Clone,
    {
        GcsStore {
            bucket: bucket.to_string(),
            endpoint: self.endpoint.clone(),
            credentials: self.credentials.clone(),
            hmac: self.hmac.clone(),
            http: self.http.clone(),
            sleeper: self.sleeper.clone(),
            clock: self.clock.clone(),
            tokens: auth::TokenCache::default(),
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
        if let (StatusCode::UNAUTHORIZED, Some(rejected)) = (resp.status(), &token) {
            self.forget_token(rejected);
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
                    if let Some(rejected) = &token {
                        self.forget_token(rejected);
                    }
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
            checksum: r
                .crc32c
                .as_deref()
                .and_then(crc32c_hex)
                .map(super::StoreChecksum::Crc32c),
        }
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

    async fn put_stream(&self, key: &str, data: ByteStream, opts: PutOptions) -> StoreResult<u64> {
        check_key(key)?;
        self.upload_stream(key, data, &opts).await
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
        self.copy_across(src, src_key, dst_key, opts).await
    }

    /// A rewrite runs with this store's credentials at its endpoint: only the same
    /// endpoint and account can read the source.
    fn same_backend(&self, other: &Self) -> bool {
        self.endpoint == other.endpoint
            && self.credentials.as_ref().map(|c| &c.client_email) == other.credentials.as_ref().map(|c| &c.client_email)
    }

    fn direct_url(&self, key: &str) -> Option<String> {
        Some(format!("gs://{}/{key}", self.bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn gcs_crc32c_reads_as_the_dss_hex() {
        // CRC32C("hello") = 0x9a71bb4c; GCS gives its big-endian bytes in base64.
        assert_eq!(crc32c_hex("mnG7TA==").as_deref(), Some("9a71bb4c"));
        assert_eq!(crate::model::checksum::checksums_of(b"hello").crc32c, "9a71bb4c");
        assert_eq!(crc32c_hex("not base64"), None);
    }
    use crate::storage::retry::{BACKOFF_BASE, BACKOFF_CAP};

    #[tokio::test]
    async fn failures_are_retried_with_bounded_jittered_backoff() {
        let clock = Arc::new(ManualClock::at(t0()));
        // Always 503: five attempts, four waits within the exponential caps, then Unavailable.
        let fake = Fake::new(|_| reply(503, "busy"));
        let (s, sleeps) = store(&fake, None, clock.clone());
        assert!(matches!(s.head("files/a").await, Err(StoreError::Unavailable(_))));
        assert_eq!(fake.count(|_| true), MAX_ATTEMPTS as usize);
        let waits = sleeps.0.lock().unwrap().clone();
        assert_eq!(waits.len(), MAX_ATTEMPTS as usize - 1);
        for (i, w) in waits.iter().enumerate() {
            let cap = BACKOFF_BASE * 2u32.pow(i as u32);
            assert!(*w <= cap.min(BACKOFF_CAP), "wait {i}: {w:?}");
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
        let (s, _) = store(&fake, None, Arc::new(ManualClock::at(t0())));
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

    #[tokio::test]
    async fn answers_over_their_caps_are_refused_not_retried() {
        let clock = Arc::new(ManualClock::at(t0()));
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
    fn object_and_direct_urls() {
        let fake = Fake::new(|_| reply(500, ""));
        let (s, _) = store(&fake, None, Arc::new(ManualClock::at(t0())));
        assert_eq!(s.direct_url("blobs/a").as_deref(), Some("gs://bkt/blobs/a"));
        assert_eq!(
            s.object_url("a/b c"),
            "https://gcs.example/storage/v1/b/bkt/o/a%2Fb%20c"
        );
    }
}
