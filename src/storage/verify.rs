//! A byte stream that checks its own checksums: it hashes what passes through and,
//! at the end, fails instead of finishing if the bytes were not the expected ones.
//! Every [`super::Store`] discards a write whose stream fails, so wrong bytes never
//! become visible at a content-addressed key, not even for a moment.

use crate::model::checksum::{ChecksumHasher, Checksums};
use crate::model::platform::{box_stream, ByteStream};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Set when a [`verified`] stream found a mismatch.
#[derive(Debug, Clone, Default)]
pub struct MismatchFlag(Arc<AtomicBool>);

impl MismatchFlag {
    /// Whether the stream ended with a mismatch.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Wrap `inner` (of `size` bytes) so that it ends with an error unless its bytes have
/// checksums `expected`.
pub fn verified(inner: ByteStream, size: u64, expected: Checksums) -> (ByteStream, MismatchFlag) {
    let hasher = Arc::new(Mutex::new(Some(ChecksumHasher::new(size))));
    let flag = MismatchFlag::default();
    let (h_body, h_tail, f_tail) = (hasher.clone(), hasher, flag.clone());
    let body = inner.inspect(move |chunk| {
        if let (Ok(c), Some(h)) = (chunk, h_body.lock().unwrap_or_else(|e| e.into_inner()).as_mut()) {
            h.update(c);
        }
    });
    let tail = futures::stream::once(async move {
        let got = h_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(ChecksumHasher::finish);
        if got.as_ref() == Some(&expected) {
            None
        } else {
            f_tail.0.store(true, Ordering::SeqCst);
            Some(Err(std::io::Error::other("bytes do not match their checksums")))
        }
    })
    .filter_map(|x| async move { x });
    (box_stream(body.chain(tail)), flag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checksum::checksums_of;
    use bytes::Bytes;

    async fn drain(s: ByteStream) -> Result<Vec<u8>, std::io::Error> {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn passes_good_bytes_and_fails_bad_ones() {
        let good = checksums_of(b"hello world");
        let src = || {
            box_stream(futures::stream::iter(vec![
                Ok(Bytes::from_static(b"hello ")),
                Ok(Bytes::from_static(b"world")),
            ]))
        };
        let (s, flag) = verified(src(), 11, good.clone());
        assert_eq!(drain(s).await.unwrap(), b"hello world");
        assert!(!flag.is_set());
        let (s, flag) = verified(src(), 11, checksums_of(b"hello there"));
        assert!(drain(s).await.is_err());
        assert!(flag.is_set());
    }
}
