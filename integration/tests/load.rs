//! Load through containerd 2.1: many containers at once, many execs into one container, and
//! containers that misbehave (fork bomb, SIGTERM ignored, orphans, an output flood).
//!
//! The concurrent rounds and the exec count are small enough for CI by default; the long runs
//! documented in the README raise them with `MYSHIM_LOAD_ROUNDS` and `MYSHIM_LOAD_EXECS`.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use myshim_integration::api::{make_fifo, TasksApi};
use myshim_integration::containerd::RUNTIME;
use myshim_integration::{image, leaks, paths, procfs, Containerd, Version};

fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn process(args: &[&str]) -> serde_json::Value {
    serde_json::json!({"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin:/sbin:/usr/bin"]})
}

/// The one shim daemon serving `id`'s group.
fn shim_of(c: &Containerd) -> u32 {
    let shims = leaks::shim_processes(c);
    assert_eq!(shims.len(), 1, "{shims:?}");
    shims[0].0
}

/// 100 `ctr run --rm` at once, torn down, repeated: every one exits 0 with its output, nothing is left.
#[test]
fn hundred_containers_at_once() {
    let c = Containerd::start(Version::V2_1, "hundred");
    let rounds = setting("MYSHIM_LOAD_ROUNDS", 2);
    let started = Instant::now();
    for round in 0..rounds {
        let ids: Vec<String> = (0..100).map(|i| format!("r{round}-c{i}")).collect();
        let runs: Vec<_> = ids
            .iter()
            .map(|id| {
                c.track(id);
                c.ctr_command(&["run", "--runtime", RUNTIME, "--rm", image::BUSYBOX, id, "echo", id]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
            })
            .collect();
        let failures: Vec<String> = runs
            .into_iter()
            .zip(&ids)
            .filter_map(|(run, id)| {
                let out = run.wait_with_output().unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                (!out.status.success() || stdout.trim() != id).then(|| format!("{id}: {:?} {stdout:?} {}", out.status, String::from_utf8_lossy(&out.stderr)))
            })
            .collect();
        assert!(failures.is_empty(), "round {round}: {} failures: {failures:#?}", failures.len());
        c.assert_no_leftovers();
    }
    eprintln!("{rounds} rounds of 100 concurrent containers in {:?}", started.elapsed());
}

/// 1,000 sequential `exec true` into one container: no zombies, and the shim's descriptors and memory
/// stay where they were after the first hundred (which warm up allocator and runtime).
#[test]
fn thousand_execs() {
    let c = Containerd::start(Version::V2_1, "execs");
    c.run_detached("target", &["sleep", "100000"]);
    let shim = shim_of(&c);
    let api = TasksApi::connect(&c.socket(), &c.namespace);
    let total = setting("MYSHIM_LOAD_EXECS", 1000);
    let exec = |n: usize| {
        let id = format!("e{n}");
        api.exec("target", &id, ["", "", ""], false, process(&["true"])).unwrap();
        api.start("target", &id).unwrap();
        assert_eq!(api.wait("target", &id).unwrap(), 0);
        api.delete_process("target", &id).unwrap();
    };
    let (fds_start, rss_start) = procfs::usage(shim);
    let warm_up = total.min(100);
    for n in 0..warm_up {
        exec(n);
    }
    let (fds_warm, rss_warm) = procfs::usage(shim);
    let started = Instant::now();
    for n in warm_up..total {
        exec(n);
    }
    let elapsed = started.elapsed();
    let (fds_end, rss_end) = procfs::usage(shim);
    eprintln!(
        "{total} execs: shim fds {fds_start} → {fds_warm} (after {warm_up}) → {fds_end}; RSS {rss_start} → {rss_warm} → {rss_end} KiB; {:.1} ms per exec after warm-up",
        elapsed.as_secs_f64() * 1000.0 / (total - warm_up).max(1) as f64
    );
    assert_eq!(fds_end, fds_warm, "descriptors leak");
    assert!(rss_end <= rss_warm + 512, "memory grows: {rss_warm} → {rss_end} KiB");
    assert!(procfs::zombie_children(shim).is_empty(), "zombies: {:?}", procfs::zombie_children(shim));
    c.remove("target");
    c.assert_no_leftovers();
}

/// A fork bomb under a pids limit stays inside it; the node and a bystander are unaffected; kill
/// --all ends it.
#[test]
fn fork_bomb_under_a_pids_limit() {
    let c = Containerd::start(Version::V2_1, "forkbomb");
    c.run_detached("bystander", &["sleep", "100000"]);
    c.run_detached("bomb", &["sleep", "100000"]);
    let api = TasksApi::connect(&c.socket(), &c.namespace);
    api.update("bomb", serde_json::json!({"pids": {"limit": 64}})).unwrap();
    api.exec("bomb", "bomb", ["", "", ""], false, process(&["sh", "-c", "f() { f | f & }; f; sleep 100000"])).unwrap();
    api.start("bomb", "bomb").unwrap();
    let pids_current = format!("/sys/fs/cgroup/pids/{}/bomb/pids.current", c.namespace);
    let events = format!("/sys/fs/cgroup/pids/{}/bomb/pids.events", c.namespace);
    wait_for(|| std::fs::read_to_string(&events).is_ok_and(|e| !e.contains("max 0")), "forks refused at the limit");
    let current: u32 = std::fs::read_to_string(&pids_current).unwrap().trim().parse().unwrap();
    assert!(current <= 64, "pids.current {current}");
    let out = c.ctr(&["task", "exec", "--exec-id", "probe", "bystander", "echo", "fine"]).ok();
    assert_eq!(out.stdout, "fine\n");
    c.ctr(&["task", "kill", "--all", "-s", "KILL", "bomb"]).ok();
    wait_for(|| c.task_status("bomb").as_deref() == Some("STOPPED"), "bomb stopped");
    c.remove("bomb");
    c.remove("bystander");
    c.assert_no_leftovers();
}

/// A process that ignores SIGTERM keeps running after `ctr task kill`; SIGKILL ends it with 137.
#[test]
fn sigterm_ignored() {
    let c = Containerd::start(Version::V2_1, "stubborn");
    c.run_detached("stubborn", &["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]);
    c.ctr(&["task", "kill", "stubborn"]).ok();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.task_status("stubborn").as_deref(), Some("RUNNING"));
    let api = TasksApi::connect(&c.socket(), &c.namespace);
    api.kill("stubborn", "", 9).unwrap();
    assert_eq!(api.wait("stubborn", "").unwrap(), 137);
    c.remove("stubborn");
    c.assert_no_leftovers();
}

/// In a container sharing the host's pid namespace, orphaned grandchildren are re-parented to the shim
/// (a child subreaper), which reaps them without disturbing the exit statuses it reports.
#[test]
fn orphans_are_reaped() {
    let c = Containerd::start(Version::V2_1, "orphans");
    c.track("hostpid");
    let host_pid_ns = format!("pid:/proc/{}/ns/pid", std::process::id());
    c.ctr(&["run", "--runtime", RUNTIME, "-d", "--with-ns", &host_pid_ns, image::BUSYBOX, "hostpid", "sleep", "100000"]).ok();
    let shim = shim_of(&c);
    let api = TasksApi::connect(&c.socket(), &c.namespace);
    // An orphan is re-parented to the shim.
    api.exec("hostpid", "parent", ["", "", ""], false, process(&["sh", "-c", "(sleep 1.5 &); exit 0"])).unwrap();
    api.start("hostpid", "parent").unwrap();
    assert_eq!(api.wait("hostpid", "parent").unwrap(), 0);
    api.delete_process("hostpid", "parent").unwrap();
    let orphans: Vec<u32> = leaks::container_processes(&c.namespace)
        .into_iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with("sleep\u{0}1.5")))
        .collect();
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", orphans[0])).unwrap();
    assert!(status.lines().any(|l| l == format!("PPid:\t{shim}")), "the orphan's parent is the shim: {status}");
    for n in 0..20 {
        let id = format!("orphans{n}");
        let script = format!("(sleep 0.2 &); (sleep 0.3 &); (sh -c 'sleep 0.1 &' &); exit {}", n % 3);
        api.exec("hostpid", &id, ["", "", ""], false, process(&["sh", "-c", &script])).unwrap();
        api.start("hostpid", &id).unwrap();
        assert_eq!(api.wait("hostpid", &id).unwrap(), (n % 3) as u32, "exit status of {id}");
        api.delete_process("hostpid", &id).unwrap();
    }
    // Every orphan has exited by now; none is left unreaped.
    std::thread::sleep(Duration::from_millis(1600));
    assert!(procfs::zombie_children(shim).is_empty(), "zombies: {:?}", procfs::zombie_children(shim));
    c.remove("hostpid");
    c.assert_no_leftovers();
}

/// A process writing as fast as it can while its reader reads slowly: the shim's memory stays bounded
/// (the pipe applies back-pressure), and everything read arrives intact. Then the reader goes away with
/// the fifo full: deleting the process does not wait for output nobody will read.
#[test]
fn output_flood_with_a_slow_reader() {
    let c = Containerd::start(Version::V2_1, "flood");
    let dir = paths::scratch("flood");
    c.run_detached("flood", &["sleep", "100000"]);
    let shim = shim_of(&c);
    let (_, rss_before) = procfs::usage(shim);
    let stdout = dir.join("stdout");
    make_fifo(&stdout);
    let reader = {
        let stdout = stdout.clone();
        std::thread::spawn(move || {
            let mut fifo = std::fs::File::open(stdout).unwrap();
            let mut buffer = [0u8; 4096];
            let (mut total, mut intact) = (0usize, true);
            let deadline = Instant::now() + Duration::from_secs(4);
            while Instant::now() < deadline {
                let n = fifo.read(&mut buffer).unwrap();
                intact &= buffer[..n].iter().all(|&b| b == b'y' || b == b'\n');
                total += n;
                std::thread::sleep(Duration::from_millis(5));
            }
            (fifo, total, intact)
        })
    };
    let api = TasksApi::connect(&c.socket(), &c.namespace);
    api.exec("flood", "yes", ["", stdout.to_str().unwrap(), ""], false, process(&["yes"])).unwrap();
    api.start("flood", "yes").unwrap();
    let mut peak = 0;
    while !reader.is_finished() {
        peak = peak.max(procfs::usage(shim).1);
        std::thread::sleep(Duration::from_millis(100));
    }
    let (fifo, total, intact) = reader.join().unwrap();
    eprintln!("flood: read {total} bytes slowly; shim RSS {rss_before} KiB before, {peak} KiB at most");
    assert!(intact, "the output arrived garbled");
    assert!(total > 100_000, "the reader got {total} bytes");
    assert!(peak < rss_before + 4096, "shim memory grew from {rss_before} to {peak} KiB under a flood");
    drop(fifo);
    api.kill("flood", "yes", 9).unwrap();
    assert_eq!(api.wait("flood", "yes").unwrap(), 137);
    let deleting = Instant::now();
    api.delete_process("flood", "yes").unwrap();
    eprintln!("flood: delete with nobody reading took {:?}", deleting.elapsed());
    c.remove("flood");
    c.assert_no_leftovers();
}
