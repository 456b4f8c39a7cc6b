//! Multipart uploads (streams of unknown length, in parts) and copies (CopyObject, and
//! UploadPartCopy for objects over 5 GiB).

use super::*;

/// Reads a stream of unknown length in parts.
pub(super) struct PartReader {
    pub(super) stream: ByteStream,
    pub(super) carry: Option<Bytes>,
    pub(super) done: bool,
}

impl PartReader {
    /// The next `size` bytes (fewer at the end), as chunks, and their count.
    pub(super) async fn next_part(&mut self, size: usize) -> std::io::Result<(Vec<Bytes>, usize)> {
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
    pub(super) async fn at_end(&mut self) -> std::io::Result<bool> {
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

pub(super) fn stream_error(e: std::io::Error) -> StoreError {
    StoreError::Other(format!("reading the upload stream: {e}"))
}

impl<H: HttpClient, T: Sleeper> S3Store<H, T> {
    pub(super) async fn create_multipart(&self, key: &str, headers: Vec<(String, String)>) -> StoreResult<String> {
        let call = Call::new(Method::POST, &self.cfg.bucket, Some(key))
            .query("uploads", "")
            .headers(headers);
        let (_, body) = self.exec_body(&call, "CreateMultipartUpload").await?;
        Ok(parse_xml::<InitiateXml>(&body, "CreateMultipartUpload")?.upload_id)
    }

    pub(super) async fn complete_multipart(
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
    pub(super) async fn abort_multipart(&self, key: &str, upload_id: &str) {
        let call = Call::new(Method::DELETE, &self.cfg.bucket, Some(key)).query("uploadId", upload_id);
        if let Err(e) = self.exec(&call, "AbortMultipartUpload").await {
            if !matches!(e, StoreError::NotFound(_)) {
                tracing::warn!(key, upload_id, error = %e, "S3 AbortMultipartUpload failed");
            }
        }
    }

    /// Upload the parts of `reader`, starting with `first`, and complete the upload.
    pub(super) async fn upload_parts(
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
    pub(super) async fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_key: &str,
        opts: PutOptions,
    ) -> StoreResult<()> {
        check_key(dst_key)?;
        let src = self.head_in(src_bucket, src_key).await?;
        let replace = opts.content_type.is_some() || !opts.metadata.is_empty();
        let expiring = opts.expiring;
        let content_type = opts.content_type.or(src.content_type);
        let metadata = if opts.metadata.is_empty() {
            src.metadata
        } else {
            opts.metadata
        };
        let copy_source = format!("{src_bucket}/{}", utf8_percent_encode(src_key, PATH_ENCODE));
        if src.size > self.copy_max {
            return self
                .multipart_copy(
                    &copy_source,
                    src.size,
                    dst_key,
                    (content_type, metadata, expiring),
                    opts.if_absent,
                )
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
        if replace || expiring {
            call = call
                .header("x-amz-metadata-directive", "REPLACE")
                .headers(write_headers(content_type.as_deref(), &metadata, false)?);
        }
        if expiring {
            call = call
                .header("x-amz-tagging-directive", "REPLACE")
                .header("x-amz-tagging", EXPIRING_TAG);
        }
        call.long = true;
        call.error_in_200 = true;
        self.exec_body(&call, "CopyObject").await.map(|_| ())
    }

    /// Copy an object of `size` bytes in parts (UploadPartCopy), for objects over 5 GiB.
    pub(super) async fn multipart_copy(
        &self,
        copy_source: &str,
        size: u64,
        dst_key: &str,
        (content_type, metadata, expiring): (Option<String>, BTreeMap<String, String>, bool),
        if_absent: bool,
    ) -> StoreResult<()> {
        if if_absent && self.exists(dst_key).await? {
            // Early, to spare the copy; CompleteMultipartUpload checks again, atomically.
            return Err(StoreError::AlreadyExists(dst_key.to_string()));
        }
        let upload_id = self
            .create_multipart(dst_key, write_headers(content_type.as_deref(), &metadata, expiring)?)
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

    pub(super) async fn upload_part_copy(
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
}
