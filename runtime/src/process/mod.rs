//! Processes the runtime starts, and the rule they follow.
//!
//! # Process model
//!
//! The runtime is used from the shim, a multi-threaded tokio process. Forking such a process and
//! running Rust code in the child is undefined behaviour waiting to happen (allocator and lock state
//! copied mid-flight), so **no Rust code runs between `clone` and `execve`**:
//!
//! 1. In the caller, everything is prepared up front: the argument and environment arrays, the stdio
//!    descriptors and a control socket, staged at high descriptor numbers.
//! 2. [`spawn`] calls `clone3` (sharing the caller's memory until the exec, on a stack of the child's
//!    own, in the new namespaces the spec asks for and the container's v2 cgroup where it can); the
//!    child only resets its signal handlers, `dup2`s the staged descriptors into place and
//!    `execveat`s the helper binary (the caller's own executable, which calls
//!    [`run_helper_if_requested`] first thing in `main`), by a descriptor that leads to it through a
//!    read-only mount ([`executable`]).
//! 3. The helper is a fresh single-threaded process. It first joins its v1 cgroups (writing `0` to the
//!    `tasks` descriptors the runtime sends), then reads its plan from the control socket, joins or
//!    creates the namespaces it was not born in, forks once when it joined a pid namespace (an exec's
//!    helper: the child becomes the exec'd process, the helper reports its host pid and exits), then
//!    builds the filesystem and `pivot_root`s (init) and attaches a terminal if one was asked for.
//! 4. The init reports ready and blocks on the exec fifo; start opens it. The init (or an exec's
//!    process, at once) takes on the process's user and `execve`s the program. The control socket is
//!    close-on-exec, so its end-of-file tells the runtime the exec happened; a failed exec is reported on
//!    it instead.
//!
//! The helper is non-dumpable from its first instruction until the user's program replaces it, so a
//! container process can neither open `/proc/<pid>/exe` (the runtime binary) nor ptrace it.
//!
//! The runtime never reaps: the pids it returns belong to the caller's single reaper (the shim's
//! SIGCHLD loop, or [`crate::sys::wait_for_exit`] in the CLI). Because a container process may be a
//! grandchild, the caller must be a child subreaper to see its exit.

pub(crate) mod channel;
pub(crate) mod exec;
pub mod executable;
pub(crate) mod init;
mod launch;
mod security;

pub(crate) use security::check_labels;
pub mod spawn;

use std::os::unix::net::UnixStream;
use std::os::fd::FromRawFd;

use nix::sched::CloneFlags;
use nix::sys::stat::{umask, Mode};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::LinuxNamespaceType;

use channel::{Channel, Directive, Report};
use spawn::CONTROL_FD;
use crate::error::{Context, Error, Result};

/// The argument that turns the runtime's host binary into the helper.
pub const HELPER_ARG: &str = "__myshim_init";

/// What a helper is asked to do (the argument after [`HELPER_ARG`]).
pub(crate) const MODE_INIT: &str = "init";
pub(crate) const MODE_EXEC: &str = "exec";

/// Runs the container helper and never returns when this process was started as one; returns
/// immediately otherwise. Call it first thing in `main`, before any thread is started.
pub fn run_helper_if_requested() {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_none_or(|a| a != HELPER_ARG) {
        return;
    }
    let mode = args.next().and_then(|m| m.into_string().ok()).unwrap_or_default();
    let preserved: usize = args.next().and_then(|n| n.into_string().ok()?.parse().ok()).unwrap_or(0).min(spawn::MAX_PRESERVED_FDS);
    // spawn_helper exec'd us with every signal blocked.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    // SAFETY: descriptor 3 was placed there by spawn_helper and belongs to this process alone.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    // Nothing of the caller but stdio, the channel and the descriptors it preserves for the program.
    crate::sys::close_descriptor_range(CONTROL_FD + 1, spawn::PRESERVED_FD_BASE - 1);
    crate::sys::close_descriptors_from(spawn::PRESERVED_FD_BASE + preserved as i32);
    // dup2 cleared close-on-exec; the user's program must not inherit the channel, and its closing at
    // exec is how the runtime learns the exec happened.
    let _ = crate::sys::set_cloexec(CONTROL_FD, true);
    let mut channel = Channel::from_stream(control);
    let result = prepare().and_then(|()| join_cgroup(&mut channel)).and_then(|()| match mode.as_str() {
        MODE_INIT => init::run(&mut channel, preserved),
        MODE_EXEC => exec::run(&mut channel, preserved),
        other => Err(Error::Init(format!("unknown helper mode {other:?}"))),
    });
    let error = match result {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = channel.send(&Report::Failed(error.to_string()));
    std::process::exit(1);
}

fn prepare() -> Result<()> {
    // Until the user's program replaces us, nothing in the container may open /proc/<pid>/exe (the
    // runtime binary) or ptrace us: being non-dumpable makes /proc/<pid> ours alone.
    nix::sys::prctl::set_dumpable(false).context(|| "prctl(PR_SET_DUMPABLE)".into())?;
    umask(Mode::empty());
    Ok(())
}

/// Joins the container's v1 cgroups first thing, from the `tasks` descriptors the runtime sends ahead
/// of the plan (cheaper than being moved: see [`crate::cgroups::join_self`]).
fn join_cgroup(channel: &mut Channel) -> Result<()> {
    match channel.receive::<Directive>(None).context(|| "read the cgroup to join".into())? {
        Some((Directive::JoinCgroup, tasks)) => crate::cgroups::join_self(&tasks),
        Some((other, _)) => Err(Error::Init(format!("expected the cgroup to join, the runtime sent {other:?}"))),
        None => Err(Error::Init("the runtime closed the control channel before naming the cgroup".into())),
    }
}

/// Forks so that the child runs in the pid namespace this process entered (setns and unshare of a
/// pid namespace only affect children). The parent reports the child's host pid, waits until the
/// runtime has taken note of it (its start time, while it certainly runs), and exits; the child
/// returns once the parent is gone, so the two never write to the channel at the same time.
pub(crate) fn fork_into_pid_namespace(channel: &mut Channel) -> Result<()> {
    let (parent_gone, parent_alive) = nix::unistd::pipe().context(|| "create a pipe".into())?;
    // SAFETY: the helper is single-threaded (freshly executed, no threads started), so the child may
    // run any code.
    match unsafe { fork() }.context(|| "fork into the container's pid namespace".into())? {
        ForkResult::Child => {
            drop(parent_alive);
            let mut byte = [0u8; 1];
            let _ = nix::unistd::read(&parent_gone, &mut byte);
            Ok(())
        }
        ForkResult::Parent { child } => {
            let _ = channel.send(&Report::Pid(child.as_raw() as u32));
            let _ = channel.receive::<Directive>(None);
            std::process::exit(0);
        }
    }
}

/// Just before the exec: the descriptors preserved for the program go to 3, 4, … (where `--preserve-fds`
/// promises them), and the control channel, close-on-exec, moves above them.
pub(crate) fn hand_over_preserved(channel: &mut Channel, count: usize) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let moved = crate::sys::dup_above(CONTROL_FD, spawn::PRESERVED_FD_BASE + count as i32).context(|| "move the control channel".into())?;
    channel.replace_socket(UnixStream::from(moved));
    for i in 0..count as i32 {
        let (from, to) = (spawn::PRESERVED_FD_BASE + i, CONTROL_FD + i);
        // SAFETY: dup2 and close on descriptor numbers this process owns (placed by spawn_helper); dup2
        // leaves the target without close-on-exec, so the program inherits it.
        unsafe {
            if libc::dup2(from, to) < 0 {
                return Err(Error::io(format!("place preserved descriptor {to}"), std::io::Error::last_os_error()));
            }
            libc::close(from);
        }
    }
    Ok(())
}

pub(crate) fn clone_flag(typ: LinuxNamespaceType) -> Result<CloneFlags> {
    use LinuxNamespaceType::*;
    Ok(match typ {
        Mount => CloneFlags::CLONE_NEWNS,
        Cgroup => CloneFlags::CLONE_NEWCGROUP,
        Uts => CloneFlags::CLONE_NEWUTS,
        Ipc => CloneFlags::CLONE_NEWIPC,
        User => CloneFlags::CLONE_NEWUSER,
        Pid => CloneFlags::CLONE_NEWPID,
        Network => CloneFlags::CLONE_NEWNET,
        Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    })
}
