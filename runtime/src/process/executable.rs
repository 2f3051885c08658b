//! The helper binary, opened so that nothing running it can be used to overwrite it.
//!
//! A helper starts as the runtime's own host binary and lives in the container's namespaces until it
//! execs the user's program; a program in the container can also make the kernel run that binary as
//! its interpreter (a script starting with `#!/proc/self/exe`, executed by the helper). CVE-2019-5736
//! showed that such a process's `/proc/<pid>/exe` can then be reopened for writing from inside the
//! container and the host binary replaced. Being non-dumpable covers the helper itself, not the
//! interpreter trick, and "the binary is busy" (ETXTBSY) is no defence once it stops running.
//!
//! So helpers are executed through a private, detached, read-only bind mount of the binary
//! (`open_tree` + `mount_setattr`, no mount namespace touched): every `/proc/<pid>/exe` leads to that
//! mount and opening it for writing fails with EROFS. Kernels older than 5.12 lack `mount_setattr`;
//! there the binary is copied into a sealed memfd (what runc does), which costs its size in memory.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `open_tree` flag: clone the mount (here, a bind mount of one file) instead of opening a path.
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `mount_setattr` attribute: read-only.
const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// How the binary is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// A detached read-only bind mount of the binary itself.
    ReadOnlyMount,
    /// A sealed in-memory copy.
    SealedCopy,
}

/// An executable the runtime starts helpers from, by descriptor (`execveat`), never by path.
#[derive(Debug)]
pub struct HelperExecutable {
    fd: OwnedFd,
    path: PathBuf,
    protection: Protection,
}

impl HelperExecutable {
    /// Opens `path` (the runtime's own binary is `/proc/self/exe`) behind a read-only mount, or, where
    /// the kernel cannot make one, as a sealed copy.
    pub fn open(path: &Path) -> Result<HelperExecutable> {
        match read_only_mount(path) {
            Ok(fd) => Ok(HelperExecutable { fd, path: path.to_owned(), protection: Protection::ReadOnlyMount }),
            Err(_) => HelperExecutable::sealed_copy(path),
        }
    }

    /// A sealed memfd copy of `path` (the fallback of [`HelperExecutable::open`]).
    pub fn sealed_copy(path: &Path) -> Result<HelperExecutable> {
        let fd = sealed_copy(path).map_err(|e| Error::io(format!("copy the helper binary {} into a sealed memfd", path.display()), e))?;
        Ok(HelperExecutable { fd, path: path.to_owned(), protection: Protection::SealedCopy })
    }

    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// The path the binary was opened from, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn read_only_mount(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open_tree reads the NUL-terminated path and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c_path.as_ptr(), OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let empty = c"";
    // SAFETY: mount_setattr reads `attr` (of the size passed) and the empty path; the descriptor is ours.
    let rc = unsafe {
        libc::syscall(libc::SYS_mount_setattr, fd.as_raw_fd(), empty.as_ptr(), libc::AT_EMPTY_PATH, &attr as *const MountAttr, std::mem::size_of::<MountAttr>())
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn sealed_copy(path: &Path) -> io::Result<OwnedFd> {
    let mut source = File::open(path)?;
    // SAFETY: memfd_create reads the NUL-terminated name and returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"myshim-helper".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a descriptor nobody else owns.
    let mut copy = unsafe { File::from_raw_fd(fd) };
    io::copy(&mut source, &mut copy)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(copy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    /// One check at a time: a descriptor one check opens for writing is inherited by a child the other
    /// forks meanwhile, and keeps the first check's exec failing with ETXTBSY until that child execs.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Writing the executable through its descriptor (where `/proc/<pid>/exe` of a process running it
    /// leads) fails with `expected`, at open or at write; a process can still run it.
    fn check(executable: &HelperExecutable, expected: i32) {
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let through_proc = format!("/proc/self/fd/{}", executable.raw_fd());
        let error = match OpenOptions::new().write(true).open(&through_proc) {
            Ok(mut file) => file.write_all(b"overwritten").expect_err("wrote into the helper binary"),
            Err(e) => e,
        };
        assert_eq!(error.raw_os_error(), Some(expected), "{error}");
        let output = std::process::Command::new(&through_proc).arg("--version").output().expect("run it");
        assert!(output.status.success());
    }

    #[test]
    fn a_read_only_mount_refuses_writes() {
        let executable = HelperExecutable::open(Path::new("/bin/true")).unwrap();
        assert_eq!(executable.protection(), Protection::ReadOnlyMount);
        check(&executable, libc::EROFS);
    }

    #[test]
    fn a_sealed_copy_refuses_writes() {
        let executable = HelperExecutable::sealed_copy(Path::new("/bin/true")).unwrap();
        check(&executable, libc::EPERM);
    }
}
