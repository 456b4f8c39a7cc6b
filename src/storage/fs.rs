//! A store in a local directory, laid out exactly like the original's buckets:
//! the object `files/{uuid}.{version}` is the file `{root}/files/{uuid}.{version}`.
//!
//! Writes go to `{root}/.dss-tmp/` first, are synced, then renamed into place
//! (overwrite) or hard-linked (create-only: the link fails atomically if the key
//! exists). Content type and user metadata, when given, live in a sidecar under
//! `{root}/.dss-meta/`, so the object files themselves stay byte-identical to the
//! original's objects.

use super::memory::page;
use super::signer::Signer;
use super::*;
use futures::StreamExt;
use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

const TMP_DIR: &str = ".dss-tmp";
const META_DIR: &str = ".dss-meta";
const READ_CHUNK: usize = 256 * 1024;

/// A store rooted at a directory.
pub struct FsStore {
    name: String,
    root: PathBuf,
    signer: Option<Arc<Signer>>,
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

impl FsStore {
    /// A store named `name` rooted at `root` (created if missing).
    pub fn new(
        name: &str,
        root: impl Into<PathBuf>,
        signer: Option<Arc<Signer>>,
    ) -> StoreResult<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join(TMP_DIR))?;
        Ok(FsStore {
            name: name.to_string(),
            root,
            signer,
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

    fn tmp_path(&self) -> PathBuf {
        self.root
            .join(TMP_DIR)
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    async fn read_sidecar(&self, key: &str) -> Sidecar {
        match tokio::fs::read(self.meta_path(key)).await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => Sidecar::default(),
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
            let t = self.tmp_path();
            tokio::fs::write(&t, body).await?;
            tokio::fs::rename(&t, &mp).await?;
        } else if !opts.if_absent {
            let _ = tokio::fs::remove_file(&mp).await;
        }
        Ok(())
    }
}

fn list_dir(root: &Path, prefix: &str) -> std::io::Result<Vec<String>> {
    let (dir, name_prefix) = match prefix.rfind('/') {
        Some(i) => (&prefix[..=i], &prefix[i + 1..]),
        None => ("", prefix),
    };
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(root.join(dir)) {
        Ok(rd) => rd,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(out)
        }
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with(name_prefix) || name.starts_with(".dss-") {
            continue;
        }
        let key = format!("{dir}{name}");
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &key, &mut out)?;
        } else {
            out.push(key);
        }
    }
    Ok(out)
}

fn walk(path: &Path, key: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let k = format!("{key}/{name}");
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &k, out)?;
        } else {
            out.push(k);
        }
    }
    Ok(())
}

impl Store for FsStore {
    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        let p = self.path(key)?;
        Ok(Bytes::from(
            tokio::fs::read(&p).await.map_err(not_found(key))?,
        ))
    }

    async fn get_range(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> StoreResult<(ObjectMeta, (u64, u64), ByteStream)> {
        let p = self.path(key)?;
        let mut f = tokio::fs::File::open(&p).await.map_err(not_found(key))?;
        let md = f.metadata().await?;
        if md.is_dir() {
            return Err(StoreError::NotFound(key.to_string()));
        }
        let meta = self.meta_of(key, &md).await;
        let (start, end) = match range {
            None => (0, meta.size),
            Some(r) => r
                .resolve(meta.size)
                .ok_or(StoreError::RangeNotSatisfiable)?,
        };
        if start > 0 {
            f.seek(SeekFrom::Start(start)).await?;
        }
        let reader = tokio_util::io::ReaderStream::with_capacity(f.take(end - start), READ_CHUNK);
        Ok((meta, (start, end), reader.boxed()))
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let p = self.path(key)?;
        let md = tokio::fs::metadata(&p).await.map_err(not_found(key))?;
        if md.is_dir() {
            return Err(StoreError::NotFound(key.to_string()));
        }
        Ok(self.meta_of(key, &md).await)
    }

    async fn put(&self, key: &str, data: Bytes, opts: PutOptions) -> StoreResult<()> {
        self.put_stream(
            key,
            futures::stream::once(async move { Ok(data) }).boxed(),
            opts,
        )
        .await
        .map(|_| ())
    }

    async fn put_stream(
        &self,
        key: &str,
        mut data: ByteStream,
        opts: PutOptions,
    ) -> StoreResult<u64> {
        check_key(key)?;
        let tmp = self.tmp_path();
        let written = async {
            let mut f = tokio::fs::File::create(&tmp).await?;
            let mut n = 0u64;
            while let Some(chunk) = data.next().await {
                let chunk = chunk?;
                n += chunk.len() as u64;
                f.write_all(&chunk).await?;
            }
            f.sync_all().await?;
            Ok::<u64, std::io::Error>(n)
        }
        .await;
        match written {
            Ok(n) => {
                self.commit(&tmp, key, &opts).await?;
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e.into())
            }
        }
    }

    async fn list(&self, prefix: &str, token: Option<&str>, limit: usize) -> StoreResult<ListPage> {
        let root = self.root.clone();
        let prefix_owned = prefix.to_string();
        let mut keys = tokio::task::spawn_blocking(move || list_dir(&root, &prefix_owned))
            .await
            .map_err(|e| StoreError::Other(e.to_string()))??;
        keys.sort_unstable();
        if let Some(t) = token {
            let from = keys.partition_point(|k| k.as_str() <= t);
            keys.drain(..from);
        }
        keys.truncate(limit.max(1) + 1);
        Ok(page(&mut keys, limit))
    }

    async fn copy(&self, src: &str, dst: &str) -> StoreResult<()> {
        let from = self.path(src)?;
        self.path(dst)?;
        let tmp = self.tmp_path();
        tokio::fs::copy(&from, &tmp).await.map_err(not_found(src))?;
        let sc = self.read_sidecar(src).await;
        let opts = PutOptions {
            if_absent: false,
            content_type: sc.content_type,
            metadata: sc.metadata,
        };
        self.commit(&tmp, dst, &opts).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let p = self.path(key)?;
        match tokio::fs::remove_file(&p).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let _ = tokio::fs::remove_file(self.meta_path(key)).await;
        Ok(())
    }

    async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
        opts: &PresignOptions,
    ) -> StoreResult<String> {
        check_key(key)?;
        let signer = self
            .signer
            .as_ref()
            .ok_or_else(|| StoreError::Other("no URL signer configured".into()))?;
        Ok(signer.sign(
            &self.name,
            key,
            expires_in,
            opts.content_type.as_deref(),
            opts.content_disposition.as_deref(),
        ))
    }
}
