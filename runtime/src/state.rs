//! What the runtime keeps on disk per container, so that a process other than the one that created
//! the container (the shim's `delete` after a crash, the CLI's next command) can find and remove it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::error::{Context, Error, Result};

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// Whether the runtime mounted the caller's rootfs mounts (and so must unmount them).
    pub rootfs_mounted: bool,
    /// Host pid of the container's init; with `pid_start_time` it survives pid reuse.
    pub pid: u32,
    pub pid_start_time: u64,
    pub cgroup: Option<Cgroup>,
    /// Whether the container has a pid namespace of its own (then its init's death ends all of it).
    pub private_pid_namespace: bool,
    /// Seconds since the epoch.
    pub created: u64,
    pub annotations: std::collections::HashMap<String, String>,
    /// The spec's hooks (poststart and poststop run long after the spec was read).
    #[serde(default)]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// The spec's seccomp profile, which confines the processes exec'd into the container too.
    #[serde(default)]
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// The spec's execution domain (`linux.personality`), the exec'd processes' too.
    #[serde(default)]
    pub personality: Option<oci_spec::runtime::LinuxPersonality>,
    /// The container has no mount namespace of its own: its mounts were made in the runtime's, below
    /// the rootfs, and go at destroy.
    #[serde(default)]
    pub shares_mount_namespace: bool,
}

impl State {
    /// The state of container `options.id`, made from `spec`, whose init is `pid`.
    pub(crate) fn of_new_container(spec: &oci_spec::runtime::Spec, options: &crate::container::CreateOptions<'_>, rootfs: PathBuf, rootfs_mounted: bool, pid: u32, cgroup: Option<Cgroup>) -> State {
        use crate::spec::namespace;
        use oci_spec::runtime::LinuxNamespaceType;
        let linux = spec.linux().as_ref();
        State {
            id: options.id.to_owned(),
            bundle: options.bundle.to_owned(),
            rootfs,
            rootfs_mounted,
            pid,
            pid_start_time: crate::sys::process_start_time(pid).unwrap_or(0),
            cgroup,
            private_pid_namespace: namespace(spec, LinuxNamespaceType::Pid) == Some(None),
            created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            annotations: spec.annotations().clone().unwrap_or_default(),
            hooks: spec.hooks().clone(),
            seccomp: linux.and_then(|l| l.seccomp().clone()),
            personality: linux.and_then(|l| l.personality().clone()),
            shares_mount_namespace: namespace(spec, LinuxNamespaceType::Mount).is_none(),
        }
    }

    /// Runs the poststart or poststop hooks; a failure is logged, as the spec asks, not returned.
    pub fn run_late_hooks(&self, phase: &str, status: &str, waiter: &dyn crate::hooks::ChildWaiter) {
        let Some(hooks) = &self.hooks else { return };
        let list = match phase {
            "poststart" => hooks.poststart(),
            _ => hooks.poststop(),
        };
        let state = crate::hooks::HookState {
            oci_version: crate::features::OCI_VERSION_MAX,
            id: &self.id,
            status,
            pid: self.pid,
            bundle: &self.bundle,
            annotations: &self.annotations,
        };
        if let Err(e) = crate::hooks::run(list.as_deref().unwrap_or(&[]), phase, &state.to_json(), &crate::hooks::own_environment(), waiter) {
            tracing::warn!(id = %self.id, error = %e, "hook failed");
        }
    }

    pub fn load(dir: &Path) -> Result<State> {
        let path = dir.join(STATE_FILE);
        let text = fs::read(&path).context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&text).map_err(|e| Error::io(format!("parse {}", path.display()), io::Error::other(e)))
    }

    /// Writes the state atomically (temporary file, then rename), so a crash never leaves half a file.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        let temporary = dir.join(".state.json.tmp");
        let text = serde_json::to_vec(self).map_err(|e| Error::io("encode state", io::Error::other(e)))?;
        fs::write(&temporary, text).context(|| format!("write {}", temporary.display()))?;
        fs::rename(&temporary, &path).context(|| format!("rename {} to {}", temporary.display(), path.display()))
    }

    /// Whether the recorded init still runs (not exited or a zombie, pid not reused).
    pub fn init_is_alive(&self) -> bool {
        crate::sys::start_time_if_running(self.pid) == Some(self.pid_start_time)
    }
}

/// Checks a container id before it is used in any path: no separators, no `.`/`..`, no control
/// characters, bounded length.
pub fn validate_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > 1024 {
        "longer than 1024 bytes"
    } else if id == "." || id == ".." {
        "a relative path component"
    } else if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+' | b'@' | b':')) {
        "only letters, digits and _ - . + @ : are allowed"
    } else {
        return Ok(());
    };
    Err(Error::InvalidId { id: id.to_owned(), reason })
}

/// The state directory of container `id` under a runtime root (`<root>/<id>`), after checking `id`.
pub fn dir_in_root(root: &Path, id: &str) -> Result<PathBuf> {
    validate_id(id)?;
    Ok(root.join(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_ids_are_rejected() {
        for id in ["", ".", "..", "a/b", "../x", "a\0b", "a b", &"x".repeat(1025)] {
            assert!(validate_id(id).is_err(), "{id:?}");
        }
        for id in ["c1", "my-container_1.2", "k8s.io:abc"] {
            validate_id(id).unwrap();
        }
    }
}
