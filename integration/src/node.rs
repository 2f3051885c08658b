//! A Kubernetes node's traffic through containerd's CRI plugin, as kubelet drives it: one-container
//! pods started and removed, below a cgroup parent of the test's own; a census of everything the node
//! holds for its pods, to tell leftovers and growth from churn; and the churn itself.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cri::{self, Cri};
use crate::{host, image, leaks, procfs, Containerd};

/// The pods' cgroup parent, unique to this run: a directory, or, under the systemd driver, a
/// kubepods-style slice (what kubelet with `cgroupDriver: systemd` sends, and for which containerd's
/// CRI gives containers systemd cgroups paths `slice:cri-containerd:<id>`).
pub fn cgroup_parent(name: &str) -> String {
    if host::systemd_driver() {
        format!("kubepods-besteffort-pod{name}x{}.slice", std::process::id())
    } else {
        format!("/myshim-cri-{name}-{}", std::process::id())
    }
}

/// The parent's directory below a hierarchy's root (a slice's place follows its dashes).
pub fn parent_relative(parent: &str) -> String {
    match parent.strip_suffix(".slice") {
        Some(stem) => {
            let parts: Vec<&str> = stem.split('-').collect();
            (1..=parts.len()).map(|n| format!("{}.slice", parts[..n].join("-"))).collect::<Vec<_>>().join("/")
        }
        None => parent.trim_start_matches('/').to_owned(),
    }
}

/// The parent's directory in every hierarchy a pod's limits live in.
pub fn parent_dirs(parent: &str) -> Vec<PathBuf> {
    let hierarchies: Vec<PathBuf> = if host::pure_v2() {
        vec![PathBuf::from("/sys/fs/cgroup")]
    } else {
        ["memory", "pids", "cpu", "freezer"].iter().map(|h| PathBuf::from("/sys/fs/cgroup").join(h)).collect()
    };
    hierarchies.into_iter().map(|h| h.join(parent_relative(parent))).collect()
}

/// Removes the (empty) parent, in every hierarchy.
pub fn remove_parent_cgroups(parent: &str) {
    if parent.ends_with(".slice") {
        let _ = std::process::Command::new("systemctl").args(["stop", parent]).output();
        return;
    }
    for dir in parent_dirs(parent) {
        let _ = fs::remove_dir(dir);
    }
    for hierarchy in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = fs::remove_dir(hierarchy.path().join(parent.trim_start_matches('/')));
    }
}

/// Where a node's pods go: the runtime handler, the cgroup parent and the log directory.
#[derive(Clone)]
pub struct Pods {
    pub handler: String,
    pub parent: String,
    pub logs: PathBuf,
}

/// A pod with one running container.
#[derive(Clone, Debug)]
pub struct Pod {
    pub id: String,
    pub container: String,
}

impl Pods {
    /// RunPodSandbox, CreateContainer, StartContainer: a pod named `name` running `sleep`.
    pub fn start(&self, api: &Cri, name: &str) -> Result<Pod, tonic::Status> {
        let config = cri::pod_config(name, &self.logs, &self.parent, false);
        let id = api.run_pod(&config, &self.handler)?;
        let started = api
            .create_container(&id, &cri::container_config("app", image::BUSYBOX, &["sleep", "1000000"]), &config)
            .and_then(|container| api.start_container(&container).map(|()| container));
        match started {
            Ok(container) => Ok(Pod { id, container }),
            Err(e) => {
                let _ = self.remove(api, &Pod { id, container: String::new() });
                Err(e)
            }
        }
    }

    /// StopPodSandbox and RemovePodSandbox (the container goes with its pod).
    pub fn remove(&self, api: &Cri, pod: &Pod) -> Result<(), tonic::Status> {
        api.stop_pod(&pod.id)?;
        api.remove_pod(&pod.id)
    }
}

/// What a node holds for its pods, and what would grow if something leaked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Census {
    /// myshim processes of this containerd.
    pub shims: usize,
    /// Pods and containers in containerd's view.
    pub pods: usize,
    pub containers: usize,
    /// Mounts below the instance's directory (rootfs overlays, shm, netns).
    pub mounts: usize,
    /// Groups below the pods' cgroup parent.
    pub cgroups: usize,
    pub network_namespaces: usize,
    /// Shim sockets (with their records) under /run/containerd/s.
    pub shim_sockets: usize,
    /// Files in containerd's state directory (task bundles, fifos, addresses).
    pub state_files: usize,
    /// Exited children nobody reaped, of containerd and of the shims.
    pub zombies: usize,
    /// containerd's own descriptors.
    pub containerd_fds: usize,
}

impl Census {
    pub fn take(c: &Containerd, api: &Cri, parent: &str) -> Census {
        let shims = leaks::shim_processes(c);
        let zombies = procfs::zombie_children(c.pid()).len() + shims.iter().map(|(pid, _)| procfs::zombie_children(*pid).len()).sum::<usize>();
        Census {
            shims: shims.len(),
            pods: api.list_pods().map(|p| p.len()).unwrap_or(usize::MAX),
            containers: api.list_containers().map(|c| c.len()).unwrap_or(usize::MAX),
            mounts: leaks::mounts_under(&c.dir).len(),
            cgroups: parent_dirs(parent).iter().map(|d| count_dirs(d)).sum(),
            network_namespaces: c.pod_network_namespaces().len(),
            shim_sockets: leaks::shim_sockets(c).len(),
            state_files: count_files(&c.dir.join("state")),
            zombies,
            containerd_fds: procfs::usage(c.pid()).0,
        }
    }

    /// What differs from `before`, field by field (`name: before → now`).
    pub fn growth_over(&self, before: &Census) -> Vec<String> {
        let fields = |c: &Census| {
            [
                ("shims", c.shims),
                ("pods", c.pods),
                ("containers", c.containers),
                ("mounts", c.mounts),
                ("cgroups", c.cgroups),
                ("network namespaces", c.network_namespaces),
                ("shim sockets", c.shim_sockets),
                ("state files", c.state_files),
                ("zombies", c.zombies),
                ("containerd descriptors", c.containerd_fds),
            ]
        };
        fields(before).iter().zip(fields(self)).filter(|(a, b)| b.1 > a.1).map(|(a, b)| format!("{}: {} → {}", a.0, a.1, b.1)).collect()
    }
}

fn count_dirs(dir: &Path) -> usize {
    fs::read_dir(dir).into_iter().flatten().flatten().filter(|e| e.path().is_dir()).map(|e| 1 + count_dirs(&e.path())).sum()
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => 1 + count_files(&e.path()),
            _ => 1,
        })
        .sum()
}

/// A pod that lives through the whole churn, its shim exec'd into by every lifecycle: its shim's
/// descriptors and memory must not grow either.
pub struct Witness {
    pub pod: Pod,
    pub shim: u32,
}

/// One check of a churn: after `done` lifecycles, with only the witness pod left.
#[derive(Debug, Clone)]
pub struct ChurnCheck {
    pub done: usize,
    pub census: Census,
    pub witness_fds: usize,
    pub witness_pss_kib: u64,
}

pub struct ChurnReport {
    pub baseline: ChurnCheck,
    pub checks: Vec<ChurnCheck>,
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

impl ChurnReport {
    /// Everything that grew over the baseline, check by check: the census, and the long-lived pod's
    /// shim descriptors (its memory is reported, not judged: the allocator keeps what it likes).
    pub fn growth(&self) -> Vec<String> {
        let mut growth = Vec::new();
        for check in &self.checks {
            let mut grown = check.census.growth_over(&self.baseline.census);
            if check.witness_fds > self.baseline.witness_fds {
                grown.push(format!("the long-lived pod's shim descriptors: {} → {}", self.baseline.witness_fds, check.witness_fds));
            }
            growth.extend(grown.into_iter().map(|g| format!("after {} pods: {g}", check.done)));
        }
        growth
    }
}

/// An ExecSync of `true` that takes longer than this is looked into (see [`procfs::holders_of_pipes`]).
const SLOW_EXEC: Duration = Duration::from_secs(10);

/// Runs `f` when dropped (a worker's way out, whichever it takes).
fn defer<F: FnMut()>(f: F) -> impl Drop {
    struct Deferred<F: FnMut()>(F);
    impl<F: FnMut()> Drop for Deferred<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    Deferred(f)
}

/// `total` pod lifecycles (start, an ExecSync into the witness pod, remove) by `concurrency` workers,
/// stopping every `check_every` to take a census with only the witness pod running.
pub fn churn(c: &Containerd, pods: &Pods, total: usize, concurrency: usize, check_every: usize) -> ChurnReport {
    let api = Cri::connect(&c.socket());
    let pod = pods.start(&api, "witness").expect("start the witness pod");
    let sandbox = task_pid(c, &pod.id);
    let shim = fs::read_to_string(format!("/proc/{sandbox}/stat")).ok().and_then(|s| s.split_whitespace().nth(3)?.parse().ok()).expect("the witness's shim");
    let witness = Witness { pod, shim };
    let check = |done: usize| {
        // Let exits and removals settle before counting (containerd removes some state lazily).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut census = Census::take(c, &api, &pods.parent);
        while census.shims > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            census = Census::take(c, &api, &pods.parent);
        }
        let (fds, _) = procfs::usage(witness.shim);
        ChurnCheck { done, census, witness_fds: fds, witness_pss_kib: procfs::pss(witness.shim) }
    };
    let baseline = check(0);
    let failures = Mutex::new(Vec::new());
    let mut checks = Vec::new();
    let started = Instant::now();
    let mut done = 0;
    while done < total {
        let batch = check_every.min(total - done);
        let next = AtomicUsize::new(0);
        // ExecSyncs into the witness in flight, by worker: one that takes too long gets the holders
        // of its shim's pipes written down while it still hangs.
        let in_flight: Mutex<HashMap<usize, (String, Instant)>> = Mutex::default();
        let workers_left = AtomicUsize::new(concurrency);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut looked_into = HashSet::new();
                while workers_left.load(Ordering::SeqCst) > 0 {
                    std::thread::sleep(Duration::from_millis(500));
                    let slow: Vec<String> = in_flight.lock().unwrap().values().filter(|(_, since)| since.elapsed() > SLOW_EXEC).map(|(name, _)| name.clone()).collect();
                    for name in slow.into_iter().filter(|n| looked_into.insert(n.clone())) {
                        let holders = procfs::holders_of_pipes(witness.shim).join("\n  ");
                        failures.lock().unwrap().push(format!("{name}: ExecSync still running after {SLOW_EXEC:?}; the witness's shim:\n  {holders}"));
                    }
                }
            });
            for worker in 0..concurrency {
                let (next, failures, witness, in_flight, workers_left) = (&next, &failures, &witness, &in_flight, &workers_left);
                scope.spawn(move || {
                    let _leaving = defer(|| {
                        workers_left.fetch_sub(1, Ordering::SeqCst);
                    });
                    let api = Cri::connect(&c.socket());
                    loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= batch {
                            return;
                        }
                        let name = format!("churn-{}-{worker}", done + n);
                        let lifecycle = Instant::now();
                        let step = |what: &str, e: tonic::Status| format!("{name}: {what} after {:?}: {}", lifecycle.elapsed(), e.message());
                        let result = pods.start(&api, &name).map_err(|e| step("start", e)).and_then(|pod| {
                            in_flight.lock().unwrap().insert(worker, (name.clone(), Instant::now()));
                            let exec = api.exec_sync(&witness.pod.container, &["true"]).map_err(|e| step("ExecSync into the long-lived pod", e));
                            in_flight.lock().unwrap().remove(&worker);
                            pods.remove(&api, &pod).map_err(|e| step("stop and remove", e))?;
                            exec.map(drop)
                        });
                        if let Err(failure) = result {
                            failures.lock().unwrap().push(failure);
                        }
                    }
                });
            }
        });
        done += batch;
        checks.push(check(done));
    }
    let elapsed = started.elapsed();
    let _ = pods.remove(&api, &witness.pod);
    ChurnReport { baseline, checks, failures: failures.into_inner().unwrap(), elapsed }
}

/// The host pid of a CRI task (the pod's sandbox, or a container), from containerd's task list.
pub fn task_pid(c: &Containerd, id: &str) -> u32 {
    let tasks = c.ctr(&["task", "ls"]).ok().stdout;
    tasks.lines().find(|l| l.starts_with(id)).and_then(|l| l.split_whitespace().nth(1)).and_then(|p| p.parse().ok()).expect("the task")
}
