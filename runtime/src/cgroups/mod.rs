//! Control groups of a container: finding the mounted hierarchies, creating the container's group in
//! each of them, moving processes in, listing and signalling its processes, and removing it.
//!
//! On a cgroup v1 (or hybrid) host the container gets a directory in every mounted hierarchy (named
//! ones like `name=systemd` included, and the unified hierarchy of a hybrid host), so that it is fully
//! accounted and fully removed. Resource limits are written by [`v1`].

pub mod stats;
pub mod v1;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    /// Controllers bound to it (`["cpu"]`, `["name=systemd"]`); empty for the unified hierarchy.
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
        fs::read_to_string("/proc/self/mountinfo").map(|info| parse_mountinfo(&info)).unwrap_or_default()
    })
}

/// Whether the host runs cgroup v1 controllers (v1 or hybrid layout).
pub fn is_v1_host() -> bool {
    hierarchies().iter().any(|h| !h.unified)
}

fn parse_mountinfo(info: &str) -> Vec<Hierarchy> {
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
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent") && *o != "xattr")
                    .filter(|o| *o != "clone_children" && *o != "noprefix" && *o != "cpuset_v2_mode")
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

/// A container's cgroup: the same relative path in every hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// The spec's `cgroupsPath`, normalised to start with `/`.
    pub path: String,
    pub dirs: Vec<CgroupDir>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    pub hierarchy: Hierarchy,
    pub dir: PathBuf,
}

impl Cgroup {
    /// Creates the group at `path` in every hierarchy (parents included). On failure, what was made is
    /// removed again.
    pub fn create(path: &str) -> Result<Cgroup> {
        let path = normalise(path)?;
        let mut cgroup = Cgroup { path: path.clone(), dirs: Vec::new() };
        for hierarchy in hierarchies() {
            match create_dir_in(hierarchy, &path) {
                Ok(dir) => cgroup.dirs.push(dir),
                Err(e) => {
                    let _ = cgroup.remove(Duration::ZERO);
                    return Err(e);
                }
            }
        }
        Ok(cgroup)
    }

    /// Moves `pid` (and, on v1, only that thread group) into the group in every hierarchy.
    pub fn add_process(&self, pid: u32) -> Result<()> {
        for d in &self.dirs {
            let procs = d.dir.join("cgroup.procs");
            fs::write(&procs, pid.to_string()).context(|| format!("add pid {pid} to {}", procs.display()))?;
        }
        Ok(())
    }

    /// The group's directory in the hierarchy that carries `controller`.
    pub fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().find(|d| d.hierarchy.has(controller)).map(|d| d.dir.as_path())
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

    /// Sends `signal` to every process of the group. With the freezer available the group is frozen
    /// first, so that no process can fork a child that escapes the signal.
    pub fn signal_all(&self, signal: u32) -> Result<()> {
        let frozen = self.set_frozen(true).is_ok();
        for pid in self.processes() {
            match crate::sys::send_signal(pid, signal) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    if frozen {
                        let _ = self.set_frozen(false);
                    }
                    return Err(Error::io(format!("signal {signal} to pid {pid} of cgroup {}", self.path), e));
                }
            }
        }
        if frozen {
            self.set_frozen(false)?;
        }
        Ok(())
    }

    /// Freezes or thaws the group (v1 `freezer.state`).
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let dir = self
            .dir_of("freezer")
            .ok_or_else(|| Error::Unsupported(format!("cgroup {}: no freezer hierarchy", self.path)))?;
        v1::set_frozen(dir, frozen)
    }

    /// Kills every process of the group and removes its directories, waiting up to `timeout` for the
    /// processes to exit. Directories already gone are fine.
    pub fn destroy(&self, timeout: Duration) -> Result<()> {
        if !self.processes().is_empty() {
            self.signal_all(libc::SIGKILL as u32)?;
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

/// `cgroupsPath` as an absolute path below each hierarchy's root, without `..` escapes.
fn normalise(path: &str) -> Result<String> {
    if path.contains(':') {
        return Err(Error::Unsupported(format!(
            "cgroupsPath {path:?}: the systemd cgroup driver (slice:prefix:name) is not supported on this host"
        )));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(Error::spec("linux.cgroupsPath", format!("{path:?} does not name a cgroup below the root")));
    }
    Ok(format!("/{}", parts.join("/")))
}

fn create_dir_in(hierarchy: &Hierarchy, path: &str) -> Result<CgroupDir> {
    let dir = hierarchy.mount_point.join(path.trim_start_matches('/'));
    let mut current = hierarchy.mount_point.clone();
    for part in path.trim_start_matches('/').split('/') {
        current.push(part);
        match fs::create_dir(&current) {
            Ok(()) if hierarchy.has("cpuset") => v1::inherit_cpuset(&current)?,
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("create cgroup {}", current.display()), e)),
        }
    }
    Ok(CgroupDir { hierarchy: hierarchy.clone(), dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw,relatime shared:5 - cgroup cgroup rw,cpu
27 25 0:25 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
28 25 0:26 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
29 25 0:27 /nested /mnt/other rw,relatime - cgroup cgroup rw,memory";

    #[test]
    fn mountinfo_yields_every_hierarchy() {
        let h = parse_mountinfo(HYBRID);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].controllers, vec!["cpu"]);
        assert_eq!(h[1].controllers, vec!["name=systemd"]);
        assert!(h[2].unified && h[2].mount_point == Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn cgroups_path_is_normalised_and_confined() {
        assert_eq!(normalise("default/c1").unwrap(), "/default/c1");
        assert_eq!(normalise("/a//b/").unwrap(), "/a/b");
        assert!(normalise("/a/../../etc").is_err());
        assert!(normalise("/").is_err());
        assert!(normalise("system.slice:docker:c1").unwrap_err().to_string().contains("systemd"));
    }
}
