//! containerd's task service in wire terms: one function per RPC, converting the prost request into
//! the core's vocabulary, calling the core, and converting the answer back. Both transports call these
//! functions; neither holds lifecycle logic. Task v2 and v3 share their messages, so the v3 types
//! serve both.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use myshim_protos::containerd::task::v3 as task;
use myshim_protos::containerd::types::Mount;
use myshim_protos::containerd::v1::types::Status as WireStatus;
use prost_types::Timestamp;

use crate::core::error::{TaskError, TaskResult};
use crate::core::types::{CreateRequest, RootfsMount, Status, StdioPaths};
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

pub async fn create(core: &TaskCore, r: task::CreateTaskRequest) -> TaskResult<task::CreateTaskResponse> {
    let bundle = PathBuf::from(&r.bundle);
    if !bundle.is_absolute() {
        return Err(TaskError::invalid(format!("create {}: bundle {:?} is not an absolute path", r.id, r.bundle)));
    }
    let request = CreateRequest {
        id: r.id,
        bundle,
        rootfs: rootfs_from_wire(&r.rootfs),
        stdio: StdioPaths { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal },
        checkpoint: r.checkpoint,
    };
    let pid = core.create(request).await?;
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
        .pids(&r.id)?
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

/// RPCs this build does not serve yet answer Unimplemented with the method's name.
pub async fn unimplemented(method: &str) -> TaskResult<()> {
    Err(TaskError::unimplemented(format!("{method} is not implemented by this shim")))
}
