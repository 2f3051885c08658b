//! containerd 2.1's own runc shim (`io.containerd.runc.v2`) driving `myshim-runc` as its runc
//! binary (`ctr run --runc-binary`): the runtime is a drop-in runc, checkpoint and restore included.

use myshim_integration::api::TasksApi;
use myshim_integration::{host, image, leaks, paths, Containerd, Version};

#[test]
fn containerd_runc_shim_drives_myshim_runc() {
    let c = Containerd::start(Version::V2_1, "runc-cli");
    let runc = paths::shim_dir().join("myshim-runc");
    let runc = runc.to_str().unwrap();
    c.track("once");
    let out = c.ctr(&["run", "--runc-binary", runc, "--rm", image::BUSYBOX, "once", "sh", "-c", "echo via the runc shim; exit 4"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert_eq!(out.stdout, "via the runc shim\n");

    c.track("long");
    c.ctr(&["run", "--runc-binary", runc, "-d", image::BUSYBOX, "long", "sleep", "1000"]).ok();
    assert_eq!(c.task_status("long").as_deref(), Some("RUNNING"));
    let exec = c.ctr(&["task", "exec", "--exec-id", "e", "long", "sh", "-c", "echo $$ from exec; exit 2"]);
    assert_eq!(exec.code, 2, "{}", exec.stderr);
    assert!(exec.stdout.ends_with(" from exec\n"), "{}", exec.stdout);
    c.ctr(&["task", "pause", "long"]).ok();
    assert_eq!(c.task_status("long").as_deref(), Some("PAUSED"));
    c.ctr(&["task", "resume", "long"]).ok();
    assert!(c.ctr(&["task", "ps", "long"]).ok().stdout.lines().count() >= 2);
    // `update --resources -` with the resources on stdin, as the runc shim sends them.
    let api = TasksApi::connect(&c.socket(), &c.namespace);
    api.update("long", serde_json::json!({"memory": {"limit": 100663296}})).expect("Update through the runc shim");
    let limit_file = host::cgroup_file(&host::cgroup_relative(&c.namespace, "long"), "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(std::fs::read_to_string(&limit_file).unwrap().trim(), "100663296", "{}", limit_file.display());

    // Checkpoint and live restore as the runc shim drives them (`checkpoint --image-path --work-path
    // --leave-running …`, `restore --detach --pid-file --no-subreaper …`), with CRIU on PATH.
    c.ctr(&["container", "checkpoint", "--task", "--rw", "long", "localhost/myshim/runc-cli-checkpoint:1"]).ok();
    assert_eq!(c.task_status("long").as_deref(), Some("RUNNING"));
    c.remove("long");
    c.track("back");
    c.ctr(&["container", "restore", "--live", "--rw", "back", "localhost/myshim/runc-cli-checkpoint:1"]).ok();
    assert_eq!(c.task_status("back").as_deref(), Some("RUNNING"));
    let inside = c.ctr(&["task", "exec", "--exec-id", "look", "back", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"]).ok();
    assert_eq!(inside.stdout.trim(), "sleep 1000", "the restored init");
    c.remove("back");
    let _ = c.ctr(&["image", "rm", "localhost/myshim/runc-cli-checkpoint:1"]);
    assert!(leaks::container_processes(&c.namespace).is_empty());
    c.assert_no_leftovers();
}
