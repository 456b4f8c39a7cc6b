//! `/v1/collections`: users' collections, stored in the replica's bucket as the original
//! stored them ([`crate::bucket::collections`]), their owners indexed beside the job queue
//! ([`crate::model::collection::CollectionOwners`]).

use crate::api::params::{json_body, uuid};
use crate::api::*;
use crate::bucket::collections::Lookup;
use crate::model::collection::{self as c, CollectionError, CollectionOwners};
use serde_json::{json, Value};

fn owners<S, H, T>(app: &App<S, H, T>) -> Result<&dyn CollectionOwners, ApiError> {
    app.collections.as_deref().ok_or(ApiError::NeedsBackend)
}

fn index_down(e: String) -> ApiError {
    ApiError::StorageUnavailable(format!("collection owners: {e}"))
}

fn not_found(uuid: &str) -> ApiError {
    ApiError::NotFound(format!("Could not find collection for UUID {uuid}"))
}

/// `GET /v1/collections?per_page&start_at`: the caller's collection versions, paged by
/// offset (206 + `Link` while more follow), as the original listed them.
pub async fn list<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
) -> Result<Response, ApiError> {
    let per_page = usize::try_from(ctx.query.int_in("per_page", 10, 500, 500)?).unwrap_or(500);
    let start_at = usize::try_from(ctx.query.int_in("start_at", 0, i64::MAX, 0)?).unwrap_or(usize::MAX);
    let owner = &ctx.caller()?.email;
    let all = owners(app)?.list(owner).await.map_err(index_down)?;
    let page: Vec<Value> = all
        .iter()
        .skip(start_at)
        .take(per_page)
        .map(|(u, v)| json!({"uuid": u, "version": v}))
        .collect();
    let more = all.len().saturating_sub(start_at) > per_page;
    let next = more.then(|| ctx.url_with(&[("start_at", Some(&(start_at + per_page).to_string()))]));
    Ok(page_response(
        json_response(StatusCode::OK, &json!({ "collections": page })),
        next,
        "collections",
    ))
}

/// `PUT /v1/collections?uuid&version&replica`: a collection version owned by the caller,
/// every item checked to resolve; 201 `{uuid, version}`.
pub async fn put<S: Store, H: HttpClient, T: Sleeper>(app: &App<S, H, T>, ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let replica = app.replica_param(&ctx.query)?;
    let id = uuid(ctx.query.required("uuid")?)?;
    let version = ctx.query.required_version("version")?;
    let owner = ctx.caller()?.email.clone();
    let index = owners(app)?;
    let doc = c::put_document(&json_body(ctx.body)?, &owner)?;
    let bucket = app.bucket(replica);
    match bucket.lookup_collection(id.as_str(), None).await? {
        // A deleted collection stays deleted (the original let anyone write it again).
        Lookup::Deleted => return Err(ApiError::CollectionTombstoneAlreadyExists(id.as_str().to_string())),
        // The original let anyone write a version of anyone's collection.
        Lookup::Found { doc, .. } if doc.get("owner") != Some(&json!(owner)) => {
            return Err(CollectionError::Forbidden.into())
        }
        Lookup::Found { .. } | Lookup::Absent => {}
    }
    let items = doc
        .get("contents")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    bucket.verify_items(items).await??;
    // The bucket says no one else has it; the claim makes that so under concurrency (two
    // users making the same new uuid at once, on any backend or replica). Taken once the
    // body is known good, so a refused PUT claims nothing.
    if index.claim(id.as_str(), &owner).await.map_err(index_down)? != owner {
        return Err(CollectionError::Forbidden.into());
    }
    // The document first: a failure after it leaves it unlisted until the PUT is repeated
    // (same bytes: 201 again, and listed), never a listed version that does not exist.
    bucket.put_collection(id.as_str(), version.as_str(), &doc).await?;
    index
        .add(&owner, id.as_str(), version.as_str())
        .await
        .map_err(index_down)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"uuid": id.as_str(), "version": version.as_str()}),
    ))
}

/// The caller's collection `id` of `replica` at `version` (or its latest).
async fn owned<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
    version: Option<&str>,
) -> Result<(String, String, serde_json::Map<String, Value>), ApiError> {
    let replica = app.replica_param(&ctx.query)?;
    let id = uuid(id)?;
    let (version, doc) = app
        .bucket(replica)
        .collection(id.as_str(), version)
        .await?
        .ok_or_else(|| not_found(id.as_str()))?;
    if doc.get("owner").and_then(Value::as_str) != Some(ctx.caller()?.email.as_str()) {
        return Err(CollectionError::Forbidden.into());
    }
    Ok((id.as_str().to_string(), version, doc))
}

/// `GET /v1/collections/{uuid}?replica&version`: the collection document itself.
pub async fn get<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    // As the original: a version that is not one is simply not found.
    let version = ctx.query.get("version");
    if version.is_some_and(|v| !crate::model::ids::looks_like_version(v)) {
        return Err(not_found(uuid(id)?.as_str()));
    }
    let (_, _, doc) = owned(app, ctx, id, version).await?;
    Ok(json_response(StatusCode::OK, &Value::Object(doc)))
}

/// `PATCH /v1/collections/{uuid}?replica&version`: a new version of the caller's
/// collection with the body's changes; 200 `{uuid, version}`.
pub async fn patch<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let version = ctx.query.required_version("version")?;
    let body = json_body(ctx.body)?;
    let additions = c::patch_additions(&body)?;
    // The owner is the latest version's; the changes apply to the version named.
    let (id, latest, latest_doc) = owned(app, ctx, id, None).await?;
    let replica = app.replica_param(&ctx.query)?;
    let bucket = app.bucket(replica);
    let doc = match latest == version.as_str() {
        true => latest_doc,
        // Its tombstone was looked for with the latest.
        false => bucket
            .collection_at(&id, version.as_str())
            .await?
            .ok_or_else(|| not_found(&id))?,
    };
    bucket.verify_items(additions).await??;
    let patched = c::apply_patch(&doc, &body)?;
    // Now, as the original; but after the latest version, so the patch is the latest even
    // when a PUT named a version in the future.
    let new_version = c::next_version(app.clock.now(), &latest);
    let owner = ctx.caller()?.email.clone();
    bucket.put_collection(&id, new_version.as_str(), &patched).await?;
    owners(app)?
        .add(&owner, &id, new_version.as_str())
        .await
        .map_err(index_down)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"uuid": id, "version": new_version.as_str()}),
    ))
}

/// `DELETE /v1/collections/{uuid}?replica`: the caller's collection tombstoned; `{}`.
pub async fn delete<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let (id, _, _) = owned(app, ctx, id, None).await?;
    let replica = app.replica_param(&ctx.query)?;
    let email = ctx.caller()?.email.clone();
    // Unlisted first: if the tombstone then fails, repeating the DELETE finishes it.
    owners(app)?.remove(&id).await.map_err(index_down)?;
    app.bucket(replica).put_collection_tombstone(&id, &email).await?;
    Ok(json_response(StatusCode::OK, &json!({})))
}
