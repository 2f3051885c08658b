//! The daemon: serves the task API on the socket `start` handed over (ttrpc, or gRPC where `start`
//! chose it), reaps children, publishes events, and exits once containerd asked it to and no
//! container is left — or when it has been left without containers for a while (containerd never
//! connected, or skipped Shutdown).

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use myshim_runtime::sys;
use nix::sys::signal::{SigSet, Signal};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::bootstrap::{record_path, DaemonRecord};
use crate::config::{self, Protocol};
use crate::core::{events, CoreSettings, TaskCore};
use crate::flags::Flags;
use crate::publisher::{self, Forwarder};
use crate::{api, keepalive};

pub fn serve(flags: &Flags) -> Result<()> {
    let socket = flags.socket.clone().ok_or_else(|| anyhow!("serve needs -socket"))?;
    let protocol = flags.protocol.as_deref().map_or(Some(Protocol::Ttrpc), Protocol::from_name).ok_or_else(|| anyhow!("unknown -protocol"))?;
    let listener: UnixListener = sys::take_inherited_fd(3).ok_or_else(|| anyhow!("no listening socket on fd 3"))?.into();
    listener.set_nonblocking(true).context("make the listener non-blocking")?;
    sys::become_child_subreaper().context("become a child subreaper")?;
    // One arena for the event loop, one for the blocking pool's runtime work (see sys).
    sys::limit_malloc_arenas(2);
    let idle_exit = Duration::from_secs(flags.idle_exit_seconds.unwrap_or(config::Config::default().idle_exit_seconds));

    let claim = SocketClaim::new(socket);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("start tokio")?;
    let result = runtime.block_on(run(flags, protocol, listener, idle_exit, &claim));
    claim.release();
    info!("shim exits");
    result
}

/// The group's socket path and record, as this daemon's: released (removed) the moment the daemon
/// decides to exit, so that a `start` for the same group from then on launches a new daemon instead
/// of finding this one; and only while they are still this daemon's (a successor's stay).
struct SocketClaim {
    socket: PathBuf,
    /// The socket file's identity when the daemon started (`start` had just bound it).
    identity: Option<(u64, u64)>,
}

impl SocketClaim {
    fn new(socket: PathBuf) -> SocketClaim {
        let identity = std::fs::metadata(&socket).ok().map(|m| (m.dev(), m.ino()));
        SocketClaim { socket, identity }
    }

    fn release(&self) {
        if DaemonRecord::load(&self.socket).is_some_and(|r| r.pid == std::process::id()) {
            let _ = std::fs::remove_file(record_path(&self.socket));
        }
        if self.identity.is_some() && std::fs::metadata(&self.socket).ok().map(|m| (m.dev(), m.ino())) == self.identity {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

async fn run(flags: &Flags, protocol: Protocol, listener: UnixListener, idle_exit: Duration, claim: &SocketClaim) -> Result<()> {
    // Installed before any container exists, so no SIGCHLD is missed.
    let mut sigchld = signal(SignalKind::child()).context("watch SIGCHLD")?;
    let mut sigterm = signal(SignalKind::terminate()).context("watch SIGTERM")?;
    // `start` launched us with SIGTERM blocked, so that one sent before this handler existed is not
    // fatal (the socket would stay behind); now it can come in.
    SigSet::from(Signal::SIGTERM).thread_unblock().context("let SIGTERM in")?;

    let (queue, receiver) = events::queue();
    let driver = match flags.cgroup_driver.as_deref() {
        None => Default::default(),
        Some(name) => myshim_runtime::cgroups::Driver::from_name(name).ok_or_else(|| anyhow!("unknown -cgroup-driver {name:?}"))?,
    };
    let core = TaskCore::new(queue, flags.namespace.clone(), CoreSettings { cgroup_driver: driver, criu_path: flags.criu_path.clone() });
    if flags.keepalive {
        keepalive::start(core.events(), flags.address.clone(), flags.namespace.clone());
    }
    tokio::spawn(publisher::run(receiver, flags.namespace.clone(), Forwarder::from_environment(&flags.address)));

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

    match protocol {
        Protocol::Ttrpc => {
            let listener = ttrpc::r#async::transport::Listener::try_from(listener).context("serve the socket")?;
            let mut server = ttrpc::r#async::Server::new().add_listener(listener).register_service(api::ttrpc::services(&core));
            server.start().await.map_err(|e| anyhow!("start the ttrpc server: {e}"))?;
            info!(pid = std::process::id(), "serving the task API over ttrpc");
            wait_for_exit(&core, &mut sigterm, idle_exit).await;
            claim.release();
            // The reply to Shutdown and the last events (a delete, say) go out before we leave.
            core.events().drain(Duration::from_secs(3)).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown()).await;
        }
        Protocol::Grpc => {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(tokio::net::UnixListener::from_std(listener).context("serve the socket")?);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let service = api::grpc::TaskServer::new(api::grpc::GrpcTask(core.clone()));
            let server = tokio::spawn(
                tonic::transport::Server::builder().serve_with_incoming_shutdown(service, incoming, async {
                    let _ = stopped.await;
                }),
            );
            info!(pid = std::process::id(), "serving the task API over gRPC");
            wait_for_exit(&core, &mut sigterm, idle_exit).await;
            claim.release();
            core.events().drain(Duration::from_secs(3)).await;
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        }
    }
    Ok(())
}

/// Returns when containerd's Shutdown (or SIGTERM) finds no container left, or when no container has
/// been there for `idle_exit`.
async fn wait_for_exit(core: &Arc<TaskCore>, sigterm: &mut tokio::signal::unix::Signal, idle_exit: Duration) {
    let mut exit = core.exit_signal();
    let mut empty_since = Some(Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(idle_exit.max(Duration::from_millis(100))));
    loop {
        tokio::select! {
            changed = exit.changed() => {
                if changed.is_err() || *exit.borrow() {
                    return;
                }
            }
            _ = sigterm.recv() => {
                if core.try_close() {
                    return;
                }
                warn!("SIGTERM while containers run: exiting once the last one is deleted");
                core.shutdown();
            }
            _ = tick.tick() => {
                if !core.is_empty() {
                    empty_since = None;
                    continue;
                }
                let since = *empty_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= idle_exit && core.try_close() {
                    info!(seconds = idle_exit.as_secs(), "no container for a while: exiting");
                    return;
                }
            }
        }
    }
}
