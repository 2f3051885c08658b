//! The kind of host the tests run on: the development machines' cgroup v1 hybrid layout without
//! systemd, or the guest lane's systemd host with cgroup v2 only, where the suites also run under the
//! systemd cgroup driver (`MYSHIM_TEST_CGROUP_DRIVER=systemd`). Assertions that depend on it ask here.

use std::path::{Path, PathBuf};

/// Whether this host has only cgroup v2.
pub fn pure_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Whether containers are placed by the systemd cgroup driver in this run.
pub fn systemd_driver() -> bool {
    std::env::var("MYSHIM_TEST_CGROUP_DRIVER").is_ok_and(|d| d == "systemd")
}

/// The cgroups path a test gives container `id` of containerd namespace `namespace`: ctr's default
/// (`/<namespace>/<id>`), or, under the systemd driver, the scope `<namespace>-<id>.scope` in
/// `system.slice`.
pub fn cgroups_path(namespace: &str, id: &str) -> String {
    if systemd_driver() {
        format!("system.slice:{namespace}:{id}")
    } else {
        format!("/{namespace}/{id}")
    }
}

/// Where the group of [`cgroups_path`] is, below a hierarchy's root.
pub fn cgroup_relative(namespace: &str, id: &str) -> String {
    if systemd_driver() {
        format!("system.slice/{namespace}-{id}.scope")
    } else {
        format!("{namespace}/{id}")
    }
}

/// A file of a container's group: `v1_file` in the v1 hierarchy `controller`, or `v2_file` in its one
/// v2 directory.
pub fn cgroup_file(relative: &str, controller: &str, v1_file: &str, v2_file: &str) -> PathBuf {
    if pure_v2() {
        Path::new("/sys/fs/cgroup").join(relative).join(v2_file)
    } else {
        Path::new("/sys/fs/cgroup").join(controller).join(relative).join(v1_file)
    }
}

/// A process's cgroup as the host sees it: its unified line on a v2 host, its memory line on v1.
pub fn process_cgroup(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let key = if pure_v2() { "0::" } else { ":memory:" };
    text.lines().find_map(|l| l.split_once(key).map(|(_, path)| path.to_owned())).unwrap_or_default()
}

/// The shell command that prints a container's memory limit from inside it (its own group is the
/// root of its cgroup mount on v2, a directory per controller on v1).
pub const MEMORY_LIMIT_INSIDE: &str = "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes";
