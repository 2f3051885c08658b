//! The container's init before it becomes the user's program. This code runs in a freshly executed
//! helper process (single-threaded, nothing inherited but descriptors 0–3), never in the shim.
//!
//! Steps: read the plan from the control channel; join the namespaces the spec names by path and
//! unshare the new ones; fork once if the pid namespace changes (the child becomes pid 1 and the helper
//! reports its host pid and exits); build the filesystem and `pivot_root`; set the hostname; attach a
//! terminal if asked; check that the program exists; report ready; block on the exec fifo until the
//! runtime's start opens it; then take on the process's identity and `execve` the program.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::{open, OFlag};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

use super::channel::{Channel, Directive, Report};
use super::launch::{attach_terminal, become_process, exec_program, new_session, Never};
use super::security::Confinement;
use super::{clone_flag, fork_into_pid_namespace, hand_over_preserved};
use crate::cgroups::Cgroup;
use crate::hooks::DirectWaiter;
use crate::error::{Context, Error, Result};

/// Everything the init needs, sent by the runtime as the first control message.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitPlan {
    pub spec: Spec,
    /// The root filesystem on the host (already holding the caller's rootfs mounts).
    pub rootfs: PathBuf,
    /// The fifo the init blocks on until start.
    pub exec_fifo: PathBuf,
    pub cgroup: Option<Cgroup>,
    /// The runtime created this process in the spec's new mount, UTS, IPC, pid and network namespaces
    /// (see `clone_time_namespaces`): it is already the container's pid 1 there.
    pub created_at_clone: bool,
    /// The runtime's environment, for createContainer hooks without an `env` of their own.
    pub runtime_env: Vec<String>,
}

fn hooks_of(spec: &Spec) -> Option<&oci_spec::runtime::Hooks> {
    spec.hooks().as_ref()
}

/// The state the runtime sent, with the status a hook phase sees.
fn state_with_status(state: &str, status: &str) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_str(state).unwrap_or_default();
    value["status"] = status.into();
    serde_json::to_vec(&value).unwrap_or_default()
}

pub(crate) fn run(channel: &mut Channel, preserved: usize) -> Result<Never> {
    let (plan, _): (InitPlan, _) = channel
        .receive(None)
        .context(|| "read the init plan".into())?
        .ok_or_else(|| Error::Init("the runtime closed the control channel before sending the plan".into()))?;
    let spec = &plan.spec;
    let process = spec.process().as_ref().ok_or_else(|| Error::spec("process", "missing"))?;
    // Opened now, while the host's paths are still visible; used after pivot_root through /proc.
    let exec_fifo = open(&plan.exec_fifo, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .context(|| format!("open exec fifo {}", plan.exec_fifo.display()))?;

    enter_namespaces(spec, plan.created_at_clone, channel)?;
    new_session()?;

    // With hooks, the runtime runs its createRuntime hooks while we wait before pivot_root, and sends
    // the state our createContainer and startContainer hooks read.
    let mut hook_state: Option<String> = None;
    let mut before_pivot = || -> Result<()> {
        let Some(hooks) = hooks_of(spec) else { return Ok(()) };
        channel.send(&Report::HookPoint).context(|| "report the hook point".into())?;
        hook_state = await_continue(channel, "the createRuntime hooks")?;
        let state = hook_state.as_deref().unwrap_or("{}");
        let list = hooks.create_container().as_deref().unwrap_or(&[]);
        crate::hooks::run(list, "createContainer", &state_with_status(state, "creating"), &plan.runtime_env, &DirectWaiter)
    };
    crate::rootfs::prepare(spec, &plan.rootfs, plan.cgroup.as_ref(), &mut before_pivot)?;
    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(hostname).context(|| format!("set hostname {hostname:?}"))?;
    }
    if let Some(domainname) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        set_domainname(domainname)?;
    }
    if process.terminal() == Some(true) {
        attach_terminal(channel, process, true)?;
    } else {
        crate::rootfs::null_stdio_from_container()?;
    }
    // Everything up to the program is done before create returns, so that create is what fails.
    let mut warnings = Vec::new();
    let program = become_process(process, &Confinement::of(spec), channel, &mut |w| warnings.push(w))?;
    for warning in warnings {
        channel.send(&Report::Warning(warning)).context(|| "report a warning".into())?;
    }

    channel.send(&Report::Ready).context(|| "report ready".into())?;
    // Held open until execve closes it: start reads to its end, so it returns once the program runs.
    let _started = wait_for_start(exec_fifo)?;
    // startContainer hooks run as the process will: its user, capabilities and seccomp filter.
    if let (Some(hooks), Some(state)) = (hooks_of(spec), &hook_state) {
        let list = hooks.start_container().as_deref().unwrap_or(&[]);
        let env = process.env().clone().unwrap_or_default();
        crate::hooks::run(list, "startContainer", &state_with_status(state, "created"), &env, &DirectWaiter)?;
    }
    hand_over_preserved(channel, preserved)?;
    exec_program(process, &program)
}

/// Waits for the runtime's go-ahead after `what`; returns the hook state it carries.
fn await_continue(channel: &mut Channel, what: &str) -> Result<Option<String>> {
    match channel.receive::<Directive>(None).context(|| format!("wait for {what}"))? {
        Some((Directive::Continue { hook_state }, _)) => Ok(hook_state),
        Some((other, _)) => Err(Error::Init(format!("waiting for {what}, the runtime sent {other:?}"))),
        None => Err(Error::Init(format!("the runtime went away during {what}"))),
    }
}

/// Enters the container's namespaces: the user namespace first (joined, or created and mapped by the
/// runtime), then the others named by path, then the new ones (unless the runtime created them at
/// clone); time offsets are set before the fork that a new pid or time namespace needs. On return this
/// process is the container's init.
fn enter_namespaces(spec: &Spec, created_at_clone: bool, channel: &mut Channel) -> Result<()> {
    use LinuxNamespaceType::*;
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
    if let Some(user) = namespaces.iter().find(|ns| ns.typ() == User) {
        match user.path() {
            Some(path) => join(User, path)?,
            None => {
                unshare(CloneFlags::CLONE_NEWUSER).context(|| "linux.namespaces: create a user namespace".into())?;
                channel.send(&Report::MapIds).context(|| "ask for uid and gid maps".into())?;
                await_continue(channel, "uid and gid maps")?;
            }
        }
        // Root of the new namespace, with all its capabilities there.
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)).context(|| "become root in the user namespace (gid)".into())?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).context(|| "become root in the user namespace (uid)".into())?;
    }
    let mut new = CloneFlags::empty();
    let mut fork_needed = false;
    for ns in namespaces.iter().filter(|ns| ns.typ() != User) {
        let born_in = created_at_clone && ns.path().is_none() && matches!(ns.typ(), Mount | Uts | Ipc | Pid | Network);
        match ns.path() {
            _ if born_in => continue,
            Some(path) => join(ns.typ(), path)?,
            None => new |= clone_flag(ns.typ())?,
        }
        fork_needed |= matches!(ns.typ(), Pid | Time);
    }
    unshare(new).context(|| format!("unshare namespaces {new:?}"))?;
    if new.contains(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)) {
        set_time_offsets(spec)?;
    }
    if fork_needed {
        fork_into_pid_namespace(channel)?;
    }
    Ok(())
}

fn join(typ: LinuxNamespaceType, path: &std::path::Path) -> Result<()> {
    let file = File::open(path).context(|| format!("linux.namespaces: open {typ} namespace {}", path.display()))?;
    setns(file.as_fd(), clone_flag(typ)?).context(|| format!("linux.namespaces: join {typ} namespace {}", path.display()))
}

/// `linux.timeOffsets` into the new time namespace (before any process lives in it).
fn set_time_offsets(spec: &Spec) -> Result<()> {
    let offsets = spec.linux().as_ref().and_then(|l| l.time_offsets().clone()).unwrap_or_default();
    let mut text = String::new();
    for (clock, offset) in &offsets {
        if !matches!(clock.as_str(), "monotonic" | "boottime") {
            return Err(Error::spec(format!("linux.timeOffsets.{clock}"), "only monotonic and boottime clocks have offsets"));
        }
        text.push_str(&format!("{clock} {} {}\n", offset.secs().unwrap_or(0), offset.nanosecs().unwrap_or(0)));
    }
    if !text.is_empty() {
        std::fs::write("/proc/self/timens_offsets", text).context(|| "linux.timeOffsets: write /proc/self/timens_offsets".into())?;
    }
    Ok(())
}

fn set_domainname(name: &str) -> Result<()> {
    // SAFETY: the pointer and length describe `name`, which outlives the call.
    let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if rc < 0 {
        return Err(Error::io(format!("set domainname {name:?}"), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Blocks until the runtime's start opens the exec fifo for reading, then tells it we are going.
/// Returns the fifo's write end (close-on-exec), which the caller keeps until its execve.
fn wait_for_start(exec_fifo: OwnedFd) -> Result<File> {
    let path = format!("/proc/self/fd/{}", exec_fifo.as_raw_fd());
    let fifo = open(path.as_str(), OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
        .context(|| "open the exec fifo (is /proc mounted in the container?)".into())?;
    // The program must not inherit a way back to the host's state directory.
    drop(exec_fifo);
    let mut fifo = File::from(fifo);
    fifo.write_all(b"0").context(|| "write to the exec fifo".into())?;
    Ok(fifo)
}
