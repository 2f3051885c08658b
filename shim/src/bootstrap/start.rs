//! `start`: make sure a daemon serves this container's group and tell containerd where.
//!
//! The listening socket is bound here, in the start process, and handed to the daemon as fd 3, so
//! containerd's first connection lands in the backlog even before the daemon accepts. Nothing is
//! written to stderr (containerd reads stdout and stderr as one reply).

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use myshim_runtime::sys;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::{umask, Mode};
use tracing::{info, warn};

use super::{containerd, group_id, options_from_stdin, record_path, socket_path, DaemonRecord, SOCKET_DIR};
use crate::config;
use crate::flags::{self, Flags};

/// Runs `start` and returns the reply to print.
pub fn start(flags: &Flags) -> Result<String> {
    let bundle = std::env::current_dir().context("current directory (the bundle)")?;
    let (config, source) = config::load(options_from_stdin().as_ref()).map_err(|e| anyhow!(e))?;

    let group = group_id(&bundle, &flags.id);
    let socket = socket_path(&flags.address, &flags.namespace, &group);
    let bootstrap = match bind_or_find(&socket)? {
        Daemon::New(listener) => {
            let containerd = containerd::detect(&flags.address);
            let bootstrap = containerd::bootstrap(containerd, config.protocol, &socket);
            if let Some(reason) = &bootstrap.fallback_reason {
                warn!(id = %flags.id, configured = ?source, "protocol = \"grpc\" is configured, but this shim serves ttrpc: {reason}");
            }
            let pid = spawn_daemon(flags, &bundle, &socket, &bootstrap, &config, listener)?;
            let record = DaemonRecord {
                pid,
                address: flags.address.clone(),
                namespace: flags.namespace.clone(),
                reply: bootstrap.reply.clone(),
                address_file: bootstrap.address_file.clone(),
            };
            record.save(&socket)?;
            info!(id = %flags.id, group, pid, protocol = bootstrap.protocol.name(), ?containerd, "started shim daemon");
            (record.reply, record.address_file)
        }
        Daemon::Running(record) => {
            // A live daemon serves this group: answer with what it was started with.
            info!(id = %flags.id, group, pid = record.pid, "reusing shim daemon");
            (record.reply, record.address_file)
        }
    };
    let (reply, address_file) = bootstrap;
    if let Some(address) = address_file {
        fs::write(bundle.join("address"), address).with_context(|| format!("write {}/address", bundle.display()))?;
    }
    Ok(reply)
}

/// The group's daemon: one to start on the listener just bound, or the one already running.
enum Daemon {
    New(UnixListener),
    Running(DaemonRecord),
}

/// How long `start` waits for a live daemon's record: written by the `start` that launched it just
/// after the launch, and removed by a daemon about to exit just before it removes its socket.
const RECORD_WAIT: Duration = Duration::from_secs(2);

/// Binds the group's socket (mode 0600 from the first moment), or finds the live daemon that holds
/// it. A stale socket (nobody listening) is replaced.
fn bind_or_find(socket: &Path) -> Result<Daemon> {
    fs::DirBuilder::new().recursive(true).mode(0o711).create(SOCKET_DIR).with_context(|| format!("create {SOCKET_DIR}"))?;
    let deadline = Instant::now() + RECORD_WAIT;
    loop {
        // `start` is single-threaded: the umask changes for this bind alone.
        let previous = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(socket);
        umask(previous);
        match bound {
            Ok(listener) => return Ok(Daemon::New(listener)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if UnixStream::connect(socket).is_err() {
                    warn!(socket = %socket.display(), "removing stale shim socket");
                    let _ = fs::remove_file(socket);
                    let _ = fs::remove_file(record_path(socket));
                    continue;
                }
                if let Some(record) = DaemonRecord::load(socket) {
                    return Ok(Daemon::Running(record));
                }
                if Instant::now() >= deadline {
                    return Err(anyhow!("shim daemon at {} has no record", socket.display()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).with_context(|| format!("bind {}", socket.display())),
        }
    }
}

/// Starts the daemon: the same binary with `serve`, the listener as fd 3, stdio on /dev/null, its own
/// process group, and an OOM score one above containerd's.
fn spawn_daemon(flags: &Flags, bundle: &Path, socket: &Path, bootstrap: &containerd::Bootstrap, config: &config::Config, listener: UnixListener) -> Result<u32> {
    let exe: PathBuf = std::env::current_exe().context("find the shim's own executable")?;
    // `start` is single-threaded here, so no other spawn can inherit fd 3 by accident.
    sys::place_for_child(listener.into(), 3).context("hand the socket to the daemon")?;
    // Nothing else of ours goes to the daemon: descriptors `start` inherited from containerd without
    // close-on-exec (containerd's own inheritance) would otherwise live as long as the daemon.
    sys::close_on_exec_from(4).context("keep inherited descriptors from the daemon")?;
    // Over gRPC the daemon keeps containerd's connection busy (see keepalive.rs).
    let keepalive = bootstrap.protocol == config::Protocol::Grpc && config.grpc_keepalive;
    // The daemon inherits our signal mask: it starts with SIGTERM blocked and lets it in once it can
    // handle it (see serve.rs).
    let sigterm = SigSet::from(Signal::SIGTERM);
    sigterm.thread_block().context("hold SIGTERM back for the daemon")?;
    let child = Command::new(&exe)
        .args(flags::for_daemon(
            flags,
            socket,
            &flags::DaemonSettings {
                protocol: bootstrap.protocol.name(),
                idle_exit_seconds: config.idle_exit_seconds,
                keepalive,
                cgroup_driver: config.driver().name(),
                criu_path: config.criu_path.as_deref(),
            },
        ))
        .current_dir(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("start the shim daemon {}", exe.display()));
    let _ = sigterm.thread_unblock();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            let _ = fs::remove_file(socket);
            return Err(e);
        }
    };
    let pid = child.id();
    if let Ok(score) = sys::oom_score_adj(std::os::unix::process::parent_id()) {
        // Raising a score needs no privilege; failing to is not fatal.
        let _ = sys::set_oom_score_adj(pid, (score + 1).min(1000));
    }
    if let Some(cgroup) = &config.shim_cgroup {
        // As runc's shim: the daemon goes into the operator's cgroup, or the start fails.
        if let Err(e) = myshim_runtime::cgroups::move_into_existing(cgroup, pid) {
            let _ = sys::send_signal(pid, libc::SIGKILL as u32);
            let _ = child.wait();
            let _ = fs::remove_file(socket);
            return Err(anyhow!(e).context(format!("shim_cgroup {cgroup:?}")));
        }
    }
    // The daemon outlives us; containerd, not this process, is its parent from now on.
    std::mem::forget(child);
    Ok(pid)
}
