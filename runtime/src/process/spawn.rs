//! Starting a program from a multi-threaded caller (the shim) without running any Rust code in the
//! child: everything is prepared before `clone3`, and the child, which shares the caller's memory
//! until it execs (`posix_spawn`-style), only resets its signals, moves descriptors into place and
//! calls `execve` or `execveat`, with raw system calls.

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

/// Where a helper finds the descriptors its caller preserves for the program (`--preserve-fds`), until
/// it puts them at 3, 4, … just before the exec.
pub(crate) const PRESERVED_FD_BASE: RawFd = 10;
/// Most descriptors a program can be given that way (they stay below the staging floor).
pub const MAX_PRESERVED_FDS: usize = 32;

/// Starts the helper binary `exe` with `args` and an empty environment; the child gets `stdio` at 0,
/// 1, 2, `control` at [`CONTROL_FD`] and `preserved` from [`PRESERVED_FD_BASE`] on, is born in the new
/// `namespaces`, and in the v2 cgroup `cgroup` (a directory) where the kernel can do that. Returns the
/// child's pid and whether it was born there.
pub(crate) fn spawn_helper(
    exe: &HelperExecutable,
    args: &[&str],
    stdio: [&OwnedFd; 3],
    control: &OwnedFd,
    preserved: &[OwnedFd],
    cgroup: Option<&OwnedFd>,
    namespaces: CloneFlags,
) -> io::Result<(u32, bool)> {
    if preserved.len() > MAX_PRESERVED_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} descriptors to preserve: at most {MAX_PRESERVED_FDS}", preserved.len())));
    }
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut placed = vec![(stdio[0], 0), (stdio[1], 1), (stdio[2], 2), (control, CONTROL_FD)];
    placed.extend(preserved.iter().zip(PRESERVED_FD_BASE..));
    let fd = exe.raw_fd()?;
    let program = || Program::Descriptor(fd);
    if let Some(cgroup) = cgroup {
        match start(program(), &args, &[], &placed, Birthplace { namespaces, cgroup: Some(cgroup.as_raw_fd()), helper: true }) {
            Ok(pid) => return Ok((pid, true)),
            // CLONE_INTO_CGROUP unknown to this kernel (before 5.7): the caller moves the child.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG | libc::EOPNOTSUPP)) => {}
            Err(e) => return Err(e),
        }
    }
    start(program(), &args, &[], &placed, Birthplace { namespaces, cgroup: None, helper: true }).map(|pid| (pid, false))
}

/// Starts `program` with `args` (`argv[0]` included) and `env`, each `(descriptor, number)` placed at
/// that number in the child and everything else closed at exec. Returns the child's pid; the caller's
/// reaper collects its exit.
pub fn spawn(program: &Path, args: &[String], env: &[String], placed: &[(&OwnedFd, RawFd)]) -> io::Result<u32> {
    let program = CString::new(program.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "program path contains NUL"))?;
    start(Program::Path(&program), args, env, placed, Birthplace::HERE)
}

/// Where the child is born: in new namespaces, and in a v2 cgroup (a directory descriptor); and
/// whether it runs the helper, which is exec'd with every signal still blocked and unblocks them itself
/// (saving the child the reset of every handler before it may unblock).
#[derive(Clone, Copy)]
struct Birthplace {
    namespaces: CloneFlags,
    cgroup: Option<RawFd>,
    helper: bool,
}

impl Birthplace {
    /// The caller's namespaces and cgroup, for any program.
    const HERE: Birthplace = Birthplace { namespaces: CloneFlags::empty(), cgroup: None, helper: false };
}

/// What the child executes: a path, or an open descriptor (`execveat` with `AT_EMPTY_PATH`).
enum Program<'a> {
    Path(&'a CStr),
    Descriptor(RawFd),
}

fn start(program: Program, args: &[String], env: &[String], placed: &[(&OwnedFd, RawFd)], birthplace: Birthplace) -> io::Result<u32> {
    let c = |s: &[u8]| CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument contains NUL"));
    let args: Vec<CString> = args.iter().map(|a| c(a.as_bytes())).collect::<io::Result<_>>()?;
    let env: Vec<CString> = env.iter().map(|e| c(e.as_bytes())).collect::<io::Result<_>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());

    // Staged copies are close-on-exec in this process; dup2 in the child clears the flag on the target.
    let staged: Vec<OwnedFd> = placed.iter().map(|(fd, _)| dup_above(fd.as_raw_fd(), STAGING_FLOOR)).collect::<io::Result<_>>()?;
    let moves: Vec<(RawFd, RawFd)> = placed.iter().zip(&staged).map(|((_, target), staged)| (staged.as_raw_fd(), *target)).collect();
    // The executable's descriptor too: at its own number it could be one of the targets (a preserved
    // descriptor's, say), overwritten by the moves before the exec reads it.
    let staged_program;
    let program = match program {
        Program::Descriptor(fd) => {
            staged_program = dup_above(fd, STAGING_FLOOR)?;
            Program::Descriptor(staged_program.as_raw_fd())
        }
        path => path,
    };
    clone_and_exec(program, &argv, &envp, &moves, birthplace)
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

/// What the child needs, prepared by the parent in memory the child shares (`CLONE_VM`).
#[repr(C)]
struct ChildPlan {
    /// `execve` of this path when not null, else `execveat` of `fd`.
    path: *const libc::c_char,
    fd: RawFd,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    moves: *const (RawFd, RawFd),
    moves_len: usize,
    /// The signal mask the child restores before exec (the parent's, before it blocked everything),
    /// as the kernel's 64-bit set; null for the helper, which is exec'd with everything blocked.
    mask: *const u64,
    /// Set by the child when it cannot exec: the errno.
    failure: i32,
}

/// `struct sigaction` as the kernel's `rt_sigaction` takes it.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// The child's whole life: default signal handlers and the parent's signal mask, the descriptors
/// moved into place, exec. Raw system calls only: it runs on its own small stack in the parent's
/// memory (the parent waits, `CLONE_VFORK`) until the exec replaces it.
unsafe extern "C" fn child_main(plan: *mut ChildPlan) -> ! {
    // SAFETY: `plan` points to the parent's ChildPlan, alive until the parent resumes (after our exec
    // or exit); every pointer in it was prepared for this call. Only system calls follow.
    unsafe {
        let plan = &mut *plan;
        // Handlers of the parent must not run here (they would in its memory): default them all
        // before unblocking. The helper skips both; execve itself drops the handlers.
        if !plan.mask.is_null() {
            let default = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
            for signal in 1..=64 {
                if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                    libc::syscall(libc::SYS_rt_sigaction, signal, &default as *const KernelSigaction, std::ptr::null::<KernelSigaction>(), 8);
                }
            }
            libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, plan.mask, std::ptr::null::<u64>(), 8);
        }
        let moves = std::slice::from_raw_parts(plan.moves, plan.moves_len);
        for &(from, to) in moves {
            if libc::syscall(libc::SYS_dup2, from, to) < 0 {
                plan.failure = *libc::__errno_location();
                libc::syscall(libc::SYS_exit, 126);
            }
        }
        let empty = c"";
        if !plan.path.is_null() {
            libc::syscall(libc::SYS_execve, plan.path, plan.argv, plan.envp);
        } else {
            libc::syscall(libc::SYS_execveat, plan.fd, empty.as_ptr(), plan.argv, plan.envp, libc::AT_EMPTY_PATH);
        }
        plan.failure = *libc::__errno_location();
        libc::syscall(libc::SYS_exit, 127);
        std::hint::unreachable_unchecked()
    }
}

/// Stack of the child until its exec (it only makes system calls).
const CHILD_STACK_BYTES: usize = 64 << 10;
const PAGE: usize = 4096;

/// The child's stack, with a page below it that faults on access: an overflow stops the child instead
/// of writing into the caller's memory.
struct ChildStack {
    base: *mut libc::c_void,
}

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        // SAFETY: an anonymous private mapping of our own; nothing else refers to it.
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), PAGE + CHILD_STACK_BYTES, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK, -1, 0)
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base };
        // SAFETY: the first page of the mapping just made.
        if unsafe { libc::mprotect(base, PAGE, libc::PROT_NONE) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The lowest usable address (above the guard page).
    fn bottom(&self) -> u64 {
        self.base as u64 + PAGE as u64
    }

    /// The initial stack pointer: the top, 16-byte aligned.
    fn top(&self) -> u64 {
        self.bottom() + CHILD_STACK_BYTES as u64
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; the child that used it has exec'd or exited.
        unsafe { libc::munmap(self.base, PAGE + CHILD_STACK_BYTES) };
    }
}

/// Every signal, glibc's internal 32 and 33 included (which `pthread_sigmask` refuses to block).
const ALL_SIGNALS: u64 = u64::MAX;

/// Sets this thread's signal mask with the raw system call; returns the previous one.
fn set_signal_mask(mask: u64) -> u64 {
    let mut previous: u64 = 0;
    // SAFETY: rt_sigprocmask reads and writes 8-byte kernel signal sets on our stack.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &mask as *const u64, &mut previous as *mut u64, 8) };
    previous
}

/// Clones the child `posix_spawn`-style: sharing this process's memory (`CLONE_VM`) on a stack of its
/// own, with this thread waiting until it execs (`CLONE_VFORK`). No page tables are copied and no page
/// of the (large, multi-threaded) caller becomes copy-on-write, which a plain fork costs twice: at
/// the clone and at every later write.
///
/// Why running on that stack is safe: the child only makes raw system calls (a few hundred bytes of
/// stack), no signal handler can run on it (every signal is blocked with the raw `rt_sigprocmask`
/// before the clone, until the child has reset every handler to the default), and the guard page
/// below it turns any overflow into a fault of the child alone.
fn clone_and_exec(program: Program, argv: &[*const libc::c_char], envp: &[*const libc::c_char], moves: &[(RawFd, RawFd)], birthplace: Birthplace) -> io::Result<u32> {
    let (path, fd) = match program {
        Program::Path(path) => (path.as_ptr(), -1),
        Program::Descriptor(fd) => (std::ptr::null(), fd),
    };
    let stack = ChildStack::new()?;
    let previous = set_signal_mask(ALL_SIGNALS);
    let mask: *const u64 = if birthplace.helper { std::ptr::null() } else { &previous };
    let mut plan = ChildPlan { path, fd, argv: argv.as_ptr(), envp: envp.as_ptr(), moves: moves.as_ptr(), moves_len: moves.len(), mask, failure: 0 };
    let mut flags = birthplace.namespaces.bits() as u64 | libc::CLONE_VM as u64 | libc::CLONE_VFORK as u64;
    if birthplace.cgroup.is_some() {
        flags |= CLONE_INTO_CGROUP;
    }
    let args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.bottom(),
        stack_size: CHILD_STACK_BYTES as u64,
        cgroup: birthplace.cgroup.unwrap_or(0) as u64,
        ..CloneArgs::default()
    };
    let mut result = clone3(&args, &mut plan);
    // clone3 unknown to the kernel, or refused by a seccomp filter (Docker's profile answers ENOSYS,
    // and hooks may run under the container's filter): clone does the same without a cgroup.
    if result == -(libc::ENOSYS as i64) && birthplace.cgroup.is_none() {
        result = clone(flags | libc::SIGCHLD as u64, stack.top(), &mut plan);
    }
    set_signal_mask(previous);
    drop(stack);
    if result < 0 {
        return Err(io::Error::from_raw_os_error(-result as i32));
    }
    if plan.failure != 0 {
        // The child is gone (it exited); its exit reaches the caller's reaper like any other.
        return Err(io::Error::from_raw_os_error(plan.failure));
    }
    Ok(result as u32)
}

/// `clone3` with `args`; the child calls [`child_main`] with `plan`. Returns the child's pid or -errno.
fn clone3(args: &CloneArgs, plan: &mut ChildPlan) -> i64 {
    let result: i64;
    // SAFETY: clone3 with CLONE_VM and CLONE_VFORK and a stack: the child starts at the stack's top
    // with the registers of this thread, finds the plan and its entry point in r12 and r13 (preserved
    // by `syscall`), and calls `child_main`, which never returns; this thread resumes only once the
    // child has exec'd or exited, so `plan`, the stack and everything the plan points to outlive the
    // child's use of them.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => result,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") plan as *mut ChildPlan,
            in("r13") child_main as *const () as usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result
}

/// The same with the older `clone`, whose child starts with its stack pointer at `stack_top`.
fn clone(flags: u64, stack_top: u64, plan: &mut ChildPlan) -> i64 {
    let result: i64;
    // SAFETY: as for `clone3`: clone(flags, stack, parent_tid = 0, child_tid = 0, tls = 0).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone => result,
            in("rdi") flags,
            in("rsi") stack_top,
            in("rdx") 0u64,
            in("r10") 0u64,
            in("r8") 0u64,
            in("r12") plan as *mut ChildPlan,
            in("r13") child_main as *const () as usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Until the child execs, every signal is blocked with the raw system call, glibc's internal 32
    /// and 33 included: no handler of the caller can run on the child's stack in the caller's memory.
    /// (A helper is exec'd with that mask and lifts it itself, so it shows in its status.)
    #[test]
    fn the_child_blocks_every_signal_until_it_execs() {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let program = CString::new("/bin/grep").unwrap();
        let args: Vec<String> = ["grep", "SigBlk", "/proc/self/status"].iter().map(|a| a.to_string()).collect();
        let placed = [(&null, 0), (&write_end, 1), (&null, 2)];
        let birthplace = Birthplace { namespaces: CloneFlags::empty(), cgroup: None, helper: true };
        let pid = start(Program::Path(&program), &args, &[], &placed, birthplace).unwrap();
        drop(write_end);
        let mut text = String::new();
        std::fs::File::from(read_end).read_to_string(&mut text).unwrap();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).unwrap();
        let blocked = u64::from_str_radix(text.trim().trim_start_matches("SigBlk:").trim(), 16).unwrap();
        let glibc_internal = (1u64 << (32 - 1)) | (1u64 << (33 - 1));
        assert_eq!(blocked & glibc_internal, glibc_internal, "{text}");
    }

    /// An executable whose descriptor has the number another descriptor is placed at still runs: the
    /// moves cannot overwrite it. (With `--preserve-fds`, the helper binary's descriptor at 10 was
    /// replaced by the preserved one, and the helper failed with EACCES or ENOEXEC.)
    #[test]
    fn the_executable_survives_a_move_onto_its_number() {
        let executable = dup_above(std::fs::File::open("/bin/true").unwrap().as_raw_fd(), 40).unwrap();
        let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let number = executable.as_raw_fd();
        assert!(number < STAGING_FLOOR, "a free descriptor below the staging floor: {number}");
        let placed = [(&null, 0), (&null, 1), (&null, 2), (&null, number)];
        let args = vec!["true".to_owned()];
        let pid = start(Program::Descriptor(number), &args, &[], &placed, Birthplace::HERE).expect("execute /bin/true by descriptor");
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid as i32), 0));
    }
}
