//! Cgroups written for real on this host: resources in v1 hierarchies (the development machines'
//! hybrid layout) or in the one v2 group (the guest lane's systemd host), under the cgroupfs driver or
//! systemd's (`MYSHIM_TEST_CGROUP_DRIVER=systemd`); the cgroupsPath rules; hugetlb and unified keys;
//! the device rules enforced by the kernel (v1 controller, or the v2 eBPF filter); OOM kills counted.

mod common;

use std::fs;
use std::process::Command;

use common::{pure_v2, systemd_driver, unit_of, Bundle};
use serde_json::json;

fn read(path: std::path::PathBuf) -> String {
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_owned()
}

/// A property of the container's unit, as systemd reports it.
fn unit_property(b: &Bundle, property: &str) -> String {
    let out = Command::new("systemctl").args(["show", &unit_of(&b.id), "-p", property, "--value"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn resources_reach_the_controllers() {
    let mut b = Bundle::new("resources");
    let vda = fs::metadata("/dev/vda").ok().map(|_| (254, 0));
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728},
        "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 20}
    });
    if !pure_v2() {
        resources["memory"]["swappiness"] = json!(10);
        resources["cpu"]["realtimeRuntime"] = json!(0);
        resources["cpu"]["realtimePeriod"] = json!(1000000);
    }
    if let Some((major, minor)) = vda {
        resources["blockIO"] = json!({"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}], "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]});
    }
    b.spec["linux"]["resources"] = resources;
    let pid = b.start_detached(&["sleep", "30"]);
    if pure_v2() {
        let dir = b.cgroup_dir("");
        assert_eq!(read(dir.join("memory.max")), "67108864");
        assert_eq!(read(dir.join("memory.low")), "33554432");
        // OCI's swap is memory+swap; v2 limits swap alone.
        assert_eq!(read(dir.join("memory.swap.max")), "67108864");
        assert_eq!(read(dir.join("cpu.weight")), "20");
        assert_eq!(read(dir.join("cpu.max")), "20000 100000");
        assert_eq!(read(dir.join("cpuset.cpus")), "0");
        assert_eq!(read(dir.join("pids.max")), "20");
        if vda.is_some() {
            let io = read(dir.join("io.max"));
            assert!(io.contains("254:0 rbps=1048576") && io.contains("wiops=100"), "{io}");
        }
        if systemd_driver() {
            assert_eq!(unit_property(&b, "MemoryMax"), "67108864");
            assert_eq!(unit_property(&b, "TasksMax"), "20");
            assert_eq!(unit_property(&b, "CPUWeight"), "20");
            assert_eq!(unit_property(&b, "Delegate"), "yes");
        }
    } else {
        assert_eq!(read(b.cgroup_dir("memory").join("memory.limit_in_bytes")), "67108864");
        assert_eq!(read(b.cgroup_dir("memory").join("memory.soft_limit_in_bytes")), "33554432");
        assert_eq!(read(b.cgroup_dir("memory").join("memory.swappiness")), "10");
        if b.cgroup_dir("memory").join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(read(b.cgroup_dir("memory").join("memory.memsw.limit_in_bytes")), "134217728");
        }
        assert_eq!(read(b.cgroup_dir("cpu").join("cpu.shares")), "512");
        assert_eq!(read(b.cgroup_dir("cpu").join("cpu.cfs_quota_us")), "20000");
        assert_eq!(read(b.cgroup_dir("cpu").join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(b.cgroup_dir("cpu").join("cpu.rt_period_us")), "1000000");
        assert_eq!(read(b.cgroup_dir("cpuset").join("cpuset.cpus")), "0");
        assert_eq!(read(b.cgroup_dir("pids").join("pids.max")), "20");
        if vda.is_some() {
            assert!(read(b.cgroup_dir("blkio").join("blkio.throttle.read_bps_device")).contains("254:0 1048576"));
            assert!(read(b.cgroup_dir("blkio").join("blkio.throttle.write_iops_device")).contains("254:0 100"));
        }
        let devices = read(b.cgroup_dir("devices").join("devices.list"));
        assert!(devices.contains("c 1:3 rwm") && !devices.contains("a *:* rwm"), "deny all, then the defaults: {devices}");
    }
    // The container's process is in its group in every hierarchy (on the hybrid host it was born in
    // the unified one and moved itself into the v1 groups).
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let expected = format!("/{}", b.cgroup_relative());
    assert!(cgroups.lines().any(|l| l.starts_with("0::")), "{cgroups}");
    for line in cgroups.lines() {
        assert!(line.ends_with(&expected), "{line} (expected {expected})");
    }
    // Update applies new limits (to the unit too).
    let update = b.dir.join("update.json");
    fs::write(&update, r#"{"memory":{"limit":134217728},"pids":{"limit":30}}"#).unwrap();
    assert!(b.runc(&["update", "--resources", update.to_str().unwrap(), &b.id]).status.success());
    assert_eq!(read(b.memory_limit_file()), "134217728");
    assert_eq!(read(b.cgroup_dir("pids").join("pids.max")), "30");
    if systemd_driver() {
        assert_eq!(unit_property(&b, "MemoryMax"), "134217728");
    }
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    b.assert_clean();
}

/// Device rules are enforced by the kernel: with everything denied but the defaults, a node of a
/// host device made in the container cannot be opened (the v1 controller, or the v2 eBPF filter).
#[test]
fn device_rules_are_enforced() {
    let mut b = Bundle::new("devices");
    b.spec["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
    let (code, out, err) = b.sh("mknod /tmp/kmsg c 1 11; head -c 1 /tmp/kmsg 2>&1; head -c 1 /dev/zero | wc -c");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.trim_end().ends_with('1'), "/dev/zero stays allowed: {out}");
    b.assert_clean();
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let mut b = Bundle::new("forkbomb");
    b.spec["linux"]["resources"]["pids"] = json!({"limit": 10});
    // The bomb is an exec'd process, so that the container's pid 1 (and with it a systemd scope,
    // which goes when its last process does) outlives the forks the limit refuses.
    b.start_detached(&["sleep", "30"]);
    assert!(b.runc_detached(&["exec", "--detach", &b.id, "sh", "-c", "for i in $(seq 1 30); do sleep 30 & done 2>/dev/null; true"]));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let current: u32 = read(b.cgroup_dir("pids").join("pids.current")).parse().unwrap();
    let events = read(b.cgroup_dir("pids").join("pids.events"));
    assert!(current <= 10, "pids.current {current}");
    let refused: u32 = events.strip_prefix("max ").unwrap().parse().unwrap();
    assert!(refused > 0, "forks refused: {events}");
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    b.assert_clean();
}

/// A memory hog is OOM-killed inside its limit, and the group counts the kill.
#[test]
fn oom_kills_are_counted() {
    let mut b = Bundle::new("oom");
    b.spec["linux"]["resources"]["memory"] = json!({"limit": 33554432, "swap": 33554432});
    let (code, _, _) = b.sh("tail /dev/zero");
    assert_eq!(code, 137, "killed by the kernel");
    b.assert_clean();
    let mut b = Bundle::new("oomcount");
    b.spec["linux"]["resources"]["memory"] = json!({"limit": 33554432, "swap": 33554432});
    b.start_detached(&["sh", "-c", "(tail /dev/zero); sleep 30"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let counted = || {
        if pure_v2() {
            fs::read_to_string(b.cgroup_dir("").join("memory.events")).unwrap_or_default().lines().any(|l| l.starts_with("oom_kill ") && l != "oom_kill 0")
        } else {
            fs::read_to_string(b.cgroup_dir("memory").join("memory.oom_control")).unwrap_or_default().lines().any(|l| l.starts_with("oom_kill ") && l != "oom_kill 0")
        }
    };
    while !counted() {
        assert!(std::time::Instant::now() < deadline, "no OOM kill counted");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    b.assert_clean();
}

/// Pause freezes every process of the group (v1 freezer, or v2's cgroup.freeze), resume thaws them.
#[test]
fn pause_freezes_the_group() {
    let mut b = Bundle::new("freeze");
    let pid = b.start_detached(&["sh", "-c", "sleep 30 & sleep 30"]);
    assert!(b.runc(&["pause", &b.id]).status.success());
    if pure_v2() {
        assert!(read(b.cgroup_dir("").join("cgroup.events")).contains("frozen 1"));
    } else {
        assert_eq!(read(b.cgroup_dir("freezer").join("freezer.state")), "FROZEN");
    }
    assert!(common::status_field(pid, "State").starts_with('S') || common::status_field(pid, "State").starts_with('D'));
    assert!(b.runc(&["resume", &b.id]).status.success());
    if pure_v2() {
        assert!(read(b.cgroup_dir("").join("cgroup.events")).contains("frozen 0"));
    } else {
        assert_eq!(read(b.cgroup_dir("freezer").join("freezer.state")), "THAWED");
    }
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    b.assert_clean();
}

/// A relative or empty cgroups path lands below the runtime's own group (cgroupfs); under systemd an
/// empty one is the unit `myshim-<id>.scope` in `system.slice`.
#[test]
fn cgroups_path_relative_and_empty() {
    let mut b = Bundle::new("relative");
    if systemd_driver() {
        b.spec["linux"]["cgroupsPath"] = json!("");
        let pid = b.start_detached(&["sleep", "30"]);
        let unit = format!("myshim-{}.scope", b.id);
        let line = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(line.trim().ends_with(&format!("/system.slice/{unit}")), "{line}");
        assert!(b.runc(&["delete", "--force", &b.id]).status.success());
        assert!(!std::path::Path::new("/sys/fs/cgroup/system.slice").join(&unit).exists());
        return;
    }
    // The process's group in the memory hierarchy (v1) or the unified one (v2).
    let key = if pure_v2() { "0::" } else { ":memory:" };
    let own_line = |text: &str| text.lines().find_map(|l| l.split_once(key).map(|(_, p)| p.to_owned())).unwrap();
    let own = own_line(&fs::read_to_string("/proc/self/cgroup").unwrap());
    let relative = format!("myshim-relative-{}", b.id);
    b.spec["linux"]["cgroupsPath"] = json!(relative);
    if pure_v2() {
        // Our own group holds processes (this test), and v2 allows no child group beside them: the
        // kernel refuses, and the error says why.
        let (code, _, err) = b.sh("true");
        assert_ne!(code, 0);
        assert!(err.contains(&relative) && err.contains("holds processes"), "{err}");
        b.assert_clean();
        return;
    }
    let pid = b.start_detached(&["sleep", "30"]);
    let theirs = own_line(&fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap());
    assert_eq!(theirs, format!("{}/{relative}", own.trim_end_matches('/')));
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/memory{}/{relative}", own.trim_end_matches('/'))).exists());
}

/// hugetlb and unified keys reach the v2 group (the only one on a pure v2 host; the hybrid host's
/// unified hierarchy holds hugetlb); a unified key that is a path is refused.
#[test]
fn hugetlb_and_unified_keys() {
    let mut b = Bundle::new("unified");
    b.spec["linux"]["resources"]["hugepageLimits"] = json!([{"pageSize": "2MB", "limit": 4194304}]);
    b.spec["linux"]["resources"]["unified"] = json!({"cgroup.max.descendants": "3"});
    b.start_detached(&["sleep", "30"]);
    let dir = b.cgroup_dir("unified");
    assert_eq!(read(dir.join("hugetlb.2MB.max")), "4194304");
    assert_eq!(read(dir.join("cgroup.max.descendants")), "3");
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    b.assert_clean();

    let mut b = Bundle::new("badunified");
    b.spec["linux"]["resources"]["unified"] = json!({"../../escape": "1"});
    let (code, _, err) = b.sh("true");
    assert_ne!(code, 0);
    assert!(err.contains("linux.resources.unified"), "{err}");
    b.assert_clean();
}

/// The v2 device filter on its own, loaded and attached for real to a group of the v2 hierarchy:
/// deny everything but the defaults, then see a process in that group refused.
#[test]
fn v2_device_filter_is_enforced_by_the_kernel() {
    let unified = if pure_v2() { "/sys/fs/cgroup" } else { "/sys/fs/cgroup/unified" };
    let dir = std::path::Path::new(unified).join(format!("myshim-bpf-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let rules: Vec<oci_spec::runtime::LinuxDeviceCgroup> = serde_json::from_value(json!([{"allow": false, "access": "rwm"}])).unwrap();
    let attached = myshim_runtime::cgroups::bpf::apply_device_rules(&dir, &rules);
    let run = |script: &str| {
        let out = Command::new("sh").arg("-c").arg(format!("echo $$ > {}/cgroup.procs && {script}", dir.display())).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let result = attached.map(|()| (run("head -c 1 /dev/zero | wc -c"), run("echo x > /dev/kmsg && echo written")));
    let _ = fs::remove_dir(&dir);
    let (zero, kmsg) = result.unwrap();
    assert_eq!(zero.trim(), "1", "/dev/zero stays allowed");
    assert!(kmsg.contains("Operation not permitted") && !kmsg.contains("written"), "/dev/kmsg refused: {kmsg}");
}
