//! Resolving paths inside the container's root filesystem. Every lookup goes through
//! `openat2(RESOLVE_IN_ROOT)`, so a symlink in the image (`/proc -> /`, `/etc -> /host/etc`, `..`
//! chains) resolves as if the rootfs were `/` and can never reach the host.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, mkdirat, Mode};

use crate::error::{Error, Result};

/// What to create at a destination that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    Directory,
    File,
}

/// `openat2`, retried while the kernel answers EAGAIN: with `RESOLVE_IN_ROOT`, a `..` resolved while
/// anything on the host is renamed or mounted makes it give up rather than risk an escape.
fn openat2_retrying(dirfd: std::os::fd::BorrowedFd<'_>, path: &Path, how: OpenHow) -> nix::Result<OwnedFd> {
    let mut attempts = 0;
    loop {
        match openat2(dirfd, path, how) {
            Err(Errno::EAGAIN) if attempts < 100 => attempts += 1,
            other => return other,
        }
    }
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// The path as components relative to the root, with `.` dropped.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect()
}

/// Opens `path` inside `root` as an `O_PATH` descriptor, creating missing directories on the way and
/// the last component as `create` says. A dangling symlink on the way is followed the same way: what
/// it points to is created, inside the root.
pub(crate) fn ensure(root: &OwnedFd, path: &Path, create: Create) -> Result<OwnedFd> {
    ensure_following(root, path, create, 0)
}

/// Symlinks followed before giving up (the kernel's own limit).
const MAX_LINKS: usize = 40;

fn ensure_following(root: &OwnedFd, path: &Path, create: Create, links: usize) -> Result<OwnedFd> {
    if links > MAX_LINKS {
        return Err(resolve_error(path, Errno::ELOOP));
    }
    let rel = relative(path);
    if rel.as_os_str().is_empty() {
        return open_path(root, Path::new("."));
    }
    let components: Vec<_> = rel.components().collect();
    for i in 1..=components.len() {
        let partial: PathBuf = components[..i].iter().collect();
        let last = i == components.len();
        let want_dir = !last || create == Create::Directory;
        for attempt in 0..2 {
            let flags = OFlag::O_PATH | if want_dir { OFlag::O_DIRECTORY } else { OFlag::empty() };
            match openat2_retrying(root.as_fd(), &partial, how(flags)) {
                Ok(fd) if last => return Ok(fd),
                Ok(_) => break,
                Err(Errno::ENOENT) if attempt == 0 => {
                    let parent: PathBuf = components[..i - 1].iter().collect();
                    let parent = if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent };
                    let parent_fd = openat2_retrying(root.as_fd(), &parent, how(OFlag::O_PATH | OFlag::O_DIRECTORY))
                        .map_err(|e| resolve_error(path, e))?;
                    let name = components[i - 1].as_os_str();
                    if let Ok(target) = nix::fcntl::readlinkat(parent_fd.as_fd(), name) {
                        // A dangling symlink: create its target (resolved inside the root) instead.
                        let target = PathBuf::from(target);
                        let resolved = if target.is_absolute() { target } else { parent.join(target) };
                        let rest: PathBuf = components[i..].iter().collect();
                        return ensure_following(root, &resolved.join(rest), create, links + 1);
                    }
                    let made = if want_dir {
                        mkdirat(parent_fd.as_fd(), name, Mode::from_bits_truncate(0o755)).map(drop)
                    } else {
                        openat(parent_fd.as_fd(), name, OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::from_bits_truncate(0o644)).map(drop)
                    };
                    match made {
                        Ok(()) | Err(Errno::EEXIST) => continue,
                        Err(e) => return Err(resolve_error(path, e)),
                    }
                }
                Err(e) => return Err(resolve_error(path, e)),
            }
        }
    }
    unreachable!("the loop returns at the last component")
}

/// Opens an existing `path` inside `root` as an `O_PATH` descriptor.
pub(crate) fn open_path(root: &OwnedFd, path: &Path) -> Result<OwnedFd> {
    let rel = relative(path);
    let rel = if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel };
    openat2_retrying(root.as_fd(), &rel, how(OFlag::O_PATH)).map_err(|e| resolve_error(path, e))
}

/// What `path` inside `root` is, without following a symlink in its last component (its parents
/// resolve inside the root); `None` when it does not exist.
pub(crate) fn kind_in_root(root: &OwnedFd, path: &Path) -> Result<Option<nix::sys::stat::SFlag>> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return Ok(Some(nix::sys::stat::SFlag::S_IFDIR)) };
    let Some(parent) = open_if_present(root, parent)? else { return Ok(None) };
    match nix::sys::stat::fstatat(parent.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode & libc::S_IFMT))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(resolve_error(path, e)),
    }
}

/// Opens `path` inside `root` like [`open_path`]; `None` when it does not exist.
pub(crate) fn open_if_present(root: &OwnedFd, path: &Path) -> Result<Option<OwnedFd>> {
    match open_path(root, path) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.is_io_kind(std::io::ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

fn resolve_error(path: &Path, errno: Errno) -> Error {
    let reason = match errno {
        Errno::ENOTDIR => "a path component is not a directory".to_owned(),
        Errno::ELOOP => "too many symlinks".to_owned(),
        Errno::EXDEV => "resolves outside the container's root".to_owned(),
        e => e.desc().to_lowercase(),
    };
    // The kind stays the errno's (a caller may tolerate NotFound).
    let kind = std::io::Error::from(errno).kind();
    Error::io(format!("resolve {} inside the container root", path.display()), std::io::Error::new(kind, reason))
}

/// `/proc/self/fd/N`: mount(2) follows this magic link to exactly the file the descriptor names, so a
/// mount lands where the secure lookup found, not where a racing symlink swap would point.
pub(crate) fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Whether two descriptors name the same inode.
pub(crate) fn same_file(a: &OwnedFd, b: &OwnedFd) -> bool {
    match (fstat(a.as_fd()), fstat(b.as_fd())) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}
