//! `myshim-runc` as runc's command line: the lifecycle verbs, state documents, exit statuses, logs,
//! and bad specs that leave nothing behind. Run as root.

mod common;

use std::fs;

use common::{Bundle, SpecCase};
use serde_json::{json, Value};

fn state(b: &Bundle) -> Value {
    serde_json::from_slice(&b.runc(&["state", &b.id]).stdout).unwrap()
}

#[test]
fn create_start_state_pause_kill_delete() {
    let mut b = Bundle::new("lifecycle");
    b.set_args(&["sleep", "30"]).write_spec();
    let pid_file = b.dir.join("init.pid");
    assert!(b.runc_detached(&["create", "--bundle", b.dir.to_str().unwrap(), "--pid-file", pid_file.to_str().unwrap(), &b.id]));
    let created = state(&b);
    assert_eq!(created["status"], "created");
    assert_eq!(created["pid"].as_u64().unwrap().to_string(), fs::read_to_string(&pid_file).unwrap());
    assert_eq!(created["bundle"], b.dir.to_str().unwrap());
    assert!(created["created"].as_str().unwrap().ends_with('Z'), "RFC 3339: {created}");
    assert!(b.runc(&["start", &b.id]).status.success());
    assert_eq!(state(&b)["status"], "running");
    assert!(b.runc(&["pause", &b.id]).status.success());
    assert_eq!(state(&b)["status"], "paused");
    assert!(b.runc(&["resume", &b.id]).status.success());
    assert_eq!(state(&b)["status"], "running");
    let refused = b.runc(&["delete", &b.id]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("not stopped"));
    assert!(b.runc(&["kill", &b.id, "KILL"]).status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state(&b)["status"] != "stopped" {
        assert!(std::time::Instant::now() < deadline, "still {}", state(&b));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(state(&b)["pid"], 0);
    assert!(b.runc(&["delete", &b.id]).status.success());
    assert!(!b.runc(&["state", &b.id]).status.success());
    b.assert_clean();
}

#[test]
fn run_returns_the_exit_status() {
    let mut b = Bundle::new("status");
    let (code, out, _) = b.sh("echo out; exit 42");
    assert_eq!((code, out.as_str()), (42, "out\n"));
    // Killed from outside: 128 + SIGKILL.
    b.set_args(&["sleep", "30"]).write_spec();
    let mut run = std::process::Command::new(common::RUNC)
        .args(common::driver_flag())
        .arg("--root")
        .arg(&b.root)
        .args(["run", "--bundle", b.dir.to_str().unwrap(), &b.id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.runc(&["state", &b.id]).status.success() || state(&b)["status"] != "running" {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(b.runc(&["kill", &b.id, "9"]).status.success());
    assert_eq!(run.wait().unwrap().code(), Some(137));
    b.assert_clean();
}

#[test]
fn errors_are_logged_as_json_for_containerd() {
    let mut b = Bundle::new("jsonlog");
    b.set_args(&["/nope"]).write_spec();
    let log = b.dir.join("log.json");
    let out = b.runc(&["--log", log.to_str().unwrap(), "--log-format", "json", "run", "--bundle", b.dir.to_str().unwrap(), &b.id]);
    assert!(!out.status.success());
    let line: Value = serde_json::from_str(fs::read_to_string(&log).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("/nope"), "{line}");
    b.assert_clean();
}

#[test]
fn features_document() {
    let b = Bundle::new("features");
    let doc: Value = serde_json::from_slice(&b.runc(&["features"]).stdout).unwrap();
    assert_eq!(doc["ociVersionMax"], "1.2.0");
    assert!(doc["linux"]["namespaces"].as_array().unwrap().contains(&json!("user")));
    assert_eq!(doc["linux"]["seccomp"]["enabled"], true);
    assert_eq!(doc["linux"]["cgroup"]["systemd"], true);
    let options: Vec<&str> = doc["mountOptions"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for recursive in ["rro", "rrw", "rnosuid", "rnodev", "rnoexec", "rnoatime", "rnodiratime", "rrelatime", "rstrictatime", "rnosymfollow"] {
        assert!(options.contains(&recursive), "{recursive} in {options:?}");
    }
}

/// Whether this process's bounding set has CAP_SYS_RESOURCE (root on the development machines lacks it).
fn we_have_sys_resource() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).map(|v| u64::from_str_radix(v.trim(), 16).unwrap()).unwrap();
    bounding & (1 << 24) != 0
}

/// Everything up to the program is done by `create`, so a setup failure inside the container fails
/// `create` (as with runc), with the reason, and leaves nothing: here an rlimit the kernel refuses,
/// and every capability raised (capset fails where root lacks CAP_SYS_RESOURCE).
#[test]
fn setup_failures_fail_create() {
    let mut b = Bundle::new("badrlimit");
    b.spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}]);
    b.set_args(&["true"]).write_spec();
    let out = b.runc(&["create", "--bundle", b.dir.to_str().unwrap(), &b.id]);
    assert!(!out.status.success(), "create reported success for a container that cannot run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("process.rlimits"), "{out:?}");
    b.assert_clean();

    let every: Vec<String> = [
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE",
        "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN",
        "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    ]
    .iter()
    .map(|c| format!("CAP_{c}"))
    .collect();
    let mut b = Bundle::new("allcaps");
    b.spec["process"]["capabilities"] = json!({"bounding": every, "effective": every, "permitted": every});
    b.set_args(&["true"]).write_spec();
    if we_have_sys_resource() {
        // Created, the init holds the command's stdio until it is started or killed: run detached.
        assert!(b.runc_detached(&["create", "--bundle", b.dir.to_str().unwrap(), &b.id]));
        assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    } else {
        let out = b.runc(&["create", "--bundle", b.dir.to_str().unwrap(), &b.id]);
        assert!(!out.status.success(), "create reported success for a container whose capabilities cannot be set");
        assert!(String::from_utf8_lossy(&out.stderr).contains("process.capabilities"), "{out:?}");
    }
    b.assert_clean();
}

/// `--preserve-fds N`: descriptors 3 … 3+N-1 of the caller reach the program, for run and exec.
#[test]
fn preserved_descriptors_reach_the_program() {
    let mut b = Bundle::new("preserve");
    let (one, two) = (b.dir.join("one"), b.dir.join("two"));
    fs::write(&one, "first\n").unwrap();
    fs::write(&two, "second\n").unwrap();
    b.set_args(&["sh", "-c", "cat <&3; cat <&4; ls /proc/self/fd | wc -l"]).write_spec();
    let root = b.root.clone();
    let runc = |verb: &str, rest: &str| {
        let line = format!("exec 3<{} 4<{}; exec {} --root {} {verb} --preserve-fds 2 {rest}", one.display(), two.display(), common::RUNC, root.display());
        std::process::Command::new("sh").args(["-c", &line]).output().unwrap()
    };
    let out = runc("run", &format!("--bundle {} {}", b.dir.display(), b.id));
    assert!(out.status.success(), "{out:?}");
    // stdio, the two descriptors and the one ls opens for the directory: nothing else of the runtime.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first\nsecond\n6\n");
    b.assert_clean();
    b.start_detached(&["sleep", "30"]);
    let out = runc("exec", &format!("{} sh -c 'cat <&3; cat <&4'", b.id));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first\nsecond\n");
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    b.assert_clean();
}

/// Errors on stderr carry the word "error", as runc's do (tools look for it).
#[test]
fn errors_say_error() {
    let b = Bundle::new("errword");
    let out = b.runc(&["state", "no-such-container"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("error"), "{out:?}");
}

/// Bad specs fail with the field named, and leave no mount, cgroup, state or process.
#[test]
fn bad_specs_name_the_field_and_leave_nothing() {
    let cases: Vec<SpecCase> = vec![
        ("unknown namespace", Box::new(|b: &mut Bundle| b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "bogus"}))), "linux.namespaces[5].type"),
        ("invalid mount", Box::new(|b: &mut Bundle| b.spec["mounts"].as_array_mut().unwrap().push(json!({"destination": "rel", "type": "tmpfs"}))), "mounts[7].destination"),
        ("missing args", Box::new(|b: &mut Bundle| { b.spec["process"].as_object_mut().unwrap().remove("args"); }), "process.args"),
        ("escaping destination", Box::new(|b: &mut Bundle| {
            fs::remove_dir(b.rootfs().join("proc")).unwrap();
            std::os::unix::fs::symlink("/", b.rootfs().join("proc")).unwrap();
        }), "mount destination /proc"),
        ("malformed json", Box::new(|b: &mut Bundle| { b.spec["process"]["user"]["uid"] = json!("root"); }), "process.user.uid"),
    ];
    for (what, change, expected) in cases {
        let mut b = Bundle::new("badspec");
        change(&mut b);
        b.write_spec();
        let out = b.runc(&["create", "--bundle", b.dir.to_str().unwrap(), &b.id]);
        assert!(!out.status.success(), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{what}: {err}");
        b.assert_clean();
    }
}

/// runc's start reads the exec fifo to its end, which the init's execve closes: when start returns,
/// the program runs, so a signal sent right after start reaches the program and not the runtime's init.
#[test]
fn start_returns_once_the_program_runs() {
    let mut b = Bundle::new("startexec");
    b.set_args(&["sleep", "30"]).write_spec();
    for round in 0..5 {
        let id = format!("{}-{round}", b.id);
        assert!(b.runc_detached(&["create", "--bundle", b.dir.to_str().unwrap(), &id]));
        let pid = serde_json::from_slice::<Value>(&b.runc(&["state", &id]).stdout).unwrap()["pid"].as_u64().unwrap();
        assert!(b.runc(&["start", &id]).status.success());
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim(), "sleep", "round {round}: start returned before the program ran");
        assert!(b.runc(&["delete", "--force", &id]).status.success());
    }
    b.assert_clean();
}

/// `myshim-runc spec` writes runc's example bundle (the fields of `runc spec`'s), never over an
/// existing one, and `--rootless` maps root to the caller. The bundle runs: its ambient capabilities,
/// which it does not make inheritable, are skipped with a warning in the log, as runc does.
#[test]
fn spec_writes_runcs_bundle_and_it_runs() {
    let mut b = Bundle::new("spec");
    let generated = b.dir.join("generated");
    fs::create_dir_all(&generated).unwrap();
    assert!(b.runc(&["spec", "--bundle", generated.to_str().unwrap()]).status.success());
    let ours: Value = serde_json::from_slice(&fs::read(generated.join("config.json")).unwrap()).unwrap();
    let again = b.runc(&["spec", "--bundle", generated.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("exists"), "{again:?}");

    // The same document as runc's, but for the runtime's name and spec version.
    let theirs_dir = b.dir.join("runc-spec");
    fs::create_dir_all(&theirs_dir).unwrap();
    assert!(std::process::Command::new("runc").arg("spec").current_dir(&theirs_dir).status().unwrap().success());
    let mut theirs: Value = serde_json::from_slice(&fs::read(theirs_dir.join("config.json")).unwrap()).unwrap();
    let mut comparable = ours.clone();
    for doc in [&mut theirs, &mut comparable] {
        doc["hostname"] = json!("");
        doc["ociVersion"] = json!("");
    }
    assert_eq!(comparable, theirs);

    let rootless = b.dir.join("rootless");
    fs::create_dir_all(&rootless).unwrap();
    assert!(b.runc(&["spec", "--rootless", "--bundle", rootless.to_str().unwrap()]).status.success());
    let rootless: Value = serde_json::from_slice(&fs::read(rootless.join("config.json")).unwrap()).unwrap();
    assert!(rootless["linux"]["namespaces"].as_array().unwrap().contains(&json!({"type": "user"})));
    assert_eq!(rootless["linux"]["uidMappings"][0]["hostID"], json!(nix::unistd::geteuid().as_raw()));

    // Run it (without a terminal, in this test's rootfs and cgroup).
    let cgroups_path = b.spec["linux"]["cgroupsPath"].clone();
    b.spec = ours;
    b.spec["process"]["terminal"] = json!(false);
    b.spec["root"]["path"] = json!(b.rootfs());
    b.spec["linux"]["cgroupsPath"] = cgroups_path;
    b.set_args(&["sh", "-c", "echo ran"]).write_spec();
    let log = b.dir.join("log.json");
    let out = b.runc(&["--log", log.to_str().unwrap(), "--log-format", "json", "run", "--bundle", b.dir.to_str().unwrap(), &b.id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    let warnings: Vec<Value> = fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        warnings.iter().any(|w| w["level"] == "warning" && w["msg"].as_str().unwrap().contains("process.capabilities.ambient")),
        "the skipped ambient capabilities in the log: {warnings:?}"
    );
    b.assert_clean();
}

/// `--version` and `--help` as tools call them (Podman's `info` reads the version's first line),
/// and `list` in runc's forms: a table, JSON with the owner, only the ids.
#[test]
fn version_help_and_list() {
    let b = Bundle::new("list-empty");
    let version = b.runc(&["--version"]);
    assert!(version.status.success(), "{version:?}");
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(text.starts_with("myshim-runc version ") && text.lines().any(|l| l.starts_with("spec: 1.")), "{text}");
    let help = b.runc(&["--help"]);
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("checkpoint"), "{help:?}");
    // A verb's --help succeeds (Podman asks `checkpoint --help` whether the runtime can checkpoint).
    let verb_help = b.runc(&["checkpoint", "--help"]);
    assert!(verb_help.status.success() && String::from_utf8_lossy(&verb_help.stdout).contains("CRIU"), "{verb_help:?}");
    // A root that does not exist yet lists nothing.
    let empty = b.runc(&["list", "--format", "json"]);
    assert!(empty.status.success(), "{empty:?}");
    assert_eq!(serde_json::from_slice::<Value>(&empty.stdout).unwrap(), json!([]));

    let mut b = Bundle::new("list");
    b.start_detached(&["sleep", "30"]);
    let listed: Value = serde_json::from_slice(&b.runc(&["list", "-f", "json"]).stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!((&listed[0]["id"], &listed[0]["status"], &listed[0]["owner"]), (&json!(b.id), &json!("running"), &json!("root")));
    assert_eq!(listed[0]["bundle"], json!(b.dir.to_str().unwrap()));
    let table = String::from_utf8_lossy(&b.runc(&["list"]).stdout).into_owned();
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"], "{table}");
    assert_eq!((rows[1][0], rows[1][2], rows[1][5]), (b.id.as_str(), "running", "root"), "{table}");
    assert_eq!(String::from_utf8_lossy(&b.runc(&["list", "-q"]).stdout), format!("{}\n", b.id));
    let bad = b.runc(&["list", "--format", "yaml"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--format"), "{bad:?}");
    assert!(b.runc_detached(&["delete", "--force", &b.id]));
    b.assert_clean();
}

/// `events`: `--stats` prints one event in runc's shape (nanoseconds of CPU, the memory limit, the
/// pids count); the stream prints stats every interval and an `oom` event when the kernel kills a
/// process of the container, and ends when the container stops. A stopped container is an error.
#[test]
fn events_report_stats_and_oom_kills() {
    let mut b = Bundle::new("events");
    b.spec["linux"]["resources"]["memory"] = json!({"limit": 33554432, "swap": 33554432});
    b.spec["linux"]["resources"]["pids"] = json!({"limit": 40});
    // The hog starts once the test has seen the stream running (its first stats event).
    b.start_detached(&["sh", "-c", "until [ -e /tmp/go ]; do sleep 0.1; done; (tail /dev/zero); sleep 2"]);
    let once = b.runc(&["events", "--stats", &b.id]);
    assert!(once.status.success(), "{once:?}");
    let event: Value = serde_json::from_slice(&once.stdout).unwrap();
    assert_eq!((&event["type"], &event["id"]), (&json!("stats"), &json!(b.id)));
    let data = &event["data"];
    assert_eq!(data["memory"]["usage"]["limit"], json!(33554432), "{data}");
    assert!(data["memory"]["usage"]["usage"].as_u64().unwrap() > 0, "{data}");
    assert_eq!(data["pids"]["limit"], json!(40), "{data}");
    assert!(data["pids"]["current"].as_u64().unwrap() >= 1, "{data}");
    assert!(data["cpu"]["usage"]["total"].as_u64().unwrap() > 0, "{data}");

    // The stream, until the container has stopped (killed after 60 s if it does not end).
    let mut stream = std::process::Command::new(common::RUNC)
        .args(common::driver_flag())
        .arg("--root")
        .arg(&b.root)
        .args(["events", "--interval", "500ms", &b.id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let pid = nix::unistd::Pid::from_raw(stream.id() as i32);
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(std::time::Duration::from_secs(60)).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stream.stdout.take().unwrap()));
    let first = lines.next().expect("a first event").unwrap();
    assert!(b.runc(&["exec", &b.id, "touch", "/tmp/go"]).status.success());
    let mut events: Vec<Value> = vec![serde_json::from_str(&first).unwrap()];
    events.extend(lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()));
    let status = stream.wait().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(status.success(), "events ended with {status:?} (killed after 60 s?): {types:?}");
    // (v1 may notify more than once for one kill, as runc reports it too.)
    assert!(types.contains(&"oom"), "the OOM kill: {types:?}");
    assert!(types.iter().filter(|t| **t == "stats").count() >= 3, "stats every 500 ms for 2 s: {types:?}");

    let stopped = b.runc(&["events", "--stats", &b.id]);
    assert!(!stopped.status.success() && String::from_utf8_lossy(&stopped.stderr).contains("is not running"), "{stopped:?}");
    assert!(b.runc(&["delete", &b.id]).status.success());
    b.assert_clean();
}

/// `update` with runc's flags for single resources (sizes with units), refused together with
/// `--resources`, and Intel RDT refused by name.
#[test]
fn update_takes_runcs_flags() {
    let mut b = Bundle::new("update-flags");
    b.spec["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
    b.spec["linux"]["resources"]["pids"] = json!({"limit": 50});
    b.start_detached(&["sleep", "30"]);
    let out = b.runc(&["update", "--memory", "96m", "--pids-limit", "30", &b.id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read_to_string(b.memory_limit_file()).unwrap().trim(), (96u64 << 20).to_string());
    assert_eq!(fs::read_to_string(b.cgroup_dir("pids").join("pids.max")).unwrap().trim(), "30");
    let both = b.runc(&["update", "--resources", "-", "--memory", "1g", &b.id]);
    assert!(!both.status.success() && String::from_utf8_lossy(&both.stderr).contains("exclude"), "{both:?}");
    let rdt = b.runc(&["update", "--l3-cache-schema", "L3:0=f", &b.id]);
    assert!(!rdt.status.success() && String::from_utf8_lossy(&rdt.stderr).contains("Intel RDT"), "{rdt:?}");
    let bad = b.runc(&["update", "--memory", "lots", &b.id]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--memory"), "{bad:?}");
    assert_eq!(fs::read_to_string(b.memory_limit_file()).unwrap().trim(), (96u64 << 20).to_string(), "unchanged by the refused updates");
    assert!(b.runc_detached(&["delete", "--force", &b.id]));
    b.assert_clean();
}
