//! Opening a file below a directory without ever leaving it, for directories that other
//! people write into (the staging area).
//!
//! Checking a path and then opening it is a race: between the two, any directory on the
//! way can be swapped for a link to somewhere else. So the file is opened once, by the
//! kernel resolving the path below a directory descriptor (`openat2` with
//! `RESOLVE_BENEATH`), or, where the kernel has no `openat2`, by walking the path one
//! component at a time with `O_NOFOLLOW`, each `openat` relative to the directory opened
//! before it. Either way, relative links that stay inside are followed, and absolute
//! links and links (or `..`) that lead out are refused. The caller then reads from the
//! descriptor it got, never from the path again.

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::sync::atomic::{AtomicBool, Ordering};

/// Links followed on one path at most (the kernel's own limit, `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Why a file could not be opened below the directory.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    /// Nothing is there.
    #[error("no such file")]
    Absent,
    /// Something is there, but it may not be read: the path leads out of the directory,
    /// loops, goes through something that is not a directory, or ends on something that
    /// is not a regular file.
    #[error("{0}")]
    Refused(&'static str),
    /// The file system failed otherwise (permissions, I/O).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn classify(e: Errno) -> BeneathError {
    match e {
        Errno::NOENT => BeneathError::Absent,
        Errno::XDEV => BeneathError::Refused("the path leads out of the directory"),
        Errno::LOOP => BeneathError::Refused("the path has a symbolic link loop"),
        Errno::NOTDIR => BeneathError::Refused("the path goes through something that is not a directory"),
        Errno::NAMETOOLONG => BeneathError::Refused("the path is too long"),
        // Sockets and devices without a driver.
        Errno::NXIO | Errno::NODEV => BeneathError::Refused("not a regular file"),
        other => BeneathError::Io(other.into()),
    }
}

/// Flags of every open: read only; a FIFO must not block the open (it is refused once
/// `fstat` shows what it is), and a terminal must not become ours.
fn read_flags() -> OFlags {
    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK
}

/// Whether to try `openat2` (cleared the first time the kernel says it has none).
#[cfg(any(target_os = "linux", target_os = "android"))]
static OPENAT2: AtomicBool = AtomicBool::new(true);

/// Open the regular file at `rel` below the directory `root`, without leaving it.
/// `rel` is a relative path of `/`-separated names.
pub fn open_file(root: &Path, rel: &str) -> Result<std::fs::File, BeneathError> {
    open_file_with(root, rel, true)
}

/// [`open_file`], with `openat2` allowed or not (tests run the walk on any kernel).
pub(super) fn open_file_with(root: &Path, rel: &str, try_openat2: bool) -> Result<std::fs::File, BeneathError> {
    if rel.is_empty() || rel.starts_with('/') || rel.contains('\0') {
        return Err(BeneathError::Refused("not a relative path"));
    }
    // The root itself is the server's own setting: opened by its path.
    let dir = rustix::fs::openat(rustix::fs::CWD, root, read_flags() | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| BeneathError::Io(e.into()))?;
    let fd = open_beneath(dir.as_fd(), rel, try_openat2)?;
    let file = std::fs::File::from(fd);
    // What was opened is what is checked: no path is looked at again.
    if !file.metadata()?.file_type().is_file() {
        return Err(BeneathError::Refused("not a regular file"));
    }
    Ok(file)
}

fn open_beneath(dir: BorrowedFd<'_>, rel: &str, try_openat2: bool) -> Result<OwnedFd, BeneathError> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if try_openat2 && OPENAT2.load(Ordering::Relaxed) {
        use rustix::fs::ResolveFlags;
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(dir, rel, read_flags(), Mode::empty(), how) {
                Ok(fd) => return Ok(fd),
                // A rename elsewhere raced a `..` lookup, and the kernel asks to retry.
                Err(Errno::AGAIN) if tries < 4 => tries += 1,
                Err(Errno::AGAIN) => return Err(BeneathError::Refused("the path kept changing while it was opened")),
                Err(Errno::NOSYS) => {
                    OPENAT2.store(false, Ordering::Relaxed);
                    tracing::info!("no openat2 in this kernel: staged files are opened by walking their path");
                    break;
                }
                // Some seccomp filters answer EPERM for system calls they do not know;
                // the walk is just as safe, so it decides for this file.
                Err(Errno::PERM) => break,
                Err(e) => return Err(classify(e)),
            }
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = try_openat2;
    walk(dir, rel)
}

/// Resolve `rel` one name at a time from `root`, never following a link the kernel
/// would follow for us: each name is opened with `O_NOFOLLOW` relative to the directory
/// opened before it. A link is read and its target resolved the same way; `..` goes back
/// to the directory this walk came from, and never above `root`.
fn walk(root: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd, BeneathError> {
    // Directories opened so far below `root`; the last is where the next name is looked up.
    let mut dirs: Vec<OwnedFd> = Vec::new();
    // Names still to resolve, the next one last.
    let mut todo: Vec<OsString> = rel.split('/').rev().map(OsString::from).collect();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        match name.as_bytes() {
            b"" | b"." => continue,
            b".." => {
                if dirs.pop().is_none() {
                    return Err(BeneathError::Refused("the path leads out of the directory"));
                }
                continue;
            }
            _ => {}
        }
        let here = dirs.last().map(|d| d.as_fd()).unwrap_or(root);
        let last = todo.iter().all(|n| n.as_bytes() == b"." || n.is_empty());
        let mut flags = read_flags() | OFlags::NOFOLLOW;
        if !last {
            flags |= OFlags::DIRECTORY;
        }
        match rustix::fs::openat(here, name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => dirs.push(fd),
            // A link (ELOOP, or ENOTDIR when a directory was asked for): follow it by hand.
            Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                let target = match rustix::fs::readlinkat(here, name.as_os_str(), Vec::new()) {
                    Ok(t) => t.into_bytes(),
                    // Not a link after all: the error stands.
                    Err(Errno::INVAL) => return Err(classify(e)),
                    Err(e) => return Err(classify(e)),
                };
                links += 1;
                if links > MAX_LINKS {
                    return Err(BeneathError::Refused("the path has a symbolic link loop"));
                }
                if target.first() == Some(&b'/') {
                    return Err(BeneathError::Refused("the path leads out of the directory"));
                }
                todo.extend(
                    target
                        .split(|b| *b == b'/')
                        .rev()
                        .map(|n| OsString::from_vec(n.to_vec())),
                );
            }
            Err(e) => return Err(classify(e)),
        }
    }
    dirs.pop().ok_or(BeneathError::Refused("not a regular file"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn refused(r: Result<std::fs::File, BeneathError>) -> bool {
        matches!(r, Err(BeneathError::Refused(_)))
    }

    /// Both ways of opening (openat2 where the kernel has it, and the walk) agree.
    #[test]
    fn opens_inside_and_refuses_everything_that_leads_out() {
        use std::io::Read;
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f.txt"), b"inside").unwrap();
        std::fs::write(top.path().join("secret"), b"outside").unwrap();
        symlink("b/f.txt", root.join("a/rel")).unwrap();
        symlink("../a/b", root.join("a/dirlink")).unwrap();
        symlink(top.path().join("secret"), root.join("abs")).unwrap();
        symlink(root.join("a/b/f.txt"), root.join("abs_inside")).unwrap();
        symlink("../secret", root.join("up")).unwrap();
        symlink("..", root.join("a/b/parent")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        for try_openat2 in [true, false] {
            let open = |rel: &str| open_file_with(&root, rel, try_openat2);
            for ok in ["a/b/f.txt", "a/rel", "a/dirlink/f.txt", "a/b/parent/b/f.txt"] {
                let mut s = String::new();
                open(ok).unwrap().read_to_string(&mut s).unwrap();
                assert_eq!(s, "inside", "{ok} (openat2 {try_openat2})");
            }
            for bad in [
                "abs",
                "abs_inside",
                "up",
                "loop1",
                "a/b/f.txt/x",
                "a",
                "a/b/parent/../../secret",
                "a/dirlink/../../../secret",
            ] {
                assert!(refused(open(bad)), "{bad} (openat2 {try_openat2})");
            }
            assert!(matches!(open("a/none"), Err(BeneathError::Absent)));
            assert!(matches!(open("none/x"), Err(BeneathError::Absent)));
            // `a/b/parent` is `a`, so this is `secret` inside the root, which is not there.
            assert!(matches!(open("a/b/parent/../secret"), Err(BeneathError::Absent)));
        }
    }
}
