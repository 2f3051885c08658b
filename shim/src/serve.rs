//! The daemon: serves the task API on the socket `start` handed over, reaps children, publishes
//! events, and exits once containerd asked it to and no container is left.

use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use myshim_runtime::sys;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::bootstrap::record_path;
use crate::core::{events, TaskCore};
use crate::flags::Flags;
use crate::{api, publisher};

const DEFAULT_TTRPC_ADDRESS: &str = "/run/containerd/containerd.sock.ttrpc";

pub fn serve(flags: &Flags) -> Result<()> {
    let socket = flags.socket.clone().ok_or_else(|| anyhow!("serve needs -socket"))?;
    let listener: UnixListener = sys::take_inherited_fd(3).ok_or_else(|| anyhow!("no listening socket on fd 3"))?.into();
    listener.set_nonblocking(true).context("make the listener non-blocking")?;
    sys::become_child_subreaper().context("become a child subreaper")?;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("start tokio")?;
    let result = runtime.block_on(run(flags, listener));
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(record_path(&socket));
    info!("shim exits");
    result
}

async fn run(flags: &Flags, listener: UnixListener) -> Result<()> {
    // Installed before any container exists, so no SIGCHLD is missed.
    let mut sigchld = signal(SignalKind::child()).context("watch SIGCHLD")?;
    let mut sigterm = signal(SignalKind::terminate()).context("watch SIGTERM")?;

    let (queue, receiver) = events::queue();
    let core = TaskCore::new(queue, myshim_runtime::Runtime::default(), flags.namespace.clone());
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_else(|_| DEFAULT_TTRPC_ADDRESS.into());
    tokio::spawn(publisher::run(receiver, flags.namespace.clone(), ttrpc_address));

    let reaper_core = core.clone();
    tokio::spawn(async move {
        loop {
            while let Some((pid, status)) = sys::reap_one_child() {
                reaper_core.child_exited(pid, status);
            }
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });

    let listener = ttrpc::r#async::transport::Listener::try_from(listener).context("serve the socket")?;
    let mut server = ttrpc::r#async::Server::new().add_listener(listener).register_service(api::ttrpc::services(&core));
    server.start().await.map_err(|e| anyhow!("start the ttrpc server: {e}"))?;
    info!(pid = std::process::id(), "serving the task API over ttrpc");

    wait_for_exit(&core, &mut sigterm).await;
    // The reply to Shutdown and the last events (a delete, say) go out before we leave.
    core.events().drain(Duration::from_secs(3)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown()).await;
    Ok(())
}

/// Returns when containerd's Shutdown (or SIGTERM) finds no container left.
async fn wait_for_exit(core: &Arc<TaskCore>, sigterm: &mut tokio::signal::unix::Signal) {
    let mut exit = core.exit_signal();
    loop {
        tokio::select! {
            changed = exit.changed() => {
                if changed.is_err() || *exit.borrow() {
                    return;
                }
            }
            _ = sigterm.recv() => {
                if core.is_empty() {
                    return;
                }
                warn!("SIGTERM while containers run: exiting once the last one is deleted");
                core.shutdown();
            }
        }
    }
}
