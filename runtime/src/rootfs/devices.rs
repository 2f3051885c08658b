//! Device nodes in the container's `/dev`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use nix::unistd::symlinkat;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::resolve::ensure;
use super::resolve::Create;
use crate::error::{Error, Result};

/// The nodes every container gets in a fresh `/dev`: (name, major, minor).
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Links every Linux system expects in `/dev`.
const DEFAULT_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

pub(super) fn create_defaults(root: &OwnedFd) -> Result<()> {
    let dev = ensure(root, Path::new("/dev"), Create::Directory)?;
    for &(name, major, minor) in DEFAULT_DEVICES {
        make_node(&dev, name, SFlag::S_IFCHR, major, minor, 0o666, &Path::new("/dev").join(name))?;
    }
    for &(name, target) in DEFAULT_LINKS {
        match symlinkat(target, dev.as_fd(), name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(Error::io(format!("create /dev/{name} -> {target}"), e)),
        }
    }
    Ok(())
}

/// The spec's `linux.devices`, created at their paths inside the rootfs.
pub(super) fn create_from_spec(root: &OwnedFd, devices: &[LinuxDevice]) -> Result<()> {
    for device in devices {
        let path = device.path();
        let parent = path.parent().unwrap_or(Path::new("/"));
        let name = path.file_name().ok_or_else(|| Error::spec("linux.devices.path", format!("{} has no name", path.display())))?;
        // O_PATH descriptors serve as the directory of the *at calls.
        let dir = ensure(root, parent, Create::Directory)?;
        let kind = match device.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => return Err(Error::spec(format!("linux.devices {}", path.display()), "type \"a\" is not a device type")),
        };
        let mode = device.file_mode().unwrap_or(0o666);
        make_node(&dir, &name.to_string_lossy(), kind, device.major() as u64, device.minor() as u64, mode, path)?;
        let (uid, gid) = (device.uid().unwrap_or(0), device.gid().unwrap_or(0));
        nix::unistd::fchownat(dir.as_fd(), name, Some(uid.into()), Some(gid.into()), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io(format!("chown {}", path.display()), e))?;
    }
    Ok(())
}

/// Creates a device node; where that is not allowed (in a user namespace) the host's node at
/// `host_path` is bind-mounted onto an empty file instead, as runc does.
fn make_node(dir: &OwnedFd, name: &str, kind: SFlag, major: u64, minor: u64, mode: u32, host_path: &Path) -> Result<()> {
    match mknodat(dir.as_fd(), name, kind, Mode::from_bits_truncate(mode), makedev(major, minor)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(Errno::EPERM) => bind_host_node(dir, name, host_path),
        Err(e) => Err(Error::io(format!("create device node {name} ({major}:{minor})"), e)),
    }
}

fn bind_host_node(dir: &OwnedFd, name: &str, host_path: &Path) -> Result<()> {
    let what = || format!("bind the host's {} onto /dev/{name}", host_path.display());
    let target = nix::fcntl::openat(dir.as_fd(), name, nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC, Mode::from_bits_truncate(0o600))
        .map_err(|e| Error::io(what(), e))?;
    nix::mount::mount(Some(host_path), &super::resolve::fd_path(&target), None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).map_err(|e| Error::io(what(), e))
}
