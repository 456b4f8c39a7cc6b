//! Amazon S3 (and S3-compatible services such as moto or MinIO) as a [`Store`].
//!
//! Requests are signed with SigV4 by `aws-sigv4` and sent through the crate's
//! [`HttpClient`], so this module runs natively and at the edge (no tokio, no reqwest).
//!
//! - Addressing: path style (`{endpoint}/{bucket}/{key}`) when an endpoint is configured,
//!   virtual-host style (`https://{bucket}.s3.{region}.amazonaws.com/{key}`) otherwise.
//! - Create-only writes use `If-None-Match: *` on PutObject, CompleteMultipartUpload and
//!   CopyObject. moto 5.2.5 honours it on the first two but ignores it on CopyObject, so
//!   create-only copies also HEAD the destination just before copying.
//! - Streams of unknown length are buffered up to [`PART_SIZE`]; longer ones become a
//!   multipart upload that is aborted on any failure, so nothing partial is ever visible.
//! - Transient failures (5xx, throttling, transport errors) are retried with exponential
//!   backoff and full jitter, bounded in attempts and time, then reported as
//!   [`StoreError::Unavailable`]. Every request body is held in memory (a whole small
//!   object, or one part), so every attempt can resend it.

use super::limits::{collect_limited, too_large, MAX_API_ANSWER, MAX_DOCUMENT, MAX_ERROR_BODY};
use super::*;
use crate::http::{HttpClient, HttpError, ReqBody};
use crate::model::platform::{box_stream, ByteStream, Clock, Sleeper};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use futures::StreamExt;
use http::{HeaderMap, Method, StatusCode};
use md5::Digest as _;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use std::sync::Arc;

/// Part size of multipart uploads from [`Store::put_stream`]; also the most a stream is
/// buffered before it becomes a multipart upload. Doubles every 1000 parts, so the
/// 10,000-part limit of S3 is never reached.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Largest object CopyObject can copy in one request (5 GiB).
const COPY_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// Part size of multipart copies (UploadPartCopy) of larger objects.
const COPY_PART: u64 = 1024 * 1024 * 1024;
/// How many UploadPartCopy requests run at once.
const COPY_CONCURRENCY: usize = 4;
/// Request bodies at least this big go through the streaming client (no whole-request timeout).
const BIG_BODY: usize = 1024 * 1024;
/// Presigned URLs live at most this long (the SigV4 limit).
const PRESIGN_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
use super::retry::backoff;
/// SHA-256 of the empty string.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// S3's `UriEncode`: everything but the unreserved characters is percent-encoded.
const URI_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// The same, keeping `/` (object keys in paths and in `x-amz-copy-source`).
const PATH_ENCODE: &AsciiSet = &URI_ENCODE.remove(b'/');

mod config;
mod multipart;
mod request;

pub use config::S3Config;
use multipart::{stream_error, PartReader};
use request::*;

/// A bucket in Amazon S3 or an S3-compatible service.
pub struct S3Store<H, T> {
    cfg: S3Config,
    identity: Identity,
    http: H,
    sleeper: T,
    clock: Arc<dyn Clock>,
    copy_max: u64,
    copy_part: u64,
}

/// Keys that cannot be put into a URL faithfully (URL parsers resolve `.` and `..`
/// segments) or address nothing. Reads accept any other key, since buckets written
/// by others (staging) may hold keys that [`check_key`] would refuse.
fn check_addressable(key: &str) -> StoreResult<()> {
    if key.is_empty() || key.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(StoreError::InvalidKey(key.to_string()));
    }
    Ok(())
}

/// The tag the original put on checkout copies that its buckets' lifecycle rule expires.
const EXPIRING_TAG: &str = "uncached=True";

/// `Content-Type`, `x-amz-meta-*` and (for an expiring object) `x-amz-tagging` headers
/// for a write.
fn write_headers(
    content_type: Option<&str>,
    metadata: &BTreeMap<String, String>,
    expiring: bool,
) -> StoreResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    if expiring {
        out.push(("x-amz-tagging".to_string(), EXPIRING_TAG.to_string()));
    }
    if let Some(ct) = content_type {
        http::HeaderValue::from_str(ct).map_err(|_| StoreError::Other(format!("invalid content type {ct:?}")))?;
        out.push(("content-type".to_string(), ct.to_string()));
    }
    for (k, v) in metadata {
        let name = format!("x-amz-meta-{}", k.to_ascii_lowercase());
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() || http::HeaderValue::from_str(v).is_err() {
            return Err(StoreError::Other(format!(
                "metadata {k:?}: S3 user metadata must be a token name and an ASCII value"
            )));
        }
        out.push((name, v.clone()));
    }
    Ok(out)
}

/// `bytes a-b/total` into `(a, b + 1, total)`.
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b, total) = (a.parse().ok()?, b.parse::<u64>().ok()?, total.parse().ok()?);
    (a <= b && b < total).then_some((a, b + 1, total))
}

/// The bytes `start..end` of a stream that begins at offset 0 (for servers that ignore `Range`).
fn slice_stream(inner: ByteStream, start: u64, end: u64) -> ByteStream {
    box_stream(futures::stream::unfold(
        (inner, 0u64),
        move |(mut s, mut off)| async move {
            while off < end {
                match s.next().await {
                    None => {
                        let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "S3 response body ended early");
                        return Some((Err(e), (s, end)));
                    }
                    Some(Err(e)) => return Some((Err(e), (s, end))),
                    Some(Ok(c)) => {
                        let (lo, hi) = (off, off + c.len() as u64);
                        off = hi;
                        let (a, b) = (start.clamp(lo, hi) - lo, end.clamp(lo, hi) - lo);
                        if a < b {
                            return Some((Ok(c.slice(a as usize..b as usize)), (s, off)));
                        }
                    }
                }
            }
            None
        },
    ))
}

impl<H: HttpClient, T: Sleeper> S3Store<H, T> {
    /// A store for the bucket in `cfg`, sending requests with `http`, backing off with
    /// `sleeper` and signing with the time from `clock`.
    pub fn new(cfg: S3Config, http: H, sleeper: T, clock: Arc<dyn Clock>) -> Self {
        let creds = Credentials::new(
            cfg.access_key_id.clone(),
            cfg.secret_access_key.clone(),
            cfg.session_token.clone(),
            None,
            "dss-s3-config",
        );
        let cfg = S3Config {
            endpoint: cfg
                .endpoint
                .map(|e| e.trim_end_matches('/').to_string())
                .filter(|e| !e.is_empty()),
            ..cfg
        };
        S3Store {
            cfg,
            identity: creds.into(),
            http,
            sleeper,
            clock,
            copy_max: COPY_MAX,
            copy_part: COPY_PART,
        }
    }

    /// The same endpoint and credentials, for another bucket (a user's checkout
    /// destination).
    pub fn for_bucket(&self, bucket: &str) -> Self
    where
        H: Clone,
        T: Clone,
    {
        S3Store {
            cfg: S3Config {
                bucket: bucket.to_string(),
                ..self.cfg.clone()
            },
            identity: self.identity.clone(),
            http: self.http.clone(),
            sleeper: self.sleeper.clone(),
            clock: self.clock.clone(),
            copy_max: self.copy_max,
            copy_part: self.copy_part,
        }
    }

    /// Copy objects larger than `single_max` bytes with multipart UploadPartCopy in parts of
    /// `part_size` bytes (defaults: 5 GiB, S3's CopyObject limit, and 1 GiB). For tests,
    /// which cannot make 5 GiB objects; S3 wants parts of at least 5 MiB.
    pub fn with_multipart_copy(mut self, single_max: u64, part_size: u64) -> Self {
        self.copy_max = single_max;
        self.copy_part = part_size.max(1);
        self
    }

    /// This store's configuration.
    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// Create the bucket (in the configured region). A bucket that already exists and is
    /// ours counts as success.
    pub async fn create_bucket(&self) -> StoreResult<()> {
        let mut call = Call::new(Method::PUT, &self.cfg.bucket, None);
        if self.cfg.region != "us-east-1" {
            call = call.payload(Payload::Bytes(Bytes::from(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                quick_xml::escape::escape(self.cfg.region.as_str())
            ))));
        }
        match self.exec_raw(&call).await? {
            Ok(_) => Ok(()),
            Err(f) if f.code.as_deref() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(f) => Err(f.into_store_error("CreateBucket", call.target())),
        }
    }

    /// Replace the tags of the object at `key` (PutObjectTagging).
    pub async fn put_tags(&self, key: &str, tags: &BTreeMap<String, String>) -> StoreResult<()> {
        check_addressable(key)?;
        let mut xml = String::from("<Tagging xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><TagSet>");
        for (k, v) in tags {
            xml.push_str(&format!(
                "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
                quick_xml::escape::escape(k.as_str()),
                quick_xml::escape::escape(v.as_str())
            ));
        }
        xml.push_str("</TagSet></Tagging>");
        let body = Bytes::from(xml);
        let call = Call::new(Method::PUT, &self.cfg.bucket, Some(key))
            .query("tagging", "")
            .header("content-md5", md5_base64(std::slice::from_ref(&body)))
            .payload(Payload::Bytes(body));
        self.exec(&call, "PutObjectTagging").await.map(|_| ())
    }

    /// The URL of `bucket`, or of `key` in it, with `query` (names and values unencoded).
    fn url(&self, bucket: &str, key: Option<&str>, query: &[(&str, String)]) -> String {
        let mut url = match &self.cfg.endpoint {
            Some(ep) => format!("{ep}/{bucket}"),
            // Dotted bucket names do not match the wildcard certificate: path style for those.
            None if bucket.contains('.') => format!("https://s3.{}.amazonaws.com/{bucket}", self.cfg.region),
            None => format!("https://{bucket}.s3.{}.amazonaws.com", self.cfg.region),
        };
        match key {
            Some(k) => {
                url.push('/');
                url.extend(utf8_percent_encode(k, PATH_ENCODE));
            }
            None if self.cfg.endpoint.is_none() && !bucket.contains('.') => url.push('/'),
            None => {}
        }
        for (i, (name, value)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.extend(utf8_percent_encode(name, URI_ENCODE));
            if !value.is_empty() {
                url.push('=');
                url.extend(utf8_percent_encode(value, URI_ENCODE));
            }
        }
        url
    }

    fn meta_of(&self, headers: &HeaderMap, size: u64) -> ObjectMeta {
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let metadata = headers
            .iter()
            .filter_map(|(k, v)| {
                let name = k.as_str().strip_prefix("x-amz-meta-")?;
                Some((name.to_string(), v.to_str().ok()?.to_string()))
            })
            .collect();
        ObjectMeta {
            size,
            content_type: get("content-type").map(str::to_string),
            metadata,
            last_modified: get("last-modified")
                .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_else(|| self.clock.now()),
            checksum: get("etag")
                .map(|e| e.trim_matches('"').to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .map(super::StoreChecksum::S3Etag),
        }
    }

    /// HEAD of `key` in `bucket` (this store's or another's).
    async fn head_in(&self, bucket: &str, key: &str) -> StoreResult<ObjectMeta> {
        check_addressable(key)?;
        let resp = self
            .exec(&Call::new(Method::HEAD, bucket, Some(key)), "HeadObject")
            .await?;
        if let Some(size) = resp.header("content-length").and_then(|v| v.parse().ok()) {
            return Ok(self.meta_of(&resp.headers, size));
        }
        // The Workers runtime drops Content-Length from answers to HEAD: the size comes
        // from the first byte's Content-Range instead (none for an empty object).
        let mut call = Call::new(Method::GET, bucket, Some(key)).header("range", "bytes=0-0".to_string());
        call.stream_response = true;
        match self.exec(&call, "GetObject").await {
            Ok(first) => {
                let (_, _, size) = first
                    .header("content-range")
                    .and_then(parse_content_range)
                    .ok_or_else(|| StoreError::Other(format!("S3 HeadObject {key}: no size")))?;
                Ok(self.meta_of(&first.headers, size))
            }
            Err(StoreError::RangeNotSatisfiable) => Ok(self.meta_of(&resp.headers, 0)),
            Err(e) => Err(e),
        }
    }

    async fn exists(&self, key: &str) -> StoreResult<bool> {
        match self.head_in(&self.cfg.bucket, key).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn tags(&self, key: &str) -> StoreResult<BTreeMap<String, String>> {
        let call = Call::new(Method::GET, &self.cfg.bucket, Some(key)).query("tagging", "");
        let (_, body) = self.exec_body(&call, "GetObjectTagging").await?;
        let xml: TaggingXml = parse_xml(&body, "GetObjectTagging")?;
        Ok(xml
            .tag_set
            .tags
            .into_iter()
            .map(|t| (t.key, t.value.unwrap_or_default()))
            .collect())
    }
}

impl<H: HttpClient, T: Sleeper> Store for S3Store<H, T> {
    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        let (meta, _, stream) = self.get_range(key, None).await?;
        collect_limited(stream, Some(meta.size), MAX_DOCUMENT, key, |e| {
            StoreError::Unavailable(format!("S3 GetObject {key}: {e}"))
        })
        .await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> StoreResult<(ObjectMeta, (u64, u64), ByteStream)> {
        check_addressable(key)?;
        let spec = match range {
            None => None,
            Some(ByteRange::FromTo(s, e)) if s <= e => Some(format!("bytes={s}-{e}")),
            Some(ByteRange::From(s)) => Some(format!("bytes={s}-")),
            Some(ByteRange::Suffix(n)) if n > 0 => Some(format!("bytes=-{n}")),
            // S3 ignores malformed ranges (serving the whole object): answer here, after
            // making sure the object exists.
            Some(_) => {
                self.head(key).await?;
                return Err(StoreError::RangeNotSatisfiable);
            }
        };
        let mut call = Call::new(Method::GET, &self.cfg.bucket, Some(key));
        if let Some(spec) = spec {
            call = call.header("range", spec);
        }
        call.stream_response = true;
        let resp = self.exec(&call, "GetObject").await?;
        let bad = |what: &str| StoreError::Other(format!("S3 GetObject {key}: {what}"));
        if resp.status == StatusCode::PARTIAL_CONTENT {
            let (start, end, size) = resp
                .header("content-range")
                .and_then(parse_content_range)
                .ok_or_else(|| bad("206 without a valid Content-Range"))?;
            let meta = self.meta_of(&resp.headers, size);
            let RespBody::Stream(body) = resp.body else {
                return Err(bad("no body stream"));
            };
            return Ok((meta, (start, end), body));
        }
        let size = resp
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("no Content-Length"))?;
        let meta = self.meta_of(&resp.headers, size);
        let RespBody::Stream(body) = resp.body else {
            return Err(bad("no body stream"));
        };
        // A whole-object answer to a range request (empty objects, or servers that ignore
        // Range): resolve the range here.
        match range.map(|r| r.resolve(size)) {
            None => Ok((meta, (0, size), body)),
            Some(None) => Err(StoreError::RangeNotSatisfiable),
            Some(Some((0, end))) if end == size => Ok((meta, (0, size), body)),
            Some(Some((start, end))) => Ok((meta, (start, end), slice_stream(body, start, end))),
        }
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.head_in(&self.cfg.bucket, key).await
    }

    async fn put(&self, key: &str, data: Bytes, opts: PutOptions) -> StoreResult<()> {
        check_key(key)?;
        let mut call = Call::new(Method::PUT, &self.cfg.bucket, Some(key))
            .headers(write_headers(
                opts.content_type.as_deref(),
                &opts.metadata,
                opts.expiring,
            )?)
            .payload(Payload::Bytes(data));
        // moto 5.2.5 honours If-None-Match on PutObject, like S3.
        if opts.if_absent {
            call = call.header("if-none-match", "*");
        }
        self.exec(&call, "PutObject").await.map(|_| ())
    }

    async fn put_stream(&self, key: &str, data: ByteStream, opts: PutOptions) -> StoreResult<u64> {
        check_key(key)?;
        let headers = write_headers(opts.content_type.as_deref(), &opts.metadata, opts.expiring)?;
        let mut reader = PartReader {
            stream: data,
            carry: None,
            done: false,
        };
        let first = reader.next_part(PART_SIZE).await.map_err(stream_error)?;
        if reader.at_end().await.map_err(stream_error)? {
            let len = first.1 as u64;
            let mut call = Call::new(Method::PUT, &self.cfg.bucket, Some(key))
                .headers(headers)
                .payload(Payload::Chunks(first.0));
            if opts.if_absent {
                call = call.header("if-none-match", "*");
            }
            self.exec(&call, "PutObject").await?;
            return Ok(len);
        }
        if opts.if_absent && self.exists(key).await? {
            // Early, to spare the upload; CompleteMultipartUpload checks again, atomically.
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        let upload_id = self.create_multipart(key, headers).await?;
        let result = self
            .upload_parts(key, &upload_id, first, &mut reader, opts.if_absent)
            .await;
        if result.is_err() {
            self.abort_multipart(key, &upload_id).await;
        }
        result
    }

    async fn list(&self, prefix: &str, token: Option<&str>, limit: usize) -> StoreResult<ListPage> {
        let mut call = Call::new(Method::GET, &self.cfg.bucket, None)
            .query("list-type", "2")
            .query("prefix", prefix)
            .query("max-keys", limit.clamp(1, 1000).to_string())
            .query("encoding-type", "url");
        if let Some(t) = token {
            call = call.query("continuation-token", t);
        }
        let (_, body) = self.exec_body(&call, "ListObjectsV2").await?;
        let xml: ListBucketResultXml = parse_xml(&body, "ListObjectsV2")?;
        let url_encoded = xml.encoding_type.as_deref() == Some("url");
        let keys = xml
            .contents
            .into_iter()
            .map(|c| {
                if url_encoded {
                    // S3 encodes a space as `+` (and `+` as `%2B`).
                    percent_decode_str(&c.key.replace('+', " "))
                        .decode_utf8()
                        .map(|k| k.into_owned())
                        .map_err(|e| StoreError::Other(format!("S3 ListObjectsV2: bad key {:?}: {e}", c.key)))
                } else {
                    Ok(c.key)
                }
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let next_token = if xml.is_truncated {
            xml.next_continuation_token
        } else {
            None
        };
        Ok(ListPage { keys, next_token })
    }

    async fn copy(&self, src: &str, dst: &str) -> StoreResult<()> {
        self.copy_object(&self.cfg.bucket, src, dst, PutOptions::overwrite())
            .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        check_addressable(key)?;
        match self
            .exec(&Call::new(Method::DELETE, &self.cfg.bucket, Some(key)), "DeleteObject")
            .await
        {
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn presign_get(&self, key: &str, expires_in: Duration, opts: &PresignOptions) -> StoreResult<String> {
        check_addressable(key)?;
        let mut query = Vec::new();
        if let Some(cd) = &opts.content_disposition {
            query.push(("response-content-disposition", cd.clone()));
        }
        if let Some(ct) = &opts.content_type {
            query.push(("response-content-type", ct.clone()));
        }
        let mut url = self.url(&self.cfg.bucket, Some(key), &query);
        let mut settings = Self::s3_settings();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(expires_in.clamp(Duration::from_secs(1), PRESIGN_MAX));
        let (_, params) = self.sign(&Method::GET, &url, &[], SignableBody::UnsignedPayload, settings)?;
        for (name, value) in params {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.extend(utf8_percent_encode(name, URI_ENCODE));
            url.push('=');
            url.extend(utf8_percent_encode(&value, URI_ENCODE));
        }
        Ok(url)
    }

    async fn head_with_tags(&self, key: &str) -> StoreResult<ObjectMeta> {
        let (meta, tags) = futures::future::join(self.head(key), self.tags(key)).await;
        let mut meta = meta?;
        meta.metadata.extend(tags?);
        Ok(meta)
    }

    /// `src` must be reachable through this store's endpoint and credentials (same
    /// account or a bucket policy granting read).
    async fn copy_from(&self, src: &Self, src_key: &str, dst_key: &str, opts: PutOptions) -> StoreResult<()> {
        self.copy_object(&src.cfg.bucket, src_key, dst_key, opts).await
    }

    /// A server-side copy names the source bucket to this store's endpoint with this
    /// store's keys: only the same endpoint, region and account can do it.
    fn same_backend(&self, other: &Self) -> bool {
        self.cfg.endpoint == other.cfg.endpoint
            && self.cfg.region == other.cfg.region
            && self.cfg.access_key_id == other.cfg.access_key_id
    }

    fn direct_url(&self, key: &str) -> Option<String> {
        Some(format!("s3://{}/{key}", self.cfg.bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 990-999/1000"), Some((990, 1000, 1000)));
        assert_eq!(parse_content_range("bytes 0-0/1"), Some((0, 1, 1)));
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("bytes 5-4/10"), None);
    }

    #[test]
    fn errors_parse_and_map() {
        let body = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>\
            <Message>The specified key does not exist.</Message><Key>a</Key></Error>";
        let f = Failure::parse(StatusCode::NOT_FOUND, body);
        assert_eq!(f.code.as_deref(), Some("NoSuchKey"));
        assert_eq!(f.message.as_deref(), Some("The specified key does not exist."));
        assert!(!f.retryable());
        assert!(matches!(
            f.into_store_error("GetObject", "a".into()),
            StoreError::NotFound(_)
        ));
        let slow = Failure::parse(StatusCode::SERVICE_UNAVAILABLE, b"<Error><Code>SlowDown</Code></Error>");
        assert!(slow.retryable());
        assert!(matches!(
            slow.into_store_error("PutObject", "a".into()),
            StoreError::Unavailable(_)
        ));
        // Errors inside a 200 (copies, completions) are classified by their code.
        let internal = Failure::parse(StatusCode::OK, b"<Error><Code>InternalError</Code></Error>");
        assert!(internal.retryable());
        let gone = Failure::parse(StatusCode::OK, b"<Error><Code>NoSuchUpload</Code></Error>");
        assert!(!gone.retryable());
        assert!(matches!(
            gone.into_store_error("Complete", "a".into()),
            StoreError::NotFound(_)
        ));
        assert_eq!(xml_root(body).as_deref(), Some("Error"));
        assert_eq!(
            xml_root(b"<CopyObjectResult><ETag>x</ETag></CopyObjectResult>").as_deref(),
            Some("CopyObjectResult")
        );
    }

    /// An S3 that answers every request with `answer` (status, headers, body), counting
    /// requests; whole answers over the caller's limit are refused, as by a real client.
    struct Canned {
        answer: Box<dyn Fn() -> http::Response<Bytes> + Send + Sync>,
        requests: std::sync::atomic::AtomicUsize,
    }

    impl HttpClient for &Canned {
        async fn send(&self, _req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
            self.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok((self.answer)())
        }
        async fn send_stream(&self, _req: http::Request<ReqBody>) -> Result<http::Response<ByteStream>, HttpError> {
            self.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (parts, body) = (self.answer)().into_parts();
            Ok(http::Response::from_parts(
                parts,
                box_stream(futures::stream::iter([Ok::<_, std::io::Error>(body)])),
            ))
        }
        async fn send_limited(
            &self,
            req: http::Request<Bytes>,
            limit: usize,
        ) -> Result<http::Response<Bytes>, HttpError> {
            let resp = self.send(req).await?;
            if resp.body().len() > limit {
                return Err(HttpError::TooLarge(limit));
            }
            Ok(resp)
        }
    }

    struct NoSleep;
    impl Sleeper for NoSleep {
        async fn sleep(&self, _d: Duration) {}
    }

    fn canned(answer: impl Fn() -> http::Response<Bytes> + Send + Sync + 'static) -> Canned {
        Canned {
            answer: Box::new(answer),
            requests: Default::default(),
        }
    }

    fn s3(http: &Canned) -> S3Store<&Canned, NoSleep> {
        let cfg = S3Config {
            bucket: "bkt".into(),
            endpoint: Some("http://s3.test".into()),
            region: "us-east-1".into(),
            access_key_id: "id".into(),
            secret_access_key: "secret".into(),
            session_token: None,
        };
        S3Store::new(cfg, http, NoSleep, Arc::new(crate::model::SystemClock))
    }

    #[tokio::test]
    async fn answers_over_their_caps_are_refused_not_retried() {
        // A listing padded past the cap of API answers.
        let http = canned(|| {
            let xml = format!(
                "<ListBucketResult><IsTruncated>false</IsTruncated><!--{}--></ListBucketResult>",
                "x".repeat(MAX_API_ANSWER)
            );
            http::Response::new(Bytes::from(xml))
        });
        let s = s3(&http);
        assert!(matches!(
            s.list("files/", None, 10).await,
            Err(StoreError::TooLarge {
                limit: MAX_API_ANSWER,
                ..
            })
        ));
        assert_eq!(
            http.requests.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "not retried"
        );

        // A document announced larger than the document cap is not read.
        let http = canned(|| {
            http::Response::builder()
                .header("content-length", (MAX_DOCUMENT + 1).to_string())
                .body(Bytes::from_static(b"{}"))
                .unwrap()
        });
        assert!(matches!(
            s3(&http).get("bundles/x").await,
            Err(StoreError::TooLarge { .. })
        ));

        // Error bodies are read only as far as they are quoted.
        let http = canned(|| {
            let body = format!(
                "<Error><Code>AccessDenied</Code><Message>{}</Message></Error>",
                "m".repeat(MAX_ERROR_BODY)
            );
            http::Response::builder().status(403).body(Bytes::from(body)).unwrap()
        });
        match s3(&http).get("bundles/x").await {
            // Cut before its end, so only the status is known: a short error, not a 403 body.
            Err(StoreError::Other(m)) => assert!(m.contains("403") && m.len() < 1024, "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_are_encoded_once() {
        let enc: String = utf8_percent_encode("dir/a b+c~d.e", PATH_ENCODE).collect();
        assert_eq!(enc, "dir/a%20b%2Bc~d.e");
    }

    #[tokio::test]
    async fn part_reader_splits_exactly() {
        let chunks: Vec<std::io::Result<Bytes>> = vec![
            Ok(Bytes::from(vec![1u8; 5])),
            Ok(Bytes::new()),
            Ok(Bytes::from(vec![2u8; 7])),
        ];
        let mut r = PartReader {
            stream: box_stream(futures::stream::iter(chunks)),
            carry: None,
            done: false,
        };
        let (p, n) = r.next_part(4).await.unwrap();
        assert_eq!((p.len(), n), (1, 4));
        assert!(!r.at_end().await.unwrap());
        let (p, n) = r.next_part(4).await.unwrap();
        assert_eq!((p.len(), n), (2, 4));
        let (_, n) = r.next_part(4).await.unwrap();
        assert_eq!(n, 4);
        assert!(r.at_end().await.unwrap());
        assert_eq!(r.next_part(4).await.unwrap().1, 0);
    }

    #[tokio::test]
    async fn slices_whole_object_streams() {
        let chunks: Vec<std::io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"defg")),
            Ok(Bytes::from_static(b"h")),
        ];
        let mut s = slice_stream(box_stream(futures::stream::iter(chunks)), 2, 6);
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        assert_eq!(out, b"cdef");
    }
}
