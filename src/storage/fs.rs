//! A store in a local directory, laid out exactly like the original's buckets:
//! the object `files/{uuid}.{version}` is the file `{root}/files/{uuid}.{version}`.
//!
//! Writes go to a temporary file first (in this store's own directory under
//! `{root}/.dss-tmp/`, see `fs::tmp`), are synced, then renamed into place (overwrite) or
//! hard-linked (create-only: the link fails atomically if the key exists). Content type
//! and user metadata, when given, live in a sidecar under `{root}/.dss-meta/`, so the
//! object files themselves stay byte-identical to the original's objects.
//!
//! A [confined](FsStore::confined) store reads a directory that others write into (the
//! staging area): each object is opened once, below the root (`fs::beneath`), and read
//! from that descriptor only.

mod beneath;
mod tmp;

use super::memory::page;
use super::signer::Signer;
use super::*;
use beneath::BeneathError;
use futures::StreamExt;
use std::io::{ErrorKind, Read, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const TMP_DIR: &str = ".dss-tmp";
const META_DIR: &str = ".dss-meta";
const READ_CHUNK: usize = 1024 * 1024;
/// Loose temporary files (what versions before the per-store directories wrote) are
/// removed once untouched for this long: a write in progress touches its file all along.
const STALE_TMP: Duration = Duration::from_secs(3600);
/// Largest sidecar read from a confined store; anything larger is not ours and is ignored.
const SIDECAR_LIMIT: u64 = 64 * 1024;
/// Chunks queued for the writer thread of `put_stream`.
const WRITE_QUEUE: usize = 32;
/// Start writing dirty pages back every so many bytes, so the final fsync is short.
const WRITEBACK_EVERY: u64 = 16 * 1024 * 1024;

/// Ask the kernel to start writing `len` bytes at `offset` to disk now, without waiting.
#[cfg(target_os = "linux")]
fn start_writeback(f: &std::fs::File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a valid open descriptor and plain integers; the call only starts I/O.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_f: &std::fs::File, _offset: u64, _len: u64) {}

/// A temporary file, removed when this is dropped: once the write is committed (the
/// name is gone by then), and also when it fails or is abandoned half way (a client
/// that went away drops the request, and with it this), so nothing is left behind.
struct TmpFile(PathBuf);

impl Drop for TmpFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %self.0.display(), "could not remove a temporary file: {e}"),
        }
    }
}

/// A store rooted at a directory.
pub struct FsStore {
    name: String,
    root: PathBuf,
    signer: Option<Arc<Signer>>,
    dirs: std::sync::Mutex<std::collections::HashMap<String, Arc<DirListing>>>,
    /// Where this store's writes are prepared; `None` for a confined (read-only) store.
    tmp: Option<tmp::TmpDir>,
    /// Reads are opened below `root` only and must be regular files; no writes.
    confined: bool,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Sidecar {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

fn not_found(key: &str) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| match e.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory => {
            StoreError::NotFound(key.to_string())
        }
        _ => StoreError::Other(format!("{key}: {e}")),
    }
}

/// Open the object `rel` below `root`: confined, or plainly by its path.
fn open_object(root: &Path, rel: &str, confined: bool) -> Result<(std::fs::File, std::fs::Metadata), BeneathError> {
    let file = if confined {
        beneath::open_file(root, rel)?
    } else {
        std::fs::File::open(root.join(rel)).map_err(|e| match e.kind() {
            ErrorKind::NotFound | ErrorKind::NotADirectory => BeneathError::Absent,
            _ => BeneathError::Io(e),
        })?
    };
    let md = file.metadata()?;
    if md.is_dir() {
        return Err(BeneathError::Absent);
    }
    Ok((file, md))
}

impl FsStore {
    /// A store named `name` rooted at `root` (created if missing). Temporary files that
    /// stopped processes left in it are removed (never those of a live one).
    pub fn new(name: &str, root: impl Into<PathBuf>, signer: Option<Arc<Signer>>) -> StoreResult<Self> {
        let root = root.into();
        let base = root.join(TMP_DIR);
        std::fs::create_dir_all(&base)?;
        match tmp::sweep(&base, STALE_TMP) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                store = name,
                entries = n,
                "removed temporary files of stopped processes"
            ),
            Err(e) => tracing::warn!(store = name, "could not sweep temporary files: {e}"),
        }
        let tmp = tmp::TmpDir::create(&base)?;
        Ok(FsStore {
            name: name.to_string(),
            root,
            signer,
            dirs: Default::default(),
            tmp: Some(tmp),
            confined: false,
        })
    }

    /// A read-only store whose reads never leave `root`: each object is opened once,
    /// resolved below `root` (links that stay inside are followed; absolute links and
    /// links out are refused), must be a regular file (no FIFOs or devices), and is read
    /// from that descriptor only. Its sidecars are opened the same way. For directories
    /// other people write into, such as the staging area.
    pub fn confined(name: &str, root: impl Into<PathBuf>) -> StoreResult<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(FsStore {
            name: name.to_string(),
            root: std::fs::canonicalize(&root)?,
            signer: None,
            dirs: Default::default(),
            tmp: None,
            confined: true,
        })
    }

    /// Open `key` (once) and run `then` on the file and its metadata, off the async
    /// workers. Anything that is not a readable regular file at `key` is `NotFound`.
    async fn opened<R: Send + 'static>(
        &self,
        key: &str,
        then: impl FnOnce(std::fs::File, std::fs::Metadata) -> std::io::Result<R> + Send + 'static,
    ) -> StoreResult<R> {
        check_key(key)?;
        let (root, rel, confined) = (self.root.clone(), key.to_string(), self.confined);
        let done = tokio::task::spawn_blocking(move || match open_object(&root, &rel, confined) {
            Ok((file, md)) => then(file, md).map_err(BeneathError::Io),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| StoreError::Other(e.to_string()))?;
        done.map_err(|e| match e {
            BeneathError::Absent => StoreError::NotFound(key.to_string()),
            BeneathError::Refused(why) => {
                if self.confined {
                    tracing::warn!(store = %self.name, key, "refused to read: {why}");
                }
                StoreError::NotFound(key.to_string())
            }
            BeneathError::Io(e) => StoreError::Other(format!("{key}: {e}")),
        })
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> StoreResult<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        self.root.join(META_DIR).join(format!("{key}.json"))
    }

    /// A new temporary file name in this store's own directory.
    fn tmp_path(&self) -> StoreResult<PathBuf> {
        self.tmp
            .as_ref()
            .map(tmp::TmpDir::file)
            .ok_or_else(|| StoreError::Other(format!("the {} store is read-only", self.name)))
    }

    async fn read_sidecar(&self, key: &str) -> Sidecar {
        if !self.confined {
            return match tokio::fs::read(self.meta_path(key)).await {
                Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
                Err(_) => Sidecar::default(),
            };
        }
        // Others write this directory: the sidecar is opened below the root like the
        // object, must be a regular file, and is read up to a bound.
        let (root, rel) = (self.root.clone(), format!("{META_DIR}/{key}.json"));
        let read = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, BeneathError> {
            let mut body = Vec::new();
            beneath::open_file(&root, &rel)?
                .take(SIDECAR_LIMIT + 1)
                .read_to_end(&mut body)?;
            Ok(body)
        })
        .await;
        match read {
            Ok(Ok(b)) if b.len() as u64 <= SIDECAR_LIMIT => serde_json::from_slice(&b).unwrap_or_default(),
            Ok(Ok(_)) => {
                tracing::warn!(store = %self.name, key, "sidecar larger than {SIDECAR_LIMIT} bytes ignored");
                Sidecar::default()
            }
            Ok(Err(BeneathError::Absent)) => Sidecar::default(),
            Ok(Err(e)) => {
                tracing::warn!(store = %self.name, key, "sidecar ignored: {e}");
                Sidecar::default()
            }
            Err(e) => {
                tracing::warn!(store = %self.name, key, "sidecar ignored: {e}");
                Sidecar::default()
            }
        }
    }

    async fn meta_of(&self, key: &str, md: &std::fs::Metadata) -> ObjectMeta {
        let sc = self.read_sidecar(key).await;
        ObjectMeta {
            size: md.len(),
            content_type: sc.content_type,
            metadata: sc.metadata,
            last_modified: md
                .modified()
                .map(chrono::DateTime::<Utc>::from)
                .unwrap_or_else(|_| Utc::now()),
            // A local file has no checksum of its own; copies check sizes.
            checksum: None,
        }
    }

    /// Move a fully written temp file into place, then record its sidecar.
    async fn commit(&self, tmp: &Path, key: &str, opts: &PutOptions) -> StoreResult<()> {
        let dest = self.path(key)?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        if opts.if_absent {
            // link(2) fails with EEXIST if the key exists: atomic create-only.
            let linked = tokio::fs::hard_link(tmp, &dest).await;
            let _ = tokio::fs::remove_file(tmp).await;
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return Err(StoreError::AlreadyExists(key.to_string()))
                }
                Err(e) => return Err(e.into()),
            }
        } else if let Err(e) = tokio::fs::rename(tmp, &dest).await {
            let _ = tokio::fs::remove_file(tmp).await;
            return Err(e.into());
        }
        // The new directory entry must survive a crash before we report success.
        if let Some(parent) = dest.parent() {
            let parent = parent.to_path_buf();
            tokio::task::spawn_blocking(move || std::fs::File::open(&parent)?.sync_all())
                .await
                .map_err(|e| StoreError::Other(e.to_string()))??;
        }
        let mp = self.meta_path(key);
        if opts.content_type.is_some() || !opts.metadata.is_empty() {
            let sc = Sidecar {
                content_type: opts.content_type.clone(),
                metadata: opts.metadata.clone(),
            };
            let body = serde_json::to_vec(&sc).map_err(|e| StoreError::Other(e.to_string()))?;
            if let Some(parent) = mp.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            let t = self.tmp_path()?;
            tokio::fs::write(&t, body).await?;
            tokio::fs::rename(&t, &mp).await?;
        } else if !opts.if_absent {
            let _ = tokio::fs::remove_file(&mp).await;
        }
        Ok(())
    }
}

/// One directory's entries, sorted by name, as read at `read_at`.
struct DirListing {
    mtime: SystemTime,
    read_at: SystemTime,
    entries: Vec<(String, bool)>,
}

/// How far apart a directory's mtime and the moment it was read must be before a
/// cached listing is trusted: file systems stamp mtimes from a coarse clock, so a
/// change made right after a read may carry the same mtime.
const MTIME_SLACK: Duration = Duration::from_millis(100);

/// File systems with whole-second (or 2 s, FAT) timestamps show zero nanoseconds:
/// give those a slack that covers their resolution.
fn slack(mtime: SystemTime) -> Duration {
    match mtime.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) if d.subsec_nanos() == 0 => Duration::from_millis(2100),
        _ => MTIME_SLACK,
    }
}

fn read_listing(path: &Path) -> std::io::Result<Option<DirListing>> {
    let read_at = SystemTime::now();
    let md = match std::fs::metadata(path) {
        Ok(md) if md.is_dir() => md,
        Ok(_) => return Ok(None),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with(".dss-") {
            continue;
        }
        entries.push((name, entry.file_type()?.is_dir()));
    }
    entries.sort_unstable();
    Ok(Some(DirListing {
        mtime: md.modified()?,
        read_at,
        entries,
    }))
}

impl FsStore {
    /// The sorted entries of directory `rel` (relative to the root, `""` or ending in `/`).
    /// Cached per directory and revalidated with one `stat`, so listing a prefix of a
    /// large directory (`bundles/`, `files/`) costs a binary search, not a scan.
    async fn listing(&self, rel: &str) -> StoreResult<Option<Arc<DirListing>>> {
        let path = self.root.join(rel);
        let cached = self.dirs.lock().unwrap_or_else(|e| e.into_inner()).get(rel).cloned();
        if let Some(c) = cached {
            let fresh = match std::fs::metadata(&path) {
                Ok(md) => md.modified().ok() == Some(c.mtime),
                Err(_) => false,
            };
            if fresh && c.mtime + slack(c.mtime) < c.read_at {
                return Ok(Some(c));
            }
        }
        let p = path.clone();
        let listing = tokio::task::spawn_blocking(move || read_listing(&p))
            .await
            .map_err(|e| StoreError::Other(e.to_string()))??;
        let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        match listing {
            Some(l) => {
                let l = Arc::new(l);
                dirs.insert(rel.to_string(), l.clone());
                Ok(Some(l))
            }
            None => {
                dirs.remove(rel);
                Ok(None)
            }
        }
    }

    /// Every key under directory key `dir` (no trailing slash), unsorted.
    fn walk<'a>(&'a self, dir: String, out: &'a mut Vec<String>) -> futures::future::BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move {
            let rel = format!("{dir}/");
            if let Some(l) = self.listing(&rel).await? {
                for (name, is_dir) in &l.entries {
                    let key = format!("{rel}{name}");
                    if *is_dir {
                        self.walk(key, out).await?;
                    } else {
                        out.push(key);
                    }
                }
            }
            Ok(())
        })
    }
}

impl Store for FsStore {
    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        self.opened(key, |mut f, md| {
            // The size is a hint only: the file may change while it is read.
            let mut body = Vec::with_capacity(md.len().min(READ_CHUNK as u64 * 16) as usize);
            f.read_to_end(&mut body)?;
            Ok(Bytes::from(body))
        })
        .await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> StoreResult<(ObjectMeta, (u64, u64), ByteStream)> {
        let (f, md) = self.opened(key, |f, md| Ok((f, md))).await?;
        let mut f = tokio::fs::File::from_std(f);
        let meta = self.meta_of(key, &md).await;
        let (start, end) = match range {
            None => (0, meta.size),
            Some(r) => r.resolve(meta.size).ok_or(StoreError::RangeNotSatisfiable)?,
        };
        if start > 0 {
            f.seek(SeekFrom::Start(start)).await?;
        }
        // A small range (one event of a journal) gets a buffer its size, not a whole chunk.
        let buffer = usize::try_from(end - start).map_or(READ_CHUNK, |n| n.clamp(1, READ_CHUNK));
        let reader = tokio_util::io::ReaderStream::with_capacity(f.take(end - start), buffer);
        Ok((meta, (start, end), reader.boxed()))
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        if self.confined {
            let md = self.opened(key, |_, md| Ok(md)).await?;
            return Ok(self.meta_of(key, &md).await);
        }
        let p = self.path(key)?;
        let md = tokio::fs::metadata(&p).await.map_err(not_found(key))?;
        if md.is_dir() {
            return Err(StoreError::NotFound(key.to_string()));
        }
        Ok(self.meta_of(key, &md).await)
    }

    async fn put(&self, key: &str, data: Bytes, opts: PutOptions) -> StoreResult<()> {
        self.put_stream(key, futures::stream::once(async move { Ok(data) }).boxed(), opts)
            .await
            .map(|_| ())
    }

    async fn put_stream(&self, key: &str, mut data: ByteStream, opts: PutOptions) -> StoreResult<u64> {
        check_key(key)?;
        let tmp = TmpFile(self.tmp_path()?);
        // Created here, before anything can abandon this write, so the guard always has
        // a file to remove.
        let mut f = tokio::fs::File::create(&tmp.0).await?.into_std().await;
        // A writer thread takes the chunks, so reading (and hashing) the stream goes on
        // while the disk is busy; the channel bounds what is held in memory.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            use std::io::Write;
            let (mut n, mut kicked) = (0u64, 0u64);
            while let Some(chunk) = rx.blocking_recv() {
                f.write_all(&chunk)?;
                n += chunk.len() as u64;
                if n - kicked >= WRITEBACK_EVERY {
                    start_writeback(&f, kicked, n - kicked);
                    kicked = n;
                }
            }
            f.sync_all()?;
            Ok(n)
        });
        let mut failed: Option<std::io::Error> = None;
        while let Some(chunk) = data.next().await {
            match chunk {
                Ok(c) => {
                    if tx.send(c).await.is_err() {
                        break; // the writer stopped: its error is reported below
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(|e| StoreError::Other(e.to_string()))?;
        match (failed, written) {
            (None, Ok(n)) => {
                self.commit(&tmp.0, key, &opts).await?;
                Ok(n)
            }
            (Some(e), _) | (None, Err(e)) => Err(e.into()),
        }
    }

    async fn list(&self, prefix: &str, token: Option<&str>, limit: usize) -> StoreResult<ListPage> {
        let (dir, name_prefix) = match prefix.rfind('/') {
            Some(i) => (&prefix[..=i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let Some(listing) = self.listing(dir).await? else {
            return Ok(ListPage::default());
        };
        let lo = listing.entries.partition_point(|(n, _)| n.as_str() < name_prefix);
        let hi = lo + listing.entries[lo..].partition_point(|(n, _)| n.starts_with(name_prefix));
        let matched = &listing.entries[lo..hi];
        let mut keys: Vec<String>;
        if matched.iter().any(|(_, d)| *d) {
            // Subdirectories interleave with sibling names in key order: expand, then sort.
            keys = Vec::new();
            for (name, is_dir) in matched {
                let key = format!("{dir}{name}");
                if *is_dir {
                    self.walk(key, &mut keys).await?;
                } else {
                    keys.push(key);
                }
            }
            keys.sort_unstable();
            if let Some(t) = token {
                let from = keys.partition_point(|k| k.as_str() <= t);
                keys.drain(..from);
            }
            keys.truncate(limit.max(1) + 1);
        } else {
            // Plain files: already in key order; page without touching the rest.
            let from = match token.and_then(|t| t.strip_prefix(dir)) {
                Some(t) => matched.partition_point(|(n, _)| n.as_str() <= t),
                None if token.is_some_and(|t| t >= prefix) => matched.len(),
                None => 0,
            };
            keys = matched[from..]
                .iter()
                .take(limit.max(1) + 1)
                .map(|(n, _)| format!("{dir}{n}"))
                .collect();
        }
        Ok(page(&mut keys, limit))
    }

    async fn copy(&self, src: &str, dst: &str) -> StoreResult<()> {
        self.copy_from(self, src, dst, PutOptions::overwrite()).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let p = self.path(key)?;
        if self.confined {
            return Err(StoreError::Other(format!("the {} store is read-only", self.name)));
        }
        match tokio::fs::remove_file(&p).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let _ = tokio::fs::remove_file(self.meta_path(key)).await;
        Ok(())
    }

    async fn head_with_tags(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.head(key).await
    }

    async fn copy_from(&self, src: &Self, src_key: &str, dst_key: &str, opts: PutOptions) -> StoreResult<()> {
        self.path(dst_key)?;
        let tmp = TmpFile(self.tmp_path()?);
        let to = tmp.0.clone();
        // Copied from the descriptor that was opened (and checked), never from the path.
        src.opened(src_key, move |mut from, _| {
            let mut out = std::fs::File::create(&to)?;
            std::io::copy(&mut from, &mut out)?;
            out.sync_all()
        })
        .await?;
        let sc = src.read_sidecar(src_key).await;
        let opts = PutOptions {
            content_type: opts.content_type.or(sc.content_type),
            metadata: if opts.metadata.is_empty() {
                sc.metadata
            } else {
                opts.metadata
            },
            ..opts
        };
        self.commit(&tmp.0, dst_key, &opts).await
    }

    fn direct_url(&self, _key: &str) -> Option<String> {
        None
    }

    async fn presign_get(&self, key: &str, expires_in: Duration, opts: &PresignOptions) -> StoreResult<String> {
        super::signer::presign_local(self.signer.as_ref(), &self.name, key, expires_in, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write abandoned half way (its future dropped, as when a client goes away)
    /// leaves no temporary file behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_write_leaves_no_temporary_file() {
        use futures::SinkExt;
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new("aws", dir.path(), None).unwrap();
        let own = store.tmp.as_ref().unwrap().path().to_path_buf();
        let (mut tx, rx) = futures::channel::mpsc::channel::<std::io::Result<Bytes>>(1);
        {
            let write = store.put_stream("blobs/x", rx.boxed(), PutOptions::if_absent());
            tokio::pin!(write);
            tx.send(Ok(Bytes::from_static(b"first part"))).await.unwrap();
            let started = async {
                while std::fs::read_dir(&own).unwrap().count() == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::select! {
                r = &mut write => panic!("the write ended before its stream did: {r:?}"),
                () = started => {}
            }
        } // the write is dropped here, half way
        assert_eq!(std::fs::read_dir(&own).unwrap().count(), 0);
        assert!(!dir.path().join("blobs/x").exists());
    }

    #[test]
    fn coarse_timestamps_get_a_wider_slack() {
        let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(slack(whole) >= Duration::from_secs(2));
        assert_eq!(slack(whole + Duration::from_nanos(123)), MTIME_SLACK);
    }
}
