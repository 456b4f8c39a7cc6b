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

/// A presigned GET URL of `blob_key` in `replica`, valid for `ttl`: the one signed for
/// the same blob and options less than `ttl / PRESIGN_REUSE_DIVISOR` ago (by the app's
/// clock), else a new one.
pub async fn presigned_url<S: Store>(
    replica: &Replica<S>,
    clock: &dyn Clock,
    blob_key: &str,
    ttl: std::time::Duration,
    opts: &PresignOptions,
) -> Result<String, ApiError> {
    let key = PresignKey::new(blob_key, opts, ttl);
    let now = clock.now();
    if let Some(url) = replica.cache.presigned.get(&key, now) {
        return Ok(url.to_string());
    }
    let url = replica.main.presign_get(blob_key, ttl, opts).await?;
    replica.cache.presigned.insert(key, &url, now, ttl);
    Ok(url)
}

/// The checkout token of the original (`{"execution_id","start_time","attempts"}`);
/// blobs here are served without a checkout copy, so a token is only validated.
fn check_token(token: Option<&str>) -> Result<(), ApiError> {
    let Some(t) = token else { return Ok(()) };
    let v: serde_json::Value = serde_json::from_str(t).map_err(|_| ApiError::IllegalToken)?;
    let ok = v.get("execution_id").is_some()
        && v.get("start_time").is_some()
        && v.get("attempts").map(|a| a.is_number()).unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(ApiError::IllegalToken)
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

/// `GET /v1/files/{uuid}`: 302 to a presigned URL of the blob.
pub async fn get<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let id = uuid(id)?;
    let replica = app.replica_param(&ctx.query)?;
    let directurl = ctx.query.bool("directurl")?;
    check_token(ctx.query.get("token"))?;
    let meta = find_file(app, replica, id.as_str(), ctx.query.get("version")).await?;
    let mut r = http::Response::new(Body::empty());
    *r.status_mut() = StatusCode::FOUND;
    meta.add_headers(&mut r);
    if directurl {
        let url = replica
            .main
            .direct_url(&meta.blob_key)
            .ok_or_else(|| ApiError::DirectUrlsUnavailable(replica.name.clone()))?;
        set_header(&mut r, "location", &url);
        return Ok(r);
    }
    let opts = PresignOptions {
        content_disposition: ctx.query.get("content_disposition").map(str::to_string),
        content_type: Some(meta.meta.content_type.clone()),
    };
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
    Ok(json_response(status, &serde_json::json!({"version": job.version})))
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
        app.replicas
            .get("aws")
            .expect("aws")
            .main
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
