//! One process of a task (the init or an exec) and its state machine:
//! created → running ⇄ paused → stopped, with exits held back while a start is in flight so that the
//! start event is always published before the exit event.

use std::sync::Mutex;

use tokio::sync::watch;

use super::stdio::ProcessIo;
use super::sync::LockAnyway;
use super::types::{Exit, Status, StdioPaths};

pub struct Process {
    /// The container id for the init process, the exec id otherwise.
    pub id: String,
    /// Set for exec processes.
    pub exec_id: Option<String>,
    pub stdio: StdioPaths,
    state: Mutex<ProcessFsm>,
    exited: watch::Sender<Option<Exit>>,
    pub io: tokio::sync::Mutex<Option<ProcessIo>>,
    /// An exec's process spec and the stdio its process gets, kept from Exec until Start.
    pub pending_start: Mutex<Option<(oci_spec::runtime::Process, myshim_runtime::Stdio)>>,
}

struct ProcessFsm {
    pid: u32,
    status: Status,
    /// A start is in flight: an exit arriving now is parked until the start event is queued.
    starting: bool,
    parked_exit: Option<Exit>,
}

/// What a caller must do after an exit was recorded.
pub enum ExitOutcome {
    /// The exit is recorded; publish it, then release waiters with [`Process::release_waiters`].
    Recorded(Exit),
    /// A start is in flight; it will publish the exit after its start event.
    Parked,
}

impl Process {
    pub fn new(id: String, exec_id: Option<String>, pid: u32, stdio: StdioPaths, io: Option<ProcessIo>) -> Process {
        Process {
            id,
            exec_id,
            stdio,
            state: Mutex::new(ProcessFsm { pid, status: Status::Created, starting: false, parked_exit: None }),
            exited: watch::channel(None).0,
            io: tokio::sync::Mutex::new(io),
            pending_start: Mutex::new(None),
        }
    }

    pub fn pid(&self) -> u32 {
        self.state.locked().pid
    }

    pub fn status(&self) -> Status {
        self.state.locked().status
    }

    /// Whether the process runs or is being started (its exit is still to come).
    pub fn is_alive(&self) -> bool {
        let state = self.state.locked();
        state.starting || matches!(state.status, Status::Running | Status::Paused | Status::Pausing)
    }

    pub fn exit(&self) -> Option<Exit> {
        *self.exited.borrow()
    }

    /// Marks a start as in flight; fails unless the process is created and not already starting.
    pub fn begin_start(&self) -> Result<(), Status> {
        let mut state = self.state.locked();
        if state.status != Status::Created || state.starting {
            return Err(state.status);
        }
        state.starting = true;
        Ok(())
    }

    /// Records the pid of a process that got one at start (an exec).
    pub fn set_pid(&self, pid: u32) {
        self.state.locked().pid = pid;
    }

    /// Ends a start. On success the process is running (or, if it already exited, the parked exit is
    /// returned for the caller to publish after the start event).
    pub fn finish_start(&self, started: bool) -> Option<Exit> {
        let mut state = self.state.locked();
        state.starting = false;
        if started && state.status == Status::Created {
            state.status = Status::Running;
        }
        let parked = state.parked_exit.take();
        if parked.is_some() {
            state.status = Status::Stopped;
        }
        parked
    }

    /// Moves between running, pausing and paused; `from` guards the transition.
    pub fn transition(&self, from: &[Status], to: Status) -> Result<(), Status> {
        let mut state = self.state.locked();
        if !from.contains(&state.status) {
            return Err(state.status);
        }
        state.status = to;
        Ok(())
    }

    /// Records an exit reported by the reaper.
    pub fn record_exit(&self, exit: Exit) -> ExitOutcome {
        let mut state = self.state.locked();
        if state.starting {
            state.parked_exit = Some(exit);
            return ExitOutcome::Parked;
        }
        state.status = Status::Stopped;
        ExitOutcome::Recorded(exit)
    }

    /// Wakes every `wait`er with the exit. Call after the exit event is queued.
    pub fn release_waiters(&self, exit: Exit) {
        self.exited.send_replace(Some(exit));
    }

    /// Waits until the process has exited (and its exit event is queued).
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exited.subscribe();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as the process; this is unreachable in practice.
                std::future::pending::<()>().await;
            }
        }
    }
}
