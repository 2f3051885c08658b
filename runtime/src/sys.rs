//! Small, safe wrappers around process-level system calls that the shim needs besides the container
//! work: reaping, subreaper, inherited descriptors, process identity. All `unsafe` of the project lives
//! in this crate; callers outside it use these functions.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The exit status containerd expects: the exit code, or 128 + the number of the killing signal.
pub fn exit_status_of(status: WaitStatus) -> Option<(u32, u32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw() as u32, code as u32)),
        WaitStatus::Signaled(pid, signal, _) => Some((pid.as_raw() as u32, 128 + signal as u32)),
        _ => None,
    }
}

/// Reaps one exited child without blocking: `Some((pid, exit status))`, or `None` when no child has
/// exited (or there are no children). This is the only `waitpid(-1)` the shim may call, from its one
/// reaper.
pub fn reap_one_child() -> Option<(u32, u32)> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(status) => {
                if let Some(exit) = exit_status_of(status) {
                    return Some(exit);
                }
                // Stopped/continued notifications are not exits; keep looking.
            }
        }
    }
}

/// Blocks until `pid` exits and returns its exit status, reaping any other child (or orphan handed to
/// this subreaper) on the way. For callers that own all their children (the CLI); the shim reaps
/// through its single reaper instead.
pub fn wait_for_exit(pid: u32) -> io::Result<u32> {
    loop {
        match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(status) => {
                if let Some((exited, code)) = exit_status_of(status) {
                    if exited == pid {
                        return Ok(code);
                    }
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Makes this process the reaper of its orphaned descendants.
pub fn become_child_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(Into::into)
}

/// Keeps the C allocator to `arenas` arenas: glibc gives every thread that allocates an arena of its
/// own (up to eight per CPU), and in a long-lived daemon whose short-lived worker threads allocate,
/// each arena keeps pages resident after its thread is gone.
pub fn limit_malloc_arenas(arenas: i32) {
    // SAFETY: mallopt only changes the allocator's parameters; called before other threads allocate.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
}

/// Returns the allocator's free memory to the kernel (what a burst of work, a container's creation
/// say, allocated and freed again would otherwise stay resident).
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}

/// Sends `signal` (a raw number, as containerd passes it) to `pid`.
pub fn send_signal(pid: u32, signal: u32) -> io::Result<()> {
    let signal = Signal::try_from(signal as i32).map_err(io::Error::from)?;
    nix::sys::signal::kill(Pid::from_raw(pid as i32), signal).map_err(Into::into)
}

/// Whether a process with this pid exists (a zombie counts).
pub fn process_exists(pid: u32) -> bool {
    pid != 0 && nix::sys::signal::kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`). Together with
/// the pid it identifies a process across pid reuse.
pub fn process_start_time(pid: u32) -> Option<u64> {
    stat_after_name(pid)?.split_whitespace().nth(19)?.parse().ok()
}

/// [`process_start_time`] while `pid` runs; `None` once it has exited (a zombie not yet reaped
/// counts as exited) or is gone. One read of `/proc/<pid>/stat`.
pub fn start_time_if_running(pid: u32) -> Option<u64> {
    let fields = stat_after_name(pid)?;
    if fields.starts_with('Z') {
        return None;
    }
    fields.split_whitespace().nth(19)?.parse().ok()
}

/// `/proc/<pid>/stat` from field 3 (the state) on. The command name (field 2) is in parentheses and
/// may contain spaces, so the split is after the last ')'.
fn stat_after_name(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.get(stat.rfind(')')? + 2..)?.to_owned())
}

/// Sets `/proc/<pid>/oom_score_adj`.
pub fn set_oom_score_adj(pid: u32, value: i32) -> io::Result<()> {
    fs::write(format!("/proc/{pid}/oom_score_adj"), value.to_string())
}

/// Reads `/proc/<pid>/oom_score_adj`.
pub fn oom_score_adj(pid: u32) -> io::Result<i32> {
    fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))?
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "malformed oom_score_adj"))
}

/// Marks every descriptor from `first` up close-on-exec: what this process inherited without the
/// flag (a pipe of whoever started containerd) then stops with it instead of living on in a
/// program it spawns.
pub fn close_on_exec_from(first: RawFd) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptor numbers.
    let result = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Places `fd` at descriptor number `target` without close-on-exec, so that a program this process
/// spawns next inherits it there. Only for single-threaded callers (the shim's `start`): another
/// thread spawning at the same time would inherit it too.
pub fn place_for_child(fd: OwnedFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 and fcntl only operate on descriptor numbers; `fd` is valid (owned) and `target`
    // is replaced atomically by dup2.
    unsafe {
        if fd.as_raw_fd() != target && libc::dup2(fd.as_raw_fd(), target) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::fcntl(target, libc::F_SETFD, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if fd.as_raw_fd() == target {
        // Keep the descriptor open: it is now the child's.
        std::mem::forget(fd);
    }
    Ok(())
}

/// Takes ownership of a descriptor this process inherited at a fixed number (the shim daemon's
/// listening socket at fd 3). Returns `None` when nothing is open there.
pub fn take_inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return None;
    }
    // SAFETY: the descriptor is open and, by the protocol between `start` and the daemon, nobody else
    // in this process owns it. Mark it close-on-exec so container processes never inherit it.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        Some(OwnedFd::from_raw_fd(fd))
    }
}

/// Sets a terminal's window size (TIOCSWINSZ), for the pty master of a container process.
pub fn set_window_size(fd: std::os::fd::BorrowedFd<'_>, width: u16, height: u16) -> io::Result<()> {
    let size = libc::winsize { ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a winsize struct we own, on a descriptor the caller keeps open.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An inotify descriptor (non-blocking) that becomes readable whenever `path` is modified.
pub fn watch_modifications(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: inotify_init1 returns a new descriptor that we own.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: the path is a valid C string for the duration of the call.
    if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_path.as_ptr(), libc::IN_MODIFY) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Waits until `fd` is readable (or its other end closed): `Ok(false)` when `deadline` passed first.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], timeout) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Duplicates `fd` at a number >= `min` with close-on-exec set.
pub fn dup_above(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a fresh descriptor that we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Sets or clears close-on-exec on a descriptor.
pub(crate) fn set_cloexec(fd: RawFd, cloexec: bool) -> io::Result<()> {
    let flag = if cloexec { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD only changes the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flag) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes the descriptors `first` to `last` (both included).
pub(crate) fn close_descriptor_range(first: RawFd, last: RawFd) {
    if first <= last {
        // SAFETY: close_range only closes descriptors; callers own everything in the range.
        unsafe {
            libc::syscall(libc::SYS_close_range, first as libc::c_uint, last as libc::c_uint, 0 as libc::c_uint);
        }
    }
}

/// Closes every descriptor from `first` up, so nothing of the parent leaks into a container.
pub(crate) fn close_descriptors_from(first: RawFd) {
    // SAFETY: close_range only closes descriptors; callers own everything at and above `first`.
    unsafe {
        libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, 0 as libc::c_uint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_stable() {
        let me = std::process::id();
        let a = process_start_time(me).unwrap();
        assert_eq!(Some(a), process_start_time(me));
        assert!(process_start_time(u32::MAX / 2).is_none());
    }

    #[test]
    fn a_zombie_is_not_running() {
        assert_eq!(start_time_if_running(std::process::id()), process_start_time(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        // Not reaped yet: once it has exited it stays a zombie, with its start time still readable.
        while start_time_if_running(child.id()).is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(start_time_if_running(child.id()).is_none());
        assert!(process_start_time(child.id()).is_some(), "the zombie is still there");
        child.wait().unwrap();
    }
}
