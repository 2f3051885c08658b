//! Podman 4.3 with `myshim-runc` as its OCI runtime (`--runtime`): what Podman drives a runtime's
//! command line for, through conmon, as with runc.

use std::time::{Duration, Instant};

use myshim_integration::leaks;
use myshim_integration::podman::Podman;

fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// run (attached, `--rm`, exit codes), run -d, exec and exec -d, logs, ps and top, pause and unpause,
/// stop and kill, restart, and `podman inspect`'s state and exit codes.
#[test]
fn podman_drives_myshim_runc() {
    let p = Podman::new("cli");

    // `podman info` asks the runtime for its version (an error in Podman's log without one).
    let info = p.podman(&["info", "--format", "{{.Host.OCIRuntime.Version}}"]).ok();
    assert!(info.stdout.starts_with("myshim-runc version "), "{} {}", info.stdout, info.stderr);
    assert!(!info.stderr.contains("level=error"), "{}", info.stderr);

    let out = p.run(&["--rm"], &["sh", "-c", "echo out; echo err >&2; exit 5"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert_eq!(out.stdout, "out\n");
    assert!(out.stderr.contains("err"), "{}", out.stderr);

    p.run(&["-d", "--name", "box"], &["sh", "-c", "echo started; exec sleep 1000"]).ok();
    assert_eq!(p.inspect("box", "{{.State.Status}}"), "running");
    let exec = p.podman(&["exec", "box", "sh", "-c", "echo exec $$; exit 3"]);
    assert_eq!(exec.code, 3, "{}", exec.stderr);
    assert!(exec.stdout.starts_with("exec "), "{}", exec.stdout);
    p.podman(&["exec", "-d", "box", "sleep", "77"]).ok();
    wait_for(|| p.podman(&["top", "box"]).stdout.contains("sleep 77"), "the detached exec in podman top");
    assert_eq!(p.podman(&["logs", "box"]).ok().stdout, "started\n");
    let ps = p.podman(&["ps", "--format", "{{.Names}} {{.Status}}"]).ok().stdout;
    assert!(ps.lines().any(|l| l.starts_with("box Up")), "{ps}");

    p.podman(&["pause", "box"]).ok();
    assert_eq!(p.inspect("box", "{{.State.Status}}"), "paused");
    p.podman(&["unpause", "box"]).ok();
    assert_eq!(p.inspect("box", "{{.State.Status}}"), "running");

    p.podman(&["stop", "--time", "1", "box"]).ok();
    assert_eq!(p.inspect("box", "{{.State.Status}} {{.State.ExitCode}}"), "exited 137");
    p.podman(&["restart", "box"]).ok();
    assert_eq!(p.inspect("box", "{{.State.Status}}"), "running");
    p.podman(&["kill", "--signal", "KILL", "box"]).ok();
    wait_for(|| p.inspect("box", "{{.State.Status}}") == "exited", "the killed container");
    assert_eq!(p.inspect("box", "{{.State.ExitCode}}"), "137");
    p.podman(&["rm", "box"]).ok();

    let exited = p.run(&["--name", "ended"], &["sh", "-c", "exit 7"]);
    assert_eq!(exited.code, 7);
    assert_eq!(p.inspect("ended", "{{.State.Status}} {{.State.ExitCode}}"), "exited 7");
    p.podman(&["rm", "ended"]).ok();

    // A missing program: Podman's error carries the runtime's, which names it.
    let missing = p.run(&["--rm"], &["/no/such/program"]);
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("/no/such/program"), "{}", missing.stderr);

    // conmon and Podman's `--rm` cleanup finish after `podman run` returned: nothing is left once they have.
    wait_for(|| leaks::container_processes(&p.namespace).is_empty(), "no process left below the instance's cgroup parent");
}

/// `podman run -t` through conmon's console socket: the container's own terminal.
#[test]
fn podman_terminal() {
    let p = Podman::new("tty");
    let mut line = String::from("podman");
    for arg in p.command(&[]).get_args() {
        line.push_str(&format!(" '{}'", arg.to_string_lossy()));
    }
    for arg in p.run_args(&["--rm", "-t"], &["tty"]) {
        line.push_str(&format!(" '{arg}'"));
    }
    let out = std::process::Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .env("CONTAINERS_CONF", p.dir.join("containers.conf"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/0"), "{text} {}", String::from_utf8_lossy(&out.stderr));
}

/// `podman container checkpoint` and `restore` (Podman asks the runtime's `checkpoint --help` whether
/// it can): the counter stops with the checkpoint and goes on from where it was after the restore;
/// `--leave-running` keeps it counting.
#[test]
fn podman_checkpoint_and_restore() {
    let p = Podman::new("ckpt");
    let counter = "i=0; while :; do i=$((i+1)); echo $i > /tmp/next; mv /tmp/next /tmp/count; sleep 0.1; done";
    p.run(&["-d", "--name", "counter"], &["sh", "-c", counter]).ok();
    let count = || p.podman(&["exec", "counter", "cat", "/tmp/count"]).stdout.trim().parse::<u64>().unwrap_or(0);
    wait_for(|| count() > 3, "the counter counting");

    p.podman(&["container", "checkpoint", "--leave-running", "counter"]).ok();
    assert_eq!(p.inspect("counter", "{{.State.Status}}"), "running");
    p.podman(&["container", "checkpoint", "counter"]).ok();
    assert_eq!(p.inspect("counter", "{{.State.Status}}"), "exited");
    p.podman(&["container", "restore", "counter"]).ok();
    assert_eq!(p.inspect("counter", "{{.State.Status}}"), "running");
    let resumed = count();
    assert!(resumed > 3, "restored with its count: {resumed}");
    wait_for(|| count() > resumed + 3, "the restored counter counting on");
    p.podman(&["rm", "--force", "--time", "0", "counter"]).ok();
    wait_for(|| leaks::container_processes(&p.namespace).is_empty(), "no process left below the instance's cgroup parent");
}
