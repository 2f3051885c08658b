//! Kubernetes RuntimeClass `myshim`: pods through containerd's CRI plugin, exactly as kubelet sends
//! them (CRI runtime.v1 over gRPC), on containerd 2.1 and 1.7.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use myshim_integration::cri::{self, v1, Cri};
use myshim_integration::node::{self, cgroup_parent, parent_dirs, parent_relative, remove_parent_cgroups};
use myshim_integration::{host, image, leaks, Containerd, Version};

fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Nothing of the instance's pods is left: shims, container processes, mounts, cgroups below the
/// pods' parent, network namespaces made for the pods.
fn assert_pods_gone(c: &Containerd, parent: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut left = Vec::new();
        left.extend(leaks::shim_processes(c).into_iter().map(|(pid, cmd)| format!("shim {pid}: {cmd}")));
        left.extend(leaks::mounts_under(&c.dir).into_iter().map(|m| format!("mount {}", m.display())));
        for dir in parent_dirs(parent) {
            for child in fs::read_dir(&dir).into_iter().flatten().flatten().filter(|e| e.path().is_dir()) {
                left.push(format!("cgroup {}", child.path().display()));
            }
        }
        left.extend(c.pod_network_namespaces().into_iter().map(|n| format!("netns {}", n.display())));
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: {left:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The whole kubelet sequence for a pod with two containers on the CNI bridge.
fn pod_lifecycle(version: Version) {
    let c = Containerd::start_cri(version, "cri-pod", "");
    let api = Cri::connect(&c.socket());
    let parent = cgroup_parent(&format!("pod{}", version.dir_name().replace('.', "")));
    let logs = c.dir.join("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    let pod = cri::pod_config("web", &logs, &parent, false);
    let pod_id = api.run_pod(&pod, "myshim").expect("RunPodSandbox");
    let status = api.pod_status(&pod_id).unwrap();
    assert_eq!(status.state, v1::PodSandboxState::SandboxReady as i32);
    let pod_ip = status.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
    assert!(pod_ip.starts_with("10.88.77."), "the pod got an IP from the CNI bridge: {pod_ip:?}");

    let app = api.create_container(&pod_id, &cri::container_config("app", image::BUSYBOX, &["sh", "-c", "echo started; echo oops >&2; sleep 1000"]), &pod).expect("CreateContainer");
    api.start_container(&app).expect("StartContainer");
    let status = api.container_status(&app).unwrap();
    assert_eq!(status.state, v1::ContainerState::ContainerRunning as i32);

    // Pod semantics, seen from inside.
    let (code, out, err) = api.exec_sync(&app, &["sh", "-c", "hostname; ip -4 -o addr show eth0 | awk '{print $4}'; readlink /proc/self/ns/net /proc/1/ns/ipc; echo $$"]).unwrap();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "web", "the pod's hostname");
    assert!(lines[1].starts_with(&pod_ip), "the container sees the pod IP: {out}");
    let (_, code_fail, _) = (0, api.exec_sync(&app, &["sh", "-c", "exit 7"]).unwrap().0, 0);
    assert_eq!(code_fail, 7);

    // The log file in CRI format, written by containerd from our stdio.
    let log = logs.join("app.log");
    wait_for(|| fs::read_to_string(&log).is_ok_and(|t| t.contains("oops")), "container log");
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.lines().any(|l| l.contains(" stdout F started")), "{text}");
    assert!(text.lines().any(|l| l.contains(" stderr F oops")), "{text}");

    let stats = api.container_stats(&app).unwrap();
    assert!(stats.memory.and_then(|m| m.working_set_bytes).is_some_and(|w| w.value > 0), "memory stats");
    assert!(stats.cpu.and_then(|c| c.usage_core_nano_seconds).is_some_and(|u| u.value > 0), "cpu stats");

    api.update_resources(&app, v1::LinuxContainerResources { memory_limit_in_bytes: 100 << 20, cpu_shares: 256, ..Default::default() }).expect("UpdateContainerResources");
    let (_, limit, _) = api.exec_sync(&app, &["sh", "-c", host::MEMORY_LIMIT_INSIDE]).unwrap();
    assert_eq!(limit.trim(), (100u64 << 20).to_string());
    // The container sits below the pod's parent (in a systemd scope when the parent is a slice).
    let group = host::process_cgroup(node::task_pid(&c, &app));
    assert!(group.starts_with(&format!("/{}/", parent_relative(&parent))), "{group} below {parent}");
    if host::systemd_driver() {
        assert!(group.ends_with(&format!("/cri-containerd-{app}.scope")), "{group}");
    }

    api.stop_container(&app, 2).expect("StopContainer");
    assert_eq!(api.container_status(&app).unwrap().state, v1::ContainerState::ContainerExited as i32);
    api.remove_container(&app).expect("RemoveContainer");
    api.stop_pod(&pod_id).expect("StopPodSandbox");
    api.remove_pod(&pod_id).expect("RemovePodSandbox");
    assert!(api.list_pods().unwrap().is_empty(), "ListPodSandbox is empty at the end");
    assert_pods_gone(&c, &parent);
    remove_parent_cgroups(&parent);
}

fn host_link(pid: u32, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap().display().to_string()
}

/// App containers join the pause container's namespaces (and its pid namespace when the pod shares
/// it), all containers of a pod live in one shim, and the pod's cgroup parent is honoured.
fn pod_semantics(version: Version) {
    let c = Containerd::start_cri(version, "cri-ns", "");
    let api = Cri::connect(&c.socket());
    let parent = cgroup_parent(&format!("ns{}", version.dir_name().replace('.', "")));
    let logs = c.dir.join("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    let mut pod = cri::pod_config("shared", &logs, &parent, false);
    pod.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().pid = v1::NamespaceMode::Pod as i32;
    let pod_id = api.run_pod(&pod, "myshim").expect("RunPodSandbox");
    let pause = node::task_pid(&c, &pod_id);

    let mut apps = Vec::new();
    for name in ["one", "two"] {
        let mut config = cri::container_config(name, image::BUSYBOX, &["sleep", "1000"]);
        config.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options =
            Some(v1::NamespaceOption { network: 0, pid: v1::NamespaceMode::Pod as i32, ipc: 0, target_id: String::new() });
        let id = api.create_container(&pod_id, &config, &pod).expect("CreateContainer");
        api.start_container(&id).expect("StartContainer");
        apps.push(id);
    }
    for app in &apps {
        let (code, out, err) = api.exec_sync(app, &["sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts; hostname; ps -o args | grep -c '[/]pause'"]).unwrap();
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], host_link(pause, "net"), "same network namespace as the pause container");
        assert_eq!(lines[1], host_link(pause, "ipc"));
        assert_eq!(lines[2], host_link(pause, "uts"));
        assert_eq!(lines[3], "shared");
        assert_eq!(lines[4], "1", "the pause process is visible in the shared pid namespace: {out}");
        let group = host::process_cgroup(node::task_pid(&c, app));
        assert!(group.starts_with(&format!("/{}/", parent_relative(&parent))), "the pod's cgroup parent: {group}");
    }
    let shims = leaks::shim_processes(&c);
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:#?}");
    assert_eq!(fs::read_to_string(format!("/proc/{pause}/stat")).unwrap().split_whitespace().nth(3).unwrap(), shims[0].0.to_string(), "the pause container is the shim's child");

    // Removing the pod while its containers run stops and removes everything.
    api.stop_pod(&pod_id).expect("StopPodSandbox");
    api.remove_pod(&pod_id).expect("RemovePodSandbox");
    assert!(api.list_containers().unwrap().is_empty());
    assert!(api.list_pods().unwrap().is_empty());
    assert_pods_gone(&c, &parent);
    remove_parent_cgroups(&parent);
}

/// A pod on the node's network (here the test's own network namespace) needs no CNI.
fn host_network_pod(version: Version) {
    let c = Containerd::start_cri(version, "cri-host", "");
    let api = Cri::connect(&c.socket());
    let parent = cgroup_parent(&format!("host{}", version.dir_name().replace('.', "")));
    let logs = c.dir.join("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    let pod = cri::pod_config("hostnet", &logs, &parent, true);
    let pod_id = api.run_pod(&pod, "myshim").expect("RunPodSandbox");
    let app = api.create_container(&pod_id, &cri::container_config("app", image::BUSYBOX, &["sleep", "1000"]), &pod).unwrap();
    api.start_container(&app).unwrap();
    let (_, out, _) = api.exec_sync(&app, &["readlink", "/proc/self/ns/net"]).unwrap();
    let containerd_netns = host_link(c.pid(), "net");
    assert_eq!(out.trim(), containerd_netns, "the node's network namespace");
    api.stop_pod(&pod_id).unwrap();
    api.remove_pod(&pod_id).unwrap();
    assert_pods_gone(&c, &parent);
    remove_parent_cgroups(&parent);
}

/// The errors a cluster operator meets get a clear CRI error and leave nothing behind.
fn operator_errors(version: Version) {
    let c = Containerd::start_cri(version, "cri-errors", "");
    let api = Cri::connect(&c.socket());
    let parent = cgroup_parent(&format!("err{}", version.dir_name().replace('.', "")));
    let logs = c.dir.join("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    let pod = cri::pod_config("errors", &logs, &parent, false);

    let unknown = api.run_pod(&pod, "no-such-handler").unwrap_err();
    assert!(unknown.message().contains("no-such-handler"), "{}", unknown.message());

    let pod_id = api.run_pod(&pod, "myshim").unwrap();
    let missing = api.create_container(&pod_id, &cri::container_config("ghost", "localhost/myshim/no-such-image:latest", &["true"]), &pod).unwrap_err();
    assert!(missing.message().contains("no-such-image"), "{}", missing.message());

    let failed = api
        .create_container(&pod_id, &cri::container_config("nocmd", image::BUSYBOX, &["/no/such/command"]), &pod)
        .and_then(|id| api.start_container(&id).map(|()| id));
    let err = failed.unwrap_err();
    assert!(err.message().contains("/no/such/command"), "{}", err.message());
    assert_eq!(api.pod_status(&pod_id).unwrap().state, v1::PodSandboxState::SandboxReady as i32, "the pod survives");

    // A pod deleted while a container still runs.
    let app = api.create_container(&pod_id, &cri::container_config("busy", image::BUSYBOX, &["sleep", "1000"]), &pod).unwrap();
    api.start_container(&app).unwrap();
    api.stop_pod(&pod_id).unwrap();
    api.remove_pod(&pod_id).unwrap();
    assert!(api.list_pods().unwrap().is_empty());
    assert!(api.list_containers().unwrap().is_empty());
    assert_pods_gone(&c, &parent);
    remove_parent_cgroups(&parent);
}

/// A kubelet-style volume directory: a shared mount of its own (as /var/lib/kubelet is on a node)
/// with a tmpfs mounted inside it. Unmounted, with whatever a container mounted into it, at drop.
struct Volume {
    dir: PathBuf,
    _scratch: myshim_integration::paths::Scratch,
}

impl Volume {
    fn new(name: &str) -> Volume {
        use nix::mount::{mount, MsFlags};
        let scratch = myshim_integration::paths::scratch(name);
        let dir = scratch.join("volume");
        fs::create_dir_all(&dir).unwrap();
        let volume = Volume { dir, _scratch: scratch };
        mount(Some(&volume.dir), &volume.dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).expect("bind the volume onto itself");
        mount(None::<&str>, &volume.dir, None::<&str>, MsFlags::MS_SHARED, None::<&str>).expect("make the volume shared");
        let sub = volume.dir.join("sub");
        fs::create_dir_all(&sub).unwrap();
        mount(Some("tmpfs"), &sub, Some("tmpfs"), MsFlags::empty(), Some("size=1m")).expect("mount the volume's tmpfs");
        volume
    }

    fn mounted(&self, path: &str) -> bool {
        leaks::mounts_under(&self.dir).contains(&self.dir.join(path))
    }
}

impl Drop for Volume {
    // Runs before the scratch directory is removed (fields drop after this).
    fn drop(&mut self) {
        for mount in leaks::mounts_under(&self.dir) {
            let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn volume_mount(volume: &Volume, container_path: &str, propagation: v1::MountPropagation, recursive_read_only: bool) -> v1::Mount {
    v1::Mount {
        container_path: container_path.into(),
        host_path: volume.dir.display().to_string(),
        readonly: recursive_read_only,
        propagation: propagation as i32,
        recursive_read_only,
        ..Default::default()
    }
}

/// The handler an operator declares on containerd 2.1–2.3 to get Kubernetes' recursive read-only
/// mounts: those versions ask only handlers of type `io.containerd.runc.v2` for the runtime's
/// features (2.4 asks every shim), so myshim is named as that type's binary.
fn runc_typed_handler(version: Version) -> String {
    let table = match version {
        Version::V2_1 => "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.myshim-runc-type",
        _ => "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.myshim-runc-type",
    };
    format!("[{table}]\n  runtime_type = \"io.containerd.runc.v2\"\n  runtime_path = \"{}\"\n", myshim_integration::paths::shim_binary().display())
}

/// Volumes as kubelet mounts them. Bidirectional: the rootfs becomes rshared while containerd's
/// overlay is mounted on it, and a mount made inside the container appears on the node. Recursive
/// read-only (containerd 2.x, which finds `rro` in the runtime's features): the volume's submounts
/// are read-only in the container too, while the node still writes to them.
fn volumes(version: Version) {
    let c = Containerd::start_cri(version, "cri-vol", &runc_typed_handler(version));
    let api = Cri::connect(&c.socket());
    let parent = cgroup_parent(&format!("vol{}", version.dir_name().replace('.', "")));
    let logs = c.dir.join("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    let volume = Volume::new(&format!("cri-vol-{}", version.dir_name()));
    // Kubernetes allows bidirectional propagation to privileged containers only.
    let mut pod = cri::pod_config("volumes", &logs, &parent, false);
    pod.linux.as_mut().unwrap().security_context.as_mut().unwrap().privileged = true;
    let pod_id = api.run_pod(&pod, "myshim").expect("RunPodSandbox");

    let mut config = cri::container_config("bidi", image::BUSYBOX, &["sleep", "1000"]);
    config.mounts = vec![volume_mount(&volume, "/vol", v1::MountPropagation::PropagationBidirectional, false)];
    config.linux.as_mut().unwrap().security_context.as_mut().unwrap().privileged = true;
    let bidi = api.create_container(&pod_id, &config, &pod).expect("CreateContainer with a bidirectional mount");
    api.start_container(&bidi).expect("StartContainer");
    let (code, _, err) = api.exec_sync(&bidi, &["sh", "-c", "mkdir -p /vol/made && mount -t tmpfs made /vol/made && touch /vol/sub/from-bidi"]).unwrap();
    assert_eq!(code, 0, "{err}");
    wait_for(|| volume.mounted("made"), "the container's mount reaching the node");
    assert!(volume.dir.join("sub/from-bidi").exists());
    api.stop_pod(&pod_id).expect("StopPodSandbox");
    api.remove_pod(&pod_id).expect("RemovePodSandbox");

    if version == Version::V2_1 {
        let handlers = api.runtime_handlers().unwrap();
        let runc_typed = handlers.iter().find(|h| h.name == "myshim-runc-type").unwrap_or_else(|| panic!("{handlers:?}"));
        assert!(runc_typed.features.as_ref().is_some_and(|f| f.recursive_read_only_mounts), "rro found in myshim's -info features: {handlers:?}");

        let pod = cri::pod_config("readonly", &logs, &parent, false);
        let pod_id = api.run_pod(&pod, "myshim-runc-type").expect("RunPodSandbox");
        let mut config = cri::container_config("rro", image::BUSYBOX, &["sleep", "1000"]);
        config.mounts = vec![volume_mount(&volume, "/ro", v1::MountPropagation::PropagationPrivate, true)];
        let rro = api.create_container(&pod_id, &config, &pod).expect("CreateContainer with a recursive read-only mount");
        api.start_container(&rro).expect("StartContainer");
        let parent_of_pause = fs::read_to_string(format!("/proc/{}/stat", node::task_pid(&c, &pod_id))).unwrap().split_whitespace().nth(3).unwrap().to_owned();
        let shims = leaks::shim_processes(&c);
        assert!(shims.iter().any(|(pid, _)| pid.to_string() == parent_of_pause), "the pod runs on myshim: {shims:?}");
        for path in ["/ro/x", "/ro/sub/x"] {
            let (code, _, err) = api.exec_sync(&rro, &["touch", path]).unwrap();
            assert_ne!(code, 0, "{path} is writable");
            assert!(err.contains("Read-only file system"), "{path}: {err}");
        }
        let (_, out, _) = api.exec_sync(&rro, &["ls", "/ro/sub"]).unwrap();
        assert!(out.contains("from-bidi"), "the volume's submount is seen: {out}");
        fs::write(volume.dir.join("sub/from-node"), "").expect("the node still writes to the submount");
        api.stop_pod(&pod_id).expect("StopPodSandbox");
        api.remove_pod(&pod_id).expect("RemovePodSandbox");
    }
    assert_pods_gone(&c, &parent);
    remove_parent_cgroups(&parent);
}

macro_rules! for_versions {
    ($($check:ident),*) => {
        mod containerd_2_1 { use super::*; $( #[test] fn $check() { super::$check(Version::V2_1) } )* }
        mod containerd_1_7 { use super::*; $( #[test] fn $check() { super::$check(Version::V1_7) } )* }
    };
}

for_versions!(pod_lifecycle, pod_semantics, host_network_pod, operator_errors, volumes, churn);

/// Kubernetes' forensic container checkpoint (kubelet's checkpoint API → CRI CheckpointContainer) on
/// containerd 2.1: the archive holds CRIU's images and containerd's metadata, and the container keeps
/// running. It listens on a TCP port in the pod's network namespace, as a server pod does.
#[test]
fn checkpoint_container_on_containerd_2_1() {
    let c = Containerd::start_cri(Version::V2_1, "cri-ckpt", "");
    let api = Cri::connect(&c.socket());
    let parent = cgroup_parent("ckpt21");
    let logs = c.dir.join("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    let pod = cri::pod_config("checkpointed", &logs, &parent, false);
    let pod_id = api.run_pod(&pod, "myshim").expect("RunPodSandbox");
    let counter = "sleep 100000 | nc -l -p 8080 & i=0; while :; do i=$((i+1)); echo $i > /tmp/next; mv /tmp/next /tmp/count; sleep 0.1; done";
    let app = api.create_container(&pod_id, &cri::container_config("counter", image::BUSYBOX, &["sh", "-c", counter]), &pod).unwrap();
    api.start_container(&app).unwrap();
    let read = || api.exec_sync(&app, &["cat", "/tmp/count"]).unwrap().1.trim().parse::<u64>().unwrap_or(0);
    wait_for(|| read() > 0, "the counter's first number");

    let archive = c.dir.join("checkpoint.tar");
    api.checkpoint_container(&app, &archive).expect("CheckpointContainer");
    let listing = std::process::Command::new("tar").arg("-tf").arg(&archive).output().unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    for expected in ["checkpoint/inventory.img", "config.dump", "spec.dump"] {
        assert!(names.lines().any(|l| l.trim_start_matches("./") == expected), "{expected} in the archive: {names}");
    }
    assert_eq!(api.container_status(&app).unwrap().state, v1::ContainerState::ContainerRunning as i32, "the container keeps running");
    let after = read();
    wait_for(|| read() > after, "the container counting on");

    api.stop_pod(&pod_id).unwrap();
    api.remove_pod(&pod_id).unwrap();
    assert_pods_gone(&c, &parent);
    remove_parent_cgroups(&parent);
}

/// Pods coming and going, ten at a time, with an ExecSync into a long-lived pod each time: no
/// failure, and nothing of a node grows (shims, containerd's view, mounts, cgroups, network
/// namespaces, shim sockets, state files, zombies, the long-lived shim's descriptors). The benchmark
/// runs the same for 5,000 pods.
fn churn(version: Version) {
    let c = Containerd::start_cri(version, "cri-churn", "");
    let parent = cgroup_parent(&format!("churn{}", version.dir_name().replace('.', "")));
    let logs = c.dir.join("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    let pods = node::Pods { handler: "myshim".into(), parent: parent.clone(), logs };
    // MYSHIM_CHURN_PODS makes it longer (the benchmark's is 5,000).
    let total = std::env::var("MYSHIM_CHURN_PODS").ok().and_then(|n| n.parse().ok()).unwrap_or(100);
    let report = node::churn(&c, &pods, total, 10, (total / 2).min(500));
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert!(report.growth().is_empty(), "{:#?}", report.growth());
    assert_pods_gone(&c, &parent);
    remove_parent_cgroups(&parent);
}

/// The handler's `options` table reaches the shim (containerd 1.7 passes it as ConfigBody): here
/// `protocol = "grpc"`, which 1.7 can hold.
#[test]
fn handler_options_select_grpc_on_containerd_1_7() {
    let options = "  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.myshim.options]\n    protocol = \"grpc\"\n";
    let c = Containerd::start_cri(Version::V1_7, "cri-grpc", options);
    let api = Cri::connect(&c.socket());
    let parent = cgroup_parent("grpc17");
    let logs = c.dir.join("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    let pod = cri::pod_config("grpcpod", &logs, &parent, false);
    let pod_id = api.run_pod(&pod, "myshim").expect("RunPodSandbox");
    let app = api.create_container(&pod_id, &cri::container_config("app", image::BUSYBOX, &["sleep", "1000"]), &pod).unwrap();
    api.start_container(&app).unwrap();
    assert_eq!(api.exec_sync(&app, &["echo", "over grpc"]).unwrap().1, "over grpc\n");
    let address = fs::read_to_string(c.bundle(&pod_id).join("address")).unwrap();
    assert!(address.contains("\"protocol\":\"grpc\""), "{address}");
    api.stop_pod(&pod_id).unwrap();
    api.remove_pod(&pod_id).unwrap();
    assert_pods_gone(&c, &parent);
    remove_parent_cgroups(&parent);
}
