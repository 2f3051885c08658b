//! End to end through real containerd: `ctr run --runtime io.containerd.myshim.v1` on 1.6, 1.7 and 2.1
//! over ttrpc, on 1.7 over gRPC, and on 2.1 configured for gRPC (which falls back to ttrpc there).
//! Each test starts its own containerd, runs its containers, and checks that nothing is left.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::Stdio;
use std::time::{Duration, Instant};

use myshim_integration::containerd::RUNTIME;
use myshim_integration::events::Events;
use myshim_integration::{image, leaks, Containerd, Version};

/// The container's output and exit code, the basic lifecycle and the leak check.
fn lifecycle(setup: Setup) {
    let c = setup.start("lifecycle");

    let hello = c.run("hello", &[], &["echo", "hello"]).ok();
    assert_eq!(hello.stdout, "hello\n");

    let three = c.run("three", &[], &["sh", "-c", "exit 3"]);
    assert_eq!(three.code, 3, "{}", three.stderr);

    // PID 1 in the container is the user's process.
    let pid = c.run("pid1", &[], &["sh", "-c", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '"]).ok();
    assert_eq!(pid.stdout, "1\nsh -c echo $$; cat /proc/1/cmdline | tr '\\0' ' ' ");

    // `ls /` shows the image, not the host.
    let ls = c.run("ls", &[], &["ls", "/"]).ok();
    let listed: Vec<String> = ls.stdout.lines().map(str::to_owned).collect();
    assert_eq!(listed, image::busybox_root_listing(), "ls / in the container");

    // The container has its own UTS namespace (and, where ctr can set it, its own hostname).
    let host_uts = std::fs::read_link("/proc/self/ns/uts").unwrap().display().to_string();
    let uts = c.run("uts", &[], &["readlink", "/proc/self/ns/uts"]).ok();
    assert_ne!(uts.stdout.trim(), host_uts);
    if setup.version != Version::V1_6 {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let named = c.run("named", &["--hostname", "myshim-box"], &["hostname"]).ok();
        assert_eq!(named.stdout, "myshim-box\n");
        assert_ne!(named.stdout, host);
    }

    // run -d → RUNNING, kill, delete.
    c.run_detached("detached", &["sleep", "1000"]);
    assert_eq!(c.task_status("detached").as_deref(), Some("RUNNING"));
    c.ctr(&["task", "kill", "-s", "KILL", "detached"]).ok();
    wait_for(|| c.task_status("detached").as_deref() == Some("STOPPED"), "task stopped after kill");
    c.ctr(&["task", "delete", "detached"]).ok();
    c.ctr(&["container", "rm", "detached"]).ok();

    c.assert_no_leftovers();
}

/// `ctr task kill -s KILL` of a container that `ctr run` waits on: exit status 137.
fn kill_gives_137(setup: Setup) {
    let c = setup.start("kill137");
    c.track("victim");
    let cgroup = c.cgroup_flag("victim");
    let mut run = c
        .ctr_command(&["run", "--runtime", RUNTIME, "--rm", &cgroup[0], &cgroup[1], image::BUSYBOX, "victim", "sleep", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(|| c.task_status("victim").as_deref() == Some("RUNNING"), "victim running");
    c.ctr(&["task", "kill", "-s", "KILL", "victim"]).ok();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    c.assert_no_leftovers();
}

/// Events reach containerd in the order create < start < exit < delete.
fn event_order(setup: Setup) {
    let c = setup.start("events");
    let events = Events::watch(&c);
    c.run("ordered", &[], &["true"]).ok();
    assert!(events.wait_for("ordered", "/tasks/delete", Duration::from_secs(10)), "no delete event: {:?}", events.topics_of("ordered"));
    assert_eq!(events.topics_of("ordered"), ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"], "event topics");
    c.assert_no_leftovers();
}

/// The shim's socket is a root-owned 0600 file under /run/containerd/s and its address file names it.
fn socket_and_address(setup: Setup) {
    let c = setup.start("socket");
    c.run_detached("sock", &["sleep", "1000"]);
    let address = std::fs::read_to_string(c.bundle("sock").join("address")).unwrap();
    // 1.7 with gRPC keeps the JSON reply there; otherwise it is a ttrpc address.
    let address = match serde_json::from_str::<serde_json::Value>(&address) {
        Ok(json) => json["address"].as_str().unwrap().to_owned(),
        Err(_) => address,
    };
    let path = address.trim().trim_start_matches("unix://");
    assert!(path.starts_with("/run/containerd/s/"), "address file {address:?}");
    let meta = std::fs::metadata(path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);
    let shims = leaks::shim_processes(&c);
    assert_eq!(shims.len(), 1, "one shim daemon: {shims:?}");
    // None of the shim's sockets is abstract (reachable from any process in the network namespace);
    // the one it listens on is the file above.
    let names = socket_names(shims[0].0);
    assert!(names.iter().all(|n| !n.starts_with('@')), "abstract sockets: {names:?}");
    assert!(names.iter().any(|n| n == path), "listening on {path}: {names:?}");
    // The daemon is detached: its stdio is /dev/null, not start's pipes.
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{}/fd/{fd}", shims[0].0)).unwrap();
        assert_eq!(target.to_str(), Some("/dev/null"), "daemon fd {fd}");
    }
    c.remove("sock");
    c.assert_no_leftovers();
}

/// Bad input gets an error naming the cause; containerd and other containers stay healthy.
fn bad_input(setup: Setup) {
    let c = setup.start("badinput");
    c.run_detached("bystander", &["sleep", "1000"]);

    let nope = c.run("nope", &[], &["/nope"]);
    assert_ne!(nope.code, 0);
    assert!(nope.stderr.contains("/nope") && nope.stderr.contains("no such file"), "{}", nope.stderr);

    let notfound = c.run("notfound", &[], &["no-such-command"]);
    assert!(notfound.stderr.contains("executable file not found"), "{}", notfound.stderr);

    c.track("norootfs");
    let missing = c.ctr(&["run", "--runtime", RUNTIME, "--rm", "--rootfs", "/nonexistent/rootfs", "norootfs", "sh"]);
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("/nonexistent/rootfs"), "{}", missing.stderr);

    let spec_dir = myshim_integration::paths::scratch("badspec");
    let rootfs = spec_dir.join("rootfs");
    std::process::Command::new("python3")
        .arg(myshim_integration::paths::workspace().join("integration/scripts/build-image.py"))
        .arg("--rootfs")
        .arg(&rootfs)
        .status()
        .unwrap();
    let spec = serde_json::json!({
        "ociVersion": "1.1.0",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/"},
        "root": {"path": rootfs},
        "linux": {"namespaces": [{"type": "mount"}, {"type": "bogus"}]}
    });
    std::fs::write(spec_dir.join("config.json"), spec.to_string()).unwrap();
    c.track("badspec");
    let malformed = c.ctr(&["run", "--runtime", RUNTIME, "--rm", "--config", spec_dir.join("config.json").to_str().unwrap(), "badspec"]);
    assert_ne!(malformed.code, 0);
    assert!(malformed.stderr.contains("linux.namespaces[1].type") && malformed.stderr.contains("bogus"), "{}", malformed.stderr);

    // Everything failed cleanly: containerd answers, the bystander still runs, nothing leaked.
    assert_eq!(c.task_status("bystander").as_deref(), Some("RUNNING"));
    let containers = c.ctr(&["container", "ls", "-q"]).ok().stdout;
    let ids: HashSet<&str> = containers.lines().collect();
    assert_eq!(ids, HashSet::from(["bystander"]));
    c.remove("bystander");
    c.assert_no_leftovers();
}

/// After the shim is killed, containerd's `delete` cleans up the container, and a new container with
/// the same id starts.
fn shim_killed(setup: Setup) {
    let c = setup.start("shimkill");
    c.run_detached("orphan", &["sleep", "1000"]);
    let shims = leaks::shim_processes(&c);
    assert_eq!(shims.len(), 1);
    leaks::signal(shims[0].0, nix::sys::signal::Signal::SIGKILL);
    wait_for(|| leaks::container_processes(&c.namespace).is_empty(), "container processes gone after the shim died");
    wait_for(|| c.task_status("orphan").as_deref() != Some("RUNNING"), "task not running");
    let _ = c.ctr(&["task", "delete", "orphan"]);
    c.ctr(&["container", "rm", "orphan"]).ok();
    assert!(leaks::mounts_under(&c.dir).is_empty(), "rootfs unmounted");
    assert!(!c.bundle("orphan").exists(), "bundle (state, log fifo, address) removed");
    assert!(leaks::container_groups(&c.namespace).is_empty(), "cgroup removed");
    let again = c.run("orphan", &[], &["echo", "again"]).ok();
    assert_eq!(again.stdout, "again\n");
    c.assert_no_leftovers();
}

/// The bound names of the unix sockets process `pid` holds (empty for unnamed ones).
fn socket_names(pid: u32) -> Vec<String> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    std::fs::read_to_string(format!("/proc/{pid}/net/unix"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.get(6).is_some_and(|inode| inodes.contains(*inode)))
        .map(|cols| cols.get(7).map(|s| s.to_string()).unwrap_or_default())
        .collect()
}

fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A containerd version and the protocol the shim is configured for.
#[derive(Clone, Copy)]
struct Setup {
    version: Version,
    grpc: bool,
}

impl Setup {
    fn start(self, name: &str) -> Containerd {
        match self.grpc {
            true => Containerd::start_with(self.version, &format!("{name}-grpc"), Some("protocol = \"grpc\"\n")),
            false => Containerd::start(self.version, name),
        }
    }
}

macro_rules! for_each_setup {
    ($($check:ident),*) => {
        mod containerd_1_6 { use super::*; $( #[test] fn $check() { super::$check(Setup { version: Version::V1_6, grpc: false }) } )* }
        mod containerd_1_7 { use super::*; $( #[test] fn $check() { super::$check(Setup { version: Version::V1_7, grpc: false }) } )* }
        mod containerd_1_7_grpc { use super::*; $( #[test] fn $check() { super::$check(Setup { version: Version::V1_7, grpc: true }) } )* }
        mod containerd_2_1 { use super::*; $( #[test] fn $check() { super::$check(Setup { version: Version::V2_1, grpc: false }) } )* }
        mod containerd_2_1_grpc_fallback { use super::*; $( #[test] fn $check() { super::$check(Setup { version: Version::V2_1, grpc: true }) } )* }
    };
}

for_each_setup!(lifecycle, kill_gives_137, event_order, socket_and_address, bad_input, shim_killed);
