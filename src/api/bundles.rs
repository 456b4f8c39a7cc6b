//! `/v1/bundles/…`: manifests, tombstones, enumeration.

use super::params::{int_field, json_body, str_field, uuid};
use super::*;
use crate::model::manifest::{
    bundle_key, file_key, parse_bundle_key, tombstone_key, valid_file_name, BundleFile, BundleKey, BundleManifest,
    FileMetadata, Tombstone,
};
use crate::model::{DssVersion, ObjectUuid};
use crate::storage::{list_all, PutOptions, StoreError};
use futures::StreamExt;
use serde_json::{json, Value};

/// Files fetched concurrently when building a manifest.
const FILE_LOOKUP_CONCURRENCY: usize = 32;
/// Manifests with more files than this are read from storage each time.
const MAX_CACHED_MANIFEST_FILES: usize = 2_000;
/// Most items `PATCH` accepts in each of `add_files` and `remove_files`.
const PATCH_MAX_ITEMS: usize = 1000;

/// Load a manifest under the original's tombstone rules: an unversioned tombstone
/// hides every version, a versioned one hides its version, and "latest" is the
/// greatest version without a tombstone. `None` when nothing visible exists.
pub async fn load_manifest<S: Store>(
    replica: &Replica<S>,
    uuid: &str,
    version: Option<&str>,
) -> Result<Option<Arc<BundleManifest>>, ApiError> {
    let store = &replica.main;
    if version.is_some_and(|v| DssVersion::parse(v).is_err()) {
        return Ok(None);
    }
    // One listing answers both tombstone questions and "which is the latest".
    let keys = list_all(store, &format!("bundles/{uuid}.")).await?;
    let mut dead_all = false;
    let mut dead = std::collections::HashSet::new();
    let mut live = Vec::new();
    for k in &keys {
        match parse_bundle_key(k) {
            Some(BundleKey::Tombstone { .. }) => dead_all = true,
            Some(BundleKey::VersionTombstone { version, .. }) => {
                dead.insert(version);
            }
            Some(BundleKey::Manifest { version, .. }) => live.push(version),
            None => {}
        }
    }
    if dead_all {
        return Ok(None);
    }
    let chosen = match version {
        Some(v) if dead.contains(v) || !live.contains(&v) => return Ok(None),
        Some(v) => v.to_string(),
        None => match live.into_iter().filter(|v| !dead.contains(v)).max() {
            Some(v) => v.to_string(),
            None => return Ok(None),
        },
    };
    let key = bundle_key(uuid, &chosen);
    if let Some(m) = replica.cache.bundles.get(&key) {
        return Ok(Some(m));
    }
    let bytes = match store.get(&key).await {
        Ok(b) => b,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let m: BundleManifest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Internal(format!("bundle manifest {key} unreadable: {e}")))?;
    let m = Arc::new(m);
    // Huge manifests are not kept: the cache is bounded by entries, not bytes.
    if m.files.len() <= MAX_CACHED_MANIFEST_FILES {
        replica.cache.bundles.insert(key, m.clone());
    }
    Ok(Some(m))
}

/// `GET /v1/bundles/{uuid}`.
pub async fn get<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let id = uuid(id)?;
    let replica = app.replica_param(&ctx.query)?;
    let per_page = ctx.query.int_in("per_page", 10, 500, 500)? as usize;
    let start_at = ctx.query.int_in("start_at", 0, i64::MAX, 0)? as usize;
    let directurls = ctx.query.bool("directurls")?;
    let presignedurls = ctx.query.bool("presignedurls")?;
    if directurls && presignedurls {
        return Err(ApiError::OnlyOneUrlType);
    }
    if directurls && replica.main.direct_url("blobs/x").is_none() {
        return Err(ApiError::DirectUrlsUnavailable(replica.name.into()));
    }
    let manifest = load_manifest(replica, id.as_str(), ctx.query.get("version"))
        .await?
        .ok_or_else(|| ApiError::NotFound("Cannot find bundle!".into()))?;

    let total = manifest.files.len();
    let page: &[BundleFile] = manifest.files.get(start_at..).unwrap_or(&[]);
    let page = &page[..page.len().min(per_page)];
    let mut files = Vec::with_capacity(page.len());
    for f in page {
        // URLs point at the blobs themselves: no checkout copy is made first.
        let key = || format!("blobs/{}.{}.{}.{}", f.sha256, f.sha1, f.s3_etag, f.crc32c);
        let url = if presignedurls {
            let opts = crate::storage::PresignOptions {
                content_type: Some(f.content_type.clone()),
                content_disposition: None,
            };
            Some(
                replica
                    .main
                    .presign_get(&key(), app.config.presigned_ttl, &opts)
                    .await?,
            )
        } else if directurls {
            replica.main.direct_url(&key())
        } else {
            None
        };
        files.push(FileOut {
            name: &f.name,
            content_type: &f.content_type,
            size: f.size,
            uuid: &f.uuid,
            version: &f.version,
            crc32c: &f.crc32c,
            s3_etag: &f.s3_etag,
            sha1: &f.sha1,
            sha256: &f.sha256,
            indexed: f.indexed,
            url,
        });
    }
    let body = BundleOut {
        bundle: BundleBody {
            uuid: id.as_str(),
            version: &manifest.version,
            files,
            creator_uid: manifest.creator_uid,
        },
    };
    let body = serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
    let more = total.saturating_sub(start_at) > per_page;
    let mut r = json_bytes(
        if more {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        },
        body,
    );
    if more {
        let next = ctx.url_with(&[
            ("start_at", Some(&(start_at + per_page).to_string())),
            ("version", Some(&manifest.version)),
        ]);
        set_header(&mut r, "link", &format!("<{next}>; rel='next'"));
    }
    set_header(&mut r, "X-OpenAPI-Pagination", if more { "true" } else { "false" });
    set_header(&mut r, "X-OpenAPI-Paginated-Content-Key", "bundle.files");
    Ok(r)
}

/// A file entry as `GET /v1/bundles/{uuid}` shows it (`s3_etag`, not `s3-etag`).
#[derive(serde::Serialize)]
struct FileOut<'a> {
    name: &'a str,
    #[serde(rename = "content-type")]
    content_type: &'a str,
    size: u64,
    uuid: &'a str,
    version: &'a str,
    crc32c: &'a str,
    s3_etag: &'a str,
    sha1: &'a str,
    sha256: &'a str,
    indexed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

#[derive(serde::Serialize)]
struct BundleBody<'a> {
    uuid: &'a str,
    version: &'a str,
    files: Vec<FileOut<'a>>,
    creator_uid: i64,
}

#[derive(serde::Serialize)]
struct BundleOut<'a> {
    bundle: BundleBody<'a>,
}

/// A file reference in a PUT or PATCH body.
struct FileRef {
    name: String,
    uuid: ObjectUuid,
    version: String,
    indexed: bool,
}

fn file_refs(v: &Value, field: &str, need_indexed: bool) -> Result<Vec<FileRef>, ApiError> {
    let list = v
        .as_array()
        .ok_or_else(|| ApiError::IllegalArguments(format!("'{field}' must be an array")))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let obj = item
            .as_object()
            .ok_or_else(|| ApiError::IllegalArguments(format!("{field}[{i}] must be an object")))?;
        let name = str_field(obj, "name")?;
        if !valid_file_name(name) {
            return Err(ApiError::IllegalArguments(format!(
                "'{name}' does not match the file name pattern"
            )));
        }
        let id = ObjectUuid::parse(str_field(obj, "uuid")?).map_err(|e| ApiError::IllegalArguments(e.to_string()))?;
        let version = str_field(obj, "version")?;
        DssVersion::parse(version).map_err(ApiError::IllegalVersion)?;
        let indexed = match obj.get("indexed") {
            Some(Value::Bool(b)) => *b,
            None if !need_indexed => false,
            Some(_) => {
                return Err(ApiError::IllegalArguments(format!(
                    "{field}[{i}].indexed must be a boolean"
                )))
            }
            None => return Err(ApiError::IllegalArguments("'indexed' is a required property".into())),
        };
        out.push(FileRef {
            name: name.to_string(),
            uuid: id,
            version: version.to_string(),
            indexed,
        });
    }
    Ok(out)
}

/// Look up every referenced file's metadata in `replica`, waiting up to the configured
/// time for metadata that is not there yet (an upload finishing elsewhere).
async fn build_entries<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    store: &S,
    refs: Vec<FileRef>,
) -> Result<Vec<BundleFile>, ApiError> {
    let wait = chrono::Duration::from_std(app.config.bundle_file_wait).unwrap_or(chrono::Duration::zero());
    let deadline = app
        .clock
        .now()
        .checked_add_signed(wait)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    let lookups = futures::stream::iter(refs.into_iter().map(|r| async move {
        let key = file_key(r.uuid.as_str(), &r.version);
        loop {
            match store.get(&key).await {
                Ok(b) => {
                    let meta: FileMetadata =
                        serde_json::from_slice(&b).map_err(|e| ApiError::Internal(format!("{key} unreadable: {e}")))?;
                    return Ok(BundleFile::new(&r.name, r.uuid.as_str(), &r.version, r.indexed, &meta));
                }
                Err(StoreError::NotFound(_)) => {
                    if app.clock.now() >= deadline {
                        return Err(ApiError::FileMissing(format!("{}/{}", r.uuid, r.version)));
                    }
                    app.sleeper.sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(e) => return Err(ApiError::from(e)),
            }
        }
    }))
    .buffered(FILE_LOOKUP_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    lookups.into_iter().collect()
}

fn check_duplicates(files: &[BundleFile]) -> Result<(), ApiError> {
    let mut seen = std::collections::HashSet::new();
    for f in files {
        if !seen.insert(f.name.as_str()) {
            return Err(ApiError::DuplicateFilename(f.name.clone()));
        }
    }
    Ok(())
}

/// Write a manifest create-only; an identical existing one is success (200), a
/// different one a conflict.
async fn save_manifest<S: Store>(store: &S, uuid: &str, m: &BundleManifest) -> Result<StatusCode, ApiError> {
    let key = bundle_key(uuid, &m.version);
    let bytes = Bytes::from(m.to_bytes());
    match store.put(&key, bytes.clone(), PutOptions::if_absent()).await {
        Ok(()) => Ok(StatusCode::CREATED),
        Err(StoreError::AlreadyExists(_)) if store.get(&key).await? == bytes => Ok(StatusCode::OK),
        Err(StoreError::AlreadyExists(_)) => Err(ApiError::BundleAlreadyExists(uuid.to_string(), m.version.clone())),
        Err(e) => Err(e.into()),
    }
}

/// Have the search index catch up with `key` (a durable job). The write itself has
/// succeeded; if the job cannot be recorded the client is told to repeat the request,
/// which is idempotent and records it again.
fn index_after_write<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    replica: &Replica<S>,
    key: String,
) -> Result<(), ApiError> {
    let Some(jobs) = &app.jobs else {
        return Ok(());
    };
    jobs.submit_index(crate::search::indexer::IndexJob {
        replica: replica.name.to_string(),
        key,
    })
    .map_err(|e| {
        ApiError::Unavailable(format!(
            "stored, but its indexing could not be recorded ({e}); repeat the request"
        ))
    })
}

/// `PUT /v1/bundles/{uuid}?version&replica`.
pub async fn put<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    app.identity(ctx).await?;
    let id = uuid(id)?;
    let replica = app.replica_param(&ctx.query)?;
    let version = ctx.query.required_version("version")?;
    let body = json_body(ctx.body)?;
    let creator_uid = int_field(&body, "creator_uid")?;
    let refs = file_refs(
        body.get("files")
            .ok_or_else(|| ApiError::IllegalArguments("'files' is a required property".into()))?,
        "files",
        true,
    )?;
    let files = build_entries(app, &replica.main, refs).await?;
    check_duplicates(&files)?;
    let manifest = BundleManifest::new(version.as_str(), files, creator_uid);
    let status = save_manifest(&replica.main, id.as_str(), &manifest).await?;
    index_after_write(app, replica, bundle_key(id.as_str(), &manifest.version))?;
    tracing::info!(uuid = %id, version = %version, files = manifest.files.len(), "bundle stored");
    Ok(json_response(
        status,
        &json!({"version": version.as_str(), "manifest": manifest}),
    ))
}

/// `PATCH /v1/bundles/{uuid}?version&replica`: a new version with files added/removed.
pub async fn patch<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    app.identity(ctx).await?;
    let id = uuid(id)?;
    let replica = app.replica_param(&ctx.query)?;
    let version = ctx.query.required_version("version")?;
    let body = json_body(ctx.body)?;
    let list = |field: &str, need_indexed: bool| -> Result<Vec<FileRef>, ApiError> {
        match body.get(field) {
            None => Ok(Vec::new()),
            Some(v) => {
                let refs = file_refs(v, field, need_indexed)?;
                if refs.len() > PATCH_MAX_ITEMS {
                    return Err(ApiError::IllegalArguments(format!(
                        "'{field}' has more than {PATCH_MAX_ITEMS} items"
                    )));
                }
                Ok(refs)
            }
        }
    };
    let add = list("add_files", true)?;
    let remove = list("remove_files", false)?;
    let mut manifest: BundleManifest = (*load_manifest(replica, id.as_str(), Some(version.as_str()))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Could not find bundle for UUID {id}")))?)
    .clone();
    manifest.files.retain(|f| {
        !remove
            .iter()
            .any(|r| r.name == f.name && r.uuid.as_str() == f.uuid && r.version == f.version)
    });
    let added = build_entries(app, &replica.main, add).await?;
    manifest.files.extend(added);
    check_duplicates(&manifest.files)?;
    let new_version = DssVersion::from_datetime(app.clock.now());
    manifest.version = new_version.as_str().to_string();
    save_manifest(&replica.main, id.as_str(), &manifest).await?;
    index_after_write(app, replica, bundle_key(id.as_str(), &manifest.version))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"uuid": id.as_str(), "version": new_version.as_str()}),
    ))
}

/// `DELETE /v1/bundles/{uuid}?replica[&version]`: write a tombstone (admins only).
pub async fn delete<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let who = app.identity(ctx).await?;
    if !app.config.admin_emails.contains(&who.email) {
        return Err(ApiError::Forbidden(
            "You can't delete bundles with these credentials!".into(),
        ));
    }
    let id = uuid(id)?;
    let replica = app.replica_param(&ctx.query)?;
    let version = ctx.query.version("version")?;
    let body = json_body(ctx.body)?;
    let reason = str_field(&body, "reason")?;
    let prefix = format!("bundles/{}.{}", id, version.as_ref().map(|v| v.as_str()).unwrap_or(""));
    if replica.main.list(&prefix, None, 1).await?.keys.is_empty() {
        return Err(ApiError::NotFound("Cannot find bundle!".into()));
    }
    let tomb = Tombstone {
        email: who.email.clone(),
        reason: Some(reason.to_string()),
        admin_deleted: true,
        version: version.as_ref().map(|v| v.as_str().to_string()),
    };
    let key = tombstone_key(id.as_str(), version.as_ref().map(|v| v.as_str()));
    let bytes = Bytes::from(tomb.to_bytes());
    match replica.main.put(&key, bytes.clone(), PutOptions::if_absent()).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists(_)) if replica.main.get(&key).await? == bytes => {}
        Err(StoreError::AlreadyExists(_)) => {
            let v = version.as_ref().map(|v| v.as_str()).unwrap_or("None");
            return Err(ApiError::TombstoneAlreadyExists(id.to_string(), v.to_string()));
        }
        Err(e) => return Err(e.into()),
    }
    index_after_write(app, replica, key)?;
    tracing::info!(uuid = %id, version = ?version, by = %who.email, "bundle tombstoned");
    Ok(json_response(StatusCode::OK, &json!({})))
}

/// `GET /v1/bundles/all`: every visible bundle version, paged.
pub async fn enumerate<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
) -> Result<Response, ApiError> {
    let replica = app.replica_param(&ctx.query)?;
    let per_page = ctx.query.int_in("per_page", 10, 500, 100)? as usize;
    let prefix = ctx.query.get("prefix").unwrap_or("");
    let prefix_ok = prefix.is_empty()
        || (prefix.as_bytes()[0].is_ascii_alphanumeric()
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !prefix_ok {
        return Err(ApiError::IllegalArguments(format!(
            "'{prefix}' does not match '^[a-zA-Z0-9][a-zA-Z0-9-]*$'"
        )));
    }
    let search_prefix = format!("bundles/{}", prefix.to_ascii_lowercase());
    let start_after = ctx
        .query
        .get("search_after")
        .or(ctx.query.get("token"))
        .filter(|s| !s.is_empty())
        .map(str::to_string);

    let (bundles, resume) = living_page(&replica.main, &search_prefix, start_after, per_page).await?;
    let page_count = bundles.len();
    let mut body = json!({
        "dss_api": ctx.base_url,
        "object": "list",
        "per_page": per_page,
        "search_prefix": search_prefix,
        "event_timestamp": DssVersion::from_datetime(app.clock.now()).as_str(),
        "bundles": bundles.iter().map(|(u, v)| json!({"uuid": u, "version": v})).collect::<Vec<_>>(),
        "page_count": page_count,
    });
    let mut r = match resume {
        None => {
            body["has_more"] = Value::Bool(false);
            let mut r = json_response(StatusCode::OK, &body);
            set_header(&mut r, "X-OpenAPI-Pagination", "false");
            r
        }
        Some(after) => {
            let next = ctx.url_with(&[("search_after", Some(&after)), ("token", Some(&after))]);
            body["has_more"] = Value::Bool(true);
            body["token"] = Value::String(after.clone());
            body["search_after"] = Value::String(after);
            body["link"] = Value::String(next.clone());
            let mut r = json_response(StatusCode::PARTIAL_CONTENT, &body);
            set_header(&mut r, "link", &format!("<{next}>; rel='next'"));
            set_header(&mut r, "X-OpenAPI-Pagination", "true");
            r
        }
    };
    set_header(&mut r, "X-OpenAPI-Paginated-Content-Key", "bundles");
    Ok(r)
}

/// Up to `per_page` visible `(uuid, version)` pairs after key `start_after`, and the key
/// to resume after when more keys follow.
///
/// Keys of one uuid are contiguous and its tombstones sort after its versions, so a
/// uuid's visibility is known once the listing moves past it. A page ends on a
/// bundle key, so the next page re-reads the rest of that uuid's keys and nothing is
/// skipped or repeated (the original resumed after the last key read, and could skip).
async fn living_page<S: Store>(
    store: &S,
    prefix: &str,
    start_after: Option<String>,
    per_page: usize,
) -> Result<(Vec<(String, String)>, Option<String>), ApiError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut token = start_after;
    let mut group_uuid: Option<String> = None;
    let mut group: Vec<(String, String)> = Vec::new(); // (version, key) of live candidates
    let mut group_dead_versions = std::collections::HashSet::new();
    let mut group_dead_all = false;

    // Emits the finished group; returns the resume key if the page filled up.
    let flush = |out: &mut Vec<(String, String)>,
                 uuid: &str,
                 group: &mut Vec<(String, String)>,
                 dead: &std::collections::HashSet<String>,
                 dead_all: bool|
     -> Option<String> {
        if !dead_all {
            for (v, key) in group.drain(..) {
                if dead.contains(&v) {
                    continue;
                }
                out.push((uuid.to_string(), v));
                if out.len() == per_page {
                    return Some(key);
                }
            }
        }
        group.clear();
        None
    };

    loop {
        let page = store.list(prefix, token.as_deref(), 1000).await?;
        for key in &page.keys {
            let (uuid, kind) = match parse_bundle_key(key) {
                Some(BundleKey::Manifest { uuid, version }) => (uuid, Some((version, false))),
                Some(BundleKey::VersionTombstone { uuid, version }) => (uuid, Some((version, true))),
                Some(BundleKey::Tombstone { uuid }) => (uuid, None),
                None => continue,
            };
            if group_uuid.as_deref() != Some(uuid) {
                if let Some(g) = group_uuid.take() {
                    if let Some(resume) = flush(&mut out, &g, &mut group, &group_dead_versions, group_dead_all) {
                        return Ok((out, Some(resume)));
                    }
                }
                group_uuid = Some(uuid.to_string());
                group_dead_versions.clear();
                group_dead_all = false;
            }
            match kind {
                None => group_dead_all = true,
                Some((v, true)) => {
                    group_dead_versions.insert(v.to_string());
                }
                Some((v, false)) => group.push((v.to_string(), key.clone())),
            }
        }
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    if let Some(g) = group_uuid.take() {
        if let Some(resume) = flush(&mut out, &g, &mut group, &group_dead_versions, group_dead_all) {
            // Filled exactly at the end of the listing: say "more" only if keys follow.
            let more = !store.list(prefix, Some(&resume), 1).await?.keys.is_empty();
            return Ok((out, more.then_some(resume)));
        }
    }
    Ok((out, None))
}
