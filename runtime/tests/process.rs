//! The process's identity and confinement: capabilities, no_new_privs, rlimits, user and groups,
//! umask, OOM score, scheduling, I/O priority, LSM labels, seccomp, and a terminal through a console
//! socket. Run as root.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use common::Bundle;
use serde_json::json;

fn status_line(out: &str, field: &str) -> String {
    out.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_owned())).unwrap_or_default()
}

#[test]
fn capabilities_no_new_privs_rlimits_user_and_umask() {
    let mut b = Bundle::new("identity");
    b.spec["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "effective": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"]
    });
    b.spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}, {"type": "RLIMIT_NPROC", "hard": 100, "soft": 100}]);
    b.spec["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 63});
    b.spec["process"]["oomScoreAdj"] = json!(500);
    let (code, out, err) = b.sh("cat /proc/self/status; echo umask=$(umask); echo nofile=$(ulimit -Sn)/$(ulimit -Hn); echo id=$(id -u):$(id -g); echo oom=$(cat /proc/self/oom_score_adj)");
    assert_eq!(code, 0, "{err}");
    assert_eq!(status_line(&out, "CapBnd"), "0000000000000421");
    assert_eq!(status_line(&out, "CapEff"), "0000000000000400", "an unprivileged user keeps only its ambient set");
    assert_eq!(status_line(&out, "CapPrm"), "0000000000000400");
    assert_eq!(status_line(&out, "CapInh"), "0000000000000400");
    assert_eq!(status_line(&out, "CapAmb"), "0000000000000400");
    assert_eq!(status_line(&out, "NoNewPrivs"), "1");
    assert_eq!(status_line(&out, "Groups"), "10 20");
    assert!(out.contains("umask=0077"), "{out}");
    assert!(out.contains("nofile=256/512"), "{out}");
    assert!(out.contains("id=1000:1000"), "{out}");
    assert!(out.contains("oom=500"), "{out}");
    b.assert_clean();

    // For root, execve grants the permitted and effective sets up to the bounding set (Linux's rules,
    // the same under runc).
    let mut b = Bundle::new("rootcaps");
    b.spec["process"]["noNewPrivileges"] = json!(false);
    b.spec["process"]["capabilities"] = json!({"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN", "CAP_KILL"]});
    let (code, out, err) = b.sh("cat /proc/self/status");
    assert_eq!(code, 0, "{err}");
    assert_eq!(status_line(&out, "CapBnd"), "0000000000000021");
    assert_eq!(status_line(&out, "CapEff"), "0000000000000021");
    assert_eq!(status_line(&out, "CapPrm"), "0000000000000021");
    assert_eq!(status_line(&out, "NoNewPrivs"), "0");
    b.assert_clean();
}

#[test]
fn scheduler_and_io_priority() {
    let mut b = Bundle::new("sched");
    b.spec["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 7});
    b.spec["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
    let (code, out, err) = b.sh("grep -E '^policy' /proc/self/sched; cut -d' ' -f19 /proc/self/stat; ionice -p $$");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].ends_with(" 3"), "SCHED_BATCH is policy 3: {}", lines[0]);
    assert_eq!(lines[1], "7", "nice");
    assert!(lines[2].contains("best-effort") && lines[2].contains('6'), "{}", lines[2]);
    b.assert_clean();
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.starts_with('Y'))
}

/// A label for an LSM that does not run is an error (runc's messages), never dropped. Where AppArmor
/// runs (the guest lane's Debian kernel), a profile is applied for real through the verified procfs,
/// and an unknown one is an error naming the field.
#[test]
fn lsm_labels_are_applied_or_refused() {
    let mut cases = vec![("selinuxLabel", "system_u:system_r:container_t:s0", "selinux is disabled")];
    if apparmor_enabled() {
        cases.push(("apparmorProfile", "myshim-no-such-profile", "process.apparmorProfile"));
    } else {
        cases.push(("apparmorProfile", "docker-default", "apparmor not supported"));
    }
    for (field, value, expected) in cases {
        let mut b = Bundle::new("lsm");
        b.spec["process"][field] = json!(value);
        let (code, _, err) = b.sh("true");
        assert_ne!(code, 0);
        assert!(err.contains(&format!("process.{field}")) && err.contains(expected), "{err}");
        b.assert_clean();
    }
    if !apparmor_enabled() {
        return;
    }
    let profile = format!("myshim-test-{}", std::process::id());
    let load = |args: &[&str], text: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new("apparmor_parser").args(args).stdin(std::process::Stdio::piped()).spawn().expect("run apparmor_parser");
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "apparmor_parser {args:?}");
    };
    let text = format!("profile {profile} flags=(attach_disconnected,mediate_deleted) {{\n  file,\n  capability,\n  network,\n  mount,\n  umount,\n  signal,\n  ptrace,\n  deny /secret r,\n}}\n");
    load(&["-r"], &text);
    let mut b = Bundle::new("apparmor");
    std::fs::write(b.rootfs().join("secret"), "hidden\n").unwrap();
    b.spec["process"]["apparmorProfile"] = json!(profile);
    let (code, out, err) = b.sh("cat /proc/self/attr/current; cat /secret 2>&1; true");
    load(&["-R"], &text);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("{profile} (enforce)")), "the program runs confined: {out}");
    assert!(out.contains("Permission denied"), "and the profile's rules apply: {out}");
    b.assert_clean();
}

#[test]
fn seccomp_actions_errnos_argument_filters_and_flags() {
    let mut b = Bundle::new("seccomp");
    b.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["fchmodat", "chmod"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]},
            {"names": ["fchmodat", "chmod"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 2, "value": 511, "op": "SCMP_CMP_EQ"}]}
        ]
    });
    let (code, out, err) = b.sh("mkdir /tmp/d 2>&1; touch /tmp/f; chmod 777 /tmp/f 2>&1; chmod 755 /tmp/f && stat -c %a /tmp/f; grep Seccomp: /proc/self/status");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("Permission denied"), "errnoRet 13: {out}");
    assert!(lines[1].contains("Operation not permitted"), "an argument filter, EPERM without errnoRet: {out}");
    assert_eq!(lines[2], "755", "other arguments pass");
    assert!(lines[3].ends_with('2'), "filter mode: {out}");
    b.assert_clean();

    // defaultErrnoRet applies to the default action.
    let allowed = [
        "read", "write", "openat", "open", "close", "fstat", "newfstatat", "stat", "lstat", "statx", "mmap", "munmap", "mprotect", "brk",
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "ioctl", "access", "faccessat", "faccessat2", "execve", "exit", "exit_group",
        "getpid", "getppid", "getuid", "geteuid", "getgid", "getegid", "setresuid", "setresgid", "setgroups", "capset", "capget", "prctl",
        "arch_prctl", "set_tid_address", "set_robust_list", "rseq", "prlimit64", "getcwd", "chdir", "fcntl", "dup2", "dup3", "pipe2",
        "wait4", "clone", "clone3", "fork", "vfork", "uname", "getdents64", "readlink", "readlinkat", "lseek", "getrandom", "futex",
        "poll", "ppoll", "pselect6", "writev", "readv", "umask", "setsid", "getpgrp", "setpgid", "kill", "tgkill", "gettid", "sysinfo",
    ];
    let mut b = Bundle::new("seccomp-default");
    b.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": allowed.to_vec(), "action": "SCMP_ACT_ALLOW"}]
    });
    let (code, out, err) = b.sh("mkdir /tmp/d 2>&1; echo still-running");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Function not implemented") || out.contains("not implemented"), "ENOSYS (38): {out}");
    assert!(out.contains("still-running"));
    b.assert_clean();
}

#[test]
fn bad_seccomp_profiles_name_the_field() {
    let mut b = Bundle::new("badseccomp");
    b.spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]});
    let (code, _, err) = b.sh("true");
    assert_ne!(code, 0);
    assert!(err.contains("linux.seccomp.listenerPath") && err.contains("NOTIFY"), "SCMP_ACT_NOTIFY without a listener: {err}");
    b.assert_clean();
    let mut b = Bundle::new("badseccomp");
    b.spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/nobody.sock"});
    let (code, _, err) = b.sh("true");
    assert_ne!(code, 0);
    assert!(err.contains("linux.seccomp.defaultAction"), "{err}");
    b.assert_clean();
    // A listener that is not there: create fails, naming it, and leaves nothing.
    let mut b = Bundle::new("badseccomp");
    b.spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/myshim-no-listener.sock", "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]});
    let (code, _, err) = b.sh("true");
    assert_ne!(code, 0);
    assert!(err.contains("/run/myshim-no-listener.sock"), "{err}");
    b.assert_clean();
}

/// `create --console-socket`: the terminal's master arrives on the socket, as runc sends it.
#[test]
fn terminal_through_a_console_socket() {
    let mut b = Bundle::new("console");
    b.spec["process"]["terminal"] = json!(true);
    b.spec["process"]["consoleSize"] = json!({"height": 33, "width": 111});
    b.set_args(&["sh", "-c", "tty; stty size"]).write_spec();
    let socket = b.dir.join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let receiver = std::thread::spawn(move || {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::AsRawFd;
        let (stream, _) = listener.accept().unwrap();
        let mut buffer = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut buffer)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let message = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).unwrap();
        let fd = message
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("a descriptor with the message");
        // SAFETY: the descriptor was just received and is ours.
        unsafe { OwnedFd::from_raw_fd(fd) }
    });
    let out = b.runc(&["create", "--console-socket", socket.to_str().unwrap(), "--bundle", b.dir.to_str().unwrap(), &b.id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let master = receiver.join().unwrap();
    assert!(b.runc(&["start", &b.id]).status.success());
    let mut text = String::new();
    let mut file = std::fs::File::from(master);
    use std::io::Read;
    let mut chunk = [0u8; 4096];
    // Reading the master ends with EIO once the container's side is closed.
    while let Ok(n) = file.read(&mut chunk) {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(text.contains("/dev/pts/0"), "{text:?}");
    assert!(text.contains("33 111"), "consoleSize: {text:?}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(b.runc(&["delete", &b.id]).status.success());
    b.assert_clean();
}

/// Seccomp user notification: the listener named by `listenerPath` gets the filter's notification
/// descriptor with the container's state (runc's message), for the init and for an exec, and
/// answers the container's system calls.
#[test]
fn seccomp_notifications_reach_the_listener() {
    use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
    use std::os::fd::AsRawFd;
    let mut b = Bundle::new("notify");
    let socket = b.dir.join("listener.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    b.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": socket,
        "listenerMetadata": "from-the-spec",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    // The listener: take each connection's state and descriptor, then answer every mkdir with ENOMSG.
    let states = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = states.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut buffer = [0u8; 8192];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let (length, fd) = {
                let mut iov = [std::io::IoSliceMut::new(&mut buffer)];
                let msg = nix::sys::socket::recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), nix::sys::socket::MsgFlags::empty()).unwrap();
                let fd = msg.cmsgs().unwrap().find_map(|c| match c {
                    nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                    _ => None,
                });
                (msg.bytes, fd)
            };
            let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
            seen.lock().unwrap().push(text);
            let Some(fd) = fd else { continue };
            // SAFETY: the descriptor just arrived with the message and is ours.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            std::thread::spawn(move || {
                while let Ok(request) = ScmpNotifReq::receive(fd.as_raw_fd()) {
                    let _ = ScmpNotifResp::new_error(request.id, -libc::ENOMSG, ScmpNotifRespFlags::empty()).respond(fd.as_raw_fd());
                }
            });
        }
    });
    b.start_detached(&["sleep", "30"]);
    let out = b.runc(&["exec", &b.id, "sh", "-c", "mkdir /tmp/x 2>&1; true"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("No message of desired type"), "the listener answered: {out:?}");
    let states = states.lock().unwrap().clone();
    assert_eq!(states.len(), 2, "one message for the init, one for the exec: {states:?}");
    for state in &states {
        let state: serde_json::Value = serde_json::from_str(state).unwrap();
        assert_eq!(state["fds"], json!(["seccompFd"]));
        assert_eq!(state["metadata"], "from-the-spec");
        assert_eq!(state["state"]["id"], b.id.as_str());
        assert!(state["pid"].as_u64().unwrap() > 0);
    }
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    b.assert_clean();
}

/// `linux.personality` LINUX32: the program sees a 32-bit machine.
#[test]
fn personality_linux32() {
    let mut b = Bundle::new("linux32");
    b.spec["linux"]["personality"] = json!({"domain": "LINUX32"});
    let (code, out, err) = b.sh("uname -m");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "i686");
    b.assert_clean();
}
