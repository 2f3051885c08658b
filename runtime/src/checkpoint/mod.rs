//! Checkpoint and restore with CRIU, as runc does them: a running (or paused) container's process
//! tree is dumped into an image directory, and a new container is made from such a directory, its
//! processes restored into the new container's cgroup, stdio and terminal.
//!
//! What CRIU must be told about a container, because only the runtime knows it:
//! * mounts whose source is on the host (the spec's bind mounts, the cgroup v1 directories bound
//!   into the container, device nodes) are *external*: dumped by name (their destination) and, at
//!   restore, bound from the new container's sources;
//! * namespaces the container joined by path (a pod's network namespace) are external too: CRIU
//!   leaves them alone at dump and puts the restored processes into the new container's at restore;
//! * the init's stdio pipes are replaced by the new container's (`descriptors.json` in the image
//!   records which pipes they were, as runc's does, so images are interchangeable);
//! * a terminal comes back as a new pty whose master CRIU hands over (`orphan-pts-master`).

pub mod criu;

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use myshim_protos::{CgroupRoot, CriuCgMode, CriuNotify, CriuOpts, CriuReq, CriuReqType, ExtMountMap, InheritFd};
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

pub use criu::Criu;

use crate::cgroups::{self, Cgroup};
use crate::container::{Container, CreateOptions, Runtime, Undo};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookState};
use crate::mounts::unmount_recursive;
use crate::rootfs::resolve::{ensure, fd_path, Create};
use crate::spec;
use crate::state::{validate_id, State};

/// Where runc (and so CRIU users) record the init's standard streams in an image.
pub const DESCRIPTORS_FILE: &str = "descriptors.json";
/// Descriptor numbers in CRIU's process of what it inherits: the new stdio, and the namespaces joined
/// by path. (The image and work directories are named by our own descriptor numbers: CRIU opens them
/// through `/proc/<its peer>/fd`.)
const STDIO_FD_BASE: RawFd = 10;
const NETNS_FD: RawFd = 13;
const PIDNS_FD: RawFd = 14;
/// The keys of external namespaces, runc's names.
const NETNS_KEY: &str = "extRootNetNS";
const PIDNS_KEY: &str = "extRootPidNS";

/// What CRIU does with the container's cgroups (runc's `--manage-cgroups-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupsMode {
    None,
    Props,
    Soft,
    Full,
    Strict,
    Ignore,
}

impl CgroupsMode {
    pub fn from_name(name: &str) -> Result<CgroupsMode> {
        Ok(match name {
            "none" => CgroupsMode::None,
            "props" => CgroupsMode::Props,
            "soft" => CgroupsMode::Soft,
            "full" => CgroupsMode::Full,
            "strict" => CgroupsMode::Strict,
            "ignore" => CgroupsMode::Ignore,
            other => return Err(Error::Unsupported(format!("cgroups mode {other:?}: one of none, props, soft, full, strict, ignore"))),
        })
    }

    fn to_criu(self) -> CriuCgMode {
        match self {
            CgroupsMode::None => CriuCgMode::CgNone,
            CgroupsMode::Props => CriuCgMode::Props,
            CgroupsMode::Soft => CriuCgMode::Soft,
            CgroupsMode::Full => CriuCgMode::Full,
            CgroupsMode::Strict => CriuCgMode::Strict,
            CgroupsMode::Ignore => CriuCgMode::Ignore,
        }
    }
}

/// Options shared by checkpoint and restore (runc's flags of the same names).
#[derive(Debug, Clone, Default)]
pub struct CriuOptions {
    /// The image directory: written by checkpoint, read by restore.
    pub image_path: PathBuf,
    /// Where CRIU writes its log and statistics; the image directory when unset.
    pub work_path: Option<PathBuf>,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    /// The container's terminal is the caller's (`--shell-job`).
    pub shell_job: bool,
    pub file_locks: bool,
    pub cgroups_mode: Option<CgroupsMode>,
    /// Namespaces CRIU makes empty instead of restoring (only `network` is supported, as by runc).
    pub empty_namespaces: Vec<String>,
    pub auto_dedup: bool,
}

/// A checkpoint's own options.
#[derive(Debug, Clone, Default)]
pub struct CheckpointOptions {
    pub criu: CriuOptions,
    /// The container goes on running after the dump (else CRIU kills it once dumped).
    pub leave_running: bool,
    /// Only the memory is dumped, for a later dump that names this one as its parent.
    pub pre_dump: bool,
    /// A previous (pre-)dump, relative to the image directory, that this dump builds on.
    pub parent_path: Option<PathBuf>,
}

impl CriuOptions {
    fn empty_ns_flags(&self) -> Result<u32> {
        let mut flags = 0;
        for name in &self.empty_namespaces {
            match name.as_str() {
                "network" | "net" => flags |= libc::CLONE_NEWNET as u32,
                other => return Err(Error::Unsupported(format!("empty namespace {other:?}: only network can be restored empty"))),
            }
        }
        Ok(flags)
    }

    fn base_opts(&self, dirs: &Dirs, log_file: &str) -> Result<CriuOpts> {
        Ok(CriuOpts {
            images_dir_fd: dirs.images.as_raw_fd(),
            work_dir_fd: Some(dirs.work.as_raw_fd()),
            log_level: Some(4),
            log_file: Some(log_file.into()),
            manage_cgroups: Some(true),
            manage_cgroups_mode: self.cgroups_mode.map(|m| m.to_criu() as i32),
            notify_scripts: Some(true),
            orphan_pts_master: Some(true),
            shell_job: Some(self.shell_job),
            tcp_established: Some(self.tcp_established),
            ext_unix_sk: Some(self.ext_unix_sk),
            file_locks: Some(self.file_locks),
            empty_ns: Some(self.empty_ns_flags()?),
            auto_dedup: Some(self.auto_dedup),
            ..Default::default()
        })
    }

    fn work_dir(&self) -> &Path {
        self.work_path.as_deref().unwrap_or(&self.image_path)
    }
}

/// Whether the checkpointed init had a terminal (its stdio on a pty), from the image's
/// `descriptors.json`; `None` when the image does not say.
pub fn image_has_terminal(image_path: &Path) -> Option<bool> {
    let names: Vec<String> = serde_json::from_slice(&fs::read(image_path.join(DESCRIPTORS_FILE)).ok()?).ok()?;
    Some(names.iter().take(3).any(|n| n.starts_with("/dev/pts/") || n == "/dev/console"))
}

/// Copies the files of image directory `from` into `to` (made if missing): CRIU's images are one flat
/// directory.
pub fn copy_image(from: &Path, to: &Path) -> Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(to).context(|| format!("create {}", to.display()))?;
    for entry in fs::read_dir(from).context(|| format!("read {}", from.display()))? {
        let entry = entry.context(|| format!("read {}", from.display()))?;
        if entry.file_type().context(|| format!("stat {}", entry.path().display()))?.is_file() {
            let target = to.join(entry.file_name());
            fs::copy(entry.path(), &target).context(|| format!("copy {} to {}", entry.path().display(), target.display()))?;
        }
    }
    Ok(())
}

/// The image and work directories, open for CRIU.
struct Dirs {
    images: OwnedFd,
    work: OwnedFd,
}

/// A directory opened for CRIU, created (0700) when missing.
fn open_dir(path: &Path, what: &str, create: bool) -> Result<OwnedFd> {
    if create {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(path).context(|| format!("{what} {}: create", path.display()))?;
        nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).context(|| format!("{what} {}: not writable", path.display()))?;
    }
    open(path, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).context(|| format!("{what} {}: open", path.display()))
}

/// CRIU's failure as an error naming its log, with the log's last error lines (the directory may be
/// gone by the time someone reads it).
fn criu_failure(what: String, response: &myshim_protos::CriuResp, log: PathBuf) -> Error {
    let mut reason = response.cr_errmsg.clone().filter(|m| !m.is_empty() && !is_not_a_cause(m)).unwrap_or_else(|| match response.cr_errno {
        Some(errno) if errno != 0 => format!("criu failed: {}", crate::error::lower(&std::io::Error::from_raw_os_error(errno))),
        _ => "criu failed".to_owned(),
    });
    let errors: Vec<String> = fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| l.contains("Error") && !is_not_a_cause(l)).map(str::to_owned).collect();
    if let Some(last) = errors.iter().rev().take(3).rev().cloned().reduce(|a, b| format!("{a}; {b}")) {
        reason = format!("{reason}: {last}");
    }
    Error::Criu { what, reason, log }
}

/// CRIU logs its failure to raise its own descriptor limit (where root lacks CAP_SYS_RESOURCE) as an
/// error and carries on; as the first error, it would stand in CRIU's message for the real one.
fn is_not_a_cause(line: &str) -> bool {
    line.contains("Can't setup RLIMIT_NOFILE for self")
}

/// The namespace of `typ` the spec joins by path, with the key CRIU knows it by.
fn joined_namespaces(spec: &Spec) -> Vec<(LinuxNamespaceType, PathBuf, &'static str, RawFd)> {
    [(LinuxNamespaceType::Network, NETNS_KEY, NETNS_FD), (LinuxNamespaceType::Pid, PIDNS_KEY, PIDNS_FD)]
        .into_iter()
        .filter_map(|(typ, key, fd)| spec::namespace(spec, typ).flatten().map(|path| (typ, path, key, fd)))
        .collect()
}

/// The container's mounts whose source is on the host, by name (their destination in the container)
/// with their source: the spec's bind mounts, its cgroup v1 directories (bound under the cgroup
/// mount's destination, see rootfs), and its device nodes (bound where they cannot be made). A dump
/// names them; a restore binds them from the spec's sources and `cgroup`'s directories.
fn external_mounts(spec: &Spec, cgroup: Option<&Cgroup>) -> Vec<ExtMountMap> {
    let mut mounts = Vec::new();
    let entry = |key: &Path, val: &Path| ExtMountMap { key: key.display().to_string(), val: val.display().to_string() };
    for m in spec.mounts().iter().flatten() {
        let kind = m.typ().as_deref().unwrap_or("");
        let options = m.options().as_deref().unwrap_or(&[]);
        let is_bind = kind == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        if is_bind {
            mounts.push(entry(m.destination(), m.source().as_deref().unwrap_or(m.destination())));
        } else if kind == "cgroup" {
            for dir in cgroup.filter(|c| !c.is_v2()).map(|c| c.dirs.as_slice()).unwrap_or(&[]) {
                if let Some(name) = dir.hierarchy.mount_point.file_name() {
                    mounts.push(entry(&m.destination().join(name), &dir.dir));
                }
            }
        }
    }
    for device in spec.linux().as_ref().and_then(|l| l.devices().as_ref()).into_iter().flatten() {
        mounts.push(entry(device.path(), device.path()));
    }
    mounts
}

/// The init's descriptors 0, 1 and 2 as `/proc` names them (`pipe:[123]`, `/dev/null`, …).
fn stdio_names(pid: u32) -> Vec<String> {
    (0..3).map(|fd| fs::read_link(format!("/proc/{pid}/fd/{fd}")).map(|p| p.display().to_string()).unwrap_or_default()).collect()
}

impl Container {
    /// Dumps the container's processes into `options.criu.image_path` with CRIU. The container must
    /// be running or paused; when the dump fails it is left as it was (CRIU resumes what it froze).
    /// Without `leave_running`, CRIU kills the processes once they are dumped.
    pub fn checkpoint(&self, runtime: &Runtime, criu: &Criu, options: &CheckpointOptions) -> Result<()> {
        let state = self.state();
        let id = &state.id;
        if self.is_created() {
            return Err(Error::State { id: id.clone(), reason: "is created but not started: only a running or paused container can be checkpointed".into() });
        }
        if !state.init_is_alive() {
            return Err(Error::State { id: id.clone(), reason: "is not running: only a running or paused container can be checkpointed".into() });
        }
        let spec = spec::load(&state.bundle)?;
        let work_dir = options.criu.work_dir().to_owned();
        let dirs = Dirs { images: open_dir(&options.criu.image_path, "checkpoint image path", true)?, work: open_dir(&work_dir, "checkpoint work path", true)? };
        criu.version(runtime.waiter.as_ref())?;

        let log_file = if options.pre_dump { "pre-dump.log" } else { "dump.log" };
        let mut opts = options.criu.base_opts(&dirs, log_file)?;
        opts.pid = Some(state.pid as i32);
        opts.root = Some(state.rootfs.display().to_string());
        opts.leave_running = Some(options.leave_running || options.pre_dump);
        opts.parent_img = options.parent_path.as_ref().map(|p| p.display().to_string());
        if let Some(cgroup) = &state.cgroup {
            // Paused or not, CRIU freezes through the container's freezer (and leaves it as it found it).
            opts.freeze_cgroup = cgroup.dir_of("freezer").or_else(|| cgroup.unified_dir().map(|d| d.dir.as_path())).map(|d| d.display().to_string());
        }
        for (typ, _, key, _) in joined_namespaces(&spec) {
            let name = if typ == LinuxNamespaceType::Network { "net" } else { "pid" };
            let link = format!("/proc/{}/ns/{name}", state.pid);
            let inode = fs::metadata(&link).context(|| format!("container {id}: stat {link}"))?.ino();
            opts.external.push(format!("{name}[{inode}]:{key}"));
        }
        let request_type = if options.pre_dump {
            opts.track_mem = Some(true);
            CriuReqType::PreDump
        } else {
            // At dump an external mount's value is the name it is known by in the image.
            opts.ext_mnt = external_mounts(&spec, state.cgroup.as_ref()).into_iter().map(|m| ExtMountMap { val: m.key.clone(), ..m }).collect();
            // runc's record of the init's stdio, which restore hands new pipes for.
            let names = serde_json::to_vec(&stdio_names(state.pid)).map_err(|e| Error::io("encode descriptors", std::io::Error::other(e)))?;
            let path = options.criu.image_path.join(DESCRIPTORS_FILE);
            fs::write(&path, names).context(|| format!("write {}", path.display()))?;
            CriuReqType::Dump
        };
        let request = CriuReq { r#type: request_type as i32, opts: Some(opts), ..Default::default() };
        let response = criu.call(runtime.waiter.as_ref(), request, &[], &mut |_, _| Ok(()), &mut |_, _| Ok(()))?;
        if !response.success {
            return Err(criu_failure(format!("container {id}: checkpoint"), &response, work_dir.join(log_file)));
        }
        Ok(())
    }

    /// Makes container `create.id` from the bundle, as create does, with the processes of the
    /// checkpoint in `options.image_path` restored into it instead of a new init: running, in the new
    /// container's cgroup, with `create.stdio` in place of the dumped stdio pipes, and, for a
    /// terminal, a new pty whose master [`Container::take_console`] returns.
    pub fn restore(runtime: &Runtime, criu: &Criu, create: CreateOptions<'_>, options: &CriuOptions) -> Result<Container> {
        validate_id(create.id)?;
        let spec = spec::load(create.bundle)?;
        crate::validate::validate(&spec)?;
        if !options.image_path.join("inventory.img").is_file() {
            return Err(Error::Unsupported(format!("checkpoint image {}: not a checkpoint (no inventory.img)", options.image_path.display())));
        }
        let dirs = Dirs { images: open_dir(&options.image_path, "checkpoint image path", false)?, work: open_dir(options.work_dir(), "restore work path", true)? };
        criu.version(runtime.waiter.as_ref())?;
        let mut undo = Undo::claim_state_dir(create.id, &create.state_dir)?;
        let restored = restore_in(runtime, criu, &spec, &create, options, &dirs, &mut undo)?;
        undo.disarm();
        Ok(restored)
    }
}

fn restore_in(runtime: &Runtime, criu: &Criu, spec: &Spec, create: &CreateOptions<'_>, options: &CriuOptions, dirs: &Dirs, undo: &mut Undo) -> Result<Container> {
    let id = create.id;
    let rootfs = undo.mount_rootfs(spec, create)?;
    let linux = spec.linux().as_ref();
    let cgroups_path = linux.and_then(|l| l.cgroups_path().as_ref()).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let resources = linux.and_then(|l| l.resources().as_ref());
    let unit = create.cgroup_driver.unit_for(&cgroups_path, id)?;
    let hierarchies = cgroups::hierarchies();
    if unit.is_none() && !hierarchies.is_empty() {
        undo.cgroup = Some(Cgroup::create_in(hierarchies, &cgroups_path, id)?);
    }

    // CRIU restores into a view of the rootfs of its own, with the mount points of the spec's mounts
    // made (the image's root has none of the mounts) and bind mounts in place (mounts inside them
    // need their mount points too). Private, so nothing made there reaches the host's rootfs.
    let view = RestoreRoot::prepare(&create.state_dir.join("criu-root"), &rootfs, spec)?;

    let mut opts = options.base_opts(dirs, "restore.log")?;
    opts.root = Some(view.path.display().to_string());
    opts.rst_sibling = Some(true);
    opts.evasive_devices = Some(true);
    let stdio = [&create.stdio.stdin, &create.stdio.stdout, &create.stdio.stderr];
    let recorded: Vec<String> = fs::read(options.image_path.join(DESCRIPTORS_FILE)).ok().and_then(|t| serde_json::from_slice(&t).ok()).unwrap_or_default();
    for (fd, name) in recorded.iter().enumerate().take(3) {
        if name.contains("pipe:") {
            opts.inherit_fd.push(InheritFd { key: name.clone(), fd: STDIO_FD_BASE + fd as RawFd });
        }
    }
    let mut namespace_files = Vec::new();
    for (_, path, key, fd) in joined_namespaces(spec) {
        namespace_files.push((OwnedFd::from(fs::File::open(&path).context(|| format!("open namespace {}", path.display()))?), fd));
        opts.inherit_fd.push(InheritFd { key: key.into(), fd });
    }
    let mut placed: Vec<(&OwnedFd, RawFd)> = stdio.iter().zip(STDIO_FD_BASE..).map(|(fd, n)| (*fd, n)).collect();
    placed.extend(namespace_files.iter().map(|(file, n)| (file, *n)));

    let annotations = spec.annotations().clone().unwrap_or_default();
    let mut restored_pid = None;
    let mut console = None;
    let mut on_spawn = |criu_pid: u32, request: &mut CriuReq| -> Result<()> {
        undo.pids.push(criu_pid);
        // CRIU itself goes into the new group (what it forks starts there) and restores the tasks
        // into the dumped groups below the new group's roots.
        let cgroup = match &unit {
            Some(unit) => {
                cgroups::systemd::start(unit, id, criu_pid, resources)?;
                undo.cgroup = Some(Cgroup { path: cgroups_path.clone(), dirs: Vec::new(), unit: Some(unit.clone()) });
                let placed = Cgroup::of_unit(hierarchies, &cgroups_path, unit)?;
                undo.cgroup = Some(placed.clone());
                placed
            }
            None => match undo.cgroup.clone() {
                Some(cgroup) => cgroup,
                None => return Ok(()),
            },
        };
        cgroup.add_process(criu_pid)?;
        if let Some(resources) = resources {
            cgroup.apply(resources)?;
        }
        let opts = request.opts.as_mut().expect("restore options");
        opts.ext_mnt = external_mounts(spec, Some(&cgroup));
        for dir in &cgroup.dirs {
            let path = Path::new("/").join(dir.dir.strip_prefix(&dir.hierarchy.mount_point).unwrap_or(&dir.dir));
            let ctrl = (!dir.hierarchy.unified).then(|| dir.hierarchy.controllers.join(","));
            opts.cg_root.push(CgroupRoot { ctrl, path: path.display().to_string() });
        }
        Ok(())
    };
    let mut on_notify = |notify: &CriuNotify, mut fds: Vec<OwnedFd>| -> Result<()> {
        match notify.script.as_deref() {
            // The namespaces exist, nothing runs yet: createRuntime and prestart hooks, as runc.
            Some("setup-namespaces") => {
                if let Some(hooks) = spec.hooks() {
                    let state = HookState { oci_version: crate::features::OCI_VERSION_MAX, id, status: "creating", pid: notify.pid.unwrap_or(0) as u32, bundle: create.bundle, annotations: &annotations }.to_json();
                    for (phase, list) in [("prestart", hooks.prestart()), ("createRuntime", hooks.create_runtime())] {
                        hooks::run(list.as_deref().unwrap_or(&[]), phase, &state, &hooks::own_environment(), runtime.waiter.as_ref())?;
                    }
                }
            }
            Some("post-restore") => restored_pid = notify.pid.map(|p| p as u32),
            Some("orphan-pts-master") => {
                console = Some(fds.pop().ok_or_else(|| Error::Init("criu's terminal master did not arrive".into()))?);
            }
            _ => {}
        }
        Ok(())
    };
    let request = CriuReq { r#type: CriuReqType::Restore as i32, opts: Some(opts), ..Default::default() };
    let response = criu.call(runtime.waiter.as_ref(), request, &placed, &mut on_spawn, &mut on_notify);
    drop(view);
    let response = response?;
    if !response.success {
        return Err(criu_failure(format!("container {id}: restore"), &response, options.work_dir().join("restore.log")));
    }
    let pid = restored_pid.or(response.restore.map(|r| r.pid as u32)).filter(|p| *p > 0).ok_or_else(|| Error::Init(format!("container {id}: criu restored no process")))?;
    undo.pids.push(pid);
    undo.console = console;

    let state = State::of_new_container(spec, create, rootfs, undo.rootfs_mounted.is_some(), pid, undo.cgroup.clone());
    state.save(&create.state_dir)?;
    Ok(Container::restored(state, create.state_dir.clone(), undo.console.take()))
}

/// The rootfs as CRIU restores into it: bound at `path` (private), with the spec's mount points made
/// and its bind mounts in place. Unmounted and removed when dropped.
struct RestoreRoot {
    path: PathBuf,
}

impl RestoreRoot {
    fn prepare(path: &Path, rootfs: &Path, spec: &Spec) -> Result<RestoreRoot> {
        fs::create_dir(path).context(|| format!("create {}", path.display()))?;
        let view = RestoreRoot { path: path.to_owned() };
        mount(Some(rootfs), path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .context(|| format!("bind the rootfs {} to {}", rootfs.display(), path.display()))?;
        mount(None::<&str>, path, None::<&str>, MsFlags::MS_PRIVATE | MsFlags::MS_REC, None::<&str>).context(|| format!("make {} private", path.display()))?;
        let root = open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).context(|| format!("open {}", path.display()))?;
        let mounts = spec.mounts().as_deref().unwrap_or(&[]);
        // A tmpfs's content comes back from the image: mount points below one need not exist.
        let tmpfs: Vec<&Path> = mounts.iter().filter(|m| m.typ().as_deref() == Some("tmpfs")).map(|m| m.destination().as_path()).collect();
        for m in mounts {
            let destination = m.destination();
            if tmpfs.iter().any(|t| destination != *t && destination.starts_with(t)) {
                continue;
            }
            let options = m.options().as_deref().unwrap_or(&[]);
            let is_bind = m.typ().as_deref() == Some("bind") || options.iter().any(|o| o == "bind" || o == "rbind");
            let source = m.source().clone().unwrap_or_default();
            let create = if is_bind && !source.is_dir() { Create::File } else { Create::Directory };
            let target = ensure(&root, destination, create).map_err(|e| e.prefixed("restore: mount point"))?;
            if is_bind {
                mount(Some(&source), &fd_path(&target), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                    .context(|| format!("restore: bind {} on {}", source.display(), destination.display()))?;
            }
        }
        drop(root);
        Ok(view)
    }
}

impl Drop for RestoreRoot {
    fn drop(&mut self) {
        let _ = unmount_recursive(&self.path);
        let _ = fs::remove_dir(&self.path);
    }
}
