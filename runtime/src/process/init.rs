//! The container's init before it becomes the user's program. This code runs in a freshly executed
//! helper process (single-threaded, nothing inherited but descriptors 0–3), never in the shim.
//!
//! Steps: read the plan from the control channel; join the namespaces the spec names by path and
//! unshare the new ones; fork once if the pid namespace changes (the child becomes pid 1 and the helper
//! reports its host pid and exits); build the filesystem and `pivot_root`; set the hostname; check that
//! the program exists; report ready; block on the exec fifo until the runtime's start opens it; then
//! drop to the process's user and `execve` it.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{fork, ForkResult, Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

use super::channel::{Channel, Report};
use super::spawn::CONTROL_FD;
use crate::cgroups::Cgroup;
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
}

/// Entry point of the helper: never returns.
pub(crate) fn main() -> ! {
    // SAFETY: descriptor 3 was placed there by spawn_helper and belongs to this process alone.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    crate::sys::close_descriptors_from(CONTROL_FD + 1);
    // dup2 cleared close-on-exec; the user's program must not inherit the channel, and its closing at
    // exec is how the runtime learns the exec happened.
    let _ = crate::sys::set_cloexec(CONTROL_FD, true);
    let mut channel = Channel::from_stream(control);
    let error = match run(&mut channel) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = channel.send(&Report::Failed(error.to_string()));
    std::process::exit(1);
}

enum Never {}

fn run(channel: &mut Channel) -> Result<Never> {
    // Until the user's program replaces us, nothing in the container may open /proc/<pid>/exe (the
    // runtime binary) or ptrace us: being non-dumpable makes /proc/<pid> ours alone.
    nix::sys::prctl::set_dumpable(false).context(|| "prctl(PR_SET_DUMPABLE)".into())?;
    umask(Mode::empty());

    let (plan, _): (InitPlan, _) = channel
        .receive(None)
        .context(|| "read the init plan".into())?
        .ok_or_else(|| Error::Init("the runtime closed the control channel before sending the plan".into()))?;
    let spec = &plan.spec;
    // Opened now, while the host's paths are still visible; used after pivot_root through /proc.
    let exec_fifo = open(&plan.exec_fifo, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .context(|| format!("open exec fifo {}", plan.exec_fifo.display()))?;

    enter_namespaces(spec, channel)?;

    crate::rootfs::prepare(spec, &plan.rootfs, plan.cgroup.as_ref())?;
    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(hostname).context(|| format!("set hostname {hostname:?}"))?;
    }
    if let Some(domainname) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        set_domainname(domainname)?;
    }

    let process = spec.process().as_ref().ok_or_else(|| Error::spec("process", "missing"))?;
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let program = find_program(&args[0], &env)?;

    channel.send(&Report::Ready).context(|| "report ready".into())?;
    wait_for_start(&exec_fifo)?;

    finish_and_exec(spec, &program, &args, &env)
}

/// Joins namespaces given by path, unshares the new ones, and forks into a changed pid namespace. On
/// return this process is the container's init.
fn enter_namespaces(spec: &Spec, channel: &mut Channel) -> Result<()> {
    use LinuxNamespaceType::*;
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
    let mut new = CloneFlags::empty();
    let mut pid_changes = false;
    // Join by path first (a pod's network namespace, say), then create the rest.
    for ns in &namespaces {
        let flag = clone_flag(ns.typ())?;
        match ns.path() {
            Some(path) => {
                let file = File::open(path).context(|| format!("linux.namespaces: open {} namespace {}", ns.typ(), path.display()))?;
                setns(file.as_fd(), flag).context(|| format!("linux.namespaces: join {} namespace {}", ns.typ(), path.display()))?;
                pid_changes |= ns.typ() == Pid;
            }
            None if ns.typ() == User => {
                return Err(Error::Unsupported("linux.namespaces: user namespaces are not supported yet".into()));
            }
            None => {
                new |= flag;
                pid_changes |= ns.typ() == Pid;
            }
        }
    }
    unshare(new).context(|| format!("unshare namespaces {new:?}"))?;
    if !pid_changes {
        return Ok(());
    }
    // The child must not write to the channel before the parent's pid report is out: it waits for the
    // parent to exit, seen as end-of-file on this pipe.
    let (parent_gone, parent_alive) = nix::unistd::pipe().context(|| "create a pipe".into())?;
    // SAFETY: this helper is single-threaded (freshly executed, no threads started), so the child may
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
            std::process::exit(0);
        }
    }
}

fn clone_flag(typ: LinuxNamespaceType) -> Result<CloneFlags> {
    use LinuxNamespaceType::*;
    Ok(match typ {
        Mount => CloneFlags::CLONE_NEWNS,
        Cgroup => CloneFlags::CLONE_NEWCGROUP,
        Uts => CloneFlags::CLONE_NEWUTS,
        Ipc => CloneFlags::CLONE_NEWIPC,
        User => CloneFlags::CLONE_NEWUSER,
        Pid => CloneFlags::CLONE_NEWPID,
        Network => CloneFlags::CLONE_NEWNET,
        Time => return Err(Error::Unsupported("linux.namespaces: time namespaces are not supported yet".into())),
    })
}

fn set_domainname(name: &str) -> Result<()> {
    // SAFETY: the pointer and length describe `name`, which outlives the call.
    let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if rc < 0 {
        return Err(Error::io(format!("set domainname {name:?}"), std::io::Error::last_os_error()));
    }
    Ok(())
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds the program as execvp would, inside the container, with the messages runc gives.
fn find_program(name: &str, env: &[String]) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if name.contains('/') {
        return match executable(Path::new(name)) {
            Ok(true) => Ok(PathBuf::from(name)),
            Ok(false) => Err(Error::Init(format!("exec: {name:?}: permission denied"))),
            Err(e) => Err(Error::Init(format!("exec: {name:?}: stat {name}: {}", crate::error::lower(&e)))),
        };
    }
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
        .find(|p| executable(p).unwrap_or(false))
        .ok_or_else(|| Error::Init(format!("exec: {name:?}: executable file not found in $PATH")))
}

/// Blocks until the runtime's start opens the exec fifo for reading, then tells it we are going.
fn wait_for_start(exec_fifo: &OwnedFd) -> Result<()> {
    let path = format!("/proc/self/fd/{}", exec_fifo.as_raw_fd());
    let fifo = open(path.as_str(), OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
        .context(|| "open the exec fifo (is /proc mounted in the container?)".into())?;
    File::from(fifo).write_all(b"0").context(|| "write to the exec fifo".into())
}

/// Applies the process's identity and environment and replaces this process with the program.
fn finish_and_exec(spec: &Spec, program: &Path, args: &[String], env: &[String]) -> Result<Never> {
    let process = spec.process().as_ref().ok_or_else(|| Error::spec("process", "missing"))?;
    let user = process.user();
    let groups: Vec<Gid> = user.additional_gids().iter().flatten().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).context(|| format!("process.user.additionalGids: setgroups {groups:?}"))?;
    nix::unistd::setgid(Gid::from_raw(user.gid())).context(|| format!("process.user.gid: setgid {}", user.gid()))?;
    nix::unistd::setuid(Uid::from_raw(user.uid())).context(|| format!("process.user.uid: setuid {}", user.uid()))?;
    umask(Mode::from_bits_truncate(user.umask().unwrap_or(0o022)));
    let cwd = process.cwd();
    std::env::set_current_dir(cwd).context(|| format!("process.cwd: chdir to {}", cwd.display()))?;
    if process.no_new_privileges() == Some(true) {
        nix::sys::prctl::set_no_new_privs().context(|| "prctl(PR_SET_NO_NEW_PRIVS)".into())?;
    }
    reset_signals();

    let c_program = CString::new(program.as_os_str().as_bytes()).map_err(|_| Error::spec("process.args[0]", "contains NUL"))?;
    let c_args = to_cstrings(args, "process.args")?;
    let c_env = to_cstrings(env, "process.env")?;
    let err = nix::unistd::execve(&c_program, &c_args, &c_env).unwrap_err();
    Err(Error::Init(format!("exec: {:?}: {}", args[0], err.desc().to_lowercase())))
}

fn to_cstrings(items: &[String], field: &str) -> Result<Vec<CString>> {
    items.iter().map(|s| CString::new(s.as_bytes()).map_err(|_| Error::spec(field, format!("{s:?} contains NUL")))).collect()
}

/// The helper inherited the shim's signal dispositions: give the program the defaults, and an empty
/// signal mask, as a freshly started process expects (ignored SIGPIPE would survive execve).
fn reset_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in Signal::iterator() {
        if !matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            // SAFETY: installing SIG_DFL runs no handler code.
            let _ = unsafe { sigaction(signal, &default) };
        }
    }
    let _ = SigSet::empty().thread_set_mask();
}
