//! `myshim-runc checkpoint` and `restore` with runc's flags, through CRIU (the one setup installs).
//! Run as root.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::Bundle;
use serde_json::{json, Value};

const COUNTER: &[&str] = &["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/next; mv /tmp/next /tmp/count; sleep 0.1; done"];

fn criu() -> String {
    let opt = std::env::var("MYSHIM_OPT").unwrap_or_else(|_| "/opt/myshim".into());
    format!("{opt}/criu/bin/criu")
}

/// `myshim-runc --criu <criu> <args>` against the bundle's root.
fn with_criu(b: &Bundle, args: &[&str]) -> std::process::Output {
    let criu = criu();
    let mut all = vec!["--criu", criu.as_str()];
    all.extend_from_slice(args);
    b.runc(&all)
}

fn status(b: &Bundle, id: &str) -> Option<String> {
    let out = b.runc(&["state", id]);
    out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap()["status"].as_str().unwrap().to_owned())
}

/// The counter of container `id`, read through an exec.
fn count(b: &Bundle, id: &str) -> u64 {
    let out = b.runc(&["exec", id, "cat", "/tmp/count"]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("the counter of {id}: {out:?}"))
}

fn wait_until(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `run --detach` with the container's stdio on /dev/null (a file outside the container, such as the
/// test harness's stderr file, cannot be checkpointed by CRIU: runc's limit too).
fn run_detached(b: &mut Bundle, args: &[&str]) {
    b.set_args(args).write_spec();
    let status = std::process::Command::new(common::RUNC)
        .args(common::driver_flag())
        .arg("--root")
        .arg(&b.root)
        .args(["run", "--detach", "--bundle", path(&b.dir), &b.id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "run --detach");
}

/// Whether this kernel tracks dirty memory (CONFIG_MEM_SOFT_DIRTY), which pre-dumps need.
fn kernel_tracks_dirty_memory() -> bool {
    std::process::Command::new(criu()).args(["check", "--feature", "mem_dirty_track"]).output().is_ok_and(|o| o.status.success())
}

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Pre-dump (where the kernel tracks dirty memory; a clear refusal where it does not), then a dump on
/// top of it (the container ends, as with runc), then a detached restore into another bundle and id:
/// the counter goes on; `--leave-running` keeps the original; `--work-path` gets CRIU's log.
#[test]
fn pre_dump_dump_and_restore() {
    let mut b = Bundle::new("ckpt");
    run_detached(&mut b, COUNTER);
    wait_until(|| b.runc(&["exec", &b.id, "test", "-s", "/tmp/count"]).status.success(), "the first number");
    let images = b.dir.join("images");
    let (pre, full, work) = (images.join("pre"), images.join("full"), b.dir.join("work"));

    let pre_dump = with_criu(&b, &["checkpoint", "--pre-dump", "--image-path", path(&pre), &b.id]);
    let parent = if kernel_tracks_dirty_memory() {
        assert_ok(&pre_dump, "pre-dump");
        Some("../pre")
    } else {
        // This development host's kernel is built without CONFIG_MEM_SOFT_DIRTY (the guest's has it).
        assert!(!pre_dump.status.success() && String::from_utf8_lossy(&pre_dump.stderr).contains("Tracking memory is not available"), "{pre_dump:?}");
        None
    };
    assert_eq!(status(&b, &b.id).as_deref(), Some("running"), "a pre-dump leaves the container running");
    assert_ok(&with_criu(&b, &["checkpoint", "--leave-running", "--image-path", path(&images.join("side")), "--work-path", path(&work), &b.id]), "checkpoint --leave-running");
    assert!(work.join("dump.log").is_file(), "CRIU's log in the work path");
    assert_eq!(status(&b, &b.id).as_deref(), Some("running"));
    let at_dump = count(&b, &b.id);
    let mut dump = vec!["checkpoint", "--image-path", path(&full), "--file-locks", "--manage-cgroups-mode", "soft"];
    if let Some(parent) = parent {
        dump.extend(["--parent-path", parent]);
    }
    dump.push(&b.id);
    assert_ok(&with_criu(&b, &dump), "dump");
    assert_eq!(status(&b, &b.id), None, "a dumped container is gone");
    assert!(full.join("inventory.img").is_file() && full.join("descriptors.json").is_file());

    let restored_id = format!("{}-back", b.id);
    b.spec["linux"]["cgroupsPath"] = json!(format!("{}-back", b.spec["linux"]["cgroupsPath"].as_str().unwrap()));
    b.write_spec();
    assert!(b.runc_detached(&["--criu", &criu(), "restore", "--detach", "--image-path", path(&full), "--bundle", path(&b.dir), &restored_id]), "restore --detach");
    assert_eq!(status(&b, &restored_id).as_deref(), Some("running"));
    let resumed = count(&b, &restored_id);
    assert!(resumed >= at_dump, "restored at {resumed}, dumped at {at_dump} or later");
    wait_until(|| count(&b, &restored_id) > resumed + 2, "the restored counter counting on");
    assert_ok(&b.runc(&["delete", "--force", &restored_id]), "delete");
    b.assert_clean();
}

/// Without `--detach`, restore waits for the restored init and returns its exit status, as run does.
#[test]
fn restore_returns_the_exit_status() {
    let mut b = Bundle::new("ckpt-exit");
    run_detached(&mut b, &["sh", "-c", "sleep 2; exit 3"]);
    let images = b.dir.join("images");
    assert_ok(&with_criu(&b, &["checkpoint", "--image-path", path(&images), &b.id]), "dump");
    let criu = criu();
    let out = b.runc(&["--criu", &criu, "restore", "--image-path", path(&images), "--bundle", path(&b.dir), &b.id]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(status(&b, &b.id), None, "a restored container that ended is removed, as run's");
    b.assert_clean();
}

/// What cannot be done is refused with the reason, and leaves the container as it was.
#[test]
fn refused_checkpoints_and_restores() {
    let mut b = Bundle::new("ckpt-bad");
    b.set_args(&["sleep", "100"]).write_spec();
    assert!(b.runc_detached(&["create", "--bundle", path(&b.dir), &b.id]));
    let images = b.dir.join("images");
    let created = with_criu(&b, &["checkpoint", "--image-path", path(&images), &b.id]);
    assert!(!created.status.success() && String::from_utf8_lossy(&created.stderr).contains("created but not started"), "{created:?}");
    assert_ok(&b.runc(&["start", &b.id]), "start");

    for (flags, reason) in [
        (vec!["--lazy-pages"], "--lazy-pages is not supported"),
        (vec!["--empty-ns", "ipc"], "only network"),
        (vec!["--manage-cgroups-mode", "sometimes"], "cgroups mode \"sometimes\""),
    ] {
        let mut args = vec!["checkpoint"];
        args.extend(flags);
        args.extend(["--image-path", path(&images), &b.id]);
        let out = with_criu(&b, &args);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(reason), "{args:?}: {out:?}");
    }
    let missing = b.runc(&["--criu", "/nonexistent/criu", "checkpoint", "--image-path", path(&images), &b.id]);
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/criu"), "{missing:?}");
    assert_eq!(status(&b, &b.id).as_deref(), Some("running"), "still running after every refusal");

    let taken = with_criu(&b, &["restore", "--detach", "--image-path", path(&images), "--bundle", path(&b.dir), &b.id]);
    assert!(!taken.status.success(), "{taken:?}");
    let nothing = PathBuf::from("/nonexistent/image");
    let not_an_image = with_criu(&b, &["restore", "--detach", "--image-path", path(&nothing), "--bundle", path(&b.dir), "other"]);
    assert!(!not_an_image.status.success() && String::from_utf8_lossy(&not_an_image.stderr).contains("not a checkpoint"), "{not_an_image:?}");
    assert_eq!(status(&b, "other"), None);
    assert_ok(&b.runc(&["delete", "--force", &b.id]), "delete");
    b.assert_clean();
}

#[test]
fn features_say_checkpoint() {
    let b = Bundle::new("ckpt-features");
    let features: Value = serde_json::from_slice(&b.runc(&["features"]).stdout).unwrap();
    assert_eq!(features["annotations"]["org.opencontainers.runc.checkpoint.enabled"], "true");
    let _ = fs::remove_dir_all(&b.dir);
}

/// A TCP connection established inside the container (both ends on its loopback, counting across
/// it): CRIU refuses to dump it without `--tcp-established`, the container untouched; with it, the
/// dump and a restore keep the connection, and the numbers go on arriving over it.
#[test]
fn established_tcp_connections() {
    let mut b = Bundle::new("ckpt-tcp");
    let caps = b.spec["process"]["capabilities"]["bounding"].as_array().unwrap().iter().cloned().chain([json!("CAP_NET_ADMIN")]).collect::<Vec<_>>();
    for set in ["bounding", "effective", "permitted"] {
        b.spec["process"]["capabilities"][set] = json!(caps);
    }
    // (The listener's stdin must not end: busybox's nc closes the connection at its end of file.)
    let talk = "ip link set lo up; sleep 100000 | nc -l -p 5555 > /tmp/received & sleep 0.5; \
                i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done | nc 127.0.0.1 5555";
    run_detached(&mut b, &["sh", "-c", talk]);
    let received = |b: &Bundle, id: &str| -> u64 {
        let out = b.runc(&["exec", id, "sh", "-c", "tail -n 1 /tmp/received"]);
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    };
    wait_until(|| received(&b, &b.id) > 2, "numbers over the connection");
    let images = b.dir.join("images");

    let refused = with_criu(&b, &["checkpoint", "--image-path", path(&images.join("refused")), &b.id]);
    assert!(!refused.status.success(), "{refused:?}");
    // CRIU's reason, not its complaint about its own descriptor limit (root here lacks CAP_SYS_RESOURCE).
    let reason = String::from_utf8_lossy(&refused.stderr);
    assert!(reason.contains("--tcp-established") && reason.contains("criu log") && !reason.contains("RLIMIT_NOFILE"), "{reason}");
    assert_eq!(status(&b, &b.id).as_deref(), Some("running"), "a failed dump leaves the container running");
    let before = received(&b, &b.id);
    wait_until(|| received(&b, &b.id) > before, "the connection still carrying numbers");

    assert_ok(&with_criu(&b, &["checkpoint", "--tcp-established", "--image-path", path(&images.join("full")), &b.id]), "checkpoint --tcp-established");
    assert_eq!(status(&b, &b.id), None);
    assert!(b.runc_detached(&["--criu", &criu(), "restore", "--detach", "--tcp-established", "--image-path", path(&images.join("full")), "--bundle", path(&b.dir), &b.id]), "restore --tcp-established");
    let resumed = received(&b, &b.id);
    wait_until(|| received(&b, &b.id) > resumed + 2, "numbers over the restored connection");
    assert_ok(&b.runc(&["delete", "--force", &b.id]), "delete");
    b.assert_clean();
}


/// A unix socket whose peer is outside the container (connected to a daemon's socket, and handed to
/// the init of a container in the host's network namespace with `--preserve-fds`): CRIU refuses to dump it without `--ext-unix-sk`, the container untouched; with it, the
/// dump goes through.
#[test]
fn external_unix_sockets() {
    let mut b = Bundle::new("ckpt-unix");
    // In the host's network namespace, as a host-network agent talking to a node daemon: CRIU finds
    // a unix socket only in the dumped tasks' own namespace.
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().retain(|ns| ns["type"] != "network");
    b.set_args(&["sleep", "1000"]).write_spec();
    // python binds a datagram socket at a path (a node daemon's, as syslog's /dev/log) and a child
    // keeps it (at most two minutes; the test ends it, by the pid it leaves); the parent connects
    // another to it and puts that at descriptor 3 for myshim-runc to pass on. (CRIU takes only
    // datagram sockets with a named peer as external.)
    let keeper_pid = b.dir.join("keeper.pid");
    /// Ends the process keeping the daemon's socket, also when the test fails.
    struct Keeper(PathBuf);
    impl Drop for Keeper {
        fn drop(&mut self) {
            if let Some(pid) = fs::read_to_string(&self.0).ok().and_then(|p| p.parse().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    let keeper = Keeper(keeper_pid.clone());
    let daemon_socket = b.dir.join("daemon.sock");
    let launch = "import os, socket, sys, time\n\
                  daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); daemon.bind(sys.argv[1])\n\
                  child = os.fork()\n\
                  if child == 0:\n    time.sleep(120); os._exit(0)\n\
                  open(sys.argv[2], 'w').write(str(child))\n\
                  client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); client.connect(sys.argv[1])\n\
                  os.dup2(client.fileno(), 3); os.set_inheritable(3, True)\n\
                  os.execv(sys.argv[3], sys.argv[3:])";
    let mut command = vec![launch.to_owned(), path(&daemon_socket).to_owned(), path(&keeper_pid).to_owned(), common::RUNC.to_owned()];
    command.extend(common::driver_flag().iter().map(|f| f.to_string()));
    let log = b.dir.join("launch.log");
    command.extend(["--root", path(&b.root), "--log", path(&log), "run", "--detach", "--preserve-fds", "1", "--bundle", path(&b.dir), &b.id].map(String::from));
    let launched = std::process::Command::new("python3")
        .arg("-c")
        .args(&command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(launched.success(), "run --detach --preserve-fds 1: {}", fs::read_to_string(&log).unwrap_or_default());
    let fd3 = b.runc(&["exec", &b.id, "readlink", "/proc/1/fd/3"]);
    assert!(String::from_utf8_lossy(&fd3.stdout).starts_with("socket:"), "{fd3:?}");
    let images = b.dir.join("images");

    let refused = with_criu(&b, &["checkpoint", "--leave-running", "--image-path", path(&images.join("refused")), &b.id]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("criu log"), "{refused:?}");
    assert_eq!(status(&b, &b.id).as_deref(), Some("running"), "a failed dump leaves the container running");
    assert_ok(&with_criu(&b, &["checkpoint", "--leave-running", "--ext-unix-sk", "--image-path", path(&images.join("dumped")), &b.id]), "checkpoint --ext-unix-sk");
    assert!(images.join("dumped/inventory.img").is_file());
    assert_eq!(status(&b, &b.id).as_deref(), Some("running"));
    assert_ok(&b.runc(&["delete", "--force", &b.id]), "delete");
    drop(keeper);
    b.assert_clean();
}
