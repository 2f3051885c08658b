//! Finding and removing what a test's containers left on the machine: shim processes, container
//! processes, mounts, cgroup directories and shim sockets.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::Containerd;

/// Everything left behind by the instance's containers, described for a failure message.
pub fn find(containerd: &Containerd) -> Vec<String> {
    let mut found = Vec::new();
    for (pid, cmdline) in shim_processes(containerd) {
        found.push(format!("shim process {pid}: {cmdline}"));
    }
    for pid in container_processes(&containerd.namespace) {
        found.push(format!("container process {pid} in a cgroup of namespace {}", containerd.namespace));
    }
    for mount in mounts_under(&containerd.dir) {
        found.push(format!("mount {}", mount.display()));
    }
    for dir in container_groups(&containerd.namespace) {
        found.push(format!("cgroup directory {}", dir.display()));
    }
    for socket in shim_sockets(containerd) {
        found.push(format!("shim socket {}", socket.display()));
    }
    found
}

/// Removes what [`find`] finds, by pid and by path.
pub fn clean_up(containerd: &Containerd) {
    for (pid, _) in shim_processes(containerd) {
        kill(pid);
    }
    // containerd's runc shims, which some tests run beside myshim's: they outlive their containerd
    // and keep their sockets. (Found by their -address, so only this instance's.)
    for (pid, _) in shims_of(RUNC_SHIM, &containerd.socket().display().to_string()) {
        let sockets = crate::procfs::unix_socket_paths(pid);
        kill(pid);
        for socket in sockets.iter().filter(|s| s.starts_with("/run/containerd/s/")) {
            let _ = fs::remove_file(socket);
        }
    }
    remove_containers(&containerd.namespace, &containerd.dir);
    for socket in shim_sockets(containerd) {
        let _ = fs::remove_file(&socket);
        let _ = fs::remove_file(socket.with_extension("myshim.json"));
    }
}

/// Kills the container processes of `namespace`, unmounts everything below `dir` (where their bundles
/// live) and removes the namespace's cgroups.
pub fn remove_containers(namespace: &str, dir: &Path) {
    for pid in container_processes(namespace) {
        kill(pid);
    }
    for mount in mounts_under(dir) {
        let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    for dir in cgroup_dirs(namespace) {
        remove_cgroup_tree(&dir);
    }
    // Scopes the systemd driver made: stopping the unit removes the group.
    for scope in container_groups(namespace) {
        if let Some(unit) = scope.file_name().map(|n| n.to_string_lossy().into_owned()).filter(|n| n.ends_with(".scope")) {
            let _ = std::process::Command::new("systemctl").args(["stop", &unit]).output();
        }
    }
}

fn kill(pid: u32) {
    signal(pid, nix::sys::signal::Signal::SIGKILL);
}

/// Sends `signal` to one process the test started (or found to belong to it), by pid.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// Signals the process group `leader` leads (a client the tests started in a group of its own).
pub fn signal_group(leader: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(leader as i32), signal);
}

/// Shim daemons started for this instance (their command line names its socket).
pub fn shim_processes(containerd: &Containerd) -> Vec<(u32, String)> {
    shims_of_address(&containerd.socket().display().to_string())
}

/// myshim processes started for the containerd at `address`: (pid, command line).
pub fn shims_of_address(address: &str) -> Vec<(u32, String)> {
    shims_of("containerd-shim-myshim-v1", address)
}

/// containerd's runc shim binary.
const RUNC_SHIM: &str = "containerd-shim-runc-v2";

/// Processes of the shim `binary` started for the containerd at `address`: (pid, command line).
fn shims_of(binary: &str, address: &str) -> Vec<(u32, String)> {
    processes()
        .filter_map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains(binary) && cmdline.contains(address)).then_some((pid, cmdline))
        })
        .collect()
}

/// Processes in a cgroup below `/<namespace>/` (where ctr puts containers), or in a systemd scope
/// `<namespace>-<id>.scope` (where the tests put them under the systemd driver).
pub fn container_processes(namespace: &str) -> Vec<u32> {
    let (below, scope) = (format!(":/{namespace}/"), format!("/system.slice/{namespace}-"));
    processes()
        .filter(|pid| fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&below) || c.contains(&scope)))
        .collect()
}

/// The groups of the namespace's containers that still exist: below `<hierarchy>/<namespace>`, and
/// systemd scopes `<namespace>-*.scope` in `system.slice`.
pub fn container_groups(namespace: &str) -> Vec<PathBuf> {
    let mut groups: Vec<PathBuf> = cgroup_dirs(namespace).iter().flat_map(|dir| subdirectories(dir)).collect();
    for hierarchy in hierarchies() {
        let scopes = fs::read_dir(hierarchy.join("system.slice")).into_iter().flatten().flatten().map(|e| e.path());
        groups.extend(scopes.filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{namespace}-")))));
    }
    groups
}

/// The mount points of every cgroup hierarchy.
fn hierarchies() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}

fn processes() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok())
}

pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// `<hierarchy>/<namespace>` in every mounted cgroup hierarchy, where it exists. ctr puts containers
/// below it; the runtime removes a container's group but, like runc, not this shared parent, so the
/// harness removes it once the instance is gone.
pub fn cgroup_dirs(namespace: &str) -> Vec<PathBuf> {
    hierarchies().into_iter().map(|mount| mount.join(namespace)).filter(|dir| dir.exists()).collect()
}

/// Directories directly below `dir` (a cgroup's children).
fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir).into_iter().flatten().flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect()
}

/// Removes a cgroup directory and its children, retrying for a while those still busy with processes
/// that were killed but have not finished exiting.
pub fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while fs::remove_dir(dir).is_err_and(|e| e.raw_os_error() == Some(libc::EBUSY)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The socket a shim serving container `id` of this instance uses (the shim's own naming scheme).
pub fn socket_of(containerd: &Containerd, group: &str) -> PathBuf {
    let joined = containerd.socket().join(&containerd.namespace).join(group);
    let digest = Sha256::digest(joined.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Path::new("/run/containerd/s").join(hex)
}

/// Shim sockets (and their records) of this instance under /run/containerd/s: found by their
/// records, or by the ids used.
pub fn shim_sockets(containerd: &Containerd) -> Vec<PathBuf> {
    let address = containerd.socket().display().to_string();
    fs::read_dir("/run/containerd/s")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|record| fs::read_to_string(record).is_ok_and(|text| text.contains(&address)))
        .map(|record| record.with_extension("").with_extension(""))
        .chain(containerd.used_ids().iter().map(|id| socket_of(containerd, id)).filter(|s| s.exists()))
        .collect()
}
