//! Mount options as fstab-style strings, the mounts a caller hands in for the root filesystem
//! (containerd's snapshot mounts), and recursive unmounting.

use std::fs;
use std::path::{Path, PathBuf};

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::mount_api::{self, set_attributes, MountAttr, MOUNT_ATTR_RDONLY};

/// One mount of the container's root filesystem, as containerd passes it in Create: `target` is
/// relative to the rootfs directory (empty = the directory itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsMount {
    pub kind: String,
    pub source: String,
    pub target: String,
    pub options: Vec<String>,
}

/// Mount options split into flags for mount(2), propagation changes applied afterwards, and the
/// filesystem-specific data string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Flags that a bind mount only honours on a second, remounting call (`ro`, `nosuid`, …).
    pub bind_remount_flags: MsFlags,
    pub propagation: MsFlags,
    /// Attributes applied to the whole mount tree afterwards (`rro`, `rnosuid`, …: `mount_setattr`
    /// with `AT_RECURSIVE`), and the options that asked for them.
    pub recursive: MountAttr,
    pub recursive_options: Vec<String>,
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            bind_remount_flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            recursive: MountAttr::default(),
            recursive_options: Vec::new(),
            data: Vec::new(),
        }
    }
}

impl MountOptions {
    pub fn parse<S: AsRef<str>>(options: &[S]) -> MountOptions {
        let mut parsed = MountOptions::default();
        for option in options {
            let option = option.as_ref();
            match flag_of(option) {
                Some((flag, true)) => parsed.flags.remove(flag),
                Some((flag, false)) => parsed.flags.insert(flag),
                None => match (propagation_of(option), recursive_attribute_of(option)) {
                    (Some(p), _) => parsed.propagation.insert(p),
                    (None, Some((attribute, clears))) => {
                        // The atime attributes are one field: setting one replaces the others.
                        if attribute & mount_api::MOUNT_ATTR__ATIME != 0 || attribute == mount_api::MOUNT_ATTR_RELATIME {
                            parsed.recursive.attr_clr |= mount_api::MOUNT_ATTR__ATIME;
                        }
                        if clears {
                            parsed.recursive.attr_clr |= attribute;
                            parsed.recursive.attr_set &= !attribute;
                        } else {
                            parsed.recursive.attr_set |= attribute;
                        }
                        parsed.recursive_options.push(option.to_owned());
                    }
                    (None, None) => parsed.data.push(option.to_owned()),
                },
            }
        }
        parsed.bind_remount_flags = parsed.flags
            & (MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_NOATIME
                | MsFlags::MS_NODIRATIME
                | MsFlags::MS_RELATIME
                | MsFlags::MS_STRICTATIME);
        parsed
    }

    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// `(flag, clears)`: options that set a flag, or clear it (`rw`, `suid`, `dev`, …).
fn flag_of(option: &str) -> Option<(MsFlags, bool)> {
    Some(match option {
        "defaults" => (MsFlags::empty(), false),
        "ro" => (MsFlags::MS_RDONLY, false),
        "rw" => (MsFlags::MS_RDONLY, true),
        "suid" => (MsFlags::MS_NOSUID, true),
        "nosuid" => (MsFlags::MS_NOSUID, false),
        "dev" => (MsFlags::MS_NODEV, true),
        "nodev" => (MsFlags::MS_NODEV, false),
        "exec" => (MsFlags::MS_NOEXEC, true),
        "noexec" => (MsFlags::MS_NOEXEC, false),
        "sync" => (MsFlags::MS_SYNCHRONOUS, false),
        "async" => (MsFlags::MS_SYNCHRONOUS, true),
        "dirsync" => (MsFlags::MS_DIRSYNC, false),
        "remount" => (MsFlags::MS_REMOUNT, false),
        "mand" => (MsFlags::MS_MANDLOCK, false),
        "nomand" => (MsFlags::MS_MANDLOCK, true),
        "atime" => (MsFlags::MS_NOATIME, true),
        "noatime" => (MsFlags::MS_NOATIME, false),
        "diratime" => (MsFlags::MS_NODIRATIME, true),
        "nodiratime" => (MsFlags::MS_NODIRATIME, false),
        "relatime" => (MsFlags::MS_RELATIME, false),
        "norelatime" => (MsFlags::MS_RELATIME, true),
        "strictatime" => (MsFlags::MS_STRICTATIME, false),
        "nostrictatime" => (MsFlags::MS_STRICTATIME, true),
        "bind" => (MsFlags::MS_BIND, false),
        "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, false),
        _ => return None,
    })
}

/// The recursive mount attributes (`rro` … `rnosymfollow`, runc's names): `(attribute, clears)`.
pub(crate) const RECURSIVE_OPTIONS: &[(&str, u64, bool)] = &[
    ("rro", mount_api::MOUNT_ATTR_RDONLY, false),
    ("rrw", mount_api::MOUNT_ATTR_RDONLY, true),
    ("rnosuid", mount_api::MOUNT_ATTR_NOSUID, false),
    ("rsuid", mount_api::MOUNT_ATTR_NOSUID, true),
    ("rnodev", mount_api::MOUNT_ATTR_NODEV, false),
    ("rdev", mount_api::MOUNT_ATTR_NODEV, true),
    ("rnoexec", mount_api::MOUNT_ATTR_NOEXEC, false),
    ("rexec", mount_api::MOUNT_ATTR_NOEXEC, true),
    ("rnodiratime", mount_api::MOUNT_ATTR_NODIRATIME, false),
    ("rdiratime", mount_api::MOUNT_ATTR_NODIRATIME, true),
    ("rrelatime", mount_api::MOUNT_ATTR_RELATIME, false),
    ("rnorelatime", mount_api::MOUNT_ATTR_RELATIME, true),
    ("rnoatime", mount_api::MOUNT_ATTR_NOATIME, false),
    ("ratime", mount_api::MOUNT_ATTR_NOATIME, true),
    ("rstrictatime", mount_api::MOUNT_ATTR_STRICTATIME, false),
    ("rnostrictatime", mount_api::MOUNT_ATTR_STRICTATIME, true),
    ("rnosymfollow", mount_api::MOUNT_ATTR_NOSYMFOLLOW, false),
    ("rsymfollow", mount_api::MOUNT_ATTR_NOSYMFOLLOW, true),
];

fn recursive_attribute_of(option: &str) -> Option<(u64, bool)> {
    RECURSIVE_OPTIONS.iter().find(|(name, _, _)| *name == option).map(|&(_, attribute, clears)| (attribute, clears))
}

fn propagation_of(option: &str) -> Option<MsFlags> {
    Some(match option {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Where a mount goes. Each step of a mount (the mount, a remount, a propagation change) resolves it
/// anew, because after the first step the path must name the new mount, not what lay beneath.
pub trait MountTarget {
    /// A path naming the target now, and a descriptor that must stay open while the path is used.
    fn resolve(&self) -> Result<(PathBuf, Option<std::os::fd::OwnedFd>)>;
    fn describe(&self) -> String;
}

impl MountTarget for Path {
    fn resolve(&self) -> Result<(PathBuf, Option<std::os::fd::OwnedFd>)> {
        Ok((self.to_owned(), None))
    }

    fn describe(&self) -> String {
        self.display().to_string()
    }
}

/// Mounts `source` of filesystem `kind` on `target` with fstab-style `options`: a bind mount is
/// remounted to apply `ro`/`nosuid`/… and propagation is set last, as mount(8) does.
pub fn mount_with_options<T: MountTarget + ?Sized>(kind: &str, source: &str, target: &T, options: &[String]) -> Result<()> {
    let parsed = MountOptions::parse(options);
    let what = || format!("mount {kind} {source} on {} (options {})", target.describe(), options.join(","));
    let (path, _keep) = target.resolve()?;
    if parsed.is_bind() {
        mount(Some(source), &path, None::<&str>, parsed.flags, None::<&str>).context(what)?;
        if !parsed.bind_remount_flags.is_empty() {
            let (path, _keep) = target.resolve()?;
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | parsed.bind_remount_flags;
            match mount(None::<&str>, &path, None::<&str>, flags, None::<&str>) {
                // In a user namespace the source's nosuid/nodev/noexec/atime flags are locked: keep them.
                Err(nix::errno::Errno::EPERM) => {
                    mount(None::<&str>, &path, None::<&str>, flags | locked_flags(&path), None::<&str>).context(what)?
                }
                other => other.context(what)?,
            }
        }
    } else {
        let data = parsed.data_string();
        if data.as_ref().is_some_and(|d| d.len() >= page_size()) {
            return Err(Error::Unsupported(format!(
                "{}: mount data longer than a page ({} bytes)",
                what(),
                data.map_or(0, |d| d.len())
            )));
        }
        mount(Some(source), &path, Some(kind), parsed.flags, data.as_deref()).context(what)?;
    }
    if !parsed.propagation.is_empty() {
        let (path, _keep) = target.resolve()?;
        mount(None::<&str>, &path, None::<&str>, parsed.propagation, None::<&str>).context(what)?;
    }
    if parsed.recursive != MountAttr::default() {
        let (path, keep) = target.resolve()?;
        let fd = match keep {
            Some(fd) => fd,
            None => nix::fcntl::open(&path, nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).context(what)?,
        };
        // Never dropped silently: a kernel that cannot apply them (before 5.12, or an attribute it
        // does not know) makes the mount fail.
        set_attributes(fd.as_fd(), true, &parsed.recursive)
            .map_err(|e| Error::io(format!("{}: apply {} to the whole mount tree", what(), parsed.recursive_options.join(",")), e))?;
    }
    Ok(())
}

/// Makes the mount `fd` names read-only (with `recursive`, every mount below it too) and changes no
/// other flag, so that flags a user namespace may not clear are no obstacle.
pub fn set_read_only(fd: &OwnedFd, recursive: bool) -> Result<()> {
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, ..Default::default() };
    match set_attributes(fd.as_fd(), recursive, &attr) {
        Ok(()) => Ok(()),
        // Before Linux 5.12 mount(2) remounts the top mount only.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => remount_read_only(fd, MsFlags::empty()),
        Err(e) => Err(Error::io("remount read-only", e)),
    }
}

/// Remounts the mount `fd` names read-only with mount(2), adding `extra` and keeping the flags it has
/// that an unprivileged remount may not clear.
pub(crate) fn remount_read_only(fd: &OwnedFd, extra: MsFlags) -> Result<()> {
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra;
    mount(None::<&str>, &path, None::<&str>, flags | locked_flags(&path), None::<&str>).context(|| "remount read-only".into())
}

/// The flags of the mount at `path` that an unprivileged remount may not clear.
fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(stat) = statvfs(path) else { return MsFlags::empty() };
    let flags = stat.flags();
    [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ]
    .iter()
    .filter(|(st, _)| flags.contains(*st))
    .fold(MsFlags::empty(), |all, (_, ms)| all | *ms)
}

fn page_size() -> usize {
    // Mount data is copied by the kernel into a single page.
    4096
}

/// Mounts the caller's root filesystem mounts, in order, under `rootfs`. On failure, whatever was
/// mounted is unmounted again.
pub fn mount_rootfs(mounts: &[RootfsMount], rootfs: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if m.options.iter().any(|o| o == "loop") {
            unmount_recursive(rootfs)?;
            return Err(Error::Unsupported(format!(
                "rootfs mount {i} ({} {}): loop devices are not supported",
                m.kind, m.source
            )));
        }
        let target = join_inside(rootfs, &m.target);
        if let Err(e) = mount_with_options(&m.kind, &m.source, target.as_path(), &m.options) {
            let _ = unmount_recursive(rootfs);
            return Err(e);
        }
    }
    Ok(())
}

/// `base` joined with a relative path whose `..` components cannot climb above `base`.
pub fn join_inside(base: &Path, relative: &str) -> PathBuf {
    let mut parts: Vec<&str> = Vec::new();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.iter().fold(base.to_path_buf(), |path, p| path.join(p))
}

/// Mount points at or below `path`, deepest first, read from `/proc/self/mountinfo`.
pub fn mounts_under(path: &Path) -> Result<Vec<PathBuf>> {
    let info = fs::read_to_string("/proc/self/mountinfo").context(|| "read /proc/self/mountinfo".into())?;
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(path))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything mounted at or below `path` (stacked mounts included), deepest first. A mount
/// that stays busy is detached lazily. Nothing mounted is not an error.
pub fn unmount_recursive(path: &Path) -> Result<()> {
    for _ in 0..32 {
        let mounts = mounts_under(path)?;
        if mounts.is_empty() {
            return Ok(());
        }
        for target in mounts {
            match umount2(&target, MntFlags::empty()) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(nix::errno::Errno::EBUSY) => {
                    umount2(&target, MntFlags::MNT_DETACH).context(on_unmount(&target))?;
                }
                Err(e) => return Err(Error::io(on_unmount(&target)(), e)),
            }
        }
    }
    Err(Error::io(
        format!("unmount {}", path.display()),
        std::io::Error::other("mounts keep reappearing"),
    ))
}

fn on_unmount(path: &Path) -> impl FnOnce() -> String + '_ {
    move || format!("unmount {}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = MountOptions::parse(&["rbind", "ro", "nosuid", "rslave", "mode=755", "size=65536k"]);
        assert!(o.flags.contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID));
        assert_eq!(o.bind_remount_flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(o.data_string().as_deref(), Some("mode=755,size=65536k"));
        let o = MountOptions::parse(&["ro", "rw"]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn recursive_attributes_are_options_of_their_own() {
        let o = MountOptions::parse(&["rbind", "rro", "rnosuid", "rnoatime", "rdev", "size=1m"]);
        assert_eq!(o.recursive.attr_set, mount_api::MOUNT_ATTR_RDONLY | mount_api::MOUNT_ATTR_NOSUID | mount_api::MOUNT_ATTR_NOATIME);
        assert_eq!(o.recursive.attr_clr, mount_api::MOUNT_ATTR__ATIME | mount_api::MOUNT_ATTR_NODEV);
        assert_eq!(o.data, ["size=1m"]);
        assert_eq!(o.recursive_options, ["rro", "rnosuid", "rnoatime", "rdev"]);
        // rw after rro clears it again.
        assert_eq!(MountOptions::parse(&["rro", "rrw"]).recursive.attr_set, 0);
    }

    #[test]
    fn join_inside_never_climbs_out() {
        assert_eq!(join_inside(Path::new("/r"), "../../etc"), PathBuf::from("/r/etc"));
        assert_eq!(join_inside(Path::new("/r"), ""), PathBuf::from("/r"));
        assert_eq!(join_inside(Path::new("/r"), "a/./b/../c"), PathBuf::from("/r/a/c"));
    }

    #[test]
    fn mountinfo_unescapes_octal() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
    }
}
