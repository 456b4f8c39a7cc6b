//! The one streamed, verified write: bytes read from one store are written to another
//! through this process, counted as they pass and checked against the checksums they must
//! have before the destination's object is completed. Ingest, replication and checkout
//! all copy this way when no server-side copy can be made.

use crate::model::platform::ByteStream;
use crate::model::{Checksums, ProgressCounter};
use crate::storage::{PutOptions, Store, StoreError};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How a verified write failed.
#[derive(Debug)]
pub enum PutVerifiedError {
    /// The bytes were not the ones the checksums name: nothing was written.
    Mismatch,
    /// Reading the source failed part way (a connection reset): worth another try.
    Source(StoreError),
    /// The destination refused or failed (`AlreadyExists` for a create-only write).
    Destination(StoreError),
}

impl PutVerifiedError {
    /// The bucket's error for a failed copy of blob `blob_key` read from replica `source`:
    /// a mismatch is for good, a source read that broke may pass.
    pub fn about(self, blob_key: &str, source: &str) -> super::BucketError {
        use super::BucketError;
        match self {
            PutVerifiedError::Mismatch => BucketError::ChecksumMismatch(format!(
                "the bytes of {blob_key} in replica {source} do not match their content address"
            )),
            PutVerifiedError::Source(e) => BucketError::Store(StoreError::Unavailable(format!(
                "reading {blob_key} from replica {source}: {e}"
            ))),
            PutVerifiedError::Destination(e) => e.into(),
        }
    }
}

/// Write `stream` (of `size` bytes whose checksums must be `expected`) to `key` of `dst`
/// with `opts`, counting the bytes into `progress`; the bytes written.
pub async fn put_verified<S: Store>(
    dst: &S,
    key: &str,
    stream: ByteStream,
    size: u64,
    expected: &Checksums,
    opts: PutOptions,
    progress: &Arc<ProgressCounter>,
) -> Result<u64, PutVerifiedError> {
    let counter = progress.clone();
    let source_failed = Arc::new(AtomicBool::new(false));
    let failed = source_failed.clone();
    let stream: ByteStream = Box::pin(stream.inspect(move |c| match c {
        Ok(b) => counter.add(0, b.len() as u64),
        Err(_) => failed.store(true, Ordering::SeqCst),
    }));
    let (stream, mismatch) = crate::storage::verify::verified(stream, size, expected.clone());
    match dst.put_stream(key, stream, opts).await {
        Ok(n) => Ok(n),
        Err(_) if mismatch.is_set() => Err(PutVerifiedError::Mismatch),
        Err(e) if source_failed.load(Ordering::SeqCst) => Err(PutVerifiedError::Source(e)),
        Err(e) => Err(PutVerifiedError::Destination(e)),
    }
}
