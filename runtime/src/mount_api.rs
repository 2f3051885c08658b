//! Linux's descriptor-based mount API (`open_tree`, `move_mount`, `mount_setattr`, `fsopen`,
//! `fsconfig`, `fsmount`), wrapped in small safe functions. Mounting by descriptor means a mount lands
//! on exactly the file a secure lookup found, never on whatever a path names a moment later.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `open_tree` flags.
pub const OPEN_TREE_CLONE: libc::c_uint = 1;
pub const AT_RECURSIVE: libc::c_uint = 0x8000;

/// `mount_setattr`/`fsmount` attributes.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR__ATIME: u64 = 0x70;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

fn c_string(text: &str) -> io::Result<CString> {
    CString::new(text).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{text:?} contains NUL")))
}

/// A system call's result as a new descriptor.
fn descriptor(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

fn status(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A detached copy of the mount (or, with `recursive`, the mount tree) at the file `fd` names.
pub fn clone_tree(fd: BorrowedFd<'_>, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: open_tree reads the empty NUL-terminated path and returns a new descriptor or -1.
    descriptor(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) })
}

/// Attaches the detached mount `tree` on top of the file or directory `target` names.
pub fn attach(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    let flags = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: move_mount reads two empty NUL-terminated paths; both descriptors are open.
    status(unsafe { libc::syscall(libc::SYS_move_mount, tree.as_raw_fd(), c"".as_ptr(), target.as_raw_fd(), c"".as_ptr(), flags) })
}

/// Bind-mounts the file `source` names onto the file `target` names, both by descriptor.
pub fn bind(source: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    let tree = clone_tree(source, false)?;
    attach(tree.as_fd(), target)
}

/// Changes the attributes of the mount `fd` names (with `recursive`, of every mount below it too).
pub fn set_attributes(fd: BorrowedFd<'_>, recursive: bool, attr: &MountAttr) -> io::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: mount_setattr reads the empty path and `attr` (of the size passed); `fd` is open.
    status(unsafe { libc::syscall(libc::SYS_mount_setattr, fd.as_raw_fd(), c"".as_ptr(), flags, attr as *const MountAttr, std::mem::size_of::<MountAttr>()) })
}

/// A filesystem being configured (`fsopen`), mounted detached with [`FsContext::mount`].
pub struct FsContext {
    fd: OwnedFd,
}

impl FsContext {
    pub fn open(filesystem: &str) -> io::Result<FsContext> {
        let name = c_string(filesystem)?;
        // SAFETY: fsopen reads the NUL-terminated name and returns a new descriptor or -1.
        Ok(FsContext { fd: descriptor(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })? })
    }

    pub fn set(&self, key: &str, value: &str) -> io::Result<()> {
        let (key, value) = (c_string(key)?, c_string(value)?);
        // SAFETY: fsconfig reads the two NUL-terminated strings; the context descriptor is ours.
        status(unsafe { libc::syscall(libc::SYS_fsconfig, self.fd.as_raw_fd(), FSCONFIG_SET_STRING, key.as_ptr(), value.as_ptr(), 0) })
    }

    /// Creates the superblock and returns a detached mount of it with `attributes`.
    pub fn mount(self, attributes: u64) -> io::Result<OwnedFd> {
        // SAFETY: fsconfig's create command takes no pointers; the context descriptor is ours.
        status(unsafe { libc::syscall(libc::SYS_fsconfig, self.fd.as_raw_fd(), FSCONFIG_CMD_CREATE, std::ptr::null::<libc::c_char>(), std::ptr::null::<libc::c_void>(), 0) })?;
        // SAFETY: fsmount takes the context descriptor and plain flags, and returns a new descriptor.
        descriptor(unsafe { libc::syscall(libc::SYS_fsmount, self.fd.as_raw_fd(), FSMOUNT_CLOEXEC, attributes) })
    }
}
