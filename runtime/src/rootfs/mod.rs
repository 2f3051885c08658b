//! The container's filesystem view, built by its init inside the new mount namespace: the spec's
//! mounts on top of the root filesystem, the default device nodes, `pivot_root` into it with the old
//! root detached, then masked and read-only paths.

mod devices;
pub(crate) mod procfs;
pub(crate) mod resolve;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, fchdir, pivot_root};
use oci_spec::runtime::{Mount, Spec};

use crate::cgroups::Cgroup;
use crate::error::{Context, Error, Result};
use crate::mount_api;
use crate::mounts::{mount_with_options, set_read_only, MountOptions, MountTarget};
use procfs::Procfs;
use resolve::{ensure, fd_path, open_if_present, same_file, Create};

/// Builds the container's filesystem and pivots into it. Runs in the container's init, in its own
/// mount namespace.
/// `before_pivot` runs once the mounts are in place but the host's root is still visible (hooks).
pub(crate) fn prepare(spec: &Spec, rootfs: &Path, cgroup: Option<&Cgroup>, before_pivot: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    let linux = spec.linux().as_ref();
    // A spec without a mount namespace shares the runtime's: its mounts are made there (below the
    // rootfs), and nothing about the host's mounts may change.
    let own_mounts = crate::spec::namespace(spec, oci_spec::runtime::LinuxNamespaceType::Mount).is_some();
    if own_mounts {
        // Our mounts must not propagate back to the host; the spec can ask for other propagation.
        let propagation = linux
            .and_then(|l| l.rootfs_propagation().as_deref())
            .map(propagation_flags)
            .transpose()?
            .unwrap_or(MsFlags::MS_SLAVE);
        mount(None::<&str>, "/", None::<&str>, propagation | MsFlags::MS_REC, None::<&str>)
            .context(|| "set propagation of / in the container's mount namespace".into())?;
        // pivot_root needs the new root and its parent mount not to be shared.
        make_parent_mount_private(rootfs)?;
        mount(Some(rootfs), rootfs, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .context(|| format!("bind mount the rootfs {} onto itself", rootfs.display()))?;
    }

    let root = open(rootfs, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .context(|| format!("open rootfs {}", rootfs.display()))?;
    let mut dev_is_ours = false;
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        mount_in_root(&root, m, cgroup).map_err(|e| e.prefixed(&format!("mounts[{i}]")))?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            dev_is_ours = true;
        }
    }
    if dev_is_ours {
        devices::create_defaults(&root)?;
    }
    devices::create_from_spec(&root, linux.and_then(|l| l.devices().as_ref()).map(Vec::as_slice).unwrap_or(&[]))?;

    before_pivot()?;
    if own_mounts {
        enter_root(&root, rootfs)?;
    } else {
        // pivot_root would move the host's root: what runc does here is a chroot (validate.rs keeps
        // such a spec from asking for what would change the host's mounts).
        fchdir(root.as_fd()).context(|| format!("chdir into {}", rootfs.display()))?;
        nix::unistd::chroot(".").context(|| format!("chroot into {}", rootfs.display()))?;
        chdir("/").context(|| "chdir to the new root".into())?;
    }
    drop(root);
    // The new root starts private (pivot_root needs that); give it the propagation the spec asks for.
    if let Some(name) = linux.and_then(|l| l.rootfs_propagation().as_deref()).filter(|p| !p.is_empty()) {
        let recursive = if name.starts_with('r') { MsFlags::MS_REC } else { MsFlags::empty() };
        mount(None::<&str>, "/", None::<&str>, propagation_flags(name)? | recursive, None::<&str>)
            .context(|| format!("linux.rootfsPropagation: make / {name}"))?;
    }

    let root = open(Path::new("/"), OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).context(|| "open the container's root".into())?;
    if let Some(linux) = linux {
        if linux.sysctl().as_ref().is_some_and(|s| !s.is_empty()) {
            crate::sysctl::write_all(spec, &Procfs::open(Path::new("/proc")).map_err(|e| e.prefixed("linux.sysctl"))?)?;
        }
        for path in linux.readonly_paths().iter().flatten() {
            make_readonly(&root, Path::new(path)).map_err(|e| e.prefixed("linux.readonlyPaths"))?;
        }
        let masked = linux.masked_paths().as_deref().unwrap_or(&[]);
        if !masked.is_empty() {
            let null = NullDevice::open(&root).map_err(|e| e.prefixed("linux.maskedPaths"))?;
            for path in masked {
                mask_path(&root, Path::new(path), &null).map_err(|e| e.prefixed("linux.maskedPaths"))?;
            }
        }
    }
    if spec.root().as_ref().is_some_and(|r| r.readonly() == Some(true)) {
        set_read_only(&root, false).map_err(|e| e.prefixed("root.readonly"))?;
    }
    Ok(())
}

fn propagation_flags(name: &str) -> Result<MsFlags> {
    Ok(match name {
        "shared" | "rshared" => MsFlags::MS_SHARED,
        "slave" | "rslave" => MsFlags::MS_SLAVE,
        "private" | "rprivate" => MsFlags::MS_PRIVATE,
        "unbindable" | "runbindable" => MsFlags::MS_UNBINDABLE,
        other => return Err(Error::spec("linux.rootfsPropagation", format!("unknown propagation {other:?}"))),
    })
}

/// Makes the mount that holds `path` private (only in this namespace), so `pivot_root` accepts it:
/// the longest mount point that is a prefix of `path`, `path` itself included (containerd mounts the
/// overlay on the rootfs directory, and under `rshared` propagation that mount is shared).
fn make_parent_mount_private(path: &Path) -> Result<()> {
    let mut candidate = path.to_path_buf();
    let mounts = crate::mounts::mounts_under(Path::new("/"))?;
    loop {
        if mounts.iter().any(|m| m == &candidate) {
            return mount(None::<&str>, &candidate, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
                .context(|| format!("make mount {} private", candidate.display()));
        }
        if !candidate.pop() {
            return Ok(());
        }
    }
}

/// Mounts one spec mount at its destination, resolved inside the rootfs.
fn mount_in_root(root: &OwnedFd, m: &Mount, cgroup: Option<&Cgroup>) -> Result<()> {
    let kind = m.typ().as_deref().unwrap_or("");
    let options: Vec<String> = m.options().clone().unwrap_or_default();
    let parsed = MountOptions::parse(&options);
    let source = m.source().as_ref().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| kind.to_owned());
    let destination = m.destination();

    if kind == "cgroup" {
        return mount_cgroups(root, destination, &parsed, cgroup);
    }
    // proc and sysfs only on a directory of the image, never through a symlink or onto a file (runc's
    // rule: a symlinked /proc could put them elsewhere).
    if matches!(kind, "proc" | "sysfs") {
        if let Some(found) = resolve::kind_in_root(root, destination)?.filter(|k| *k != nix::sys::stat::SFlag::S_IFDIR) {
            let what = if found == nix::sys::stat::SFlag::S_IFLNK { "a symlink" } else { "not a directory" };
            return Err(Error::spec(format!("mount destination {}", destination.display()), format!("{kind} must be mounted on an ordinary directory; in the image it is {what}")));
        }
    }
    let is_bind = parsed.is_bind() || kind == "bind";
    // A bind mount of a file needs a file to land on; everything else lands on a directory.
    let create = if is_bind && !Path::new(&source).is_dir() { Create::File } else { Create::Directory };
    let target = ensure(root, destination, create)?;
    if matches!(kind, "proc" | "sysfs") && same_file(&target, root) {
        return Err(Error::spec(
            format!("mount destination {}", destination.display()),
            "resolves to the container's root directory (a symlink in the image?)",
        ));
    }
    let target = InRoot { root, path: destination };
    let mut options = options;
    if is_bind && !parsed.is_bind() {
        options.push("rbind".into());
    }
    match mount_with_options(if is_bind { "bind" } else { kind }, &source, &target, &options) {
        // Without its own network namespace a container may not mount sysfs: bind the host's instead,
        // with the same restrictions (what runc does).
        Err(e) if kind == "sysfs" && e.is_io_kind(std::io::ErrorKind::PermissionDenied) => {
            let mut bind = vec!["rbind".to_owned()];
            bind.extend(options.iter().filter(|o| matches!(o.as_str(), "ro" | "nosuid" | "nodev" | "noexec")).cloned());
            mount_with_options("bind", "/sys", &target, &bind)
        }
        other => other,
    }
    .map_err(|e| match e {
        Error::Io { source: error, .. } => Error::io(format!("mount {kind} {source} on {}", destination.display()), error),
        other => other,
    })
}

/// A mount destination inside the container's root, looked up securely at every step.
struct InRoot<'a> {
    root: &'a OwnedFd,
    path: &'a Path,
}

impl MountTarget for InRoot<'_> {
    fn resolve(&self) -> Result<(PathBuf, Option<OwnedFd>)> {
        let fd = resolve::open_path(self.root, self.path)?;
        Ok((fd_path(&fd), Some(fd)))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// The container's cgroups inside it. On a v1 (or hybrid) host: a tmpfs at the destination with the
/// container's own group of each hierarchy bind-mounted under the hierarchy's usual name, so the
/// container sees its limits and only its own processes. On a pure v2 host: cgroup2 itself at the
/// destination (in the container's cgroup namespace that is its own group), or, where it may not be
/// mounted (a user namespace without a cgroup namespace), its group bound there (as runc does).
fn mount_cgroups(root: &OwnedFd, destination: &Path, parsed: &MountOptions, cgroup: Option<&Cgroup>) -> Result<()> {
    let target = ensure(root, destination, Create::Directory)?;
    if let Some(unified) = cgroup.filter(|c| c.is_v2()).and_then(Cgroup::unified_dir) {
        return mount_cgroup2(&target, destination, parsed, &unified.dir);
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), &fd_path(&target), Some("tmpfs"), flags, Some("mode=755"))
        .context(|| format!("mount tmpfs for cgroups on {}", destination.display()))?;
    let mut bind_options: Vec<String> = ["bind", "nosuid", "nodev", "noexec"].map(String::from).to_vec();
    if parsed.flags.contains(MsFlags::MS_RDONLY) {
        bind_options.push("ro".into());
    }
    for dir in cgroup.map(|c| c.dirs.as_slice()).unwrap_or(&[]) {
        let Some(name) = dir.hierarchy.mount_point.file_name() else { continue };
        let sub = destination.join(name);
        ensure(root, &sub, Create::Directory)?;
        mount_with_options("bind", &dir.dir.to_string_lossy(), &InRoot { root, path: &sub }, &bind_options)?;
    }
    if parsed.flags.contains(MsFlags::MS_RDONLY) {
        let (path, _keep) = InRoot { root, path: destination }.resolve()?;
        mount(None::<&str>, &path, None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags, Some("mode=755"))
            .context(|| format!("remount {} read-only", destination.display()))?;
    }
    Ok(())
}

fn mount_cgroup2(target: &OwnedFd, destination: &Path, parsed: &MountOptions, own_group: &Path) -> Result<()> {
    let what = || format!("mount cgroup2 on {}", destination.display());
    let mut attributes = mount_api::MOUNT_ATTR_NOSUID | mount_api::MOUNT_ATTR_NODEV | mount_api::MOUNT_ATTR_NOEXEC;
    if parsed.flags.contains(MsFlags::MS_RDONLY) {
        attributes |= mount_api::MOUNT_ATTR_RDONLY;
    }
    let mounted = match mount_api::FsContext::open("cgroup2").and_then(|c| c.mount(attributes)) {
        Ok(fresh) => fresh,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EBUSY)) => {
            let source = open(own_group, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).context(|| format!("open {}", own_group.display()))?;
            let bound = mount_api::clone_tree(source.as_fd(), false).context(what)?;
            let attr = mount_api::MountAttr { attr_set: attributes, ..Default::default() };
            mount_api::set_attributes(bound.as_fd(), false, &attr).context(what)?;
            bound
        }
        Err(e) => return Err(Error::io(what(), e)),
    };
    mount_api::attach(mounted.as_fd(), target.as_fd()).context(what)
}

/// `pivot_root` into the rootfs and detach the old root, so nothing of the host stays reachable.
fn enter_root(root: &OwnedFd, rootfs: &Path) -> Result<()> {
    let old_root = open(Path::new("/"), OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .context(|| "open the old root".into())?;
    fchdir(root.as_fd()).context(|| format!("chdir into {}", rootfs.display()))?;
    // Pivoting "." onto "." stacks the old root on the new one; unmounting it then leaves the new root.
    pivot_root(".", ".").context(|| format!("pivot_root into {}", rootfs.display()))?;
    // From here "." must name the old root: mount(2) does not cross onto the mount stacked on the
    // cwd, so from the new root a propagation change would hit the container's own mounts (and make
    // a bidirectional volume a slave that no longer reaches the host).
    fchdir(old_root.as_fd()).context(|| "chdir into the old root".into())?;
    // The old root must not pass our unmount on to the host's mounts.
    mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
        .context(|| "make the old root a slave".into())?;
    umount2(".", MntFlags::MNT_DETACH).context(|| "detach the old root".into())?;
    drop(old_root);
    chdir("/").context(|| "chdir to the new root".into())?;
    Ok(())
}

/// The container's `/dev/null`, checked to be the null device (character device 1:3): masking binds
/// it over files, and an image must not get a file of its choosing bound there instead (a symlink to
/// a sysctl made a masked path a writable view of it: CVE-2025-31133).
struct NullDevice(OwnedFd);

impl NullDevice {
    fn open(root: &OwnedFd) -> Result<NullDevice> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let refused = |reason: &str| Error::io("open /dev/null in the container", std::io::Error::other(reason.to_owned()));
        let fd = openat2(root.as_fd(), "dev/null", how).map_err(|e| match e {
            nix::errno::Errno::ELOOP => refused("it is reached through a symlink"),
            other => refused(&other.desc().to_lowercase()),
        })?;
        let stat = nix::sys::stat::fstat(fd.as_fd()).context(|| "stat /dev/null in the container".into())?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFCHR || stat.st_rdev != nix::sys::stat::makedev(1, 3) {
            return Err(refused("it is not the null device (character device 1:3)"));
        }
        Ok(NullDevice(fd))
    }
}

/// Moves standard streams that are on the null device to the container's own `/dev/null`. The host's
/// (the shim's for a task without stdio) is the same device, but a file of a mount the container does
/// not have: CRIU could not checkpoint the container. Where the container's `/dev/null` is not the
/// null device, or `/proc` is missing to reopen it, the streams stay as they are.
pub(crate) fn null_stdio_from_container() -> Result<()> {
    let on_null = |fd: i32| {
        // SAFETY: fd 0, 1 or 2 is only borrowed to stat it.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nix::sys::stat::fstat(fd).is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFCHR && s.st_rdev == nix::sys::stat::makedev(1, 3))
    };
    let streams: Vec<i32> = (0..3).filter(|fd| on_null(*fd)).collect();
    if streams.is_empty() {
        return Ok(());
    }
    let root = open(Path::new("/"), OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).context(|| "open the container's root".into())?;
    let Ok(null) = NullDevice::open(&root) else { return Ok(()) };
    // Reopened from the checked O_PATH descriptor, so that nothing else is ever opened.
    let Ok(device) = open(fd_path(&null.0).as_path(), OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()) else { return Ok(()) };
    for fd in streams {
        // SAFETY: dup2 onto a standard stream of this single-threaded helper.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&device), fd) } < 0 {
            return Err(Error::io("use the container's /dev/null as stdio", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Hides a path: a directory gets an empty read-only tmpfs on top, anything else the null device.
/// The path is looked up inside the container once, and everything is mounted onto that descriptor.
fn mask_path(root: &OwnedFd, path: &Path, null: &NullDevice) -> Result<()> {
    let Some(target) = open_if_present(root, path)? else { return Ok(()) };
    let what = || format!("mask {}", path.display());
    let stat = nix::sys::stat::fstat(target.as_fd()).context(what)?;
    if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let tmpfs = mount_api::FsContext::open("tmpfs").and_then(|c| c.mount(mount_api::MOUNT_ATTR_RDONLY)).context(what)?;
        mount_api::attach(tmpfs.as_fd(), target.as_fd()).context(what)
    } else {
        mount_api::bind(null.0.as_fd(), target.as_fd()).context(what)
    }
}

/// Makes a path (and everything mounted below it) read-only, nosuid, nodev and noexec: a recursive
/// bind of it onto itself, made read-only before it is attached.
fn make_readonly(root: &OwnedFd, path: &Path) -> Result<()> {
    let Some(target) = open_if_present(root, path)? else { return Ok(()) };
    let what = || format!("make {} read-only", path.display());
    let tree = mount_api::clone_tree(target.as_fd(), true).context(what)?;
    let attr = mount_api::MountAttr {
        attr_set: mount_api::MOUNT_ATTR_RDONLY | mount_api::MOUNT_ATTR_NOSUID | mount_api::MOUNT_ATTR_NODEV | mount_api::MOUNT_ATTR_NOEXEC,
        ..Default::default()
    };
    match mount_api::set_attributes(tree.as_fd(), true, &attr) {
        Ok(()) => mount_api::attach(tree.as_fd(), target.as_fd()).context(what),
        // Before Linux 5.12: attach, then remount (what mount(2) can do: the top mount only).
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            mount_api::attach(tree.as_fd(), target.as_fd()).context(what)?;
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            crate::mounts::remount_read_only(&tree, flags).map_err(|e| e.prefixed(&what()))
        }
        Err(e) => Err(Error::io(what(), e)),
    }
}
