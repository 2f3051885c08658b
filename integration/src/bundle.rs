//! OCI bundles for the shim driven directly: containerd's default spec over a busybox root filesystem
//! shared read-only by every container of a test run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::paths;

/// The busybox root filesystem, built once into the target directory.
pub fn busybox_rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            let rootfs = paths::shim_dir().join("busybox-rootfs");
            if !rootfs.join("bin/busybox").exists() {
                // Built beside and renamed into place: test binaries run in parallel.
                let building = paths::shim_dir().join(format!("busybox-rootfs.{}", std::process::id()));
                let status = Command::new("python3")
                    .arg(paths::workspace().join("integration/scripts/build-image.py"))
                    .arg("--rootfs")
                    .arg(&building)
                    .status()
                    .expect("run build-image.py");
                assert!(status.success(), "building the busybox rootfs failed");
                if fs::rename(&building, &rootfs).is_err() {
                    let _ = fs::remove_dir_all(&building);
                }
            }
            rootfs
        })
        .clone()
}

/// containerd's default Linux spec (as `ctr run` makes it) for `args`, with the container in cgroup
/// `cgroups_path` and the shared busybox root, read-only.
pub fn default_spec(args: &[&str], cgroups_path: &str) -> serde_json::Value {
    let capabilities = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
        "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    ];
    serde_json::json!({
        "ociVersion": "1.1.0",
        "process": {
            "args": args,
            "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "capabilities": {"bounding": capabilities, "effective": capabilities, "permitted": capabilities},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": busybox_rootfs(), "readonly": true},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/sys/devices/virtual/powercap", "/proc/scsi"
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// Writes `spec` as the bundle's `config.json`.
pub fn write(bundle: &Path, spec: &serde_json::Value) {
    fs::create_dir_all(bundle).unwrap();
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(spec).unwrap()).unwrap();
}
