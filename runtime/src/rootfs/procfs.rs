//! Writing to the container's `/proc` only after checking that it is procfs.
//!
//! The runtime writes sysctls under `/proc/sys` and LSM labels under `/proc/<pid>/attr` from inside
//! the container's mount namespace. If `/proc` there were a directory of the image, a symlink, or a
//! mount another container or a racing process placed over part of it (CVE-2019-16884, CVE-2025-52881),
//! a label would be dropped silently or a write would land somewhere else. So `/proc` is opened
//! without following symlinks and must be the root of a procfs mount; files below it are opened
//! without crossing a mount or a symlink, and must be procfs files.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode};
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};

use crate::error::{Error, Result};

/// procfs gives its root directory inode number 1.
const PROC_ROOT_INODE: u64 = 1;

pub(crate) struct Procfs {
    root: OwnedFd,
    mount_point: PathBuf,
}

fn is_procfs(fd: &OwnedFd) -> bool {
    fstatfs(fd.as_fd()).is_ok_and(|s| s.filesystem_type() == PROC_SUPER_MAGIC)
}

impl Procfs {
    /// The procfs mounted at `mount_point` (`/proc` in the container), checked.
    pub(crate) fn open(mount_point: &Path) -> Result<Procfs> {
        let failure = |reason: String| Error::io(format!("open procfs at {}", mount_point.display()), std::io::Error::other(reason));
        let root = open(mount_point, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| failure(format!("{} (is it a directory, not a symlink?)", e.desc().to_lowercase())))?;
        if !is_procfs(&root) {
            return Err(failure("it is not a procfs mount".into()));
        }
        if fstat(root.as_fd()).map(|s| s.st_ino).ok() != Some(PROC_ROOT_INODE) {
            return Err(failure("it is a directory inside procfs, not its root".into()));
        }
        Ok(Procfs { root, mount_point: mount_point.to_owned() })
    }

    /// Opens `relative` (no `..`, no symlink, no mount crossed) and checks it is a procfs file.
    pub(crate) fn open_file(&self, relative: &Path, flags: OFlag) -> Result<OwnedFd> {
        let shown = self.mount_point.join(relative);
        let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW).resolve(
            ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_XDEV | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        let fd = openat2(self.root.as_fd(), relative, how).map_err(|e| {
            let reason = match e {
                nix::errno::Errno::EXDEV => "something is mounted over it (only procfs may be written)".to_owned(),
                nix::errno::Errno::ELOOP => "it is reached through a symlink".to_owned(),
                other => other.desc().to_lowercase(),
            };
            Error::io(format!("open {}", shown.display()), std::io::Error::other(reason))
        })?;
        if !is_procfs(&fd) {
            return Err(Error::io(format!("open {}", shown.display()), std::io::Error::other("not a procfs file")));
        }
        Ok(fd)
    }

    /// Writes `value` to `relative`, a procfs file.
    pub(crate) fn write(&self, relative: &Path, value: &str) -> Result<()> {
        let fd = self.open_file(relative, OFlag::O_WRONLY)?;
        std::fs::File::from(fd)
            .write_all(value.as_bytes())
            .map_err(|e| Error::io(format!("write {value:?} to {}", self.mount_point.join(relative).display()), e))
    }

    /// This process's directory in this procfs (`self` is a symlink, which [`Procfs::open_file`] does
    /// not follow): `<pid>` as this procfs's pid namespace numbers us.
    pub(crate) fn own_dir(&self) -> Result<PathBuf> {
        let target = readlinkat(self.root.as_fd(), "self").map_err(|e| Error::io(format!("read {}/self", self.mount_point.display()), e))?;
        let pid = target.to_string_lossy().into_owned();
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::io(format!("read {}/self", self.mount_point.display()), std::io::Error::other(format!("unexpected target {pid:?}"))));
        }
        Ok(PathBuf::from(pid))
    }
}
