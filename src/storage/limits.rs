//! How much of an answer from a cloud store is read into memory. Buckets and their APIs
//! are upstreams we do not control: every whole body collected has a cap, and a larger
//! answer is [`StoreError::TooLarge`], never an allocation of whatever was sent.

use super::{StoreError, StoreResult};
use crate::model::platform::ByteStream;
use bytes::Bytes;
use futures::StreamExt;

/// Largest object [`super::Store::get`] reads whole (documents: file metadata, manifests,
/// tombstones, and the indexed JSON files the indexer reads, at most 16 MiB each). A
/// manifest of [`crate::api::dss::bundles::MAX_BUNDLE_FILES`] files is about 20 MiB; 64 MiB
/// also covers any manifest the original could write (its API gateway took bodies of up
/// to 10 MB). At the edge the cap is 32 MiB: a document and its parsed form must fit in
/// an isolate of 128 MB.
#[cfg(not(target_arch = "wasm32"))]
pub const MAX_DOCUMENT: usize = 64 << 20;
/// See the native constant.
#[cfg(target_arch = "wasm32")]
pub const MAX_DOCUMENT: usize = 32 << 20;

/// Largest answer of a storage API call that is not an object's bytes: listings (1000
/// keys of up to 1 KiB each, as JSON or XML), object resources, token and multipart
/// answers.
pub const MAX_API_ANSWER: usize = 8 << 20;

/// Error bodies are read up to this much (they are only quoted, cut to 512 characters).
pub const MAX_ERROR_BODY: usize = 16 << 10;

/// The error for an answer about `what` over `limit` bytes.
pub fn too_large(what: &str, limit: usize) -> StoreError {
    StoreError::TooLarge {
        key: what.to_string(),
        limit,
    }
}

/// The bytes of `stream` (announced as `declared` bytes, if known), refused past `limit`:
/// an announced size over the limit is refused before anything is read, and a stream
/// that runs past it is dropped at the chunk that crosses it. `read_error` turns a
/// failure of the stream into the caller's error.
pub async fn collect_limited(
    mut stream: ByteStream,
    declared: Option<u64>,
    limit: usize,
    what: &str,
    read_error: impl Fn(std::io::Error) -> StoreError,
) -> StoreResult<Bytes> {
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(what, limit));
    }
    // Trust the announced size for the allocation only as far as the limit.
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(&read_error)?;
        if out.len() + chunk.len() > limit {
            return Err(too_large(what, limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::platform::box_stream;

    fn chunks(n: usize, size: usize) -> ByteStream {
        box_stream(futures::stream::iter(
            (0..n).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; size]))),
        ))
    }

    #[tokio::test]
    async fn reads_up_to_the_limit_and_refuses_past_it() {
        let other = |e: std::io::Error| StoreError::Other(e.to_string());
        let got = collect_limited(chunks(4, 25), None, 100, "k", other).await.unwrap();
        assert_eq!(got.len(), 100);
        let e = collect_limited(chunks(5, 25), None, 100, "k", other).await.unwrap_err();
        assert!(matches!(e, StoreError::TooLarge { limit: 100, .. }), "{e:?}");
        // An announced size over the limit is refused before reading.
        let e = collect_limited(chunks(1, 1), Some(101), 100, "k", other)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::TooLarge { .. }));
        // A failing stream is the caller's error.
        let failing = box_stream(futures::stream::iter([Err::<Bytes, _>(std::io::Error::other("reset"))]));
        let e = collect_limited(failing, None, 100, "k", |e| StoreError::Unavailable(e.to_string()))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)));
    }
}
