//! Starting a program from a multi-threaded caller (the shim) without running any Rust code in the
//! child: everything is prepared before `clone`, and the child only moves descriptors into place with
//! `dup2` and calls `execve`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sched::CloneFlags;

use super::executable::HelperExecutable;
use crate::sys::dup_above;

/// Descriptor number the helper finds its control channel at.
pub(crate) const CONTROL_FD: RawFd = 3;

/// Descriptors are first duplicated above this number, so that moving them to their targets in the
/// child can never overwrite one that still has to be moved.
const STAGING_FLOOR: RawFd = 64;

/// Most descriptors a spawn can place (stdio, control, a logger's three pipes).
const MAX_PLACED: usize = 8;

/// Starts the helper binary `exe` with `args` and an empty environment; the child gets `stdio` at 0,
/// 1, 2 and `control` at [`CONTROL_FD`], is born in the new `namespaces`, and in the v2 cgroup `cgroup`
/// (a directory) where the kernel can do that. Returns the child's pid and whether it was born there.
pub(crate) fn spawn_helper(
    exe: &HelperExecutable,
    args: &[&str],
    stdio: [&OwnedFd; 3],
    control: &OwnedFd,
    cgroup: Option<&OwnedFd>,
    namespaces: CloneFlags,
) -> io::Result<(u32, bool)> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let placed = [(stdio[0], 0), (stdio[1], 1), (stdio[2], 2), (control, CONTROL_FD)];
    let program = || Program::Descriptor(exe.raw_fd());
    if let Some(cgroup) = cgroup {
        match start(program(), &args, &[], &placed, Birthplace { namespaces, cgroup: Some(cgroup.as_raw_fd()) }) {
            Ok(pid) => return Ok((pid, true)),
            // clone3 or CLONE_INTO_CGROUP unknown to this kernel (before 5.7): the caller moves the child.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG | libc::EOPNOTSUPP)) => {}
            Err(e) => return Err(e),
        }
    }
    start(program(), &args, &[], &placed, Birthplace { namespaces, cgroup: None }).map(|pid| (pid, false))
}

/// Starts `program` with `args` (argv[0] included) and `env`, each `(descriptor, number)` placed at
/// that number in the child and everything else closed at exec. Returns the child's pid; the caller's
/// reaper collects its exit.
pub fn spawn(program: &Path, args: &[String], env: &[String], placed: &[(&OwnedFd, RawFd)]) -> io::Result<u32> {
    let program = CString::new(program.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "program path contains NUL"))?;
    start(Program::Path(&program), args, env, placed, Birthplace::HERE)
}

/// Where the child is born: in new namespaces, and in a v2 cgroup (a directory descriptor).
#[derive(Clone, Copy)]
struct Birthplace {
    namespaces: CloneFlags,
    cgroup: Option<RawFd>,
}

impl Birthplace {
    /// The caller's namespaces and cgroup.
    const HERE: Birthplace = Birthplace { namespaces: CloneFlags::empty(), cgroup: None };
}

/// What the child executes: a path, or an open descriptor (`execveat` with `AT_EMPTY_PATH`).
enum Program<'a> {
    Path(&'a CStr),
    Descriptor(RawFd),
}

fn start(program: Program, args: &[String], env: &[String], placed: &[(&OwnedFd, RawFd)], birthplace: Birthplace) -> io::Result<u32> {
    if placed.len() > MAX_PLACED {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors to place"));
    }
    let c = |s: &[u8]| CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument contains NUL"));
    let args: Vec<CString> = args.iter().map(|a| c(a.as_bytes())).collect::<io::Result<_>>()?;
    let env: Vec<CString> = env.iter().map(|e| c(e.as_bytes())).collect::<io::Result<_>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());

    // Staged copies are close-on-exec in this process; dup2 in the child clears the flag on the target.
    let staged: Vec<OwnedFd> = placed.iter().map(|(fd, _)| dup_above(fd.as_raw_fd(), STAGING_FLOOR)).collect::<io::Result<_>>()?;
    let mut moves = [(-1, -1); MAX_PLACED];
    for (i, ((_, target), staged)) in placed.iter().zip(&staged).enumerate() {
        moves[i] = (staged.as_raw_fd(), *target);
    }
    clone_and_exec(program, &argv, &envp, &moves[..placed.len()], birthplace)
}

/// `struct clone_args` of `clone3(2)` (the fields up to `cgroup`, kernel 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

fn clone_and_exec(program: Program, argv: &[*const libc::c_char], envp: &[*const libc::c_char], moves: &[(RawFd, RawFd)], birthplace: Birthplace) -> io::Result<u32> {
    let empty = c"";
    let namespaces = birthplace.namespaces.bits() as u64;
    let clone_args = birthplace.cgroup.map(|fd| CloneArgs { flags: namespaces | CLONE_INTO_CGROUP, exit_signal: libc::SIGCHLD as u64, cgroup: fd as u64, ..CloneArgs::default() });
    // SAFETY: a clone without CLONE_VM (clone3 without a stack behaves the same), into new namespaces
    // and maybe a cgroup, gives the child a copy of this address space with a single thread. The child touches only memory prepared above (the CStrings, pointer arrays and the move
    // table, all alive until after this function returns in the parent) and calls only the
    // async-signal-safe system calls dup2, execve(at) and _exit: no allocation, no locks, no unwinding.
    // The program's descriptor may be close-on-exec: execveat of a binary (not a script) opens it
    // before descriptors are closed.
    unsafe {
        let pid = match &clone_args {
            Some(args) => libc::syscall(libc::SYS_clone3, args as *const CloneArgs, std::mem::size_of::<CloneArgs>()),
            None => libc::syscall(libc::SYS_clone, namespaces as libc::c_ulong | libc::SIGCHLD as libc::c_ulong, 0usize, 0usize, 0usize, 0usize),
        };
        if pid == 0 {
            for &(from, to) in moves {
                if libc::dup2(from, to) < 0 {
                    libc::_exit(126);
                }
            }
            match program {
                Program::Path(path) => libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()),
                Program::Descriptor(fd) => {
                    libc::syscall(libc::SYS_execveat, fd, empty.as_ptr(), argv.as_ptr(), envp.as_ptr(), libc::AT_EMPTY_PATH) as libc::c_int
                }
            };
            libc::_exit(127);
        }
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(pid as u32)
    }
}
