//! `/v1/bundles/…`: manifests, tombstones, enumeration.

use crate::api::params::{json_body, str_field, uuid};
use crate::api::*;
use crate::bucket::Written;
use crate::model::manifest::{
    valid_file_name, BundleFile, BundleManifest, ManifestWriter, Tombstone, BUNDLE_FORMAT_VERSION,
};
use crate::model::{DssVersion, ObjectUuid};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;

/// Files fetched concurrently when building a manifest.
const FILE_LOOKUP_CONCURRENCY: usize = 32;
/// Most files one bundle may list (`PUT`, and `PATCH` results). Real HCA bundles list
/// tens to a few thousand files, and the original indexed manifests of up to 20,000 in
/// full; 50,000 leaves room above that while bounding one PUT: a body of about 7 MiB, a
/// manifest of about 20 MiB, and (`scripts/bench bundle`) about 160 MiB more server
/// memory at the peak of the PUT and the indexing it starts.
pub const MAX_BUNDLE_FILES: usize = 50_000;
/// Keys `/v1/bundles/all` reads for one page at most (a page over many tombstones comes
/// back short, with a link to go on).
pub const SCAN_BUDGET: usize = 10_000;
/// Most items `PATCH` accepts in each of `add_files` and `remove_files`.
const PATCH_MAX_ITEMS: usize = 1000;

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
    if directurls && replica.checkout.direct_url("bundles/x").is_none() {
        return Err(ApiError::DirectUrlsUnavailable(replica.name.clone()));
    }
    let token = super::files::parse_token(ctx.query.get("token"))?;
    let manifest = app
        .bucket(replica)
        .manifest(id.as_str(), ctx.query.get("version"), app.clock.now())
        .await?
        .ok_or_else(|| ApiError::NotFound("Cannot find bundle!".into()))?;
    if directurls || presignedurls {
        if let Some(back) = ensure_checkout(app, ctx, replica, id.as_str(), &manifest.version, token).await? {
            return Ok(back);
        }
    }
    let dir = crate::bucket::checkout::bundle_dir(id.as_str(), &manifest.version);

    let total = manifest.files.len();
    let page: &[BundleFile] = manifest.files.get(start_at..).unwrap_or(&[]);
    let page = &page[..page.len().min(per_page)];
    let mut files = Vec::with_capacity(page.len());
    for f in page {
        // URLs into the bundle's checkout copy, as the original.
        let key = || format!("{dir}/{}", f.name);
        let url = if presignedurls {
            let opts = crate::storage::PresignOptions {
                content_type: Some(f.content_type.clone()),
                content_disposition: None,
            };
            Some(
                super::files::presigned_url(replica, app.clock.as_ref(), &key(), app.config.presigned_ttl, &opts)
                    .await?,
            )
        } else if directurls {
            replica.checkout.direct_url(&key())
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
    let next = more.then(|| {
        ctx.url_with(&[
            ("start_at", Some(&(start_at + per_page).to_string())),
            ("version", Some(&manifest.version)),
        ])
    });
    Ok(page_response(json_bytes(StatusCode::OK, body), next, "bundle.files"))
}

/// Make sure the replica's checkout bucket holds a valid copy of the bundle before URLs
/// into it are given out (the original's `verify_checkout`): `None` when it does (an
/// ageing copy is served and renewed meanwhile); else a checkout is started (without a
/// token) or the token's checkout looked at, and the client is sent back with a 301
/// while it runs; a failed one is 500 `checkout_error`. At the edge (no jobs), anything
/// but a valid copy is [`ApiError::NeedsBackend`].
async fn ensure_checkout<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    replica: &Replica<S>,
    uuid: &str,
    version: &str,
    token: Option<super::files::CheckoutToken>,
) -> Result<Option<Response>, ApiError> {
    use super::files::{come_back, CheckoutToken};
    use crate::bucket::checkout::{bundle_copy_state, read_status, CheckoutJob, CopyState};
    let now = app.clock.now();
    let job = || CheckoutJob {
        id: uuid::Uuid::new_v4().to_string(),
        replica: replica.name.clone(),
        uuid: uuid.to_string(),
        version: version.to_string(),
        destination: None,
        email: None,
    };
    match bundle_copy_state(&replica.checkout, uuid, version, now, &app.config.checkout).await? {
        CopyState::Fresh => return Ok(None),
        CopyState::Aging if app.jobs.is_none() => return Ok(None),
        CopyState::Aging => {
            if let Err(e) = super::checkout::start(app, replica, job()).await {
                tracing::warn!(uuid, version, "ageing bundle checkout not renewed: {e}");
            }
            return Ok(None);
        }
        CopyState::Missing if app.jobs.is_none() => return Err(ApiError::NeedsBackend),
        CopyState::Missing => {}
    }
    let token = match token {
        None => CheckoutToken::begin(super::checkout::start(app, replica, job()).await?, now),
        Some(t) if uuid::Uuid::parse_str(&t.execution_id).is_err() => return Err(ApiError::IllegalToken),
        Some(t) => match read_status(&replica.checkout, &t.execution_id).await? {
            Some(s) if s.status == "SUCCEEDED" => return Ok(None),
            Some(s) if s.status == "RUNNING" => t.next(),
            Some(s) => {
                return Err(ApiError::CheckoutFailed(format!(
                    "the checkout of this bundle failed: {}",
                    s.cause.unwrap_or_default()
                )))
            }
            None => return Err(ApiError::CheckoutFailed("no such checkout".into())),
        },
    };
    come_back(ctx, &token, version).map(Some)
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

/// A file reference as a PUT or PATCH body spells it. Strings are borrowed from the
/// body where they hold no escapes, so a large body is not copied; missing fields are
/// reported by [`file_refs`] in the original's words.
#[derive(serde::Deserialize)]
#[serde(expecting = "a file reference (an object with name, uuid, version and indexed)")]
struct FileRefIn<'a> {
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    uuid: Option<Text<'a>>,
    #[serde(borrow, default)]
    version: Option<Text<'a>>,
    #[serde(default)]
    indexed: Option<bool>,
}

/// A JSON string, borrowed when it has no escapes. (serde borrows a `Cow` only when the
/// field is the `Cow` itself, not inside an `Option`.)
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The body of `PUT /v1/bundles/{uuid}`, parsed straight into its fields (a
/// `serde_json::Value` tree of 50,000 references would take ten times the body's size).
#[derive(serde::Deserialize)]
#[serde(expecting = "a JSON object")]
struct PutBody<'a> {
    #[serde(borrow, default)]
    files: Option<Vec<FileRefIn<'a>>>,
    #[serde(default)]
    creator_uid: Option<i64>,
}

impl<'a> PutBody<'a> {
    fn parse(body: &'a [u8]) -> Result<Self, ApiError> {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            None => return Err(ApiError::IllegalArguments("Request body is missing".into())),
            Some(b'{') => {}
            Some(_) => return Err(ApiError::IllegalArguments("Request body must be a JSON object".into())),
        }
        serde_json::from_slice(body).map_err(|e| ApiError::IllegalArguments(format!("Request body: {e}")))
    }
}

/// A validated file reference.
struct FileRef<'a> {
    name: Cow<'a, str>,
    uuid: ObjectUuid,
    version: Cow<'a, str>,
    indexed: bool,
}

fn file_refs<'a>(list: Vec<FileRefIn<'a>>, field: &str, need_indexed: bool) -> Result<Vec<FileRef<'a>>, ApiError> {
    let required = |name: &str| ApiError::IllegalArguments(format!("'{name}' is a required property"));
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.into_iter().enumerate() {
        let name = item.name.ok_or_else(|| required("name"))?.0;
        if !valid_file_name(&name) {
            return Err(ApiError::IllegalArguments(format!(
                "'{name}' does not match the file name pattern"
            )));
        }
        let uuid = item.uuid.ok_or_else(|| required("uuid"))?.0;
        let id = ObjectUuid::parse(&uuid).map_err(|e| ApiError::IllegalArguments(e.to_string()))?;
        let version = item.version.ok_or_else(|| required("version"))?.0;
        DssVersion::parse(&version).map_err(ApiError::IllegalVersion)?;
        let indexed = match item.indexed {
            Some(b) => b,
            None if !need_indexed => false,
            None => {
                return Err(ApiError::IllegalArguments(format!(
                    "'indexed' is a required property ({field}[{i}])"
                )))
            }
        };
        out.push(FileRef {
            name,
            uuid: id,
            version,
            indexed,
        });
    }
    Ok(out)
}

/// Refuse a bundle of more than [`MAX_BUNDLE_FILES`] files.
fn check_file_count(n: usize) -> Result<(), ApiError> {
    if n > MAX_BUNDLE_FILES {
        return Err(ApiError::IllegalArguments(format!(
            "a bundle may list at most {MAX_BUNDLE_FILES} files; this one would list {n}"
        )));
    }
    Ok(())
}

/// One file's manifest entry, from the replica's cache or its metadata document, waiting
/// until `deadline` for a document that is not there yet (an upload finishing elsewhere).
async fn lookup_file<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    replica: &Replica<S>,
    r: &FileRef<'_>,
    deadline: chrono::DateTime<chrono::Utc>,
) -> Result<BundleFile, ApiError> {
    let bucket = app.bucket(replica);
    loop {
        let entry = bucket
            .peek_file(r.uuid.as_str(), &r.version, |meta| {
                BundleFile::new(&r.name, r.uuid.as_str(), &r.version, r.indexed, meta)
            })
            .await?;
        if let Some(entry) = entry {
            return Ok(entry);
        }
        if app.clock.now() >= deadline {
            return Err(ApiError::FileMissing(format!("{}/{}", r.uuid, r.version)));
        }
        app.sleeper.sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The manifest entry of every referenced file, in order, looked up in `replica`
/// [`FILE_LOOKUP_CONCURRENCY`] at a time. Whoever reads the stream stops at the first
/// failure: the rest are then not started, and those in flight are dropped.
fn lookups<'a, S: Store, H: HttpClient, T: Sleeper>(
    app: &'a App<S, H, T>,
    replica: &'a Replica<S>,
    refs: &'a [FileRef<'a>],
) -> impl futures::Stream<Item = Result<BundleFile, ApiError>> + 'a {
    let wait = chrono::Duration::from_std(app.config.bundle_file_wait).unwrap_or(chrono::Duration::zero());
    let deadline = app
        .clock
        .now()
        .checked_add_signed(wait)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    // By index: a closure over `&FileRef` would make the future's type higher-ranked over
    // that borrow, which the server's `Send` check cannot see through.
    futures::stream::iter(0..refs.len())
        .map(move |i| lookup_file(app, replica, &refs[i], deadline))
        .buffered(FILE_LOOKUP_CONCURRENCY)
}

/// [`lookups`], collected; the first failure ends them.
async fn build_entries<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    replica: &Replica<S>,
    refs: &[FileRef<'_>],
) -> Result<Vec<BundleFile>, ApiError> {
    let mut entries = std::pin::pin!(lookups(app, replica, refs));
    let mut out = Vec::with_capacity(refs.len());
    while let Some(entry) = entries.next().await {
        out.push(entry?);
    }
    Ok(out)
}

/// The bytes of a new manifest of the files `refs`, each entry written as its lookup
/// ends: the entries of a large bundle never exist as a list beside the text.
async fn build_manifest<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    replica: &Replica<S>,
    refs: &[FileRef<'_>],
    version: &str,
    creator_uid: i64,
) -> Result<Vec<u8>, ApiError> {
    // The text's size from what is known before the lookups, and typical lengths of the
    // rest (content type 40, checksums 8 + 34 + 40 + 64).
    let capacity = refs
        .iter()
        .map(|r| r.name.len() + r.uuid.as_str().len() + r.version.len() + 166 + 186)
        .sum();
    let mut writer = ManifestWriter::new(BUNDLE_FORMAT_VERSION, version, capacity);
    let mut entries = std::pin::pin!(lookups(app, replica, refs));
    while let Some(entry) = entries.next().await {
        writer.push(&entry?);
    }
    // As before the entries were streamed: a missing file is reported before a duplicate name.
    check_duplicates(refs.iter().map(|r| &*r.name))?;
    Ok(writer.finish(creator_uid))
}

fn check_duplicates<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), ApiError> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(ApiError::DuplicateFilename(name.to_string()));
        }
    }
    Ok(())
}

/// `{"version": …, "manifest": …}` around the manifest's stored bytes (no second
/// serialisation of a large manifest).
fn put_answer(status: StatusCode, version: &str, manifest: &[u8]) -> Result<Response, ApiError> {
    let version = serde_json::to_string(version).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut body = Vec::with_capacity(manifest.len() + version.len() + 32);
    body.extend_from_slice(b"{\"version\": ");
    body.extend_from_slice(version.as_bytes());
    body.extend_from_slice(b", \"manifest\": ");
    body.extend_from_slice(manifest);
    body.push(b'}');
    Ok(json_bytes(status, body))
}

/// `PUT /v1/bundles/{uuid}?version&replica`.
pub async fn put<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let id = uuid(id)?;
    let replica = app.replica_param(&ctx.query)?;
    let version = ctx.query.required_version("version")?;
    let body = PutBody::parse(ctx.body)?;
    let creator_uid = body
        .creator_uid
        .ok_or_else(|| ApiError::IllegalArguments("'creator_uid' is a required property".into()))?;
    let files = body
        .files
        .ok_or_else(|| ApiError::IllegalArguments("'files' is a required property".into()))?;
    // Before anything is validated or looked up.
    check_file_count(files.len())?;
    let refs = file_refs(files, "files", true)?;
    let bytes = Bytes::from(build_manifest(app, replica, &refs, version.as_str(), creator_uid).await?);
    let count = refs.len();
    drop(refs);
    let status = match app
        .bucket(replica)
        .put_manifest(id.as_str(), version.as_str(), bytes.clone())
        .await?
    {
        Written::Created => StatusCode::CREATED,
        Written::Existing => StatusCode::OK,
    };
    tracing::info!(uuid = %id, version = %version, files = count, "bundle stored");
    put_answer(status, version.as_str(), &bytes)
}

/// `PATCH /v1/bundles/{uuid}?version&replica`: a new version with files added/removed.
pub async fn patch<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let id = uuid(id)?;
    let replica = app.replica_param(&ctx.query)?;
    let version = ctx.query.required_version("version")?;
    let body = json_body(ctx.body)?;
    let list = |field: &str, need_indexed: bool| -> Result<Vec<FileRef<'_>>, ApiError> {
        match body.get(field) {
            None => Ok(Vec::new()),
            Some(v) => {
                let items = Vec::<FileRefIn<'_>>::deserialize(v)
                    .map_err(|e| ApiError::IllegalArguments(format!("'{field}': {e}")))?;
                let refs = file_refs(items, field, need_indexed)?;
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
    let bucket = app.bucket(replica);
    let mut manifest: BundleManifest = (*bucket
        .manifest(id.as_str(), Some(version.as_str()), app.clock.now())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Could not find bundle for UUID {id}")))?)
    .clone();
    manifest.files.retain(|f| {
        !remove
            .iter()
            .any(|r| r.name == f.name && r.uuid.as_str() == f.uuid && r.version == f.version)
    });
    check_file_count(manifest.files.len() + add.len())?;
    let added = build_entries(app, replica, &add).await?;
    manifest.files.extend(added);
    check_duplicates(manifest.files.iter().map(|f| f.name.as_str()))?;
    let new_version = DssVersion::from_datetime(app.clock.now());
    manifest.version = new_version.as_str().to_string();
    bucket
        .put_manifest(id.as_str(), &manifest.version, Bytes::from(manifest.to_bytes()))
        .await?;
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
    let who = ctx.caller()?;
    let id = uuid(id)?;
    let replica = app.replica_param(&ctx.query)?;
    let version = ctx.query.version("version")?;
    let body = json_body(ctx.body)?;
    let reason = str_field(&body, "reason")?;
    let bucket = app.bucket(replica);
    let version = version.as_ref().map(|v| v.as_str());
    if !bucket.has_bundle_keys(id.as_str(), version).await? {
        return Err(ApiError::NotFound("Cannot find bundle!".into()));
    }
    let tomb = Tombstone {
        email: who.email.clone(),
        reason: Some(reason.to_string()),
        admin_deleted: true,
        version: version.map(str::to_string),
    };
    bucket.put_tombstone(id.as_str(), version, &tomb).await?;
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
    let uuid_prefix = prefix.to_ascii_lowercase();
    let search_prefix = crate::bucket::keys::bundles_under(&uuid_prefix);
    let start_after = ctx
        .query
        .get("search_after")
        .or(ctx.query.get("token"))
        .filter(|s| !s.is_empty())
        .map(str::to_string);

    let (bundles, resume) = app
        .bucket(replica)
        .visible_page(&uuid_prefix, start_after, per_page, SCAN_BUDGET)
        .await?;
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
    body["has_more"] = Value::Bool(resume.is_some());
    let next = resume.map(|after| {
        let next = ctx.url_with(&[("search_after", Some(&after)), ("token", Some(&after))]);
        body["token"] = Value::String(after.clone());
        body["search_after"] = Value::String(after);
        body["link"] = Value::String(next.clone());
        next
    });
    Ok(page_response(json_response(StatusCode::OK, &body), next, "bundles"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::dss::files::tests::{memory, test_app, TestClock, V1};
    use crate::model::checksum::checksums_of;
    use crate::model::manifest::FileMetadata;
    use crate::storage::cached::{Cached, ObjectCache};
    use crate::storage::{PutOptions, Store};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A cache that holds nothing and counts lookups: through [`Cached`], one per read
    /// of a document.
    struct CountingCache(Arc<AtomicUsize>);

    impl ObjectCache for CountingCache {
        async fn get(&self, _key: &str) -> Option<Bytes> {
            self.0.fetch_add(1, Ordering::SeqCst);
            None
        }
        async fn put(&self, _key: &str, _value: Bytes, _ttl: std::time::Duration) {}
        async fn delete(&self, _key: &str) {}
    }

    #[tokio::test]
    async fn file_lookups_stop_at_the_first_failure() {
        let clock = TestClock::at("2024-05-06T07:08:09Z");
        let reads = Arc::new(AtomicUsize::new(0));
        let mut app = test_app(
            |name| {
                Cached::new(
                    memory(name, &clock),
                    CountingCache(reads.clone()),
                    name,
                    std::time::Duration::ZERO,
                    clock.clone(),
                )
                .with_immutable(crate::bucket::keys::immutable_document)
            },
            clock.clone(),
        );
        app.config.bundle_file_wait = std::time::Duration::from_secs(10);
        let meta = FileMetadata::new(0, V1, "text/plain", 1, &checksums_of(b"x"));
        let mut ids = vec![ObjectUuid::random()]; // never written
        for _ in 0..200 {
            let id = ObjectUuid::random();
            app.replicas
                .get("aws")
                .expect("aws")
                .main
                .put(
                    &crate::bucket::keys::file_key(id.as_str(), V1),
                    meta.to_bytes().into(),
                    PutOptions::if_absent(),
                )
                .await
                .unwrap();
            ids.push(id);
        }
        let refs: Vec<FileRef<'_>> = ids
            .into_iter()
            .enumerate()
            .map(|(i, uuid)| FileRef {
                name: Cow::Owned(format!("f{i}")),
                uuid,
                version: Cow::Borrowed(V1),
                indexed: false,
            })
            .collect();
        // PUT writes the manifest as lookups end; PATCH collects its added entries.
        let put = build_manifest(&app, app.replicas.get("aws").expect("aws"), &refs, V1, 0)
            .await
            .map(|_| ());
        let put_reads = reads.swap(0, Ordering::SeqCst);
        let patch = build_entries(&app, app.replicas.get("aws").expect("aws"), &refs)
            .await
            .map(|_| ());
        let patch_reads = reads.load(Ordering::SeqCst);
        for (r, n) in [(put, put_reads), (patch, patch_reads)] {
            assert!(matches!(r, Err(ApiError::FileMissing(_))), "{:?}", r.err());
            // The missing file was read once per second of the wait (the sleeper moves the
            // clock), and no more than one batch of the others was looked up.
            assert!(n <= 11 + FILE_LOOKUP_CONCURRENCY, "{n} reads");
        }
    }

    #[test]
    fn put_bodies_parse_into_borrowed_references() {
        let body = br#"{"creator_uid": 3, "extra": [1, 2], "files": [
            {"name": "a.json", "uuid": "CE55FD51-7833-469B-BE0B-5DA88EBEBFCD", "version": "2017-06-16T193604.240704Z", "indexed": true},
            {"name": "caf\u00e9", "uuid": "ce55fd51-7833-469b-be0b-5da88ebebfcd", "version": "2017-06-16T193604.240704Z", "indexed": false}]}"#;
        let b = PutBody::parse(body).unwrap();
        assert_eq!(b.creator_uid, Some(3));
        let refs = file_refs(b.files.unwrap(), "files", true).unwrap();
        assert!(matches!(refs[0].name, Cow::Borrowed("a.json")), "no escapes: borrowed");
        assert_eq!(refs[0].uuid.as_str(), "ce55fd51-7833-469b-be0b-5da88ebebfcd");
        assert!(refs[0].indexed && !refs[1].indexed);
        assert_eq!(refs[1].name, "café");
        for (bad, code) in [
            (&b""[..], "Request body is missing"),
            (b"[1]", "must be a JSON object"),
            (br#"{"files": "no"}"#, "Request body"),
            (b"{", "Request body"),
        ] {
            match PutBody::parse(bad) {
                Err(ApiError::IllegalArguments(m)) => assert!(m.contains(code), "{m}"),
                other => panic!("{:?}", other.err()),
            }
        }
        let missing = PutBody::parse(br#"{"files": [{"name": "a", "uuid": "ce55fd51-7833-469b-be0b-5da88ebebfcd", "version": "2017-06-16T193604.240704Z"}]}"#)
            .unwrap();
        match file_refs(missing.files.unwrap(), "files", true) {
            Err(ApiError::IllegalArguments(m)) => assert!(m.contains("'indexed' is a required property"), "{m}"),
            other => panic!("{:?}", other.err()),
        }
    }
}
