//! Writes: `uploadType=multipart` for whole objects and small streams, resumable sessions
//! (chunks of [`CHUNK`], resumed from what the server says it holds) for large streams.

use super::*;

/// Streams up to this size are written with one multipart upload.
pub const SMALL_UPLOAD: usize = 8 * 1024 * 1024;
/// Chunk size of resumable uploads (GCS wants multiples of 256 KiB).
pub const CHUNK: usize = 32 * 256 * 1024;

/// Where a resumable chunk upload ended.
enum Chunk {
    /// The server holds bytes `0..n`; the upload continues.
    Persisted(u64),
    /// The object is written.
    Done,
}

/// The JSON object resource of a write.
pub(super) fn resource_json(
    name: Option<&str>,
    content_type: Option<&str>,
    metadata: &BTreeMap<String, String>,
    expiring: bool,
) -> String {
    let mut m = serde_json::Map::new();
    if expiring {
        // The storage class the original wrote checkout copies that expire in (the DSS
        // checkout buckets' default being MULTI_REGIONAL), which their lifecycle rule matches.
        m.insert("storageClass".into(), "STANDARD".into());
    }
    if let Some(n) = name {
        m.insert("name".into(), n.into());
    }
    if let Some(ct) = content_type {
        m.insert("contentType".into(), ct.into());
    }
    if !metadata.is_empty() {
        let md: serde_json::Map<String, serde_json::Value> =
            metadata.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        m.insert("metadata".into(), md.into());
    }
    serde_json::Value::Object(m).to_string()
}

/// A multipart boundary that does not occur in `data`.
fn boundary_for(data: &[u8]) -> String {
    loop {
        let b = format!(
            "dss-{:016x}{:016x}",
            rand_core::RngCore::next_u64(&mut rand_core::OsRng),
            rand_core::RngCore::next_u64(&mut rand_core::OsRng)
        );
        if !data.windows(b.len()).any(|w| w == b.as_bytes()) {
            return b;
        }
    }
}

impl<H: HttpClient, T: Sleeper> GcsStore<H, T> {
    fn upload_url(&self, kind: &str, if_absent: bool) -> String {
        let mut u = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType={kind}",
            self.endpoint,
            enc(&self.bucket)
        );
        if if_absent {
            u.push_str("&ifGenerationMatch=0");
        }
        u
    }

    /// One whole object in one request (object resource and bytes as `multipart/related`).
    pub(super) async fn multipart(&self, key: &str, data: Bytes, opts: &PutOptions) -> StoreResult<()> {
        let meta = resource_json(Some(key), opts.content_type.as_deref(), &opts.metadata, opts.expiring);
        let boundary = boundary_for(&data);
        let media_type = opts.content_type.as_deref().unwrap_or("application/octet-stream");
        if media_type.chars().any(|c| c.is_control()) {
            return Err(StoreError::Other(format!("content type of {key}: control characters")));
        }
        let mut body = BytesMut::with_capacity(data.len() + meta.len() + 256);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n").as_bytes(),
        );
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {media_type}\r\n\r\n").as_bytes());
        body.extend_from_slice(&data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let req = Req::new(Method::POST, self.upload_url("multipart", opts.if_absent))
            .header(header::CONTENT_TYPE, &format!("multipart/related; boundary={boundary}"))?
            .body(body.freeze())
            .upload();
        let resp = self.call(&req).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(status_error(key, resp.status(), resp.body()))
        }
    }

    /// `put_stream`: up to [`SMALL_UPLOAD`] bytes as one multipart upload, more through a
    /// resumable session that is cancelled if anything fails.
    pub(super) async fn upload_stream(&self, key: &str, mut data: ByteStream, opts: &PutOptions) -> StoreResult<u64> {
        let mut buf = BytesMut::new();
        while buf.len() <= SMALL_UPLOAD {
            match data.next().await {
                Some(Ok(b)) => buf.extend_from_slice(&b),
                Some(Err(e)) => return Err(StoreError::Other(format!("reading the upload of {key}: {e}"))),
                None => {
                    let n = buf.len() as u64;
                    self.multipart(key, buf.freeze(), opts).await?;
                    return Ok(n);
                }
            }
        }
        if opts.if_absent {
            self.refuse_existing(key).await?;
        }
        let session = self.start_session(key, opts).await?;
        match self.resumable(key, &session, buf, &mut data).await {
            Ok(n) => Ok(n),
            Err(e) => {
                // Dropping the session keeps the partial upload invisible for good.
                self.cancel_session(&session).await;
                Err(e)
            }
        }
    }

    /// Open a resumable upload session; returns its URI.
    async fn start_session(&self, key: &str, opts: &PutOptions) -> StoreResult<String> {
        let meta = resource_json(Some(key), opts.content_type.as_deref(), &opts.metadata, opts.expiring);
        let mut req = Req::new(Method::POST, self.upload_url("resumable", opts.if_absent))
            .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")?
            .body(meta);
        if let Some(ct) = &opts.content_type {
            req = req.header(HeaderName::from_static("x-upload-content-type"), ct)?;
        }
        let resp = self.call(&req).await?;
        if !resp.status().is_success() {
            return Err(status_error(key, resp.status(), resp.body()));
        }
        resp.headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| StoreError::Other(format!("resumable upload of {key}: no session URI")))
    }

    /// Send `data` as bytes `offset..` of the upload (`total` when this is the last piece).
    /// A failed attempt is followed by a status query, so the caller resumes from what
    /// the server actually holds.
    async fn upload_chunk(
        &self,
        key: &str,
        session: &str,
        offset: u64,
        data: Bytes,
        total: Option<u64>,
    ) -> StoreResult<Chunk> {
        let total_s = total.map_or_else(|| "*".to_string(), |t| t.to_string());
        let put = if data.is_empty() {
            format!("bytes */{total_s}")
        } else {
            format!("bytes {}-{}/{total_s}", offset, offset + data.len() as u64 - 1)
        };
        let put = Req::new(Method::PUT, session.to_string())
            .header(header::CONTENT_RANGE, &put)?
            .body(data)
            .upload();
        let query =
            Req::new(Method::PUT, session.to_string()).header(header::CONTENT_RANGE, &format!("bytes */{total_s}"))?;
        let mut attempt = 0;
        let started = self.clock.now();
        let mut req = &put;
        loop {
            let token = self.access_token().await?;
            let last = match self.exchange(req, token.as_deref()).await? {
                Err(HttpError::TooLarge(limit)) => return Err(too_large(key, limit)),
                Ok(resp) if resp.status().is_success() => return Ok(Chunk::Done),
                Ok(resp) if resp.status().as_u16() == 308 => {
                    let held = resp
                        .headers()
                        .get(header::RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|r| r.strip_prefix("bytes=0-"))
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .map_or(0, |n| n.saturating_add(1));
                    return Ok(Chunk::Persisted(held));
                }
                Ok(resp) if !retryable(resp.status()) && resp.status() != StatusCode::UNAUTHORIZED => {
                    return Err(status_error(key, resp.status(), resp.body()))
                }
                Ok(resp) => {
                    if let (StatusCode::UNAUTHORIZED, Some(rejected)) = (resp.status(), &token) {
                        self.forget_token(rejected);
                    }
                    format!("upload of {key} answered {}: {}", resp.status(), text(resp.body()))
                }
                Err(e) => format!("upload of {key}: {e}"),
            };
            self.retry_or_give_up(
                &mut attempt,
                started,
                &last,
                "GCS upload chunk failed, asking what arrived",
            )
            .await?;
            req = &query;
        }
    }

    /// The resumable part of `put_stream`: `buf` holds what was read so far (more than
    /// [`SMALL_UPLOAD`]), `data` the rest.
    async fn resumable(&self, key: &str, session: &str, mut buf: BytesMut, data: &mut ByteStream) -> StoreResult<u64> {
        let mut offset: u64 = 0; // bytes the server holds; `buf` starts there
        let mut ended = false;
        let mut stalled = 0u32;
        loop {
            // Fill until more than a chunk is buffered (so a full chunk is never the last).
            while !ended && buf.len() <= CHUNK {
                match data.next().await {
                    Some(Ok(b)) => buf.extend_from_slice(&b),
                    Some(Err(e)) => return Err(StoreError::Other(format!("reading the upload of {key}: {e}"))),
                    None => ended = true,
                }
            }
            let (piece, total) = if ended {
                (buf.clone().freeze(), Some(offset + buf.len() as u64))
            } else {
                (Bytes::copy_from_slice(&buf[..CHUNK]), None)
            };
            let sent = piece.len() as u64;
            match self.upload_chunk(key, session, offset, piece, total).await? {
                Chunk::Done if ended => return Ok(offset + sent),
                Chunk::Done => return Err(StoreError::Other(format!("upload of {key} finished before its end"))),
                Chunk::Persisted(held) if held >= offset && held <= offset + sent => {
                    // A server that keeps taking nothing would have us resend forever.
                    stalled = if held == offset { stalled + 1 } else { 0 };
                    if stalled >= MAX_ATTEMPTS {
                        return Err(StoreError::Unavailable(format!(
                            "upload of {key} makes no progress at byte {offset}"
                        )));
                    }
                    let _ = buf.split_to((held - offset) as usize);
                    offset = held;
                }
                Chunk::Persisted(held) => {
                    return Err(StoreError::Other(format!(
                        "upload of {key}: server holds {held} bytes, expected {offset}..={}",
                        offset + sent
                    )))
                }
            }
        }
    }

    async fn cancel_session(&self, session: &str) {
        // GCS answers 499 to a cancelled session; failures here leave an unfinished
        // session, which GCS discards after a week and which is never visible.
        if let Err(e) = self.call(&Req::new(Method::DELETE, session.to_string())).await {
            tracing::warn!("cancelling a GCS upload session: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn multipart_put_carries_metadata_and_precondition() {
        let fake = Fake::new(|_| reply(200, "{}"));
        let (s, _) = store(&fake, None, Arc::new(ManualClock::at(t0())));
        let mut md = BTreeMap::new();
        md.insert("k".to_string(), "v".to_string());
        let opts = PutOptions {
            if_absent: true,
            content_type: Some("application/json".into()),
            metadata: md,
            expiring: false,
        };
        s.put("bundles/a b.1", Bytes::from_static(b"{\"x\": 1}"), opts)
            .await
            .unwrap();
        assert!(matches!(
            s.put("a//b", Bytes::new(), PutOptions::overwrite()).await,
            Err(StoreError::InvalidKey(_))
        ));
        let seen = fake.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "invalid keys never reach the network");
        let put = &seen[0];
        assert_eq!(
            put.url,
            "https://gcs.example/upload/storage/v1/b/bkt/o?uploadType=multipart&ifGenerationMatch=0"
        );
        let ct = put.header("content-type").unwrap();
        let boundary = ct.strip_prefix("multipart/related; boundary=").unwrap();
        let body = String::from_utf8(put.body.to_vec()).unwrap();
        let parts: Vec<&str> = body.split(&format!("--{boundary}")).collect();
        assert_eq!(parts.len(), 4, "{body}");
        let (head, json) = parts[1].split_once("\r\n\r\n").unwrap();
        assert!(head.contains("application/json"));
        let meta: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
        assert_eq!(
            meta,
            serde_json::json!({"name": "bundles/a b.1", "contentType": "application/json", "metadata": {"k": "v"}})
        );
        let (head, data) = parts[2].split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Content-Type: application/json"));
        assert_eq!(data, "{\"x\": 1}\r\n");
        assert_eq!(parts[3], "--\r\n");
    }

    /// A resumable-upload server: contiguous chunks only, multiples of 256 KiB except the
    /// last; the first chunk is persisted short, as GCS may do.
    #[derive(Default)]
    struct Session {
        content: Vec<u8>,
        chunks: usize,
        finished: bool,
        cancelled: bool,
        session_url: String,
    }

    fn session_server(state: Arc<Mutex<Session>>) -> Fake {
        Fake::new(move |s| {
            let mut st = state.lock().unwrap();
            if s.method == Method::GET {
                return reply(404, "no such object");
            }
            if s.method == Method::POST {
                st.session_url = s.url.clone();
                let meta: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
                assert_eq!(meta["name"], "blobs/big");
                assert_eq!(s.header("x-upload-content-type"), Some("application/x-test"));
                return Ok(http::Response::builder()
                    .status(200)
                    .header("location", "https://upload.example/session/1")
                    .body(Bytes::new())
                    .unwrap());
            }
            assert_eq!(s.url, "https://upload.example/session/1");
            if s.method == Method::DELETE {
                st.cancelled = true;
                return reply(499, "");
            }
            let range = s.header("content-range").unwrap();
            let (span, total) = range.strip_prefix("bytes ").unwrap().split_once('/').unwrap();
            let (a, b) = span.split_once('-').unwrap();
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(a, st.content.len(), "chunks are contiguous");
            assert_eq!(b + 1 - a, s.body.len());
            let keep = if st.chunks == 0 { 256 * 1024 } else { s.body.len() };
            st.chunks += 1;
            if total == "*" {
                assert_eq!(s.body.len() % (256 * 1024), 0, "non-final chunks are 256 KiB multiples");
            }
            st.content.extend_from_slice(&s.body[..keep]);
            if total != "*" && st.content.len() == total.parse::<usize>().unwrap() {
                st.finished = true;
                return reply(200, "{}");
            }
            Ok(http::Response::builder()
                .status(308)
                .header("range", format!("bytes=0-{}", st.content.len() - 1))
                .body(Bytes::new())
                .unwrap())
        })
    }

    fn odd_stream(data: &[u8], fail_at: Option<usize>) -> ByteStream {
        let mut items: Vec<std::io::Result<Bytes>> = Vec::new();
        let mut at = 0;
        for n in [1usize, 999_983, 3_000_017, 65_537].iter().cycle() {
            if at >= data.len() {
                break;
            }
            if fail_at.is_some_and(|f| at >= f) {
                items.push(Err(std::io::Error::other("peer reset")));
                break;
            }
            let n = (*n).min(data.len() - at);
            items.push(Ok(Bytes::copy_from_slice(&data[at..at + n])));
            at += n;
        }
        box_stream(futures::stream::iter(items))
    }

    #[tokio::test]
    async fn resumable_uploads_resend_what_was_not_persisted() {
        let data: Vec<u8> = (0..SMALL_UPLOAD * 2 + 777).map(|i| (i % 253) as u8).collect();
        let state = Arc::new(Mutex::new(Session::default()));
        let fake = session_server(state.clone());
        let (s, _) = store(&fake, None, Arc::new(ManualClock::at(t0())));
        let opts = PutOptions {
            content_type: Some("application/x-test".into()),
            ..PutOptions::if_absent()
        };
        let n = s.put_stream("blobs/big", odd_stream(&data, None), opts).await.unwrap();
        assert_eq!(n, data.len() as u64);
        let st = state.lock().unwrap();
        assert!(st.finished && !st.cancelled);
        assert!(st.content == data, "the server holds exactly the stream's bytes");
        assert!(st.session_url.ends_with("uploadType=resumable&ifGenerationMatch=0"));
    }

    #[tokio::test]
    async fn a_failing_stream_cancels_its_session() {
        let data: Vec<u8> = vec![7; SMALL_UPLOAD * 2];
        let state = Arc::new(Mutex::new(Session::default()));
        let fake = session_server(state.clone());
        let (s, _) = store(&fake, None, Arc::new(ManualClock::at(t0())));
        let opts = PutOptions {
            content_type: Some("application/x-test".into()),
            ..PutOptions::overwrite()
        };
        let r = s.put_stream("blobs/big", odd_stream(&data, Some(10 << 20)), opts).await;
        assert!(matches!(r, Err(StoreError::Other(_))), "{r:?}");
        let st = state.lock().unwrap();
        assert!(st.chunks > 0, "a chunk was sent before the failure");
        assert!(st.cancelled && !st.finished);
    }
}
