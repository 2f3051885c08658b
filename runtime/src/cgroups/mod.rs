//! Control groups of a container: finding the mounted hierarchies, creating the container's group in
//! each of them, moving processes in, limiting, freezing, signalling and measuring them, and removing
//! the group.
//!
//! One resource model over both cgroup versions: on a v1 (or hybrid) host the container gets a
//! directory in every mounted hierarchy (named ones like `name=systemd` and the hybrid unified
//! hierarchy included), and each resource is written by the controller that owns it ([`v1`]); on a
//! v2 host it gets one directory with the controllers enabled along its path ([`v2`]). The unified
//! directory of a hybrid host takes what its controllers offer (hugetlb here).

pub mod bpf;
pub mod stats;
pub mod systemd;
pub mod v1;
pub mod v2;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// Moves the calling process, which must be single-threaded, into the v1 groups whose `tasks` files
/// these are ([`Cgroup::open_v1_tasks`]).
///
/// This is one of the two cheap ways into a group. Moving another process in by writing its pid to
/// `cgroup.procs` takes the kernel's global threadgroup lock for writing, and the first writer after a
/// quiet spell waits for an RCU grace period (10–16 ms on the test VM, most of a container's
/// creation). A process writing `0` to `tasks` for itself, or born in the v2 group (`clone3` with
/// `CLONE_INTO_CGROUP` on [`Cgroup::open_v2_dir`]), avoids that lock.
pub fn join_self(tasks: &[std::os::fd::OwnedFd]) -> Result<()> {
    use std::io::Write;
    for fd in tasks {
        let mut file = fs::File::from(fd.try_clone().context(|| "duplicate a cgroup tasks descriptor".into())?);
        file.write_all(b"0").context(|| "join the container's cgroup (write 0 to tasks)".into())?;
    }
    Ok(())
}

/// Moves process `pid` into the existing group `path` (absolute, below each hierarchy's root) in every
/// hierarchy that has it; an error when none has it.
pub fn move_into_existing(path: &str, pid: u32) -> Result<()> {
    let relative = normalise(path)?;
    let mut moved = false;
    for hierarchy in hierarchies() {
        let dir = hierarchy.mount_point.join(relative.trim_start_matches('/'));
        if dir.is_dir() {
            write(&dir, "cgroup.procs", &pid.to_string())?;
            moved = true;
        }
    }
    if moved {
        Ok(())
    } else {
        Err(Error::io(format!("move pid {pid} into cgroup {path}"), io::Error::new(io::ErrorKind::NotFound, "no hierarchy has that cgroup")))
    }
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    /// Controllers bound to it (`["cpu"]`, `["name=systemd"]`); for the unified hierarchy, those its
    /// root offers (`cgroup.controllers`).
    pub controllers: Vec<String>,
    pub mount_point: PathBuf,
    pub unified: bool,
}

impl Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// The hierarchies mounted on this host, read once from `/proc/self/mountinfo`.
pub fn hierarchies() -> &'static [Hierarchy] {
    static CACHE: OnceLock<Vec<Hierarchy>> = OnceLock::new();
    CACHE.get_or_init(|| {
        let mut found = fs::read_to_string("/proc/self/mountinfo").map(|info| parse_mountinfo(&info)).unwrap_or_default();
        for h in found.iter_mut().filter(|h| h.unified) {
            h.controllers = v2::available_controllers(&h.mount_point);
        }
        found
    })
}

/// Every hierarchy once: a hierarchy mounted a second time elsewhere (CRIU's "cgroup yard" under /tmp
/// while it checkpoints or restores, another tool's view) is the same hierarchy, and the mount below
/// /sys/fs/cgroup is the one kept.
fn parse_mountinfo(info: &str) -> Vec<Hierarchy> {
    let mut found: Vec<Hierarchy> = Vec::new();
    for hierarchy in mounted_hierarchies(info) {
        let canonical = hierarchy.mount_point.starts_with("/sys/fs/cgroup");
        let same = |h: &Hierarchy| h.unified == hierarchy.unified && (h.unified || h.controllers == hierarchy.controllers);
        match found.iter_mut().find(|h| same(h)) {
            Some(kept) if canonical && !kept.mount_point.starts_with("/sys/fs/cgroup") => *kept = hierarchy,
            Some(_) => {}
            None => found.push(hierarchy),
        }
    }
    found
}

fn mounted_hierarchies(info: &str) -> Vec<Hierarchy> {
    let mut found = Vec::new();
    for line in info.lines() {
        let Some((before, after)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = before.split(' ').collect();
        let tail: Vec<&str> = after.split(' ').collect();
        if fields.len() < 5 || tail.len() < 3 || fields[3] != "/" {
            continue;
        }
        let mount_point = PathBuf::from(fields[4]);
        match tail[0] {
            "cgroup" => {
                let controllers = tail[2]
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro" | "xattr" | "clone_children" | "noprefix" | "cpuset_v2_mode") && !o.starts_with("release_agent"))
                    .map(str::to_owned)
                    .collect();
                found.push(Hierarchy { controllers, mount_point, unified: false });
            }
            "cgroup2" => found.push(Hierarchy { controllers: vec![], mount_point, unified: true }),
            _ => {}
        }
    }
    found
}

/// This process's own group in `hierarchy` (from `/proc/self/cgroup`), for relative cgroup paths.
fn own_cgroup(hierarchy: &Hierarchy) -> String {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let matches = if hierarchy.unified { controllers.is_empty() } else { controllers.split(',').any(|c| hierarchy.has(c)) };
            matches.then(|| path.to_owned())
        })
        .next()
        .unwrap_or_else(|| "/".into())
}

/// Who makes a container's group: the runtime, as directories (cgroupfs), or systemd, as a
/// transient unit ([`systemd`]). A cgroups path of systemd's form (`slice:prefix:name`) is systemd's
/// whatever the driver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    #[default]
    Cgroupfs,
    Systemd,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Cgroupfs => "cgroupfs",
            Driver::Systemd => "systemd",
        }
    }

    pub fn from_name(name: &str) -> Option<Driver> {
        match name {
            "cgroupfs" => Some(Driver::Cgroupfs),
            "systemd" => Some(Driver::Systemd),
            _ => None,
        }
    }

    /// The unit a container's cgroups path names under this driver, or `None` for a cgroupfs path.
    pub fn unit_for(self, cgroups_path: &str, id: &str) -> Result<Option<systemd::Unit>> {
        if self == Driver::Systemd || systemd::is_systemd_path(cgroups_path) {
            systemd::Unit::parse(cgroups_path, id).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A container's cgroup: its directory in every hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// The spec's `cgroupsPath` as given (for messages).
    pub path: String,
    pub dirs: Vec<CgroupDir>,
    /// The transient unit holding the group, when systemd made it.
    #[serde(default)]
    pub unit: Option<systemd::Unit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    pub hierarchy: Hierarchy,
    pub dir: PathBuf,
}

impl Cgroup {
    /// Creates the group for `cgroups_path` (absolute: below each hierarchy's root; relative or
    /// empty: below this process's own group, as runc does, `id` standing in for an empty path) in
    /// each of `hierarchies` (this host's [`hierarchies`], or a fake cgroupfs in tests). On failure,
    /// what was made is removed again.
    pub fn create_in(hierarchies: &[Hierarchy], cgroups_path: &str, id: &str) -> Result<Cgroup> {
        let requested = if cgroups_path.is_empty() { id } else { cgroups_path };
        let mut cgroup = Cgroup { path: requested.to_owned(), dirs: Vec::new(), unit: None };
        for hierarchy in hierarchies {
            let path = if requested.starts_with('/') { normalise(requested)? } else { normalise(&format!("{}/{requested}", own_cgroup(hierarchy)))? };
            match create_dir_in(hierarchy, &path) {
                Ok(dir) => cgroup.dirs.push(dir),
                Err(e) => {
                    let _ = cgroup.remove(Duration::ZERO);
                    return Err(e);
                }
            }
        }
        cgroup.refuse_if_in_use()?;
        Ok(cgroup)
    }

    /// The group of `unit`, which systemd has just made holding the container's first process: its
    /// directory in the unified hierarchy and, on a hybrid host, in every v1 hierarchy (those systemd
    /// does not manage are made here, at the same place, as runc does). In the unified hierarchy the
    /// controllers systemd does not hand down (hugetlb, rdma, misc) are enabled along the path, as
    /// runc does: without them a scope has no `hugetlb.*` files.
    pub fn of_unit(hierarchies: &[Hierarchy], cgroups_path: &str, unit: &systemd::Unit) -> Result<Cgroup> {
        let mut cgroup = Cgroup { path: cgroups_path.to_owned(), dirs: Vec::new(), unit: Some(unit.clone()) };
        for hierarchy in hierarchies {
            let dir = systemd::group_dir(unit, &hierarchy.mount_point);
            if !hierarchy.unified {
                create_dir_in(hierarchy, &unit.cgroup_path())?;
            } else if dir.is_dir() {
                enable_controllers_above(hierarchy, &dir);
            } else {
                return Err(Error::io(format!("systemd cgroup driver: unit {}", unit.name), std::io::Error::other(format!("systemd made no group at {}", dir.display()))));
            }
            cgroup.dirs.push(CgroupDir { hierarchy: hierarchy.clone(), dir });
        }
        Ok(cgroup)
    }

    /// An existing sub-group of this group, for a process that joins the container there (runc's
    /// `exec --cgroup`): `path` in every hierarchy, or, on v1, `controller[,controller]:path` for those
    /// controllers (the others stay in the container's group).
    pub fn sub_group(&self, spec: &str) -> Result<Cgroup> {
        let (controllers, path) = match spec.split_once(':') {
            Some((controllers, path)) => (Some(controllers.split(',').collect::<Vec<_>>()), path),
            None => (None, spec),
        };
        let relative = normalise(path).map_err(|_| Error::spec("--cgroup", format!("{spec:?} does not name a sub-cgroup")))?;
        let mut sub = Cgroup { path: format!("{}/{}", self.path, relative.trim_start_matches('/')), dirs: Vec::new(), unit: None };
        for d in &self.dirs {
            let chosen = controllers.as_ref().is_none_or(|wanted| wanted.iter().any(|c| d.hierarchy.has(c)));
            let dir = if chosen { d.dir.join(relative.trim_start_matches('/')) } else { d.dir.clone() };
            if !dir.is_dir() {
                return Err(Error::spec("--cgroup", format!("{} does not exist (the sub-cgroup must exist)", dir.display())));
            }
            if chosen && d.hierarchy.has("cpuset") && !d.hierarchy.unified {
                // A v1 cpuset group made by hand starts without cpus and mems, and refuses every process.
                v1::inherit_cpuset(&dir)?;
            }
            sub.dirs.push(CgroupDir { hierarchy: d.hierarchy.clone(), dir });
        }
        Ok(sub)
    }

    /// A group that already holds processes (or is frozen) belongs to someone else: two containers
    /// sharing a group would be limited, frozen and killed together (runc refuses it too).
    fn refuse_if_in_use(&self) -> Result<()> {
        let processes = self.processes();
        let reason = if !processes.is_empty() {
            format!("the cgroup already holds {} process(es), pid {} first: it is another container's", processes.len(), processes[0])
        } else if self.is_frozen() {
            "the cgroup is frozen".to_owned()
        } else {
            return Ok(());
        };
        Err(Error::spec("linux.cgroupsPath", format!("{}: {reason}", self.path)))
    }

    /// Adds the directories of `other` (the same group, made in other hierarchies).
    pub fn extend(&mut self, other: Cgroup) {
        self.dirs.extend(other.dirs);
    }

    /// The group's `tasks` file in every v1 hierarchy, open for writing (see [`join_self`]).
    pub fn open_v1_tasks(&self) -> Result<Vec<std::os::fd::OwnedFd>> {
        self.dirs
            .iter()
            .filter(|d| !d.hierarchy.unified)
            .map(|d| {
                let tasks = d.dir.join("tasks");
                let file = fs::OpenOptions::new().write(true).open(&tasks).context(|| format!("open {}", tasks.display()))?;
                Ok(file.into())
            })
            .collect()
    }

    /// The group's unified (v2) directory, open (for `clone3`'s `CLONE_INTO_CGROUP`, see [`join_self`]).
    pub fn open_v2_dir(&self) -> Result<Option<std::os::fd::OwnedFd>> {
        self.unified_dir()
            .map(|d| fs::File::open(&d.dir).map(Into::into).context(|| format!("open {}", d.dir.display())))
            .transpose()
    }

    /// Moves `pid` into the group in every hierarchy.
    pub fn add_process(&self, pid: u32) -> Result<()> {
        self.add_process_v2(pid)?;
        for d in self.dirs.iter().filter(|d| !d.hierarchy.unified) {
            write(&d.dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Moves `pid` into the group's v2 (unified) directory, when it has one.
    pub fn add_process_v2(&self, pid: u32) -> Result<()> {
        match self.unified_dir() {
            Some(d) => {
                let procs = d.dir.join("cgroup.procs");
                fs::write(&procs, pid.to_string()).map_err(|e| {
                    let context = format!("add pid {pid} to {}", procs.display());
                    match e.raw_os_error() {
                        // cgroup v2's rule: a group with processes of its own has no children with controllers.
                        Some(libc::EOPNOTSUPP | libc::EBUSY) if self.is_v2() => Error::io(
                            context,
                            std::io::Error::other("a group above it holds processes, which cgroup v2 does not allow beside child groups (use a cgroupsPath outside any group with processes)"),
                        ),
                        _ => Error::io(context, e),
                    }
                })
            }
            None => Ok(()),
        }
    }

    /// The group's directory in the v1 hierarchy that carries `controller`.
    pub fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().find(|d| !d.hierarchy.unified && d.hierarchy.has(controller)).map(|d| d.dir.as_path())
    }

    /// The group's directory in the unified (v2) hierarchy.
    pub fn unified_dir(&self) -> Option<&CgroupDir> {
        self.dirs.iter().find(|d| d.hierarchy.unified)
    }

    /// Whether the host has no v1 hierarchies (pure cgroup v2).
    pub fn is_v2(&self) -> bool {
        self.dirs.iter().all(|d| d.hierarchy.unified)
    }

    /// Every process in the group (the union over hierarchies: a process may have been moved out of
    /// some of them by hand).
    pub fn processes(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .iter()
            .filter_map(|d| fs::read_to_string(d.dir.join("cgroup.procs")).ok())
            .flat_map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<u32>>())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Sends `signal` to every process of the group. SIGKILL on v2 uses `cgroup.kill`; otherwise the
    /// group is frozen first, so that no process can fork a child that escapes the signal.
    pub fn signal_all(&self, signal: u32) -> Result<()> {
        if signal == libc::SIGKILL as u32 && self.is_v2() {
            if let Some(d) = self.unified_dir().filter(|d| d.dir.join("cgroup.kill").exists()) {
                return fs::write(d.dir.join("cgroup.kill"), "1").context(|| format!("write {}/cgroup.kill", d.dir.display()));
            }
        }
        let frozen = self.set_frozen(true).is_ok();
        let result = self.processes().into_iter().try_for_each(|pid| match crate::sys::send_signal(pid, signal) {
            Err(e) if e.raw_os_error() != Some(libc::ESRCH) => Err(Error::io(format!("signal {signal} to pid {pid} of cgroup {}", self.path), e)),
            _ => Ok(()),
        });
        if frozen {
            self.set_frozen(false)?;
        }
        result
    }

    /// Freezes or thaws the group (v1 `freezer.state`, v2 `cgroup.freeze`).
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        if let Some(dir) = self.dir_of("freezer") {
            return v1::set_frozen(dir, frozen);
        }
        match self.unified_dir() {
            Some(d) if self.is_v2() => v2::set_frozen(&d.dir, frozen),
            _ => Err(Error::Unsupported(format!("cgroup {}: no freezer", self.path))),
        }
    }

    /// Whether the group is frozen.
    pub fn is_frozen(&self) -> bool {
        match (self.dir_of("freezer"), self.unified_dir()) {
            (Some(dir), _) => fs::read_to_string(dir.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN"),
            (None, Some(d)) => fs::read_to_string(d.dir.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1"),
            _ => false,
        }
    }

    /// Applies the spec's resources to a group just made: each by the controller that owns it, v1
    /// or v2.
    pub fn apply(&self, resources: &LinuxResources) -> Result<()> {
        self.apply_with(resources, &mut Writes::fresh())
    }

    /// Changes the resources of a group in use, all or nothing: when one value is refused, those
    /// written before it are put back. A unit's properties (what systemd keeps, and re-applies) are
    /// changed once the files took the new values.
    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
        let mut writes = Writes::restorable();
        let mut result = self.apply_with(resources, &mut writes);
        if let (Ok(()), Some(unit)) = (&result, &self.unit) {
            result = systemd::update(unit, resources);
        }
        if result.is_err() {
            writes.roll_back();
        }
        result
    }

    fn apply_with(&self, resources: &LinuxResources, writes: &mut Writes) -> Result<()> {
        check_resources(resources)?;
        // A unit's CPU quota is what systemd keeps (rounded), so that it re-applies the same value.
        let rounded;
        let resources = match &self.unit {
            Some(_) => {
                rounded = systemd::with_systemd_quota(resources);
                &rounded
            }
            None => resources,
        };
        if self.dirs.iter().any(|d| !d.hierarchy.unified) {
            v1::apply(self, resources, writes)?;
        }
        if let Some(d) = self.unified_dir() {
            v2::apply(&d.dir, &d.hierarchy.controllers, resources, self.is_v2(), writes)?;
        }
        Ok(())
    }

    /// What the group reports, from whichever version holds the controllers.
    pub fn stats(&self) -> stats::Stats {
        match self.unified_dir() {
            Some(d) if self.is_v2() => stats::Stats::V2(stats::read_v2(&d.dir)),
            _ => stats::Stats::V1(stats::read_v1(self)),
        }
    }

    /// A descriptor that becomes readable when the group may have hit an OOM; [`OomWatch::fired`]
    /// tells whether it did. None without a memory controller.
    pub fn oom_watch(&self) -> Result<Option<OomWatch>> {
        if let Some(dir) = self.dir_of("memory") {
            return Ok(Some(OomWatch { notifications: Some(v1::oom_eventfd(dir)?), kill_count: None }));
        }
        match self.unified_dir().filter(|d| d.hierarchy.has("memory")) {
            Some(d) => {
                let events = d.dir.join("memory.events");
                let fd = crate::sys::watch_modifications(&events).context(|| format!("watch {}", events.display()))?;
                Ok(Some(OomWatch { notifications: Some(fd), kill_count: Some(KillCount::new(&d.dir)) }))
            }
            None => Ok(None),
        }
    }

    /// Kills every process of the group and removes its directories, waiting up to `timeout` for the
    /// processes to exit; a unit is stopped once its group is empty (and systemd removes it).
    /// Directories already gone are fine.
    pub fn destroy(&self, timeout: Duration) -> Result<()> {
        if !self.processes().is_empty() {
            self.signal_all(libc::SIGKILL as u32)?;
        }
        if let Some(unit) = &self.unit {
            let deadline = Instant::now() + timeout;
            while !self.processes().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            systemd::stop(unit)?;
        }
        self.remove(timeout)
    }

    /// Removes the group's directories (not their parents, which other containers may share, as runc
    /// does). A directory still holding processes is retried until `timeout`.
    pub fn remove(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for d in &self.dirs {
            loop {
                match fs::remove_dir(&d.dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(Error::io(format!("remove cgroup {}", d.dir.display()), e)),
                }
            }
        }
        Ok(())
    }
}

/// Watching a group for OOM kills: a v1 eventfd on `memory.oom_control`, or an inotify watch on v2's
/// `memory.events` with the count of kills seen.
pub struct OomWatch {
    notifications: Option<std::os::fd::OwnedFd>,
    kill_count: Option<KillCount>,
}

impl OomWatch {
    /// The descriptor that becomes readable on a possible OOM kill, for whoever waits on it (once:
    /// the watch keeps no copy of its own).
    pub fn take_notifications(&mut self) -> Option<std::os::fd::OwnedFd> {
        self.notifications.take()
    }

    /// After the descriptor was readable (and drained): whether a new OOM kill happened. On v1 every
    /// notification is one; on v2 the `oom_kill` count must have grown.
    pub fn fired(&mut self) -> bool {
        self.kill_count.as_mut().is_none_or(KillCount::grew)
    }

    /// A look at the count outside a notification (before the caller signals the container itself,
    /// so that a kill it causes is never taken for one of the kernel's): whether it grew. v2 only.
    pub fn look(&mut self) -> bool {
        self.kill_count.as_mut().is_some_and(KillCount::grew)
    }

    /// Once the container's init has exited: whether a kill happened that no notification was read
    /// for. Only v2 can tell; on v1 this is always false.
    ///
    /// Under the systemd driver the group is usually gone by then: systemd stops the scope, and
    /// removes its directory with the count, as soon as the last process has died (measured in the
    /// systemd guest: gone before the reaper's next read in 20 runs of 20), while the kernel's
    /// notification of the kill may be held back (it sends at most one per file every 20 ms). The
    /// parent's count, which includes its children's kills, outlives the group: when it grew since
    /// the group was last seen and the init died of SIGKILL (the caller tells), the kernel killed
    /// it. A sibling's kill in that same window would be taken for this group's; the window is
    /// short, as every notification and every [`OomWatch::look`] (the shim looks before it sends a
    /// signal) starts it anew.
    pub fn unreported_kill(&mut self, init_died_of_sigkill: bool) -> bool {
        match &mut self.kill_count {
            None => false,
            Some(count) if count.group_is_there() => count.grew(),
            Some(count) => init_died_of_sigkill && count.parent_grew(),
        }
    }
}

/// v2's counts of OOM kills: the group's, and its parent's taken just before it.
struct KillCount {
    group: PathBuf,
    seen: u64,
    parent: Option<PathBuf>,
    parent_seen: u64,
}

impl KillCount {
    fn new(group: &Path) -> KillCount {
        let parent = group.parent().filter(|p| p.join("memory.events").exists()).map(Path::to_path_buf);
        let mut count = KillCount { group: group.to_path_buf(), seen: 0, parent, parent_seen: 0 };
        count.grew();
        count
    }

    fn group_is_there(&self) -> bool {
        self.group.join("memory.events").exists()
    }

    /// Whether the group's count grew since the last look; false once the group is gone. The parent
    /// is read first: a kill between the two reads then shows in the group's count, never in the
    /// parent's alone.
    fn grew(&mut self) -> bool {
        let parent_now = self.parent.as_deref().and_then(v2::oom_kills);
        let Some(now) = v2::oom_kills(&self.group) else { return false };
        if let Some(parent_now) = parent_now {
            self.parent_seen = parent_now;
        }
        let grew = now > self.seen;
        self.seen = now;
        grew
    }

    /// Whether the parent's count grew since the group was last seen.
    fn parent_grew(&mut self) -> bool {
        let Some(now) = self.parent.as_deref().and_then(v2::oom_kills) else { return false };
        let grew = now > self.parent_seen;
        self.parent_seen = now;
        grew
    }
}

/// Writes `value` to the interface file `file` of the group at `dir`.
fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    fs::write(&path, value).context(|| format!("write {value:?} to {}", path.display()))
}

/// The interface files a change of resources writes. When it updates a running container, each file's
/// old content is kept first, so that a change the kernel refuses half-way is rolled back: Update is
/// all or nothing. (Files that cannot be read back, such as v1's `devices.allow`, are not restored;
/// they are written last.)
pub struct Writes {
    remember: bool,
    before: Vec<(PathBuf, String)>,
}

impl Writes {
    /// For a group just made: nothing to restore.
    pub fn fresh() -> Writes {
        Writes { remember: false, before: Vec::new() }
    }

    /// For a group in use.
    pub fn restorable() -> Writes {
        Writes { remember: true, before: Vec::new() }
    }

    pub fn write(&mut self, dir: &Path, file: &str, value: &str) -> Result<()> {
        let path = dir.join(file);
        let before = if self.remember { fs::read_to_string(&path).ok().filter(|b| !b.trim().is_empty()) } else { None };
        write(dir, file, value)?;
        if let Some(before) = before {
            self.before.push((path, before));
        }
        Ok(())
    }

    /// Writes a value only when the file exists (swap accounting may be off, for example).
    pub fn write_if_present(&mut self, dir: &Path, file: &str, value: &str) -> Result<()> {
        if dir.join(file).exists() {
            self.write(dir, file, value)
        } else {
            Ok(())
        }
    }

    /// Puts back what the files held, the last written first (best effort: each line of a file that
    /// lists per-device values is written back on its own).
    fn roll_back(self) {
        for (path, before) in self.before.into_iter().rev() {
            for line in before.lines().filter(|l| !l.trim().is_empty()) {
                let _ = fs::write(&path, line.trim());
            }
        }
    }
}

/// What can be checked before anything is written: values that contradict each other, and page sizes
/// that become part of file names.
pub fn check_resources(resources: &LinuxResources) -> Result<()> {
    if let Some(memory) = resources.memory() {
        if let (Some(limit), Some(swap)) = (memory.limit(), memory.swap()) {
            if limit > 0 && swap > 0 && swap < limit {
                return Err(Error::spec("linux.resources.memory.swap", format!("the memory+swap limit {swap} is below the memory limit {limit}")));
            }
        }
        if let Some(swappiness) = memory.swappiness().filter(|s| *s > 100) {
            return Err(Error::spec("linux.resources.memory.swappiness", format!("{swappiness} is above 100")));
        }
    }
    for (i, limit) in resources.hugepage_limits().iter().flatten().enumerate() {
        let size = limit.page_size();
        let valid = ["KB", "MB", "GB"].iter().any(|unit| size.strip_suffix(unit).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())));
        if !valid {
            return Err(Error::spec(format!("linux.resources.hugepageLimits[{i}].pageSize"), format!("{size:?} is not a page size (like 2MB or 1GB)")));
        }
    }
    Ok(())
}

/// A cgroup path as an absolute path below the hierarchy's root, without `..` escapes.
fn normalise(path: &str) -> Result<String> {
    if path.contains(':') {
        return Err(Error::Unsupported(format!(
            "linux.cgroupsPath {path:?}: the systemd cgroup driver (slice:prefix:name) is not supported; use a cgroupfs path"
        )));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(Error::spec("linux.cgroupsPath", format!("{path:?} does not name a cgroup below the root")));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Hands the hierarchy's controllers down every group from its root to the parent of `dir`.
fn enable_controllers_above(hierarchy: &Hierarchy, dir: &Path) {
    let Ok(below_root) = dir.strip_prefix(&hierarchy.mount_point) else { return };
    let mut current = hierarchy.mount_point.clone();
    for part in below_root.iter() {
        v2::enable_controllers(&current, &hierarchy.controllers);
        current.push(part);
    }
}

fn create_dir_in(hierarchy: &Hierarchy, path: &str) -> Result<CgroupDir> {
    // A parent another runtime removes at this moment (the last container of a namespace going away)
    // makes a step fail with ENOENT: start again from the top.
    let mut attempts = 3;
    loop {
        match create_path(hierarchy, path) {
            Err(e) if e.is_io_kind(io::ErrorKind::NotFound) && attempts > 1 => attempts -= 1,
            other => return other,
        }
    }
}

fn create_path(hierarchy: &Hierarchy, path: &str) -> Result<CgroupDir> {
    let dir = hierarchy.mount_point.join(path.trim_start_matches('/'));
    let mut current = hierarchy.mount_point.clone();
    for part in path.trim_start_matches('/').split('/') {
        if hierarchy.unified {
            // Children only get the controllers their parent hands down.
            v2::enable_controllers(&current, &hierarchy.controllers);
        }
        current.push(part);
        match fs::create_dir(&current) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("create cgroup {}", current.display()), e)),
        }
        // Also when the group existed: another container may have made it a moment ago and not yet
        // filled in its cpus and mems (without which nothing can join it or its children).
        if hierarchy.has("cpuset") && !hierarchy.unified {
            v1::inherit_cpuset(&current)?;
        }
    }
    Ok(CgroupDir { hierarchy: hierarchy.clone(), dir })
}

/// A directory standing in for a cgroup (or a cgroupfs) in unit tests, removed when dropped, also
/// when the test fails.
#[cfg(test)]
pub(crate) mod fake {
    use std::fs;
    use std::path::Path;

    pub struct FakeCgroup(std::path::PathBuf);

    impl std::ops::Deref for FakeCgroup {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for FakeCgroup {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for FakeCgroup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A fresh directory holding `files`.
    pub fn fake_cgroup(files: &[(&str, &str)]) -> FakeCgroup {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!("myshim-fake-cgroup-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
        fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            fs::write(dir.join(name), content).unwrap();
        }
        FakeCgroup(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw,relatime shared:5 - cgroup cgroup rw,cpu
27 25 0:25 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
28 25 0:26 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
29 25 0:27 /nested /mnt/other rw,relatime - cgroup cgroup rw,memory
30 1 0:24 / /tmp/.criu.cgyard.Ab12/cpu rw,relatime - cgroup cgroup rw,cpu
31 1 0:26 / /tmp/.criu.cgyard.Ab12/unified rw,relatime - cgroup2 cgroup2 rw";

    /// (CRIU's yard of second mounts included: each hierarchy comes once, at its /sys/fs/cgroup place.)
    #[test]
    fn mountinfo_yields_every_hierarchy() {
        let h = parse_mountinfo(HYBRID);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].controllers, vec!["cpu"]);
        assert_eq!(h[1].controllers, vec!["name=systemd"]);
        assert!(h[2].unified && h[2].mount_point == Path::new("/sys/fs/cgroup/unified"));
    }

    /// On a pure v2 host (here a fake cgroupfs) the group is one directory, with the controllers
    /// handed down along its path.
    #[test]
    fn v2_groups_enable_controllers_along_the_path() {
        let fake = fake::fake_cgroup(&[("cgroup.controllers", "cpu memory pids")]);
        let root = fake.to_path_buf();
        let hierarchy = Hierarchy { controllers: vec!["cpu".into(), "memory".into(), "pids".into()], mount_point: root.clone(), unified: true };
        let cgroup = Cgroup::create_in(&[hierarchy], "/pod/c1", "c1").unwrap();
        assert!(cgroup.is_v2());
        assert_eq!(cgroup.unified_dir().unwrap().dir, root.join("pod/c1"));
        // Each write of "+<controller>" replaced the fake file; the last one written was pids.
        assert_eq!(fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(), "+pids");
        let resources: LinuxResources = serde_json::from_str(r#"{"pids":{"limit":7}}"#).unwrap();
        cgroup.apply(&resources).unwrap();
        assert_eq!(fs::read_to_string(root.join("pod/c1/pids.max")).unwrap(), "7");
        let err = cgroup.apply(&serde_json::from_str(r#"{"hugepageLimits":[{"pageSize":"2MB","limit":1}]}"#).unwrap()).unwrap_err();
        assert!(err.to_string().contains("hugetlb controller"), "{err}");
    }

    #[test]
    fn cgroups_path_is_normalised_and_confined() {
        assert_eq!(normalise("/default/c1").unwrap(), "/default/c1");
        assert_eq!(normalise("/a//b/").unwrap(), "/a/b");
        assert!(normalise("/a/../../etc").is_err());
        assert!(normalise("/").is_err());
        assert!(normalise("system.slice:docker:c1").unwrap_err().to_string().contains("systemd"));
    }

    /// The parent's count stands in for a group that is gone (a stopped systemd scope), for kills
    /// after the group was last seen only, and only for an init that died of SIGKILL.
    #[test]
    fn a_kill_is_found_in_the_parent_once_the_group_is_gone() {
        let fake = fake::fake_cgroup(&[]);
        let parent = fake.to_path_buf();
        let group = parent.join("myshim-c1.scope");
        let events = |dir: &Path, kills: u32| fs::write(dir.join("memory.events"), format!("max 4\noom 1\noom_kill {kills}\n")).unwrap();
        fs::create_dir_all(&group).unwrap();
        events(&parent, 5);
        events(&group, 0);
        let mut count = KillCount::new(&group);
        assert!(!count.grew());

        // A sibling's kill, then a look (the shim signals the container): not this group's.
        events(&parent, 6);
        assert!(!count.grew());
        // The group is gone (its scope stopped), and no kill was counted since the last look.
        fs::remove_dir_all(&group).unwrap();
        let mut watch = OomWatch { notifications: None, kill_count: Some(count) };
        assert!(!watch.unreported_kill(true));
        // A kill after the last look, for an init that died of SIGKILL: the kernel's.
        events(&parent, 7);
        assert!(!watch.unreported_kill(false), "an init that exited on its own was not OOM-killed");
        events(&parent, 8);
        assert!(watch.unreported_kill(true));
        assert!(!watch.unreported_kill(true), "reported once");
    }
}
