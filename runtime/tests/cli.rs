//! `myshim-runc` as runc's command line: the lifecycle verbs, state documents, exit statuses, logs,
//! and bad specs that leave nothing behind. Run as root.

mod common;

use std::fs;

use common::{Bundle, SpecCase};
use serde_json::{json, Value};

fn state(b: &Bundle) -> Value {
    serde_json::from_slice(&b.runc(&["state", &b.id]).stdout).unwrap()
}

#[test]
fn create_start_state_pause_kill_delete() {
    let mut b = Bundle::new("lifecycle");
    b.set_args(&["sleep", "30"]).write_spec();
    let pid_file = b.dir.join("init.pid");
    assert!(b.runc_detached(&["create", "--bundle", b.dir.to_str().unwrap(), "--pid-file", pid_file.to_str().unwrap(), &b.id]));
    let created = state(&b);
    assert_eq!(created["status"], "created");
    assert_eq!(created["pid"].as_u64().unwrap().to_string(), fs::read_to_string(&pid_file).unwrap());
    assert_eq!(created["bundle"], b.dir.to_str().unwrap());
    assert!(created["created"].as_str().unwrap().ends_with('Z'), "RFC 3339: {created}");
    assert!(b.runc(&["start", &b.id]).status.success());
    assert_eq!(state(&b)["status"], "running");
    assert!(b.runc(&["pause", &b.id]).status.success());
    assert_eq!(state(&b)["status"], "paused");
    assert!(b.runc(&["resume", &b.id]).status.success());
    assert_eq!(state(&b)["status"], "running");
    let refused = b.runc(&["delete", &b.id]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("not stopped"));
    assert!(b.runc(&["kill", &b.id, "KILL"]).status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state(&b)["status"] != "stopped" {
        assert!(std::time::Instant::now() < deadline, "still {}", state(&b));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(state(&b)["pid"], 0);
    assert!(b.runc(&["delete", &b.id]).status.success());
    assert!(!b.runc(&["state", &b.id]).status.success());
    b.assert_clean();
}

#[test]
fn run_returns_the_exit_status() {
    let mut b = Bundle::new("status");
    let (code, out, _) = b.sh("echo out; exit 42");
    assert_eq!((code, out.as_str()), (42, "out\n"));
    // Killed from outside: 128 + SIGKILL.
    b.set_args(&["sleep", "30"]).write_spec();
    let mut run = std::process::Command::new(common::RUNC)
        .args(common::driver_flag())
        .arg("--root")
        .arg(&b.root)
        .args(["run", "--bundle", b.dir.to_str().unwrap(), &b.id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.runc(&["state", &b.id]).status.success() || state(&b)["status"] != "running" {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(b.runc(&["kill", &b.id, "9"]).status.success());
    assert_eq!(run.wait().unwrap().code(), Some(137));
    b.assert_clean();
}

#[test]
fn errors_are_logged_as_json_for_containerd() {
    let mut b = Bundle::new("jsonlog");
    b.set_args(&["/nope"]).write_spec();
    let log = b.dir.join("log.json");
    let out = b.runc(&["--log", log.to_str().unwrap(), "--log-format", "json", "run", "--bundle", b.dir.to_str().unwrap(), &b.id]);
    assert!(!out.status.success());
    let line: Value = serde_json::from_str(fs::read_to_string(&log).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("/nope"), "{line}");
    b.assert_clean();
}

#[test]
fn features_document() {
    let b = Bundle::new("features");
    let doc: Value = serde_json::from_slice(&b.runc(&["features"]).stdout).unwrap();
    assert_eq!(doc["ociVersionMax"], "1.2.0");
    assert!(doc["linux"]["namespaces"].as_array().unwrap().contains(&json!("user")));
    assert_eq!(doc["linux"]["seccomp"]["enabled"], true);
}

/// Bad specs fail with the field named, and leave no mount, cgroup, state or process.
#[test]
fn bad_specs_name_the_field_and_leave_nothing() {
    let cases: Vec<SpecCase> = vec![
        ("unknown namespace", Box::new(|b: &mut Bundle| b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "bogus"}))), "linux.namespaces[5].type"),
        ("invalid mount", Box::new(|b: &mut Bundle| b.spec["mounts"].as_array_mut().unwrap().push(json!({"destination": "rel", "type": "tmpfs"}))), "mounts[7].destination"),
        ("missing args", Box::new(|b: &mut Bundle| { b.spec["process"].as_object_mut().unwrap().remove("args"); }), "process.args"),
        ("escaping destination", Box::new(|b: &mut Bundle| {
            fs::remove_dir(b.rootfs().join("proc")).unwrap();
            std::os::unix::fs::symlink("/", b.rootfs().join("proc")).unwrap();
        }), "mount destination /proc"),
        ("malformed json", Box::new(|b: &mut Bundle| { b.spec["process"]["user"]["uid"] = json!("root"); }), "process.user.uid"),
    ];
    for (what, change, expected) in cases {
        let mut b = Bundle::new("badspec");
        change(&mut b);
        b.write_spec();
        let out = b.runc(&["create", "--bundle", b.dir.to_str().unwrap(), &b.id]);
        assert!(!out.status.success(), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{what}: {err}");
        b.assert_clean();
    }
}
