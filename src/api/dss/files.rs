//! `/v1/files/{uuid}`: file metadata, download redirects, and ingest from staging.

use crate::api::params::{int_field, json_body, str_field, uuid};
use crate::api::*;
use crate::bucket::cache::PresignKey;
use crate::bucket::ingest::{declared_checksums, ingest, source_read_error, IngestJob, SourceUrl};
use crate::bucket::{FileDoc, Written};
use crate::model::heap::{alloc_size, HeapSize};
use crate::model::manifest::FileMetadata;
use crate::storage::{PresignOptions, StoreError};

/// A file's metadata with what every response about it needs, prepared once
/// (the document is immutable, so this lives in the replica's cache).
pub struct FileEntry {
    /// The stored document.
    pub meta: FileMetadata,
    /// Key of its blob.
    pub blob_key: String,
    /// The `X-DSS-*` headers.
    headers: Vec<(http::header::HeaderName, http::HeaderValue)>,
}

impl FileEntry {
    fn new(meta: FileMetadata) -> Self {
        use http::header::HeaderName;
        let names = [
            HeaderName::from_static("x-dss-creator-uid"),
            HeaderName::from_static("x-dss-version"),
            HeaderName::from_static("x-dss-content-type"),
            HeaderName::from_static("x-dss-size"),
            HeaderName::from_static("x-dss-crc32c"),
            HeaderName::from_static("x-dss-s3-etag"),
            HeaderName::from_static("x-dss-sha1"),
            HeaderName::from_static("x-dss-sha256"),
        ];
        let m = &meta;
        let values = [
            &m.creator_uid.to_string(),
            &m.version,
            &m.content_type,
            &m.size.to_string(),
            &m.crc32c,
            &m.s3_etag,
            &m.sha1,
            &m.sha256,
        ];
        let headers = names
            .into_iter()
            .zip(values)
            .filter_map(|(n, v)| http::HeaderValue::from_str(v).ok().map(|v| (n, v)))
            .collect();
        FileEntry {
            blob_key: meta.checksums().blob_key(),
            meta,
            headers,
        }
    }

    fn add_headers(&self, r: &mut Response) {
        let h = r.headers_mut();
        h.reserve(self.headers.len() + 2);
        for (n, v) in &self.headers {
            h.insert(n.clone(), v.clone());
        }
    }
}

impl FileDoc for FileEntry {
    fn from_meta(meta: FileMetadata) -> Self {
        FileEntry::new(meta)
    }
    fn meta(&self) -> &FileMetadata {
        &self.meta
    }
}

impl HeapSize for FileEntry {
    fn heap_size(&self) -> usize {
        // Header names are static; each value holds a copy of its text.
        let values: usize = self.headers.iter().map(|(_, v)| alloc_size(v.len())).sum();
        self.meta.heap_size()
            + self.blob_key.heap_size()
            + alloc_size(self.headers.capacity() * std::mem::size_of::<(http::header::HeaderName, http::HeaderValue)>())
            + values
    }
}

/// A presigned GET URL of `key` in `replica`'s checkout bucket (where downloads are
/// served from, as in the original), valid for `ttl`: the one signed for the same object
/// and options less than `ttl / PRESIGN_REUSE_DIVISOR` ago (by the app's clock), else a
/// new one. Only URLs of copies known to be valid are signed, so a URL found here is one.
pub async fn presigned_url<S: Store>(
    replica: &Replica<S>,
    clock: &dyn Clock,
    key: &str,
    ttl: std::time::Duration,
    opts: &PresignOptions,
) -> Result<String, ApiError> {
    let cache_key = PresignKey::new(key, opts, ttl);
    let now = clock.now();
    if let Some(url) = replica.cache.presigned.get(&cache_key, now) {
        return Ok(url.to_string());
    }
    let url = replica.checkout.presign_get(key, ttl, opts).await?;
    replica.cache.presigned.insert(cache_key, &url, now, ttl);
    Ok(url)
}

/// The original's checkout token: `{"execution_id","start_time","attempts"}`, which a
/// 301 carries to the next request of the same download.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CheckoutToken {
    /// The copy (or checkout) being waited for.
    pub execution_id: String,
    /// When the wait began (seconds since the epoch).
    pub start_time: f64,
    /// Requests so far.
    pub attempts: u32,
}

/// Parse a `token` parameter: absent is `None`; anything but the original's shape is
/// 400 `illegal_token`.
pub fn parse_token(token: Option<&str>) -> Result<Option<CheckoutToken>, ApiError> {
    let Some(t) = token else { return Ok(None) };
    let v: serde_json::Value = serde_json::from_str(t).map_err(|_| ApiError::IllegalToken)?;
    let id = match v.get("execution_id") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) if !other.is_null() => other.to_string(),
        _ => return Err(ApiError::IllegalToken),
    };
    let start_time = v
        .get("start_time")
        .and_then(serde_json::Value::as_f64)
        .ok_or(ApiError::IllegalToken)?;
    let attempts = v
        .get("attempts")
        .and_then(serde_json::Value::as_u64)
        .ok_or(ApiError::IllegalToken)?;
    Ok(Some(CheckoutToken {
        execution_id: id,
        start_time,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
    }))
}

/// How long a download waits for its copy (from the token's `start_time`) before it is
/// answered 500 `checkout_error`.
const CHECKOUT_WAIT_SECS: f64 = 6.0 * 3600.0;

impl CheckoutToken {
    /// The token of a wait for `execution_id` that begins `now`.
    pub fn begin(execution_id: String, now: chrono::DateTime<chrono::Utc>) -> Self {
        CheckoutToken {
            execution_id,
            start_time: now.timestamp_millis() as f64 / 1000.0,
            attempts: 1,
        }
    }

    /// The same wait, one request on.
    pub fn next(self) -> Self {
        CheckoutToken {
            attempts: self.attempts.saturating_add(1),
            ..self
        }
    }
}

/// A 301 to this same request with `token` added (or advanced), `version` pinned (the
/// same version on the way back, whatever is written meanwhile) and `Retry-After: 10`:
/// how the original sent a client back while a checkout copy was being made.
pub fn come_back(ctx: &Ctx<'_>, token: &CheckoutToken, version: &str) -> Result<Response, ApiError> {
    let t = serde_json::to_string(token).map_err(|e| ApiError::Internal(e.to_string()))?;
    let url = ctx.url_with(&[("token", Some(&t)), ("version", Some(version))]);
    let mut r = http::Response::new(Body::empty());
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    set_header(&mut r, "location", &url);
    set_header(&mut r, "retry-after", "10");
    Ok(r)
}

/// Make sure the checkout bucket of `replica` holds a copy of the file's blob that may be
/// served: `None` when it does (copied now if it was missing and small), or the 301 that
/// sends the client back while a job copies it. An ageing copy is served and copied
/// again meanwhile. At the edge (no jobs), a missing copy is [`ApiError::NeedsBackend`].
async fn ensure_copy<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    replica: &Replica<S>,
    file: &FileEntry,
    token: Option<CheckoutToken>,
) -> Result<Option<Response>, ApiError> {
    use crate::bucket::checkout::{copy_blob_out, copy_state, CopyOutJob, CopyState};
    let (size, ct) = (file.meta.size, &file.meta.content_type);
    let now = app.clock.now();
    let state = copy_state(&replica.checkout, &file.blob_key, size, now, &app.config.checkout).await?;
    let expiring = !app.config.checkout.cached(ct, size);
    let job = || CopyOutJob {
        replica: replica.name.clone(),
        blob_key: file.blob_key.clone(),
        content_type: ct.clone(),
        expiring,
    };
    match (state, app.jobs.as_ref()) {
        (CopyState::Fresh, _) | (CopyState::Aging, None) => Ok(None),
        (CopyState::Aging, Some(jobs)) => {
            if let Err(e) = jobs.submit_copy_out(job()).await {
                tracing::warn!(blob = %file.blob_key, "ageing checkout copy not renewed: {e}");
            }
            Ok(None)
        }
        (CopyState::Missing, None) => Err(ApiError::NeedsBackend),
        // The original sent the client back for every size; a small copy is quicker made.
        (CopyState::Missing, Some(_)) if size <= app.config.checkout.inline_max => {
            copy_blob_out(&replica.main, &replica.checkout, &file.blob_key, ct, expiring).await?;
            Ok(None)
        }
        (CopyState::Missing, Some(jobs)) => {
            let now_secs = now.timestamp_millis() as f64 / 1000.0;
            if let Some(e) = jobs.copy_out_failed(&replica.name, &file.blob_key).await {
                if token.is_some() {
                    return Err(ApiError::CheckoutFailed(format!(
                        "the copy of this file for download failed: {e}"
                    )));
                }
                // Without a token the client starts over: the copy is tried again.
            }
            let token = match token {
                Some(t) if now_secs - t.start_time > CHECKOUT_WAIT_SECS => {
                    return Err(ApiError::CheckoutFailed(
                        "the copy of this file for download did not finish in time".into(),
                    ))
                }
                Some(t) => t.next(),
                None => CheckoutToken::begin(uuid::Uuid::new_v4().to_string(), now),
            };
            // A copy already queued absorbs this one.
            jobs.submit_copy_out(job())
                .await
                .map_err(|e| ApiError::Unavailable(format!("the copy for this download could not be queued: {e}")))?;
            come_back(ctx, &token, &file.meta.version).map(Some)
        }
    }
}

/// `HEAD /v1/files/{uuid}`.
pub async fn head<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let id = uuid(id)?;
    let replica = app.replica_param(&ctx.query)?;
    let meta = find_file(app, replica, id.as_str(), ctx.query.get("version")).await?;
    let mut r = http::Response::new(Body::empty());
    meta.add_headers(&mut r);
    Ok(r)
}

/// The file's metadata at `version` or its latest (see [`crate::bucket::Bucket::file`]);
/// a version whose background ingest failed answers
/// 422 with the reason (the original's `missing_checksum` for a failed async copy),
/// where a version still being ingested answers 404, which is what the `hca` CLI polls for.
async fn find_file<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    replica: &Replica<S>,
    uuid: &str,
    version: Option<&str>,
) -> Result<Arc<FileEntry>, ApiError> {
    let not_found = || ApiError::NotFound("Cannot find file!".into());
    match app.bucket(replica).file(uuid, version, app.clock.now()).await? {
        Some(entry) => Ok(entry),
        None => {
            let failure = match (version, app.jobs.as_ref()) {
                (Some(v), Some(jobs)) => jobs.ingest_failure(&replica.name, uuid, v).await,
                _ => None,
            };
            Err(match failure {
                Some(f) => ApiError::Recorded {
                    status: f.status,
                    code: f.code,
                    title: format!("the ingest of this file failed: {}", f.title),
                },
                None => not_found(),
            })
        }
    }
}

/// `GET /v1/files/{uuid}`: 302 to a presigned URL (or, with `directurl`, the cloud URL)
/// of the blob's copy in the replica's checkout bucket, made first if need be (see
/// [`ensure_copy`]).
pub async fn get<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let id = uuid(id)?;
    let replica = app.replica_param(&ctx.query)?;
    let directurl = ctx.query.bool("directurl")?;
    let token = parse_token(ctx.query.get("token"))?;
    let meta = find_file(app, replica, id.as_str(), ctx.query.get("version")).await?;
    let direct = match directurl {
        true => Some(
            replica
                .checkout
                .direct_url(&meta.blob_key)
                .ok_or_else(|| ApiError::DirectUrlsUnavailable(replica.name.clone()))?,
        ),
        false => None,
    };
    let opts = PresignOptions {
        content_disposition: ctx.query.get("content_disposition").map(str::to_string),
        content_type: Some(meta.meta.content_type.clone()),
    };
    // A URL signed minutes ago was signed for a valid copy: the hot path asks storage nothing.
    let cached = PresignKey::new(&meta.blob_key, &opts, app.config.presigned_ttl);
    let hit = direct.is_none() && replica.cache.presigned.get(&cached, app.clock.now()).is_some();
    if !hit {
        if let Some(back) = ensure_copy(app, ctx, replica, &meta, token).await? {
            return Ok(back);
        }
    }
    let mut r = http::Response::new(Body::empty());
    *r.status_mut() = StatusCode::FOUND;
    meta.add_headers(&mut r);
    if let Some(url) = direct {
        set_header(&mut r, "location", &url);
        return Ok(r);
    }
    let url = presigned_url(
        replica,
        app.clock.as_ref(),
        &meta.blob_key,
        app.config.presigned_ttl,
        &opts,
    )
    .await?;
    set_header(&mut r, "location", &url);
    Ok(r)
}

/// `PUT /v1/files/{uuid}?version=V`: ingest a staged object.
pub async fn put<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let id = uuid(id)?;
    let version = ctx.query.required_version("version")?;
    let body = json_body(ctx.body)?;
    let source_url = str_field(&body, "source_url")?;
    let creator_uid = int_field(&body, "creator_uid")?;

    let source = SourceUrl::parse(source_url, app.config.staging_dir.as_deref())?;
    // Cloud sources imply their replica (s3 -> aws, gs -> gcp) as in the original;
    // local files go to `replica` (default aws).
    let replica = app.replica(
        source
            .implied_replica()
            .unwrap_or(ctx.query.get("replica").unwrap_or("aws")),
    )?;
    let src = app.source_store(&source)?;
    let staged = match src.head_with_tags(&source.key).await {
        Ok(m) => m,
        Err(StoreError::NotFound(_)) => {
            return Err(ApiError::IllegalSourceUrl(format!(
                "staging object {source_url} does not exist"
            )))
        }
        Err(e) => return Err(source_read_error(&source, e).into()),
    };
    let expected = declared_checksums(&staged, &source).map_err(ApiError::Checksum)?;
    let content_type = staged
        .content_type
        .clone()
        .unwrap_or_else(|| guess_content_type(&source.key));
    let job = IngestJob {
        task_id: uuid::Uuid::new_v4().to_string(),
        source,
        replica: replica.name.to_string(),
        uuid: id.to_string(),
        version: version.to_string(),
        creator_uid,
        expected,
        size: staged.size,
        content_type,
    };
    drop(src);
    if job.size > app.config.async_ingest_threshold {
        if let Some(jobs) = &app.jobs {
            jobs.submit_ingest(job.clone()).await.map_err(|e| {
                tracing::error!("ingest job not recorded: {e}");
                ApiError::Unavailable("the ingest could not be queued; repeat the request".into())
            })?;
            tracing::info!(uuid = %job.uuid, version = %job.version, task = %job.task_id, "large file: ingest queued");
            return Ok(json_response(
                StatusCode::ACCEPTED,
                &serde_json::json!({"version": job.version, "task_id": job.task_id}),
            ));
        }
    }
    let src = app.source_store(&job.source)?;
    let progress = Arc::new(crate::model::ProgressCounter::default()); // nobody to tell inline
    let status = match ingest(&*src, &app.bucket(replica), &job, &progress).await? {
        Written::Created => StatusCode::CREATED,
        Written::Existing => StatusCode::OK,
    };
    precache(app, replica, &job).await;
    Ok(json_response(status, &serde_json::json!({"version": job.version})))
}

/// After an ingest: a file the caching rules keep (`CHECKOUT_CACHE_CRITERIA`, small
/// metadata files) is copied to the replica's checkout bucket at once, as the original
/// did, so that its first download is a redirect without a copy. Best effort: a failure
/// only means that download makes the copy.
pub async fn precache<S: Store, H: HttpClient, T: Sleeper>(app: &App<S, H, T>, replica: &Replica<S>, job: &IngestJob) {
    if app.config.checkout.cached(&job.content_type, job.size) {
        precache_file(app, replica, &job.uuid, &job.version).await;
    }
}

/// [`precache`] of file `uuid` at `version` as `replica` holds it (also for a file that
/// replication has just brought).
pub async fn precache_file<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    replica: &Replica<S>,
    uuid: &str,
    version: &str,
) {
    let found = app
        .bucket(replica)
        .peek_file(uuid, version, |m| {
            (m.checksums().blob_key(), m.content_type.clone(), m.size)
        })
        .await;
    let result = match found {
        Ok(Some((blob, ct, size))) if app.config.checkout.cached(&ct, size) => {
            crate::bucket::checkout::copy_blob_out(&replica.main, &replica.checkout, &blob, &ct, false)
                .await
                .map_err(|e| e.to_string())
        }
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("its metadata is not there".into()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::warn!(uuid, version, replica = %replica.name, "file not copied to the checkout bucket: {e}");
    }
}

/// Content type from a file name, as the `hca` CLI guesses it (`.json` -> `application/json`).
pub fn guess_content_type(name: &str) -> String {
    mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::checksum::checksums_of;
    use crate::storage::memory::MemoryStore;
    use crate::storage::signer::Signer;
    use crate::storage::PutOptions;
    use std::sync::Mutex;

    /// A clock the test moves.
    pub(crate) struct TestClock(Mutex<chrono::DateTime<chrono::Utc>>);

    impl TestClock {
        pub(crate) fn at(t: &str) -> Arc<Self> {
            Arc::new(TestClock(Mutex::new(t.parse().unwrap())))
        }
        pub(crate) fn advance(&self, d: chrono::Duration) {
            *self.0.lock().unwrap() += d;
        }
    }

    impl Clock for TestClock {
        fn now(&self) -> chrono::DateTime<chrono::Utc> {
            *self.0.lock().unwrap()
        }
    }

    /// Sleeps end at once, moving the test clock on by their length.
    pub(crate) struct ClockSleeper(pub(crate) Arc<TestClock>);

    impl Sleeper for ClockSleeper {
        async fn sleep(&self, d: std::time::Duration) {
            self.0.advance(chrono::Duration::from_std(d).unwrap());
        }
    }

    /// An app over stores made by `store` (given their names), on `clock`, that trusts
    /// no tokens.
    pub(crate) fn test_app<S: Store>(
        store: impl Fn(&str) -> S,
        clock: Arc<TestClock>,
    ) -> App<S, crate::http::ReqwestClient, ClockSleeper> {
        let c: Arc<dyn Clock> = clock.clone();
        let keys = crate::auth::jwks::KeySet::new(None, Vec::new(), None, c.clone());
        App {
            config: ApiConfig::default(),
            replicas: crate::api::Replicas::new(vec![
                Replica::new("aws", store("aws"), store("aws-checkout")),
                Replica::new("gcp", store("gcp"), store("gcp-checkout")),
            ]),
            staging: None,
            auth: crate::auth::Authenticator::new(Default::default(), keys, c.clone()),
            signer: None,
            dev_jwks: None,
            clock: c,
            sleeper: ClockSleeper(clock),
            swagger: serde_json::Value::Null,
            bucket_store: None,
            jobs: None,
            search: None,
            subscriptions: None,
            collections: None,
            events: None,
        }
    }

    /// A memory store whose download URLs are signed by `clock`.
    pub(crate) fn memory(name: &str, clock: &Arc<TestClock>) -> MemoryStore {
        let c: Arc<dyn Clock> = clock.clone();
        let signer = Signer::new("http://dss.test", b"k".to_vec(), c.clone());
        MemoryStore::new(name, Some(Arc::new(signer)), c)
    }

    pub(crate) const V1: &str = "2017-06-16T193604.240704Z";

    #[test]
    fn content_types() {
        assert_eq!(guess_content_type("x/cell_suspension_0.json"), "application/json");
        assert_eq!(guess_content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn file_entries_weigh_their_document_key_and_headers() {
        let meta = FileMetadata::new(0, V1, "application/json", 1, &checksums_of(b"x"));
        let e = FileEntry::new(meta.clone());
        let headers: usize = e.headers.iter().map(|(_, v)| v.len()).sum();
        assert!(e.heap_size() >= meta.heap_size() + e.blob_key.len() + headers);
        let w = crate::bucket::cache::entry_weight(
            &crate::bucket::keys::file_key("ce55fd51-7833-469b-be0b-5da88ebebfcd", V1),
            &e,
        );
        // The budget comment's "about 2 KiB".
        assert!((1700..2400).contains(&w), "{w}");
    }

    #[tokio::test]
    async fn download_urls_are_reused_for_a_twentieth_of_their_lifetime_by_the_app_clock() {
        let clock = TestClock::at("2024-05-06T07:08:09Z");
        let app = test_app(|name| memory(name, &clock), clock.clone());
        let id = "ce55fd51-7833-469b-be0b-5da88ebebfcd";
        let meta = FileMetadata::new(0, V1, "text/plain", 1, &checksums_of(b"x"));
        let aws = app.replicas.get("aws").expect("aws");
        // Its copy in the checkout bucket, which downloads are served from.
        aws.checkout
            .put(
                &checksums_of(b"x").blob_key(),
                Bytes::from_static(b"x"),
                PutOptions::if_absent(),
            )
            .await
            .unwrap();
        aws.main
            .put(
                &crate::bucket::keys::file_key(id, V1),
                meta.to_bytes().into(),
                PutOptions::if_absent(),
            )
            .await
            .unwrap();
        let location = |query: &str| {
            let req = http::Request::get(format!("/v1/files/{id}?replica=aws&version={V1}{query}"))
                .body(Bytes::new())
                .unwrap();
            let app = &app;
            async move {
                let r = app.handle(req).await;
                assert_eq!(r.status(), StatusCode::FOUND);
                r.headers()["location"].to_str().unwrap().to_string()
            }
        };
        let first = location("").await;
        // A second later the signer would grant a later expiry: the same URL is handed out.
        clock.advance(chrono::Duration::seconds(1));
        assert_eq!(location("").await, first);
        // Other response headers are another URL.
        let attachment = location("&content_disposition=attachment").await;
        assert_ne!(attachment, first);
        assert!(attachment.contains("attachment"), "{attachment}");
        // Reused for 3 minutes of the default hour, then signed anew.
        clock.advance(chrono::Duration::seconds(178));
        assert_eq!(location("").await, first);
        clock.advance(chrono::Duration::seconds(1));
        let fresh = location("").await;
        assert_ne!(fresh, first);
        assert_eq!(location("").await, fresh);
    }
}
