//! Checkpoint and restore with CRIU through real containerd: `ctr containers checkpoint --task` and
//! `restore --live` (containerd's client: pause, Checkpoint, resume; Create with the checkpoint, then
//! Start), the task API's Checkpoint with runc's options (exit, a paused container, a terminal), and
//! the errors an operator meets. CRIU is on containerd's PATH, where an operator installs it.

use std::time::{Duration, Instant};

use myshim_integration::api::TasksApi;
use myshim_integration::events::Events;
use myshim_integration::{host, paths, Containerd, Version};
use myshim_protos::containerd::runc::v1::CheckpointOptions;

/// A counter the tests can read: it puts the next number into /tmp/count every 100 ms (renamed into
/// place, so a reader never sees the file half-written).
const COUNTER: &[&str] = &["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/next; mv /tmp/next /tmp/count; sleep 0.1; done"];
/// The same, also printing each number (to its terminal).
const TALKING_COUNTER: &[&str] = &["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/next; mv /tmp/next /tmp/count; echo tick-$i; sleep 0.1; done"];

fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The counter's current value inside container `id`, read through an exec.
fn count(c: &Containerd, id: &str) -> u64 {
    let out = c.ctr(&["task", "exec", "--exec-id", &format!("read-{}", std::process::id()), id, "cat", "/tmp/count"]);
    out.stdout.trim().parse().unwrap_or_else(|_| panic!("read the counter of {id}: {:?} {:?}", out.stdout, out.stderr))
}

/// Runs ctr under a pseudo-terminal (`script`: ctr wants one for a terminal container, even detached);
/// its exit code and what it printed.
fn under_pty(c: &Containerd, args: &[&str]) -> (i32, String) {
    let ctr = c.version.bin_dir().join("ctr");
    let mut line = format!("{} --address {} --namespace {}", ctr.display(), c.socket().display(), c.namespace);
    for arg in args {
        line.push_str(&format!(" '{}'", arg.replace('\'', "'\\''")));
    }
    let out = std::process::Command::new("script").args(["-qefc", &line, "/dev/null"]).stdin(std::process::Stdio::null()).output().expect("run script(1)");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The container's init pid on the host (`ctr task ls`).
fn task_pid(c: &Containerd, id: &str) -> u32 {
    let tasks = c.ctr(&["task", "ls"]).ok().stdout;
    tasks.lines().find(|l| l.starts_with(&format!("{id} "))).and_then(|l| l.split_whitespace().nth(1)).and_then(|p| p.parse().ok()).expect("the task")
}

/// Checkpoint leaving the container running, then (the original gone) a live restore into a container
/// of another id: the counter goes on from where it was, in the new container's cgroup, with exec,
/// events and exit as for a started container.
fn live_restore(version: Version) {
    live_restore_with(version, None);
}

fn live_restore_with(version: Version, shim_config: Option<&str>) {
    let c = Containerd::start_with(version, "ckpt", shim_config);
    let events = Events::watch(&c);
    c.run_detached("counter", COUNTER);
    wait_for(|| c.ctr(&["task", "exec", "--exec-id", "probe", "counter", "test", "-s", "/tmp/count"]).code == 0, "the counter's first number");

    // A file in the container's writable layer, which `--rw` carries over.
    c.ctr(&["task", "exec", "--exec-id", "mark", "counter", "sh", "-c", "echo kept > /rw-marker"]).ok();
    let image = format!("localhost/myshim/checkpoint-{}:1", version.dir_name());
    c.ctr(&["container", "checkpoint", "--task", "--rw", "counter", &image]).ok();
    let at_checkpoint = count(&c, "counter");
    assert_eq!(c.task_status("counter").as_deref(), Some("RUNNING"), "the checkpointed container goes on running");
    wait_for(|| count(&c, "counter") > at_checkpoint + 3, "the original counting on");
    c.remove("counter");

    c.track("restored");
    c.ctr(&["container", "restore", "--live", "--rw", "restored", &image]).ok();
    assert_eq!(c.task_status("restored").as_deref(), Some("RUNNING"));
    assert_eq!(c.ctr(&["task", "exec", "--exec-id", "marked", "restored", "cat", "/rw-marker"]).ok().stdout, "kept\n", "the writable layer came along");
    let resumed = count(&c, "restored");
    assert!(resumed >= at_checkpoint.saturating_sub(1), "restored at {resumed}, checkpointed at {at_checkpoint}");
    wait_for(|| count(&c, "restored") > resumed + 3, "the restored counter counting on");
    // The restored init: pid 1 of its pid namespace, in the new container's cgroup.
    let inside = c.ctr(&["task", "exec", "--exec-id", "ps", "restored", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"]).ok();
    assert!(inside.stdout.contains("while :"), "pid 1 is the counter: {:?}", inside.stdout);
    let group = host::process_cgroup(task_pid(&c, "restored"));
    assert!(group.ends_with(&host::cgroup_relative(&c.namespace, "counter")), "{group}");

    c.ctr(&["task", "kill", "-s", "KILL", "restored"]).ok();
    assert!(events.wait_for("restored", "/tasks/exit", Duration::from_secs(10)));
    c.remove("restored");
    assert!(events.wait_for("restored", "/tasks/delete", Duration::from_secs(10)));
    let topics = events.topics_of("restored");
    let first = |t: &str| topics.iter().position(|x| x == t).unwrap_or_else(|| panic!("no {t} in {topics:?}"));
    assert!(first("/tasks/create") < first("/tasks/start") && first("/tasks/start") < first("/tasks/exit"), "{topics:?}");
    let _ = c.ctr(&["image", "rm", &image]);
    c.assert_no_leftovers();
}

/// runc's options through containerd's task API: exit after the dump (the container ends, its exit
/// reported), a paused container (stays paused), open TCP connections, and a terminal container.
fn task_api_options(version: Version) {
    let c = Containerd::start(version, "ckpt-opts");
    let api = TasksApi::connect(&c.socket(), &c.namespace);
    let dir = paths::scratch("ckpt-opts");

    // Paused: dumped while frozen, still paused afterwards.
    c.run_detached("frozen", COUNTER);
    wait_for(|| c.ctr(&["task", "exec", "--exec-id", "probe", "frozen", "test", "-s", "/tmp/count"]).code == 0, "the counter's first number");
    c.ctr(&["task", "pause", "frozen"]).ok();
    let image = dir.join("frozen");
    api.checkpoint("frozen", &CheckpointOptions { image_path: image.display().to_string(), ..Default::default() }).expect("checkpoint a paused container");
    assert!(image.join("inventory.img").is_file(), "the image is where it was asked for");
    assert_eq!(c.task_status("frozen").as_deref(), Some("PAUSED"));
    c.ctr(&["task", "resume", "frozen"]).ok();
    let resumed = count(&c, "frozen");
    wait_for(|| count(&c, "frozen") > resumed, "the resumed counter");

    c.remove("frozen");

    // Exit: the dump ends the container, and containerd hears of its exit. (Another container:
    // containerd stores every checkpoint's spec in its content store, and refuses the same twice.)
    let events = Events::watch(&c);
    c.run_detached("ender", COUNTER);
    wait_for(|| c.ctr(&["task", "exec", "--exec-id", "probe", "ender", "test", "-s", "/tmp/count"]).code == 0, "the counter's first number");
    api.checkpoint("ender", &CheckpointOptions { exit: true, image_path: dir.join("exit").display().to_string(), ..Default::default() }).expect("checkpoint with exit");
    assert!(events.wait_for("ender", "/tasks/exit", Duration::from_secs(10)), "{:?}", events.topics_of("ender"));
    wait_for(|| c.task_status("ender").as_deref() == Some("STOPPED"), "the dumped container stopped");
    c.remove("ender");

    // An established TCP connection (both ends in the container): refused without open_tcp, the
    // container running on; dumped with it.
    c.track("talker");
    let cgroup = c.cgroup_flag("talker");
    let talk = "ip link set lo up; sleep 100000 | nc -l -p 5555 > /tmp/received & sleep 0.5; \
                i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done | nc 127.0.0.1 5555";
    let args = ["run", "--runtime", myshim_integration::containerd::RUNTIME, "-d", "--cap-add", "CAP_NET_ADMIN", &cgroup[0], &cgroup[1], myshim_integration::image::BUSYBOX, "talker", "sh", "-c", talk];
    c.ctr(&args).ok();
    let received = || c.ctr(&["task", "exec", "--exec-id", "probe", "talker", "sh", "-c", "tail -n 1 /tmp/received"]).stdout.trim().parse::<u64>().unwrap_or(0);
    wait_for(|| received() > 2, "numbers over the connection");
    let refused = api.checkpoint("talker", &CheckpointOptions { image_path: dir.join("tcp-refused").display().to_string(), ..Default::default() }).unwrap_err();
    assert!(refused.message().contains("criu log"), "{refused:?}");
    assert_eq!(c.task_status("talker").as_deref(), Some("RUNNING"));
    let tcp = CheckpointOptions { open_tcp: true, image_path: dir.join("tcp").display().to_string(), ..Default::default() };
    api.checkpoint("talker", &tcp).expect("checkpoint with open_tcp");
    assert!(dir.join("tcp/inventory.img").is_file());
    let at = received();
    wait_for(|| received() > at, "the connection carrying numbers after the dump");
    c.remove("talker");

    // A terminal container: its pty is dumped with it.
    c.track("tty");
    let cgroup = c.cgroup_flag("tty");
    let mut args = vec!["run", "--runtime", myshim_integration::containerd::RUNTIME, "-d", "-t", &cgroup[0], &cgroup[1], myshim_integration::image::BUSYBOX, "tty"];
    args.extend_from_slice(TALKING_COUNTER);
    let (code, output) = under_pty(&c, &args);
    assert_eq!(code, 0, "ctr run -d -t: {output}");
    wait_for(|| c.ctr(&["task", "exec", "--exec-id", "probe", "tty", "test", "-s", "/tmp/count"]).code == 0, "the counter's first number");
    api.checkpoint("tty", &CheckpointOptions { image_path: dir.join("tty").display().to_string(), ..Default::default() }).expect("checkpoint a terminal container");
    assert_eq!(c.task_status("tty").as_deref(), Some("RUNNING"));
    c.remove("tty");
    c.assert_no_leftovers();
}

/// A terminal container checkpointed by ctr and restored live: the restored counter writes to a new
/// terminal, which ctr (attached to it) shows; killed, ctr reports 137.
fn terminal_restore(version: Version) {
    let c = Containerd::start(version, "ckpt-tty");
    c.track("talker");
    let cgroup = c.cgroup_flag("talker");
    let mut args = vec!["run", "--runtime", myshim_integration::containerd::RUNTIME, "-d", "-t", &cgroup[0], &cgroup[1], myshim_integration::image::BUSYBOX, "talker"];
    args.extend_from_slice(TALKING_COUNTER);
    let (code, output) = under_pty(&c, &args);
    assert_eq!(code, 0, "ctr run -d -t: {output}");
    wait_for(|| c.ctr(&["task", "exec", "--exec-id", "probe", "talker", "test", "-s", "/tmp/count"]).code == 0, "the counter's first number");
    let image = format!("localhost/myshim/checkpoint-tty-{}:1", version.dir_name());
    c.ctr(&["container", "checkpoint", "--task", "--rw", "talker", &image]).ok();
    c.remove("talker");

    c.track("talkback");
    if version == Version::V1_6 {
        // ctr 1.6 restores without a terminal: refused at Create, naming the cause (as runc refuses it).
        let refused = c.ctr(&["container", "restore", "--live", "--rw", "talkback", &image]);
        assert_ne!(refused.code, 0);
        assert!(refused.stderr.contains("has a terminal"), "{}", refused.stderr);
        let _ = c.ctr(&["container", "rm", "talkback"]);
        let _ = c.ctr(&["image", "rm", &image]);
        c.assert_no_leftovers();
        return;
    }
    let attached = {
        let (ctr, socket, namespace, image) = (c.version.bin_dir().join("ctr"), c.socket(), c.namespace.clone(), image.clone());
        std::thread::spawn(move || {
            let line = format!("{} --address {} --namespace {namespace} container restore --live --rw talkback {image}", ctr.display(), socket.display());
            let out = std::process::Command::new("script").args(["-qefc", &line, "/dev/null"]).stdin(std::process::Stdio::null()).output().expect("run script(1)");
            (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
        })
    };
    wait_for(|| c.task_status("talkback").as_deref() == Some("RUNNING"), "the restored terminal container");
    let resumed = count(&c, "talkback");
    wait_for(|| count(&c, "talkback") > resumed + 3, "the restored counter counting on");
    c.ctr(&["task", "kill", "-s", "KILL", "talkback"]).ok();
    let (code, output) = attached.join().unwrap();
    assert_eq!(code, 137, "{output}");
    assert!(output.contains(&format!("tick-{}", resumed + 2)), "the restored counter's output on the new terminal: {output}");
    c.remove("talkback");
    let _ = c.ctr(&["image", "rm", &image]);
    c.assert_no_leftovers();
}

macro_rules! for_versions {
    ($($check:ident),*) => {
        mod containerd_1_6 { use super::*; $( #[test] fn $check() { super::$check(Version::V1_6) } )* }
        mod containerd_1_7 { use super::*; $( #[test] fn $check() { super::$check(Version::V1_7) } )* }
        mod containerd_2_1 { use super::*; $( #[test] fn $check() { super::$check(Version::V2_1) } )* }
    };
}

for_versions!(live_restore, task_api_options, terminal_restore);

/// The same over gRPC, where containerd 1.7 holds a gRPC shim.
#[test]
fn live_restore_over_grpc_on_containerd_1_7() {
    live_restore_with(Version::V1_7, Some("protocol = \"grpc\"\n"));
}

/// Bad input on the shim's socket, each a clear error with nothing left behind, while a bystander
/// container goes on: checkpoints of an unknown or stopped container or into an unwritable place,
/// restores from a missing or corrupt image, a restore into a taken id.
#[test]
fn bad_checkpoints_and_restores() {
    use myshim_integration::bundle;
    use myshim_integration::direct::{DirectShim, Protocol, ShimClient};
    use myshim_protos::containerd::task::v3 as task;
    const NOT_FOUND: i32 = 5;
    const ALREADY_EXISTS: i32 = 6;
    const FAILED_PRECONDITION: i32 = 9;

    let shim = DirectShim::start("ckpt-bad", Protocol::Ttrpc);
    let mut client = shim.client();
    let spec = |id: &str, args: &[&str]| bundle::default_spec(args, &shim.cgroup_path(id));
    let run = |client: &mut ShimClient, id: &str, args: &[&str]| {
        let dir = shim.bundle_dir(id);
        bundle::write(&dir, &spec(id, args));
        client.create(id, &dir, ["", "", ""]).unwrap();
        client.start(id, "").unwrap();
    };
    let checkpoint = |client: &mut ShimClient, id: &str, path: &std::path::Path| {
        client.call::<_, ()>("Checkpoint", &task::CheckpointTaskRequest { id: id.into(), path: path.display().to_string(), options: None })
    };
    run(&mut client, "bystander", &["sleep", "1000"]);
    let scratch = paths::scratch("ckpt-bad");

    let unknown = checkpoint(&mut client, "nosuch", &scratch.join("nosuch")).unwrap_err();
    assert_eq!(unknown.code, NOT_FOUND, "{unknown:?}");

    run(&mut client, "ended", &["true"]);
    client.wait("ended", "").unwrap();
    let stopped = checkpoint(&mut client, "ended", &scratch.join("ended")).unwrap_err();
    assert_eq!(stopped.code, FAILED_PRECONDITION, "{stopped:?}");
    assert!(stopped.message.contains("ended") && stopped.message.contains("stopped"), "{stopped:?}");
    client.delete("ended", "").unwrap();

    // Into a place that cannot be a directory: the error names it; the container runs on.
    run(&mut client, "counter", COUNTER);
    std::fs::write(scratch.join("a-file"), "").unwrap();
    let unwritable = scratch.join("a-file/images");
    let refused = checkpoint(&mut client, "counter", &unwritable).unwrap_err();
    assert!(refused.message.contains(&unwritable.display().to_string()), "{refused:?}");
    assert_eq!(client.state("counter", "").unwrap().status, 2, "the container still runs");

    // A good checkpoint (leaving it running) to restore from below.
    let image = scratch.join("image");
    checkpoint(&mut client, "counter", &image).expect("checkpoint");
    assert!(image.join("inventory.img").is_file() && image.join("descriptors.json").is_file());

    // Restores that cannot work fail at Create, naming the cause; a taken id is taken.
    let create_from = |client: &mut ShimClient, id: &str, checkpoint: &std::path::Path| {
        let dir = shim.bundle_dir(id);
        bundle::write(&dir, &spec(id, COUNTER));
        let request = task::CreateTaskRequest { id: id.into(), bundle: dir.display().to_string(), checkpoint: checkpoint.display().to_string(), ..Default::default() };
        client.call::<_, task::CreateTaskResponse>("Create", &request).map(|r| r.pid)
    };
    let missing = create_from(&mut client, "frommissing", &scratch.join("no-such-image")).unwrap_err();
    assert!(missing.message.contains("no-such-image") && missing.message.contains("not a checkpoint"), "{missing:?}");
    let taken = create_from(&mut client, "counter", &image).unwrap_err();
    assert_eq!(taken.code, ALREADY_EXISTS, "{taken:?}");

    // A corrupt image: Create takes it (it looks like one), Start fails with CRIU's reason and log,
    // and nothing of the restore is left; Delete then removes the container.
    let corrupt = scratch.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    for entry in std::fs::read_dir(&image).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("pages-") || name.starts_with("core-") {
            std::fs::write(corrupt.join(&name), b"not an image").unwrap();
        } else {
            std::fs::copy(entry.path(), corrupt.join(&name)).unwrap();
        }
    }
    client.kill("counter", "", 9, false).unwrap();
    client.wait("counter", "").unwrap();
    client.delete("counter", "").unwrap();
    assert_eq!(create_from(&mut client, "fromcorrupt", &corrupt).unwrap(), 0, "no process before Start");
    let failed = client.start("fromcorrupt", "").unwrap_err();
    assert!(failed.message.contains("restore") && failed.message.contains("restore.log"), "{failed:?}");
    let cgroups = myshim_integration::leaks::cgroup_dirs(&shim.namespace);
    assert!(cgroups.iter().all(|d| !d.join("fromcorrupt").exists()), "cgroup left: {cgroups:?}");
    assert!(myshim_integration::leaks::mounts_under(&shim.bundle_dir("fromcorrupt")).is_empty(), "mounts left");
    client.delete("fromcorrupt", "").unwrap();

    // The good image restores into a new id (after the failed attempts) and runs.
    assert_eq!(create_from(&mut client, "fromgood", &image).unwrap(), 0);
    assert!(client.start("fromgood", "").unwrap() > 0);
    assert_eq!(client.state("fromgood", "").unwrap().status, 2);
    client.kill("fromgood", "", 9, false).unwrap();
    assert_eq!(client.wait("fromgood", "").unwrap(), 137);
    client.delete("fromgood", "").unwrap();

    assert_eq!(client.state("bystander", "").unwrap().status, 2, "the bystander runs on");
    assert!(shim.alive());
}

/// A CRIU that is missing or broken is a clear error, and the container is left as it was.
#[test]
fn missing_or_broken_criu() {
    for (name, criu) in [("nocriu", "/nonexistent/criu"), ("badcriu", "/bin/false")] {
        let c = Containerd::start_with(Version::V2_1, name, Some(&format!("criu_path = {criu:?}\n")));
        let api = TasksApi::connect(&c.socket(), &c.namespace);
        c.run_detached("kept", COUNTER);
        wait_for(|| c.ctr(&["task", "exec", "--exec-id", "probe", "kept", "test", "-s", "/tmp/count"]).code == 0, "the counter's first number");
        let dir = paths::scratch(name);
        let error = api.checkpoint("kept", &CheckpointOptions { image_path: dir.join("image").display().to_string(), ..Default::default() }).unwrap_err();
        assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
        assert!(error.message().contains(criu), "{error:?}");
        let before = count(&c, "kept");
        wait_for(|| count(&c, "kept") > before, "the container counting on");
        c.remove("kept");
        c.assert_no_leftovers();
    }
}
