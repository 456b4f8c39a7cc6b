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

/// Where a bucket is and how to sign for it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// S3-compatible endpoint such as `http://127.0.0.1:5000` (path-style addressing);
    /// `None` for AWS itself (virtual-host style).
    pub endpoint: Option<String>,
    /// Signing region, such as `us-east-1`.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field("session_token", &self.session_token.as_ref().map(|_| "** redacted **"))
            .finish()
    }
}

impl S3Config {
    /// Configuration for `bucket` from the usual AWS variables: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION` (default
    /// `us-east-1`), and the endpoint from `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`.
    /// Fails if the key id or the secret is missing.
    pub fn from_env(bucket: &str) -> StoreResult<Self> {
        Self::from_vars(bucket, &|name| std::env::var(name).ok())
    }

    /// The same settings, read through `lookup` (the edge reads its bindings, not a
    /// process environment).
    pub fn from_vars(bucket: &str, lookup: &dyn Fn(&str) -> Option<String>) -> StoreResult<Self> {
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let required =
            |name: &str| var(name).ok_or_else(|| StoreError::Other(format!("S3 bucket {bucket}: {name} is not set")));
        Ok(S3Config {
            bucket: bucket.to_string(),
            endpoint: var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")),
            region: var("AWS_DEFAULT_REGION").unwrap_or_else(|| "us-east-1".to_string()),
            access_key_id: required("AWS_ACCESS_KEY_ID")?,
            secret_access_key: required("AWS_SECRET_ACCESS_KEY")?,
            session_token: var("AWS_SESSION_TOKEN"),
        })
    }
}

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

/// A request body. Every variant can be sent again on retry.
enum Payload {
    Empty,
    /// Signed with its SHA-256.
    Bytes(Bytes),
    /// Sent as a stream with `UNSIGNED-PAYLOAD` and a `Content-MD5` (parts of a stream).
    Chunks(Vec<Bytes>),
}

/// One S3 API request.
struct Call<'a> {
    method: Method,
    bucket: &'a str,
    key: Option<&'a str>,
    query: Vec<(&'static str, String)>,
    headers: Vec<(String, String)>,
    payload: Payload,
    /// Hand the response body back as a stream (object downloads).
    stream_response: bool,
    /// May take long (copies): use the streaming client, which has no whole-request timeout.
    long: bool,
    /// S3 may answer 200 with an `<Error>` body (CopyObject, UploadPartCopy, Complete).
    error_in_200: bool,
}

impl<'a> Call<'a> {
    fn new(method: Method, bucket: &'a str, key: Option<&'a str>) -> Self {
        Call {
            method,
            bucket,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            payload: Payload::Empty,
            stream_response: false,
            long: false,
            error_in_200: false,
        }
    }
    fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }
    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
    fn headers(mut self, headers: Vec<(String, String)>) -> Self {
        self.headers.extend(headers);
        self
    }
    fn payload(mut self, payload: Payload) -> Self {
        self.payload = payload;
        self
    }
    /// What the request is about, for error messages.
    fn target(&self) -> String {
        match self.key {
            Some(k) => k.to_string(),
            None => self.bucket.to_string(),
        }
    }
}

enum RespBody {
    Full(Bytes),
    Stream(ByteStream),
}

/// Header names or query parameter names from the signer, with their values.
type Signed = Vec<(&'static str, String)>;

/// A response from S3.
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: RespBody,
}

impl Resp {
    /// The whole body of an answer (an XML document), refused past [`MAX_API_ANSWER`].
    async fn bytes(self) -> Result<Bytes, HttpError> {
        match self.body {
            // Already read under the same cap (`send_limited`).
            RespBody::Full(b) => Ok(b),
            RespBody::Stream(mut s) => {
                let mut out = bytes::BytesMut::new();
                while let Some(chunk) = s.next().await {
                    let chunk = chunk.map_err(|e| HttpError::Transport(e.to_string()))?;
                    if out.len() + chunk.len() > MAX_API_ANSWER {
                        return Err(HttpError::TooLarge(MAX_API_ANSWER));
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(out.freeze())
            }
        }
    }

    /// The start of an error body: at most [`MAX_ERROR_BODY`] bytes, the rest unread.
    async fn error_body(self) -> Bytes {
        match self.body {
            RespBody::Full(mut b) => {
                b.truncate(MAX_ERROR_BODY);
                b
            }
            RespBody::Stream(mut s) => {
                let mut out = bytes::BytesMut::new();
                while let Some(Ok(chunk)) = s.next().await {
                    let room = MAX_ERROR_BODY - out.len();
                    out.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if out.len() >= MAX_ERROR_BODY {
                        break;
                    }
                }
                out.freeze()
            }
        }
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An S3 error response.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorXml {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

impl Failure {
    fn parse(status: StatusCode, body: &[u8]) -> Self {
        let xml: ErrorXml = std::str::from_utf8(body)
            .ok()
            .and_then(|s| quick_xml::de::from_str(s).ok())
            .unwrap_or_default();
        Failure {
            status,
            code: xml.code,
            message: xml.message,
        }
    }

    fn retryable(&self) -> bool {
        super::retry::retryable_status(self.status.as_u16())
            || matches!(
                self.code.as_deref(),
                Some(
                    "SlowDown"
                        | "Throttling"
                        | "ThrottlingException"
                        | "RequestLimitExceeded"
                        | "TooManyRequestsException"
                        | "RequestTimeout"
                        | "InternalError"
                        | "ServiceUnavailable"
                        // A concurrent conditional write on the same key: S3 asks for a retry.
                        | "ConditionalRequestConflict"
                )
            )
    }

    fn describe(&self) -> String {
        let mut s = self.status.to_string();
        if let Some(c) = &self.code {
            s.push(' ');
            s.push_str(c);
        }
        if let Some(m) = &self.message {
            s.push_str(": ");
            s.push_str(m);
        }
        s
    }

    fn into_store_error(self, what: &str, target: String) -> StoreError {
        match (self.status.as_u16(), self.code.as_deref()) {
            (_, Some("NoSuchKey" | "NoSuchBucket" | "NoSuchUpload")) | (404, _) => StoreError::NotFound(target),
            (_, Some("PreconditionFailed")) | (412, _) => StoreError::AlreadyExists(target),
            (_, Some("InvalidRange")) | (416, _) => StoreError::RangeNotSatisfiable,
            _ if self.retryable() => StoreError::Unavailable(format!("S3 {what} {target}: {}", self.describe())),
            _ => StoreError::Other(format!("S3 {what} {target}: {}", self.describe())),
        }
    }
}

/// The name of the root element of an XML document.
fn xml_root(body: &[u8]) -> Option<String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) | Ok(quick_xml::events::Event::Empty(e)) => {
                return Some(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())
            }
            Ok(quick_xml::events::Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn parse_xml<'de, X: Deserialize<'de>>(body: &'de [u8], what: &str) -> StoreResult<X> {
    let text =
        std::str::from_utf8(body).map_err(|e| StoreError::Other(format!("S3 {what}: response not UTF-8: {e}")))?;
    quick_xml::de::from_str(text).map_err(|e| StoreError::Other(format!("S3 {what}: unexpected response: {e}")))
}

#[derive(Deserialize)]
struct ListBucketResultXml {
    #[serde(rename = "Contents", default)]
    contents: Vec<ListEntryXml>,
    #[serde(rename = "IsTruncated", default)]
    is_truncated: bool,
    #[serde(rename = "NextContinuationToken")]
    next_continuation_token: Option<String>,
    #[serde(rename = "EncodingType")]
    encoding_type: Option<String>,
}

#[derive(Deserialize)]
struct ListEntryXml {
    #[serde(rename = "Key")]
    key: String,
}

#[derive(Deserialize)]
struct InitiateXml {
    #[serde(rename = "UploadId")]
    upload_id: String,
}

#[derive(Deserialize)]
struct CopyResultXml {
    #[serde(rename = "ETag")]
    etag: String,
}

#[derive(Deserialize)]
struct TaggingXml {
    #[serde(rename = "TagSet", default)]
    tag_set: TagSetXml,
}

#[derive(Deserialize, Default)]
struct TagSetXml {
    #[serde(rename = "Tag", default)]
    tags: Vec<TagXml>,
}

#[derive(Deserialize)]
struct TagXml {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value", default)]
    value: Option<String>,
}

fn md5_base64(chunks: &[Bytes]) -> String {
    let mut h = md5::Md5::new();
    for c in chunks {
        h.update(c);
    }
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
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

/// `Content-Type` and `x-amz-meta-*` headers for a write.
fn write_headers(
    content_type: Option<&str>,
    metadata: &BTreeMap<String, String>,
) -> StoreResult<Vec<(String, String)>> {
    let mut out = Vec::new();
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

/// Reads a stream of unknown length in parts.
struct PartReader {
    stream: ByteStream,
    carry: Option<Bytes>,
    done: bool,
}

impl PartReader {
    /// The next `size` bytes (fewer at the end), as chunks, and their count.
    async fn next_part(&mut self, size: usize) -> std::io::Result<(Vec<Bytes>, usize)> {
        let mut chunks = Vec::new();
        let mut len = 0;
        while len < size {
            let mut chunk = match self.carry.take() {
                Some(c) => c,
                None if self.done => break,
                None => match self.stream.next().await {
                    Some(c) => c?,
                    None => {
                        self.done = true;
                        break;
                    }
                },
            };
            if chunk.len() > size - len {
                self.carry = Some(chunk.split_off(size - len));
            }
            len += chunk.len();
            if !chunk.is_empty() {
                chunks.push(chunk);
            }
        }
        Ok((chunks, len))
    }

    /// Whether the stream has no more bytes (reads ahead one chunk to find out).
    async fn at_end(&mut self) -> std::io::Result<bool> {
        while self.carry.is_none() && !self.done {
            match self.stream.next().await {
                Some(c) => {
                    let c = c?;
                    if !c.is_empty() {
                        self.carry = Some(c);
                    }
                }
                None => self.done = true,
            }
        }
        Ok(self.carry.is_none())
    }
}

fn stream_error(e: std::io::Error) -> StoreError {
    StoreError::Other(format!("reading the upload stream: {e}"))
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

    fn signing_time(&self) -> std::time::SystemTime {
        let now = self.clock.now();
        let secs = u64::try_from(now.timestamp()).unwrap_or(0);
        std::time::UNIX_EPOCH + Duration::new(secs, now.timestamp_subsec_nanos().min(999_999_999))
    }

    /// SigV4 headers (`settings.signature_location == Headers`) or query parameters.
    fn sign(
        &self,
        method: &Method,
        url: &str,
        headers: &[(String, String)],
        body: SignableBody<'_>,
        settings: SigningSettings,
    ) -> StoreResult<(Signed, Signed)> {
        let fail = |e: &dyn std::fmt::Display| StoreError::Other(format!("signing S3 request: {e}"));
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.cfg.region)
            .name("s3")
            .time(self.signing_time())
            .settings(settings)
            .build()
            .map_err(|e| fail(&e))?
            .into();
        let req = SignableRequest::new(
            method.as_str(),
            url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            body,
        )
        .map_err(|e| fail(&e))?;
        let (instructions, _signature) = sign(req, &params).map_err(|e| fail(&e))?.into_parts();
        let (hs, ps) = instructions.into_parts();
        Ok((
            hs.into_iter().map(|h| (h.name(), h.value().to_string())).collect(),
            ps.into_iter().map(|(k, v)| (k, v.into_owned())).collect(),
        ))
    }

    fn s3_settings() -> SigningSettings {
        let mut s = SigningSettings::default();
        s.percent_encoding_mode = PercentEncodingMode::Single;
        s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        s
    }

    /// One attempt: sign and send. `Err` of the outer result is not retryable.
    async fn attempt(
        &self,
        call: &Call<'_>,
        url: &str,
        headers: &[(String, String)],
        payload_hash: Option<&str>,
    ) -> StoreResult<Result<Resp, HttpError>> {
        let mut settings = Self::s3_settings();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let body = match payload_hash {
            Some(h) => SignableBody::Precomputed(h.to_string()),
            None => SignableBody::UnsignedPayload,
        };
        let (signed, _) = self.sign(&call.method, url, headers, body, settings)?;
        let mut builder = http::Request::builder().method(call.method.clone()).uri(url);
        for (k, v) in headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        for (k, v) in signed {
            builder = builder.header(k, v);
        }
        let bad = |e: http::Error| StoreError::Other(format!("building S3 request: {e}"));
        let big = matches!(&call.payload, Payload::Bytes(b) if b.len() >= BIG_BODY);
        if call.stream_response || call.long || big || matches!(call.payload, Payload::Chunks(_)) {
            let body = match &call.payload {
                Payload::Empty => ReqBody::Bytes(Bytes::new()),
                Payload::Bytes(b) => ReqBody::Bytes(b.clone()),
                Payload::Chunks(c) => ReqBody::Stream {
                    len: c.iter().map(|c| c.len() as u64).sum(),
                    stream: box_stream(futures::stream::iter(c.clone().into_iter().map(Ok))),
                },
            };
            let req = builder.body(body).map_err(bad)?;
            Ok(self.http.send_stream(req).await.map(|r| {
                let (parts, body) = r.into_parts();
                Resp {
                    status: parts.status,
                    headers: parts.headers,
                    body: RespBody::Stream(body),
                }
            }))
        } else {
            let body = match &call.payload {
                Payload::Bytes(b) => b.clone(),
                _ => Bytes::new(),
            };
            let req = builder.body(body).map_err(bad)?;
            Ok(self.http.send_limited(req, MAX_API_ANSWER).await.map(|r| {
                let (parts, body) = r.into_parts();
                Resp {
                    status: parts.status,
                    headers: parts.headers,
                    body: RespBody::Full(body),
                }
            }))
        }
    }

    /// Send `call`, retrying transient failures. `Ok(Err(_))` is S3's answer when it is an
    /// error that is not worth retrying (or no longer: then the failure is a 5xx or throttle).
    ///
    /// A retried create-only write whose first attempt did succeed (the answer was lost)
    /// reports `AlreadyExists`, as with any S3 client: callers of create-only writes of
    /// documents compare bytes on `AlreadyExists`.
    async fn exec_raw(&self, call: &Call<'_>) -> StoreResult<Result<Resp, Failure>> {
        let url = self.url(call.bucket, call.key, &call.query);
        let mut headers = call.headers.clone();
        let payload_hash = match &call.payload {
            Payload::Empty => Some(EMPTY_SHA256.to_string()),
            Payload::Bytes(b) => Some(sha256_hex(b)),
            Payload::Chunks(c) => {
                headers.push(("content-md5".to_string(), md5_base64(c)));
                None
            }
        };
        let started = self.clock.now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let problem = match self.attempt(call, &url, &headers, payload_hash.as_deref()).await? {
                Ok(resp) if resp.status.is_success() && !call.error_in_200 => return Ok(Ok(resp)),
                Ok(resp) if resp.status.is_success() => {
                    // Copies and completions can fail after the 200 header went out.
                    let status = resp.status;
                    let hdrs = resp.headers.clone();
                    match resp.bytes().await {
                        Ok(body) if xml_root(&body).as_deref() == Some("Error") => {
                            // Classified by its code alone (InternalError and SlowDown are retried).
                            let f = Failure::parse(status, &body);
                            if !f.retryable() {
                                return Ok(Err(f));
                            }
                            f.describe()
                        }
                        Ok(body) => {
                            return Ok(Ok(Resp {
                                status,
                                headers: hdrs,
                                body: RespBody::Full(body),
                            }))
                        }
                        Err(HttpError::TooLarge(limit)) => return Err(too_large(&call.target(), limit)),
                        Err(e) => e.to_string(),
                    }
                }
                Ok(resp) => {
                    let status = resp.status;
                    let body = resp.error_body().await;
                    let f = Failure::parse(status, &body);
                    if !f.retryable() {
                        return Ok(Err(f));
                    }
                    f.describe()
                }
                // Asking again would bring the same answer.
                Err(HttpError::TooLarge(limit)) => return Err(too_large(&call.target(), limit)),
                Err(e) => e.to_string(),
            };
            let delay = backoff(attempt);
            let elapsed = (self.clock.now() - started).to_std().unwrap_or_default();
            if !super::retry::may_retry(attempt, elapsed, delay) {
                return Err(StoreError::Unavailable(format!(
                    "S3 {} {}: {problem} (gave up after {attempt} attempts in {:.1} s)",
                    call.method,
                    call.target(),
                    elapsed.as_secs_f64()
                )));
            }
            tracing::warn!(method = %call.method, target = %call.target(), attempt, %problem, "S3 request failed; retrying");
            self.sleeper.sleep(delay).await;
        }
    }

    /// Send `call`; any error answer becomes a [`StoreError`].
    async fn exec(&self, call: &Call<'_>, what: &str) -> StoreResult<Resp> {
        self.exec_raw(call)
            .await?
            .map_err(|f| f.into_store_error(what, call.target()))
    }

    /// Send `call` and read its (small) response body.
    async fn exec_body(&self, call: &Call<'_>, what: &str) -> StoreResult<(HeaderMap, Bytes)> {
        let resp = self.exec(call, what).await?;
        let headers = resp.headers.clone();
        let body = resp.bytes().await.map_err(|e| match e {
            HttpError::TooLarge(limit) => too_large(&call.target(), limit),
            e => StoreError::Unavailable(format!("S3 {what} {}: {e}", call.target())),
        })?;
        Ok((headers, body))
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
        }
    }

    /// HEAD of `key` in `bucket` (this store's or another's).
    async fn head_in(&self, bucket: &str, key: &str) -> StoreResult<ObjectMeta> {
        check_addressable(key)?;
        let resp = self
            .exec(&Call::new(Method::HEAD, bucket, Some(key)), "HeadObject")
            .await?;
        let size = resp
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| StoreError::Other(format!("S3 HeadObject {key}: no Content-Length")))?;
        Ok(self.meta_of(&resp.headers, size))
    }

    async fn exists(&self, key: &str) -> StoreResult<bool> {
        match self.head_in(&self.cfg.bucket, key).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn create_multipart(&self, key: &str, headers: Vec<(String, String)>) -> StoreResult<String> {
        let call = Call::new(Method::POST, &self.cfg.bucket, Some(key))
            .query("uploads", "")
            .headers(headers);
        let (_, body) = self.exec_body(&call, "CreateMultipartUpload").await?;
        Ok(parse_xml::<InitiateXml>(&body, "CreateMultipartUpload")?.upload_id)
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        if_absent: bool,
    ) -> StoreResult<()> {
        let mut xml = String::from("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
        for (n, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                quick_xml::escape::escape(etag.as_str())
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let mut call = Call::new(Method::POST, &self.cfg.bucket, Some(key))
            .query("uploadId", upload_id)
            .payload(Payload::Bytes(Bytes::from(xml)));
        // moto 5.2.5 honours If-None-Match on CompleteMultipartUpload, like S3.
        if if_absent {
            call = call.header("if-none-match", "*");
        }
        call.long = true;
        call.error_in_200 = true;
        match self.exec_body(&call, "CompleteMultipartUpload").await {
            Ok(_) => Ok(()),
            // A retry after a completion whose answer was lost finds the upload gone: the
            // object exists now. Report what a create-only caller would have been told.
            Err(StoreError::NotFound(e)) => match self.head(key).await {
                Ok(_) if if_absent => Err(StoreError::AlreadyExists(key.to_string())),
                Ok(_) => Ok(()),
                Err(_) => Err(StoreError::NotFound(e)),
            },
            Err(e) => Err(e),
        }
    }

    /// Best effort: a failed abort leaves an invisible upload for the bucket's lifecycle rules.
    async fn abort_multipart(&self, key: &str, upload_id: &str) {
        let call = Call::new(Method::DELETE, &self.cfg.bucket, Some(key)).query("uploadId", upload_id);
        if let Err(e) = self.exec(&call, "AbortMultipartUpload").await {
            if !matches!(e, StoreError::NotFound(_)) {
                tracing::warn!(key, upload_id, error = %e, "S3 AbortMultipartUpload failed");
            }
        }
    }

    /// Upload the parts of `reader`, starting with `first`, and complete the upload.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: (Vec<Bytes>, usize),
        reader: &mut PartReader,
        if_absent: bool,
    ) -> StoreResult<u64> {
        let mut parts: Vec<(u32, String)> = Vec::new();
        let mut total = 0u64;
        let mut part = first;
        loop {
            let n = parts.len() as u32 + 1;
            total += part.1 as u64;
            let call = Call::new(Method::PUT, &self.cfg.bucket, Some(key))
                .query("partNumber", n.to_string())
                .query("uploadId", upload_id)
                .payload(Payload::Chunks(part.0));
            let resp = self.exec(&call, "UploadPart").await?;
            let etag = resp
                .header("etag")
                .ok_or_else(|| StoreError::Other(format!("S3 UploadPart {key}: no ETag")))?
                .to_string();
            drop(call);
            parts.push((n, etag));
            if reader.at_end().await.map_err(stream_error)? {
                break;
            }
            let size = PART_SIZE << (parts.len() / 1000).min(6);
            part = reader.next_part(size).await.map_err(stream_error)?;
        }
        self.complete_multipart(key, upload_id, &parts, if_absent).await?;
        Ok(total)
    }

    /// Copy `src_key` of `src_bucket` to `dst_key` here. Content type and metadata come
    /// from the source unless `opts` gives them; create-only when `opts.if_absent`.
    async fn copy_object(&self, src_bucket: &str, src_key: &str, dst_key: &str, opts: PutOptions) -> StoreResult<()> {
        check_key(dst_key)?;
        let src = self.head_in(src_bucket, src_key).await?;
        let replace = opts.content_type.is_some() || !opts.metadata.is_empty();
        let content_type = opts.content_type.or(src.content_type);
        let metadata = if opts.metadata.is_empty() {
            src.metadata
        } else {
            opts.metadata
        };
        let copy_source = format!("{src_bucket}/{}", utf8_percent_encode(src_key, PATH_ENCODE));
        if src.size > self.copy_max {
            return self
                .multipart_copy(&copy_source, src.size, dst_key, content_type, metadata, opts.if_absent)
                .await;
        }
        // moto 5.2.5 ignores If-None-Match on CopyObject (S3 honours it atomically): check
        // just before copying as well. Against moto, a create-only copy racing another
        // writer of the same key can therefore overwrite it.
        if opts.if_absent && self.exists(dst_key).await? {
            return Err(StoreError::AlreadyExists(dst_key.to_string()));
        }
        let mut call = Call::new(Method::PUT, &self.cfg.bucket, Some(dst_key)).header("x-amz-copy-source", copy_source);
        if opts.if_absent {
            call = call.header("if-none-match", "*");
        }
        if replace {
            call = call
                .header("x-amz-metadata-directive", "REPLACE")
                .headers(write_headers(content_type.as_deref(), &metadata)?);
        }
        call.long = true;
        call.error_in_200 = true;
        self.exec_body(&call, "CopyObject").await.map(|_| ())
    }

    /// Copy an object of `size` bytes in parts (UploadPartCopy), for objects over 5 GiB.
    async fn multipart_copy(
        &self,
        copy_source: &str,
        size: u64,
        dst_key: &str,
        content_type: Option<String>,
        metadata: BTreeMap<String, String>,
        if_absent: bool,
    ) -> StoreResult<()> {
        if if_absent && self.exists(dst_key).await? {
            // Early, to spare the copy; CompleteMultipartUpload checks again, atomically.
            return Err(StoreError::AlreadyExists(dst_key.to_string()));
        }
        let upload_id = self
            .create_multipart(dst_key, write_headers(content_type.as_deref(), &metadata)?)
            .await?;
        let result = async {
            let ranges: Vec<(u32, u64, u64)> = (0..)
                .map(|i: u64| (i, i * self.copy_part))
                .take_while(|(_, start)| *start < size)
                .map(|(i, start)| (i as u32 + 1, start, (start + self.copy_part).min(size)))
                .collect();
            let parts: Vec<StoreResult<(u32, String)>> = futures::stream::iter(ranges)
                .map(|(n, start, end)| self.upload_part_copy(copy_source, dst_key, &upload_id, n, start, end))
                .buffered(COPY_CONCURRENCY)
                .collect()
                .await;
            let parts = parts.into_iter().collect::<StoreResult<Vec<_>>>()?;
            self.complete_multipart(dst_key, &upload_id, &parts, if_absent).await
        }
        .await;
        if result.is_err() {
            self.abort_multipart(dst_key, &upload_id).await;
        }
        result
    }

    async fn upload_part_copy(
        &self,
        copy_source: &str,
        dst_key: &str,
        upload_id: &str,
        n: u32,
        start: u64,
        end: u64,
    ) -> StoreResult<(u32, String)> {
        let mut call = Call::new(Method::PUT, &self.cfg.bucket, Some(dst_key))
            .query("partNumber", n.to_string())
            .query("uploadId", upload_id)
            .header("x-amz-copy-source", copy_source)
            .header("x-amz-copy-source-range", format!("bytes={start}-{}", end - 1));
        call.long = true;
        call.error_in_200 = true;
        let (_, body) = self.exec_body(&call, "UploadPartCopy").await.map_err(|e| match e {
            // A 412 here concerns the source, not the destination.
            StoreError::AlreadyExists(_) => {
                StoreError::Other(format!("S3 UploadPartCopy {dst_key}: precondition failed"))
            }
            e => e,
        })?;
        Ok((n, parse_xml::<CopyResultXml>(&body, "UploadPartCopy")?.etag))
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
            .headers(write_headers(opts.content_type.as_deref(), &opts.metadata)?)
            .payload(Payload::Bytes(data));
        // moto 5.2.5 honours If-None-Match on PutObject, like S3.
        if opts.if_absent {
            call = call.header("if-none-match", "*");
        }
        self.exec(&call, "PutObject").await.map(|_| ())
    }

    async fn put_stream(&self, key: &str, data: ByteStream, opts: PutOptions) -> StoreResult<u64> {
        check_key(key)?;
        let headers = write_headers(opts.content_type.as_deref(), &opts.metadata)?;
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
