//! Bundles for the runtime's root tests: a busybox root filesystem (Debian's busybox-static, built
//! once per run), a spec like containerd's default, and the `myshim-runc` binary to run them.
//! Everything a bundle makes is removed when it is dropped, also when a test fails.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};

pub const RUNC: &str = env!("CARGO_BIN_EXE_myshim-runc");

/// A pristine busybox root filesystem, built once into the target directory and shared by every test
/// binary (and run) afterwards; built beside and renamed into place, as test binaries run in parallel.
fn busybox_rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = Path::new(RUNC).parent().unwrap().join("busybox-rootfs");
        if !dir.join("bin/busybox").exists() {
            let building = dir.with_extension(std::process::id().to_string());
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration/scripts/build-image.py");
            let status = Command::new("python3").arg(script).arg("--rootfs").arg(&building).status().expect("run build-image.py");
            assert!(status.success(), "build the busybox rootfs");
            if fs::rename(&building, &dir).is_err() {
                let _ = fs::remove_dir_all(&building);
            }
        }
        dir
    })
}

/// Whether this host has only cgroup v2 (else: the v1 hybrid layout of the development machines).
pub fn pure_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Whether the tests run under the systemd cgroup driver (`MYSHIM_TEST_CGROUP_DRIVER=systemd`, what
/// the guest lane sets on its systemd host).
pub fn systemd_driver() -> bool {
    std::env::var("MYSHIM_TEST_CGROUP_DRIVER").is_ok_and(|d| d == "systemd")
}

/// The unit the systemd driver makes for container `id` of these tests.
pub fn unit_of(id: &str) -> String {
    format!("myshim-test-{id}.scope")
}

/// A bad-spec case: its name, how it spoils the spec, and the field its error must name.
pub type SpecCase = (&'static str, Box<dyn Fn(&mut Bundle)>, &'static str);

pub struct Bundle {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub id: String,
    pub spec: Value,
}

/// The capabilities containerd gives a container by default.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
];

impl Bundle {
    pub fn new(name: &str) -> Bundle {
        let id = format!("rt-{name}-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("myshim-runtime-test-{id}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let status = Command::new("cp").arg("-a").arg(busybox_rootfs()).arg(dir.join("rootfs")).status().unwrap();
        assert!(status.success());
        let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
        let spec = json!({
            "ociVersion": "1.2.0",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["true"],
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "cwd": "/",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs"},
            "hostname": "myshim-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
            ],
            "linux": {
                "cgroupsPath": if systemd_driver() { format!("system.slice:myshim-test:{id}") } else { format!("/myshim-runtime-tests/{id}") },
                "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
                "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
                "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
            }
        });
        let root = dir.join("state");
        Bundle { dir, root, id, spec }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn set_args(&mut self, args: &[&str]) -> &mut Self {
        self.spec["process"]["args"] = json!(args);
        self
    }

    /// Runs `sh -c script` in the container: (exit code, stdout, stderr).
    pub fn sh(&mut self, script: &str) -> (i32, String, String) {
        self.set_args(&["sh", "-c", script]);
        self.run()
    }

    pub fn write_spec(&self) {
        fs::write(self.dir.join("config.json"), serde_json::to_vec_pretty(&self.spec).unwrap()).unwrap();
    }

    /// `myshim-runc run`: (exit code, stdout, stderr).
    pub fn run(&self) -> (i32, String, String) {
        self.write_spec();
        let out = self.runc(&["run", "--bundle", self.dir.to_str().unwrap(), &self.id]);
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// `myshim-runc run --detach` of `args`; the container's stdio is /dev/null (a detached container
    /// keeps whatever stdio it was given). Returns the container's pid.
    pub fn start_detached(&mut self, args: &[&str]) -> u32 {
        self.set_args(args).write_spec();
        // A file, not a pipe: the container's init inherits stderr and outlives the command.
        let errors = self.dir.join("run-detach.stderr");
        let status = Command::new(RUNC)
            .args(driver_flag())
            .arg("--root")
            .arg(&self.root)
            .args(["run", "--detach", "--bundle", self.dir.to_str().unwrap(), &self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&errors).unwrap())
            .status()
            .expect("run myshim-runc");
        assert!(status.success(), "run --detach failed: {}", fs::read_to_string(&errors).unwrap_or_default());
        let state: Value = serde_json::from_slice(&self.runc(&["state", &self.id]).stdout).unwrap();
        state["pid"].as_u64().unwrap() as u32
    }

    /// A `myshim-runc` command whose processes outlive it (stdio on /dev/null); true on success.
    pub fn runc_detached(&self, args: &[&str]) -> bool {
        // A file, not a pipe: the container's init inherits stderr and may outlive the command.
        let errors = self.dir.join(format!("runc-{}.stderr", args.first().unwrap_or(&"")));
        let file = std::fs::File::create(&errors).expect("create the stderr file");
        let ok = Command::new(RUNC).args(driver_flag()).arg("--root").arg(&self.root).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(file).status().is_ok_and(|s| s.success());
        if !ok {
            eprintln!("myshim-runc {args:?} failed: {}", std::fs::read_to_string(&errors).unwrap_or_default());
        }
        ok
    }

    /// Any `myshim-runc` command against this bundle's root.
    pub fn runc(&self, args: &[&str]) -> Output {
        Command::new(RUNC).args(driver_flag()).arg("--root").arg(&self.root).args(args).stdin(Stdio::null()).output().expect("run myshim-runc")
    }

    /// The container's group below a hierarchy's root: the cgroups path, or the systemd unit's place.
    pub fn cgroup_relative(&self) -> String {
        let path = self.spec["linux"]["cgroupsPath"].as_str().unwrap();
        match path.split(':').collect::<Vec<_>>()[..] {
            [slice, _, _] => format!("{slice}/{}", unit_of(&self.id)),
            _ => path.trim_start_matches('/').to_owned(),
        }
    }

    /// The container's cgroup directory: in the v1 hierarchy `hierarchy` (`unified` for the hybrid
    /// host's v2 one), or, on a pure v2 host, its one directory whatever the controller.
    pub fn cgroup_dir(&self, hierarchy: &str) -> PathBuf {
        let base = if pure_v2() { PathBuf::from("/sys/fs/cgroup") } else { Path::new("/sys/fs/cgroup").join(hierarchy) };
        base.join(self.cgroup_relative())
    }

    /// The file holding the container's memory limit (and its directory).
    pub fn memory_limit_file(&self) -> PathBuf {
        self.cgroup_dir("memory").join(if pure_v2() { "memory.max" } else { "memory.limit_in_bytes" })
    }

    /// Nothing of the container is left: no state, no mount below the bundle, no cgroup, no unit.
    pub fn assert_clean(&self) {
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let bundle = self.dir.display().to_string();
        let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&bundle)).collect();
        assert!(leaked.is_empty(), "mounts left: {leaked:#?}");
        assert!(!self.root.join(&self.id).exists(), "state directory left");
        for hierarchy in ["memory", "pids", "cpu", "freezer", "devices", "unified"] {
            assert!(!self.cgroup_dir(hierarchy).exists(), "cgroup left in {hierarchy}");
        }
        if systemd_driver() {
            let unit = unit_of(&self.id);
            let state = Command::new("systemctl").args(["is-active", &unit]).output().unwrap();
            assert_ne!(String::from_utf8_lossy(&state.stdout).trim(), "active", "unit {unit} left");
        }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        // Kill whatever a failed test left, then remove it.
        let _ = self.runc(&["delete", "--force", &self.id]);
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let bundle = self.dir.display().to_string();
        let mut leaked: Vec<String> = mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&bundle)).map(str::to_owned).collect();
        leaked.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in leaked {
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
        if systemd_driver() {
            let _ = Command::new("systemctl").args(["stop", &unit_of(&self.id)]).output();
        }
        // The tests' shared parent group goes with the last test.
        let _ = fs::remove_dir("/sys/fs/cgroup/myshim-runtime-tests");
        for hierarchy in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let _ = fs::remove_dir(hierarchy.path().join("myshim-runtime-tests"));
        }
    }
}

/// A host process's `/proc/<pid>/status` field.
pub fn status_field(pid: u32, field: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_owned()))
        .unwrap_or_default()
}

/// `--systemd-cgroup` when the tests run under the systemd driver.
pub fn driver_flag() -> &'static [&'static str] {
    if systemd_driver() {
        &["--systemd-cgroup"]
    } else {
        &[]
    }
}
