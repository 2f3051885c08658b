//! The task core's own vocabulary: requests, states and events, free of wire types. The transports
//! convert to and from containerd's messages (`api::task`).

use std::path::PathBuf;
use std::time::SystemTime;

pub use myshim_runtime::RootfsMount;

/// A process's standard streams as the client named them (fifo paths, `binary://`, `file://`, or
/// empty for none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<RootfsMount>,
    pub stdio: StdioPaths,
    /// A checkpoint image to restore the container from at Start (empty: a new container).
    pub checkpoint: String,
    /// Where CRIU works while restoring (runc's option `CriuWorkPath`).
    pub criu_work_path: Option<PathBuf>,
}

/// A checkpoint of a running (or paused) container, with runc's checkpoint options.
#[derive(Debug, Clone, Default)]
pub struct CheckpointRequest {
    pub id: String,
    /// The image directory.
    pub path: PathBuf,
    /// A second directory that gets a copy of the images (containerd's, when the options named
    /// another image path).
    pub copy_to: Option<PathBuf>,
    /// Where CRIU works (its log); a directory in the bundle, removed after success, when unset.
    pub work_path: Option<PathBuf>,
    /// The container ends once dumped (else it goes on running).
    pub exit: bool,
    pub open_tcp: bool,
    pub external_unix_sockets: bool,
    /// The container's terminal is checkpointed as a shell job.
    pub terminal: bool,
    pub file_locks: bool,
    pub empty_namespaces: Vec<String>,
    pub cgroups_mode: Option<String>,
}

/// A process to start inside a running container.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub container_id: String,
    pub exec_id: String,
    pub stdio: StdioPaths,
    pub process: oci_spec::runtime::Process,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
}

/// How and when a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: u32,
    /// The exit code, or 128 + signal.
    pub status: u32,
    pub at: SystemTime,
}

#[derive(Debug, Clone)]
pub struct ProcessState {
    /// The container id for the init process, the exec id otherwise.
    pub id: String,
    pub bundle: PathBuf,
    pub pid: u32,
    pub status: Status,
    pub stdio: StdioPaths,
    pub exit: Option<Exit>,
}

#[derive(Debug, Clone, Copy)]
pub struct ConnectInfo {
    pub shim_pid: u32,
    pub task_pid: u32,
}

#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Set for processes started by Exec.
    pub exec_id: Option<String>,
}

/// What happened to a task, published to containerd in the order the core emits them.
#[derive(Debug, Clone)]
pub enum TaskEvent {
    Create { container_id: String, bundle: PathBuf, rootfs: Vec<RootfsMount>, stdio: StdioPaths, checkpoint: String, pid: u32 },
    Start { container_id: String, pid: u32 },
    /// `id` is the container id for the init process, the exec id otherwise.
    Exit { container_id: String, id: String, exit: Exit },
    Delete { container_id: String, exit: Exit },
    ExecAdded { container_id: String, exec_id: String },
    ExecStarted { container_id: String, exec_id: String, pid: u32 },
    Oom { container_id: String },
    Paused { container_id: String },
    Resumed { container_id: String },
}
