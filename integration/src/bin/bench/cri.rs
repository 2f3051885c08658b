//! Kubernetes' path: containerd 2.1's CRI plugin with the runtime handlers `myshim` and `runc` of the
//! same containerd, interleaved. Pod start (RunPodSandbox + CreateContainer + StartContainer of a
//! one-container pod) one at a time and ten at a time, ExecSync, stop and remove; density (N pods
//! at once: the memory of every shim with everything under it, the time to start them all and to tear
//! them all down); and churn (myshim only: pods coming and going with a census every so often).

use std::collections::HashMap;
use std::fs;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use myshim_integration::cri::Cri;
use myshim_integration::node::{self, Pod, Pods};
use myshim_integration::{procfs, Containerd, Version};
use serde_json::{json, Value};

use super::{median, millis, percentile, Counts};

const HANDLERS: [&str; 2] = ["myshim", "runc"];

pub fn run(counts: &Counts) -> Value {
    let c = Containerd::start_cri(Version::V2_1, "bench-cri", "");
    let logs = c.dir.join("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    let pods: HashMap<&str, Pods> = HANDLERS
        .iter()
        .map(|h| (*h, Pods { handler: h.to_string(), parent: format!("/myshim-bench-cri-{h}-{}", std::process::id()), logs: logs.clone() }))
        .collect();
    let api = Cri::connect(&c.socket());
    let mut result = json!({});
    for h in HANDLERS {
        result[h] = json!({});
    }

    // One pod at a time: start, then stop and remove.
    let (mut starts, mut removals): (HashMap<&str, Vec<f64>>, HashMap<&str, Vec<f64>>) = Default::default();
    for n in 0..counts.pods_sequential {
        for h in HANDLERS {
            let started = Instant::now();
            let pod = pods[h].start(&api, &format!("seq-{h}-{n}")).unwrap_or_else(|e| panic!("{h}: start a pod: {}", e.message()));
            starts.entry(h).or_default().push(millis(started.elapsed()));
            let started = Instant::now();
            pods[h].remove(&api, &pod).unwrap_or_else(|e| panic!("{h}: remove a pod: {}", e.message()));
            removals.entry(h).or_default().push(millis(started.elapsed()));
        }
    }
    for h in HANDLERS {
        result[h]["pod_start_p50_ms"] = json!(median(&starts[h]));
        result[h]["pod_start_p99_ms"] = json!(percentile(&starts[h], 0.99));
        result[h]["pod_remove_p50_ms"] = json!(median(&removals[h]));
        eprintln!("  {h} pod start: p50 {:.0} ms, p99 {:.0} ms; stop and remove p50 {:.0} ms", median(&starts[h]), percentile(&starts[h], 0.99), median(&removals[h]));
    }

    // Ten at a time: each pod's start latency while nine others start too.
    let mut concurrent: HashMap<&str, Vec<f64>> = HashMap::new();
    for round in 0..counts.pod_rounds {
        for h in HANDLERS {
            let (latencies, started) = start_many(&c, &pods[h], &format!("conc-{h}-{round}"), 10 * counts.pods_per_worker, 10);
            concurrent.entry(h).or_default().extend(latencies);
            remove_many(&c, &pods[h], started, 10);
        }
    }
    for h in HANDLERS {
        result[h]["pod_start_concurrent_p50_ms"] = json!(median(&concurrent[h]));
        result[h]["pod_start_concurrent_p99_ms"] = json!(percentile(&concurrent[h], 0.99));
        eprintln!("  {h} pod start, ten at a time: p50 {:.0} ms, p99 {:.0} ms", median(&concurrent[h]), percentile(&concurrent[h], 0.99));
    }

    // ExecSync into a running pod.
    let running: HashMap<&str, Pod> = HANDLERS.iter().map(|h| (*h, pods[h].start(&api, &format!("exec-{h}")).expect("start the exec pod"))).collect();
    let mut execs: HashMap<&str, Vec<f64>> = HashMap::new();
    for _ in 0..counts.execs {
        for h in HANDLERS {
            let started = Instant::now();
            let (code, _, err) = api.exec_sync(&running[h].container, &["true"]).expect("ExecSync");
            assert_eq!(code, 0, "{h}: {err}");
            execs.entry(h).or_default().push(millis(started.elapsed()));
        }
    }
    for h in HANDLERS {
        pods[h].remove(&api, &running[h]).expect("remove the exec pod");
        result[h]["exec_sync_p50_ms"] = json!(median(&execs[h]));
        eprintln!("  {h} ExecSync: p50 {:.1} ms", median(&execs[h]));
    }

    // Density: N pods at once, one handler after the other.
    for h in HANDLERS {
        let clock = Instant::now();
        let (_, started) = start_many(&c, &pods[h], &format!("dense-{h}"), counts.density, 10);
        let start_all = clock.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        let (census, pss, shims_pss) = memory_of(&c, h, &pods[h].parent);
        let clock = Instant::now();
        remove_many(&c, &pods[h], started, 10);
        let teardown = clock.elapsed();
        result[h]["density"] = json!(counts.density);
        result[h]["density_pss_kib"] = json!(pss);
        result[h]["density_pss_per_pod_kib"] = json!(pss as f64 / counts.density as f64);
        result[h]["density_shims_pss_kib"] = json!(shims_pss);
        result[h]["density_census"] = json!(census);
        result[h]["density_start_all_s"] = json!(start_all.as_secs_f64());
        result[h]["density_teardown_s"] = json!(teardown.as_secs_f64());
        eprintln!(
            "  {h} {} pods: PSS {:.0} MB ({:.2} MB a pod, {census:?}); all started in {:.1} s, torn down in {:.1} s",
            counts.density,
            pss as f64 / 1024.0,
            pss as f64 / 1024.0 / counts.density as f64,
            start_all.as_secs_f64(),
            teardown.as_secs_f64()
        );
    }

    // Churn, myshim's.
    let report = node::churn(&c, &pods["myshim"], counts.churn, 10, counts.churn_check);
    let growth = report.growth();
    if !report.failures.is_empty() {
        // Outside the private tmpfs, for whoever looks into the failures.
        let kept = std::path::Path::new("/var/tmp/myshim-bench-churn-containerd.log");
        fs::write(kept, c.log()).unwrap();
        eprintln!("  churn failures: {:#?}; containerd's log kept in {}", report.failures, kept.display());
    }
    let witness: Vec<Value> = std::iter::once(&report.baseline).chain(&report.checks).map(|c| json!({"done": c.done, "fds": c.witness_fds, "pss_kib": c.witness_pss_kib, "containerd_fds": c.census.containerd_fds})).collect();
    result["churn"] = json!({
        "lifecycles": counts.churn,
        "concurrency": 10,
        "seconds": report.elapsed.as_secs_f64(),
        "failures": report.failures,
        "growth": growth,
        "witness": witness,
    });
    eprintln!("  churn: {} pods in {:.0} s, {} failures, growth {growth:?}", counts.churn, report.elapsed.as_secs_f64(), result["churn"]["failures"].as_array().map_or(0, Vec::len));
    for h in HANDLERS {
        node::remove_parent_cgroups(&pods[h].parent);
    }
    result
}

/// Starts `count` pods with `workers` at once; every pod's start latency, and the pods.
fn start_many(c: &Containerd, pods: &Pods, prefix: &str, count: usize, workers: usize) -> (Vec<f64>, Vec<Pod>) {
    let results = Mutex::new((Vec::new(), Vec::new()));
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let api = Cri::connect(&c.socket());
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if n >= count {
                        return;
                    }
                    let started = Instant::now();
                    let pod = pods.start(&api, &format!("{prefix}-{n}")).unwrap_or_else(|e| panic!("{}: start pod {n}: {}", pods.handler, e.message()));
                    let mut results = results.lock().unwrap();
                    results.0.push(millis(started.elapsed()));
                    results.1.push(pod);
                }
            });
        }
    });
    results.into_inner().unwrap()
}

/// Stops and removes `started` with `workers` at once.
fn remove_many(c: &Containerd, pods: &Pods, started: Vec<Pod>, workers: usize) {
    let queue = Mutex::new(started);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let api = Cri::connect(&c.socket());
                while let Some(pod) = queue.lock().unwrap().pop() {
                    pods.remove(&api, &pod).unwrap_or_else(|e| panic!("{}: remove a pod: {}", pods.handler, e.message()));
                }
            });
        }
    });
}

/// The handler's shims of this containerd and every process in its pods' cgroups: a census (how many
/// of each command, and a shim's threads and descriptors on average), the summed PSS in KiB of them
/// all, and of the shims alone.
fn memory_of(c: &Containerd, handler: &str, parent: &str) -> (std::collections::BTreeMap<String, usize>, u64, u64) {
    let binary = if handler == "myshim" { "containerd-shim-myshim-v1" } else { "containerd-shim-runc-v2" };
    let address = c.socket().display().to_string();
    let parent = format!(":/{}/", node::parent_relative(parent));
    let (mut pids, mut shims) = (Vec::new(), Vec::new());
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).map(|c| String::from_utf8_lossy(&c).replace('\0', " ")).unwrap_or_default();
        let is_shim = cmdline.contains(binary) && cmdline.contains(&address);
        let in_pods = fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&parent));
        if is_shim || in_pods {
            pids.push(pid);
        }
        if is_shim {
            shims.push(pid);
        }
    }
    let mut commands = std::collections::BTreeMap::new();
    for pid in &pids {
        let command = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned();
        *commands.entry(command).or_insert(0) += 1;
    }
    // What a shim holds per pod: threads and descriptors, on average.
    let per_shim = |total: u64| total as f64 / shims.len().max(1) as f64;
    commands.insert("(threads per shim)".into(), per_shim(shims.iter().map(|pid| procfs::threads(*pid)).sum()).round() as usize);
    commands.insert("(descriptors per shim)".into(), per_shim(shims.iter().map(|pid| procfs::usage(*pid).0 as u64).sum()).round() as usize);
    let pss = |pids: &[u32]| pids.iter().map(|pid| procfs::pss(*pid)).sum();
    (commands, pss(&pids), pss(&shims))
}
