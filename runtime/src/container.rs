//! A container's lifecycle as seen by the runtime's caller: create (everything up to the user's
//! program), start, signal, destroy. State lives in a directory the caller chooses, so any later
//! process can pick the container up again with [`Container::load`].

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Process, Spec};

use std::sync::Arc;

use crate::cgroups::{self, Cgroup};
use crate::hooks::{self, ChildWaiter, DirectWaiter, HookState};
use crate::error::{Context, Error, Result};
use crate::mounts::{mount_rootfs, unmount_recursive, RootfsMount};
use crate::process::channel::{Channel, Directive, Report};
use crate::process::init::InitPlan;
use crate::process::exec::{ExecPlan, JOIN_ORDER};
use crate::process::executable::HelperExecutable;
use crate::process::{clone_flag, spawn, HELPER_ARG, MODE_EXEC, MODE_INIT};
use crate::spec;
use crate::state::{validate_id, State, EXEC_FIFO};

/// How long the init may take to set up the container before create gives up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long start waits for the init to pass the exec fifo and exec the program.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long destroy waits for the container's processes to die.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(5);

/// How the runtime starts and waits for processes: helpers run the caller's own binary (whose `main`
/// calls [`crate::process::run_helper_if_requested`] first), and the caller has its way of waiting
/// for its children (hooks).
#[derive(Clone)]
pub struct Runtime {
    helper: Arc<OwnBinary>,
    pub waiter: Arc<dyn ChildWaiter>,
}

impl Runtime {
    pub fn with_waiter(waiter: Arc<dyn ChildWaiter>) -> Runtime {
        Runtime { helper: Arc::default(), waiter }
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::with_waiter(Arc::new(DirectWaiter))
    }
}

/// This process's executable, opened for helpers on first use and kept open.
#[derive(Default)]
struct OwnBinary(std::sync::Mutex<Option<Arc<HelperExecutable>>>);

impl OwnBinary {
    fn get(&self) -> Result<Arc<HelperExecutable>> {
        let mut opened = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(executable) = opened.as_ref() {
            return Ok(executable.clone());
        }
        let executable = Arc::new(HelperExecutable::open(Path::new("/proc/self/exe"))?);
        *opened = Some(executable.clone());
        Ok(executable)
    }
}

/// The container's standard streams: what its init gets as descriptors 0, 1 and 2.
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Stdio {
    /// All three on `/dev/null`.
    pub fn null() -> Result<Stdio> {
        let null = || -> Result<OwnedFd> {
            Ok(File::options().read(true).write(true).open("/dev/null").context(|| "open /dev/null".into())?.into())
        };
        Ok(Stdio { stdin: null()?, stdout: null()?, stderr: null()? })
    }
}

pub struct CreateOptions<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    /// A directory that does not exist yet; the runtime creates it and keeps the container's state there.
    pub state_dir: PathBuf,
    /// Mounts that make up the root filesystem, mounted at the spec's root path; empty = use that path as is.
    pub rootfs_mounts: &'a [RootfsMount],
    pub stdio: Stdio,
    /// Who makes the container's cgroup (a systemd-form cgroups path means systemd either way).
    pub cgroup_driver: cgroups::Driver,
    /// Descriptors the program gets at 3, 4, … (`--preserve-fds`).
    pub preserved_fds: Vec<OwnedFd>,
}

/// A created (or started) container.
pub struct Container {
    state: State,
    state_dir: PathBuf,
    /// The init's end of the control channel, while this process holds it (the creator, until start).
    control: Option<Channel>,
    /// The master of the init's terminal, until the caller takes it.
    console: Option<OwnedFd>,
}

impl Container {
    /// Creates the container up to the point where only the user's program is missing: namespaces,
    /// cgroup, mounts and `pivot_root` are done and the init waits for [`Container::start`]. On any
    /// failure everything made so far is undone.
    pub fn create(runtime: &Runtime, options: CreateOptions<'_>) -> Result<Container> {
        validate_id(options.id)?;
        let spec = spec::load(options.bundle)?;
        crate::validate::validate(&spec)?;
        // Undone when dropped: on an error, and also when something panics on the way.
        let mut undo = Undo::claim_state_dir(options.id, &options.state_dir)?;
        let state = create_in(runtime, &spec, &options, &mut undo)?;
        undo.disarm();
        Ok(Container { state, state_dir: options.state_dir, control: undo.control.take(), console: undo.console.take() })
    }

    /// A container whose processes CRIU restored (see [`crate::checkpoint`]).
    pub(crate) fn restored(state: State, state_dir: PathBuf, console: Option<OwnedFd>) -> Container {
        Container { state, state_dir, control: None, console }
    }

    /// Picks up a container from its state directory.
    pub fn load(state_dir: &Path) -> Result<Container> {
        let state = State::load(state_dir)?;
        Ok(Container { state, state_dir: state_dir.to_owned(), control: None, console: None })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn pid(&self) -> u32 {
        self.state.pid
    }

    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.state.cgroup.as_ref()
    }

    /// Whether the init still waits for start.
    pub fn is_created(&self) -> bool {
        self.state_dir.join(EXEC_FIFO).exists() && self.state.init_is_alive()
    }

    /// Lets the init exec the user's program. Returns once the program runs (its execve closed the
    /// exec fifo), or with the reason it could not.
    pub fn start(&mut self, runtime: &Runtime) -> Result<()> {
        let fifo_path = self.state_dir.join(EXEC_FIFO);
        let fifo = match open(&fifo_path, OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => {
                return Err(Error::State { id: self.state.id.clone(), reason: "already started".into() })
            }
            Err(e) => return Err(Error::io(format!("open {}", fifo_path.display()), e)),
        };
        let passed = wait_until_exec(&fifo, START_TIMEOUT);
        let _ = fs::remove_file(&fifo_path);
        match passed {
            Ok(true) => {}
            Ok(false) => {
                return Err(self.failure_from_init().unwrap_or_else(|| Error::State {
                    id: self.state.id.clone(),
                    reason: "the container's init exited before it was started".into(),
                }))
            }
            Err(e) => return Err(Error::io(format!("container {}: wait for the init at start", self.state.id), e)),
        }
        if let Some(e) = self.failure_from_init() {
            return Err(e);
        }
        self.state.run_late_hooks("poststart", "running", runtime.waiter.as_ref());
        Ok(())
    }

    /// After start: reads the control channel until the init's exec closes it, or the init reports why
    /// the exec failed.
    fn failure_from_init(&mut self) -> Option<Error> {
        let mut control = self.control.take()?;
        match control.receive::<Report>(Some(START_TIMEOUT)) {
            Ok(Some((Report::Failed(reason), _))) => Some(Error::Init(reason)),
            Ok(_) => None,
            Err(e) => Some(Error::io(format!("container {}: wait for exec", self.state.id), e)),
        }
    }

    /// The master of the init's terminal (when the spec asked for one), once.
    pub fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    /// Starts `process` inside the running container: in all of its init's namespaces and its cgroup.
    /// Returns once the program runs (or fails to, with the reason).
    pub fn exec(&self, runtime: &Runtime, process: Process, stdio: Stdio) -> Result<Started> {
        self.exec_with(runtime, process, stdio, ExecOptions::default())
    }

    /// [`Container::exec`] with runc's exec options: descriptors for the program, a sub-cgroup.
    pub fn exec_with(&self, runtime: &Runtime, process: Process, stdio: Stdio, options: ExecOptions) -> Result<Started> {
        let id = &self.state.id;
        let namespaces = self.namespaces_to_join()?;
        let (names, fds): (Vec<String>, Vec<OwnedFd>) = namespaces.into_iter().unzip();
        // The descriptors were opened from /proc/<pid>: make sure that pid was still our init.
        if !self.state.init_is_alive() {
            return Err(Error::State { id: id.clone(), reason: "the container's init is not running".into() });
        }
        let raw: Vec<_> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        crate::process::check_labels(&process)?;
        let oom_score_adj = process.oom_score_adj();
        let plan = ExecPlan { process, seccomp: self.state.seccomp.clone(), personality: self.state.personality.clone(), namespaces: names };
        let state = HookState { oci_version: crate::features::OCI_VERSION_MAX, id, status: "running", pid: self.state.pid, bundle: &self.state.bundle, annotations: &self.state.annotations };
        let seccomp_listener = SeccompListener::of(self.state.seccomp.as_ref(), state);
        let helper = Helper { mode: MODE_EXEC, stdio: &stdio, preserved: &options.preserved_fds, oom_score_adj, id_maps: None, hooks: None, seccomp_listener };
        let cgroup = match (&self.state.cgroup, &options.sub_cgroup) {
            (Some(cgroup), Some(sub)) => Some(cgroup.sub_group(sub)?),
            (None, Some(sub)) => return Err(Error::State { id: id.clone(), reason: format!("the container has no cgroup for the sub-cgroup {sub:?}") }),
            (cgroup, None) => cgroup.clone(),
        };
        let mut pids = Vec::new();
        match helper.run(runtime, cgroup.as_ref(), &plan, &raw, &mut pids) {
            Ok((started, _)) => Ok(started),
            Err(e) => {
                for pid in pids {
                    let _ = crate::sys::send_signal(pid, libc::SIGKILL as u32);
                }
                Err(e)
            }
        }
    }

    /// Descriptors of the init's namespaces that differ from ours, in the order to join them.
    fn namespaces_to_join(&self) -> Result<Vec<(String, OwnedFd)>> {
        let mut joined = Vec::new();
        for name in JOIN_ORDER {
            let theirs = format!("/proc/{}/ns/{name}", self.state.pid);
            let (Ok(their_ns), Ok(our_ns)) = (fs::metadata(&theirs), fs::metadata(format!("/proc/self/ns/{name}"))) else {
                continue;
            };
            if (their_ns.dev(), their_ns.ino()) == (our_ns.dev(), our_ns.ino()) {
                continue;
            }
            let fd = File::open(&theirs).context(|| format!("container {}: open {theirs}", self.state.id))?;
            joined.push((name.to_string(), OwnedFd::from(fd)));
        }
        Ok(joined)
    }

    /// Sends `signal` to the init, or with `all` to every process of the container.
    pub fn signal(&self, signal: u32, all: bool) -> Result<()> {
        if all {
            if let Some(cgroup) = &self.state.cgroup {
                return cgroup.signal_all(signal);
            }
        }
        if !self.state.init_is_alive() {
            return Err(Error::State { id: self.state.id.clone(), reason: "the init process is not running".into() });
        }
        crate::sys::send_signal(self.state.pid, signal)
            .map_err(|e| Error::io(format!("container {}: signal {signal} to pid {}", self.state.id, self.state.pid), e))
    }

    /// Whether the container's cgroup is frozen.
    pub fn is_paused(&self) -> bool {
        self.state.cgroup.as_ref().is_some_and(Cgroup::is_frozen)
    }

    fn cgroup_or_error(&self) -> Result<&Cgroup> {
        self.state.cgroup.as_ref().ok_or_else(|| Error::State { id: self.state.id.clone(), reason: "the container has no cgroup".into() })
    }

    /// Freezes (or thaws) every process of the container.
    pub fn set_paused(&self, paused: bool) -> Result<()> {
        self.cgroup_or_error()?.set_frozen(paused)
    }

    /// Applies new resource limits to the container's cgroup, all or nothing.
    pub fn update(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        self.cgroup_or_error()?.update(resources)
    }

    /// What the container's cgroup reports.
    pub fn stats(&self) -> Result<cgroups::stats::Stats> {
        Ok(self.cgroup_or_error()?.stats())
    }

    /// A watch on the container's OOM kills (None without a memory controller).
    pub fn oom_watch(&self) -> Result<Option<cgroups::OomWatch>> {
        match &self.state.cgroup {
            Some(cgroup) => cgroup.oom_watch(),
            None => Ok(None),
        }
    }

    /// Pids of every process of the container.
    pub fn processes(&self) -> Vec<u32> {
        match &self.state.cgroup {
            Some(cgroup) => cgroup.processes(),
            None if self.state.init_is_alive() => vec![self.state.pid],
            None => vec![],
        }
    }

    /// Kills whatever is left of the container, removes its cgroup, unmounts its rootfs and removes its
    /// state directory. Safe to repeat and to run after a crash: what is already gone is skipped.
    pub fn destroy(self, runtime: &Runtime) -> Result<()> {
        destroy_recorded(&self.state, &self.state_dir, runtime)
    }
}

/// Destroys the container recorded in `state_dir`, tolerating a directory or state that is missing.
/// Returns the recorded state, if there was one.
pub fn destroy_from_dir(state_dir: &Path, runtime: &Runtime) -> Result<Option<State>> {
    let state = match State::load(state_dir) {
        Ok(state) => state,
        Err(e) if e.is_io_kind(std::io::ErrorKind::NotFound) => {
            remove_state_dir(state_dir)?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    destroy_recorded(&state, state_dir, runtime)?;
    Ok(Some(state))
}

/// Kills, unmounts and removes what `state` records, then its state directory, then runs poststop.
fn destroy_recorded(state: &State, state_dir: &Path, runtime: &Runtime) -> Result<()> {
    match &state.cgroup {
        Some(cgroup) => cgroup.destroy(DESTROY_TIMEOUT)?,
        None if state.init_is_alive() => {
            let _ = crate::sys::send_signal(state.pid, libc::SIGKILL as u32);
        }
        None => {}
    }
    if state.shares_mount_namespace {
        // What the init mounted below the rootfs in the runtime's own namespace (not the rootfs).
        for mount in crate::mounts::mounts_under(&state.rootfs)?.into_iter().filter(|m| m != &state.rootfs) {
            unmount_recursive(&mount)?;
        }
    }
    if state.rootfs_mounted {
        unmount_recursive(&state.rootfs)?;
    }
    remove_state_dir(state_dir)?;
    state.run_late_hooks("poststop", "stopped", runtime.waiter.as_ref());
    Ok(())
}

fn remove_state_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", dir.display()), e)),
    }
}

/// What create (or restore) has made so far, undone in reverse when it fails (the guard is dropped
/// armed).
#[derive(Default)]
pub(crate) struct Undo {
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) rootfs_mounted: Option<PathBuf>,
    pub(crate) cgroup: Option<Cgroup>,
    pub(crate) pids: Vec<u32>,
    control: Option<Channel>,
    pub(crate) console: Option<OwnedFd>,
}

impl Undo {
    /// Creates the container's state directory (the id is taken if it exists), to be removed again
    /// unless disarmed.
    pub(crate) fn claim_state_dir(id: &str, dir: &Path) -> Result<Undo> {
        match fs::create_dir(dir) {
            Ok(()) => {
                let mut undo = Undo::default();
                undo.state_dir = Some(dir.to_owned());
                Ok(undo)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists(id.to_owned())),
            Err(e) => Err(Error::io(format!("create state directory {}", dir.display()), e)),
        }
    }

    /// Mounts the caller's rootfs mounts (if any) at the spec's root path; returns that path.
    pub(crate) fn mount_rootfs(&mut self, spec: &Spec, options: &CreateOptions<'_>) -> Result<PathBuf> {
        let rootfs = spec::rootfs_path(options.bundle, spec);
        if !options.rootfs_mounts.is_empty() {
            mount_rootfs(options.rootfs_mounts, &rootfs)?;
            self.rootfs_mounted = Some(rootfs.clone());
        }
        if !rootfs.is_dir() {
            return Err(Error::spec("root.path", format!("{} is not a directory", rootfs.display())));
        }
        Ok(rootfs)
    }

    pub(crate) fn disarm(&mut self) {
        self.state_dir = None;
        self.rootfs_mounted = None;
        self.cgroup = None;
        self.pids.clear();
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        self.control = None;
        self.console = None;
        for pid in self.pids.drain(..) {
            let _ = crate::sys::send_signal(pid, libc::SIGKILL as u32);
        }
        if let Some(cgroup) = self.cgroup.take() {
            let _ = cgroup.destroy(DESTROY_TIMEOUT);
        }
        if let Some(rootfs) = self.rootfs_mounted.take() {
            let _ = unmount_recursive(&rootfs);
        }
        if let Some(dir) = self.state_dir.take() {
            let _ = remove_state_dir(&dir);
        }
    }
}

fn create_in(runtime: &Runtime, spec: &Spec, options: &CreateOptions<'_>, undo: &mut Undo) -> Result<State> {
    let id = options.id;
    let rootfs = undo.mount_rootfs(spec, options)?;

    let linux = spec.linux().as_ref();
    if spec::namespace(spec, LinuxNamespaceType::Mount).is_none() {
        tracing::warn!(id, "no mount namespace in the spec: the container's mounts are made in the runtime's, and only chroot confines it (a process with CAP_SYS_CHROOT can leave it)");
    }
    let cgroups_path = linux.and_then(|l| l.cgroups_path().as_ref()).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    // The unified (v2) group first, so that the helper is born in it; the v1 groups are made while it
    // starts up (it joins them itself, see cgroups::join_self).
    let hierarchies = cgroups::hierarchies();
    let (unified, v1): (Vec<_>, Vec<_>) = hierarchies.iter().cloned().partition(|h| h.unified);
    // Under systemd the group is a unit that is made holding the helper (after it is spawned).
    let unit = options.cgroup_driver.unit_for(&cgroups_path, id)?;
    let mut cgroup = if hierarchies.is_empty() || unit.is_some() { None } else { Some(Cgroup::create_in(&unified, &cgroups_path, id)?) };
    undo.cgroup = cgroup.clone();

    let exec_fifo = options.state_dir.join(EXEC_FIFO);
    // Writable by every user: the init opens it after taking on the process's user (as runc's 0622).
    nix::unistd::mkfifo(&exec_fifo, Mode::from_bits_truncate(0o622)).context(|| format!("create {}", exec_fifo.display()))?;
    // (The umask applied to mkfifo; the shim's threads share it, so it is not changed around the call.)
    fs::set_permissions(&exec_fifo, std::os::unix::fs::PermissionsExt::from_mode(0o622)).context(|| format!("chmod {}", exec_fifo.display()))?;
    let id_maps = IdMaps::of(spec);
    if let Some(maps) = id_maps {
        // The init waits on the fifo as the container's root: let that user open it.
        let owner = |maps: &[LinuxIdMapping]| IdMaps::host_root(maps);
        nix::unistd::chown(&exec_fifo, owner(maps.uid).map(nix::unistd::Uid::from_raw), owner(maps.gid).map(nix::unistd::Gid::from_raw))
            .context(|| format!("chown {} to the container's root", exec_fifo.display()))?;
    }
    let annotations = spec.annotations().clone().unwrap_or_default();
    let hook_state = hook_state_base(id, options.bundle, &annotations);
    let hooks = spec.hooks().as_ref().map(|h| (h, hook_state));
    let oom_score_adj = spec.process().as_ref().and_then(|p| p.oom_score_adj());
    let seccomp_listener = SeccompListener::of(linux.and_then(|l| l.seccomp().as_ref()), hook_state_base(id, options.bundle, &annotations));
    let helper = Helper { mode: MODE_INIT, stdio: &options.stdio, preserved: &options.preserved_fds, oom_score_adj, id_maps, hooks, seccomp_listener };
    let created_at_clone = clone_time_namespaces(spec)?;
    let mut spawned = helper.spawn(runtime, cgroup.as_ref(), created_at_clone, &mut undo.pids)?;

    let resources = linux.and_then(|l| l.resources().as_ref());
    if let Some(unit) = &unit {
        cgroups::systemd::start(unit, id, spawned.pid, resources)?;
        // From here on the unit is ours to stop, whatever happens next.
        undo.cgroup = Some(Cgroup { path: cgroups_path.clone(), dirs: Vec::new(), unit: Some(unit.clone()) });
        let placed = Cgroup::of_unit(hierarchies, &cgroups_path, unit)?;
        undo.cgroup = Some(placed.clone());
        cgroup = Some(placed);
        spawned.in_cgroup = true;
    } else if let Some(cgroup) = cgroup.as_mut() {
        cgroup.extend(Cgroup::create_in(&v1, &cgroups_path, id)?);
        undo.cgroup = Some(cgroup.clone());
    }
    if let (Some(cgroup), Some(resources)) = (cgroup.as_ref(), resources) {
        cgroup.apply(resources)?;
    }
    let plan = InitPlan { spec: spec.clone(), rootfs: rootfs.clone(), exec_fifo, cgroup: cgroup.clone(), created_at_clone: !created_at_clone.is_empty(), runtime_env: hooks::own_environment() };
    let (started, control) = helper.finish(runtime, spawned, cgroup.as_ref(), &plan, &[], &mut undo.pids).map_err(|e| match e {
        Error::Init(reason) if reason.is_empty() => Error::Init(format!("container {id}: the init exited during setup")),
        other => other,
    })?;
    undo.console = started.console;
    let state = State::of_new_container(spec, options, rootfs, undo.rootfs_mounted.is_some(), started.pid, cgroup);
    state.save(&options.state_dir)?;
    undo.control = Some(control);
    Ok(state)
}

/// runc's options for a process joining a container.
#[derive(Default)]
pub struct ExecOptions {
    /// Descriptors the program gets at 3, 4, … (`--preserve-fds`).
    pub preserved_fds: Vec<OwnedFd>,
    /// An existing sub-cgroup of the container's to run in (`--cgroup`: `path`, or, on v1,
    /// `controller[,controller]:path`).
    pub sub_cgroup: Option<String>,
}

/// The OCI state of a container being created (its pid filled in later).
fn hook_state_base<'a>(id: &'a str, bundle: &'a Path, annotations: &'a std::collections::HashMap<String, String>) -> HookState<'a> {
    HookState { oci_version: crate::features::OCI_VERSION_MAX, id, status: "creating", pid: 0, bundle, annotations }
}

/// A helper process to start: its mode, stdio, and where it goes before it runs.
struct Helper<'a> {
    mode: &'static str,
    stdio: &'a Stdio,
    /// Descriptors for the program (placed at 3, 4, … just before its exec).
    preserved: &'a [OwnedFd],
    oom_score_adj: Option<i32>,
    /// uid and gid maps for a user namespace the helper creates.
    id_maps: Option<IdMaps<'a>>,
    /// The container's hooks and what their state says (for an init that stops at its hook point).
    hooks: Option<(&'a oci_spec::runtime::Hooks, HookState<'a>)>,
    /// Where the seccomp filter's notifications go, if the profile has a listener.
    seccomp_listener: Option<SeccompListener<'a>>,
}

/// The listener of a seccomp profile (`linux.seccomp.listenerPath`), which gets the notification
/// descriptor of every process of the container with the container's state, as from runc.
struct SeccompListener<'a> {
    path: &'a Path,
    metadata: &'a str,
    state: HookState<'a>,
}

impl<'a> SeccompListener<'a> {
    fn of(profile: Option<&'a oci_spec::runtime::LinuxSeccomp>, state: HookState<'a>) -> Option<SeccompListener<'a>> {
        let profile = profile?;
        Some(SeccompListener { path: profile.listener_path().as_deref()?, metadata: profile.listener_metadata().as_deref().unwrap_or(""), state })
    }

    /// Sends the notification descriptor of process `pid` to the listener, with runc's message (the
    /// container process state, naming the descriptor "seccompFd").
    fn hand_over(&self, fd: &OwnedFd, pid: u32) -> Result<()> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let what = || format!("linux.seccomp.listenerPath: hand the notifications to {}", self.path.display());
        let message = serde_json::json!({
            "ociVersion": crate::features::OCI_VERSION_MAX,
            "fds": ["seccompFd"],
            "pid": pid,
            "metadata": self.metadata,
            // A container being created: its init is the process at hand.
            "state": serde_json::from_slice::<serde_json::Value>(&HookState { pid: if self.state.pid == 0 { pid } else { self.state.pid }, ..self.state }.to_json()).unwrap_or_default(),
        })
        .to_string();
        let stream = std::os::unix::net::UnixStream::connect(self.path).context(what)?;
        let fds = [fd.as_raw_fd()];
        sendmsg::<()>(stream.as_raw_fd(), &[std::io::IoSlice::new(message.as_bytes())], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None).context(what)?;
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct IdMaps<'a> {
    uid: &'a [LinuxIdMapping],
    gid: &'a [LinuxIdMapping],
}

impl IdMaps<'_> {
    fn of(spec: &Spec) -> Option<IdMaps<'_>> {
        let linux = spec.linux().as_ref()?;
        spec::namespace(spec, LinuxNamespaceType::User).filter(Option::is_none)?;
        Some(IdMaps { uid: linux.uid_mappings().as_deref().unwrap_or(&[]), gid: linux.gid_mappings().as_deref().unwrap_or(&[]) })
    }

    /// Writes `/proc/<pid>/uid_map` and `gid_map`.
    fn write(&self, pid: u32) -> Result<()> {
        for (file, maps) in [("uid_map", self.uid), ("gid_map", self.gid)] {
            let text: String = maps.iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect();
            let path = format!("/proc/{pid}/{file}");
            fs::write(&path, &text).context(|| format!("linux.{}Mappings: write {text:?} to {path}", &file[..3]))?;
        }
        Ok(())
    }

    /// The host id that container id 0 maps to.
    fn host_root(maps: &[LinuxIdMapping]) -> Option<u32> {
        maps.iter().find(|m| m.container_id() == 0).map(|m| m.host_id())
    }
}

/// What a helper reported: the pid of the process it became (or forked), its start time (read while
/// it certainly ran: with the pid, it tells the process apart from a later one given the same pid),
/// and a terminal master.
pub struct Started {
    pub pid: u32,
    pub start_time: Option<u64>,
    pub console: Option<OwnedFd>,
}

/// A helper that has been started and waits for its cgroup and plan.
struct Spawned {
    control: Channel,
    pid: u32,
    /// Whether the helper is in the container's v2 group already (born there, or put there by
    /// systemd), so that it need not be moved.
    in_cgroup: bool,
}

/// The new namespaces the init can be born in (clone flags), saving the helper an unshare and, for a
/// pid namespace, a fork: those of mount, UTS, IPC, pid and network the spec creates. None with a user
/// namespace (the others must belong to it) or a time namespace (offsets come before any process).
fn clone_time_namespaces(spec: &Spec) -> Result<CloneFlags> {
    use LinuxNamespaceType::*;
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
    if namespaces.iter().any(|ns| matches!(ns.typ(), User | Time)) {
        return Ok(CloneFlags::empty());
    }
    let mut flags = CloneFlags::empty();
    for ns in namespaces.iter().filter(|ns| ns.path().is_none() && matches!(ns.typ(), Mount | Uts | Ipc | Pid | Network)) {
        flags |= clone_flag(ns.typ())?;
    }
    Ok(flags)
}

impl Helper<'_> {
    /// Spawns the helper, puts it into the cgroup, sends `plan` (with `fds`), and reads its reports
    /// (see [`Helper::finish`]). Every pid seen is pushed to `pids` for the caller's undo.
    fn run<P: serde::Serialize>(&self, runtime: &Runtime, cgroup: Option<&Cgroup>, plan: &P, fds: &[RawFd], pids: &mut Vec<u32>) -> Result<(Started, Channel)> {
        let spawned = self.spawn(runtime, cgroup, CloneFlags::empty(), pids)?;
        self.finish(runtime, spawned, cgroup, plan, fds, pids)
    }

    /// Starts the helper binary: born in `born_in`'s v2 group where the kernel can do that, and in the
    /// new namespaces `namespaces`.
    fn spawn(&self, runtime: &Runtime, born_in: Option<&Cgroup>, namespaces: CloneFlags, pids: &mut Vec<u32>) -> Result<Spawned> {
        let (control, helper_end) = Channel::pair().context(|| "create the control socket".into())?;
        let helper_end = OwnedFd::from(helper_end);
        let stdio = self.stdio;
        let executable = runtime.helper.get()?;
        let v2_dir = born_in.map(Cgroup::open_v2_dir).transpose()?.flatten();
        let preserved = self.preserved.len().to_string();
        let args = ["myshim-init", HELPER_ARG, self.mode, &preserved];
        let (pid, born_in_v2) = spawn::spawn_helper(&executable, &args, [&stdio.stdin, &stdio.stdout, &stdio.stderr], &helper_end, self.preserved, v2_dir.as_ref(), namespaces)
            .context(|| format!("start the {} helper {}", self.mode, executable.path().display()))?;
        pids.push(pid);
        Ok(Spawned { control, pid, in_cgroup: born_in_v2 })
    }

    /// Puts the spawned helper into `cgroup`, sends `plan` (with `fds`), and reads its reports: an init
    /// until it is ready (the channel stays open for start), an exec until the program runs (the
    /// channel closes at its execve).
    fn finish<P: serde::Serialize>(&self, runtime: &Runtime, spawned: Spawned, cgroup: Option<&Cgroup>, plan: &P, fds: &[RawFd], pids: &mut Vec<u32>) -> Result<(Started, Channel)> {
        let Spawned { mut control, pid: helper_pid, in_cgroup } = spawned;
        let v1_tasks = cgroup.map(Cgroup::open_v1_tasks).transpose()?.unwrap_or_default();
        if let Some(cgroup) = cgroup.filter(|_| !in_cgroup) {
            cgroup.add_process_v2(helper_pid)?;
        }
        let tasks: Vec<RawFd> = v1_tasks.iter().map(|fd| fd.as_raw_fd()).collect();
        control.send_with_fds(&Directive::JoinCgroup, &tasks).context(|| format!("send the {} helper its cgroup", self.mode))?;
        if let Some(score) = self.oom_score_adj {
            crate::sys::set_oom_score_adj(helper_pid, score).context(|| format!("process.oomScoreAdj: set {score}"))?;
        }
        control.send_with_fds(plan, fds).context(|| format!("send the {} plan", self.mode))?;

        // The helper waits for its cgroup and plan: it certainly runs now.
        let mut started = Started { pid: helper_pid, start_time: crate::sys::process_start_time(helper_pid), console: None };
        loop {
            match control.receive::<Report>(Some(SETUP_TIMEOUT)).context(|| format!("wait for the {} helper", self.mode))? {
                Some((Report::Pid(pid), _)) => {
                    // The forked child waits until its parent, the helper, has exited, which waits for this.
                    started.pid = pid;
                    started.start_time = crate::sys::process_start_time(pid);
                    control.send(&Directive::Continue { hook_state: None }).context(|| "let the helper go on".into())?;
                    pids.push(pid);
                }
                Some((Report::Console, mut received)) => {
                    started.console = Some(received.pop().ok_or_else(|| Error::Init("the terminal did not arrive".into()))?);
                }
                Some((Report::MapIds, _)) => {
                    let maps = self.id_maps.ok_or_else(|| Error::Init("the helper asked for id maps nobody planned".into()))?;
                    maps.write(helper_pid)?;
                    control.send(&Directive::Continue { hook_state: None }).context(|| "let the helper go on".into())?;
                }
                Some((Report::HookPoint, _)) => {
                    let (hooks, state) = self.hooks.as_ref().ok_or_else(|| Error::Init("the init stopped for hooks nobody planned".into()))?;
                    let state = HookState { pid: started.pid, ..*state }.to_json();
                    for (phase, list) in [("prestart", hooks.prestart()), ("createRuntime", hooks.create_runtime())] {
                        hooks::run(list.as_deref().unwrap_or(&[]), phase, &state, &hooks::own_environment(), runtime.waiter.as_ref())?;
                    }
                    let hook_state = Some(String::from_utf8_lossy(&state).into_owned());
                    control.send(&Directive::Continue { hook_state }).context(|| "let the init go on".into())?;
                }
                Some((Report::Warning(warning), _)) => tracing::warn!(helper = self.mode, "{warning}"),
                Some((Report::SeccompNotify, mut received)) => {
                    let fd = received.pop().ok_or_else(|| Error::Init("the seccomp notification descriptor did not arrive".into()))?;
                    let listener = self.seccomp_listener.as_ref().ok_or_else(|| Error::Init("a seccomp notification descriptor nobody planned".into()))?;
                    listener.hand_over(&fd, started.pid)?;
                    control.send(&Directive::Continue { hook_state: None }).context(|| "let the helper go on".into())?;
                }
                Some((Report::Ready, _)) => return Ok((started, control)),
                Some((Report::Failed(reason), _)) => return Err(Error::Init(reason)),
                // An init closing its channel died during setup; an exec's closes at its execve.
                None if self.mode == MODE_EXEC => return Ok((started, control)),
                None => return Err(Error::Init(String::new())),
            }
        }
    }
}

/// Waits until one byte can be read from `fd`: `Ok(false)` when the writer closed without writing.
fn wait_until_exec(fd: &OwnedFd, timeout: Duration) -> std::io::Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    let mut file = File::from(fd.try_clone()?);
    let mut got_byte = false;
    // After its byte the init holds the fifo open until its execve closes it: reading to the end
    // means start returns once the program runs, so a signal sent right after start reaches it.
    loop {
        if !crate::sys::wait_readable(fd.as_fd(), deadline)? {
            let what = if got_byte { "exec the program" } else { "reach the exec fifo" };
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("the init did not {what}")));
        }
        let mut buffer = [0u8; 8];
        match file.read(&mut buffer) {
            Ok(0) => return Ok(got_byte),
            Ok(_) => got_byte = true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic after the helper was spawned still kills it and removes what create made.
    #[test]
    fn a_panic_during_create_undoes_what_was_made() {
        let dir = std::env::temp_dir().join(format!("myshim-undo-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut child = std::process::Command::new("sleep").arg("100").spawn().unwrap();
        let (state_dir, pid) = (dir.clone(), child.id());
        let result = std::panic::catch_unwind(move || {
            let mut undo = Undo::default();
            undo.state_dir = Some(state_dir);
            undo.pids.push(pid);
            panic!("something went wrong half-way");
        });
        assert!(result.is_err());
        assert!(!dir.exists(), "the state directory is left");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL), "the helper is left running");
    }
}
