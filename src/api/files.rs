//! `/v1/files/{uuid}`: file metadata, download redirects, and ingest from staging.

use super::params::{int_field, json_body, str_field, uuid};
use super::*;
use crate::model::checksum::ChecksumHasher;
use crate::model::manifest::{file_key, FileMetadata};
use crate::model::{Checksums, DssVersion};
use crate::storage::{list_all, PresignOptions, PutOptions, StoreError};
use futures::StreamExt;

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
    let meta = load_file_metadata(replica, id.as_str(), ctx.query.get("version")).await?;
    let mut r = http::Response::new(Body::empty());
    meta.add_headers(&mut r);
    Ok(r)
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
    let meta = load_file_metadata(replica, id.as_str(), ctx.query.get("version")).await?;
    if directurl && replica.local {
        return Err(ApiError::DirectUrlsUnavailable(replica.name.into()));
    }
    let opts = PresignOptions {
        content_disposition: ctx.query.get("content_disposition").map(str::to_string),
        content_type: Some(meta.meta.content_type.clone()),
    };
    let url = replica
        .main
        .presign_get(&meta.blob_key, app.config.presigned_ttl, &opts)
        .await?;
    let mut r = http::Response::new(Body::empty());
    *r.status_mut() = StatusCode::FOUND;
    set_header(&mut r, "location", &url);
    meta.add_headers(&mut r);
    Ok(r)
}

/// Where a `source_url` points.
enum Source<'a> {
    /// `file:///…` under the staging directory: the key inside it.
    Staging(String),
    /// `s3://` or `gs://`: the replica it implies, bucket and key.
    Cloud { replica: &'static str, bucket: &'a str },
}

fn parse_source<'a>(url: &'a str, staging_dir: Option<&str>) -> Result<Source<'a>, ApiError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| ApiError::UnknownSourceSchema(url.to_string()))?;
    match scheme {
        "s3" | "gs" => {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() || key.is_empty() {
                return Err(ApiError::IllegalSourceUrl(format!(
                    "source_url {url} must be {scheme}://bucket/key"
                )));
            }
            Ok(Source::Cloud {
                replica: if scheme == "s3" { "aws" } else { "gcp" },
                bucket,
            })
        }
        "file" => {
            let dir = staging_dir
                .ok_or_else(|| ApiError::IllegalSourceUrl("file:// sources are not enabled on this server".into()))?;
            let path = percent_encoding::percent_decode_str(rest)
                .decode_utf8()
                .map_err(|_| ApiError::IllegalSourceUrl(format!("source_url {url} is not UTF-8")))?;
            let dir = dir.trim_end_matches('/');
            let key = path
                .strip_prefix(dir)
                .and_then(|k| k.strip_prefix('/'))
                .filter(|k| crate::storage::check_key(k).is_ok())
                .ok_or_else(|| {
                    ApiError::IllegalSourceUrl(format!(
                        "source_url {url} is not a file under the staging directory {dir}"
                    ))
                })?;
            Ok(Source::Staging(key.to_string()))
        }
        other => Err(ApiError::UnknownSourceSchema(other.to_string())),
    }
}

/// Stream `key` of `store` through a checksum hasher.
async fn checksum_object<S: Store>(
    store: &S,
    key: &str,
) -> Result<(Checksums, u64, crate::storage::ObjectMeta), ApiError> {
    let (meta, _, mut stream) = match store.get_range(key, None).await {
        Ok(v) => v,
        Err(StoreError::NotFound(_)) => {
            return Err(ApiError::IllegalSourceUrl(format!(
                "staging object {key} does not exist"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let mut h = ChecksumHasher::new(meta.size);
    while let Some(chunk) = stream.next().await {
        h.update(&chunk.map_err(|e| ApiError::Internal(format!("reading staging object {key}: {e}")))?);
    }
    let size = h.size();
    Ok((h.finish(), size, meta))
}

/// Copy `key` from staging into the replica's blob at `blob_key`, hashing the bytes
/// as they are written; the blob is removed again if they do not match `expected`.
async fn copy_verified<S: Store>(
    src: &S,
    key: &str,
    dst: &S,
    blob_key: &str,
    expected: &Checksums,
    size: u64,
) -> Result<(), ApiError> {
    let (_, _, stream) = src.get_range(key, None).await?;
    // Verified before it becomes visible: a mismatch fails the write itself.
    let (stream, mismatch) = crate::storage::verify::verified(stream, size, expected.clone());
    match dst.put_stream(blob_key, stream, PutOptions::if_absent()).await {
        Ok(_) => Ok(()),
        // Someone stored the same content first: content-addressed, so it is ours too.
        Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(_) if mismatch.is_set() => Err(ApiError::ChecksumMismatch(format!(
            "staging object {key} changed while it was copied"
        ))),
        Err(e) => Err(e.into()),
    }
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

    let (replica, staging_key) = match parse_source(source_url, app.config.staging_dir.as_deref())? {
        Source::Cloud { replica, bucket } => {
            return Err(ApiError::IllegalSourceUrl(format!(
                "{source_url}: replica {replica} is a local directory on this server, so it cannot read bucket {bucket}; \
                 stage the file with `dss stage` and use its file:// URL, or configure the {replica} replica's cloud bucket"
            )));
        }
        Source::Staging(key) => (app.replica(ctx.query.get("replica").unwrap_or("aws"))?, key),
    };
    let staging = app
        .staging
        .as_ref()
        .ok_or_else(|| ApiError::IllegalSourceUrl("file:// sources are not enabled on this server".into()))?;

    // One pass to learn the checksums (the server computes them for local files) ...
    let (computed, size, staged_meta) = checksum_object(staging, &staging_key).await?;
    let declared = staged_meta.metadata.keys().any(|k| k.starts_with("hca-dss-"));
    if declared {
        let given = Checksums::from_staging(|k| staged_meta.metadata.get(k).cloned()).map_err(ApiError::Checksum)?;
        if given != computed {
            return Err(ApiError::ChecksumMismatch(format!(
                "the checksums declared for {source_url} do not match its bytes"
            )));
        }
    }
    let content_type = staged_meta
        .content_type
        .clone()
        .unwrap_or_else(|| guess_content_type(&staging_key));
    let blob_key = computed.blob_key();

    // ... then the blob (skipped when the content is already stored) ...
    let present = matches!(replica.main.head(&blob_key).await, Ok(m) if m.size == size);
    if !present {
        copy_verified(staging, &staging_key, &replica.main, &blob_key, &computed, size).await?;
    }

    // ... and the metadata last, only if absent: it is what makes the file visible.
    let meta = FileMetadata::new(creator_uid, version.as_str(), &content_type, size, &computed);
    let key = file_key(id.as_str(), version.as_str());
    let status = match replica
        .main
        .put(&key, Bytes::from(meta.to_bytes()), PutOptions::if_absent())
        .await
    {
        Ok(()) => StatusCode::CREATED,
        Err(StoreError::AlreadyExists(_)) => {
            let existing: serde_json::Value = serde_json::from_slice(&replica.main.get(&key).await?)
                .map_err(|e| ApiError::Internal(format!("{key} unreadable: {e}")))?;
            let ours = serde_json::to_value(&meta).map_err(|e| ApiError::Internal(e.to_string()))?;
            if existing == ours {
                StatusCode::OK
            } else {
                return Err(ApiError::FileAlreadyExists(id.to_string(), version.to_string()));
            }
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(uuid = %id, version = %version, size, replica = replica.name, "file stored");
    Ok(json_response(status, &serde_json::json!({"version": version.as_str()})))
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
    fn sources() {
        let dir = Some("/data/staging");
        assert!(
            matches!(parse_source("file:///data/staging/a/b.json", dir), Ok(Source::Staging(k)) if k == "a/b.json")
        );
        for bad in [
            "file:///data/staging/../etc/passwd",
            "file:///data/stagingX/a",
            "file:///etc/passwd",
            "file:///data/staging/",
            "file:///data/staging/a/./b",
        ] {
            assert!(
                matches!(parse_source(bad, dir), Err(ApiError::IllegalSourceUrl(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_source("file:///data/staging/a", None),
            Err(ApiError::IllegalSourceUrl(_))
        ));
        assert!(matches!(
            parse_source("wasb://a/b", dir),
            Err(ApiError::UnknownSourceSchema(_))
        ));
        assert!(matches!(
            parse_source("http://a/b", dir),
            Err(ApiError::UnknownSourceSchema(_))
        ));
        assert!(matches!(
            parse_source("nonsense", dir),
            Err(ApiError::UnknownSourceSchema(_))
        ));
        assert!(matches!(
            parse_source("s3://bucket/key", dir),
            Ok(Source::Cloud {
                replica: "aws",
                bucket: "bucket"
            })
        ));
        assert!(matches!(
            parse_source("gs://bucket/key", dir),
            Ok(Source::Cloud { replica: "gcp", .. })
        ));
        assert!(matches!(
            parse_source("s3://bucket", dir),
            Err(ApiError::IllegalSourceUrl(_))
        ));
        assert_eq!(guess_content_type("x/cell_suspension_0.json"), "application/json");
    }
}
