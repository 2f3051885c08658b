//! What every helper does last: find the program inside the container, give the process a terminal
//! if it asked for one, take on the process's identity, and `execve`.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::{umask, Mode};
use oci_spec::runtime::Process;

use super::channel::{Channel, Directive, Report};
use super::security::{self, Confinement};
use crate::error::{Context, Error, Result};

/// The type of a function that only returns on failure.
pub(crate) enum Never {}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds the program as execvp would, inside the container, with the messages runc gives.
pub(crate) fn find_program(process: &Process) -> Result<PathBuf> {
    let name = process.args().as_ref().and_then(|a| a.first()).ok_or_else(|| Error::spec("process.args", "must name the program to run"))?;
    let env = effective_env(process.env().as_deref().unwrap_or(&[]));
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

/// Makes this process the leader of a new session, as runc makes every container process: a terminal
/// can become its controlling one, and CRIU can dump the container (a session led from outside its
/// pid namespace cannot be restored).
pub(crate) fn new_session() -> Result<()> {
    nix::unistd::setsid().context(|| "setsid".into())?;
    Ok(())
}

/// Gives this process (a session leader) a new terminal from the container's devpts: the master goes to the runtime
/// over the control channel, the slave becomes the controlling terminal and stdin/stdout/stderr. With
/// `bind_console` the slave is also bind-mounted over `/dev/console`.
pub(crate) fn attach_terminal(channel: &mut Channel, process: &Process, bind_console: bool) -> Result<()> {
    let master = open("/dev/ptmx", OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
        .context(|| "process.terminal: open /dev/ptmx in the container".into())?;
    // SAFETY: ioctls on a descriptor we own, with arguments of the types the kernel expects.
    let slave = unsafe {
        let unlock: libc::c_int = 0;
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(Error::io("process.terminal: unlock the pty", std::io::Error::last_os_error()));
        }
        let fd = libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(Error::io("process.terminal: open the pty's slave", std::io::Error::last_os_error()));
        }
        OwnedFd::from_raw_fd(fd)
    };
    if let Some(size) = process.console_size() {
        crate::sys::set_window_size(master.as_fd(), size.width() as u16, size.height() as u16)
            .context(|| "process.consoleSize: set the window size".into())?;
    }
    if bind_console {
        bind_dev_console(&slave)?;
    }
    channel.send_with_fds(&Report::Console, &[master.as_raw_fd()]).context(|| "send the terminal to the runtime".into())?;
    drop(master);
    // SAFETY: TIOCSCTTY on the slave we own makes it our controlling terminal; dup2 replaces 0–2.
    unsafe {
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
            return Err(Error::io("process.terminal: make the pty the controlling terminal", std::io::Error::last_os_error()));
        }
        for target in 0..3 {
            if libc::dup2(slave.as_raw_fd(), target) < 0 {
                return Err(Error::io("process.terminal: use the pty as stdio", std::io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}

/// `/dev/console` in the container is the container's own terminal, never the host's. The file it is
/// mounted on is looked up inside the container and must be a file or a device node, never a symlink
/// an image placed there (CVE-2025-52565: the terminal would land on whatever it points to).
fn bind_dev_console(slave: &OwnedFd) -> Result<()> {
    use crate::rootfs::resolve::{ensure, Create};
    let what = || "bind the terminal on /dev/console".to_owned();
    let root = open(Path::new("/"), OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).context(|| "open the container's root".into())?;
    let dev = ensure(&root, Path::new("/dev"), Create::Directory)?;
    let console = match openat(dev.as_fd(), "console", OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()) {
        Err(nix::errno::Errno::ENOENT) => {
            drop(openat(dev.as_fd(), "console", OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::from_bits_truncate(0o600)).context(what)?);
            openat(dev.as_fd(), "console", OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).context(what)?
        }
        other => other.context(what)?,
    };
    let kind = nix::sys::stat::fstat(console.as_fd()).context(what)?.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG && kind != libc::S_IFCHR {
        return Err(Error::io(what(), std::io::Error::other("/dev/console in the container is not a file or a device (a symlink?)")));
    }
    crate::mount_api::bind(slave.as_fd(), console.as_fd()).context(what)
}

/// Takes on everything of the process but its program, in runc's order: umask, working directory,
/// rlimits, scheduling, labels, capabilities, user and groups, no_new_privs; then finds the program
/// (as the process's user, from its working directory); then a seccomp filter that needs
/// no_new_privs, as late as possible. Only `execve` is left after this (for the init, after the wait
/// for start). `warn` hears what runc would only warn about.
pub(crate) fn become_process(process: &Process, confinement: &Confinement<'_>, channel: &mut Channel, warn: &mut dyn FnMut(String)) -> Result<PathBuf> {
    umask(Mode::from_bits_truncate(process.user().umask().unwrap_or(0o022)));
    let cwd = process.cwd();
    std::env::set_current_dir(cwd).context(|| format!("process.cwd: chdir to {}", cwd.display()))?;
    let late_filter = security::apply(process, confinement, warn)?;
    let program = find_program(process)?;
    if let Some(notify) = late_filter.load()? {
        // The listener gets the descriptor before the process makes a call it would have to answer.
        channel.send_with_fds(&Report::SeccompNotify, &[notify.as_raw_fd()]).context(|| "send the seccomp notification descriptor".into())?;
        match channel.receive::<Directive>(None).context(|| "wait for the seccomp listener".into())? {
            Some((Directive::Continue { .. }, _)) => {}
            _ => return Err(Error::Init("the runtime did not hand the seccomp notifications to the listener".into())),
        }
    }
    Ok(program)
}

/// The environment as the program gets it: a variable given twice has its last value, at its first
/// place (runc sets them one after the other), so a value given for an exec overrides the spec's.
pub(crate) fn effective_env(env: &[String]) -> Vec<String> {
    let mut result: Vec<String> = Vec::with_capacity(env.len());
    for entry in env {
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        match result.iter_mut().find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key) {
            Some(existing) => existing.clone_from(entry),
            None => result.push(entry.clone()),
        }
    }
    result
}

/// Replaces this process with the program, with the process's arguments and environment.
pub(crate) fn exec_program(process: &Process, program: &Path) -> Result<Never> {
    let args = process.args().clone().unwrap_or_default();
    let env = effective_env(process.env().as_deref().unwrap_or(&[]));
    let c_program = CString::new(program.as_os_str().as_bytes()).map_err(|_| Error::spec("process.args[0]", "contains NUL"))?;
    let c_args = to_cstrings(&args, "process.args")?;
    let c_env = to_cstrings(&env, "process.env")?;
    reset_signals();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_value_of_a_variable_wins() {
        let env: Vec<String> = ["PATH=/bin", "A=spec", "B=1", "A=exec"].iter().map(|s| s.to_string()).collect();
        assert_eq!(effective_env(&env), ["PATH=/bin", "A=exec", "B=1"]);
    }
}
