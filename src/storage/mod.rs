//! Object storage: the [`Store`] trait every backend implements, and its
//! implementations. A replica is a pair of stores (main and checkout "buckets").
//!
//! Every backend must pass [`conformance`]: one suite, run against each.

pub mod cached;
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
#[cfg(not(target_arch = "wasm32"))]
pub mod fs;
pub mod gcs;
pub mod limits;
pub mod memory;
pub mod retry;
pub mod s3;
pub mod signer;
pub mod verify;

use crate::model::platform::ByteStream;
use crate::model::MaybeSend;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// Storage failures, by meaning. Backends map their native errors onto these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object at that key.
    #[error("object not found: {0}")]
    NotFound(String),
    /// A conditional put found the key taken.
    #[error("object already exists: {0}")]
    AlreadyExists(String),
    /// The key is not acceptable to this backend.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The requested byte range cannot be satisfied.
    #[error("range not satisfiable")]
    RangeNotSatisfiable,
    /// The backend's answer is larger than we read into memory ([`limits`]).
    #[error("answer too large: {key} is over {limit} bytes")]
    TooLarge {
        /// The object or call the answer was about.
        key: String,
        /// The cap it passed.
        limit: usize,
    },
    /// The backend is unavailable or failed; safe to retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("storage error: {0}")]
    Other(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Other(e.to_string())
    }
}

/// Result alias for storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// What `head` knows about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// Content type given at put, if any.
    pub content_type: Option<String>,
    /// User metadata given at put (S3 metadata/tags, GCS metadata).
    pub metadata: BTreeMap<String, String>,
    /// When the object was written.
    pub last_modified: DateTime<Utc>,
    /// The checksum the store computed of the bytes, where it computes one.
    pub checksum: Option<StoreChecksum>,
}

/// A checksum a store computes of an object's bytes by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChecksum {
    /// S3's ETag (without quotes): the MD5 of a single-part object, or of its parts' MD5s
    /// and `-N` for a multipart one.
    S3Etag(String),
    /// GCS's CRC32C, as 8 lowercase hex digits.
    Crc32c(String),
}

impl StoreChecksum {
    /// Whether bytes with this checksum can be those of `c` (`None`: it cannot tell).
    pub fn agrees_with(&self, c: &crate::model::Checksums) -> Option<bool> {
        match self {
            StoreChecksum::S3Etag(e) => c.agree_with_store(Some(e), None),
            StoreChecksum::Crc32c(crc) => c.agree_with_store(None, Some(crc)),
        }
    }
}

/// Options for a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Fail with [`StoreError::AlreadyExists`] if the key exists (atomic).
    pub if_absent: bool,
    /// Content type to record.
    pub content_type: Option<String>,
    /// User metadata to record.
    pub metadata: BTreeMap<String, String>,
    /// Marked for the bucket's lifecycle rule to delete by age (a checkout copy that is
    /// not cached): S3 tag `uncached=True`, GCS storage class `STANDARD` (the DSS checkout
    /// buckets' default being `MULTI_REGIONAL`), as the original marked them. Local stores
    /// have no lifecycle and ignore it.
    pub expiring: bool,
}

impl PutOptions {
    /// Plain overwrite.
    pub fn overwrite() -> Self {
        PutOptions::default()
    }
    /// Atomic create-only.
    pub fn if_absent() -> Self {
        PutOptions {
            if_absent: true,
            ..Default::default()
        }
    }
}

/// An inclusive byte range, as in HTTP `Range: bytes=start-end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `start-end` (inclusive end).
    FromTo(u64, u64),
    /// `start-`.
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Resolve against an object size into `start..end` (exclusive), or `None` if unsatisfiable.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::FromTo(s, e) if s <= e && s < size => Some((s, e.min(size - 1) + 1)),
            ByteRange::From(s) if s < size => Some((s, size)),
            ByteRange::Suffix(n) if n > 0 && size > 0 => Some((size.saturating_sub(n), size)),
            _ => None,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Keys in lexicographic (byte) order.
    pub keys: Vec<String>,
    /// Pass to the next `list` call to continue; `None` when done.
    pub next_token: Option<String>,
}

/// Options for a presigned download URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresignOptions {
    /// `Content-Disposition` the download should carry.
    pub content_disposition: Option<String>,
    /// `Content-Type` the download should carry.
    pub content_type: Option<String>,
}

/// An object store: a flat key space with prefixes ("bucket").
///
/// Semantics every implementation guarantees (checked by [`conformance`]):
/// writes are atomic (readers see the old object or the new, never a part);
/// `put` with `if_absent` is atomic under concurrency (exactly one writer wins);
/// `list` returns keys in byte order, paging with an opaque token.
pub trait Store: MaybeSend + crate::model::MaybeSync {
    /// Whole object.
    fn get(&self, key: &str) -> impl Future<Output = StoreResult<Bytes>> + MaybeSend;
    /// Object metadata and a stream of the bytes in `range` (all bytes when `None`).
    /// Returns the resolved `start..end` too.
    fn get_range(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> impl Future<Output = StoreResult<(ObjectMeta, (u64, u64), ByteStream)>> + MaybeSend;
    /// Metadata only.
    fn head(&self, key: &str) -> impl Future<Output = StoreResult<ObjectMeta>> + MaybeSend;
    /// Write a whole object.
    fn put(&self, key: &str, data: Bytes, opts: PutOptions) -> impl Future<Output = StoreResult<()>> + MaybeSend;
    /// Write an object from a stream, atomically (nothing visible until complete).
    fn put_stream(
        &self,
        key: &str,
        data: ByteStream,
        opts: PutOptions,
    ) -> impl Future<Output = StoreResult<u64>> + MaybeSend;
    /// Up to `limit` keys starting with `prefix`, after `token` (from a previous page).
    fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<ListPage>> + MaybeSend;
    /// Server-side copy within this store.
    fn copy(&self, src: &str, dst: &str) -> impl Future<Output = StoreResult<()>> + MaybeSend;
    /// Delete; deleting a missing key is not an error.
    fn delete(&self, key: &str) -> impl Future<Output = StoreResult<()>> + MaybeSend;
    /// A URL that lets anyone holding it GET the object until it expires.
    fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
        opts: &PresignOptions,
    ) -> impl Future<Output = StoreResult<String>> + MaybeSend;
    /// Like `head`, but `metadata` also holds the object's tags where the backend has
    /// them (S3); a tag wins over user metadata of the same name, as in the original.
    fn head_with_tags(&self, key: &str) -> impl Future<Output = StoreResult<ObjectMeta>> + MaybeSend;
    /// Server-side copy of `src_key` in another store of the same backend (another bucket)
    /// to `dst_key` here. The copy is written only if `dst_key` is absent when
    /// `opts.if_absent`; content type and user metadata come along.
    fn copy_from(
        &self,
        src: &Self,
        src_key: &str,
        dst_key: &str,
        opts: PutOptions,
    ) -> impl Future<Output = StoreResult<()>> + MaybeSend;
    /// The cloud URL of an object (`s3://bucket/key`, `gs://bucket/key`); `None` for local stores.
    fn direct_url(&self, key: &str) -> Option<String>;
    /// Whether [`Store::copy_from`] `other` is a server-side copy (both stores of one
    /// backend) rather than the bytes streamed through this process.
    fn same_backend(&self, _other: &Self) -> bool {
        true
    }
}

/// List every key under `prefix`, following page tokens.
pub async fn list_all<S: Store>(store: &S, prefix: &str) -> StoreResult<Vec<String>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store.list(prefix, token.as_deref(), 1000).await?;
        out.extend(page.keys);
        match page.next_token {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

/// The closed set of backends, so the router can be generic without `dyn`. The cloud
/// backends are generic over the platform's HTTP client and timers; the defaults are
/// the native ones, so `AnyStore` alone names the backend's store type.
pub enum AnyStore<H = DefaultHttp, T = DefaultSleeper> {
    /// Local directory.
    #[cfg(not(target_arch = "wasm32"))]
    Fs(fs::FsStore),
    /// In-process memory.
    Memory(memory::MemoryStore),
    /// Google Cloud Storage.
    Gcs(Box<gcs::GcsStore<H, T>>),
    /// Amazon S3 or an S3-compatible store.
    S3(Box<s3::S3Store<H, T>>),
}

/// The native HTTP client, the default of [`AnyStore`].
#[cfg(not(target_arch = "wasm32"))]
pub type DefaultHttp = crate::http::ReqwestClient;
/// The native timers, the default of [`AnyStore`].
#[cfg(not(target_arch = "wasm32"))]
pub type DefaultSleeper = crate::http::TokioSleeper;
/// The edge's HTTP client (the worker's `fetch`), the default of [`AnyStore`] on wasm32.
#[cfg(target_arch = "wasm32")]
pub type DefaultHttp = crate::http::fetch::FetchClient;
/// The edge's timers, the default of [`AnyStore`] on wasm32.
#[cfg(target_arch = "wasm32")]
pub type DefaultSleeper = crate::http::fetch::WorkerSleeper;

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            #[cfg(not(target_arch = "wasm32"))]
            AnyStore::Fs($s) => $e,
            AnyStore::Memory($s) => $e,
            AnyStore::Gcs($s) => $e,
            AnyStore::S3($s) => $e,
        }
    };
}

impl<H: crate::http::HttpClient, T: crate::model::platform::Sleeper> Store for AnyStore<H, T> {
    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        dispatch!(self, s => s.get(key).await)
    }
    async fn get_range(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> StoreResult<(ObjectMeta, (u64, u64), ByteStream)> {
        dispatch!(self, s => s.get_range(key, range).await)
    }
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        dispatch!(self, s => s.head(key).await)
    }
    async fn put(&self, key: &str, data: Bytes, opts: PutOptions) -> StoreResult<()> {
        dispatch!(self, s => s.put(key, data, opts).await)
    }
    async fn put_stream(&self, key: &str, data: ByteStream, opts: PutOptions) -> StoreResult<u64> {
        dispatch!(self, s => s.put_stream(key, data, opts).await)
    }
    async fn list(&self, prefix: &str, token: Option<&str>, limit: usize) -> StoreResult<ListPage> {
        dispatch!(self, s => s.list(prefix, token, limit).await)
    }
    async fn copy(&self, src: &str, dst: &str) -> StoreResult<()> {
        dispatch!(self, s => s.copy(src, dst).await)
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        dispatch!(self, s => s.delete(key).await)
    }
    async fn presign_get(&self, key: &str, expires_in: Duration, opts: &PresignOptions) -> StoreResult<String> {
        dispatch!(self, s => s.presign_get(key, expires_in, opts).await)
    }
    async fn head_with_tags(&self, key: &str) -> StoreResult<ObjectMeta> {
        dispatch!(self, s => s.head_with_tags(key).await)
    }
    async fn copy_from(&self, src: &Self, src_key: &str, dst_key: &str, opts: PutOptions) -> StoreResult<()> {
        match (self, src) {
            #[cfg(not(target_arch = "wasm32"))]
            (AnyStore::Fs(d), AnyStore::Fs(s)) => d.copy_from(s, src_key, dst_key, opts).await,
            (AnyStore::Memory(d), AnyStore::Memory(s)) => d.copy_from(s, src_key, dst_key, opts).await,
            (AnyStore::Gcs(d), AnyStore::Gcs(s)) => d.copy_from(s, src_key, dst_key, opts).await,
            (AnyStore::S3(d), AnyStore::S3(s)) => d.copy_from(s, src_key, dst_key, opts).await,
            // Different backends: stream the bytes through. (Unreachable where only one
            // backend is compiled in.)
            #[allow(unreachable_patterns)]
            _ => {
                let meta = src.head(src_key).await?;
                let (_, _, stream) = src.get_range(src_key, None).await?;
                let opts = PutOptions {
                    content_type: opts.content_type.or(meta.content_type),
                    metadata: if opts.metadata.is_empty() {
                        meta.metadata
                    } else {
                        opts.metadata
                    },
                    ..opts
                };
                self.put_stream(dst_key, stream, opts).await.map(|_| ())
            }
        }
    }
    fn direct_url(&self, key: &str) -> Option<String> {
        dispatch!(self, s => s.direct_url(key))
    }
    fn same_backend(&self, other: &Self) -> bool {
        match (self, other) {
            #[cfg(not(target_arch = "wasm32"))]
            (AnyStore::Fs(a), AnyStore::Fs(b)) => a.same_backend(b),
            (AnyStore::Memory(a), AnyStore::Memory(b)) => a.same_backend(b),
            (AnyStore::Gcs(a), AnyStore::Gcs(b)) => a.same_backend(b),
            (AnyStore::S3(a), AnyStore::S3(b)) => a.same_backend(b),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// Reject keys that could escape a directory or are empty; shared by the local backends.
pub fn check_key(key: &str) -> StoreResult<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.ends_with('/')
        || key.contains('\0')
        || key.contains('\\')
        || key
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg.starts_with(".dss-"));
    if bad {
        Err(StoreError::InvalidKey(key.to_string()))
    } else {
        Ok(())
    }
}
