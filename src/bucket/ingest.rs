//! Ingest: copying a staged object into a replica's content-addressed blob and
//! publishing its file metadata. The handler runs it inline for small files; a durable
//! background job (see [`super::JobSink`]) runs it for large ones; both run [`ingest()`].
//!
//! Order, every time: the blob is copied and its bytes verified against all four
//! checksums, then the metadata is written create-only. Nothing is visible until the
//! metadata exists, and metadata never points at unverified bytes.

use super::keys::file_key;
use super::{Bucket, BucketError, FileDoc, Written};
use crate::model::manifest::FileMetadata;
use crate::model::{Checksums, ProgressCounter};
use crate::storage::{PutOptions, Store, StoreError};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Files larger than this are ingested in a background job (202), as in the original.
pub const ASYNC_THRESHOLD: u64 = 64 * 1024 * 1024;

/// A parsed `source_url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceUrl {
    /// `s3`, `gs` or `file`.
    pub scheme: String,
    /// Bucket (empty for `file`).
    pub bucket: String,
    /// Key in the bucket (for `file`: the path inside the staging directory).
    pub key: String,
}

impl SourceUrl {
    /// Parse `url`; `staging_dir` is where `file://` sources must lie.
    pub fn parse(url: &str, staging_dir: Option<&str>) -> Result<Self, BucketError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| BucketError::UnknownScheme(url.to_string()))?;
        match scheme {
            "s3" | "gs" => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if !valid_bucket_name(bucket) || key.is_empty() || crate::storage::check_key(key).is_err() {
                    return Err(BucketError::Source(format!(
                        "source_url {url} must be {scheme}://bucket/key with a valid bucket name"
                    )));
                }
                Ok(SourceUrl {
                    scheme: scheme.into(),
                    bucket: bucket.into(),
                    key: key.into(),
                })
            }
            "file" => {
                let dir = staging_dir
                    .ok_or_else(|| BucketError::Source("file:// sources are not enabled on this server".into()))?;
                let path = percent_encoding::percent_decode_str(rest)
                    .decode_utf8()
                    .map_err(|_| BucketError::Source(format!("source_url {url} is not UTF-8")))?;
                let dir = dir.trim_end_matches('/');
                let key = path
                    .strip_prefix(dir)
                    .and_then(|k| k.strip_prefix('/'))
                    .filter(|k| crate::storage::check_key(k).is_ok())
                    .ok_or_else(|| {
                        BucketError::Source(format!(
                            "source_url {url} is not a file under the staging directory {dir}"
                        ))
                    })?;
                Ok(SourceUrl {
                    scheme: "file".into(),
                    bucket: String::new(),
                    key: key.to_string(),
                })
            }
            other => Err(BucketError::UnknownScheme(other.to_string())),
        }
    }

    /// The replica a cloud source implies (`s3` -> aws, `gs` -> gcp), as in the original.
    pub fn implied_replica(&self) -> Option<&'static str> {
        match self.scheme.as_str() {
            "s3" => Some("aws"),
            "gs" => Some("gcp"),
            _ => None,
        }
    }
}

/// S3 and GCS bucket naming: 3 to 63 characters (GCS allows up to 222 with dots) of
/// lowercase letters, digits, `-`, `_` and `.`, starting and ending with a letter or
/// digit. Anything else could steer the request to another host, so it is refused.
pub fn valid_bucket_name(b: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=222).contains(&b.len())
        && (b.len() <= 63 || b.contains('.'))
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.'))
        && edge_ok(b.chars().next())
        && edge_ok(b.chars().last())
        && !b.contains("..")
        && b.parse::<std::net::Ipv4Addr>().is_err()
}

impl std::fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.scheme == "file" {
            write!(f, "file://(staging)/{}", self.key)
        } else {
            write!(f, "{}://{}/{}", self.scheme, self.bucket, self.key)
        }
    }
}

/// Everything needed to finish one `PUT /v1/files`, durable as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestJob {
    /// Job id (returned as `task_id`).
    pub task_id: String,
    /// Where the bytes are.
    pub source: SourceUrl,
    /// Target replica (`aws`/`gcp`).
    pub replica: String,
    /// File uuid.
    pub uuid: String,
    /// File version.
    pub version: String,
    /// Uploader id.
    pub creator_uid: i64,
    /// Declared checksums (staging tags/metadata); `None` for local files whose checksums
    /// the server computes.
    pub expected: Option<Checksums>,
    /// Size of the staged object.
    pub size: u64,
    /// Content type for the file metadata.
    pub content_type: String,
}

impl IngestJob {
    /// `files/{uuid}.{version}`, the key this job publishes.
    pub fn file_key(&self) -> String {
        file_key(&self.uuid, &self.version)
    }
}

/// A failure to read the object a `source_url` names, as the client's error: the object
/// is missing, is not a file that may be read (a link out of the staging directory, a
/// loop, a FIFO), or its store refuses us. Only an outage stays a 503, which a job
/// retries. The store's own words go to the log, not into the answer.
pub fn source_read_error(source: &SourceUrl, e: StoreError) -> BucketError {
    match e {
        StoreError::NotFound(_) => BucketError::Source(format!(
            "{source} does not exist, or is not a regular file that may be read"
        )),
        e @ StoreError::Unavailable(_) => BucketError::Store(e),
        other => {
            tracing::warn!(%source, "source cannot be read: {other}");
            BucketError::Source(format!("{source} cannot be read"))
        }
    }
}

/// Stream `key` of `store` through a checksum hasher; `on_open` says what a failure to
/// open it means.
pub(crate) async fn checksum_object<S: Store>(
    store: &S,
    key: &str,
    on_open: impl FnOnce(StoreError) -> BucketError,
) -> Result<(Checksums, u64), BucketError> {
    let (meta, _, mut stream) = store.get_range(key, None).await.map_err(on_open)?;
    let mut h = crate::storage::verify::Hasher::new(meta.size);
    while let Some(chunk) = stream.next().await {
        h.update(&chunk.map_err(|e| StoreError::Unavailable(format!("reading {key}: {e}")))?);
    }
    Ok(h.finish())
}

/// Copy through this server, verifying the bytes before the blob becomes visible.
async fn copy_streamed<S: Store>(
    src: &S,
    source: &SourceUrl,
    dst: &S,
    blob_key: &str,
    expected: &Checksums,
    size: u64,
    progress: &Arc<ProgressCounter>,
) -> Result<(), BucketError> {
    let key = &source.key;
    let (_, _, stream) = src
        .get_range(key, None)
        .await
        .map_err(|e| source_read_error(source, e))?;
    use super::stream::{put_verified, PutVerifiedError};
    match put_verified(dst, blob_key, stream, size, expected, PutOptions::if_absent(), progress).await {
        Ok(_) | Err(PutVerifiedError::Destination(StoreError::AlreadyExists(_))) => Ok(()),
        Err(PutVerifiedError::Mismatch) => Err(BucketError::ChecksumMismatch(format!(
            "the bytes of {key} do not match the checksums given for them"
        ))),
        Err(PutVerifiedError::Source(e)) => Err(source_read_error(source, e)),
        Err(PutVerifiedError::Destination(e)) => Err(e.into()),
    }
}

/// Where a server-side copy waits to be verified before it may take its content address.
pub const INCOMING_PREFIX: &str = "incoming/";

/// Server-side copy (S3 CopyObject, GCS rewrite) to a temporary key, one streaming pass
/// over it to verify all four checksums, then a create-only server-side copy to the
/// content address. Only verified bytes ever sit at a blob key, so "a blob is there"
/// always means "these bytes were checked", and a bad copy never disturbs a good blob.
async fn copy_server_side<S: Store>(
    src: &S,
    key: &str,
    dst: &S,
    blob_key: &str,
    expected: &Checksums,
    task_id: &str,
) -> Result<(), BucketError> {
    let incoming = format!("{INCOMING_PREFIX}{task_id}");
    match dst.copy_from(src, key, &incoming, PutOptions::overwrite()).await {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => return Err(BucketError::Source(format!("object {key} does not exist"))),
        Err(e) => return Err(e.into()),
    }
    let on_open = |e| match e {
        StoreError::NotFound(_) => BucketError::Source(format!("object {key} does not exist")),
        e => BucketError::from(e),
    };
    let verdict = match checksum_object(dst, &incoming, on_open).await {
        Ok((got, _)) if &got == expected => Ok(()),
        Ok((got, _)) => Err(BucketError::ChecksumMismatch(format!(
            "the bytes of {key} do not match the checksums given for them (sha256 {} expected, {} found)",
            expected.sha256, got.sha256
        ))),
        Err(e) => Err(e),
    };
    let published = match verdict {
        Ok(()) => match dst.copy_from(dst, &incoming, blob_key, PutOptions::if_absent()).await {
            // Content-addressed: an existing blob holds these very (verified) bytes.
            Ok(()) | Err(StoreError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    let _ = dst.delete(&incoming).await;
    published
}

/// Run an ingest from `src` into `dst` to the end: blob, verification, metadata, counting
/// the bytes copied into `progress`. Idempotent: a job that is run again after a crash
/// finds its work done and finishes the rest.
pub async fn ingest<S: Store, F: FileDoc>(
    src: &S,
    dst: &Bucket<'_, S, F>,
    job: &IngestJob,
    progress: &Arc<ProgressCounter>,
) -> Result<Written, BucketError> {
    progress.set_totals(1, job.size);
    let (expected, computed_here) = match &job.expected {
        Some(c) => (c.clone(), false),
        None => {
            let on_open = |e| source_read_error(&job.source, e);
            (checksum_object(src, &job.source.key, on_open).await?.0, true)
        }
    };
    let blob_key = expected.blob_key();
    let main = dst.store();
    // Every object at a blob key was verified before it got there, so one that exists
    // (with the right size) need not be copied again.
    let present = matches!(main.head(&blob_key).await, Ok(m) if m.size == job.size);
    if !present {
        if computed_here || job.source.scheme == "file" {
            copy_streamed(src, &job.source, main, &blob_key, &expected, job.size, progress).await?;
        } else {
            copy_server_side(src, &job.source.key, main, &blob_key, &expected, &job.task_id).await?;
            progress.add(0, job.size);
        }
    } else {
        progress.add(0, job.size);
    }
    let meta = FileMetadata::new(job.creator_uid, &job.version, &job.content_type, job.size, &expected);
    let written = dst.put_file(&job.uuid, &job.version, &meta).await?;
    progress.add(1, 0);
    tracing::info!(uuid = %job.uuid, version = %job.version, size = job.size, replica = %job.replica, source = %job.source, "file stored");
    Ok(written)
}

/// Check the object's declared checksums against what the server computed for a local
/// file; cloud objects must declare them.
pub fn declared_checksums(
    meta: &crate::storage::ObjectMeta,
    source: &SourceUrl,
) -> Result<Option<Checksums>, crate::model::checksum::ChecksumError> {
    let declared = meta.metadata.keys().any(|k| k.starts_with("hca-dss-"));
    if !declared && source.scheme == "file" {
        return Ok(None);
    }
    Checksums::from_staging(|k| meta.metadata.get(k).cloned()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let dir = Some("/data/staging");
        let s = SourceUrl::parse("file:///data/staging/a/b.json", dir).unwrap();
        assert_eq!((s.scheme.as_str(), s.key.as_str()), ("file", "a/b.json"));
        for bad in [
            "file:///data/staging/../etc/passwd",
            "file:///data/stagingX/a",
            "file:///etc/passwd",
            "file:///data/staging/",
            "file:///data/staging/a/./b",
        ] {
            assert!(
                matches!(SourceUrl::parse(bad, dir), Err(BucketError::Source(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            SourceUrl::parse("file:///data/staging/a", None),
            Err(BucketError::Source(_))
        ));
        for unknown in ["wasb://a/b", "http://a/b", "nonsense"] {
            assert!(
                matches!(SourceUrl::parse(unknown, dir), Err(BucketError::UnknownScheme(_))),
                "{unknown}"
            );
        }
        let s3 = SourceUrl::parse("s3://bucket/some/key.json", dir).unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.key.as_str(), s3.implied_replica()),
            ("bucket", "some/key.json", Some("aws"))
        );
        assert_eq!(
            SourceUrl::parse("gs://bucket/k", dir).unwrap().implied_replica(),
            Some("gcp")
        );
        for bad in [
            "s3://bucket",
            "s3://bucket/",
            "s3:///key",
            "gs://bb/a/../k",
            "s3://localhost:9000#/key",
            "s3://2852039166?/k",
            "s3://169.254.169.254/k",
            "s3://Bucket/k",
            "s3://a@b.c/k",
            "gs://ab/k",
            "s3://-bucket/k",
        ] {
            assert!(
                matches!(SourceUrl::parse(bad, dir), Err(BucketError::Source(_))),
                "{bad}"
            );
        }
    }
}
