//! The task core: every container and process this shim runs, their state machines, exits and
//! events. It is transport-neutral: the ttrpc and gRPC adapters call it with its own types.
//!
//! Concurrency: the container table and the pid table are behind short-held locks and never held
//! across runtime work, so Connect and State answer at once even while a Create or Delete is busy.
//! Runtime work (clone, mounts, cgroups) runs on tokio's blocking pool.
//!
//! Ordering: create < start < exit < delete for each process; exec-added < exec-started < the exec's
//! exit; every exec's exit before its container's init exit (the init's exit is held while execs
//! live); an exit is queued before `Wait` callers are released.

pub mod error;
pub mod events;
pub mod process;
pub mod stdio;
mod sync;
pub mod types;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use myshim_runtime::cgroups::stats::Stats;
use tokio::io::AsyncReadExt as _;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use error::{TaskError, TaskResult};
use sync::LockAnyway;
use process::{ExitOutcome, Process};
use stdio::{IoContext, ProcessIo};
use types::{CheckpointRequest, ConnectInfo, CreateRequest, ExecRequest, Exit, ProcessInfo, ProcessState, RootfsMount, Status, TaskEvent};

/// Where the runtime keeps a container's state, inside its bundle so that `delete` finds it from the
/// bundle path alone and two containerd instances never share it.
pub const STATE_DIR_NAME: &str = "myshim-state";

/// CRIU's work directory (its logs) in a bundle, when the client names none.
const CRIU_WORK_DIR: &str = "criu-work";

/// How long Delete waits for a process's output to be copied out.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an exit of a pid nobody has claimed yet is kept for a racing registration.
const UNCLAIMED_EXIT_TTL: Duration = Duration::from_secs(10);

pub fn state_dir(bundle: &Path) -> PathBuf {
    bundle.join(STATE_DIR_NAME)
}

type RuntimeHandle = Arc<Mutex<Option<myshim_runtime::Container>>>;

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    runtime: RuntimeHandle,
    /// The init's exit, held back until every exec's exit is published.
    held_init_exit: Mutex<Option<Exit>>,
    /// The task that turns the memory controller's OOM notifications into events, and the watch it
    /// reads (Delete looks at it a last time: a notification still unread must not be lost).
    oom_watch: Mutex<Option<(JoinHandle<()>, Arc<Mutex<myshim_runtime::cgroups::OomWatch>>)>>,
    /// For a container created from a checkpoint: what Start restores it from.
    restore: Mutex<Option<PendingRestore>>,
}

/// A container created from a checkpoint is restored at Start, as runc's shim does it: Create checks
/// what it can (the spec, the image, CRIU) and keeps the rest for then.
struct PendingRestore {
    stdio: myshim_runtime::Stdio,
    rootfs: Vec<RootfsMount>,
    options: myshim_runtime::checkpoint::CriuOptions,
}

/// What the shim's configuration tells the core.
#[derive(Debug, Clone, Default)]
pub struct CoreSettings {
    /// Who makes the containers' cgroups.
    pub cgroup_driver: myshim_runtime::cgroups::Driver,
    /// The CRIU binary for checkpoint and restore (`criu` on PATH when unset).
    pub criu_path: Option<PathBuf>,
}

impl Container {
    fn exec(&self, exec_id: &str) -> TaskResult<Arc<Process>> {
        self.execs
            .lock()
            .unwrap()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| TaskError::not_found(format!("container {}: exec {exec_id} not found", self.id)))
    }

    fn has_live_execs(&self) -> bool {
        self.execs.locked().values().any(|e| e.is_alive())
    }
}

/// Who waits for a pid's exit.
enum Owner {
    Process { container_id: String, exec_id: Option<String> },
    /// A helper child of the shim (a logging driver).
    Waiter(oneshot::Sender<Exit>),
}

#[derive(Default)]
struct PidTable {
    owners: HashMap<u32, Owner>,
    /// Exits nobody had registered for yet (mostly the runtime's helpers; sometimes a process whose
    /// registration is still on its way), newest last.
    unclaimed: VecDeque<(u32, Exit, Instant)>,
}

/// Most unclaimed exits kept; beyond it the oldest go (a registration races an exit by milliseconds).
const UNCLAIMED_EXITS_KEPT: usize = 4096;

impl PidTable {
    /// Registers `pid`, the process started at `start_time` (clock ticks since boot, when known). If
    /// the reaper saw its exit before the registration, the exit is delivered to a waiter at once, or
    /// returned for a process.
    fn register(&mut self, pid: u32, start_time: Option<u64>, owner: Owner) -> Option<Exit> {
        // While our process is still there (running, or a zombie not yet reaped) its pid cannot have
        // been reused, so any exit recorded under that pid is an older process's. Once it is gone,
        // the newest exit recorded under the pid is its own — also when a new process has the pid
        // by now, which its start time tells apart from ours.
        let ours_still_there = match (myshim_runtime::sys::process_start_time(pid), start_time) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(now), Some(ours)) => now == ours,
        };
        let mut early = None;
        self.unclaimed.retain(|(p, exit, _)| {
            if *p != pid {
                return true;
            }
            if !ours_still_there {
                early = Some(*exit);
            }
            false
        });
        match (early, owner) {
            (Some(exit), Owner::Waiter(tx)) => {
                let _ = tx.send(exit);
                None
            }
            (Some(exit), Owner::Process { .. }) => Some(exit),
            (None, owner) => {
                self.owners.insert(pid, owner);
                None
            }
        }
    }

    /// Registers a helper child (a hook, a logging driver); the receiver gets its exit.
    fn watch(&mut self, pid: u32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        self.register(pid, None, Owner::Waiter(tx));
        rx
    }

    fn claim(&mut self, pid: u32, exit: Exit) -> Option<Owner> {
        let owner = self.owners.remove(&pid);
        if owner.is_none() {
            let now = Instant::now();
            while self.unclaimed.front().is_some_and(|(_, _, at)| now.duration_since(*at) >= UNCLAIMED_EXIT_TTL) {
                self.unclaimed.pop_front();
            }
            if self.unclaimed.len() >= UNCLAIMED_EXITS_KEPT {
                self.unclaimed.pop_front();
            }
            self.unclaimed.push_back((pid, exit, now));
        }
        owner
    }
}

/// Lets the runtime wait for a child (a hook) that the shim's one reaper collects.
struct ReaperWaiter {
    pids: Arc<Mutex<PidTable>>,
    tokio: tokio::runtime::Handle,
}

struct ReaperWatch<'a> {
    exit: oneshot::Receiver<Exit>,
    tokio: &'a tokio::runtime::Handle,
}

impl myshim_runtime::hooks::ChildWaiter for ReaperWaiter {
    fn watch(&self, pid: u32) -> Box<dyn myshim_runtime::hooks::ExitWatch + '_> {
        Box::new(ReaperWatch { exit: self.pids.locked().watch(pid), tokio: &self.tokio })
    }
}

impl myshim_runtime::hooks::ExitWatch for ReaperWatch<'_> {
    fn wait(&mut self, timeout: Duration) -> Option<u32> {
        // Runtime work runs on the blocking pool, where blocking on the reaper's answer is allowed.
        let exit = &mut self.exit;
        self.tokio.block_on(async { tokio::time::timeout(timeout, exit).await.ok()?.ok() }).map(|exit| exit.status)
    }
}

pub struct TaskCore {
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Ids whose Create is in progress (reserved, not yet in `containers`).
    creating: Mutex<HashSet<String>>,
    pids: Arc<Mutex<PidTable>>,
    events: events::EventQueue,
    runtime: myshim_runtime::Runtime,
    namespace: String,
    settings: CoreSettings,
    shim_pid: u32,
    /// Set when containerd asked to shut down while containers remained; the shim exits when the
    /// last one is deleted.
    shutdown_requested: Mutex<bool>,
    /// Set (under the `containers` and `creating` locks) once the daemon decided to exit: no Create is
    /// taken any more.
    closing: std::sync::atomic::AtomicBool,
    exit_now: watch::Sender<bool>,
}

impl TaskCore {
    /// A core whose runtime spawns helpers from the shim's own binary and waits for the children it
    /// starts (hooks) through this core's reaper. Call inside the tokio runtime.
    pub fn new(events: events::EventQueue, namespace: String, settings: CoreSettings) -> Arc<TaskCore> {
        let pids = Arc::new(Mutex::new(PidTable::default()));
        let waiter = Arc::new(ReaperWaiter { pids: pids.clone(), tokio: tokio::runtime::Handle::current() });
        Arc::new(TaskCore {
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            pids,
            events,
            runtime: myshim_runtime::Runtime::with_waiter(waiter),
            namespace,
            settings,
            shim_pid: std::process::id(),
            shutdown_requested: Mutex::new(false),
            closing: Default::default(),
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

    /// The container and the process (`exec_id` empty = the init).
    fn process(&self, id: &str, exec_id: &str) -> TaskResult<(Arc<Container>, Arc<Process>)> {
        let container = self.container(id)?;
        let process = if exec_id.is_empty() { container.init.clone() } else { container.exec(exec_id)? };
        Ok((container, process))
    }

    /// Registers a child of the shim with the reaper; the receiver gets its exit.
    pub fn watch_pid(&self, pid: u32) -> oneshot::Receiver<Exit> {
        self.pids.locked().watch(pid)
    }

    /// Runs `work` on the container's runtime handle on the blocking pool.
    async fn with_runtime<T: Send + 'static>(
        &self,
        container: &Container,
        what: &str,
        work: impl FnOnce(&mut myshim_runtime::Container) -> myshim_runtime::Result<T> + Send + 'static,
    ) -> TaskResult<T> {
        let runtime = container.runtime.clone();
        let id = container.id.clone();
        tokio::task::spawn_blocking(move || match runtime.locked().as_mut() {
            Some(c) => work(c).map_err(TaskError::from),
            None => Err(TaskError::not_found(format!("container {id} was deleted"))),
        })
        .await
        .map_err(|e| TaskError::internal(format!("{what} container {}: task panicked: {e}", container.id)))?
        .map_err(|e| e.context(format!("{what} container {}", container.id)))
    }

    fn io_context<'a>(&'a self, container_id: &'a str, watch: &'a (dyn Fn(u32) -> oneshot::Receiver<Exit> + Sync)) -> IoContext<'a> {
        IoContext { container_id, namespace: &self.namespace, watch_pid: watch }
    }

    pub async fn create(&self, request: CreateRequest) -> TaskResult<u32> {
        let id = request.id.clone();
        myshim_runtime::state::validate_id(&id).map_err(TaskError::from)?;
        {
            let containers = self.containers.locked();
            let mut creating = self.creating.locked();
            if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(TaskError::precondition(format!("create container {id}: this shim daemon is exiting (start the task again)")));
            }
            if containers.contains_key(&id) || !creating.insert(id.clone()) {
                return Err(TaskError::already_exists(format!("container {id} already exists")));
            }
        }
        let result = if request.checkpoint.is_empty() { self.create_reserved(&request).await } else { self.create_from_checkpoint(&request).await };
        self.creating.locked().remove(&id);
        result.map_err(|e| e.context(format!("create container {id}")))
    }

    async fn create_reserved(&self, request: &CreateRequest) -> TaskResult<u32> {
        let watch = |pid| self.watch_pid(pid);
        let (stdio, mut io) = stdio::setup(&request.stdio, &self.io_context(&request.id, &watch)).await?;
        let (runtime, cgroup_driver) = (self.runtime.clone(), self.settings.cgroup_driver);
        let (id, bundle, mounts) = (request.id.clone(), request.bundle.clone(), request.rootfs.clone());
        let created = tokio::task::spawn_blocking(move || {
            let options = myshim_runtime::CreateOptions { id: &id, bundle: &bundle, state_dir: state_dir(&bundle), rootfs_mounts: &mounts, stdio, cgroup_driver, preserved_fds: Vec::new() };
            myshim_runtime::Container::create(&runtime, options).map(|mut c| {
                let console = c.take_console();
                (c, console)
            })
        })
        .await
        .map_err(|e| TaskError::internal(format!("create container {}: task panicked: {e}", request.id)))
        .and_then(|created| created.map_err(TaskError::from));
        let (created, console) = match created {
            Ok(created) => created,
            Err(e) => {
                io.close().await;
                return Err(e);
            }
        };
        if let Some(master) = console {
            io.attach_terminal(master)?;
        }

        let (pid, start_time) = (created.pid(), created.state().pid_start_time);
        let container = Arc::new(Container {
            id: request.id.clone(),
            bundle: request.bundle.clone(),
            init: Arc::new(Process::new(request.id.clone(), None, pid, request.stdio.clone(), Some(io))),
            execs: Mutex::new(HashMap::new()),
            runtime: Arc::new(Mutex::new(Some(created))),
            held_init_exit: Mutex::new(None),
            oom_watch: Mutex::new(None),
            restore: Mutex::new(None),
        });
        self.containers.locked().insert(request.id.clone(), container.clone());
        self.emit(TaskEvent::Create {
            container_id: request.id.clone(),
            bundle: request.bundle.clone(),
            rootfs: request.rootfs.clone(),
            stdio: request.stdio.clone(),
            checkpoint: request.checkpoint.clone(),
            pid,
        });
        let early_exit = self.pids.locked().register(pid, Some(start_time).filter(|t| *t != 0), Owner::Process { container_id: request.id.clone(), exec_id: None });
        if let Some(exit) = early_exit {
            self.init_exited(&container, exit);
        }
        info!(id = %request.id, pid, "created");
        // A creation's parsing and planning is freed by now: give it back (a pod's shim lives long).
        myshim_runtime::sys::release_free_memory();
        Ok(pid)
    }

    /// Create with a checkpoint: checks the spec, the image and CRIU, opens the stdio, and keeps the
    /// rest for Start, which restores (the container has no process, and pid 0, until then).
    async fn create_from_checkpoint(&self, request: &CreateRequest) -> TaskResult<u32> {
        let id = request.id.clone();
        let options = myshim_runtime::checkpoint::CriuOptions {
            image_path: PathBuf::from(&request.checkpoint),
            work_path: Some(request.criu_work_path.clone().unwrap_or_else(|| request.bundle.join(CRIU_WORK_DIR))),
            ..Default::default()
        };
        let (runtime, bundle, image, criu_path) = (self.runtime.clone(), request.bundle.clone(), options.image_path.clone(), self.settings.criu_path.clone());
        let terminal = request.stdio.terminal;
        tokio::task::spawn_blocking(move || -> myshim_runtime::Result<()> {
            let spec = myshim_runtime::spec::load(&bundle)?;
            myshim_runtime::validate::validate(&spec)?;
            if !image.join("inventory.img").is_file() {
                return Err(myshim_runtime::Error::Unsupported(format!("checkpoint {}: not a checkpoint image (no inventory.img)", image.display())));
            }
            // The restored init gets its terminal back only where the task has one to show it on (runc
            // refuses the same: it has nowhere to send the terminal).
            match myshim_runtime::checkpoint::image_has_terminal(&image) {
                Some(true) if !terminal => return Err(myshim_runtime::Error::Unsupported(format!("checkpoint {}: the checkpointed process has a terminal, and the task is created without one", image.display()))),
                Some(false) if terminal => return Err(myshim_runtime::Error::Unsupported(format!("checkpoint {}: the task asks for a terminal, and the checkpointed process had none", image.display()))),
                _ => {}
            }
            myshim_runtime::checkpoint::Criu::locate(criu_path.as_deref())?.version(runtime.waiter.as_ref()).map(drop)
        })
        .await
        .map_err(|e| TaskError::internal(format!("create container {id}: task panicked: {e}")))?
        .map_err(TaskError::from)?;

        let watch = |pid| self.watch_pid(pid);
        let (stdio, io) = stdio::setup(&request.stdio, &self.io_context(&id, &watch)).await?;
        let container = Arc::new(Container {
            id: id.clone(),
            bundle: request.bundle.clone(),
            init: Arc::new(Process::new(id.clone(), None, 0, request.stdio.clone(), Some(io))),
            execs: Mutex::new(HashMap::new()),
            runtime: Arc::new(Mutex::new(None)),
            held_init_exit: Mutex::new(None),
            oom_watch: Mutex::new(None),
            restore: Mutex::new(Some(PendingRestore { stdio, rootfs: request.rootfs.clone(), options })),
        });
        self.containers.locked().insert(id.clone(), container);
        self.emit(TaskEvent::Create {
            container_id: id.clone(),
            bundle: request.bundle.clone(),
            rootfs: request.rootfs.clone(),
            stdio: request.stdio.clone(),
            checkpoint: request.checkpoint.clone(),
            pid: 0,
        });
        info!(id = %id, checkpoint = %request.checkpoint, "created from a checkpoint");
        Ok(0)
    }

    pub async fn start(&self, id: &str, exec_id: &str) -> TaskResult<u32> {
        let (container, process) = self.process(id, exec_id)?;
        if process.exec_id.is_some() && !container.init.is_alive() {
            return Err(TaskError::precondition(format!("container {id} is not running: cannot start exec {exec_id}")));
        }
        if let Err(status) = process.begin_start() {
            return Err(TaskError::precondition(format!("{} cannot be started: it is {status:?}", describe(id, exec_id)).to_lowercase()));
        }
        // The init's OOM watch starts before it runs: one set up after it would miss a process that
        // runs out of memory at once (its baseline count would include the kill). A container being
        // restored from a checkpoint has no cgroup until the restore made it.
        let restoring = process.exec_id.is_none() && container.restore.locked().is_some();
        if process.exec_id.is_none() && !restoring {
            self.watch_oom(&container).await;
        }
        let result = if process.exec_id.is_none() { self.start_init(&container).await } else { self.start_exec(&container, &process).await };
        let parked = process.finish_start(result.is_ok());
        let pid = process.pid();
        if result.is_ok() {
            let event = match &process.exec_id {
                None => TaskEvent::Start { container_id: id.to_owned(), pid },
                Some(exec_id) => TaskEvent::ExecStarted { container_id: id.to_owned(), exec_id: exec_id.clone(), pid },
            };
            self.emit(event);
            info!(id, exec_id, pid, "started");
        }
        if let Some(exit) = parked {
            self.publish_exit(&container, &process, exit);
            self.release_held_init_exit(&container);
        }
        result?;
        if restoring {
            self.watch_oom(&container).await;
        }
        Ok(pid)
    }

    async fn start_init(&self, container: &Container) -> TaskResult<()> {
        let pending = container.restore.locked().take();
        if let Some(pending) = pending {
            return self.restore_init(container, pending).await;
        }
        let runtime = self.runtime.clone();
        self.with_runtime(container, "start", move |c| c.start(&runtime)).await
    }

    /// Start of a container created from a checkpoint: CRIU restores its processes; the restored
    /// init is then the container's init, as a started one would be.
    async fn restore_init(&self, container: &Container, pending: PendingRestore) -> TaskResult<()> {
        let id = container.id.clone();
        let (runtime, settings, bundle) = (self.runtime.clone(), self.settings.clone(), container.bundle.clone());
        let PendingRestore { stdio, rootfs, options } = pending;
        let restored = tokio::task::spawn_blocking(move || {
            let criu = myshim_runtime::checkpoint::Criu::locate(settings.criu_path.as_deref())?;
            let create = myshim_runtime::CreateOptions {
                id: &id,
                bundle: &bundle,
                state_dir: state_dir(&bundle),
                rootfs_mounts: &rootfs,
                stdio,
                cgroup_driver: settings.cgroup_driver,
                preserved_fds: Vec::new(),
            };
            let mut restored = myshim_runtime::Container::restore(&runtime, &criu, create, &options)?;
            // CRIU's work directory served its purpose (it stays after a failure, for its log).
            if options.work_path.as_deref() == Some(bundle.join(CRIU_WORK_DIR).as_path()) {
                let _ = std::fs::remove_dir_all(bundle.join(CRIU_WORK_DIR));
            }
            let console = restored.take_console();
            Ok::<_, myshim_runtime::Error>((restored, console))
        })
        .await
        .map_err(|e| TaskError::internal(format!("restore container {}: task panicked: {e}", container.id)))?
        .map_err(|e| TaskError::from(e).context(format!("restore container {}", container.id)))?;
        let (restored, console) = restored;
        if let Some(master) = console {
            if let Some(io) = container.init.io.lock().await.as_mut() {
                io.attach_terminal(master)?;
            }
        }
        let (pid, start_time) = (restored.pid(), restored.state().pid_start_time);
        container.init.set_pid(pid);
        *container.runtime.locked() = Some(restored);
        let owner = Owner::Process { container_id: container.id.clone(), exec_id: None };
        let early_exit = self.pids.locked().register(pid, Some(start_time).filter(|t| *t != 0), owner);
        if let Some(exit) = early_exit {
            // Parked: the start is in flight, so finish_start hands it back after the start event.
            let _ = container.init.record_exit(exit);
        }
        info!(id = %container.id, pid, "restored");
        Ok(())
    }

    /// Checkpoints a running or paused container with CRIU into `request.path`.
    pub async fn checkpoint(&self, request: CheckpointRequest) -> TaskResult<()> {
        let container = self.container(&request.id)?;
        let id = request.id.clone();
        let status = container.init.status();
        if !matches!(status, Status::Running | Status::Paused) {
            return Err(TaskError::precondition(format!("checkpoint container {id}: it is {status:?}, not running or paused").to_lowercase()));
        }
        let default_work = container.bundle.join(CRIU_WORK_DIR);
        let cgroups_mode = request
            .cgroups_mode
            .as_deref()
            .filter(|m| !m.is_empty())
            .map(myshim_runtime::checkpoint::CgroupsMode::from_name)
            .transpose()
            .map_err(|e| TaskError::from(e).context(format!("checkpoint container {id}")))?;
        let options = myshim_runtime::checkpoint::CheckpointOptions {
            criu: myshim_runtime::checkpoint::CriuOptions {
                image_path: request.path.clone(),
                work_path: Some(request.work_path.clone().unwrap_or_else(|| default_work.clone())),
                tcp_established: request.open_tcp,
                ext_unix_sk: request.external_unix_sockets,
                shell_job: request.terminal,
                file_locks: request.file_locks,
                cgroups_mode,
                empty_namespaces: request.empty_namespaces.clone(),
                auto_dedup: false,
            },
            leave_running: !request.exit,
            pre_dump: false,
            parent_path: None,
        };
        let (runtime, criu_path) = (self.runtime.clone(), self.settings.criu_path.clone());
        let keep_work = request.work_path.is_some();
        let copy_to = request.copy_to.clone();
        self.with_runtime(&container, "checkpoint", move |c| {
            let criu = myshim_runtime::checkpoint::Criu::locate(criu_path.as_deref())?;
            c.checkpoint(&runtime, &criu, &options)?;
            if let Some(target) = copy_to.filter(|t| *t != options.criu.image_path) {
                myshim_runtime::checkpoint::copy_image(&options.criu.image_path, &target)?;
            }
            // Kept after a failure: the error names the log in it.
            if !keep_work {
                let _ = std::fs::remove_dir_all(&default_work);
            }
            Ok(())
        })
        .await?;
        info!(id = %id, path = %request.path.display(), exit = request.exit, "checkpointed");
        Ok(())
    }

    async fn start_exec(&self, container: &Arc<Container>, process: &Arc<Process>) -> TaskResult<()> {
        let exec_id = process.exec_id.clone().unwrap_or_default();
        let (spec, stdio) = process
            .pending_start
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| TaskError::precondition(format!("container {}: exec {exec_id} was already started", container.id)))?;
        let runtime = self.runtime.clone();
        let started = self.with_runtime(container, &format!("exec {exec_id} in"), move |c| c.exec(&runtime, spec, stdio)).await?;
        process.set_pid(started.pid);
        if let Some(master) = started.console {
            if let Some(io) = process.io.lock().await.as_mut() {
                io.attach_terminal(master).map_err(|e| e.context(format!("container {}: exec {exec_id}", container.id)))?;
            }
        }
        let owner = Owner::Process { container_id: container.id.clone(), exec_id: Some(exec_id) };
        let early_exit = self.pids.locked().register(started.pid, started.start_time, owner);
        if let Some(exit) = early_exit {
            // Parked: the start is still in flight, so finish_start hands it back after the event.
            let _ = process.record_exit(exit);
        }
        Ok(())
    }

    /// Publishes `/tasks/oom` whenever the container's memory controller reports an OOM kill.
    async fn watch_oom(&self, container: &Arc<Container>) {
        let mut watch = match self.with_runtime(container, "watch OOM of", |c| c.oom_watch()).await {
            Ok(Some(watch)) => watch,
            Ok(None) => return,
            Err(e) => {
                warn!(id = %container.id, error = %e, "no OOM notifications");
                return;
            }
        };
        let events = self.events.clone();
        let id = container.id.clone();
        let Some(fd) = watch.take_notifications() else { return };
        let watch = Arc::new(Mutex::new(watch));
        let shared = watch.clone();
        let task = tokio::spawn(async move {
            // An eventfd or inotify descriptor reads like a pipe: some bytes whenever it fires.
            let Ok(mut notifications) = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(fd) else { return };
            let mut buffer = [0u8; 4096];
            while matches!(notifications.read(&mut buffer).await, Ok(n) if n > 0) {
                if shared.locked().fired() {
                    info!(id = %id, "out of memory");
                    events.push(TaskEvent::Oom { container_id: id.clone() });
                }
            }
        });
        *container.oom_watch.locked() = Some((task, watch));
    }

    /// Called by the reaper for every exited child.
    pub fn child_exited(&self, pid: u32, status: u32) {
        let exit = Exit { pid, status, at: SystemTime::now() };
        let owner = self.pids.locked().claim(pid, exit);
        match owner {
            None => {}
            Some(Owner::Waiter(tx)) => {
                let _ = tx.send(exit);
            }
            Some(Owner::Process { container_id, exec_id }) => {
                let Ok(container) = self.container(&container_id) else { return };
                match exec_id {
                    None => self.init_exited(&container, exit),
                    Some(exec_id) => {
                        let Ok(process) = container.exec(&exec_id) else { return };
                        info!(id = %container_id, exec_id, pid, status, "exec exited");
                        if let ExitOutcome::Recorded(exit) = process.record_exit(exit) {
                            self.publish_exit(&container, &process, exit);
                        }
                        self.release_held_init_exit(&container);
                    }
                }
            }
        }
    }

    fn init_exited(&self, container: &Arc<Container>, exit: Exit) {
        info!(id = %container.id, pid = exit.pid, status = exit.status, "exited");
        let ExitOutcome::Recorded(exit) = container.init.record_exit(exit) else { return };
        // A kill the OOM task has not read yet is reported now, ahead of the exit: under the systemd
        // driver the scope's cgroup, and its count of kills, go soon after its last process.
        self.report_unread_oom_kill(container, &exit);
        self.kill_leftovers(container);
        if container.has_live_execs() {
            *container.held_init_exit.locked() = Some(exit);
        } else {
            self.publish_exit(container, &container.init, exit);
        }
    }

    /// Reports an OOM kill the watch task had no turn to read yet, once the init exited with `exit`.
    fn report_unread_oom_kill(&self, container: &Container, exit: &Exit) {
        let died_of_sigkill = exit.status == 128 + libc::SIGKILL as u32;
        self.report_oom_kill_if(container, |watch| watch.unreported_kill(died_of_sigkill));
    }

    /// Emits `/tasks/oom` when `found` finds a kill in the container's watch.
    fn report_oom_kill_if(&self, container: &Container, found: impl FnOnce(&mut myshim_runtime::cgroups::OomWatch) -> bool) {
        let watch = container.oom_watch.locked().as_ref().map(|(_, watch)| watch.clone());
        if watch.is_some_and(|watch| found(&mut watch.locked())) {
            info!(id = %container.id, "out of memory");
            self.emit(TaskEvent::Oom { container_id: container.id.clone() });
        }
    }

    /// Publishes a held init exit once no exec of the container is alive any more.
    fn release_held_init_exit(&self, container: &Arc<Container>) {
        if container.has_live_execs() {
            return;
        }
        let held = container.held_init_exit.locked().take();
        if let Some(exit) = held {
            self.publish_exit(container, &container.init, exit);
        }
    }

    /// Queues the exit event, then releases waiters: a client reacting to Wait with Delete can never
    /// get its delete event ahead of the exit event.
    fn publish_exit(&self, container: &Container, process: &Process, exit: Exit) {
        self.emit(TaskEvent::Exit { container_id: container.id.clone(), id: process.id.clone(), exit });
        process.release_waiters(exit);
    }

    /// When the init dies, the container's other processes go too: the kernel kills them in a pid
    /// namespace of its own; without one, we do.
    fn kill_leftovers(&self, container: &Container) {
        let runtime = container.runtime.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(c) = runtime.locked().as_ref() {
                if !c.state().private_pid_namespace {
                    let _ = c.signal(libc::SIGKILL as u32, true);
                }
            }
        });
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> TaskResult<Exit> {
        let (container, process) = self.process(id, exec_id)?;
        if process.exec_id.is_some() {
            return self.delete_exec(&container, &process).await;
        }
        match process.status() {
            Status::Stopped => {}
            // Created from a checkpoint and never (or not successfully) restored: no process ran.
            Status::Created if container.runtime.locked().is_none() => {
                container.restore.locked().take();
                let exit = Exit { pid: 0, status: 0, at: SystemTime::now() };
                if let ExitOutcome::Recorded(exit) = process.record_exit(exit) {
                    process.release_waiters(exit);
                }
            }
            Status::Created => {
                // Never started: kill the waiting init and collect its exit.
                let _ = self.with_runtime(&container, "delete", |c| c.signal(libc::SIGKILL as u32, false)).await;
                if tokio::time::timeout(Duration::from_secs(5), process.wait()).await.is_err() {
                    return Err(TaskError::internal(format!("delete container {id}: the created init did not exit after SIGKILL")));
                }
            }
            other => return Err(TaskError::precondition(format!("container {id} must be stopped before deletion: it is {other:?}").to_lowercase())),
        }
        let exit = process.wait().await;
        self.report_unread_oom_kill(&container, &exit);
        if let Some((task, _)) = container.oom_watch.locked().take() {
            task.abort();
        }
        close_io(&process, true).await;
        let execs: Vec<Arc<Process>> = container.execs.locked().drain().map(|(_, p)| p).collect();
        for exec in execs {
            close_io(&exec, false).await;
        }
        let (handle, runtime) = (container.runtime.clone(), self.runtime.clone());
        let destroyed = tokio::task::spawn_blocking(move || match handle.locked().take() {
            Some(c) => c.destroy(&runtime),
            None => Ok(()),
        })
        .await
        .map_err(|e| TaskError::internal(format!("delete container {id}: task panicked: {e}")))?;
        if let Err(e) = destroyed {
            warn!(id, error = %e, "delete left something behind");
            return Err(TaskError::from(e).context(format!("delete container {id}")));
        }
        let removed = self.containers.locked().remove(id).is_some();
        if removed {
            self.emit(TaskEvent::Delete { container_id: id.to_owned(), exit });
            info!(id, "deleted");
            myshim_runtime::sys::release_free_memory();
        }
        if *self.shutdown_requested.locked() && self.try_close() {
            self.exit_now.send_replace(true);
        }
        Ok(exit)
    }

    async fn delete_exec(&self, container: &Container, process: &Arc<Process>) -> TaskResult<Exit> {
        let exec_id = process.exec_id.clone().unwrap_or_default();
        let exit = match process.status() {
            Status::Stopped => process.wait().await,
            Status::Created if !process.is_alive() => Exit { pid: 0, status: 0, at: SystemTime::UNIX_EPOCH },
            other => {
                return Err(TaskError::precondition(format!("container {}: exec {exec_id} must be stopped before deletion: it is {other:?}", container.id).to_lowercase()))
            }
        };
        container.execs.locked().remove(&exec_id);
        close_io(process, true).await;
        Ok(exit)
    }

    pub async fn exec(&self, request: ExecRequest) -> TaskResult<()> {
        let (id, exec_id) = (request.container_id.as_str(), request.exec_id.as_str());
        let container = self.container(id)?;
        myshim_runtime::state::validate_id(exec_id).map_err(|e| TaskError::invalid(format!("exec id: {e}")))?;
        if !container.init.is_alive() {
            return Err(TaskError::precondition(format!("container {id} is not running: cannot exec {exec_id}")));
        }
        if request.process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(TaskError::invalid(format!("exec {exec_id} in container {id}: process.args must name the program to run")));
        }
        let process = Arc::new(Process::new(exec_id.to_owned(), Some(exec_id.to_owned()), 0, request.stdio.clone(), None));
        {
            let mut execs = container.execs.locked();
            if execs.contains_key(exec_id) {
                return Err(TaskError::already_exists(format!("container {id}: exec {exec_id} already exists")));
            }
            execs.insert(exec_id.to_owned(), process.clone());
        }
        let watch = |pid| self.watch_pid(pid);
        let prepared = stdio::setup(&request.stdio, &self.io_context(id, &watch)).await;
        let (stdio, io) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                container.execs.locked().remove(exec_id);
                return Err(e.context(format!("exec {exec_id} in container {id}")));
            }
        };
        *process.io.lock().await = Some(io);
        *process.pending_start.locked() = Some((request.process, stdio));
        self.emit(TaskEvent::ExecAdded { container_id: id.to_owned(), exec_id: exec_id.to_owned() });
        Ok(())
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
        if process.exec_id.is_some() {
            return match process.status() {
                Status::Stopped => Err(TaskError::not_found(format!("{}: process already finished", describe(id, exec_id)))),
                Status::Created => Err(TaskError::precondition(format!("{} has not been started", describe(id, exec_id)))),
                _ => myshim_runtime::sys::send_signal(process.pid(), signal)
                    .map_err(|e| TaskError::internal(format!("kill {}: {e}", describe(id, exec_id)))),
            };
        }
        if process.status() == Status::Stopped && !all {
            return Err(TaskError::not_found(format!("container {id}: process already finished")));
        }
        // A kill counted so far is reported now; from here on, a SIGKILL death is this signal's
        // doing unless the count grows (see `OomWatch::unreported_kill`).
        self.report_oom_kill_if(&container, |watch| watch.look());
        self.with_runtime(&container, "kill", move |c| c.signal(signal, all)).await
    }

    pub async fn pause(&self, id: &str) -> TaskResult<()> {
        let container = self.container(id)?;
        container
            .init
            .transition(&[Status::Running], Status::Pausing)
            .map_err(|s| TaskError::precondition(format!("container {id} cannot be paused: it is {s:?}").to_lowercase()))?;
        match self.with_runtime(&container, "pause", |c| c.set_paused(true)).await {
            Ok(()) => {
                let _ = container.init.transition(&[Status::Pausing], Status::Paused);
                self.emit(TaskEvent::Paused { container_id: id.to_owned() });
                Ok(())
            }
            Err(e) => {
                let _ = container.init.transition(&[Status::Pausing], Status::Running);
                Err(e)
            }
        }
    }

    pub async fn resume(&self, id: &str) -> TaskResult<()> {
        let container = self.container(id)?;
        if container.init.status() != Status::Paused {
            return Err(TaskError::precondition(format!("container {id} is not paused")));
        }
        self.with_runtime(&container, "resume", |c| c.set_paused(false)).await?;
        let _ = container.init.transition(&[Status::Paused], Status::Running);
        self.emit(TaskEvent::Resumed { container_id: id.to_owned() });
        Ok(())
    }

    pub async fn update(&self, id: &str, resources: oci_spec::runtime::LinuxResources) -> TaskResult<()> {
        let container = self.container(id)?;
        if container.init.status() == Status::Stopped {
            return Err(TaskError::precondition(format!("container {id} is stopped: nothing to update")));
        }
        self.with_runtime(&container, "update", move |c| c.update(&resources)).await
    }

    pub async fn stats(&self, id: &str) -> TaskResult<Stats> {
        let container = self.container(id)?;
        self.with_runtime(&container, "read stats of", |c| c.stats()).await
    }

    pub async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> TaskResult<()> {
        let (_, process) = self.process(id, exec_id)?;
        let io = process.io.lock().await;
        match io.as_ref() {
            Some(io) => io.resize(width, height).map_err(|e| e.context(describe(id, exec_id))),
            None => Ok(()),
        }
    }

    /// Lets the process's stdin reach end-of-file (once the client closed its end too).
    pub async fn close_io(&self, id: &str, exec_id: &str) -> TaskResult<()> {
        let (_, process) = self.process(id, exec_id)?;
        if let Some(io) = process.io.lock().await.as_ref() {
            io.close_stdin();
        }
        Ok(())
    }

    pub async fn pids(&self, id: &str) -> TaskResult<Vec<ProcessInfo>> {
        let container = self.container(id)?;
        let pids = self.with_runtime(&container, "list processes of", |c| Ok(c.processes())).await?;
        let exec_pids: HashMap<u32, String> = container
            .execs
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.is_alive())
            .filter_map(|e| Some((e.pid(), e.exec_id.clone()?)))
            .collect();
        let mut listed: Vec<ProcessInfo> = pids.into_iter().map(|pid| ProcessInfo { pid, exec_id: exec_pids.get(&pid).cloned() }).collect();
        // containerd (1.7, 2.x) deletes the task of a shim whose Pids is empty when it reloads shims after a
        // restart, taking it for one left over from an interrupted create: a container that exited while
        // containerd was away would lose its exit status. Until it is deleted, its exited init is listed.
        if listed.is_empty() && container.init.exit().is_some() {
            listed.push(ProcessInfo { pid: container.init.pid(), exec_id: None });
        }
        Ok(listed)
    }

    pub fn connect(&self, id: &str) -> ConnectInfo {
        let task_pid = self.containers.locked().get(id).map(|c| c.init.pid()).unwrap_or(0);
        ConnectInfo { shim_pid: self.shim_pid, task_pid }
    }

    /// Exits the shim now when it runs no container; otherwise remembers the request and exits when
    /// the last container is deleted.
    pub fn shutdown(&self) {
        if self.try_close() {
            self.exit_now.send_replace(true);
        } else {
            *self.shutdown_requested.locked() = true;
        }
    }

    /// Whether no container exists or is being created.
    pub fn is_empty(&self) -> bool {
        self.containers.locked().is_empty() && self.creating.locked().is_empty()
    }

    /// Stops taking containers if none exists or is being created, atomically with Create's check:
    /// true when the daemon may exit. (A Create that comes after this is refused; one in flight
    /// keeps the daemon.)
    pub fn try_close(&self) -> bool {
        let containers = self.containers.locked();
        let creating = self.creating.locked();
        let empty = containers.is_empty() && creating.is_empty();
        if empty {
            self.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        empty
    }
}

/// Drains (optionally) and closes a process's streams.
async fn close_io(process: &Process, drain: bool) {
    let io: Option<ProcessIo> = process.io.lock().await.take();
    if let Some(mut io) = io {
        if drain {
            io.wait_for_output(OUTPUT_DRAIN_TIMEOUT).await;
        }
        io.close().await;
    }
}

fn describe(id: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        format!("container {id}")
    } else {
        format!("container {id}: exec {exec_id}")
    }
}

#[cfg(test)]
mod pid_table_tests {
    use super::*;

    fn exit(pid: u32, status: u32) -> Exit {
        Exit { pid, status, at: std::time::SystemTime::now() }
    }

    fn owner() -> Owner {
        Owner::Process { container_id: "c".into(), exec_id: None }
    }

    /// The pid of a child that has exited and been reaped (so nothing has that pid now).
    fn reaped_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    }

    #[test]
    fn an_exit_seen_before_the_registration_is_handed_over() {
        let mut table = PidTable::default();
        let pid = reaped_pid();
        assert!(table.claim(pid, exit(pid, 3)).is_none());
        assert_eq!(table.register(pid, None, owner()).map(|e| e.status), Some(3));
        assert!(table.unclaimed.is_empty());
    }

    #[test]
    fn an_exit_recorded_under_a_live_pid_belongs_to_an_older_process() {
        let mut table = PidTable::default();
        let live = std::process::id();
        table.claim(live, exit(live, 9));
        assert!(table.register(live, None, owner()).is_none(), "a stale exit was taken for the live process");
        assert!(table.unclaimed.is_empty());
        assert!(table.owners.contains_key(&live));
    }

    /// The exit was reaped and the pid given to a new process before the registration: the new
    /// process's start time is not ours, so the recorded exit is ours.
    #[test]
    fn an_exit_whose_pid_was_reused_before_the_registration_is_handed_over() {
        let mut table = PidTable::default();
        let reused = std::process::id();
        let now_there = myshim_runtime::sys::process_start_time(reused).unwrap();
        table.claim(reused, exit(reused, 5));
        assert_eq!(table.register(reused, Some(now_there + 1), owner()).map(|e| e.status), Some(5));
        // With the start time of the process that has the pid now, the entry is an older one.
        table.claim(reused, exit(reused, 6));
        assert!(table.register(reused, Some(now_there), owner()).is_none());
    }

    #[test]
    fn a_flood_of_unclaimed_exits_keeps_the_newest() {
        let mut table = PidTable::default();
        let pid = reaped_pid();
        for other in 0..(2 * UNCLAIMED_EXITS_KEPT as u32) {
            table.claim(1_000_000 + other, exit(1_000_000 + other, 0));
        }
        table.claim(pid, exit(pid, 7));
        assert_eq!(table.unclaimed.len(), UNCLAIMED_EXITS_KEPT);
        assert_eq!(table.register(pid, None, owner()).map(|e| e.status), Some(7));
    }
}

#[cfg(test)]
mod panic_tests {
    use super::*;

    /// A request whose task panicked while it held a container's runtime handle leaves the mutex
    /// poisoned; every later request on the container must still be answered.
    #[tokio::test]
    async fn a_panicked_request_does_not_break_the_next_ones() {
        let (queue, _events) = events::queue();
        let core = TaskCore::new(queue, "ns".into(), CoreSettings::default());
        let stdio = types::StdioPaths::default();
        let container = Arc::new(Container {
            id: "c".into(),
            bundle: PathBuf::from("/nonexistent"),
            init: Arc::new(Process::new("c".into(), None, 0, stdio, None)),
            execs: Mutex::new(HashMap::new()),
            runtime: Arc::new(Mutex::new(None)),
            held_init_exit: Mutex::new(None),
            oom_watch: Mutex::new(None),
            restore: Mutex::new(None),
        });
        core.containers.locked().insert("c".into(), container.clone());
        let handle = container.runtime.clone();
        let _ = std::thread::spawn(move || {
            let _held = handle.lock();
            panic!("a request failed half-way");
        })
        .join();
        assert!(container.runtime.is_poisoned());
        for result in [core.kill("c", "", 9, false).await.map(drop), core.pids("c").await.map(drop), core.stats("c").await.map(drop)] {
            let error = result.unwrap_err();
            assert_eq!(error.kind, error::ErrorKind::NotFound, "{error}");
            assert!(error.message.contains("was deleted"), "{error}");
        }
    }
}
