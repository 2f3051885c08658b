//! The whole task API through real containerd 1.6 and 2.1: exec, terminals, stdio forms, pause and
//! resume, pids, metrics, kill --all, OOM, grouping, and what ctr has no verb for (Update, ResizePty,
//! CloseIO) through containerd's gRPC Tasks API.

use std::io::{Read, Write};
use std::path::Path;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use myshim_integration::api::{make_fifo, TasksApi};
use myshim_integration::containerd::RUNTIME;
use myshim_integration::events::Events;
use myshim_integration::{host, image, leaks, paths, Containerd, Version};

fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs ctr under a pseudo-terminal (`script`), feeding it `input`; returns (exit code, output).
fn under_pty(c: &Containerd, args: &[&str], input: &str) -> (i32, String) {
    let ctr = c.version.bin_dir().join("ctr");
    let mut line = format!("{} --address {} --namespace {}", ctr.display(), c.socket().display(), c.namespace);
    for arg in args {
        line.push_str(&format!(" '{}'", arg.replace('\'', "'\\''")));
    }
    let mut child = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run script(1)");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    std::thread::spawn(move || {
        // Give the container's shell a moment to start before typing.
        std::thread::sleep(Duration::from_millis(500));
        let _ = stdin.write_all(input.as_bytes());
        std::thread::sleep(Duration::from_secs(30));
    });
    let mut output = String::new();
    child.stdout.take().unwrap().read_to_string(&mut output).unwrap();
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), output)
}

fn process_spec(args: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "args": args,
        "cwd": "/",
        "user": {"uid": 0, "gid": 0},
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    })
}

/// Exec: output, exit code, duplicate ids, exec after the init exited, and the event order.
fn exec(version: Version) {
    let c = Containerd::start(version, "exec");
    let events = Events::watch(&c);
    c.run_detached("box", &["sleep", "1000"]);

    let out = c.ctr(&["task", "exec", "--exec-id", "hi", "box", "sh", "-c", "echo exec says hi; exit 5"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert_eq!(out.stdout, "exec says hi\n");

    // The exec runs in the container: its pid namespace, its root, its cgroup.
    let inside = c.ctr(&["task", "exec", "--exec-id", "where", "box", "sh", "-c", "echo $$; ls /linuxrc; grep -E 'memory|^0::' /proc/self/cgroup | head -1"]).ok();
    let lines: Vec<&str> = inside.stdout.lines().collect();
    assert_ne!(lines[0], "1");
    assert!(lines[0].parse::<u32>().unwrap() < 100, "pid inside the container's namespace: {}", lines[0]);
    assert_eq!(lines[1], "/linuxrc");
    assert!(lines[2].ends_with(&format!("/{}", host::cgroup_relative(&c.namespace, "box"))), "{}", lines[2]);

    // A variable given twice (a client appends the exec's env to the container's, as Docker's exec
    // does): the last value wins and the program sees it once.
    let api = TasksApi::connect(&c.socket(), &c.namespace);
    let dir = paths::scratch("exec-env");
    let fifo = dir.join("stdout");
    make_fifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let mut process = process_spec(&["sh", "-c", "echo $WHO; env | grep -c ^WHO="]);
    process["env"].as_array_mut().unwrap().extend(["WHO=spec".into(), "WHO=exec".into()]);
    api.exec("box", "env", ["", fifo.to_str().unwrap(), ""], false, process).unwrap();
    api.start("box", "env").unwrap();
    assert_eq!(api.wait("box", "env").unwrap(), 0);
    api.delete_process("box", "env").unwrap();
    assert_eq!(reader.join().unwrap(), "exec\n1\n");

    // A client that opens its stdout fifo late (containerd opens it in a goroutine while it sends
    // Exec) still gets the output and its end, though the process is over within a millisecond. A
    // writer opened and closed before the reader's blocking open would leave that open waiting for
    // good: the ExecSync of the churn that waited for its client's timeout.
    let late = dir.join("late-stdout");
    make_fifo(&late);
    let (sender, read) = std::sync::mpsc::channel();
    {
        let late = late.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let _ = sender.send(std::fs::read_to_string(late));
        });
    }
    api.exec("box", "late", ["", late.to_str().unwrap(), ""], false, process_spec(&["echo", "late"])).unwrap();
    api.start("box", "late").unwrap();
    assert_eq!(api.wait("box", "late").unwrap(), 0);
    api.delete_process("box", "late").unwrap();
    let output = read.recv_timeout(Duration::from_secs(10));
    if output.is_err() {
        // Let the reader's open return before failing.
        let _ = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&late);
    }
    assert_eq!(output.expect("the late reader got end-of-file").unwrap(), "late\n");

    let mut long = c.ctr_command(&["task", "exec", "--exec-id", "dup", "box", "sleep", "1000"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for(|| c.ctr(&["task", "ps", "box"]).stdout.contains("dup"), "exec dup in task ps");
    let duplicate = c.ctr(&["task", "exec", "--exec-id", "dup", "box", "true"]);
    assert_ne!(duplicate.code, 0);
    assert!(duplicate.stderr.contains("already exists"), "{}", duplicate.stderr);

    // Killing the init ends the exec too; its exit event comes before the init's.
    c.ctr(&["task", "kill", "-s", "KILL", "box"]).ok();
    let _ = long.wait();
    assert!(events.wait_for("box", "/tasks/exit", Duration::from_secs(10)));
    wait_for(|| c.task_status("box").as_deref() == Some("STOPPED"), "box stopped");
    let late = c.ctr(&["task", "exec", "--exec-id", "late", "box", "true"]);
    assert_ne!(late.code, 0);
    assert!(late.stderr.contains("not running"), "{}", late.stderr);
    c.remove("box");
    assert!(events.wait_for("box", "/tasks/delete", Duration::from_secs(10)));

    let exits: Vec<String> = events.of("box").iter().filter(|e| e.topic == "/tasks/exit").map(|e| e.id().unwrap_or_default().to_owned()).collect();
    assert_eq!(exits.last().map(String::as_str), Some("box"), "the init's exit comes last: {exits:?}");
    assert!(exits.contains(&"dup".to_owned()) && exits.contains(&"hi".to_owned()), "{exits:?}");
    let topics = events.topics_of("box");
    let first = |t: &str| topics.iter().position(|x| x == t).unwrap_or_else(|| panic!("no {t} in {topics:?}"));
    assert!(first("/tasks/create") < first("/tasks/start"));
    assert!(first("/tasks/start") < first("/tasks/exec-added"));
    assert!(first("/tasks/exec-added") < first("/tasks/exec-started"));
    assert!(first("/tasks/exec-started") < first("/tasks/exit"));
    assert_eq!(topics.last().map(String::as_str), Some("/tasks/delete"));
    c.assert_no_leftovers();
}

/// `ctr run -t` and `ctr task exec -t` interactively, and large output through a terminal.
fn terminals(version: Version) {
    let c = Containerd::start(version, "tty");
    c.track("ttyrun");
    let cgroup = c.cgroup_flag("ttyrun");
    let (code, output) = under_pty(&c, &["run", "-t", "--runtime", RUNTIME, "--rm", &cgroup[0], &cgroup[1], image::BUSYBOX, "ttyrun", "sh"], "tty; echo typed-$((6*7)); exit 7\n");
    assert_eq!(code, 7, "{output}");
    assert!(output.contains("/dev/pts/0"), "a terminal of the container's devpts: {output}");
    assert!(output.contains("typed-42"), "{output}");

    c.run_detached("ttybox", &["sleep", "1000"]);
    let (code, output) = under_pty(&c, &["task", "exec", "-t", "--exec-id", "sh", "ttybox", "sh"], "echo exec-tty-$((2+3)); exit 3\n");
    assert_eq!(code, 3, "{output}");
    assert!(output.contains("exec-tty-5"), "{output}");

    // 100000 lines through the terminal arrive complete, read straight from the stdout fifo (through
    // ctr and a second pty, script's, lines get lost under load with any runtime: runc's too).
    let api = TasksApi::connect(&c.socket(), &c.namespace);
    let dir = paths::scratch("tty-out");
    let fifo = dir.join("seq-stdout");
    make_fifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    api.exec("ttybox", "seq", ["", fifo.to_str().unwrap(), ""], true, process_spec(&["seq", "1", "100000"])).unwrap();
    api.start("ttybox", "seq").unwrap();
    assert_eq!(api.wait("ttybox", "seq").unwrap(), 0);
    api.delete_process("ttybox", "seq").unwrap();
    let output = reader.join().unwrap();
    let numbers: Vec<&str> = output.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert_eq!(numbers.len(), 100000, "lines through the terminal");
    assert_eq!(numbers.last(), Some(&"100000"));
    c.remove("ttybox");
    c.assert_no_leftovers();
}

/// Pause/resume with events, ps with exec ids, metrics with real numbers, kill --all.
fn control(version: Version) {
    let c = Containerd::start(version, "control");
    let events = Events::watch(&c);
    c.run_detached("ctl", &["sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    c.ctr(&["task", "pause", "ctl"]).ok();
    assert_eq!(c.task_status("ctl").as_deref(), Some("PAUSED"));
    c.ctr(&["task", "resume", "ctl"]).ok();
    assert_eq!(c.task_status("ctl").as_deref(), Some("RUNNING"));
    assert!(events.wait_for("ctl", "/tasks/resumed", Duration::from_secs(5)));
    let topics = events.topics_of("ctl");
    assert!(topics.iter().position(|t| t == "/tasks/paused") < topics.iter().position(|t| t == "/tasks/resumed"), "{topics:?}");

    let mut exec = c.ctr_command(&["task", "exec", "--exec-id", "psexec", "ctl", "sleep", "1000"]).stdout(Stdio::null()).spawn().unwrap();
    wait_for(|| c.ctr(&["task", "ps", "ctl"]).stdout.contains("psexec"), "exec in task ps");
    let ps = c.ctr(&["task", "ps", "ctl"]).ok().stdout;
    assert_eq!(ps.lines().skip(1).count(), 4, "init, two sleeps, exec: {ps}");

    let metrics = c.ctr(&["task", "metrics", "ctl"]).ok().stdout;
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in metrics: {metrics}"))
    };
    if host::pure_v2() {
        assert!(value("memory.usage") > 0);
        assert!(value("cpu.usage_usec") > 0);
    } else {
        assert!(value("memory.usage_in_bytes") > 0);
        assert!(value("cpuacct.usage") > 0);
    }
    assert_eq!(value("pids.current"), 4);

    c.ctr(&["task", "kill", "--all", "-s", "KILL", "ctl"]).ok();
    let _ = exec.wait();
    wait_for(|| c.task_status("ctl").as_deref() == Some("STOPPED"), "stopped after kill --all");
    assert!(leaks::container_processes(&c.namespace).is_empty(), "kill --all left processes");
    c.remove("ctl");
    c.assert_no_leftovers();
}

/// A memory hog under a small limit: `/tasks/oom` and exit 137.
fn oom(version: Version) {
    let c = Containerd::start(version, "oom");
    let events = Events::watch(&c);
    // A bystander in the same parent group, killed with SIGKILL after the hog's OOM kill, which the
    // parent counted too: its death is no OOM kill. (Under the systemd driver a group is gone before
    // its exit is read, and the parent's count stands in for it; see `OomWatch::unreported_kill`.)
    c.run_detached("bystander", &["sleep", "1000"]);
    let out = c.run("hog", &["--memory-limit", "33554432"], &["sh", "-c", "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done"]);
    assert_eq!(out.code, 137, "{}", out.stderr);
    assert!(events.wait_for("hog", "/tasks/oom", Duration::from_secs(10)), "no oom event: {:?}", events.topics_of("hog"));
    c.remove("bystander");
    assert!(events.wait_for("bystander", "/tasks/delete", Duration::from_secs(10)), "{:?}", events.topics_of("bystander"));
    assert!(!events.topics_of("bystander").iter().any(|t| t == "/tasks/oom"), "a SIGKILL taken for an OOM kill: {:?}", events.topics_of("bystander"));
    c.assert_no_leftovers();
}

/// `file://` and `binary://` stdio, and an unknown scheme.
fn stdio_forms(version: Version) {
    let c = Containerd::start(version, "stdio");
    let dir = paths::scratch("stdio");
    let log = dir.join("logs/out.log");
    let out = c.run("tofile", &["--log-uri", &format!("file://{}", log.display())], &["sh", "-c", "echo to-stdout; echo to-stderr >&2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("to-stdout\n") && text.contains("to-stderr\n"), "{text:?}");

    // A logging driver: ready when it closes fd 5; copies fds 3 and 4; writes its pid.
    let driver = dir.join("driver.sh");
    std::fs::write(
        &driver,
        "#!/bin/sh\n# args: out <file>\nout=\"$2\"\necho $$ > \"$out.pid\"\necho \"$CONTAINER_ID $CONTAINER_NAMESPACE\" > \"$out.env\"\n\
         exec 5>&-\ncat <&3 > \"$out\" &\ncat <&4 > \"$out.err\" &\ntrap 'exit 0' TERM\nwait\n",
    )
    .unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&driver).status().unwrap();
    let target = dir.join("driver.log");
    let uri = format!("binary://{}?out={}", driver.display(), target.display());
    let out = c.run("tobinary", &["--log-uri", &uri], &["sh", "-c", "echo via-driver; echo err-via-driver >&2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    wait_for(|| std::fs::read_to_string(&target).is_ok_and(|t| t.contains("via-driver")), "driver output");
    assert!(std::fs::read_to_string(format!("{}.err", target.display())).unwrap().contains("err-via-driver"));
    assert_eq!(std::fs::read_to_string(format!("{}.env", target.display())).unwrap().trim(), format!("tobinary {}", c.namespace));
    let driver_pid: u32 = std::fs::read_to_string(format!("{}.pid", target.display())).unwrap().trim().parse().unwrap();
    wait_for(|| !Path::new(&format!("/proc/{driver_pid}")).exists(), "driver stopped after delete");

    let bad = c.run("badscheme", &["--log-uri", "tcp://127.0.0.1:1"], &["true"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("unsupported stdio scheme tcp://"), "{}", bad.stderr);
    c.assert_no_leftovers();
}

/// Update, ResizePty and CloseIO through containerd's gRPC API, and stdio that survives a containerd
/// restart.
fn grpc_api(version: Version) {
    let mut c = Containerd::start(version, "grpcapi");
    let dir = paths::scratch("grpcapi");
    c.run_detached("api", &["sleep", "1000"]);
    let api = TasksApi::connect(&c.socket(), &c.namespace);

    // Update: a new memory limit reaches the cgroup.
    api.update("api", serde_json::json!({"memory": {"limit": 67108864}})).unwrap();
    let limit = std::fs::read_to_string(host::cgroup_file(&host::cgroup_relative(&c.namespace, "api"), "memory", "memory.limit_in_bytes", "memory.max")).unwrap();
    assert_eq!(limit.trim(), "67108864");

    // CloseIO: cat sees end-of-file once the client closed its end and asked to close stdin.
    let (stdin, stdout) = (dir.join("cat-stdin"), dir.join("cat-stdout"));
    make_fifo(&stdin);
    make_fifo(&stdout);
    let reader = {
        let stdout = stdout.clone();
        std::thread::spawn(move || std::fs::read_to_string(stdout).unwrap())
    };
    let mut writer = std::fs::OpenOptions::new().read(true).write(true).open(&stdin).unwrap();
    api.exec("api", "cat", [stdin.to_str().unwrap(), stdout.to_str().unwrap(), ""], false, process_spec(&["cat"])).unwrap();
    api.start("api", "cat").unwrap();
    writer.write_all(b"through stdin\n").unwrap();
    drop(writer);
    api.close_stdin("api", "cat").unwrap();
    assert_eq!(api.wait("api", "cat").unwrap(), 0);
    assert_eq!(reader.join().unwrap(), "through stdin\n");
    api.delete_process("api", "cat").unwrap();

    // ResizePty: the exec's terminal reports the new size.
    let tty_out = dir.join("tty-stdout");
    make_fifo(&tty_out);
    let reader = {
        let tty_out = tty_out.clone();
        std::thread::spawn(move || std::fs::read_to_string(tty_out).unwrap())
    };
    api.exec("api", "size", ["", tty_out.to_str().unwrap(), ""], true, process_spec(&["sh", "-c", "sleep 0.5; stty size"])).unwrap();
    api.start("api", "size").unwrap();
    api.resize_pty("api", "size", 123, 45).unwrap();
    assert_eq!(api.wait("api", "size").unwrap(), 0);
    assert_eq!(reader.join().unwrap().trim(), "45 123");
    api.delete_process("api", "size").unwrap();

    // Output keeps flowing to a client's fifo while containerd restarts.
    let ticks = dir.join("ticks");
    make_fifo(&ticks);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    {
        let ticks = ticks.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(std::fs::File::open(ticks).unwrap()).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    api.exec("api", "ticker", ["", ticks.to_str().unwrap(), ""], false, process_spec(&["sh", "-c", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done"])).unwrap();
    api.start("api", "ticker").unwrap();
    rx.recv_timeout(Duration::from_secs(5)).expect("ticks before the restart");
    c.stop();
    std::thread::sleep(Duration::from_millis(500));
    c.restart();
    while rx.try_recv().is_ok() {}
    let after = rx.recv_timeout(Duration::from_secs(5)).expect("ticks after the restart");
    assert!(after.starts_with("tick "), "{after}");
    let api = TasksApi::connect(&c.socket(), &c.namespace);
    api.resize_pty("api", "ticker", 10, 10).unwrap();
    c.remove("api");
    c.assert_no_leftovers();
}

/// Containers of one group share a shim; deleting one leaves the other untouched, and the shim exits
/// when the last one goes (after refusing containerd's Shutdown while one remained).
fn grouping(version: Version) {
    let c = Containerd::start(version, "group");
    for id in ["first", "second"] {
        c.track(id);
        let cgroup = c.cgroup_flag(id);
        c.ctr(&["run", "--runtime", RUNTIME, "-d", &cgroup[0], &cgroup[1], "--annotation", "io.containerd.runc.v2.group=pod", image::BUSYBOX, id, "sleep", "1000"]).ok();
    }
    let shims = leaks::shim_processes(&c);
    assert_eq!(shims.len(), 1, "one shim for the group: {shims:?}");
    c.remove("first");
    assert_eq!(c.task_status("second").as_deref(), Some("RUNNING"));
    assert_eq!(leaks::shim_processes(&c).len(), 1, "the shim serves the remaining container");
    let still = c.ctr(&["task", "exec", "--exec-id", "alive", "second", "echo", "still here"]).ok();
    assert_eq!(still.stdout, "still here\n");
    c.remove("second");
    c.assert_no_leftovers();
}

macro_rules! for_versions {
    ($($check:ident),*) => {
        mod containerd_1_6 { use super::*; $( #[test] fn $check() { super::$check(Version::V1_6) } )* }
        mod containerd_2_1 { use super::*; $( #[test] fn $check() { super::$check(Version::V2_1) } )* }
    };
}

for_versions!(exec, terminals, control, oom, stdio_forms, grpc_api, grouping);
