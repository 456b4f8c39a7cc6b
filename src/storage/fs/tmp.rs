//! Temporary files of writes in progress, under `{root}/.dss-tmp/`, and the sweep of the
//! ones whose writer died (`kill -9`, a crash, a power cut) before it could remove them.
//!
//! Several processes may share a root (`dss reindex` beside `dss serve`; several backends
//! on one data directory), so a sweep must tell a dead writer's files from a live one's.
//! Each store writes into a directory of its own, `{id}/`, and holds an exclusive `flock`
//! on `{id}.lock` for as long as it lives. The kernel drops that lock when the process
//! ends, however it ends, so a lock that can be taken belongs to nobody. The lock file
//! is made before the directory and removed after it, so a directory without a lock
//! file has no owner either.

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const LOCK_SUFFIX: &str = ".lock";

/// This store's own directory of temporary files, locked for its lifetime.
pub(super) struct TmpDir {
    dir: PathBuf,
    lock_path: PathBuf,
    /// Holds the `flock`; closing it (drop, or the process dying) releases it.
    _lock: std::fs::File,
}

/// Whether `path` still names the file open as `f` (a sweep may have unlinked it between
/// our open and our lock).
fn names(path: &Path, f: &std::fs::File) -> std::io::Result<bool> {
    let (held, named) = (f.metadata()?, std::fs::symlink_metadata(path));
    match named {
        Ok(n) => Ok(n.dev() == held.dev() && n.ino() == held.ino()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Take the lock without waiting; `Ok(false)` if someone holds it.
fn try_lock(f: &std::fs::File) -> std::io::Result<bool> {
    match flock(f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl TmpDir {
    /// Make and lock a new directory under `base`.
    pub(super) fn create(base: &Path) -> std::io::Result<TmpDir> {
        // A sweep in another process may take a lock file in the instant between its
        // creation and our lock; then it removes it, and we start again with a new name.
        for _ in 0..16 {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let lock_path = base.join(format!("{id}{LOCK_SUFFIX}"));
            let lock = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&lock_path)?;
            if !try_lock(&lock)? || !names(&lock_path, &lock)? {
                continue;
            }
            let dir = base.join(&id);
            std::fs::create_dir(&dir)?;
            return Ok(TmpDir {
                dir,
                lock_path,
                _lock: lock,
            });
        }
        Err(std::io::Error::other(format!(
            "could not lock a temporary directory in {}",
            base.display()
        )))
    }

    /// The directory.
    #[cfg(test)]
    pub(super) fn path(&self) -> &Path {
        &self.dir
    }

    /// A fresh name for a temporary file.
    pub(super) fn file(&self) -> PathBuf {
        self.dir.join(uuid::Uuid::new_v4().simple().to_string())
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        // Directory first, lock file last, while the lock is still held.
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), "could not remove temporary files: {e}");
            }
        }
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Remove from `base` what no live store holds: the directories of dead stores, and loose
/// files (what earlier versions wrote straight into `base`) untouched for `stale_after`.
/// Returns how many entries went.
pub(super) fn sweep(base: &Path, stale_after: Duration) -> std::io::Result<usize> {
    // Only a real directory is swept; a link here is not ours to follow.
    if !std::fs::symlink_metadata(base)?.is_dir() {
        return Err(std::io::Error::other(format!("{} is not a directory", base.display())));
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(base)? {
        let entry = entry?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let kind = entry.file_type()?;
        let gone = if let Some(id) = name.strip_suffix(LOCK_SUFFIX).filter(|_| kind.is_file()) {
            sweep_locked(base, id, &path)?
        } else if kind.is_dir() {
            // Owned only while its lock file exists (the lock branch decides then).
            match std::fs::symlink_metadata(base.join(format!("{name}{LOCK_SUFFIX}"))) {
                Ok(_) => false,
                Err(e) if e.kind() == ErrorKind::NotFound => remove_dir(&path)?,
                Err(e) => return Err(e),
            }
        } else {
            let md = entry.metadata()?;
            let age = md
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            age >= stale_after && remove_file(&path)?
        };
        if gone {
            tracing::debug!(path = %path.display(), "temporary file of a stopped process removed");
            removed += 1;
        }
    }
    Ok(removed)
}

/// The directory `{id}/` and its lock file, if no live store holds the lock.
fn sweep_locked(base: &Path, id: &str, lock_path: &Path) -> std::io::Result<bool> {
    let lock = match std::fs::OpenOptions::new().read(true).write(true).open(lock_path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    // Held: a live store. Renamed or replaced meanwhile: another sweep's business.
    if !try_lock(&lock)? || !names(lock_path, &lock)? {
        return Ok(false);
    }
    remove_dir(&base.join(id))?;
    remove_file(lock_path)?;
    Ok(true)
}

fn remove_dir(p: &Path) -> std::io::Result<bool> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn remove_file(p: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_no_live_store_holds_is_swept() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let live = TmpDir::create(base).unwrap();
        std::fs::write(live.file(), b"in flight").unwrap();
        // A store whose process died: directory and lock file, the lock not held.
        std::fs::create_dir(base.join("dead")).unwrap();
        std::fs::write(base.join("dead/partial"), b"x").unwrap();
        std::fs::write(base.join("dead.lock"), b"").unwrap();
        // A directory without a lock file; loose files of an older version, old and new.
        std::fs::create_dir(base.join("orphan")).unwrap();
        std::fs::write(base.join("old"), b"x").unwrap();
        let old = std::fs::File::options().write(true).open(base.join("old")).unwrap();
        old.set_modified(SystemTime::now() - Duration::from_secs(7200)).unwrap();
        std::fs::write(base.join("new"), b"x").unwrap();

        assert_eq!(sweep(base, Duration::from_secs(3600)).unwrap(), 3);
        let mut left: Vec<String> = std::fs::read_dir(base)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let id = live.path().file_name().unwrap().to_str().unwrap().to_string();
        let mut expected = vec![id.clone(), format!("{id}.lock"), "new".to_string()];
        expected.sort();
        assert_eq!(left, expected);
        assert_eq!(std::fs::read_dir(live.path()).unwrap().count(), 1);
        // A second live store does not disturb the first, and each cleans up after itself.
        let other = TmpDir::create(base).unwrap();
        assert_eq!(sweep(base, Duration::from_secs(3600)).unwrap(), 0);
        drop(other);
        drop(live);
        assert_eq!(std::fs::read_dir(base).unwrap().count(), 1);
    }
}
