//! Cgroups: v1 resources written for real on this host, the cgroupsPath rules, hugetlb and unified
//! keys in the hybrid host's v2 hierarchy, and the v2 eBPF device filter loaded and attached for
//! real. (v2 resource files are checked against a fake cgroupfs in the library's unit tests.)

mod common;

use std::fs;
use std::process::Command;

use common::Bundle;
use serde_json::json;

fn read(path: std::path::PathBuf) -> String {
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_owned()
}

#[test]
fn v1_resources_reach_the_controllers() {
    let mut b = Bundle::new("resources");
    let vda = fs::metadata("/dev/vda").ok().map(|_| (254, 0));
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728, "swappiness": 10},
        "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0", "realtimeRuntime": 0, "realtimePeriod": 1000000},
        "pids": {"limit": 20}
    });
    if let Some((major, minor)) = vda {
        resources["blockIO"] = json!({"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}], "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]});
    }
    b.spec["linux"]["resources"] = resources;
    let pid = b.start_detached(&["sleep", "30"]);
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
    // The container's process is in every hierarchy's group, the hybrid unified one included (it was
    // born there; it moved itself into the v1 groups).
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let expected = b.spec["linux"]["cgroupsPath"].as_str().unwrap().to_owned();
    assert!(cgroups.lines().any(|l| l.starts_with("0::")), "{cgroups}");
    for line in cgroups.lines() {
        assert!(line.ends_with(&expected), "{line}");
    }
    // Update applies new limits.
    let update = b.dir.join("update.json");
    fs::write(&update, r#"{"memory":{"limit":134217728},"pids":{"limit":30}}"#).unwrap();
    assert!(b.runc(&["update", "--resources", update.to_str().unwrap(), &b.id]).status.success());
    assert_eq!(read(b.cgroup_dir("memory").join("memory.limit_in_bytes")), "134217728");
    assert_eq!(read(b.cgroup_dir("pids").join("pids.max")), "30");
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    b.assert_clean();
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let mut b = Bundle::new("forkbomb");
    b.spec["linux"]["resources"]["pids"] = json!({"limit": 10});
    b.start_detached(&["sh", "-c", "for i in $(seq 1 30); do sleep 30 & done 2>/dev/null; sleep 30"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let current: u32 = read(b.cgroup_dir("pids").join("pids.current")).parse().unwrap();
    let events = read(b.cgroup_dir("pids").join("pids.events"));
    assert!(current <= 10, "pids.current {current}");
    let refused: u32 = events.strip_prefix("max ").unwrap().parse().unwrap();
    assert!(refused > 0, "forks refused: {events}");
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    b.assert_clean();
}

#[test]
fn cgroups_path_relative_and_empty_land_below_our_own_group() {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let own_memory = own.lines().find_map(|l| l.strip_suffix("").and_then(|l| l.split_once(":memory:")).map(|(_, p)| p.to_owned())).unwrap();
    let mut b = Bundle::new("relative");
    let relative = format!("myshim-relative-{}", b.id);
    b.spec["linux"]["cgroupsPath"] = json!(relative);
    let pid = b.start_detached(&["sleep", "30"]);
    let line = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap().lines().find(|l| l.contains(":memory:")).unwrap().to_owned();
    assert_eq!(line.split_once(":memory:").unwrap().1, format!("{}/{relative}", own_memory.trim_end_matches('/')));
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/memory{}/{relative}", own_memory.trim_end_matches('/'))).exists());
}

#[test]
fn hybrid_unified_hierarchy_gets_hugetlb_and_unified_keys() {
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

/// The v2 device filter, loaded and attached for real to a group in the hybrid host's unified
/// hierarchy: deny everything but the defaults, then see a process in that group refused.
#[test]
fn v2_device_filter_is_enforced_by_the_kernel() {
    let dir = std::path::Path::new("/sys/fs/cgroup/unified").join(format!("myshim-bpf-test-{}", std::process::id()));
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
