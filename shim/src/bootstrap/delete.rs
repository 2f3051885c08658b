//! `delete`: containerd's cleanup after a task whose daemon may be gone (after every task delete on
//! 1.6/1.7, after a shim crash, after a failed start). Kills what is left of the container, removes its
//! cgroup, unmounts its rootfs and drops its state; everything already gone is fine. Only this
//! container is touched: the group's daemon may still serve others.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result};
use myshim_protos::containerd::task::v3::DeleteResponse;
use prost::Message;
use tracing::info;

use crate::api::task::timestamp;
use crate::core::state_dir;
use crate::flags::Flags;

/// 128 + SIGKILL: what containerd reports for a task cleaned up this way (runc's shim does the same).
const KILLED_STATUS: u32 = 137;

/// Runs `delete` and returns the encoded `DeleteResponse` to print.
pub fn delete(flags: &Flags) -> Result<Vec<u8>> {
    let bundle: PathBuf = match &flags.bundle {
        Some(bundle) => bundle.clone(),
        None => std::env::current_dir().context("current directory (the bundle)")?,
    };
    let state = myshim_runtime::container::destroy_from_dir(&state_dir(&bundle), &myshim_runtime::Runtime::default())
        .with_context(|| format!("clean up container {} in {}", flags.id, bundle.display()))?;
    let pid = state.map_or(0, |s| s.pid);
    info!(id = %flags.id, pid, "cleaned up after the task");
    let response = DeleteResponse { pid, exit_status: KILLED_STATUS, exited_at: Some(timestamp(Some(SystemTime::now()))) };
    Ok(response.encode_to_vec())
}
