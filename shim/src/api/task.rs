//! containerd's task service in wire terms: one function per RPC, converting the prost request into
//! the core's vocabulary, calling the core, and converting the answer back. Both transports call these
//! functions; neither holds lifecycle logic. Task v2 and v3 share their messages, so the v3 types
//! serve both.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use myshim_protos::containerd::task::v3 as task;
use myshim_protos::containerd::runc::v1::{CheckpointOptions as RuncCheckpointOptions, Options as RuncOptions};
use myshim_protos::containerd::types::Mount;
use myshim_protos::containerd::v1::types::Status as WireStatus;
use prost_types::Timestamp;

use crate::core::error::{TaskError, TaskResult};
use crate::core::types::{CheckpointRequest, CreateRequest, ExecRequest, RootfsMount, Status, StdioPaths};
use crate::core::TaskCore;

/// The time Go's zero `time.Time` marshals to: what containerd expects for "not exited".
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

pub fn timestamp(time: Option<SystemTime>) -> Timestamp {
    match time.map(|t| t.duration_since(UNIX_EPOCH)) {
        Some(Ok(d)) => Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 },
        _ => Timestamp { seconds: GO_ZERO_TIME_SECONDS, nanos: 0 },
    }
}

pub fn status(status: Status) -> WireStatus {
    match status {
        Status::Created => WireStatus::Created,
        Status::Running => WireStatus::Running,
        Status::Stopped => WireStatus::Stopped,
        Status::Paused => WireStatus::Paused,
        Status::Pausing => WireStatus::Pausing,
    }
}

pub fn rootfs_from_wire(mounts: &[Mount]) -> Vec<RootfsMount> {
    mounts
        .iter()
        .map(|m| RootfsMount { kind: m.r#type.clone(), source: m.source.clone(), target: m.target.clone(), options: m.options.clone() })
        .collect()
}

pub fn rootfs_to_wire(mounts: &[RootfsMount]) -> Vec<Mount> {
    mounts
        .iter()
        .map(|m| Mount { r#type: m.kind.clone(), source: m.source.clone(), target: m.target.clone(), options: m.options.clone() })
        .collect()
}

/// Create's request in the core's terms (what can be checked without the core is checked here).
pub fn create_request(r: task::CreateTaskRequest) -> TaskResult<CreateRequest> {
    let bundle = PathBuf::from(&r.bundle);
    if !bundle.is_absolute() {
        return Err(TaskError::invalid(format!("create {}: bundle {:?} is not an absolute path", r.id, r.bundle)));
    }
    // runc's options may name CRIU's work directory for a restore.
    let criu_work_path = r
        .options
        .as_ref()
        .filter(|o| myshim_protos::any_is::<RuncOptions>(o))
        .and_then(|o| myshim_protos::from_any::<RuncOptions>(o).ok())
        .map(|o| o.criu_work_path)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    Ok(CreateRequest {
        id: r.id,
        bundle,
        rootfs: rootfs_from_wire(&r.rootfs),
        stdio: StdioPaths { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal },
        checkpoint: r.checkpoint,
        criu_work_path,
    })
}

pub async fn create(core: &TaskCore, r: task::CreateTaskRequest) -> TaskResult<task::CreateTaskResponse> {
    let pid = core.create(create_request(r)?).await?;
    Ok(task::CreateTaskResponse { pid })
}

pub async fn start(core: &TaskCore, r: task::StartRequest) -> TaskResult<task::StartResponse> {
    let pid = core.start(&r.id, &r.exec_id).await?;
    Ok(task::StartResponse { pid })
}

pub async fn delete(core: &TaskCore, r: task::DeleteRequest) -> TaskResult<task::DeleteResponse> {
    let exit = core.delete(&r.id, &r.exec_id).await?;
    Ok(task::DeleteResponse { pid: exit.pid, exit_status: exit.status, exited_at: Some(timestamp(Some(exit.at))) })
}

pub async fn state(core: &TaskCore, r: task::StateRequest) -> TaskResult<task::StateResponse> {
    let s = core.state(&r.id, &r.exec_id)?;
    Ok(task::StateResponse {
        id: s.id,
        bundle: s.bundle.display().to_string(),
        pid: s.pid,
        status: status(s.status) as i32,
        stdin: s.stdio.stdin,
        stdout: s.stdio.stdout,
        stderr: s.stdio.stderr,
        terminal: s.stdio.terminal,
        exit_status: s.exit.map_or(0, |e| e.status),
        exited_at: Some(timestamp(s.exit.map(|e| e.at))),
        exec_id: r.exec_id,
    })
}

pub async fn wait(core: &TaskCore, r: task::WaitRequest) -> TaskResult<task::WaitResponse> {
    let exit = core.wait(&r.id, &r.exec_id).await?;
    Ok(task::WaitResponse { exit_status: exit.status, exited_at: Some(timestamp(Some(exit.at))) })
}

pub async fn kill(core: &TaskCore, r: task::KillRequest) -> TaskResult<()> {
    core.kill(&r.id, &r.exec_id, r.signal, r.all).await
}

pub async fn close_io(core: &TaskCore, r: task::CloseIoRequest) -> TaskResult<()> {
    core.close_io(&r.id, &r.exec_id).await
}

pub async fn pids(core: &TaskCore, r: task::PidsRequest) -> TaskResult<task::PidsResponse> {
    use myshim_protos::containerd::runc::v1::ProcessDetails;
    use myshim_protos::containerd::v1::types::ProcessInfo;
    let processes = core
        .pids(&r.id)
        .await?
        .into_iter()
        .map(|p| ProcessInfo { pid: p.pid, info: p.exec_id.map(|exec_id| myshim_protos::to_any(&ProcessDetails { exec_id })) })
        .collect();
    Ok(task::PidsResponse { processes })
}

pub async fn connect(core: &TaskCore, r: task::ConnectRequest) -> TaskResult<task::ConnectResponse> {
    let info = core.connect(&r.id);
    Ok(task::ConnectResponse { shim_pid: info.shim_pid, task_pid: info.task_pid, version: String::new() })
}

pub async fn shutdown(core: &TaskCore, _r: task::ShutdownRequest) -> TaskResult<()> {
    core.shutdown();
    Ok(())
}

/// The type URLs of the JSON OCI documents containerd puts into `Any`s.
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const RESOURCES_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// Decodes a JSON OCI document from an `Any`, checking its type URL first.
fn json_any<T: serde::de::DeserializeOwned>(any: Option<&prost_types::Any>, type_url: &str, what: &str) -> TaskResult<T> {
    let any = any.ok_or_else(|| TaskError::invalid(format!("{what}: missing")))?;
    if any.type_url != type_url {
        return Err(TaskError::invalid(format!("{what}: expected {type_url}, got {:?}", any.type_url)));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(&any.value);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| TaskError::invalid(format!("{what}: field {}: {}", e.path(), e.inner())))
}

/// Exec's request in the core's terms: the process spec decoded from its JSON `Any`.
pub fn exec_request(r: task::ExecProcessRequest) -> TaskResult<ExecRequest> {
    let mut process: oci_spec::runtime::Process = json_any(r.spec.as_ref(), PROCESS_TYPE_URL, &format!("exec {} process spec", r.exec_id))?;
    process.set_terminal(Some(r.terminal));
    Ok(ExecRequest {
        container_id: r.id,
        exec_id: r.exec_id,
        stdio: StdioPaths { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal },
        process,
    })
}

pub async fn exec(core: &TaskCore, r: task::ExecProcessRequest) -> TaskResult<()> {
    core.exec(exec_request(r)?).await
}

pub async fn pause(core: &TaskCore, r: task::PauseRequest) -> TaskResult<()> {
    core.pause(&r.id).await
}

pub async fn resume(core: &TaskCore, r: task::ResumeRequest) -> TaskResult<()> {
    core.resume(&r.id).await
}

/// Update's resources, decoded from their JSON `Any`.
pub fn update_resources(r: &task::UpdateTaskRequest) -> TaskResult<oci_spec::runtime::LinuxResources> {
    json_any(r.resources.as_ref(), RESOURCES_TYPE_URL, &format!("update {} resources", r.id))
}

pub async fn update(core: &TaskCore, r: task::UpdateTaskRequest) -> TaskResult<()> {
    let resources = update_resources(&r)?;
    core.update(&r.id, resources).await
}

pub async fn stats(core: &TaskCore, r: task::StatsRequest) -> TaskResult<task::StatsResponse> {
    let stats = core.stats(&r.id).await?;
    Ok(task::StatsResponse { stats: Some(super::metrics::metrics(&stats)) })
}

pub async fn resize_pty(core: &TaskCore, r: task::ResizePtyRequest) -> TaskResult<()> {
    core.resize_pty(&r.id, &r.exec_id, r.width, r.height).await
}

/// Checkpoint's request in the core's terms: runc's checkpoint options (what containerd's clients
/// send for every runtime), the image directory from the request or, when they name one, from them.
pub fn checkpoint_request(r: task::CheckpointTaskRequest) -> TaskResult<CheckpointRequest> {
    let options = match r.options.as_ref().filter(|o| !o.type_url.is_empty()) {
        None => RuncCheckpointOptions::default(),
        Some(any) if myshim_protos::any_is::<RuncCheckpointOptions>(any) => {
            myshim_protos::from_any(any).map_err(|e| TaskError::invalid(format!("checkpoint {}: options: {e}", r.id)))?
        }
        Some(any) => return Err(TaskError::invalid(format!("checkpoint {}: options of type {:?}: expected containerd.runc.v1.CheckpointOptions", r.id, any.type_url))),
    };
    // containerd archives `path` into its content store unless it knows the runtime writes elsewhere,
    // which it assumes of runc only: an image path of the options gets the images, and `path` a copy.
    let (path, copy_to) = match (options.image_path.is_empty(), r.path.is_empty()) {
        (true, _) => (r.path, None),
        (false, true) => (options.image_path, None),
        (false, false) => (options.image_path, Some(PathBuf::from(r.path))),
    };
    if path.is_empty() || !path.starts_with('/') {
        return Err(TaskError::invalid(format!("checkpoint {}: image path {path:?} is not an absolute path", r.id)));
    }
    Ok(CheckpointRequest {
        id: r.id,
        path: PathBuf::from(path),
        copy_to: copy_to.filter(|p| p.is_absolute()),
        work_path: Some(options.work_path).filter(|p| !p.is_empty()).map(PathBuf::from),
        exit: options.exit,
        open_tcp: options.open_tcp,
        external_unix_sockets: options.external_unix_sockets,
        terminal: options.terminal,
        file_locks: options.file_locks,
        empty_namespaces: options.empty_namespaces,
        cgroups_mode: Some(options.cgroups_mode).filter(|m| !m.is_empty()),
    })
}

pub async fn checkpoint(core: &TaskCore, r: task::CheckpointTaskRequest) -> TaskResult<()> {
    core.checkpoint(checkpoint_request(r)?).await
}
