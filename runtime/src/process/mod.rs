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
//! 2. [`spawn`] calls the raw `clone` system call; the child only `dup2`s the staged descriptors to 0–3
//!    and `execve`s the helper binary (the caller's own executable, which calls
//!    [`run_helper_if_requested`] first thing in `main`).
//! 3. The helper is a fresh single-threaded process. It reads its plan from the control socket, joins
//!    or creates the namespaces, forks once when the pid namespace changes (the child becomes the
//!    container's pid 1 and the helper reports its host pid and exits), builds the filesystem and
//!    `pivot_root`s, then reports ready and blocks on the exec fifo.
//! 4. Start opens the exec fifo; the init drops privileges and `execve`s the user's program. The
//!    control socket is close-on-exec, so its end-of-file tells the runtime the exec happened; a failed
//!    exec is reported on it instead.
//!
//! The helper is non-dumpable from its first instruction until the user's program replaces it, so a
//! container process can neither open `/proc/<pid>/exe` (the runtime binary) nor ptrace it.
//!
//! The runtime never reaps: the pids it returns belong to the caller's single reaper (the shim's
//! SIGCHLD loop, or [`crate::sys::wait_child`] in the CLI). Because the init may be a grandchild, the
//! caller must be a child subreaper to see its exit.

pub(crate) mod channel;
pub(crate) mod init;
pub(crate) mod spawn;

/// The argument that turns the runtime's host binary into the helper.
pub const HELPER_ARG: &str = "__myshim_init";

/// Runs the container init helper and never returns when this process was started as one; returns
/// immediately otherwise. Call it first thing in `main`, before any thread is started.
pub fn run_helper_if_requested() {
    if std::env::args_os().nth(1).is_some_and(|a| a == HELPER_ARG) {
        init::main();
    }
}
