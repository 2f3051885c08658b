//! Namespaces, checked from inside and outside the container. Run as root.

mod common;

use std::fs;

use common::{status_field, Bundle, SpecCase};
use serde_json::json;

fn host_ns(name: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{name}")).unwrap().display().to_string()
}

#[test]
fn new_pid_uts_ipc_net_mount_and_cgroup_namespaces() {
    let mut b = Bundle::new("ns");
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "cgroup"}));
    let (code, out, err) = b.sh("echo $$; hostname; for n in ipc net mnt uts cgroup; do readlink /proc/self/ns/$n; done; ip -o link | wc -l; grep -E 'memory|^0::' /proc/self/cgroup | head -1");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "pid 1 in a new pid namespace");
    assert_eq!(lines[1], "myshim-test");
    for (i, name) in ["ipc", "net", "mnt", "uts", "cgroup"].iter().enumerate() {
        assert_ne!(lines[2 + i], host_ns(name), "{name} namespace is new");
    }
    assert_eq!(lines[7].trim(), "1", "only lo in a new network namespace");
    assert!(lines[8].ends_with(":/"), "the cgroup namespace roots at the container's group: {}", lines[8]);
    b.assert_clean();
}

#[test]
fn user_namespace_with_id_mappings() {
    let mut b = Bundle::new("userns");
    let status = std::process::Command::new("chown").args(["-R", "100000:100000"]).arg(b.rootfs()).status().unwrap();
    assert!(status.success());
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
    b.spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let pid = b.start_detached(&["sleep", "30"]);
    // Outside, root of the container is uid 100000.
    assert!(status_field(pid, "Uid").starts_with("100000"), "{}", status_field(pid, "Uid"));
    let exec = b.runc(&["exec", &b.id, "sh", "-c", "id -u; cat /proc/self/uid_map; echo x > /dev/null && echo devices-ok; touch /tmp/owned && stat -c %u /tmp/owned"]);
    let out = String::from_utf8_lossy(&exec.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out} {}", String::from_utf8_lossy(&exec.stderr));
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["0", "100000", "65536"]);
    assert_eq!(lines[2], "devices-ok", "/dev/null bound from the host");
    assert_eq!(lines[3], "0");
    assert!(b.runc(&["delete", "--force", &b.id]).status.success());
    b.assert_clean();
}

#[test]
fn time_namespace_with_offsets() {
    let mut b = Bundle::new("timens");
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "time"}));
    b.spec["linux"]["timeOffsets"] = json!({"boottime": {"secs": 864000, "nanosecs": 0}, "monotonic": {"secs": 864000}});
    let (code, out, err) = b.sh("cut -d. -f1 /proc/uptime");
    assert_eq!(code, 0, "{err}");
    let host: u64 = fs::read_to_string("/proc/uptime").unwrap().split('.').next().unwrap().parse().unwrap();
    let inside: u64 = out.trim().parse().unwrap();
    assert!(inside >= host + 864000, "boottime offset: {inside} vs host {host}");
    b.assert_clean();
}

#[test]
fn joining_namespaces_by_path() {
    let mut first = Bundle::new("join-a");
    let pid = first.start_detached(&["sleep", "30"]);
    let theirs = |name: &str| fs::read_link(format!("/proc/{pid}/ns/{name}")).unwrap().display().to_string();

    let mut second = Bundle::new("join-b");
    second.spec["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
        {"type": "network", "path": format!("/proc/{pid}/ns/net")},
        {"type": "uts", "path": format!("/proc/{pid}/ns/uts")}
    ]);
    second.spec.as_object_mut().unwrap().remove("hostname");
    let (code, out, err) = second.sh("readlink /proc/self/ns/net; readlink /proc/self/ns/uts; hostname");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], theirs("net"));
    assert_eq!(lines[1], theirs("uts"));
    assert_eq!(lines[2], "myshim-test", "the joined uts namespace's hostname");
    assert!(first.runc(&["delete", "--force", &first.id]).status.success());
    first.assert_clean();
    second.assert_clean();
}

#[test]
fn invalid_namespace_combinations_name_the_field() {
    let cases: Vec<SpecCase> = vec![
        ("hostname without uts", Box::new(|b: &mut Bundle| b.spec["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "mount"}])), "hostname"),
        ("maps without userns", Box::new(|b: &mut Bundle| b.spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}])), "linux.uidMappings"),
        ("userns without maps", Box::new(|b: &mut Bundle| b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}))), "linux.uidMappings"),
        ("unknown type", Box::new(|b: &mut Bundle| b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "bogus"}))), "linux.namespaces"),
        ("listed twice", Box::new(|b: &mut Bundle| b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "pid"}))), "listed twice"),
        ("missing path", Box::new(|b: &mut Bundle| b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "cgroup", "path": "/nonexistent/ns"}))), "/nonexistent/ns"),
        ("masking without a mount namespace", Box::new(|b: &mut Bundle| b.spec["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "mount")), "linux.maskedPaths"),
    ];
    for (what, change, expected) in cases {
        let mut b = Bundle::new("badns");
        change(&mut b);
        let (code, _, err) = b.run();
        assert_ne!(code, 0, "{what}");
        assert!(err.contains(expected), "{what}: {err}");
        b.assert_clean();
    }
}

/// A read-only root inside a user namespace: the remount keeps the flags the namespace may not
/// change (runc does it too).
#[test]
fn read_only_root_in_a_user_namespace() {
    let mut b = Bundle::new("usernsro");
    let status = std::process::Command::new("chown").args(["-R", "100000:100000"]).arg(b.rootfs()).status().unwrap();
    assert!(status.success());
    b.spec["root"]["readonly"] = json!(true);
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
    b.spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let (code, out, err) = b.sh("touch /x 2>&1; id -u");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Read-only file system") && out.trim_end().ends_with('0'), "{out}");
    b.assert_clean();
}

/// The runtime spec lets a container share the runtime's mount namespace (runc runs such a spec):
/// its mounts are made there, below the rootfs, confined by chroot, and removed at delete.
#[test]
fn a_spec_without_a_mount_namespace_runs_and_cleans_up() {
    let mut b = Bundle::new("nomntns");
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "mount");
    b.spec["linux"]["maskedPaths"] = json!([]);
    b.spec["linux"]["readonlyPaths"] = json!([]);
    let (code, out, err) = b.sh("readlink /proc/self/ns/mnt; ls /bin/busybox");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], host_ns("mnt"), "the runtime's mount namespace");
    assert_eq!(lines[1], "/bin/busybox", "inside the rootfs");
    b.assert_clean();
}
