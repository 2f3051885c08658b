//! A process joining a running container (containerd's Exec): the helper enters every namespace of
//! the container's init, passed in as descriptors the runtime opened, forks into its pid namespace,
//! attaches a terminal if asked, and executes the program. Like the init, it is non-dumpable until the
//! program replaces it, so the container cannot reach the runtime binary through `/proc/<pid>/exe`.

use std::os::fd::{AsFd, OwnedFd};

use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::Process;
use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::channel::Report;
use super::launch::{attach_terminal, become_process, exec_program, new_session, Never};
use super::security::Confinement;
use super::{fork_into_pid_namespace, hand_over_preserved};
use crate::error::{Context, Error, Result};

/// The process to run; the namespaces come as descriptors with the message, in `namespaces` order.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ExecPlan {
    pub process: Process,
    /// The container's seccomp profile, which applies to its exec'd processes too.
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// The container's execution domain, likewise.
    #[serde(default)]
    pub personality: Option<oci_spec::runtime::LinuxPersonality>,
    /// `/proc/<pid>/ns` names (`user`, `mnt`, …) of the passed descriptors.
    pub namespaces: Vec<String>,
}

pub(crate) fn run(channel: &mut Channel, preserved: usize) -> Result<Never> {
    let (plan, fds): (ExecPlan, Vec<OwnedFd>) = channel
        .receive(None)
        .context(|| "read the exec plan".into())?
        .ok_or_else(|| Error::Init("the runtime closed the control channel before sending the plan".into()))?;
    if fds.len() != plan.namespaces.len() {
        return Err(Error::Init(format!("exec plan names {} namespaces but carries {}", plan.namespaces.len(), fds.len())));
    }
    let mut joined_pid = false;
    for (name, fd) in plan.namespaces.iter().zip(&fds) {
        let flag = namespace_flag(name)?;
        setns(fd.as_fd(), flag).context(|| format!("join the container's {name} namespace"))?;
        joined_pid |= flag == CloneFlags::CLONE_NEWPID;
    }
    drop(fds);
    if joined_pid {
        fork_into_pid_namespace(channel)?;
    }
    new_session()?;
    let process = &plan.process;
    if process.terminal() == Some(true) {
        attach_terminal(channel, process, false)?;
    } else {
        crate::rootfs::null_stdio_from_container()?;
    }
    let mut warnings = Vec::new();
    let program = become_process(process, &Confinement { seccomp: plan.seccomp.as_ref(), personality: plan.personality.as_ref() }, channel, &mut |w| warnings.push(w))?;
    for warning in warnings {
        channel.send(&Report::Warning(warning)).context(|| "report a warning".into())?;
    }
    hand_over_preserved(channel, preserved)?;
    exec_program(process, &program)
}

/// The namespaces an exec joins, in the order it joins them: the user namespace first (it owns the
/// others), the mount namespace last (it changes what paths mean).
pub(crate) const JOIN_ORDER: &[&str] = &["user", "ipc", "uts", "net", "pid", "cgroup", "time", "mnt"];

fn namespace_flag(name: &str) -> Result<CloneFlags> {
    Ok(match name {
        "user" => CloneFlags::CLONE_NEWUSER,
        "ipc" => CloneFlags::CLONE_NEWIPC,
        "uts" => CloneFlags::CLONE_NEWUTS,
        "net" => CloneFlags::CLONE_NEWNET,
        "pid" => CloneFlags::CLONE_NEWPID,
        "cgroup" => CloneFlags::CLONE_NEWCGROUP,
        "time" => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
        "mnt" => CloneFlags::CLONE_NEWNS,
        other => return Err(Error::Init(format!("unknown namespace {other:?}"))),
    })
}
