//! The container's filesystem: read-only root, propagation, mount options, destinations that stay
//! inside the rootfs, masked and read-only paths, devices, sysctl, host and domain names. Run as root.

mod common;

use std::fs;

use common::Bundle;
use serde_json::json;

fn add_mount(b: &mut Bundle, mount: serde_json::Value) {
    b.spec["mounts"].as_array_mut().unwrap().push(mount);
}

#[test]
fn read_only_root_and_propagation() {
    let mut b = Bundle::new("rofs");
    b.spec["root"]["readonly"] = json!(true);
    b.spec["linux"]["rootfsPropagation"] = json!("shared");
    let (code, out, err) = b.sh("touch /x 2>&1; awk '$5 == \"/\"' /proc/self/mountinfo");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains(" ro,") || out.contains(" ro "), "root mounted read-only: {out}");
    assert!(out.contains("shared:"), "rootfsPropagation shared: {out}");
    b.assert_clean();
}

#[test]
fn mount_options_take_effect() {
    let mut b = Bundle::new("mountopts");
    let data = b.dir.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("file"), "host data\n").unwrap();
    add_mount(&mut b, json!({"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "ro", "nosuid", "nodev", "noexec", "noatime"]}));
    add_mount(&mut b, json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "mode=700", "nosuid"]}));
    add_mount(&mut b, json!({"destination": "/slave", "type": "tmpfs", "source": "tmpfs", "options": ["rslave"]}));
    let (code, out, err) = b.sh("cat /data/file; touch /data/new 2>&1; grep ' /data ' /proc/self/mounts; stat -c %a /scratch; df -k /scratch | tail -1; grep -c ' /slave ' /proc/self/mountinfo");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "host data");
    assert!(lines[1].contains("Read-only"), "{out}");
    for option in ["ro", "nosuid", "nodev", "noexec", "noatime"] {
        assert!(lines[2].split_whitespace().nth(3).unwrap().split(',').any(|o| o == option), "{option} in {}", lines[2]);
    }
    assert_eq!(lines[3], "700");
    assert_eq!(lines[4].split_whitespace().nth(1), Some("1024"), "tmpfs size=1m: {}", lines[4]);
    assert_eq!(lines[5], "1");
    assert!(!data.join("new").exists());
    b.assert_clean();
}

/// A symlink in the image can never redirect a mount to the host.
#[test]
fn mount_destinations_stay_inside_the_rootfs() {
    let mut b = Bundle::new("escape");
    let host_target = std::env::temp_dir().join(format!("myshim-escape-target-{}", std::process::id()));
    fs::create_dir_all(&host_target).unwrap();
    // /escape -> a long way up and into the host's temp dir; /abs -> an absolute host path.
    std::os::unix::fs::symlink(format!("../../../../../../../..{}", host_target.display()), b.rootfs().join("escape")).unwrap();
    std::os::unix::fs::symlink(&host_target, b.rootfs().join("abs")).unwrap();
    add_mount(&mut b, json!({"destination": "/escape/mounted", "type": "tmpfs", "source": "tmpfs"}));
    add_mount(&mut b, json!({"destination": "/abs/mounted", "type": "tmpfs", "source": "tmpfs"}));
    let (code, _, err) = b.sh("true");
    assert_eq!(code, 0, "{err}");
    assert!(!host_target.join("mounted").exists(), "a directory was created on the host");
    assert!(b.rootfs().join(host_target.strip_prefix("/").unwrap()).join("mounted").exists(), "resolved inside the rootfs");
    let _ = fs::remove_dir_all(&host_target);
    b.assert_clean();

    // proc may not land on the root itself through a symlink (/proc -> /).
    let mut b = Bundle::new("procsymlink");
    fs::remove_dir(b.rootfs().join("proc")).unwrap();
    std::os::unix::fs::symlink("/", b.rootfs().join("proc")).unwrap();
    let (code, _, err) = b.sh("true");
    assert_ne!(code, 0);
    assert!(err.contains("mount destination /proc") && err.contains("ordinary directory") && err.contains("symlink"), "{err}");
    b.assert_clean();
}

#[test]
fn masked_and_read_only_paths() {
    let mut b = Bundle::new("masked");
    let (code, out, err) = b.sh("wc -c < /proc/keys; ls /sys/firmware | wc -l; (echo x > /proc/sys/kernel/domainname) 2>&1; grep ' /proc/sys ' /proc/self/mounts | cut -d' ' -f4");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "0", "/proc/keys masked");
    assert_eq!(lines[1].trim(), "0", "/sys/firmware masked");
    assert!(lines[2].contains("Read-only"), "{out}");
    assert!(lines[3].starts_with("ro"), "{out}");
    b.assert_clean();
}

#[test]
fn devices_links_sysctl_and_names() {
    let mut b = Bundle::new("devices");
    b.spec["linux"]["devices"] = json!([{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 0o620, "uid": 0, "gid": 0}]);
    b.spec["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "rw"}]);
    b.spec["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    b.spec["domainname"] = json!("example.test");
    let (code, out, err) = b.sh(
        "stat -c '%F %t:%T %a' /dev/kmsg /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; \
         for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done; \
         cat /proc/sys/net/ipv4/ip_forward; hostname; cat /proc/sys/kernel/domainname; echo test > /dev/kmsg && echo kmsg-ok",
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "character special file 1:b 620");
    assert!(lines[1..7].iter().all(|l| l.starts_with("character special file") && l.ends_with("666")), "{out}");
    assert_eq!(&lines[7..12], ["/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2", "pts/ptmx"]);
    assert_eq!(lines[12], "1", "sysctl in the container's network namespace");
    assert_eq!(lines[13], "myshim-test");
    assert_eq!(lines[14], "example.test");
    assert_eq!(lines[15], "kmsg-ok", "allowed by the device rules");
    b.assert_clean();

    // Without the allow rule the device controller refuses it.
    let mut b = Bundle::new("devdeny");
    b.spec["linux"]["devices"] = json!([{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]);
    let (_, out, _) = b.sh("echo test > /dev/kmsg 2>&1 || echo denied");
    assert!(out.contains("denied"), "{out}");
    b.assert_clean();
}

#[test]
fn bad_mounts_name_the_field() {
    let mut b = Bundle::new("badmount");
    add_mount(&mut b, json!({"destination": "relative/path", "type": "tmpfs", "source": "tmpfs"}));
    let (code, _, err) = b.sh("true");
    assert_ne!(code, 0);
    assert!(err.contains("mounts[7].destination"), "{err}");
    b.assert_clean();

    let mut b = Bundle::new("badfs");
    add_mount(&mut b, json!({"destination": "/x", "type": "nosuchfs", "source": "none"}));
    let (code, _, err) = b.sh("true");
    assert_ne!(code, 0);
    assert!(err.contains("mounts[7]") && err.contains("nosuchfs"), "{err}");
    b.assert_clean();
}

/// Recursive mount attributes (`rro`, `rnoexec`, …) reach every mount of the tree, where `ro` only
/// changes the top one.
#[test]
fn recursive_mount_attributes_cover_submounts() {
    let mut b = Bundle::new("rro");
    let data = b.dir.join("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    let status = std::process::Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(data.join("sub")).status().unwrap();
    assert!(status.success());
    add_mount(&mut b, json!({"destination": "/plain", "type": "bind", "source": data, "options": ["rbind", "ro"]}));
    add_mount(&mut b, json!({"destination": "/recursive", "type": "bind", "source": data, "options": ["rbind", "rro", "rnoexec"]}));
    let (code, out, err) = b.sh("touch /plain/sub/x 2>&1 && echo plain-sub-writable; touch /recursive/sub/x 2>&1; grep ' /recursive/sub ' /proc/self/mountinfo");
    let _ = std::process::Command::new("umount").arg(data.join("sub")).status();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("plain-sub-writable"), "ro is not recursive: {out}");
    assert!(out.contains("Read-only file system"), "rro reaches the submount: {out}");
    let line = out.lines().find(|l| l.contains(" /recursive/sub ")).unwrap_or_default();
    assert!(line.split_whitespace().nth(5).is_some_and(|o| o.split(',').any(|f| f == "ro") && o.split(',').any(|f| f == "noexec")), "{line}");
    b.assert_clean();
}

/// With `rootfsPropagation: rshared` (Kubernetes' bidirectional mounts) and the rootfs a mount point
/// of its own (containerd's overlay), the rootfs mount itself is made private for pivot_root.
#[test]
fn rshared_propagation_with_the_rootfs_a_mount_point() {
    let mut b = Bundle::new("rshared");
    let rootfs = b.rootfs();
    let volume = b.dir.join("volume");
    fs::create_dir_all(&volume).unwrap();
    let mounted = |args: &[&str]| std::process::Command::new("mount").args(args).status().unwrap().success();
    for dir in [&rootfs, &volume] {
        assert!(mounted(&["--bind", dir.to_str().unwrap(), dir.to_str().unwrap()]));
        assert!(mounted(&["--make-shared", dir.to_str().unwrap()]));
    }
    // What Kubernetes' bidirectional propagation gives: a shared volume, and a mount made in the
    // container reaches the host.
    b.spec["linux"]["rootfsPropagation"] = json!("rshared");
    b.spec["mounts"].as_array_mut().unwrap().push(json!({"destination": "/vol", "type": "bind", "source": volume, "options": ["rbind", "rshared"]}));
    b.spec["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push(json!("CAP_SYS_ADMIN"));
    b.spec["process"]["capabilities"]["effective"].as_array_mut().unwrap().push(json!("CAP_SYS_ADMIN"));
    b.spec["process"]["capabilities"]["permitted"].as_array_mut().unwrap().push(json!("CAP_SYS_ADMIN"));
    let (code, out, err) = b.sh("awk '$5 == \"/\"' /proc/self/mountinfo; mkdir /vol/made && mount -t tmpfs made /vol/made");
    let reached_host = fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == volume.join("made").to_str());
    for dir in [volume.join("made"), volume, rootfs] {
        let _ = std::process::Command::new("umount").arg(&dir).status();
    }
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shared:"), "rshared: {out}");
    assert!(reached_host, "the container's mount did not propagate to the host");
    b.assert_clean();
}
