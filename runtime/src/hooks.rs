//! OCI lifecycle hooks. Each hook gets the container's state as JSON on stdin and may take at most
//! its `timeout` seconds.
//!
//! | hook | runs in | when | environment without its own `env` |
//! |---|---|---|---|
//! | prestart, createRuntime | the caller (runtime namespace) | namespaces and mounts made, before `pivot_root` | the runtime's |
//! | createContainer | the init (container namespaces, host paths) | right after, still before `pivot_root` | the runtime's |
//! | startContainer | the init (inside the container), as the process: its user, capabilities, no_new_privs and seccomp | at start, just before the program is executed | the process's (as runc) |
//! | poststart | the caller | after the program started (failures are logged) | the runtime's |
//! | poststop | the caller | after the container was destroyed (failures are logged) | the runtime's |
//!
//! Every hook is started with the clone-and-exec [`crate::process::spawn`] (the caller may be
//! multi-threaded) and waited for through a [`ChildWaiter`]. The state is fed to its stdin and its
//! output collected at the same time, never blocking on either, so a hook that reads nothing or
//! prints without end cannot hold the runtime past its timeout.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use oci_spec::runtime::Hook;
use serde::Serialize;

use crate::error::{Error, Result};

/// How the caller learns that a child it spawned has exited (the shim routes this through its single
/// reaper; the CLI and the init wait directly).
pub trait ChildWaiter: Send + Sync {
    /// Starts watching `pid`, a child just spawned.
    fn watch(&self, pid: u32) -> Box<dyn ExitWatch + '_>;
}

/// The exit of one child.
pub trait ExitWatch {
    /// The child's exit status once it has exited; `None` if it still runs after `timeout`.
    fn wait(&mut self, timeout: Duration) -> Option<u32>;
}

/// Waits with `waitpid` on a child of this process.
pub struct DirectWaiter;

struct DirectWatch(u32);

impl ChildWaiter for DirectWaiter {
    fn watch(&self, pid: u32) -> Box<dyn ExitWatch + '_> {
        Box::new(DirectWatch(pid))
    }
}

impl ExitWatch for DirectWatch {
    fn wait(&mut self, timeout: Duration) -> Option<u32> {
        use nix::sys::wait::{waitpid, WaitPidFlag};
        let deadline = Instant::now() + timeout;
        loop {
            match waitpid(nix::unistd::Pid::from_raw(self.0 as i32), Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(status) => {
                    if let Some((_, code)) = crate::sys::exit_status_of(status) {
                        return Some(code);
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return Some(0),
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The OCI state document hooks read on stdin.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookState<'a> {
    pub oci_version: &'static str,
    pub id: &'a str,
    pub status: &'a str,
    pub pid: u32,
    pub bundle: &'a Path,
    pub annotations: &'a std::collections::HashMap<String, String>,
}

impl HookState<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The environment of this process, for hooks without an `env` of their own.
pub fn own_environment() -> Vec<String> {
    std::env::vars_os().map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())).collect()
}

fn failure(phase: &str, index: usize, hook: &Hook, reason: String) -> Error {
    Error::Init(format!("hooks.{phase}[{index}] {}: {reason}", hook.path().display()))
}

/// Runs `hooks` one after the other: each must exit 0 within its timeout. `default_env` is the
/// environment of a hook that has no `env`.
pub fn run(hooks: &[Hook], phase: &str, state: &[u8], default_env: &[String], waiter: &dyn ChildWaiter) -> Result<()> {
    for (index, hook) in hooks.iter().enumerate() {
        run_one(hook, state, default_env, waiter).map_err(|reason| failure(phase, index, hook, reason))?;
    }
    Ok(())
}

/// Most output of a hook kept for the error message.
const OUTPUT_KEPT: usize = 64 * 1024;

fn run_one(hook: &Hook, state: &[u8], default_env: &[String], waiter: &dyn ChildWaiter) -> std::result::Result<(), String> {
    let args = hook.args().clone().filter(|a| !a.is_empty()).unwrap_or_else(|| vec![hook.path().display().to_string()]);
    let env = hook.env().clone().unwrap_or_else(|| default_env.to_vec());
    let pipe = |what: &str| nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("{what} pipe: {}", e.desc().to_lowercase()));
    let (stdin_r, stdin_w) = pipe("stdin")?;
    let (out_r, out_w) = pipe("output")?;
    let placed: [(&OwnedFd, i32); 3] = [(&stdin_r, 0), (&out_w, 1), (&out_w, 2)];
    let pid = crate::process::spawn::spawn(hook.path(), &args, &env, &placed).map_err(|e| crate::error::lower(&e))?;
    drop((stdin_r, out_w));
    let mut exit = waiter.watch(pid);
    let mut talk = Conversation::new(stdin_w, out_r, state).map_err(|e| crate::error::lower(&e))?;
    // A timeout too large to add to the clock is no timeout.
    let deadline = hook.timeout().filter(|t| *t > 0).and_then(|t| Instant::now().checked_add(Duration::from_secs(t as u64)));
    let status = loop {
        let patience = if talk.is_open() {
            talk.exchange(Duration::from_millis(20));
            Duration::ZERO
        } else {
            Duration::from_millis(20)
        };
        if let Some(status) = exit.wait(patience) {
            break status;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = crate::sys::send_signal(pid, libc::SIGKILL as u32);
            exit.wait(Duration::from_secs(5));
            return Err(format!("timed out after {}s", hook.timeout().unwrap_or(0)));
        }
    };
    // What the hook wrote just before it exited (a process it left behind may keep the pipe open:
    // only a moment for that).
    talk.exchange(Duration::from_millis(50));
    match status {
        0 => Ok(()),
        code => Err(format!("exited with status {code}: {}", talk.output().trim())),
    }
}

/// A hook's stdin and output, driven without blocking: the state is written as the pipe takes it,
/// output is read as it comes (the first [`OUTPUT_KEPT`] bytes are kept).
struct Conversation<'a> {
    stdin: Option<std::fs::File>,
    output: Option<std::fs::File>,
    pending: &'a [u8],
    collected: Vec<u8>,
}

impl<'a> Conversation<'a> {
    fn new(stdin: OwnedFd, output: OwnedFd, state: &'a [u8]) -> std::io::Result<Conversation<'a>> {
        for fd in [&stdin, &output] {
            fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        }
        Ok(Conversation { stdin: Some(stdin.into()), output: Some(output.into()), pending: state, collected: Vec::new() })
    }

    /// Whether the hook still holds its output open.
    fn is_open(&self) -> bool {
        self.output.is_some()
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.collected).into_owned()
    }

    /// Waits up to `timeout` for either pipe, then writes and reads what it can.
    fn exchange(&mut self, timeout: Duration) {
        if self.stdin.is_some() && self.pending.is_empty() {
            self.stdin = None; // all written: the hook sees end-of-file
        }
        let mut fds = Vec::with_capacity(2);
        if let Some(stdin) = &self.stdin {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLOUT));
        }
        if let Some(output) = &self.output {
            fds.push(PollFd::new(output.as_fd(), PollFlags::POLLIN));
        }
        if fds.is_empty() {
            return;
        }
        let timeout = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::ZERO);
        if poll(&mut fds, timeout).unwrap_or(0) == 0 {
            return;
        }
        drop(fds);
        if let Some(stdin) = &mut self.stdin {
            match stdin.write(self.pending) {
                Ok(n) => self.pending = &self.pending[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // The hook closed its stdin (or exited): it has read all it wants.
                Err(_) => self.stdin = None,
            }
        }
        if let Some(output) = &mut self.output {
            let mut buffer = [0u8; 16 * 1024];
            loop {
                match output.read(&mut buffer) {
                    Ok(0) => {
                        self.output = None;
                        break;
                    }
                    Ok(n) => {
                        let room = OUTPUT_KEPT.saturating_sub(self.collected.len());
                        self.collected.extend_from_slice(&buffer[..n.min(room)]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.output = None;
                        break;
                    }
                }
            }
        }
    }
}
