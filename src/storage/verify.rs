//! A byte stream that checks its own checksums: it hashes what passes through and,
//! at the end, fails instead of finishing if the bytes were not the expected ones.
//! Every [`super::Store`] discards a write whose stream fails, so wrong bytes never
//! become visible at a content-addressed key, not even for a moment.

use crate::model::checksum::{ChecksumHasher, Checksums};
use crate::model::platform::{box_stream, ByteStream};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Streams at least this large are hashed on two threads (MD5, the slowest of the four,
/// on one; sha256, sha1 and crc32c on the other).
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_FROM: u64 = 8 * 1024 * 1024;

/// Computes the four checksums of a stream, on two threads where that pays.
pub enum Hasher {
    /// On the calling thread.
    Sequential(Box<ChecksumHasher>),
    /// On two worker threads.
    #[cfg(not(target_arch = "wasm32"))]
    Parallel(ParallelHasher),
}

impl Hasher {
    /// A hasher for a stream of `size` bytes.
    pub fn new(size: u64) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        if size >= PARALLEL_FROM {
            if let Some(p) = ParallelHasher::new(size) {
                return Hasher::Parallel(p);
            }
        }
        Hasher::Sequential(Box::new(ChecksumHasher::new(size)))
    }

    /// Feed a chunk.
    pub fn update(&mut self, chunk: &bytes::Bytes) {
        match self {
            Hasher::Sequential(h) => h.update(chunk),
            #[cfg(not(target_arch = "wasm32"))]
            Hasher::Parallel(p) => p.update(chunk),
        }
    }

    /// The checksums of everything fed, and the byte count.
    pub fn finish(self) -> (Checksums, u64) {
        match self {
            Hasher::Sequential(h) => {
                let n = h.size();
                (h.finish(), n)
            }
            #[cfg(not(target_arch = "wasm32"))]
            Hasher::Parallel(p) => p.finish(),
        }
    }
}

/// The two halves of [`ChecksumHasher`] on two threads, fed through bounded channels
/// (chunks are `Bytes`, so feeding both costs two reference counts, not two copies).
#[cfg(not(target_arch = "wasm32"))]
pub struct ParallelHasher {
    to_etag: std::sync::mpsc::SyncSender<bytes::Bytes>,
    to_sha: std::sync::mpsc::SyncSender<bytes::Bytes>,
    etag: std::thread::JoinHandle<String>,
    sha: std::thread::JoinHandle<crate::model::checksum::ShaHasher>,
}

#[cfg(not(target_arch = "wasm32"))]
impl ParallelHasher {
    /// Start the two threads; `None` if threads cannot be made.
    pub fn new(size: u64) -> Option<Self> {
        use std::sync::mpsc::sync_channel;
        let (etag_h, mut sha_h) = ChecksumHasher::new(size).into_parts();
        let (to_etag, etag_rx) = sync_channel::<bytes::Bytes>(16);
        let (to_sha, sha_rx) = sync_channel::<bytes::Bytes>(16);
        let etag = std::thread::Builder::new()
            .name("dss-md5".into())
            .spawn(move || {
                let mut h = etag_h;
                for c in etag_rx {
                    h.update(&c);
                }
                h.finish()
            })
            .ok()?;
        let sha = std::thread::Builder::new()
            .name("dss-sha".into())
            .spawn(move || {
                for c in sha_rx {
                    sha_h.update(&c);
                }
                sha_h
            })
            .ok()?;
        Some(ParallelHasher {
            to_etag,
            to_sha,
            etag,
            sha,
        })
    }

    /// Feed a chunk (waits if the threads are 16 chunks behind).
    pub fn update(&self, chunk: &bytes::Bytes) {
        for tx in [&self.to_etag, &self.to_sha] {
            if let Err(std::sync::mpsc::TrySendError::Full(c)) = tx.try_send(chunk.clone()) {
                let _ = blocking(|| tx.send(c));
            }
        }
    }

    /// Wait for both halves and combine them.
    pub fn finish(self) -> (Checksums, u64) {
        drop(self.to_etag);
        drop(self.to_sha);
        let (etag, sha) = blocking(|| (self.etag.join().unwrap_or_default(), self.sha.join()));
        match sha {
            Ok(sha) => {
                let n = sha.size();
                (sha.finish(etag), n)
            }
            // A hashing thread cannot panic on any input; if it did, report no match.
            Err(_) => (
                Checksums {
                    sha256: String::new(),
                    sha1: String::new(),
                    s3_etag: etag,
                    crc32c: String::new(),
                },
                0,
            ),
        }
    }
}

/// Run `f`, which may block, without stalling the other tasks of a multi-thread tokio
/// runtime (they move to other workers meanwhile); plainly elsewhere.
#[cfg(not(target_arch = "wasm32"))]
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

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
    let hasher = Arc::new(Mutex::new(Some(Hasher::new(size))));
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
            .map(|h| h.finish().0);
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

    #[test]
    fn parallel_equals_sequential() {
        let data: Vec<u8> = (0..(20 * 1024 * 1024 + 7))
            .map(|i: usize| (i * 31 % 253) as u8)
            .collect();
        let mut h = Hasher::new(data.len() as u64);
        assert!(matches!(h, Hasher::Parallel(_)));
        for c in data.chunks(300_001) {
            h.update(&Bytes::copy_from_slice(c));
        }
        let (got, n) = h.finish();
        assert_eq!(n, data.len() as u64);
        assert_eq!(got, checksums_of(&data));
    }
}
