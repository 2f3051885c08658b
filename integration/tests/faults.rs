//! Faults: containerd stopped (SIGTERM) or killed (SIGKILL) while containers run and one exits, on
//! ttrpc and on gRPC; and the disk under a bundle full or read-only during Create.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use myshim_integration::api::TasksApi;
use myshim_integration::bundle;
use myshim_integration::direct::{DirectShim, Protocol};
use myshim_integration::{leaks, Containerd, Version};
use nix::sys::signal::Signal;

fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The host pid of a task, from `ctr task ls`.
fn task_pid(c: &Containerd, id: &str) -> u32 {
    let list = c.ctr(&["task", "ls"]).ok().stdout;
    list.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&id))
        .and_then(|cols| cols.get(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no pid for {id} in {list}"))
}

/// containerd goes away while `steady` runs and `leaver` exits with status 42; after the restart the
/// steady container still runs and serves execs, and the leaver's status and exit event arrive.
fn containerd_restart(version: Version, grpc: bool, hard: bool) {
    let name = format!("restart-{}{}", if hard { "kill" } else { "term" }, if grpc { "-grpc" } else { "" });
    let mut c = match grpc {
        true => Containerd::start_with(version, &name, Some("protocol = \"grpc\"\n")),
        false => Containerd::start(version, &name),
    };
    c.run_detached("steady", &["sleep", "1000"]);
    c.run_detached("leaver", &["sh", "-c", "trap 'exit 42' TERM; sleep 1000 & wait"]);
    let leaver = task_pid(&c, "leaver");
    let steady = task_pid(&c, "steady");

    if hard {
        c.kill();
    } else {
        c.stop();
    }
    let log_lines_before = c.log().lines().count();
    leaks::signal(leaver, Signal::SIGTERM);
    wait_for(|| !Path::new(&format!("/proc/{leaver}")).exists(), "the leaver exited while containerd was down");
    // The shim tries to publish the exit meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    c.restart();

    assert_eq!(c.task_status("steady").as_deref(), Some("RUNNING"));
    assert_eq!(task_pid(&c, "steady"), steady, "the same process");
    assert_eq!(c.task_status("leaver").as_deref(), Some("STOPPED"));
    let api = TasksApi::connect(&c.socket(), &c.namespace);
    assert_eq!(api.wait("leaver", "").unwrap(), 42, "the exit status survives");
    // The exit event reached the restarted containerd.
    wait_for(
        || c.log().lines().skip(log_lines_before).any(|l| l.contains("event forwarded") && l.contains("topic=/tasks/exit")),
        "the leaver's exit event forwarded after the restart",
    );
    let out = c.ctr(&["task", "exec", "--exec-id", "after", "steady", "echo", "still here"]).ok();
    assert_eq!(out.stdout, "still here\n");
    c.remove("leaver");
    c.remove("steady");
    c.assert_no_leftovers();
}

#[test]
fn containerd_2_1_sigterm() {
    containerd_restart(Version::V2_1, false, false);
}

#[test]
fn containerd_2_1_sigkill() {
    containerd_restart(Version::V2_1, false, true);
}

#[test]
fn containerd_1_6_sigkill() {
    containerd_restart(Version::V1_6, false, true);
}

#[test]
fn containerd_1_7_grpc_sigterm() {
    containerd_restart(Version::V1_7, true, false);
}

#[test]
fn containerd_1_7_grpc_sigkill() {
    containerd_restart(Version::V1_7, true, true);
}

/// A tmpfs the test mounts (and always unmounts).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        nix::mount::mount(Some("tmpfs"), path, Some("tmpfs"), nix::mount::MsFlags::empty(), Some(options)).expect("mount a tmpfs");
        Tmpfs(path.to_owned())
    }

    fn remount_read_only(&self) {
        use nix::mount::MsFlags;
        nix::mount::mount(None::<&str>, &self.0, None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>).expect("remount read-only");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Fills the (small) filesystem at `dir` until writes fail.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 64 << 10];
    let mut written = 0;
    while filler.write_all(&chunk).is_ok() {
        written += chunk.len();
        assert!(written < 16 << 20, "{} is not a small filesystem", dir.display());
    }
    let mut n = 0;
    while std::fs::write(dir.join(format!("small{n}")), b"x").is_ok() {
        n += 1;
    }
}

/// Create with the bundle on a full or read-only disk: an error naming the path and the cause, nothing
/// half-made, and the shim serves the next container.
fn disk_trouble(protocol: Protocol) {
    let shim = DirectShim::start(&format!("disk-{protocol:?}").to_lowercase(), protocol);
    let mut client = shim.client();
    let cases: [(&str, &str, &str); 3] = [("full", "size=256k", "no space left"), ("noinodes", "size=256k,nr_inodes=8", "no space left"), ("readonly", "size=1m", "read-only")];
    for (id, options, cause) in cases {
        let dir = shim.bundle_dir(id);
        let tmpfs = Tmpfs::mount(&dir, options);
        bundle::write(&dir, &bundle::default_spec(&["true"], &shim.cgroup_path(id)));
        match id {
            "readonly" => tmpfs.remount_read_only(),
            _ => fill(&dir),
        }
        let error = client.create(id, &dir, ["", "", ""]).expect_err("create on a bad disk");
        let message = error.message.to_lowercase();
        assert!(message.contains(cause) && message.contains(&dir.display().to_string()), "{id}: {error:?}");
        assert_eq!(client.state(id, "").unwrap_err().code, 5, "{id}: not found afterwards");
        assert!(!dir.join("myshim-state").exists(), "{id}: state left behind");
        assert!(leaks::cgroup_dirs(&shim.namespace).iter().all(|d| !d.join(id).exists()), "{id}: cgroup left behind");
        assert!(leaks::container_processes(&shim.namespace).is_empty(), "{id}: processes left behind");
        drop(tmpfs);
    }
    let ok = shim.bundle_dir("ok");
    bundle::write(&ok, &bundle::default_spec(&["true"], &shim.cgroup_path("ok")));
    client.create("ok", &ok, ["", "", ""]).unwrap();
    client.start("ok", "").unwrap();
    assert_eq!(client.wait("ok", "").unwrap(), 0);
    client.delete("ok", "").unwrap();
}

#[test]
fn disk_full_or_read_only_over_ttrpc() {
    disk_trouble(Protocol::Ttrpc);
}

#[test]
fn disk_full_or_read_only_over_grpc() {
    disk_trouble(Protocol::Grpc);
}
