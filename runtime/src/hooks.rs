//! OCI lifecycle hooks. Each hook gets the container's state as JSON on stdin and may take at most
//! its `timeout` seconds.
//!
//! | hook | runs in | when |
//! |---|---|---|
//! | prestart, createRuntime | the caller (runtime namespace) | namespaces and mounts made, before `pivot_root` |
//! | createContainer | the init (container namespaces, host paths) | right after, still before `pivot_root` |
//! | startContainer | the init (inside the container) | at start, before the program is executed |
//! | poststart | the caller | after the program started (failures are logged) |
//! | poststop | the caller | after the container was destroyed (failures are logged) |
//!
//! Hooks the caller runs are started with the clone-and-exec [`crate::process::spawn`] (the caller may
//! be multi-threaded) and waited for through its [`ChildWaiter`]; the init is single-threaded and
//! uses `std::process::Command`.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;
use serde::Serialize;

use crate::error::{Error, Result};

/// How the caller learns that a child it spawned has exited (the shim routes this through its single
/// reaper; the CLI waits directly).
pub trait ChildWaiter: Send + Sync {
    /// The child's exit status, or None if it was still running after `timeout`.
    fn wait(&self, pid: u32, timeout: Option<Duration>) -> Option<u32>;
}

/// Waits with `waitpid` on a child of this process.
pub struct DirectWaiter;

impl ChildWaiter for DirectWaiter {
    fn wait(&self, pid: u32, timeout: Option<Duration>) -> Option<u32> {
        use nix::sys::wait::{waitpid, WaitPidFlag};
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            match waitpid(nix::unistd::Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(status) => {
                    if let Some((_, code)) = crate::sys::exit_status_of(status) {
                        return Some(code);
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return Some(0),
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
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

fn failure(phase: &str, index: usize, hook: &Hook, reason: String) -> Error {
    Error::Init(format!("hooks.{phase}[{index}] {}: {reason}", hook.path().display()))
}

fn timeout_of(hook: &Hook) -> Option<Duration> {
    hook.timeout().filter(|t| *t > 0).map(|t| Duration::from_secs(t as u64))
}

/// The hook's argv and environment (argv[0] defaults to the path).
fn argv_env(hook: &Hook) -> (Vec<String>, Vec<String>) {
    let args = hook.args().clone().filter(|a| !a.is_empty()).unwrap_or_else(|| vec![hook.path().display().to_string()]);
    (args, hook.env().clone().unwrap_or_default())
}

/// Runs `hooks` from the caller: each must exit 0 within its timeout.
pub fn run_in_caller(hooks: &[Hook], phase: &str, state: &[u8], waiter: &dyn ChildWaiter) -> Result<()> {
    for (index, hook) in hooks.iter().enumerate() {
        let (args, env) = argv_env(hook);
        let pipe = |what: &str| nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| failure(phase, index, hook, format!("{what} pipe: {e}")));
        let (stdin_r, stdin_w) = pipe("stdin")?;
        let (out_r, out_w) = pipe("output")?;
        let placed: [(&OwnedFd, i32); 3] = [(&stdin_r, 0), (&out_w, 1), (&out_w, 2)];
        let pid = crate::process::spawn::spawn(hook.path(), &args, &env, &placed).map_err(|e| failure(phase, index, hook, e.to_string().to_lowercase()))?;
        drop((stdin_r, out_w));
        // Output is collected on the side, so a chatty hook cannot block on a full pipe.
        let output = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::fs::File::from(out_r).take(64 * 1024).read_to_string(&mut text);
            text
        });
        let _ = std::fs::File::from(stdin_w).write_all(state);
        let status = waiter.wait(pid, timeout_of(hook));
        match status {
            None => {
                let _ = crate::sys::send_signal(pid, libc::SIGKILL as u32);
                waiter.wait(pid, Some(Duration::from_secs(5)));
                return Err(failure(phase, index, hook, format!("timed out after {}s", hook.timeout().unwrap_or(0))));
            }
            Some(0) => {}
            Some(code) => {
                let text = output.join().unwrap_or_default();
                return Err(failure(phase, index, hook, format!("exited with status {code}: {}", text.trim())));
            }
        }
    }
    Ok(())
}

/// Runs `hooks` from the (single-threaded) init.
pub(crate) fn run_in_init(hooks: &[Hook], phase: &str, state: &[u8]) -> Result<()> {
    use std::process::{Command, Stdio};
    for (index, hook) in hooks.iter().enumerate() {
        let (args, env) = argv_env(hook);
        let mut command = Command::new(hook.path());
        command.args(&args[1..]).env_clear().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for entry in &env {
            if let Some((key, value)) = entry.split_once('=') {
                command.env(key, value);
            }
        }
        let mut child = command.spawn().map_err(|e| failure(phase, index, hook, e.to_string().to_lowercase()))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(state);
        }
        let deadline = timeout_of(hook).map(|t| Instant::now() + t);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if deadline.is_some_and(|d| Instant::now() > d) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(failure(phase, index, hook, format!("timed out after {}s", hook.timeout().unwrap_or(0))));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(failure(phase, index, hook, e.to_string())),
            }
        };
        if !status.success() {
            let mut text = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut text);
            }
            return Err(failure(phase, index, hook, format!("exited with {status}: {}", text.trim())));
        }
    }
    Ok(())
}
