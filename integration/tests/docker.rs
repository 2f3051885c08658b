//! Docker Engine 28 through myshim, as Docker users drive it: dockerd (started here, against a private
//! containerd 2.1 or 1.7) with myshim as a configured runtime, by its runtime type alone, and with
//! `myshim-runc` as a `path` runtime under containerd's runc shim.

use std::time::{Duration, Instant};

use myshim_integration::docker::{Docker, BUSYBOX};
use myshim_integration::{host, paths, Containerd, Version};
use serde_json::json;

/// The daemon.json of the suite: myshim by name (runtime type), myshim-runc as runc's stand-in.
fn daemon_json(extra: serde_json::Value) -> serde_json::Value {
    let mut config = json!({
        "runtimes": {
            "myshim": {"runtimeType": "io.containerd.myshim.v1"},
            "myshim-runc": {"path": paths::shim_dir().join("myshim-runc")}
        },
        "storage-driver": "overlay2",
        // Root here cannot raise its hard limits (no CAP_SYS_RESOURCE): Docker's defaults are the
        // host's, which the container may keep.
        "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 1024, "Soft": 1024}}
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    config
}

fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `docker run --rm` through each way of naming myshim: exit codes and output come back.
fn runtimes(version: Version) {
    let c = Containerd::start(version, "docker-runtimes");
    let d = Docker::start(&c, &format!("runtimes-{}", version.dir_name()), &daemon_json(json!({})));
    for runtime in ["myshim", "io.containerd.myshim.v1", "myshim-runc"] {
        let out = d.docker(&["run", "--rm", "--runtime", runtime, BUSYBOX, "sh", "-c", "echo out; echo err >&2; exit 3"]);
        assert_eq!(out.code, 3, "{runtime}: {}", out.stderr);
        assert_eq!(out.stdout, "out\n", "{runtime}");
        assert!(out.stderr.contains("err"), "{runtime}: {}", out.stderr);
    }
    // The configured runtime is the one containerd ran.
    d.docker(&["run", "-d", "--name", "which", "--runtime", "myshim", BUSYBOX, "sleep", "1000"]).ok();
    let info = c.ctr_command(&["--namespace", &d.namespace, "container", "info", &d.inspect("which", "{{.Id}}")]).output().unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("io.containerd.myshim.v1"), "{}", String::from_utf8_lossy(&info.stdout));
    // myshim's options through daemon.json (Docker passes `TypeUrl`/`ConfigPath` on as containerd's
    // runtime options): here a cgroup for the shim daemon, which it moves into.
    let shims = format!("/{}-shims", d.namespace);
    let shims_dir = if host::pure_v2() { format!("/sys/fs/cgroup{shims}") } else { format!("/sys/fs/cgroup/memory{shims}") };
    std::fs::create_dir_all(&shims_dir).unwrap();
    let scratch = paths::scratch("docker-myshim-config");
    let config = scratch.join("myshim.toml");
    std::fs::write(&config, format!("shim_cgroup = {shims:?}\n")).unwrap();
    drop(d);
    let d = Docker::start(&c, &format!("runtimes-configured-{}", version.dir_name()), &daemon_json(json!({
        "runtimes": {"myshim": {"runtimeType": "io.containerd.myshim.v1", "options": {"TypeUrl": "io.containerd.myshim.v1.options", "ConfigPath": config}}}
    })));
    d.docker(&["run", "-d", "--name", "configured", "--runtime", "myshim", BUSYBOX, "sleep", "1000"]).ok();
    let init: u32 = d.inspect("configured", "{{.State.Pid}}").parse().unwrap();
    let shim = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap().split_whitespace().nth(3).unwrap().parse::<u32>().unwrap();
    assert_eq!(host::process_cgroup(shim), shims, "the shim daemon in the cgroup its configuration names");
    d.docker(&["rm", "-f", "configured"]).ok();
    wait_for(|| std::fs::remove_dir(&shims_dir).is_ok() || !std::path::Path::new(&shims_dir).exists(), "the shims' cgroup emptied");

    // Unknown runtime names are refused by Docker itself, before containerd.
    let unknown = d.docker(&["run", "--rm", "--runtime", "no-such-runtime", BUSYBOX, "true"]);
    assert_ne!(unknown.code, 0);
    assert!(unknown.stderr.contains("no-such-runtime"), "{}", unknown.stderr);
}

/// What a Docker user does with a running container: exec, logs, top, stats, pause, update, stop,
/// kill, cp, events, and the container's cgroup below Docker's parent.
fn lifecycle(version: Version) {
    let c = Containerd::start(version, "docker-life");
    let d = Docker::start(&c, &format!("life-{}", version.dir_name()), &daemon_json(json!({"default-runtime": "myshim"})));
    let started_at = unix_now();
    d.docker(&["run", "-d", "--name", "web", BUSYBOX, "sh", "-c", "echo hello; echo oops >&2; exec sleep 1000"]).ok();
    assert_eq!(d.inspect("web", "{{.State.Status}}"), "running");

    let exec = d.docker(&["exec", "web", "sh", "-c", "echo in $(hostname); exit 4"]);
    assert_eq!(exec.code, 4, "{}", exec.stderr);
    assert!(exec.stdout.starts_with("in "), "{}", exec.stdout);
    wait_for(|| d.docker(&["logs", "web"]).stdout == "hello\n", "the container's stdout in docker logs");
    assert_eq!(d.docker(&["logs", "web"]).stderr, "oops\n");
    let top = d.docker(&["top", "web"]).ok().stdout;
    assert!(top.contains("sleep 1000"), "{top}");
    let stats = d.docker(&["stats", "--no-stream", "--format", "{{.MemUsage}} {{.PIDs}}", "web"]).ok().stdout;
    assert!(!stats.starts_with("0B") && stats.trim().ends_with(" 1"), "memory in use and one process: {stats}");

    d.docker(&["pause", "web"]).ok();
    assert_eq!(d.inspect("web", "{{.State.Status}}"), "paused");
    d.docker(&["unpause", "web"]).ok();
    assert_eq!(d.inspect("web", "{{.State.Status}}"), "running");

    d.docker(&["update", "--memory", "64m", "--memory-swap", "64m", "web"]).ok();
    let limit = d.docker(&["exec", "web", "sh", "-c", host::MEMORY_LIMIT_INSIDE]).ok().stdout;
    assert_eq!(limit.trim(), (64u64 << 20).to_string());

    std::fs::write(d.dir.join("to-container"), "copied in\n").unwrap();
    d.docker(&["cp", d.dir.join("to-container").to_str().unwrap(), "web:/tmp/copied"]).ok();
    assert_eq!(d.docker(&["exec", "web", "cat", "/tmp/copied"]).ok().stdout, "copied in\n");
    d.docker(&["cp", "web:/tmp/copied", d.dir.join("back").to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(d.dir.join("back")).unwrap(), "copied in\n");

    // The container lives below Docker's cgroup parent.
    let pid: u32 = d.inspect("web", "{{.State.Pid}}").parse().unwrap();
    assert!(host::process_cgroup(pid).starts_with(&format!("{}/", d.cgroup_parent)), "{}", host::process_cgroup(pid));

    d.docker(&["stop", "-t", "1", "web"]).ok();
    assert_eq!(d.inspect("web", "{{.State.Status}}"), "exited");
    assert_eq!(d.inspect("web", "{{.State.ExitCode}}"), "137", "sleep ignores SIGTERM as pid 1: killed after the timeout");
    d.docker(&["start", "web"]).ok();
    d.docker(&["kill", "--signal", "KILL", "web"]).ok();
    wait_for(|| d.inspect("web", "{{.State.Status}}") == "exited", "killed");
    d.docker(&["rm", "web"]).ok();

    let events = d.docker(&["events", "--since", &started_at, "--until", &unix_now(), "--filter", "container=web", "--format", "{{.Action}}"]).ok().stdout;
    for action in ["create", "start", "exec_start", "pause", "unpause", "die", "destroy"] {
        assert!(events.lines().any(|l| l.starts_with(action)), "{action} in {events}");
    }
    assert!(myshim_integration::leaks::container_processes(&d.namespace).is_empty(), "container processes left");
}

/// Now as Docker's `--since`/`--until` take it (Unix seconds with a fraction).
fn unix_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// Limits and identities: OOMKilled, pids limit, read-only root, users, capabilities.
fn confinement(version: Version) {
    let c = Containerd::start(version, "docker-confine");
    let d = Docker::start(&c, &format!("confine-{}", version.dir_name()), &daemon_json(json!({"default-runtime": "myshim"})));

    let oom = d.docker(&["run", "--name", "oom", "--memory", "16m", "--memory-swap", "16m", BUSYBOX, "sh", "-c", "x=a; while :; do x=$x$x; done"]);
    assert_eq!(oom.code, 137, "{}", oom.stderr);
    assert_eq!(d.inspect("oom", "{{.State.OOMKilled}}"), "true");

    let pids = d.docker(&["run", "--rm", "--pids-limit", "5", BUSYBOX, "sh", "-c", "cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null; for i in 1 2 3 4 5 6 7 8; do sleep 5 & done"]);
    assert_eq!(pids.stdout.trim(), "5", "the limit, seen from inside: {}", pids.stderr);
    assert!(pids.stderr.contains("can't fork"), "forks beyond the limit fail: {}", pids.stderr);

    let ro = d.docker(&["run", "--rm", "--read-only", BUSYBOX, "touch", "/file"]);
    assert_ne!(ro.code, 0);
    assert!(ro.stderr.contains("Read-only file system"), "{}", ro.stderr);

    // Identities as runc gives them, from the same Docker configuration.
    let as_runc_and_myshim = |args: &[&str]| {
        let run = |runtime: &str| {
            let mut all = vec!["run", "--rm", "--runtime", runtime];
            all.extend_from_slice(args);
            d.docker(&all).ok().stdout
        };
        (run("runc"), run("myshim"))
    };
    let (runc, myshim) = as_runc_and_myshim(&["--user", "1000:1000", BUSYBOX, "id"]);
    assert_eq!(myshim, runc);
    assert_eq!(myshim.trim(), "uid=1000 gid=1000 groups=1000");
    let (runc, myshim) = as_runc_and_myshim(&["--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE", BUSYBOX, "grep", "^Cap", "/proc/self/status"]);
    assert_eq!(myshim, runc);
    assert!(myshim.contains("CapEff:\t0000000000000400"), "only CAP_NET_BIND_SERVICE: {myshim}");
}

/// Networks and published ports (in dockerd's own network namespace), `--init`, a TTY, health
/// checks and a restart policy.
fn networking_and_more(version: Version) {
    let c = Containerd::start(version, "docker-net");
    let d = Docker::start(&c, &format!("net-{}", version.dir_name()), &daemon_json(json!({"default-runtime": "myshim"})));

    d.docker(&["network", "create", "--subnet", "10.99.0.0/24", "backend"]).ok();
    d.docker(&["run", "-d", "--name", "server", "--network", "backend", "--ip", "10.99.0.10", "-p", "18080:8080", BUSYBOX, "sh", "-c", "mkdir /www && echo served > /www/index.html && exec httpd -f -p 8080 -h /www"]).ok();
    wait_for(|| d.in_network(&["busybox", "wget", "-qO-", "http://127.0.0.1:18080/"]).stdout == "served\n", "the published port");
    let from_peer = d.docker(&["run", "--rm", "--network", "backend", BUSYBOX, "wget", "-qO-", "http://10.99.0.10:8080/"]);
    assert_eq!(from_peer.stdout, "served\n", "{}", from_peer.stderr);
    d.docker(&["rm", "-f", "server"]).ok();
    d.docker(&["network", "rm", "backend"]).ok();

    let init = d.docker(&["run", "--rm", "--init", BUSYBOX, "ps", "-o", "pid,args"]).ok().stdout;
    assert!(init.lines().any(|l| l.trim_start().starts_with("1 ") && l.contains("docker-init")), "docker-init is pid 1: {init}");

    let line = format!("{} --host unix://{} run --rm -t {BUSYBOX} tty", myshim_integration::docker::bin_dir().join("docker").display(), d.socket().display());
    let tty = std::process::Command::new("script").args(["-qefc", &line, "/dev/null"]).env("DOCKER_CONFIG", d.dir.join("client")).stdin(std::process::Stdio::null()).output().unwrap();
    assert!(String::from_utf8_lossy(&tty.stdout).contains("/dev/pts/0"), "{:?}", tty);

    d.docker(&["run", "-d", "--name", "healthy", "--health-cmd", "test -e /tmp/ready", "--health-interval", "1s", "--health-retries", "1", BUSYBOX, "sh", "-c", "sleep 1; touch /tmp/ready; exec sleep 1000"]).ok();
    wait_for(|| d.inspect("healthy", "{{.State.Health.Status}}") == "healthy", "the health check passing");

    d.docker(&["run", "-d", "--name", "flaky", "--restart", "on-failure:2", BUSYBOX, "sh", "-c", "exit 1"]).ok();
    wait_for(|| d.inspect("flaky", "{{.RestartCount}} {{.State.Status}}") == "2 exited", "two restarts, then given up");
    assert_eq!(d.inspect("flaky", "{{.State.ExitCode}}"), "1");
}

/// dockerd with live restore restarts while a container runs; containerd restarts while one exits:
/// the running one is found running, the exited one's status is kept.
fn restarts(version: Version) {
    let mut c = Containerd::start(version, "docker-restart");
    let mut d = Docker::start(&c, &format!("restart-{}", version.dir_name()), &daemon_json(json!({"default-runtime": "myshim", "live-restore": true})));
    d.docker(&["run", "-d", "--name", "stays", BUSYBOX, "sleep", "1000"]).ok();
    let pid = d.inspect("stays", "{{.State.Pid}}");
    d.stop();
    d.restart(&c);
    assert_eq!(d.inspect("stays", "{{.State.Status}} {{.State.Pid}}"), format!("running {pid}"), "live restore kept the container");
    assert_eq!(d.docker(&["exec", "stays", "echo", "still here"]).ok().stdout, "still here\n");

    // The container exits while containerd is down. dockerd does not resynchronise when containerd
    // comes back: it sees the exit only if the event (which the shim sends again once containerd is
    // up) arrives after its event stream has resubscribed, a race of its own. Its restart reads the
    // status from the task instead (255 there would mean the shim lost it), so the test restarts it.
    d.docker(&["run", "-d", "--name", "ends", BUSYBOX, "sh", "-c", "sleep 2; exit 3"]).ok();
    c.stop();
    std::thread::sleep(Duration::from_secs(3));
    c.restart();
    d.stop();
    d.restart(&c);
    let waited = d.docker(&["wait", "ends"]).ok().stdout;
    assert_eq!(waited.trim(), "3", "the exit status survived containerd's restart");
    assert_eq!(d.inspect("ends", "{{.State.Status}} {{.State.ExitCode}}"), "exited 3");
}

macro_rules! for_versions {
    ($($check:ident),*) => {
        mod containerd_2_1 { use super::*; $( #[test] fn $check() { super::$check(Version::V2_1) } )* }
        mod containerd_1_7 { use super::*; $( #[test] fn $check() { super::$check(Version::V1_7) } )* }
    };
}

for_versions!(runtimes, lifecycle, confinement, networking_and_more, restarts);

/// `myshim-runc` as the binary of containerd's runc shim (a `path` runtime), many times over: the
/// shim's cleanup never reports a failed `delete --force`. (It used to in about one run of twenty:
/// that cleanup reaps children with a SIGCHLD loop of its own, and a `delete` that was done before
/// its caller waited for it had its exit status taken away; see `wait_until_the_parent_waits`.)
#[test]
fn myshim_runc_under_the_runc_shim_cleans_up_without_warnings() {
    let c = Containerd::start(Version::V2_1, "docker-runc-path");
    let d = Docker::start(&c, "runc-path", &daemon_json(json!({})));
    for n in 0..100 {
        let out = d.docker(&["run", "--rm", "--runtime", "myshim-runc", BUSYBOX, "true"]);
        assert_eq!(out.code, 0, "run {n}: {}", out.stderr);
    }
    let failures = c.log_lines("did not terminate successfully");
    assert!(failures.is_empty(), "{} failed runtime calls: {:#?}", failures.len(), &failures[..failures.len().min(3)]);
}
