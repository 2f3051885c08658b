//! The task core: every container and process this shim runs, their state machines, exits and
//! events. It is transport-neutral: the ttrpc and gRPC adapters call it with its own types.
//!
//! Concurrency: the container table and the pid table are behind short-held locks and never held
//! across runtime work, so Connect and State answer at once even while a Create or Delete is busy.
//! Runtime work (clone, mounts, cgroups) runs on tokio's blocking pool.

pub mod error;
pub mod events;
pub mod process;
pub mod stdio;
pub mod types;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};

use error::{TaskError, TaskResult};
use process::{ExitOutcome, Process};
use types::{ConnectInfo, CreateRequest, Exit, ProcessInfo, ProcessState, Status, TaskEvent};

/// Where the runtime keeps a container's state, inside its bundle so that `delete` finds it from the
/// bundle path alone and two containerd instances never share it.
pub const STATE_DIR_NAME: &str = "myshim-state";

/// How long Delete waits for a process's output to be copied out.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an exit of a pid nobody has claimed yet is kept for a racing registration.
const UNCLAIMED_EXIT_TTL: Duration = Duration::from_secs(10);

pub fn state_dir(bundle: &Path) -> PathBuf {
    bundle.join(STATE_DIR_NAME)
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub init: Arc<Process>,
    runtime: Arc<Mutex<Option<myshim_runtime::Container>>>,
}

impl Container {
    fn runtime(&self) -> Arc<Mutex<Option<myshim_runtime::Container>>> {
        self.runtime.clone()
    }
}

/// Which process a pid belongs to.
#[derive(Debug, Clone)]
struct Owner {
    container_id: String,
}

#[derive(Default)]
struct PidTable {
    owners: HashMap<u32, Owner>,
    unclaimed: VecDeque<(u32, Exit, Instant)>,
}

impl PidTable {
    /// Registers `pid`; returns its exit if the reaper saw it before the registration.
    fn register(&mut self, pid: u32, owner: Owner) -> Option<Exit> {
        if let Some(i) = self.unclaimed.iter().position(|(p, _, _)| *p == pid) {
            return self.unclaimed.remove(i).map(|(_, exit, _)| exit);
        }
        self.owners.insert(pid, owner);
        None
    }

    fn claim(&mut self, pid: u32, exit: Exit) -> Option<Owner> {
        let owner = self.owners.remove(&pid);
        if owner.is_none() {
            let now = Instant::now();
            self.unclaimed.retain(|(_, _, at)| now.duration_since(*at) < UNCLAIMED_EXIT_TTL);
            if self.unclaimed.len() < 1024 {
                self.unclaimed.push_back((pid, exit, now));
            }
        }
        owner
    }
}

pub struct TaskCore {
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Ids whose Create is in progress (reserved, not yet in `containers`).
    creating: Mutex<HashSet<String>>,
    pids: Mutex<PidTable>,
    events: events::EventQueue,
    runtime: myshim_runtime::Runtime,
    shim_pid: u32,
    /// Set when containerd asked to shut down while containers remained; the shim exits when the
    /// last one is deleted.
    shutdown_requested: Mutex<bool>,
    exit_now: watch::Sender<bool>,
}

impl TaskCore {
    pub fn new(events: events::EventQueue, runtime: myshim_runtime::Runtime) -> Arc<TaskCore> {
        Arc::new(TaskCore {
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            pids: Mutex::new(PidTable::default()),
            events,
            runtime,
            shim_pid: std::process::id(),
            shutdown_requested: Mutex::new(false),
            exit_now: watch::channel(false).0,
        })
    }

    /// Becomes true when the shim should exit (no containers left and shutdown was asked for).
    pub fn exit_signal(&self) -> watch::Receiver<bool> {
        self.exit_now.subscribe()
    }

    pub fn events(&self) -> &events::EventQueue {
        &self.events
    }

    fn emit(&self, event: TaskEvent) {
        self.events.push(event);
    }

    fn container(&self, id: &str) -> TaskResult<Arc<Container>> {
        self.containers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| TaskError::not_found(format!("container {id} not found")))
    }

    fn process(&self, id: &str, exec_id: &str) -> TaskResult<(Arc<Container>, Arc<Process>)> {
        let container = self.container(id)?;
        if !exec_id.is_empty() {
            return Err(TaskError::not_found(format!("container {id}: exec {exec_id} not found")));
        }
        let init = container.init.clone();
        Ok((container, init))
    }

    pub async fn create(&self, request: CreateRequest) -> TaskResult<u32> {
        let id = request.id.clone();
        myshim_runtime::state::validate_id(&id).map_err(TaskError::from)?;
        if !request.checkpoint.is_empty() {
            return Err(TaskError::unimplemented(format!("create {id}: restoring from a checkpoint is not supported")));
        }
        {
            let containers = self.containers.lock().unwrap();
            let mut creating = self.creating.lock().unwrap();
            if containers.contains_key(&id) || !creating.insert(id.clone()) {
                return Err(TaskError::already_exists(format!("container {id} already exists")));
            }
        }
        let result = self.create_reserved(&request).await;
        self.creating.lock().unwrap().remove(&id);
        result.map_err(|e| e.context(format!("create container {id}")))
    }

    async fn create_reserved(&self, request: &CreateRequest) -> TaskResult<u32> {
        let (stdio, io) = stdio::setup(&request.stdio).await?;
        let runtime = self.runtime.clone();
        let (id, bundle, mounts) = (request.id.clone(), request.bundle.clone(), request.rootfs.clone());
        let created = tokio::task::spawn_blocking(move || {
            let options = myshim_runtime::CreateOptions {
                id: &id,
                bundle: &bundle,
                state_dir: state_dir(&bundle),
                rootfs_mounts: &mounts,
                stdio,
            };
            myshim_runtime::Container::create(&runtime, options)
        })
        .await
        .map_err(|e| TaskError::internal(format!("create task panicked: {e}")))??;

        let pid = created.pid();
        let container = Arc::new(Container {
            id: request.id.clone(),
            bundle: request.bundle.clone(),
            init: Arc::new(Process::new(request.id.clone(), pid, request.stdio.clone(), Some(io))),
            runtime: Arc::new(Mutex::new(Some(created))),
        });
        self.containers.lock().unwrap().insert(request.id.clone(), container.clone());
        self.emit(TaskEvent::Create {
            container_id: request.id.clone(),
            bundle: request.bundle.clone(),
            rootfs: request.rootfs.clone(),
            stdio: request.stdio.clone(),
            checkpoint: request.checkpoint.clone(),
            pid,
        });
        let early_exit = self.pids.lock().unwrap().register(pid, Owner { container_id: request.id.clone() });
        if let Some(exit) = early_exit {
            self.exited(&container, &container.init, exit);
        }
        info!(id = %request.id, pid, "created");
        Ok(pid)
    }

    pub async fn start(&self, id: &str, exec_id: &str) -> TaskResult<u32> {
        let (container, process) = self.process(id, exec_id)?;
        if let Err(status) = process.begin_start() {
            return Err(TaskError::precondition(format!("container {id} cannot be started: it is {status:?}").to_lowercase()));
        }
        let runtime = container.runtime();
        let started = tokio::task::spawn_blocking(move || match runtime.lock().unwrap().as_mut() {
            Some(c) => c.start(),
            None => Err(myshim_runtime::Error::NotFound("container was deleted".into())),
        })
        .await
        .map_err(|e| TaskError::internal(format!("start task panicked: {e}")))?;
        let ok = started.is_ok();
        let parked = process.finish_start(ok);
        let pid = process.pid();
        if ok {
            self.emit(TaskEvent::Start { container_id: id.to_owned(), pid });
            info!(id, pid, "started");
        }
        if let Some(exit) = parked {
            self.publish_exit(&container, &process, exit);
        }
        started.map_err(|e| TaskError::from(e).context(format!("start container {id}")))?;
        Ok(pid)
    }

    /// Called by the reaper for every exited child.
    pub fn child_exited(&self, pid: u32, status: u32) {
        let exit = Exit { pid, status, at: SystemTime::now() };
        let Some(owner) = self.pids.lock().unwrap().claim(pid, exit) else { return };
        let Ok(container) = self.container(&owner.container_id) else { return };
        let init = container.init.clone();
        self.exited(&container, &init, exit);
    }

    fn exited(&self, container: &Arc<Container>, process: &Arc<Process>, exit: Exit) {
        info!(id = %container.id, pid = exit.pid, status = exit.status, "exited");
        match process.record_exit(exit) {
            ExitOutcome::Parked => {}
            ExitOutcome::Recorded(exit) => self.publish_exit(container, process, exit),
        }
    }

    /// Queues the exit event, then releases waiters: a client reacting to Wait with Delete can never
    /// get its delete event ahead of the exit event.
    fn publish_exit(&self, container: &Arc<Container>, process: &Arc<Process>, exit: Exit) {
        self.emit(TaskEvent::Exit { container_id: container.id.clone(), id: process.id.clone(), exit });
        process.release_waiters(exit);
        if Arc::ptr_eq(process, &container.init) {
            self.kill_leftovers(container);
        }
    }

    /// Without a pid namespace of its own, a container's other processes outlive its init: kill them.
    fn kill_leftovers(&self, container: &Arc<Container>) {
        let runtime = container.runtime();
        tokio::task::spawn_blocking(move || {
            if let Some(c) = runtime.lock().unwrap().as_ref() {
                if !c.state().private_pid_namespace {
                    let _ = c.signal(libc::SIGKILL as u32, true);
                }
            }
        });
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> TaskResult<Exit> {
        let (container, process) = self.process(id, exec_id)?;
        match process.status() {
            Status::Stopped => {}
            Status::Created => {
                // Never started: kill the waiting init and collect its exit.
                let runtime = container.runtime();
                let _ = tokio::task::spawn_blocking(move || runtime.lock().unwrap().as_ref().map(|c| c.signal(libc::SIGKILL as u32, false))).await;
                if tokio::time::timeout(Duration::from_secs(5), process.wait()).await.is_err() {
                    return Err(TaskError::internal(format!("delete container {id}: the created init did not exit after SIGKILL")));
                }
            }
            other => {
                return Err(TaskError::precondition(format!("container {id} must be stopped before deletion: it is {other:?}").to_lowercase()))
            }
        }
        let exit = process.wait().await;
        if let Some(io) = process.io.lock().await.as_mut() {
            io.wait_for_output(OUTPUT_DRAIN_TIMEOUT).await;
        }
        let runtime = container.runtime();
        let destroyed = tokio::task::spawn_blocking(move || match runtime.lock().unwrap().take() {
            Some(c) => c.destroy(),
            None => Ok(()),
        })
        .await
        .map_err(|e| TaskError::internal(format!("delete task panicked: {e}")))?;
        process.io.lock().await.take();
        if let Err(e) = destroyed {
            warn!(id, error = %e, "delete left something behind");
            return Err(TaskError::from(e).context(format!("delete container {id}")));
        }
        let removed = {
            let mut containers = self.containers.lock().unwrap();
            let removed = containers.remove(id).is_some();
            (removed, containers.is_empty())
        };
        if removed.0 {
            self.emit(TaskEvent::Delete { container_id: id.to_owned(), exit });
            info!(id, "deleted");
        }
        if removed.1 && *self.shutdown_requested.lock().unwrap() {
            self.exit_now.send_replace(true);
        }
        Ok(exit)
    }

    pub fn state(&self, id: &str, exec_id: &str) -> TaskResult<ProcessState> {
        let (container, process) = self.process(id, exec_id)?;
        Ok(ProcessState {
            id: process.id.clone(),
            bundle: container.bundle.clone(),
            pid: process.pid(),
            status: process.status(),
            stdio: process.stdio.clone(),
            exit: process.exit(),
        })
    }

    pub async fn wait(&self, id: &str, exec_id: &str) -> TaskResult<Exit> {
        let (_, process) = self.process(id, exec_id)?;
        Ok(process.wait().await)
    }

    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> TaskResult<()> {
        let (container, process) = self.process(id, exec_id)?;
        if process.status() == Status::Stopped && !all {
            return Err(TaskError::not_found(format!("container {id}: process already finished")));
        }
        let runtime = container.runtime();
        tokio::task::spawn_blocking(move || match runtime.lock().unwrap().as_ref() {
            Some(c) => c.signal(signal, all),
            None => Ok(()),
        })
        .await
        .map_err(|e| TaskError::internal(format!("kill task panicked: {e}")))?
        .map_err(|e| TaskError::from(e).context(format!("kill container {id}")))
    }

    /// Lets the process's stdin reach end-of-file (once the client closed its end too).
    pub async fn close_io(&self, id: &str, exec_id: &str) -> TaskResult<()> {
        let (_, process) = self.process(id, exec_id)?;
        if let Some(io) = process.io.lock().await.as_ref() {
            io.close_stdin();
        }
        Ok(())
    }

    pub fn pids(&self, id: &str) -> TaskResult<Vec<ProcessInfo>> {
        let container = self.container(id)?;
        let runtime = container.runtime.lock().unwrap();
        let pids = runtime.as_ref().map(|c| c.processes()).unwrap_or_default();
        Ok(pids.into_iter().map(|pid| ProcessInfo { pid, exec_id: None }).collect())
    }

    pub fn connect(&self, id: &str) -> ConnectInfo {
        let task_pid = self.containers.lock().unwrap().get(id).map(|c| c.init.pid()).unwrap_or(0);
        ConnectInfo { shim_pid: self.shim_pid, task_pid }
    }

    /// Exits the shim now when it runs no container; otherwise remembers the request and exits when
    /// the last container is deleted.
    pub fn shutdown(&self) {
        let empty = self.containers.lock().unwrap().is_empty() && self.creating.lock().unwrap().is_empty();
        if empty {
            self.exit_now.send_replace(true);
        } else {
            *self.shutdown_requested.lock().unwrap() = true;
        }
    }

    /// Whether any container remains (for signals that ask the shim to stop).
    pub fn is_empty(&self) -> bool {
        self.containers.lock().unwrap().is_empty()
    }
}
