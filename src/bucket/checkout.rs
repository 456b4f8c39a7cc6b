//! Bundle checkout: a bundle's files copied, under their names, to
//! `bundles/{uuid}.{version}/{name}` in a replica's checkout bucket or a user's bucket, and
//! the checkout's status kept as the original kept it, at `checkout/status/{id}.json` in
//! the replica's checkout bucket (so any backend, and the original's readers, can answer
//! for it).

use super::{Bucket, BucketError, FileDoc};
use crate::model::manifest::{BundleFile, BundleManifest};
use crate::model::ProgressCounter;
use crate::storage::{PutOptions, Store, StoreError};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Files copied at once.
const CONCURRENCY: usize = 8;

/// Where a checkout's status document is kept in the replica's checkout bucket.
pub fn status_key(id: &str) -> String {
    format!("checkout/status/{id}.json")
}

/// The prefix a bundle is checked out under.
pub fn bundle_dir(uuid: &str, version: &str) -> String {
    format!("bundles/{uuid}.{version}")
}

/// What a checkout job is given (`POST /v1/bundles/{uuid}/checkout`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutJob {
    /// The checkout's id (a uuid4), also its status document's name.
    pub id: String,
    /// The replica read from.
    pub replica: String,
    /// The bundle.
    pub uuid: String,
    /// Its version (resolved when the checkout was asked for).
    pub version: String,
    /// A user's bucket (of the replica's cloud); `None`: the replica's checkout bucket.
    pub destination: Option<String>,
    /// Told when the checkout ends.
    pub email: Option<String>,
}

/// A blob to copy to a replica's checkout bucket, for downloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOutJob {
    /// The replica.
    pub replica: String,
    /// The blob.
    pub blob_key: String,
    /// The file's content type, which the copy carries.
    pub content_type: String,
    /// Whether the copy is marked to expire (not cached by the rules).
    #[serde(default)]
    pub expiring: bool,
}

impl CheckoutJob {
    /// Whether the checkout is the replica's own (its checkout bucket, nobody to tell),
    /// which all who ask for the same bundle version share.
    pub fn shared(&self) -> bool {
        self.destination.is_none() && self.email.is_none()
    }
}

/// How far a checkout has come (beyond the original, which said only `RUNNING`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutProgress {
    /// Files copied.
    pub files_done: u64,
    /// Files in the bundle.
    pub files_total: u64,
    /// Bytes copied.
    pub bytes_done: u64,
    /// Bytes in the bundle.
    pub bytes_total: u64,
}

impl From<crate::model::Progress> for CheckoutProgress {
    fn from(p: crate::model::Progress) -> Self {
        CheckoutProgress {
            files_done: p.items_done,
            files_total: p.items_total,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
        }
    }
}

/// The status document, as the original stored it (`status`, and `location` or `cause`),
/// with `progress` added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutStatus {
    /// `RUNNING`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    /// Where the bundle is (`s3://bucket/bundles/{uuid}.{version}`), once succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Files and bytes done of the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<CheckoutProgress>,
}

impl CheckoutStatus {
    /// Copying.
    pub fn running(progress: Option<CheckoutProgress>) -> Self {
        CheckoutStatus {
            status: "RUNNING".into(),
            location: None,
            cause: None,
            progress,
        }
    }
    /// Done, at `location`.
    pub fn succeeded(location: String, progress: Option<CheckoutProgress>) -> Self {
        CheckoutStatus {
            status: "SUCCEEDED".into(),
            location: Some(location),
            cause: None,
            progress,
        }
    }
    /// Ended for `cause`.
    pub fn failed(cause: String, progress: Option<CheckoutProgress>) -> Self {
        CheckoutStatus {
            status: "FAILED".into(),
            location: None,
            cause: Some(cause),
            progress,
        }
    }
}

/// Store `status` of checkout `id` in `checkout` (the replica's checkout bucket).
pub async fn write_status<S: Store>(checkout: &S, id: &str, status: &CheckoutStatus) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(status).map_err(|e| StoreError::Other(e.to_string()))?;
    let opts = PutOptions {
        content_type: Some("application/json".into()),
        ..PutOptions::overwrite()
    };
    checkout.put(&status_key(id), Bytes::from(bytes), opts).await
}

/// The status of checkout `id`; `None` when there is no such checkout.
pub async fn read_status<S: Store>(checkout: &S, id: &str) -> Result<Option<CheckoutStatus>, BucketError> {
    let key = status_key(id);
    match checkout.get(&key).await {
        Ok(b) => super::parse_document(&key, &b).map(Some),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Why a destination cannot take a checkout: said to the user as the checkout's `cause`.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// The bucket is not there.
    #[error("the destination bucket {0} does not exist")]
    Missing(String),
    /// Writing a test object failed.
    #[error("the destination bucket {0} is not writable")]
    NotWritable(String),
    /// Storage failed in a way that may pass.
    #[error(transparent)]
    Store(StoreError),
}

/// The original's pre-check: a test object `touch/{2 hex}.txt` is written and deleted.
pub async fn check_writable<S: Store>(dst: &S, name: &str) -> Result<(), DestinationError> {
    let key = format!("touch/{:02x}.txt", uuid::Uuid::new_v4().as_bytes()[0]);
    match dst.put(&key, Bytes::from_static(b""), PutOptions::overwrite()).await {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => return Err(DestinationError::Missing(name.into())),
        Err(e @ StoreError::Unavailable(_)) => return Err(DestinationError::Store(e)),
        Err(e) => {
            tracing::info!(bucket = name, "checkout destination refused a write: {e}");
            return Err(DestinationError::NotWritable(name.into()));
        }
    }
    let _ = dst.delete(&key).await;
    Ok(())
}

/// How a bundle is copied out.
#[derive(Debug, Clone, Copy)]
pub struct CopyPlan<'a> {
    /// Objects written since then (by an earlier run of the same job, before a crash) are
    /// not copied again; older ones are (they may be near their lifecycle's end, or a
    /// user's edits).
    pub since: chrono::DateTime<chrono::Utc>,
    /// Into a DSS checkout bucket: files the rules do not cache are marked to expire.
    /// `None` for a user's bucket, where nothing is ever marked.
    pub rules: Option<&'a CacheRules>,
}

/// Copy every file of `manifest` from `src` to `dst` under [`bundle_dir`], a few at a time:
/// server-side between stores of one backend, else streamed and checked against the
/// file's checksums.
pub async fn copy_bundle<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    manifest: &BundleManifest,
    uuid: &str,
    dst: &S,
    plan: CopyPlan<'_>,
    progress: &Arc<ProgressCounter>,
) -> Result<(), BucketError> {
    let total = manifest.files.iter().map(|f| f.size).sum();
    progress.set_totals(u64::try_from(manifest.files.len()).unwrap_or(u64::MAX), total);
    let dir = bundle_dir(uuid, &manifest.version);
    let files = &manifest.files;
    // By index: a closure over `&BundleFile` would make the future higher-ranked over
    // that borrow, which the runner's `Send` check cannot see through.
    futures::stream::iter(0..files.len())
        .map(|i| copy_file(src, &files[i], &dir, dst, plan, progress))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

async fn copy_file<S: Store, F: FileDoc>(
    src: &Bucket<'_, S, F>,
    f: &BundleFile,
    dir: &str,
    dst: &S,
    plan: CopyPlan<'_>,
    progress: &Arc<ProgressCounter>,
) -> Result<(), BucketError> {
    let key = format!("{dir}/{}", f.name);
    if matches!(dst.head(&key).await, Ok(m) if m.size == f.size && m.last_modified >= plan.since) {
        progress.add(1, f.size);
        return Ok(());
    }
    let c = f.checksums();
    let blob = f.blob_key();
    let opts = PutOptions {
        content_type: Some(f.content_type.clone()),
        expiring: plan.rules.is_some_and(|r| !r.cached(&f.content_type, f.size)),
        ..PutOptions::overwrite()
    };
    if dst.same_backend(src.store()) {
        dst.copy_from(src.store(), &blob, &key, opts).await?;
        progress.add(1, f.size);
        return Ok(());
    }
    let (_, _, stream) = src.store().get_range(&blob, None).await?;
    use super::stream::put_verified;
    match put_verified(dst, &key, stream, f.size, &c, opts, progress).await {
        Ok(_) => {
            progress.add(1, 0);
            Ok(())
        }
        Err(e) => Err(e.about(&blob, src.name())),
    }
}

/// How long checkout copies live and which are kept (the original's caching rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRules {
    /// `DSS_BLOB_TTL_DAYS` (14): a copy older than this less an hour is not served
    /// (the checkout buckets' lifecycle rules delete uncached copies at this age).
    pub blob_ttl: chrono::Duration,
    /// `DSS_BLOB_PUBLIC_TTL_DAYS` (7): a copy older than this is still served, and
    /// copied again meanwhile.
    pub public_ttl: chrono::Duration,
    /// `CHECKOUT_CACHE_CRITERIA`: files whose content type starts with `type` and whose
    /// size is at most `max_size` are cached (never expired) and copied at ingest.
    pub criteria: Vec<CacheCriterion>,
    /// `DSS_CHECKOUT_INLINE_MAX` (64 MiB): a download whose copy is missing waits for the
    /// copy of a blob up to this size (server-side, well within a request's deadline);
    /// for a larger one the client is sent back with a token while a job copies it.
    pub inline_max: u64,
}

/// One entry of `CHECKOUT_CACHE_CRITERIA`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCriterion {
    /// A content-type prefix.
    #[serde(rename = "type")]
    pub content_type: String,
    /// Largest size cached, in bytes.
    pub max_size: u64,
}

/// The original's default `CHECKOUT_CACHE_CRITERIA`: small JSON metadata files.
pub const DEFAULT_CACHE_CRITERIA: &str = r#"[{"type": "application/json", "max_size": 12314}]"#;

impl Default for CacheRules {
    fn default() -> Self {
        CacheRules {
            blob_ttl: chrono::Duration::days(14),
            public_ttl: chrono::Duration::days(7),
            criteria: serde_json::from_str(DEFAULT_CACHE_CRITERIA).unwrap_or_default(),
            inline_max: 64 * 1024 * 1024,
        }
    }
}

impl CacheRules {
    /// The rules from the three settings (`None`: the default of each).
    pub fn parse(
        blob_ttl_days: Option<&str>,
        public_ttl_days: Option<&str>,
        criteria: Option<&str>,
    ) -> Result<Self, String> {
        let d = CacheRules::default();
        let days = |name: &str, v: Option<&str>, default: chrono::Duration| match v {
            None => Ok(default),
            Some(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n > 0.0 && *n < 36_500.0)
                .map(|n| chrono::Duration::seconds((n * 86_400.0) as i64))
                .ok_or_else(|| format!("{name}: {s:?} is not a number of days")),
        };
        let rules = CacheRules {
            blob_ttl: days("DSS_BLOB_TTL_DAYS", blob_ttl_days, d.blob_ttl)?,
            public_ttl: days("DSS_BLOB_PUBLIC_TTL_DAYS", public_ttl_days, d.public_ttl)?,
            criteria: match criteria {
                None => d.criteria,
                Some(s) => serde_json::from_str(s).map_err(|e| format!("CHECKOUT_CACHE_CRITERIA: {e}"))?,
            },
            inline_max: d.inline_max,
        };
        if rules.public_ttl >= rules.blob_ttl {
            return Err("DSS_BLOB_PUBLIC_TTL_DAYS must be less than DSS_BLOB_TTL_DAYS".into());
        }
        Ok(rules)
    }

    /// Whether a file of this type and size is cached in the checkout buckets.
    pub fn cached(&self, content_type: &str, size: u64) -> bool {
        self.criteria
            .iter()
            .any(|c| content_type.starts_with(&c.content_type) && size <= c.max_size)
    }
}

/// What the checkout bucket holds of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    /// A copy that may be served.
    Fresh,
    /// A copy that may still be served, but should be copied again.
    Aging,
    /// No copy that may be served (none, the wrong size, or too old).
    Missing,
}

/// The state of the copy of an object at `key` of `size` bytes in `checkout` at `now`.
pub async fn copy_state<S: Store>(
    checkout: &S,
    key: &str,
    size: u64,
    now: chrono::DateTime<chrono::Utc>,
    rules: &CacheRules,
) -> Result<CopyState, StoreError> {
    let meta = match checkout.head(key).await {
        Ok(m) => m,
        Err(StoreError::NotFound(_)) => return Ok(CopyState::Missing),
        Err(e) => return Err(e),
    };
    Ok(age_state(meta.size == size, now - meta.last_modified, rules))
}

fn age_state(right_size: bool, age: chrono::Duration, rules: &CacheRules) -> CopyState {
    if !right_size || age >= rules.blob_ttl - chrono::Duration::hours(1) {
        CopyState::Missing
    } else if age >= rules.public_ttl {
        CopyState::Aging
    } else {
        CopyState::Fresh
    }
}

/// Copy blob `blob_key` of `main` to the same key in `checkout` (server-side: both are
/// one replica's buckets), with the file's content type, marked `expiring` unless the
/// rules cache it; written anew, so its age starts again.
pub async fn copy_blob_out<S: Store>(
    main: &S,
    checkout: &S,
    blob_key: &str,
    content_type: &str,
    expiring: bool,
) -> Result<(), StoreError> {
    let opts = PutOptions {
        content_type: Some(content_type.to_string()),
        expiring,
        ..PutOptions::overwrite()
    };
    checkout.copy_from(main, blob_key, blob_key, opts).await
}

/// Where a bundle checked out into the replica's checkout bucket records when it was
/// complete (beside the original's layout, which it leaves as it was).
pub fn marker_key(uuid: &str, version: &str) -> String {
    format!("checkout/bundles/{uuid}.{version}.json")
}

/// The state of the checkout copy of bundle `uuid` at `version` in `checkout`.
pub async fn bundle_copy_state<S: Store>(
    checkout: &S,
    uuid: &str,
    version: &str,
    now: chrono::DateTime<chrono::Utc>,
    rules: &CacheRules,
) -> Result<CopyState, StoreError> {
    match checkout.head(&marker_key(uuid, version)).await {
        Ok(m) => Ok(age_state(true, now - m.last_modified, rules)),
        Err(StoreError::NotFound(_)) => Ok(CopyState::Missing),
        Err(e) => Err(e),
    }
}

/// Record that bundle `uuid` at `version` is complete in `checkout`.
pub async fn mark_bundle<S: Store>(checkout: &S, uuid: &str, version: &str, files: usize) -> Result<(), StoreError> {
    let body = serde_json::json!({ "files": files }).to_string();
    checkout
        .put(&marker_key(uuid, version), Bytes::from(body), PutOptions::overwrite())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_age_from_fresh_to_aging_to_missing() {
        let r = CacheRules::default();
        let days = chrono::Duration::days;
        assert_eq!(age_state(true, days(1), &r), CopyState::Fresh);
        assert_eq!(age_state(true, days(8), &r), CopyState::Aging);
        assert_eq!(
            age_state(true, days(14) - chrono::Duration::minutes(59), &r),
            CopyState::Missing
        );
        assert_eq!(age_state(false, days(0), &r), CopyState::Missing);
        assert!(r.cached("application/json; dcp-type=\"metadata\"", 100));
        assert!(!r.cached("application/json", 20_000) && !r.cached("text/plain", 1));
        let custom = CacheRules::parse(Some("2"), Some("0.5"), Some(r#"[{"type": "text/", "max_size": 10}]"#)).unwrap();
        assert_eq!(custom.blob_ttl, days(2));
        assert!(custom.cached("text/plain", 10) && !custom.cached("text/plain", 11));
        assert!(CacheRules::parse(Some("1"), Some("2"), None).is_err());
        assert!(CacheRules::parse(Some("x"), None, None).is_err());
        assert!(CacheRules::parse(None, None, Some("{")).is_err());
    }
}
