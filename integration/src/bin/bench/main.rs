//! Benchmarks of myshim against containerd's runc shim with runc and with crun, interleaved in one run
//! and reported as ratios (this VM is noisy). `integration/bench.sh` builds what it measures (a static
//! release build) and runs this; `--smoke` (CI) runs every measurement a few times and writes nothing.
//! Otherwise the results go into the README's performance section, `docs/bench/results.json` and
//! `docs/bench/chart.png`. `--direct-only`, `--cri-only` and `--memory-only` run just that part (for
//! profiling) and write nothing.
//!
//! The shim measured is the one in `MYSHIM_BIN_DIR`; the run fails when that binary is not static, or
//! holds more than `SHIM_RSS_TARGET_KIB` resident with one container: the measured binary is the one an
//! operator installs (integration/scripts/install.sh), and its memory is a target the project keeps.
//!
//! Everything runs in a private mount namespace without the hybrid unified cgroup mount, which crun
//! refuses, and with bundles and containerd's state on a tmpfs as under a node's `/run`: containerd,
//! the shims and every runtime inherit it, so all see the same layout.

mod cri;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use myshim_integration::containerd::RUNTIME;
use myshim_integration::direct::{DirectShim, Protocol, ShimClient};
use myshim_integration::docker::Docker;
use myshim_integration::{bundle, image, paths, procfs, Containerd, Version};
use serde_json::{json, Value};

const CRUN: &str = "/opt/myshim/crun/bin/crun";

/// The shim's resident memory holding one container, at most (the README's target).
const SHIM_RSS_TARGET_KIB: u64 = 4096;

/// How many times each measurement runs.
struct Counts {
    direct_sequential: usize,
    direct_total: usize,
    oci_runs: usize,
    ctr_runs: usize,
    execs: usize,
    burst: usize,
    burst_rounds: usize,
    checkpoints: usize,
    docker_runs: usize,
    /// CRI: pods one at a time, rounds of ten at a time (pods per worker), ExecSyncs, the density N,
    /// churn lifecycles and how often the churn takes a census.
    pods_sequential: usize,
    pod_rounds: usize,
    pods_per_worker: usize,
    density: usize,
    churn: usize,
    churn_check: usize,
}

impl Counts {
    fn full() -> Counts {
        Counts {
            direct_sequential: 300,
            direct_total: 640,
            oci_runs: 40,
            ctr_runs: 30,
            execs: 40,
            burst: 50,
            burst_rounds: 3,
            checkpoints: 10,
            docker_runs: 20,
            pods_sequential: 30,
            pod_rounds: 3,
            pods_per_worker: 5,
            density: 200,
            churn: 5000,
            churn_check: 500,
        }
    }

    fn smoke() -> Counts {
        Counts {
            direct_sequential: 5,
            direct_total: 32,
            oci_runs: 2,
            ctr_runs: 2,
            execs: 2,
            burst: 5,
            burst_rounds: 1,
            checkpoints: 1,
            docker_runs: 2,
            pods_sequential: 2,
            pod_rounds: 1,
            pods_per_worker: 1,
            density: 10,
            churn: 20,
            churn_check: 10,
        }
    }
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let direct_only = std::env::args().any(|a| a == "--direct-only");
    let cri_only = std::env::args().any(|a| a == "--cri-only");
    let memory_only = std::env::args().any(|a| a == "--memory-only");
    enter_private_mount_namespace();
    let counts = if smoke { Counts::smoke() } else { Counts::full() };
    if direct_only {
        println!("{}", serde_json::to_string_pretty(&direct(&counts)).unwrap());
        return;
    }
    if cri_only {
        println!("{}", serde_json::to_string_pretty(&cri::run(&counts)).unwrap());
        return;
    }
    if memory_only {
        let c = Containerd::start(Version::V2_1, "bench-memory");
        let mut result = json!({});
        shim_memory(&c, &runtimes()[..2], &mut result);
        c.assert_no_leftovers();
        println!("{}", serde_json::to_string_pretty(&result).unwrap());
        check_the_installed_shim(&result);
        return;
    }
    let mut results = json!({
        "environment": environment(),
        "smoke": smoke,
    });
    eprintln!("== shim-direct");
    results["direct"] = direct(&counts);
    eprintln!("== OCI runtimes alone");
    results["oci"] = oci_runtimes_alone(&counts);
    eprintln!("== through containerd 2.1");
    let sockets_before = shim_sockets();
    results["containerd"] = through_containerd(&counts);
    remove_stale_sockets(&sockets_before);
    eprintln!("== Kubernetes: containerd 2.1's CRI plugin");
    results["cri"] = cri::run(&counts);
    eprintln!("== Docker Engine on containerd 2.1");
    results["docker"] = through_docker(&counts);
    eprintln!("== containerd 1.7: ttrpc against gRPC");
    results["protocols"] = protocols_through_containerd_1_7(&counts);
    let table = markdown(&results);
    println!("{table}");
    check_the_installed_shim(&results["containerd"]);
    if smoke {
        return;
    }
    let docs = paths::workspace().join("docs/bench");
    fs::create_dir_all(&docs).unwrap();
    fs::write(docs.join("results.json"), serde_json::to_string_pretty(&results).unwrap()).unwrap();
    let chart = Command::new("/usr/bin/python3")
        .arg(paths::workspace().join("integration/scripts/bench-chart.py"))
        .arg(docs.join("results.json"))
        .arg(docs.join("chart.png"))
        .status()
        .expect("run bench-chart.py");
    assert!(chart.success(), "drawing the chart failed");
    update_readme(&table);
    eprintln!("wrote README.md, docs/bench/results.json and docs/bench/chart.png");
}

/// A private mount namespace (propagation from the host only) without `/sys/fs/cgroup/unified`, and
/// with a tmpfs on the temporary directory, where the bundles and containerd's state go: on a node
/// they live under `/run`, a tmpfs (on this VM it is not).
fn enter_private_mount_namespace() {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare the mount namespace");
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>).expect("make / a slave mount");
    if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH).expect("unmount the unified cgroup hierarchy");
    }
    mount(Some("tmpfs"), &std::env::temp_dir(), Some("tmpfs"), MsFlags::empty(), Some("size=2g,mode=1777")).expect("mount a tmpfs on the temporary directory");
}

fn environment() -> Value {
    let output = |program: &str, args: &[&str]| -> String {
        Command::new(program).args(args).output().map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_owned()).unwrap_or_default()
    };
    json!({
        "date": output("date", &["-u", "+%Y-%m-%d"]),
        "kernel": output("uname", &["-r"]),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "containerd": output(&Version::V2_1.bin_dir().join("containerd").display().to_string(), &["--version"]),
        "runc": output("runc", &["--version"]),
        "crun": output(CRUN, &["--version"]),
        "shim": paths::shim_binary().display().to_string(),
    })
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

fn median(samples: &[f64]) -> f64 {
    percentile(samples, 0.5)
}

/// One container's create, start, wait and delete of `/bin/true` through the shim's socket.
fn lifecycle(client: &mut ShimClient, id: &str, bundle: &Path) {
    client.create(id, bundle, ["", "", ""]).unwrap_or_else(|e| panic!("create {id}: {e}"));
    client.start(id, "").unwrap();
    assert_eq!(client.wait(id, "").unwrap(), 0);
    client.delete(id, "").unwrap();
}

fn true_bundle(shim: &DirectShim, id: &str) -> PathBuf {
    let dir = shim.bundle_dir(id);
    bundle::write(&dir, &bundle::default_spec(&["true"], &shim.cgroup_path(id)));
    dir
}

/// The shim without containerd (a fake one takes its events): sequential latency over ttrpc and
/// gRPC, interleaved, then lifecycles per second at concurrency 1, 8 and 32.
fn direct(counts: &Counts) -> Value {
    let shims = [(Protocol::Ttrpc, DirectShim::start("bench-ttrpc", Protocol::Ttrpc)), (Protocol::Grpc, DirectShim::start("bench-grpc", Protocol::Grpc))];
    let mut clients: Vec<ShimClient> = shims.iter().map(|(_, s)| s.client()).collect();
    let bundles: Vec<PathBuf> = shims.iter().map(|(_, s)| true_bundle(s, "seq")).collect();
    let mut samples = [Vec::new(), Vec::new()];
    for _ in 0..counts.direct_sequential {
        for (i, client) in clients.iter_mut().enumerate() {
            let started = Instant::now();
            lifecycle(client, "seq", &bundles[i]);
            samples[i].push(millis(started.elapsed()));
        }
    }
    let mut result = json!({});
    for (i, (protocol, shim)) in shims.iter().enumerate() {
        let name = format!("{protocol:?}").to_lowercase();
        let mut throughput = json!({});
        for concurrency in [1usize, 8, 32] {
            let per_worker = (counts.direct_total / concurrency).max(1);
            let workers: Vec<(ShimClient, String, PathBuf)> = (0..concurrency)
                .map(|w| {
                    let id = format!("c{concurrency}-w{w}");
                    let dir = true_bundle(shim, &id);
                    (shim.client(), id, dir)
                })
                .collect();
            let started = Instant::now();
            let handles: Vec<_> = workers
                .into_iter()
                .map(|(mut client, id, dir)| {
                    std::thread::spawn(move || {
                        for _ in 0..per_worker {
                            lifecycle(&mut client, &id, &dir);
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.join().expect("a worker failed");
            }
            let rate = (per_worker * concurrency) as f64 / started.elapsed().as_secs_f64();
            throughput[concurrency.to_string()] = json!(rate);
            eprintln!("  {name} concurrency {concurrency}: {rate:.0} lifecycles/s");
        }
        let (_, rss) = shim.usage();
        result[&name] = json!({
            "p50_ms": median(&samples[i]),
            "p99_ms": percentile(&samples[i], 0.99),
            "per_second": throughput,
            "shim_rss_kib": rss,
            "shim_pss_kib": procfs::pss(shim.pid),
        });
        eprintln!("  {name}: p50 {:.2} ms, p99 {:.2} ms", median(&samples[i]), percentile(&samples[i], 0.99));
    }
    result
}

/// `run` of one busybox bundle by each OCI runtime's command line, interleaved.
fn oci_runtimes_alone(counts: &Counts) -> Value {
    let dir = paths::scratch("bench-oci");
    let runtimes = [("myshim-runc", paths::shim_dir().join("myshim-runc")), ("runc", PathBuf::from("runc")), ("crun", PathBuf::from(CRUN))];
    let mut samples = vec![Vec::new(); runtimes.len()];
    for _ in 0..counts.oci_runs {
        for (i, (name, binary)) in runtimes.iter().enumerate() {
            let bundle = dir.join(name);
            if !bundle.join("config.json").exists() {
                bundle::write(&bundle, &bundle::default_spec(&["true"], &format!("/myshim-bench-oci/{name}")));
            }
            let started = Instant::now();
            let out = Command::new(binary).arg("--root").arg(dir.join(format!("{name}-root"))).args(["run", "--bundle"]).arg(&bundle).arg("bench").output().unwrap();
            samples[i].push(millis(started.elapsed()));
            assert!(out.status.success(), "{name} run: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    for hierarchy in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = fs::remove_dir(hierarchy.path().join("myshim-bench-oci"));
    }
    let mut result = json!({});
    for (i, (name, _)) in runtimes.iter().enumerate() {
        result[*name] = json!({ "median_ms": median(&samples[i]) });
        eprintln!("  {name} run: {:.2} ms", median(&samples[i]));
    }
    result
}

/// A runtime as `ctr run` selects it.
struct Runtime {
    name: &'static str,
    args: Vec<String>,
    /// The shim binary's name, to find its processes.
    shim: &'static str,
}

fn runtimes() -> Vec<Runtime> {
    vec![
        Runtime { name: "myshim", args: vec!["--runtime".into(), RUNTIME.into()], shim: "containerd-shim-myshim-v1" },
        Runtime { name: "runc", args: vec!["--runtime".into(), "io.containerd.runc.v2".into()], shim: "containerd-shim-runc-v2" },
        Runtime {
            name: "crun",
            args: vec!["--runtime".into(), "io.containerd.runc.v2".into(), "--runc-binary".into(), CRUN.into()],
            shim: "containerd-shim-runc-v2",
        },
    ]
}

fn ctr_timed(c: &Containerd, args: &[&str]) -> f64 {
    let started = Instant::now();
    let out = c.ctr(args);
    let elapsed = millis(started.elapsed());
    assert_eq!(out.code, 0, "ctr {args:?}: {}", out.stderr);
    elapsed
}

fn run_args<'a>(runtime: &'a Runtime, extra: &[&'a str], id: &'a str, command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run"];
    args.extend(runtime.args.iter().map(String::as_str));
    args.extend_from_slice(extra);
    args.push(image::BUSYBOX);
    args.push(id);
    args.extend_from_slice(command);
    args
}

fn through_containerd(counts: &Counts) -> Value {
    let c = Containerd::start(Version::V2_1, "bench");
    let runtimes = runtimes();
    let mut result = json!({});
    for r in &runtimes {
        result[r.name] = json!({});
    }

    // ctr run --rm … true
    let mut samples = vec![Vec::new(); runtimes.len()];
    for n in 0..counts.ctr_runs {
        for (i, r) in runtimes.iter().enumerate() {
            let id = format!("run-{}-{n}", r.name);
            c.track(&id);
            samples[i].push(ctr_timed(&c, &run_args(r, &["--rm"], &id, &["true"])));
        }
    }
    for (i, r) in runtimes.iter().enumerate() {
        result[r.name]["ctr_run_ms"] = json!(median(&samples[i]));
        eprintln!("  {} ctr run: {:.1} ms", r.name, median(&samples[i]));
    }

    // ctr task exec … true
    for r in &runtimes {
        let id = format!("exec-{}", r.name);
        c.track(&id);
        ctr_timed(&c, &run_args(r, &["-d"], &id, &["sleep", "100000"]));
    }
    let mut samples = vec![Vec::new(); runtimes.len()];
    for n in 0..counts.execs {
        for (i, r) in runtimes.iter().enumerate() {
            let exec_id = format!("e{n}");
            samples[i].push(ctr_timed(&c, &["task", "exec", "--exec-id", &exec_id, &format!("exec-{}", r.name), "true"]));
        }
    }
    for (i, r) in runtimes.iter().enumerate() {
        result[r.name]["ctr_exec_ms"] = json!(median(&samples[i]));
        eprintln!("  {} ctr task exec: {:.1} ms", r.name, median(&samples[i]));
        c.remove(&format!("exec-{}", r.name));
    }

    // Many containers started at once, then torn down at once.
    let mut starts = vec![Vec::new(); runtimes.len()];
    let mut teardowns = vec![Vec::new(); runtimes.len()];
    for round in 0..counts.burst_rounds {
        for (i, r) in runtimes.iter().enumerate() {
            let ids: Vec<String> = (0..counts.burst).map(|k| format!("burst-{}-{round}-{k}", r.name)).collect();
            let started = Instant::now();
            let children: Vec<_> = ids
                .iter()
                .map(|id| {
                    c.track(id);
                    c.ctr_command(&run_args(r, &["-d"], id, &["sleep", "100000"])).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
                })
                .collect();
            for child in children {
                let out = child.wait_with_output().unwrap();
                assert!(out.status.success(), "{}: {}", r.name, String::from_utf8_lossy(&out.stderr));
            }
            starts[i].push(millis(started.elapsed()));
            let started = Instant::now();
            let children: Vec<_> = ids.iter().map(|id| c.ctr_command(&["task", "rm", "-f", id]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()).collect();
            for child in children {
                let out = child.wait_with_output().unwrap();
                assert!(out.status.success(), "{}: {}", r.name, String::from_utf8_lossy(&out.stderr));
            }
            let mut rm = vec!["container", "rm"];
            rm.extend(ids.iter().map(String::as_str));
            ctr_timed(&c, &rm);
            teardowns[i].push(millis(started.elapsed()));
        }
    }
    for (i, r) in runtimes.iter().enumerate() {
        result[r.name]["burst"] = json!(counts.burst);
        result[r.name]["burst_start_ms"] = json!(median(&starts[i]));
        result[r.name]["burst_teardown_ms"] = json!(median(&teardowns[i]));
        eprintln!("  {} {} at once: start {:.0} ms, teardown {:.0} ms", r.name, counts.burst, median(&starts[i]), median(&teardowns[i]));
    }

    // Checkpoint (leaving the container running) and live restore into a new container, with CRIU:
    // myshim against runc (crun from Debian is built without CRIU). The original is removed before
    // each restore, so that both restore into a free cgroup.
    let checkpointing: Vec<&Runtime> = runtimes.iter().filter(|r| r.name != "crun").collect();
    let mut checkpoints = vec![Vec::new(); checkpointing.len()];
    let mut restores = vec![Vec::new(); checkpointing.len()];
    for n in 0..counts.checkpoints {
        for (i, r) in checkpointing.iter().enumerate() {
            let (id, back, image) = (format!("ckpt-{}-{n}", r.name), format!("back-{}-{n}", r.name), format!("localhost/bench/ckpt-{}-{n}:1", r.name));
            c.track(&id);
            c.track(&back);
            ctr_timed(&c, &run_args(r, &["-d"], &id, &["sleep", "100000"]));
            checkpoints[i].push(ctr_timed(&c, &["container", "checkpoint", "--task", &id, &image]));
            c.remove(&id);
            restores[i].push(ctr_timed(&c, &["container", "restore", "--live", &back, &image]));
            c.remove(&back);
            let _ = c.ctr(&["image", "rm", &image]);
        }
    }
    for (i, r) in checkpointing.iter().enumerate() {
        result[r.name]["checkpoint_ms"] = json!(median(&checkpoints[i]));
        result[r.name]["restore_ms"] = json!(median(&restores[i]));
        eprintln!("  {} checkpoint: {:.0} ms, live restore: {:.0} ms", r.name, median(&checkpoints[i]), median(&restores[i]));
    }

    shim_memory(&c, &runtimes, &mut result);
    c.assert_no_leftovers();
    result
}

/// Fails the run when the shim measured is not what an operator should install: a static binary
/// within the memory target.
fn check_the_installed_shim(memory: &Value) {
    let shim = paths::shim_binary();
    let headers = Command::new("readelf").args(["--program-headers", "--wide"]).arg(&shim).output().expect("run readelf");
    assert!(headers.status.success(), "readelf {}: {}", shim.display(), String::from_utf8_lossy(&headers.stderr));
    assert!(
        !String::from_utf8_lossy(&headers.stdout).contains("INTERP"),
        "{} is dynamically linked: measure the static release build (integration/scripts/build-release.sh)",
        shim.display()
    );
    let rss = memory["myshim"]["shim_rss_kib"].as_u64().expect("the shim's RSS was measured");
    assert!(rss <= SHIM_RSS_TARGET_KIB, "{}: {rss} KiB resident holding one container, above the {SHIM_RSS_TARGET_KIB} KiB target", shim.display());
    eprintln!("  {}: static, {rss} KiB resident holding one container (target {SHIM_RSS_TARGET_KIB} KiB)", shim.display());
}

/// The shim's memory with one container, and with ten in one group (a pod), into `result[runtime]`.
fn shim_memory(c: &Containerd, runtimes: &[Runtime], result: &mut Value) {
    for r in runtimes.iter().filter(|r| r.name != "crun") {
        let group = format!("io.containerd.runc.v2.group=pod-{}", r.name);
        let ids: Vec<String> = (0..10).map(|k| format!("mem-{}-{k}", r.name)).collect();
        let mut shim = 0;
        for (k, id) in ids.iter().enumerate() {
            c.track(id);
            ctr_timed(&c, &run_args(r, &["-d", "--annotation", &group], id, &["sleep", "100000"]));
            if k == 0 {
                std::thread::sleep(Duration::from_millis(500));
                shim = shim_process(&c, r.shim, id);
                let (_, rss) = procfs::usage(shim);
                result[r.name]["shim_rss_kib"] = json!(rss);
                result[r.name]["shim_pss_kib"] = json!(procfs::pss(shim));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let pss_one = result[r.name]["shim_pss_kib"].as_u64().unwrap_or(0);
        let pss_ten = procfs::pss(shim);
        result[r.name]["pod_pss_kib"] = json!(pss_ten);
        result[r.name]["pss_per_extra_container_kib"] = json!((pss_ten.saturating_sub(pss_one)) as f64 / 9.0);
        eprintln!("  {} shim: RSS {} KiB with one container; PSS {pss_one} → {pss_ten} KiB with ten", r.name, result[r.name]["shim_rss_kib"]);
        for id in &ids {
            c.remove(id);
        }
    }
}

/// `docker run --rm … true` through dockerd on containerd 2.1: myshim (its runtime type), runc (Docker's
/// default) and crun (a `path` runtime, under containerd's runc shim), interleaved.
fn through_docker(counts: &Counts) -> Value {
    let c = Containerd::start(Version::V2_1, "bench-docker");
    let config = json!({
        "runtimes": {"myshim": {"runtimeType": RUNTIME}, "crun": {"path": CRUN}},
        "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 1024, "Soft": 1024}}
    });
    let d = Docker::start(&c, "bench", &config);
    let names = ["myshim", "runc", "crun"];
    let mut samples = vec![Vec::new(); names.len()];
    for _ in 0..counts.docker_runs {
        for (i, runtime) in names.iter().enumerate() {
            let started = Instant::now();
            let out = d.docker(&["run", "--rm", "--runtime", runtime, myshim_integration::docker::BUSYBOX, "true"]);
            samples[i].push(millis(started.elapsed()));
            assert_eq!(out.code, 0, "docker run --runtime {runtime}: {}", out.stderr);
        }
    }
    let mut result = json!({});
    for (i, name) in names.iter().enumerate() {
        result[name] = json!({"docker_run_ms": median(&samples[i])});
        eprintln!("  {name} docker run --rm: {:.0} ms", median(&samples[i]));
    }
    result
}

fn shim_sockets() -> Vec<PathBuf> {
    fs::read_dir("/run/containerd/s").into_iter().flatten().flatten().map(|e| e.path()).collect()
}

/// containerd's runc shim leaves its group's sockets behind when the group's last container goes:
/// remove those this run made that nothing listens on any more.
fn remove_stale_sockets(before: &[PathBuf]) {
    use std::os::unix::fs::FileTypeExt;
    for socket in shim_sockets().into_iter().filter(|s| !before.contains(s)) {
        let is_socket = fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket());
        if is_socket && std::os::unix::net::UnixStream::connect(&socket).is_err() {
            let _ = fs::remove_file(&socket);
        }
    }
}

/// `ctr run --rm … true` through containerd 1.7 with myshim over ttrpc and over gRPC (two instances,
/// interleaved).
fn protocols_through_containerd_1_7(counts: &Counts) -> Value {
    let instances = [
        ("ttrpc", Containerd::start(Version::V1_7, "bench-ttrpc")),
        ("grpc", Containerd::start_with(Version::V1_7, "bench-grpc", Some("protocol = \"grpc\"\n"))),
    ];
    let mut samples = vec![Vec::new(); instances.len()];
    for n in 0..counts.ctr_runs {
        for (i, (name, c)) in instances.iter().enumerate() {
            let id = format!("proto-{name}-{n}");
            c.track(&id);
            samples[i].push(ctr_timed(c, &["run", "--runtime", RUNTIME, "--rm", image::BUSYBOX, &id, "true"]));
        }
    }
    let mut result = json!({});
    for (i, (name, c)) in instances.iter().enumerate() {
        result[*name] = json!({ "ctr_run_ms": median(&samples[i]) });
        eprintln!("  {name}: ctr run {:.1} ms", median(&samples[i]));
        c.assert_no_leftovers();
    }
    result
}

/// The pid of the shim serving container `id` of this instance.
fn shim_process(c: &Containerd, binary: &str, id: &str) -> u32 {
    let socket = c.socket().display().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(binary) && cmdline.contains(&socket) && cmdline.contains(&format!("-id {id} "))
        })
        .unwrap_or_else(|| panic!("no {binary} for {id}"))
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// The results as the README's table.
fn markdown(r: &Value) -> String {
    let c = &r["containerd"];
    let ratio = |name: &str, key: &str| number(&c[name][key]) / number(&c["runc"][key]);
    let ms_row = |label: &str, key: &str, target: &str| {
        format!(
            "| {label} | {:.1} ms | {:.1} ms | {:.1} ms | **{:.2}×** | {:.2}× | {target} |\n",
            number(&c["myshim"][key]),
            number(&c["runc"][key]),
            number(&c["crun"][key]),
            ratio("myshim", key),
            ratio("crun", key)
        )
    };
    let d = &r["direct"];
    let oci = &r["oci"];
    let env = &r["environment"];
    let mut out = String::new();
    out.push_str(&format!(
        "Measured {} on {} CPUs, kernel {}; {}, runc {}, {}; myshim a static release build; bundles and containerd's state on a tmpfs, as under a node's `/run`. Medians of interleaved runs; ratios against containerd's runc shim with runc.\n\n",
        env["date"].as_str().unwrap_or(""),
        env["cpus"],
        env["kernel"].as_str().unwrap_or(""),
        env["containerd"].as_str().unwrap_or("").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        env["runc"].as_str().unwrap_or("").trim_start_matches("runc version "),
        env["crun"].as_str().unwrap_or(""),
    ));
    out.push_str("| through containerd 2.1 | myshim | runc | crun | myshim / runc | crun / runc | target |\n|---|---|---|---|---|---|---|\n");
    out.push_str(&ms_row("`ctr run --rm … true`", "ctr_run_ms", "≤ 0.75× and below crun"));
    out.push_str(&ms_row("`ctr task exec … true`", "ctr_exec_ms", "≤ 0.7×"));
    let burst = c["myshim"]["burst"].as_u64().unwrap_or(0);
    out.push_str(&ms_row(&format!("{burst} containers started at once"), "burst_start_ms", ""));
    out.push_str(&ms_row(&format!("{burst} containers torn down at once"), "burst_teardown_ms", ""));
    for (label, key) in [("`ctr container checkpoint --task` (CRIU)", "checkpoint_ms"), ("`ctr container restore --live` (CRIU)", "restore_ms")] {
        out.push_str(&format!("| {label} | {:.0} ms | {:.0} ms | (no CRIU) | **{:.2}×** | | |\n", number(&c["myshim"][key]), number(&c["runc"][key]), ratio("myshim", key)));
    }
    let k = &r["cri"];
    let k_ratio = |key: &str| number(&k["myshim"][key]) / number(&k["runc"][key]);
    let k_row = |label: &str, key: &str, unit: &str, scale: f64, target: &str| {
        format!(
            "| {label} | {:.1} {unit} | {:.1} {unit} | **{:.2}×** | {target} |\n",
            number(&k["myshim"][key]) * scale,
            number(&k["runc"][key]) * scale,
            k_ratio(key)
        )
    };
    let density = k["myshim"]["density"].as_u64().unwrap_or(0);
    let mut cri_table = String::from("\n| Kubernetes: containerd 2.1's CRI, one-container pods | myshim | runc | myshim / runc | target |\n|---|---|---|---|---|\n");
    cri_table.push_str(&k_row("pod start p50 (RunPodSandbox + CreateContainer + StartContainer)", "pod_start_p50_ms", "ms", 1.0, "≤ 0.3×"));
    cri_table.push_str(&k_row("pod start p99", "pod_start_p99_ms", "ms", 1.0, "≤ 0.4×"));
    cri_table.push_str(&k_row("pod start p50, ten at a time", "pod_start_concurrent_p50_ms", "ms", 1.0, "≤ 0.3×"));
    cri_table.push_str(&k_row("pod start p99, ten at a time", "pod_start_concurrent_p99_ms", "ms", 1.0, "≤ 0.4×"));
    cri_table.push_str(&k_row("ExecSync p50", "exec_sync_p50_ms", "ms", 1.0, "≤ 0.25×"));
    cri_table.push_str(&k_row("pod stop + remove p50", "pod_remove_p50_ms", "ms", 1.0, ""));
    cri_table.push_str(&k_row(&format!("{density} pods: PSS of the shims and everything under them"), "density_pss_kib", "MB", 1.0 / 1024.0, "≤ 0.15×"));
    cri_table.push_str(&k_row(&format!("{density} pods: PSS of the shims alone"), "density_shims_pss_kib", "MB", 1.0 / 1024.0, ""));
    cri_table.push_str(&k_row(&format!("{density} pods: start all, ten at a time"), "density_start_all_s", "s", 1.0, ""));
    cri_table.push_str(&k_row(&format!("{density} pods: tear all down, ten at a time"), "density_teardown_s", "s", 1.0, ""));
    let churn = &k["churn"];
    cri_table.push_str(&format!(
        "\nChurn (myshim): {} pod lifecycles at concurrency {} in {:.0} s, {} failures; growth over the run (a census every {} pods: shims, containerd's pods and containers, mounts, cgroups, network namespaces, shim sockets, state files, zombies, containerd's descriptors, and a long-lived pod's shim exec'd into every time): {}.\n",
        churn["lifecycles"],
        churn["concurrency"],
        number(&churn["seconds"]),
        churn["failures"].as_array().map_or(0, Vec::len),
        churn["witness"].as_array().and_then(|w| w.get(1)).map_or(Value::Null, |w| w["done"].clone()),
        match churn["growth"].as_array() {
            Some(g) if g.is_empty() => "none".to_owned(),
            Some(g) => format!("{g:?}"),
            None => "not measured".to_owned(),
        }
    ));
    let docker = &r["docker"];
    let docker_ms = |name: &str| number(&docker[name]["docker_run_ms"]);
    out.push_str(&format!(
        "| Docker 28: `docker run --rm … true` | {:.0} ms | {:.0} ms | {:.0} ms | **{:.2}×** | {:.2}× | |\n",
        docker_ms("myshim"),
        docker_ms("runc"),
        docker_ms("crun"),
        docker_ms("myshim") / docker_ms("runc"),
        docker_ms("crun") / docker_ms("runc")
    ));
    let kib = |v: &Value| number(v) / 1024.0;
    out.push_str(&format!(
        "| shim RSS holding one container | {:.1} MB | {:.1} MB | (runc's shim) | **{:.2}×** | | ≤ 4 MB |\n",
        kib(&c["myshim"]["shim_rss_kib"]),
        kib(&c["runc"]["shim_rss_kib"]),
        number(&c["myshim"]["shim_rss_kib"]) / number(&c["runc"]["shim_rss_kib"])
    ));
    out.push_str(&format!(
        "| shim PSS per additional container in a 10-container pod | {:.2} MB | {:.2} MB | (runc's shim) | | | ≤ 1.5 MB |\n\n",
        kib(&c["myshim"]["pss_per_extra_container_kib"]),
        kib(&c["runc"]["pss_per_extra_container_kib"])
    ));
    out.push_str(cri_table.trim_start());
    out.push('\n');
    out.push_str("| shim-direct (no containerd): create → start → wait → delete of `/bin/true` | ttrpc | gRPC | target |\n|---|---|---|---|\n");
    out.push_str(&format!("| p50 | {:.2} ms | {:.2} ms | ≤ 5 ms |\n", number(&d["ttrpc"]["p50_ms"]), number(&d["grpc"]["p50_ms"])));
    out.push_str(&format!("| p99 | {:.2} ms | {:.2} ms | |\n", number(&d["ttrpc"]["p99_ms"]), number(&d["grpc"]["p99_ms"])));
    for concurrency in ["1", "8", "32"] {
        let target = if concurrency == "32" { "≥ 300/s" } else { "" };
        out.push_str(&format!(
            "| lifecycles per second, concurrency {concurrency} | {:.0} | {:.0} | {target} |\n",
            number(&d["ttrpc"]["per_second"][concurrency]),
            number(&d["grpc"]["per_second"][concurrency])
        ));
    }
    let p = &r["protocols"];
    out.push_str(&format!(
        "\n| containerd 1.7, myshim: `ctr run --rm … true` | ttrpc | gRPC | gRPC / ttrpc |\n|---|---|---|---|\n| median | {:.1} ms | {:.1} ms | {:.2}× |\n",
        number(&p["ttrpc"]["ctr_run_ms"]),
        number(&p["grpc"]["ctr_run_ms"]),
        number(&p["grpc"]["ctr_run_ms"]) / number(&p["ttrpc"]["ctr_run_ms"])
    ));
    out.push_str(&format!(
        "\n| the OCI runtime alone: `run` of a busybox bundle | myshim-runc | runc | crun |\n|---|---|---|---|\n| median | {:.1} ms | {:.1} ms | {:.1} ms |\n",
        number(&oci["myshim-runc"]["median_ms"]),
        number(&oci["runc"]["median_ms"]),
        number(&oci["crun"]["median_ms"])
    ));
    out
}

/// Replaces what lies between the README's benchmark markers.
fn update_readme(table: &str) {
    let path = paths::workspace().join("README.md");
    let text = fs::read_to_string(&path).unwrap();
    let (begin, end) = ("<!-- bench:begin -->", "<!-- bench:end -->");
    let (Some(from), Some(to)) = (text.find(begin), text.find(end)) else {
        panic!("README.md has no {begin} … {end} section");
    };
    let updated = format!("{}{begin}\n{table}\n![benchmark chart](docs/bench/chart.png)\n{}", &text[..from], &text[to..]);
    fs::write(&path, updated).unwrap();
}
