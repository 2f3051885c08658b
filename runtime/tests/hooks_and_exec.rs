//! Hooks (all six, their state, timeouts and failures) and exec into a running container. Run as root.

mod common;

use std::fs;

use common::{status_field, Bundle};
use serde_json::json;

/// A hook script that appends its phase and the state it read to a log on the host.
fn hook(b: &Bundle, phase: &str, log: &std::path::Path) -> serde_json::Value {
    let script = b.dir.join(format!("hook-{phase}.sh"));
    fs::write(&script, format!("#!/bin/sh\necho \"{phase} $(cat)\" >> {}\n", log.display())).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&script).status().unwrap();
    json!({"path": script, "args": [script, phase]})
}

#[test]
fn all_hooks_run_in_order_with_the_state() {
    let mut b = Bundle::new("hooks");
    let log = b.dir.join("hooks.log");
    // createContainer runs in the container's namespaces before pivot_root (host paths still
    // visible); startContainer runs inside the container, so its script and log live in the rootfs.
    let inside = b.rootfs().join("hook-start.sh");
    fs::write(&inside, "#!/bin/sh\necho \"startContainer $(cat)\" >> /hooks-inside.log\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&inside).status().unwrap();
    b.spec["hooks"] = json!({
        "prestart": [hook(&b, "prestart", &log)],
        "createRuntime": [hook(&b, "createRuntime", &log)],
        "createContainer": [hook(&b, "createContainer", &log)],
        "startContainer": [{"path": "/hook-start.sh"}],
        "poststart": [hook(&b, "poststart", &log)],
        "poststop": [hook(&b, "poststop", &log)]
    });
    let (code, _, err) = b.sh("true");
    assert_eq!(code, 0, "{err}");
    let text = fs::read_to_string(&log).unwrap();
    let phases: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(phases, ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]);
    let state = |phase: &str| -> serde_json::Value {
        serde_json::from_str(text.lines().find(|l| l.starts_with(phase)).unwrap().split_once(' ').unwrap().1).unwrap()
    };
    assert_eq!(state("createRuntime")["status"], "creating");
    assert_eq!(state("createRuntime")["id"], b.id.as_str());
    assert!(state("createRuntime")["pid"].as_u64().unwrap() > 0);
    assert_eq!(state("createContainer")["status"], "creating");
    assert_eq!(state("poststart")["status"], "running");
    assert_eq!(state("poststop")["status"], "stopped");
    let inside_log = fs::read_to_string(b.rootfs().join("hooks-inside.log")).unwrap();
    let start: serde_json::Value = serde_json::from_str(inside_log.trim().split_once(' ').unwrap().1).unwrap();
    assert_eq!(start["status"], "created");
    b.assert_clean();
}

#[test]
fn failing_and_hanging_hooks_stop_the_container_cleanly() {
    for (script, timeout, expected) in [("exit 3", None, "exited with status 3"), ("sleep 30", Some(1), "timed out after 1s")] {
        let mut b = Bundle::new("badhook");
        let path = b.dir.join("bad.sh");
        fs::write(&path, format!("#!/bin/sh\necho complaining >&2\n{script}\n")).unwrap();
        std::process::Command::new("chmod").arg("+x").arg(&path).status().unwrap();
        let mut hook = json!({"path": path});
        if let Some(t) = timeout {
            hook["timeout"] = json!(t);
        }
        b.spec["hooks"] = json!({"createRuntime": [hook]});
        let (code, _, err) = b.sh("true");
        assert_ne!(code, 0);
        assert!(err.contains("hooks.createRuntime[0]") && err.contains(expected), "{err}");
        b.assert_clean();
    }
}

#[test]
fn exec_joins_the_container_with_its_own_identity() {
    let mut b = Bundle::new("exec");
    b.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    });
    let init = b.start_detached(&["sleep", "30"]);
    // Flags before the container id, as runc takes them (what follows the id is the command).
    let inside = |args: &[&str]| {
        let (flags, command): (Vec<&str>, Vec<&str>) = match args.first() {
            Some(&"--process") => (args.to_vec(), vec![]),
            _ => (vec![], args.to_vec()),
        };
        let out = b.runc(&[&["exec"][..], &flags, &[&b.id], &command].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for ns in ["pid", "net", "mnt", "uts", "ipc"] {
        let theirs = fs::read_link(format!("/proc/{init}/ns/{ns}")).unwrap().display().to_string();
        assert_eq!(inside(&["readlink", &format!("/proc/self/ns/{ns}")]).trim(), theirs, "{ns}");
    }
    assert_eq!(inside(&["hostname"]).trim(), "myshim-test");
    let cgroup = inside(&["cat", "/proc/self/cgroup"]);
    assert!(cgroup.lines().filter(|l| l.contains(":memory:")).all(|l| l.ends_with(&b.id)), "{cgroup}");
    // The container's seccomp profile (recorded at create) confines exec'd processes too.
    let confined = inside(&["sh", "-c", "mkdir /tmp/exec-dir 2>&1; grep Seccomp: /proc/self/status"]);
    assert!(confined.contains("Permission denied") && confined.trim_end().ends_with('2'), "{confined}");

    // An exec process with its own user, capabilities and limits.
    let process = json!({
        "args": ["sh", "-c", "id -u; grep CapBnd /proc/self/status; ulimit -n; cat /proc/self/status | grep NoNewPrivs"],
        "cwd": "/tmp",
        "user": {"uid": 1000, "gid": 1000},
        "env": ["PATH=/bin:/usr/bin"],
        "capabilities": {"bounding": ["CAP_KILL"], "effective": [], "permitted": []},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 64, "soft": 64}],
        "noNewPrivileges": true
    });
    let file = b.dir.join("process.json");
    fs::write(&file, process.to_string()).unwrap();
    let out = inside(&["--process", file.to_str().unwrap()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000");
    assert!(lines[1].ends_with("0000000000000020"), "{}", lines[1]);
    assert_eq!(lines[2], "64");
    assert!(lines[3].ends_with('1'));

    // A detached exec gets a pid file; the process runs in the container's pid namespace.
    let pid_file = b.dir.join("exec.pid");
    assert!(b.runc_detached(&["exec", "--detach", "--pid-file", pid_file.to_str().unwrap(), &b.id, "sleep", "20"]));
    let pid: u32 = fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert_ne!(status_field(pid, "NSpid").split_whitespace().last(), Some(pid.to_string().as_str()));
    let ps: Vec<u32> = serde_json::from_slice(&b.runc(&["ps", "--format", "json", &b.id]).stdout).unwrap();
    assert!(ps.contains(&pid) && ps.contains(&init), "{ps:?}");
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    b.assert_clean();
}

/// A hook is fed its state and drained of its output at the same time: one that reads nothing and
/// prints without end finishes (in the caller and in the init alike), and one that hangs without
/// reading a large state is stopped at its timeout, not when it gives up.
#[test]
fn hooks_that_neither_read_nor_stay_quiet_cannot_stall_create() {
    let big = "x".repeat(1 << 20);
    let chatty = "#!/bin/sh\nhead -c 2000000 /dev/zero | tr '\\0' y\nhead -c 100000 /dev/zero | tr '\\0' z >&2\nexit 0\n";
    for phase in ["createRuntime", "createContainer"] {
        let mut b = Bundle::new("chattyhook");
        b.spec["annotations"] = json!({"large": big});
        let path = b.dir.join("chatty.sh");
        fs::write(&path, chatty).unwrap();
        std::process::Command::new("chmod").arg("+x").arg(&path).status().unwrap();
        b.spec["hooks"] = json!({phase: [{"path": path, "timeout": 20}]});
        let started = std::time::Instant::now();
        let (code, _, err) = b.sh("true");
        assert_eq!(code, 0, "{phase}: {err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "{phase}: took {:?}", started.elapsed());
        b.assert_clean();
    }
    let mut b = Bundle::new("deafhook");
    b.spec["annotations"] = json!({"large": big});
    let path = b.dir.join("deaf.sh");
    fs::write(&path, "#!/bin/sh\nsleep 30\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    b.spec["hooks"] = json!({"createRuntime": [{"path": path, "timeout": 2}]});
    let started = std::time::Instant::now();
    let (code, _, err) = b.sh("true");
    assert_ne!(code, 0);
    assert!(err.contains("timed out after 2s"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "stopped after {:?}", started.elapsed());
    b.assert_clean();
}

/// Hooks without an `env` of their own get the runtime's environment (the process's, for
/// startContainer), as with runc.
#[test]
fn hooks_without_env_inherit_it() {
    let mut b = Bundle::new("hookenv");
    let log = b.dir.join("env.log");
    let script = b.dir.join("env.sh");
    fs::write(&script, format!("#!/bin/sh\necho \"$1 ${{MYSHIM_HOOK_PROBE:-unset}}\" >> {}\n", log.display())).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&script).status().unwrap();
    let inside = b.rootfs().join("env-hook.sh");
    fs::write(&inside, "#!/bin/sh\necho \"startContainer ${CONTAINER_VAR:-unset}\" > /env-inside.log\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&inside).status().unwrap();
    b.spec["process"]["env"].as_array_mut().unwrap().push(json!("CONTAINER_VAR=from-the-process"));
    b.spec["hooks"] = json!({
        "prestart": [{"path": script, "args": [script, "prestart"]}],
        "createContainer": [{"path": script, "args": [script, "createContainer"]}],
        "poststop": [{"path": script, "args": [script, "poststop"]}],
        "startContainer": [{"path": "/env-hook.sh"}]
    });
    b.write_spec();
    let out = std::process::Command::new(common::RUNC)
        .args(common::driver_flag())
        .arg("--root")
        .arg(&b.root)
        .args(["run", "--bundle", b.dir.to_str().unwrap(), &b.id])
        .env("MYSHIM_HOOK_PROBE", "from-the-runtime")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().collect::<Vec<_>>(), ["prestart from-the-runtime", "createContainer from-the-runtime", "poststop from-the-runtime"]);
    assert_eq!(fs::read_to_string(b.rootfs().join("env-inside.log")).unwrap().trim(), "startContainer from-the-process");
    b.assert_clean();
}

/// runc's exec flags: a variable given for the exec replaces the spec's (also in a process file, which
/// stands alone), `--cap` adds to the bounding, effective and permitted sets only (never the
/// inheritable one, CVE-2022-29162), and `--user`, `--additional-gids`, `--cwd`, `--no-new-privs`,
/// `--cgroup` take effect.
#[test]
fn exec_flags_as_runc() {
    let mut b = Bundle::new("execflags");
    b.spec["process"]["env"].as_array_mut().unwrap().push(json!("WHO=spec"));
    b.spec["process"]["noNewPrivileges"] = json!(false);
    b.start_detached(&["sleep", "30"]);
    let run = |args: &[&str]| {
        let out = b.runc(&[&["exec"][..], args].concat());
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(&["--env", "WHO=exec", &b.id, "sh", "-c", "echo $WHO"]).trim(), "exec");
    let process = json!({"args": ["sh", "-c", "echo ${WHO:-unset}"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin", "WHO=file", "WHO=file-last"]});
    let file = b.dir.join("process.json");
    fs::write(&file, process.to_string()).unwrap();
    assert_eq!(run(&["--process", file.to_str().unwrap(), &b.id]).trim(), "file-last");

    let caps = run(&["--cap", "CAP_SYS_ADMIN", &b.id, "grep", "-E", "^Cap(Inh|Eff|Bnd)", "/proc/self/status"]);
    let field = |name: &str| u64::from_str_radix(caps.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim(), 16).unwrap();
    let sys_admin = 1u64 << 21;
    assert!(field("CapEff:") & sys_admin != 0 && field("CapBnd:") & sys_admin != 0, "{caps}");
    assert_eq!(field("CapInh:"), 0, "nothing inheritable: {caps}");

    let identity = run(&["--user", "1000:1000", "--additional-gids", "44", "--additional-gids", "55", "--cwd", "/tmp", "--no-new-privs", &b.id, "sh", "-c", "id -u; id -G; pwd; grep NoNewPrivs /proc/self/status"]);
    let lines: Vec<&str> = identity.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["1000", "44", "55"]);
    assert_eq!(lines[2], "/tmp");
    assert!(lines[3].ends_with('1'), "{identity}");

    // --cgroup: an existing sub-cgroup of the container's (in each of its hierarchies).
    let subs: Vec<std::path::PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| if common::pure_v2() { std::path::PathBuf::from("/sys/fs/cgroup") } else { h.path() }.join(b.cgroup_relative()))
        .filter(|dir| dir.is_dir())
        .map(|dir| dir.join("sub"))
        .collect();
    for sub in &subs {
        fs::create_dir_all(sub).unwrap();
    }
    let cgroup = run(&["--cgroup", "sub", &b.id, "cat", "/proc/self/cgroup"]);
    for sub in &subs {
        let _ = fs::remove_dir(sub);
    }
    assert!(!cgroup.is_empty() && cgroup.lines().all(|l| l.ends_with("/sub")), "{cgroup}");
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    b.assert_clean();
}
