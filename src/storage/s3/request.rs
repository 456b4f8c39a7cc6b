//! One S3 request: its parts, SigV4 signing, sending with the shared retry policy, and
//! S3's XML answers (errors included).

use super::*;

/// A request body. Every variant can be sent again on retry.
pub(super) enum Payload {
    Empty,
    /// Signed with its SHA-256.
    Bytes(Bytes),
    /// Sent as a stream with `UNSIGNED-PAYLOAD` and a `Content-MD5` (parts of a stream).
    Chunks(Vec<Bytes>),
}

/// One S3 API request.
pub(super) struct Call<'a> {
    pub(super) method: Method,
    pub(super) bucket: &'a str,
    pub(super) key: Option<&'a str>,
    pub(super) query: Vec<(&'static str, String)>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) payload: Payload,
    /// Hand the response body back as a stream (object downloads).
    pub(super) stream_response: bool,
    /// May take long (copies): use the streaming client, which has no whole-request timeout.
    pub(super) long: bool,
    /// S3 may answer 200 with an `<Error>` body (CopyObject, UploadPartCopy, Complete).
    pub(super) error_in_200: bool,
}

impl<'a> Call<'a> {
    pub(super) fn new(method: Method, bucket: &'a str, key: Option<&'a str>) -> Self {
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
    pub(super) fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }
    pub(super) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
    pub(super) fn headers(mut self, headers: Vec<(String, String)>) -> Self {
        self.headers.extend(headers);
        self
    }
    pub(super) fn payload(mut self, payload: Payload) -> Self {
        self.payload = payload;
        self
    }
    /// What the request is about, for error messages.
    pub(super) fn target(&self) -> String {
        match self.key {
            Some(k) => k.to_string(),
            None => self.bucket.to_string(),
        }
    }
}

pub(super) enum RespBody {
    Full(Bytes),
    Stream(ByteStream),
}

/// Header names or query parameter names from the signer, with their values.
type Signed = Vec<(&'static str, String)>;

/// A response from S3.
pub(super) struct Resp {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: RespBody,
}

impl Resp {
    /// The whole body of an answer (an XML document), refused past [`MAX_API_ANSWER`].
    pub(super) async fn bytes(self) -> Result<Bytes, HttpError> {
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
    pub(super) async fn error_body(self) -> Bytes {
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
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An S3 error response.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) status: StatusCode,
    pub(super) code: Option<String>,
    pub(super) message: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct ErrorXml {
    #[serde(rename = "Code")]
    pub(super) code: Option<String>,
    #[serde(rename = "Message")]
    pub(super) message: Option<String>,
}

impl Failure {
    pub(super) fn parse(status: StatusCode, body: &[u8]) -> Self {
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

    pub(super) fn retryable(&self) -> bool {
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

    pub(super) fn describe(&self) -> String {
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

    pub(super) fn into_store_error(self, what: &str, target: String) -> StoreError {
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
pub(super) fn xml_root(body: &[u8]) -> Option<String> {
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

pub(super) fn parse_xml<'de, X: Deserialize<'de>>(body: &'de [u8], what: &str) -> StoreResult<X> {
    let text =
        std::str::from_utf8(body).map_err(|e| StoreError::Other(format!("S3 {what}: response not UTF-8: {e}")))?;
    quick_xml::de::from_str(text).map_err(|e| StoreError::Other(format!("S3 {what}: unexpected response: {e}")))
}

#[derive(Deserialize)]
pub(super) struct ListBucketResultXml {
    #[serde(rename = "Contents", default)]
    pub(super) contents: Vec<ListEntryXml>,
    #[serde(rename = "IsTruncated", default)]
    pub(super) is_truncated: bool,
    #[serde(rename = "NextContinuationToken")]
    pub(super) next_continuation_token: Option<String>,
    #[serde(rename = "EncodingType")]
    pub(super) encoding_type: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct ListEntryXml {
    #[serde(rename = "Key")]
    pub(super) key: String,
}

#[derive(Deserialize)]
pub(super) struct InitiateXml {
    #[serde(rename = "UploadId")]
    pub(super) upload_id: String,
}

#[derive(Deserialize)]
pub(super) struct CopyResultXml {
    #[serde(rename = "ETag")]
    pub(super) etag: String,
}

#[derive(Deserialize)]
pub(super) struct TaggingXml {
    #[serde(rename = "TagSet", default)]
    pub(super) tag_set: TagSetXml,
}

#[derive(Deserialize, Default)]
pub(super) struct TagSetXml {
    #[serde(rename = "Tag", default)]
    pub(super) tags: Vec<TagXml>,
}

#[derive(Deserialize)]
pub(super) struct TagXml {
    #[serde(rename = "Key")]
    pub(super) key: String,
    #[serde(rename = "Value", default)]
    pub(super) value: Option<String>,
}

pub(super) fn md5_base64(chunks: &[Bytes]) -> String {
    let mut h = md5::Md5::new();
    for c in chunks {
        h.update(c);
    }
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

pub(super) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

impl<H: HttpClient, T: Sleeper> S3Store<H, T> {
    pub(super) fn signing_time(&self) -> std::time::SystemTime {
        let now = self.clock.now();
        let secs = u64::try_from(now.timestamp()).unwrap_or(0);
        std::time::UNIX_EPOCH + Duration::new(secs, now.timestamp_subsec_nanos().min(999_999_999))
    }

    /// SigV4 headers (`settings.signature_location == Headers`) or query parameters.
    pub(super) fn sign(
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

    pub(super) fn s3_settings() -> SigningSettings {
        let mut s = SigningSettings::default();
        s.percent_encoding_mode = PercentEncodingMode::Single;
        s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        s
    }

    /// One attempt: sign and send. `Err` of the outer result is not retryable.
    pub(super) async fn attempt(
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
    pub(super) async fn exec_raw(&self, call: &Call<'_>) -> StoreResult<Result<Resp, Failure>> {
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
    pub(super) async fn exec(&self, call: &Call<'_>, what: &str) -> StoreResult<Resp> {
        self.exec_raw(call)
            .await?
            .map_err(|f| f.into_store_error(what, call.target()))
    }

    /// Send `call` and read its (small) response body.
    pub(super) async fn exec_body(&self, call: &Call<'_>, what: &str) -> StoreResult<(HeaderMap, Bytes)> {
        let resp = self.exec(call, what).await?;
        let headers = resp.headers.clone();
        let body = resp.bytes().await.map_err(|e| match e {
            HttpError::TooLarge(limit) => too_large(&call.target(), limit),
            e => StoreError::Unavailable(format!("S3 {what} {}: {e}", call.target())),
        })?;
        Ok((headers, body))
    }
}
