//! The shim binary's bootstrap modes driven directly, the way containerd runs them.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use myshim_integration::api::make_fifo;
use myshim_integration::{leaks, paths};

fn shim(args: &[&str], cwd: &Path) -> Output {
    Command::new(paths::shim_binary())
        .args(args)
        .current_dir(cwd)
        .env_remove("GRPC_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .expect("run the shim")
}

fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "daemon {pid} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The daemon behind `socket`: killed, and its socket and record removed, when the test ends (a
/// passing test leaves nothing for it to do).
struct DaemonCleanup {
    socket: String,
}

impl Drop for DaemonCleanup {
    fn drop(&mut self) {
        let record = format!("{}.myshim.json", self.socket);
        let pid = std::fs::read(&record).ok().and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok()).and_then(|r| r["pid"].as_u64());
        if let Some(pid) = pid.filter(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
            leaks::signal(pid as u32, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&record);
    }
}

/// `start` prints only the reply (a 1.6-style plain address: no GRPC_ADDRESS), writes the address
/// file, binds a 0600 socket; a second container of the same group reuses the daemon; SIGTERM on an
/// empty daemon makes it exit and remove its socket, even when it arrives while the daemon starts.
#[test]
fn start_prints_only_the_reply_and_groups() {
    let dir = paths::scratch("start");
    let address = dir.join("containerd.sock").display().to_string();
    let mut bundles = Vec::new();
    for id in ["first", "second"] {
        let bundle = dir.join(id);
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join("config.json"), r#"{"annotations":{"io.containerd.runc.v2.group":"pod"}}"#).unwrap();
        make_fifo(&bundle.join("log"));
        bundles.push(bundle);
    }
    let start = |id: &str, bundle: &Path| shim(&["-namespace", "ns", "-address", &address, "-publish-binary", "/bin/true", "-id", id, "start"], bundle);

    // A descriptor `start` inherits without close-on-exec (as containerd passes on what it inherited)
    // stays out of the daemon, which would otherwise hold it for as long as it lives.
    let (inherited, _writer) = nix::unistd::pipe().unwrap();
    let inherited_pipe = std::fs::read_link(format!("/proc/self/fd/{}", inherited.as_raw_fd())).unwrap();
    let first = start("first", &bundles[0]);
    assert!(first.status.success(), "{first:?}");
    assert!(first.stderr.is_empty(), "start wrote to stderr: {:?}", String::from_utf8_lossy(&first.stderr));
    let reply = String::from_utf8(first.stdout).unwrap();
    assert!(reply.starts_with("unix:///run/containerd/s/"), "{reply:?}");
    assert_eq!(std::fs::read_to_string(bundles[0].join("address")).unwrap(), reply);
    let socket = reply.trim_start_matches("unix://").to_owned();
    let _cleanup = DaemonCleanup { socket: socket.clone() };
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600);

    let second = start("second", &bundles[1]);
    assert!(second.status.success() && second.stderr.is_empty(), "{second:?}");
    assert_eq!(String::from_utf8(second.stdout).unwrap(), reply, "same group, same daemon");

    let record_file = format!("{socket}.myshim.json");
    assert_eq!(std::fs::metadata(&record_file).unwrap().mode() & 0o777, 0o600, "the record is root's alone");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&record_file).unwrap()).unwrap();
    let pid = record["pid"].as_u64().unwrap() as u32;
    let daemon_fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).collect();
    assert!(!daemon_fds.contains(&inherited_pipe), "the daemon holds start's inherited {inherited_pipe:?}: {daemon_fds:?}");
    leaks::signal(pid, nix::sys::signal::Signal::SIGTERM);
    // The daemon gives up the socket the moment it decides to exit, while it still sends its last
    // events: a start right away launches a new daemon instead of finding the leaving one.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&socket).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let third = start("first", &bundles[0]);
    assert!(third.status.success(), "{third:?}");
    let successor: serde_json::Value = serde_json::from_slice(&std::fs::read(&record_file).unwrap()).unwrap();
    let successor = successor["pid"].as_u64().unwrap() as u32;
    assert_ne!(successor, pid, "the leaving daemon was reused");
    wait_gone(pid);
    assert!(Path::new(&socket).exists(), "the leaving daemon removed its successor's socket");
    leaks::signal(successor, nix::sys::signal::Signal::SIGTERM);
    wait_gone(successor);
    assert!(!Path::new(&socket).exists(), "socket removed on exit");
}

/// Run as a script's interpreter, the binary refuses to act on the command line, before reading its
/// standard input or any configuration (a container can make the kernel run it that way).
#[test]
fn the_binary_refuses_to_run_as_an_interpreter() {
    let dir = paths::scratch("interpreter");
    let script = dir.join("script");
    std::fs::write(&script, format!("#!{} start\n", paths::shim_binary().display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // A stdin that never ends: `start` would block reading it.
    let mut child = Command::new(&script).current_dir(&dir).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the binary acted as `start` (it waits for stdin)");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to run: started as the interpreter of"), "{out:?}");
    assert!(!dir.join("address").exists());
}

/// `delete` for a bundle that is already gone succeeds quickly with a DeleteResponse, every time.
#[test]
fn delete_is_idempotent_and_tolerates_a_missing_bundle() {
    let dir = paths::scratch("delete");
    for _ in 0..2 {
        let started = Instant::now();
        let out = shim(&["-namespace", "ns", "-address", "/nowhere", "-publish-binary", "/bin/true", "-id", "gone", "-bundle", "/nonexistent/bundle", "delete"], &dir);
        assert!(out.status.success(), "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // DeleteResponse.exit_status (field 2) = 137, as a varint.
        assert!(out.stdout.windows(3).any(|w| w == [0x10, 0x89, 0x01]), "{:?}", out.stdout);
    }
}

#[test]
fn version_and_info() {
    let out = shim(&["-v"], Path::new("/"));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("containerd-shim-myshim-v1"));
    let info = shim(&["-info"], Path::new("/"));
    assert!(info.status.success());
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("io.containerd.myshim.v1"));
    assert!(text.contains("runtime-spec/1/features/Features") && text.contains("ociVersionMax"));
}

/// A daemon nobody connects to (containerd rejected the reply, say) exits by itself.
#[test]
fn unconnected_daemon_exits_by_itself() {
    let dir = paths::scratch("idle");
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), "{}").unwrap();
    make_fifo(&bundle.join("log"));
    std::fs::write(dir.join("myshim.toml"), "idle_exit_seconds = 1\n").unwrap();
    let address = dir.join("containerd.sock").display().to_string();
    let out = Command::new(paths::shim_binary())
        .args(["-namespace", "ns", "-address", &address, "-publish-binary", "/bin/true", "-id", "idle", "start"])
        .current_dir(&bundle)
        .env_remove("GRPC_ADDRESS")
        .env("MYSHIM_CONFIG", dir.join("myshim.toml"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let socket = String::from_utf8(out.stdout).unwrap().trim_start_matches("unix://").to_owned();
    let _cleanup = DaemonCleanup { socket: socket.clone() };
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(format!("{socket}.myshim.json")).unwrap()).unwrap();
    wait_gone(record["pid"].as_u64().unwrap() as u32);
    assert!(!Path::new(&socket).exists(), "socket removed");
}

/// runc's `ShimCgroup` (here `shim_cgroup` in the shim's config): the daemon runs in the operator's
/// existing cgroup; one that does not exist fails `start` and leaves no daemon or socket.
#[test]
fn shim_cgroup_holds_the_daemon() {
    let dir = paths::scratch("shimcg");
    let group = format!("/myshim-shimcg-{}", std::process::id());
    let group_dir = if myshim_integration::host::pure_v2() { format!("/sys/fs/cgroup{group}") } else { format!("/sys/fs/cgroup/memory{group}") };
    std::fs::create_dir_all(&group_dir).unwrap();
    struct RemoveGroup(String);
    impl Drop for RemoveGroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _remove = RemoveGroup(group_dir);

    let start = |id: &str, shim_cgroup: &str| {
        let bundle = dir.join(id);
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join("config.json"), "{}").unwrap();
        make_fifo(&bundle.join("log"));
        let config = dir.join(format!("{id}.toml"));
        std::fs::write(&config, format!("idle_exit_seconds = 1\nshim_cgroup = {shim_cgroup:?}\n")).unwrap();
        let address = dir.join("containerd.sock").display().to_string();
        Command::new(paths::shim_binary())
            .args(["-namespace", "ns", "-address", &address, "-publish-binary", "/bin/true", "-id", id, "start"])
            .current_dir(&bundle)
            .env_remove("GRPC_ADDRESS")
            .env("MYSHIM_CONFIG", &config)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    let out = start("placed", &group);
    assert!(out.status.success(), "{out:?}");
    let socket = String::from_utf8(out.stdout).unwrap().trim_start_matches("unix://").to_owned();
    let _cleanup = DaemonCleanup { socket: socket.clone() };
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(format!("{socket}.myshim.json")).unwrap()).unwrap();
    let pid = record["pid"].as_u64().unwrap() as u32;
    assert_eq!(myshim_integration::host::process_cgroup(pid), group);
    wait_gone(pid);

    let missing = format!("{group}-missing");
    let out = start("nowhere", &missing);
    assert!(!out.status.success(), "start succeeded with a shim cgroup that does not exist");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&missing), "{text}");
    let address = dir.join("containerd.sock").display().to_string();
    assert_eq!(leaks::shims_of_address(&address), [], "a daemon was left running");
}
