//! `/v1/files/{uuid}`: file metadata, download redirects, and ingest from staging.

use super::ingest::{declared_checksums, ingest, IngestJob, SourceUrl, ASYNC_THRESHOLD};
use super::params::{int_field, json_body, str_field, uuid};
use super::*;
use crate::model::manifest::{file_key, FileMetadata};
use crate::model::DssVersion;
use crate::storage::{list_all, PresignOptions, StoreError};

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

/// Resolve `version` (or the latest) and load the file's metadata from the replica.
pub async fn load_file_metadata<S: Store>(
    replica: &Replica<S>,
    uuid: &str,
    version: Option<&str>,
) -> Result<Arc<FileEntry>, ApiError> {
    let not_found = || ApiError::NotFound("Cannot find file!".into());
    let store = &replica.main;
    let version = match version {
        // GET's `version` has no declared format: anything that is not a version simply is not found.
        Some(v) => DssVersion::parse(v).map_err(|_| not_found())?.as_str().to_string(),
        None => {
            let prefix = format!("files/{uuid}.");
            let keys = list_all(store, &prefix).await?;
            keys.iter()
                .filter_map(|k| k.strip_prefix(&prefix))
                .max()
                .ok_or_else(not_found)?
                .to_string()
        }
    };
    let key = file_key(uuid, &version);
    if let Some(m) = replica.cache.files.get(&key) {
        return Ok(m);
    }
    let bytes = match store.get(&key).await {
        Ok(b) => b,
        Err(StoreError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let meta: FileMetadata = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Internal(format!("file metadata {key} unreadable: {e}")))?;
    let entry = Arc::new(FileEntry::new(meta));
    replica.cache.files.insert(key, entry.clone());
    Ok(entry)
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

/// [`load_file_metadata`], except that a version whose background ingest failed answers
/// 422 with the reason (the original's `missing_checksum` for a failed async copy),
/// where a version still being ingested answers 404, which is what the `hca` CLI polls for.
async fn find_file<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    replica: &Replica<S>,
    uuid: &str,
    version: Option<&str>,
) -> Result<Arc<FileEntry>, ApiError> {
    match load_file_metadata(replica, uuid, version).await {
        Err(ApiError::NotFound(m)) => {
            let failure = version
                .zip(app.jobs.as_ref())
                .and_then(|(v, jobs)| jobs.ingest_failure(replica.name, uuid, v));
            Err(match failure {
                Some(f) => ApiError::Recorded {
                    status: f.status,
                    code: f.code,
                    title: format!("the ingest of this file failed: {}", f.title),
                },
                None => ApiError::NotFound(m),
            })
        }
        other => other,
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
            .ok_or_else(|| ApiError::DirectUrlsUnavailable(replica.name.into()))?;
        set_header(&mut r, "location", &url);
        return Ok(r);
    }
    let opts = PresignOptions {
        content_disposition: ctx.query.get("content_disposition").map(str::to_string),
        content_type: Some(meta.meta.content_type.clone()),
    };
    let url = replica
        .main
        .presign_get(&meta.blob_key, app.config.presigned_ttl, &opts)
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
    let who = app.identity(ctx).await?;
    who.require_group(&["hca"])?;
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
        Err(e) => return Err(e.into()),
    };
    let expected = declared_checksums(&staged, &source)?;
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
    if job.size > ASYNC_THRESHOLD {
        if let Some(jobs) = &app.jobs {
            jobs.submit_ingest(job.clone()).map_err(ApiError::Internal)?;
            tracing::info!(uuid = %job.uuid, version = %job.version, task = %job.task_id, "large file: ingest queued");
            return Ok(json_response(
                StatusCode::ACCEPTED,
                &serde_json::json!({"version": job.version, "task_id": job.task_id}),
            ));
        }
    }
    let status = ingest(app, &job).await?;
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
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(guess_content_type("x/cell_suspension_0.json"), "application/json");
        assert_eq!(guess_content_type("noext"), "application/octet-stream");
    }
}
