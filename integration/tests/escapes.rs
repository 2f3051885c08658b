//! Escape attempts from inside containers, run through containerd 2.1 with a hostile image (see
//! `image::hostile_archive`; the attempts are `integration/escape/escape.c`). All must fail.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use myshim_integration::containerd::RUNTIME;
use myshim_integration::image::{self, HOSTILE};
use myshim_integration::{leaks, paths, Containerd, Version};
use sha2::{Digest, Sha256};

/// A containerd 2.1 with the hostile image, and a scratch directory.
fn setup(name: &str) -> (Containerd, paths::Scratch) {
    let c = Containerd::start(Version::V2_1, name);
    let dir = paths::scratch(name);
    let archive = image::hostile_archive(&dir);
    c.ctr(&["images", "import", archive.to_str().unwrap()]).ok();
    (c, dir)
}

/// `ctr run --rm <extra…> hostile <id> <command…>`.
fn run(c: &Containerd, id: &str, extra: &[&str], command: &[&str]) -> myshim_integration::containerd::CliOutput {
    c.track(id);
    let mut args = vec!["run", "--runtime", RUNTIME, "--rm"];
    args.extend_from_slice(extra);
    args.push(HOSTILE);
    args.push(id);
    args.extend_from_slice(command);
    c.ctr(&args)
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn chroot_escape_stays_inside() {
    let (c, dir) = setup("chroot");
    let marker = dir.join("host-only-marker");
    std::fs::write(&marker, "host").unwrap();
    let out = run(&c, "jail", &[], &["/escape", "chroot", marker.to_str().unwrap()]).ok();
    assert_eq!(lines(&out.stdout), ["chroot-jail ok", "chroot-dot ok", "host-marker absent", "container-root visible"], "{}", out.stdout);
    c.assert_no_leftovers();
}

/// CVE-2019-5736: a process in the container catches processes running the host's runtime binary
/// (the helper, and the binary run as the interpreter of `#!/proc/self/exe`) and tries to open their
/// executable for writing, to make its mount writable from a user namespace of its own and change
/// its mode, and to run it as the shim. It reaches the binary only read-only, whatever it does to the
/// mount, the binary refuses to act as the shim there, and the binary stays intact.
#[test]
fn host_binary_cannot_be_overwritten_through_proc_exe() {
    let (c, _scratch) = setup("procexe");
    let binary = paths::shim_binary();
    let before = Sha256::digest(std::fs::read(&binary).unwrap());
    c.track("victim");
    c.ctr(&["run", "--runtime", RUNTIME, "-d", HOSTILE, "victim", "sleep", "100000"]).ok();
    let attacker = c.ctr_command(&["task", "exec", "--exec-id", "attacker", "victim", "/escape", "exe-race", "8"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut n = 0;
    while Instant::now() < deadline {
        // The interpreter trick: the helper execs a script whose interpreter is /proc/self/exe.
        let trick = c.ctr(&["task", "exec", "--exec-id", &format!("trick{n}"), "victim", "/evil-sh"]);
        assert_ne!(trick.code, 0, "the runtime binary acted on the script's arguments: {}", trick.stdout);
        assert!(trick.stderr.contains("refusing to run") || trick.stdout.contains("refusing to run"), "{} {}", trick.stdout, trick.stderr);
        c.ctr(&["task", "exec", "--exec-id", &format!("plain{n}"), "victim", "true"]).ok();
        n += 1;
    }
    let out = attacker.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = report.lines().find(|l| l.starts_with("summary ")).unwrap_or_else(|| panic!("no summary: {report}"));
    let field = |name: &str| -> u32 {
        summary.split(' ').find_map(|kv| kv.strip_prefix(&format!("{name}="))).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} in {summary}"))
    };
    eprintln!("{summary}");
    assert_eq!(field("opened-for-writing"), 0, "{report}");
    assert!(field("host") >= 1, "the attacker never caught a host binary in {n} tries: {report}");
    assert!(field("path-opened") >= 1, "the interpreter trick never exposed the binary: {report}");
    assert_eq!(field("path-read-only"), field("path-opened"), "reachable on a writable mount: {report}");
    assert!(!report.contains("writable mount"), "{report}");
    // From a user namespace of its own the container cleared the mount's read-only flag: the
    // binary stays read-only below the mount. And run with the shim's command line, it refuses.
    assert_eq!(field("unlocked"), 0, "{report}");
    assert_eq!(field("acted"), 0, "{report}");
    assert_eq!(Sha256::digest(std::fs::read(&binary).unwrap()), before, "the shim binary changed");
    c.remove("victim");
    c.assert_no_leftovers();
}

/// Under containerd's default seccomp profile (`ctr run --seccomp`), mount, umount, unshare and the
/// keyring calls fail with EPERM; without it, unshare and keyctl work (so the profile is what stops them).
#[test]
fn default_seccomp_profile_blocks_syscalls() {
    let (c, _scratch) = setup("seccomp");
    let with = run(&c, "with", &["--seccomp"], &["/escape", "syscalls"]).ok();
    assert_eq!(
        lines(&with.stdout),
        ["mount-tmpfs EPERM", "umount-proc EPERM", "unshare-user EPERM", "unshare-mount EPERM", "keyctl-join EPERM", "add-key EPERM"],
        "{}",
        with.stdout
    );
    let without = run(&c, "without", &[], &["/escape", "syscalls"]).ok();
    let without = lines(&without.stdout);
    assert!(without.contains(&"unshare-user ok") && without.contains(&"keyctl-join ok"), "{without:?}");
    assert!(without.contains(&"mount-tmpfs EPERM") && without.contains(&"umount-proc EPERM"), "no CAP_SYS_ADMIN: {without:?}");
    c.assert_no_leftovers();
}

/// Masked paths read as empty (those this kernel has), read-only paths refuse writes.
#[test]
fn masked_and_read_only_paths() {
    let (c, _scratch) = setup("masked");
    let masked = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"];
    let read_only: Vec<&str> = ["/proc/sys/kernel/hostname", "/proc/sysrq-trigger", "/proc/irq/default_smp_affinity"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    let writes: String = read_only.iter().map(|p| format!("echo 0 > {p} 2>&1 || true; ")).collect();
    let script = format!("/escape open {}; echo firmware $(ls -A /sys/firmware | wc -l); {writes}", masked.join(" "));
    let out = run(&c, "masked", &[], &["sh", "-c", &script]);
    let text = format!("{}{}", out.stdout, out.stderr);
    for path in masked {
        // What this kernel has is masked; what it lacks stays absent.
        let expected = if Path::new(path).exists() { format!("open {path} read 0") } else { format!("open {path} ENOENT") };
        assert!(text.contains(&expected), "{expected}: {text}");
    }
    assert!(text.contains("firmware 0"), "{text}");
    assert_eq!(text.matches("Read-only file system").count(), read_only.len(), "{text}");
    assert_ne!(std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim(), "0");
    c.assert_no_leftovers();
}

/// Device nodes of host devices, made in the container or shipped in the image, cannot be opened.
#[test]
fn host_devices_stay_out_of_reach() {
    let (c, _scratch) = setup("devices");
    let out = run(&c, "devices", &[], &["sh", "-c", "/escape mknod-open; /escape open /evil/mem /evil/sda"]).ok();
    let text = out.stdout;
    for node in ["/tmp/sda", "/tmp/vda", "/tmp/mem", "/tmp/kmsg", "/evil/mem", "/evil/sda"] {
        assert!(text.contains(&format!("open {node} EPERM")), "{node}: {text}");
    }
    c.assert_no_leftovers();
}

/// A setuid-root binary gives a non-root user root only when no_new_privileges is off.
#[test]
fn setuid_binaries_respect_no_new_privileges() {
    let (c, _scratch) = setup("setuid");
    let confined = run(&c, "nnp", &["--user", "1000:1000"], &["/escape-suid", "euid"]).ok();
    assert_eq!(confined.stdout, "euid 1000\n");
    let allowed = run(&c, "newprivs", &["--user", "1000:1000", "--allow-new-privs"], &["/escape-suid", "euid"]).ok();
    assert_eq!(allowed.stdout, "euid 0\n", "the image's setuid bit works when allowed");
    c.assert_no_leftovers();
}

/// Mount destinations that are symlinks out of the root resolve inside it: `/sneaky -> /` cannot take
/// a proc mount over the root, and a bind mount on `/hostdir -> ../../../..<host path>` lands in
/// the container, never on the host path.
#[test]
fn symlinks_out_of_the_root() {
    let (c, dir) = setup("symlinks");
    let proc_on_root = run(&c, "sneaky", &["--mount", "type=proc,src=proc,dst=/sneaky"], &["true"]);
    assert_ne!(proc_on_root.code, 0);
    assert!(proc_on_root.stderr.contains("/sneaky") && proc_on_root.stderr.contains("ordinary directory"), "{}", proc_on_root.stderr);

    let source = dir.join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("payload"), "inside\n").unwrap();
    let host_target = image::hostile_symlink_target();
    let mount = format!("type=bind,src={},dst=/hostdir,options=rbind:ro", source.display());
    let script = format!("cat /hostdir/payload; cat {}/payload", host_target.display());
    let out = run(&c, "climb", &["--mount", &mount], &["sh", "-c", &script]).ok();
    assert_eq!(out.stdout, "inside\ninside\n", "the mount is at the symlink's target inside the root");
    assert!(!Path::new(&host_target).exists(), "{} appeared on the host", host_target.display());
    assert!(leaks::mounts_under(&host_target).is_empty());
    c.assert_no_leftovers();
}
