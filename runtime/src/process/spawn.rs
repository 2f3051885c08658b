//! Starting a helper process from a multi-threaded caller (the shim) without running any Rust code in
//! the child: everything is prepared before `clone`, and the child only moves descriptors into place
//! with `dup2` and calls `execve`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::sys::dup_above;

/// Descriptor numbers the helper finds its inputs at.
pub(crate) const CONTROL_FD: RawFd = 3;

/// Descriptors are first duplicated above this number, so that moving them to 0..=3 in the child can
/// never overwrite one that still has to be moved.
const STAGING_FLOOR: RawFd = 10;

/// Starts `exe` with `args` and an empty environment; the child gets `stdio` at 0, 1, 2 and `control`
/// at [`CONTROL_FD`]. Returns the child's pid.
pub(crate) fn spawn_helper(exe: &Path, args: &[&str], stdio: [&OwnedFd; 3], control: &OwnedFd) -> io::Result<u32> {
    let exe = CString::new(exe.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let args: Vec<CString> = args.iter().map(|a| CString::new(*a).map_err(io::Error::other)).collect::<io::Result<_>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];

    // Staged copies are close-on-exec in this process; dup2 in the child clears the flag on the target.
    let staged = [
        dup_above(stdio[0].as_raw_fd(), STAGING_FLOOR)?,
        dup_above(stdio[1].as_raw_fd(), STAGING_FLOOR)?,
        dup_above(stdio[2].as_raw_fd(), STAGING_FLOOR)?,
        dup_above(control.as_raw_fd(), STAGING_FLOOR)?,
    ];
    let moves: [(RawFd, RawFd); 4] = [
        (staged[0].as_raw_fd(), 0),
        (staged[1].as_raw_fd(), 1),
        (staged[2].as_raw_fd(), 2),
        (staged[3].as_raw_fd(), CONTROL_FD),
    ];
    clone_and_exec(&exe, &argv, &envp, &moves)
}

fn clone_and_exec(exe: &CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char], moves: &[(RawFd, RawFd); 4]) -> io::Result<u32> {
    // SAFETY: a plain clone without CLONE_VM gives the child a copy of this address space with a single
    // thread. The child touches only memory prepared above (the CStrings, pointer arrays and the move
    // table, all alive until after this function returns in the parent) and calls only the
    // async-signal-safe system calls dup2, execve and _exit: no allocation, no locks, no unwinding.
    unsafe {
        let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0usize, 0usize, 0usize, 0usize);
        if pid == 0 {
            for &(from, to) in moves {
                if libc::dup2(from, to) < 0 {
                    libc::_exit(126);
                }
            }
            libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(pid as u32)
    }
}
