//! Attacks on the runtime from a hostile image or spec, one per class of escape runc has had a CVE
//! for: masked paths through the image's `/dev/null` (CVE-2025-31133), `/dev/console` (CVE-2025-52565),
//! writes to a procfs that is not one (CVE-2019-16884, CVE-2025-52881), sysctls outside the
//! container's namespaces, startContainer hooks from the image run with the runtime's privileges,
//! a working directory on a descriptor the runtime leaked (CVE-2024-21626), and a cgroup shared with
//! another container. Each must fail, or land inside the container. Run as root.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

use common::{status_field, Bundle};
use serde_json::json;

/// The host's value of a sysctl file, to check it is unchanged.
fn host_value(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Removes the spec's `/dev` mounts: the image's own `/dev` is what the container sees.
fn use_the_images_dev(b: &mut Bundle) {
    b.spec["mounts"].as_array_mut().unwrap().retain(|m| !m["destination"].as_str().unwrap().starts_with("/dev"));
}

/// An image whose `/dev/null` is a symlink to a sysctl: masking must not bind that sysctl over a
/// masked path (which made `/proc/timer_list` a writable view of `kernel.domainname`).
#[test]
fn masked_paths_never_use_the_images_dev_null() {
    for (name, make) in [("symlink", 0), ("regular-file", 1)] {
        let mut b = Bundle::new(&format!("devnull-{name}"));
        use_the_images_dev(&mut b);
        let null = b.rootfs().join("dev/null");
        let _ = fs::remove_file(&null);
        if make == 0 {
            symlink("/proc/sys/kernel/domainname", &null).unwrap();
        } else {
            fs::write(&null, "").unwrap();
        }
        let before = host_value("/proc/sys/kernel/domainname");
        let (code, out, err) = b.sh("echo pwned > /proc/timer_list; cat /proc/sys/kernel/domainname");
        assert_ne!(code, 0, "the container ran: {out}");
        assert!(err.contains("linux.maskedPaths") && err.contains("/dev/null"), "{err}");
        assert_eq!(host_value("/proc/sys/kernel/domainname"), before);
        b.assert_clean();
    }
    // With the runtime's own /dev the masked file reads empty and refuses writes.
    let mut b = Bundle::new("devnull-ours");
    let (code, out, err) = b.sh("echo pwned > /proc/timer_list 2>/dev/null; wc -c < /proc/timer_list; stat -c %t:%T /proc/timer_list");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["0", "1:3"], "masked by the null device");
    b.assert_clean();
}

/// A terminal is never bound over whatever an image's `/dev/console` symlink points to.
#[test]
fn the_terminal_is_not_bound_through_a_console_symlink() {
    let mut b = Bundle::new("console");
    use_the_images_dev(&mut b);
    // The image still needs a pty source: its own devpts.
    b.spec["mounts"].as_array_mut().unwrap().push(json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666"]}));
    let _ = fs::remove_file(b.rootfs().join("dev/ptmx"));
    symlink("pts/ptmx", b.rootfs().join("dev/ptmx")).unwrap();
    symlink("/proc/sys/kernel/domainname", b.rootfs().join("dev/console")).unwrap();
    // (Masking needs a null device, which this image lacks.)
    b.spec["linux"]["maskedPaths"] = json!([]);
    b.spec["process"]["terminal"] = json!(true);
    b.set_args(&["true"]).write_spec();
    let socket = b.dir.join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let out = b.runc(&["create", "--bundle", b.dir.to_str().unwrap(), "--console-socket", socket.to_str().unwrap(), &b.id]);
    drop(listener);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "created");
    assert!(err.contains("/dev/console") && err.contains("symlink"), "{err}");
    b.assert_clean();
}

/// A procfs write (a sysctl) goes only to procfs: a mount over part of `/proc` (from a volume, or a
/// racing container) makes create fail instead of writing somewhere else.
#[test]
fn sysctls_are_written_only_to_procfs() {
    let mut b = Bundle::new("fakeproc");
    let fake = b.dir.join("fake-net");
    fs::create_dir_all(fake.join("ipv4")).unwrap();
    fs::write(fake.join("ipv4/ip_forward"), "0").unwrap();
    b.spec["mounts"].as_array_mut().unwrap().push(json!({"destination": "/proc/sys/net", "type": "bind", "source": fake, "options": ["rbind"]}));
    b.spec["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    let (code, _, err) = b.sh("true");
    assert_ne!(code, 0);
    assert!(err.contains("linux.sysctl.net.ipv4.ip_forward") && err.contains("mounted over"), "{err}");
    assert_eq!(fs::read_to_string(fake.join("ipv4/ip_forward")).unwrap(), "0", "written to the fake");
    b.assert_clean();
}

/// Only sysctls of namespaces the container has to itself are written; keys are never paths.
#[test]
fn sysctls_outside_the_containers_namespaces_are_refused() {
    // The values are the host's own: should the runtime ever accept one of these keys again, the
    // test fails without having changed the host.
    let core_pattern = host_value("/proc/sys/kernel/core_pattern");
    for (key, value, reason) in [
        ("kernel.core_pattern", core_pattern.trim().to_owned(), "not in a separate kernel namespace"),
        ("kernel.printk_ratelimit", host_value("/proc/sys/kernel/printk_ratelimit").trim().to_owned(), "not in a separate kernel namespace"),
        ("/tmp/owned-by-a-sysctl", "x".to_owned(), "not a sysctl name"),
        ("vm.overcommit_memory", host_value("/proc/sys/vm/overcommit_memory").trim().to_owned(), "not in a separate kernel namespace"),
    ] {
        let mut b = Bundle::new("sysctl");
        b.spec["linux"]["sysctl"] = json!({key: value});
        let (code, _, err) = b.sh("true");
        assert_ne!(code, 0, "{key} was accepted");
        assert!(err.contains(&format!("linux.sysctl.{key}")) && err.contains(reason), "{err}");
        b.assert_clean();
    }
    assert_eq!(host_value("/proc/sys/kernel/core_pattern"), core_pattern);
    assert!(!std::path::Path::new("/tmp/owned-by-a-sysctl").exists());
    // A network sysctl is the container's own with its own network namespace, and refused without.
    let mut b = Bundle::new("sysctl-net");
    b.spec["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "net/ipv4/conf/lo/forwarding": "1"});
    let (code, out, err) = b.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/lo/forwarding");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1\n1\n");
    b.assert_clean();
    let mut b = Bundle::new("sysctl-hostnet");
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "network");
    b.spec["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    let (code, _, err) = b.sh("true");
    assert_ne!(code, 0);
    assert!(err.contains("host's network namespace"), "{err}");
    b.assert_clean();
}

/// A startContainer hook comes from the image and runs inside the container: it runs as the process
/// will, never as root with every capability (what the process may not do, its hook may not do).
#[test]
fn start_container_hooks_run_as_the_process() {
    let mut b = Bundle::new("starthook");
    let report = b.rootfs().join("report");
    fs::create_dir_all(&report).unwrap();
    fs::set_permissions(&report, fs::Permissions::from_mode(0o777)).unwrap();
    let hook = b.rootfs().join("evil-hook");
    fs::write(&hook, "#!/bin/sh\ngrep -E '^(Uid|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status > /report/hook\nmkdir /report/made-by-hook 2>/dev/null && echo mkdir-worked >> /report/hook\nexit 0\n").unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    b.spec["hooks"] = json!({"startContainer": [{"path": "/evil-hook"}]});
    b.spec["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    let caps = ["CAP_KILL", "CAP_CHOWN", "CAP_NET_BIND_SERVICE"];
    b.spec["process"]["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    b.spec["process"]["noNewPrivileges"] = json!(true);
    b.spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]});
    let (code, process, err) = b.sh("grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status");
    assert_eq!(code, 0, "{err}");
    let text = fs::read_to_string(report.join("hook")).unwrap();
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).map(str::trim).unwrap_or_default().to_owned();
    assert!(field("Uid").starts_with("1000"), "{text}");
    // CAP_CHOWN (0), CAP_KILL (5), CAP_NET_BIND_SERVICE (10) bound it; what a uid 1000 keeps of them
    // across its exec is what the process itself has.
    assert_eq!(field("CapBnd"), "0000000000000421", "{text}");
    assert_eq!(field("NoNewPrivs"), "1", "{text}");
    assert_eq!(field("Seccomp"), "2", "{text}");
    assert_eq!(text.lines().filter(|l| !l.starts_with("mkdir")).collect::<Vec<_>>(), process.lines().collect::<Vec<_>>(), "the hook is not confined like the process");
    assert!(!text.contains("mkdir-worked"), "the seccomp filter did not apply to the hook: {text}");
    b.assert_clean();
}

/// CVE-2024-21626: a working directory that names a descriptor the runtime left open would put the
/// process in the host's filesystem. No descriptor of a host directory is open when the process
/// changes directory: every such cwd fails or stays inside.
#[test]
fn the_working_directory_cannot_be_a_leaked_descriptor() {
    let marker = std::env::temp_dir().join(format!("myshim-cwd-marker-{}", std::process::id()));
    fs::write(&marker, "host\n").unwrap();
    for fd in 3..12 {
        let mut b = Bundle::new("leakedcwd");
        b.spec["process"]["cwd"] = json!(format!("/proc/self/fd/{fd}"));
        let climb = format!("../../../../../../../..{}", marker.display());
        let (code, out, _) = b.sh(&format!("cat {climb} 2>/dev/null; cat /proc/self/cwd/{climb} 2>/dev/null; true"));
        assert!(code != 0 || !out.contains("host"), "fd {fd}: the process reached the host: {out}");
        b.assert_clean();
    }
    fs::remove_file(&marker).unwrap();
}

/// A cgroup that holds another container's processes is refused (deleting one would kill both), and
/// refusing it leaves that container alone.
#[test]
fn a_cgroup_in_use_is_not_shared() {
    let mut first = Bundle::new("cgshare1");
    let pid = first.start_detached(&["sleep", "1000"]);
    let mut second = Bundle::new("cgshare2");
    second.spec["linux"]["cgroupsPath"] = first.spec["linux"]["cgroupsPath"].clone();
    let (code, _, err) = second.sh("true");
    assert_ne!(code, 0);
    assert!(err.contains("linux.cgroupsPath") && err.contains("another container"), "{err}");
    assert!(!status_field(pid, "State").is_empty() && !status_field(pid, "State").starts_with('Z'), "the first container was killed");
    assert!(first.runc_detached(&["delete", "--force", &first.id]));
    first.assert_clean();
}

/// Page sizes become file names: one that is not a size is refused before anything is made.
#[test]
fn hugetlb_page_sizes_are_checked() {
    let mut b = Bundle::new("hugetlb");
    b.spec["linux"]["resources"]["hugepageLimits"] = json!([{"pageSize": "../../../../tmp/x", "limit": 1}]);
    let (code, _, err) = b.sh("true");
    assert_ne!(code, 0);
    assert!(err.contains("hugepageLimits[0].pageSize"), "{err}");
    b.assert_clean();
}

/// An update the kernel refuses half-way is undone: the limits written before the refusal are put
/// back, and a contradictory one is refused before anything is written.
#[test]
fn update_is_all_or_nothing() {
    let mut b = Bundle::new("update");
    b.spec["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
    b.spec["linux"]["resources"]["pids"] = json!({"limit": 50});
    b.start_detached(&["sleep", "1000"]);
    let read = |hierarchy: &str, file: &str| fs::read_to_string(b.cgroup_dir(hierarchy).join(file)).unwrap().trim().to_owned();
    let memory_limit = || fs::read_to_string(b.memory_limit_file()).unwrap().trim().to_owned();
    let update = |resources: serde_json::Value| {
        let file = b.dir.join("resources.json");
        fs::write(&file, resources.to_string()).unwrap();
        b.runc(&["update", "--resources", file.to_str().unwrap(), &b.id])
    };
    // The memory limit is written first, then the kernel refuses a CPU that does not exist.
    let out = update(json!({"memory": {"limit": 32 << 20}, "cpu": {"cpus": "4095"}}));
    assert!(!out.status.success());
    assert_eq!(memory_limit(), (64u64 << 20).to_string(), "rolled back");
    // Swap (memory+swap) below the memory limit: refused up front, naming the field.
    let out = update(json!({"memory": {"limit": 128 << 20, "swap": 96 << 20}}));
    assert!(String::from_utf8_lossy(&out.stderr).contains("linux.resources.memory.swap"), "{out:?}");
    assert_eq!(memory_limit(), (64u64 << 20).to_string());
    // A good update goes through.
    assert!(update(json!({"memory": {"limit": 128 << 20}, "pids": {"limit": 20}})).status.success());
    assert_eq!(memory_limit(), (128u64 << 20).to_string());
    assert_eq!(read("pids", "pids.max"), "20");
    assert!(b.runc_detached(&["delete", "--force", &b.id]));
    b.assert_clean();
}

/// `/proc` and `/sys` only on directories of the image: a symlink there (to anywhere) is refused,
/// as runc refuses it (CVE-2023-27561 came through a symlinked `/proc`).
#[test]
fn proc_and_sys_only_on_ordinary_directories() {
    for (dir, kind) in [("proc", "proc"), ("sys", "sysfs")] {
        let mut b = Bundle::new(&format!("link{dir}"));
        fs::create_dir_all(b.rootfs().join("elsewhere")).unwrap();
        fs::remove_dir(b.rootfs().join(dir)).unwrap();
        symlink("/elsewhere", b.rootfs().join(dir)).unwrap();
        let (code, _, err) = b.sh("true");
        assert_ne!(code, 0, "{dir} through a symlink was mounted");
        assert!(err.contains(&format!("mount destination /{dir}")) && err.contains(&format!("{kind} must be mounted on an ordinary directory")), "{err}");
        b.assert_clean();
    }
}
